//! What a device is and how it is configured: `info` (the kernel's view of
//! its link), `getopts` (Tundra's own options), and `change` (link state,
//! MTU, addresses and routes), made directly or by `tundra_server`.

use std::os::fd::AsFd;
use std::path::Path;

use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};
use tundra_core::client;
use tundra_core::deadline::Deadline;
use tundra_core::{platform, Change, Cidr, ConfigError, Framing, RouteSpec};

use crate::control::encode_active;
use crate::open::is_privilege_error;
use crate::resource::{self, Described};
use crate::terms::{
    self, encode_address, encode_route, encode_stats, map_of, ok, ok_with, or_nil, with_owned,
    Failure,
};
use crate::{atoms, packet};

#[rustler::nif(schedule = "DirtyIo")]
fn info<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let found = match dev.describe() {
        Ok(found) => found,
        Err(why) => return Failure::from(why).render(env),
    };
    let link = match platform::link_info(&found.name, found.netns.as_deref()) {
        Ok(link) => link,
        Err(err) => return Failure::from(err).render(env),
    };
    let addresses = link
        .addresses
        .iter()
        .map(|a| encode_address(env, a))
        .collect::<NifResult<Vec<Term>>>()?;
    let routes = link
        .routes
        .iter()
        .map(|r| encode_route(env, r))
        .collect::<NifResult<Vec<Term>>>()?;
    let (mode, mac) = match found.framing {
        Framing::Ethernet => (atoms::tap(), link.mac),
        _ => (atoms::tun(), None),
    };
    let mac = mac.map(|bytes| packet::to_binary(env, &bytes));
    let info = map_of(
        env,
        &[
            (atoms::name(), found.name.encode(env)),
            (atoms::index(), link.index.encode(env)),
            (atoms::mode(), mode.encode(env)),
            (atoms::mtu(), link.mtu.encode(env)),
            (atoms::up(), link.up.encode(env)),
            (atoms::addresses(), addresses.encode(env)),
            (atoms::routes(), routes.encode(env)),
            (atoms::stats(), encode_stats(env, &link.stats)?),
            (atoms::mac(), or_nil(env, mac)),
            (atoms::offload(), encode_offload(env, &found)?),
            (atoms::owner(), found.owner.encode(env)),
            (atoms::fd(), found.fd.encode(env)),
            (atoms::link_events(), found.link_events.encode(env)),
            (atoms::active(), encode_active(env, found.active)),
        ],
    )?;
    Ok(ok_with(env, info))
}

/// An offload device's offloads by name; `false` for any other.
fn encode_offload<'a>(env: Env<'a>, found: &Described) -> NifResult<Term<'a>> {
    Ok(match found.framing {
        Framing::VirtioNet => found
            .offloads
            .names()
            .into_iter()
            .map(|name| Atom::from_str(env, name).map(|a| a.encode(env)))
            .collect::<NifResult<Vec<Term>>>()?
            .encode(env),
        _ => false.encode(env),
    })
}

/// The options `Tundra.getopts/2` reports, from the resource alone (no
/// system call): `{:ok, {active, active_batch, offload, link_events,
/// busy_poll}}`, active as `set_active` returns it, busy_poll in
/// microseconds.
#[rustler::nif]
fn getopts<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    match dev.describe() {
        Ok(found) => Ok(ok_with(
            env,
            (
                encode_active(env, found.active),
                found.batch,
                encode_offload(env, &found)?,
                found.link_events,
                u64::try_from(found.busy_poll.as_micros()).unwrap_or(u64::MAX),
            ),
        )),
        Err(why) => Failure::from(why).render(env),
    }
}

/// A change as the Elixir side passes it (types already checked there):
/// `{:link, up | nil, mtu | nil}`, `{:add_address | :remove_address,
/// address, dstaddr | nil, prefix | nil, netmask | nil}` (addresses as 4
/// or 16 bytes, decoded as `create` decodes its own), or
/// `{:add_route | :remove_route, network, prefix, metric | nil}`.
fn decode_change(term: Term) -> NifResult<Result<Change, ConfigError>> {
    let parts = rustler::types::tuple::get_tuple(term)?;
    let kind: Atom = parts.first().ok_or(rustler::Error::BadArg)?.decode()?;
    let part = |i: usize| parts.get(i).copied().ok_or(rustler::Error::BadArg);
    if kind == atoms::link() {
        let up: Option<bool> = part(1)?.decode()?;
        let mtu: Option<i64> = part(2)?.decode()?;
        return Ok(match mtu.map(u32::try_from).transpose() {
            Ok(mtu) => Ok(Change::Link { up, mtu }),
            Err(_) => Err(ConfigError::Mtu),
        });
    }
    if kind == atoms::add_address() || kind == atoms::remove_address() {
        let address: Binary = part(1)?.decode()?;
        let dstaddr: Option<Binary> = part(2)?.decode()?;
        let prefix: Option<i64> = part(3)?.decode()?;
        let netmask: Option<Binary> = part(4)?.decode()?;
        let spec = terms::address_spec(&address, dstaddr.as_ref(), prefix, netmask.as_ref());
        return Ok(spec.map(|spec| {
            if kind == atoms::add_address() {
                Change::AddAddress(spec)
            } else {
                Change::RemoveAddress(spec)
            }
        }));
    }
    if kind == atoms::add_route() || kind == atoms::remove_route() {
        let network: Binary = part(1)?.decode()?;
        let prefix: i64 = part(2)?.decode()?;
        let metric: Option<i64> = part(3)?.decode()?;
        let route = (|| {
            let network = terms::ip(&network, ConfigError::Route)?;
            let prefix = u8::try_from(prefix).map_err(|_| ConfigError::Route)?;
            // As `ip route`: a destination with host bits set is a mistake.
            let dst = Cidr::exact(network, prefix).ok_or(ConfigError::Route)?;
            let metric = metric
                .map(u32::try_from)
                .transpose()
                .map_err(|_| ConfigError::Metric)?;
            Ok(RouteSpec { dst, metric })
        })();
        return Ok(route.map(|route| {
            if kind == atoms::add_route() {
                Change::AddRoute(route)
            } else {
                Change::RemoveRoute(route)
            }
        }));
    }
    Err(rustler::Error::BadArg)
}

/// Changes the caller's device: directly, or, without the privilege,
/// through the server at `socket_path` (`nil`: the default) within
/// `timeout_ms` (`nil`: none), which checks the change as it checks a new
/// device. `:ok`, `{:error, {:invalid_option, key}}` or `{:error, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn change<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    what: Term<'a>,
    socket_path: Option<String>,
    timeout_ms: Option<u64>,
) -> NifResult<Term<'a>> {
    let change = match decode_change(what)?.and_then(|c| c.validate().map(|()| c)) {
        Ok(change) => change,
        Err(bad) => return Failure::from(bad).render(env),
    };
    let deadline = Deadline::after_ms(timeout_ms);
    // The device is not locked while the kernel (or the server) is asked.
    let mut found = None;
    let reply = with_owned(env, dev, |owned| {
        found = Some((owned.name().to_owned(), owned.netns()));
        Ok(ok(env))
    })?;
    let Some((name, netns)) = found else {
        // Refused: closed, or not the caller's.
        return Ok(reply);
    };
    match platform::apply(
        &name,
        &change,
        netns.as_deref(),
        platform::Isolation::BestEffort,
    ) {
        // The server changes only devices of its own namespace.
        Err(e) if is_privilege_error(&e) && netns.is_none() => {
            with_owned(env, dev, |owned| {
                // A copy of the fd goes along as proof that the caller
                // holds it.
                let copy = owned.fd().try_clone_to_owned()?;
                drop(owned);
                let socket = Path::new(socket_path.as_deref().unwrap_or(client::DEFAULT_SOCKET));
                let left = deadline.left().unwrap_or_default();
                client::change(socket, copy.as_fd(), &change, left)?
                    .map_err(Failure::from)
                    .map(|()| ok(env))
            })
        }
        Ok(()) => Ok(ok(env)),
        Err(err) => Failure::from(err).render(env),
    }
}
