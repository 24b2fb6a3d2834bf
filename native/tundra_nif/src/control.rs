//! Controlling a device rather than moving its packets: closing it, its
//! active mode and the reader process that serves it, handing it to
//! another owner, link events, and which offloads it has.

use std::time::Instant;

use rustler::{Atom, Encoder, Env, LocalPid, NifResult, Term};
use tundra_core::offload::Offloads;
use tundra_core::{platform, Framing};

use crate::io::report_time;
use crate::resource::{self, Active, ActiveChange};
use crate::terms::{ok, ok_with, or_nil, with_owned, Failure};
use crate::{atoms, linkwatch};

/// Closes the device: `{:ok, was_active}`.
#[rustler::nif]
fn close<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    with_owned(env, dev, |owned| {
        let was_active = owned.is_active();
        // The reader has nothing left to read.
        if let Some(reader) = owned.reader() {
            let _ = env.send(&reader, atoms::stop());
        }
        owned.close();
        Ok(ok_with(env, was_active))
    })
}

/// Sets exactly the offloads `names` (`:csum`, `:tso4`, ...) on the
/// caller's offload device: `:ok`; `{:error, {:invalid_option, :offload}}`
/// for a name that is none; `:einval` for a device without a vnet header
/// or a set the kernel refuses.
#[rustler::nif]
fn set_offload<'a>(env: Env<'a>, dev: Term<'a>, names: Vec<Atom>) -> NifResult<Term<'a>> {
    let names = names
        .iter()
        .map(|name| name.to_term(env).atom_to_string())
        .collect::<NifResult<Vec<String>>>()?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    with_owned(env, dev, |mut owned| {
        let offloads =
            Offloads::from_names(&names).ok_or(Failure::InvalidOption(atoms::offload()))?;
        if owned.framing() != Framing::VirtioNet {
            return Err(Failure::errno(libc::EINVAL));
        }
        platform::set_offload(owned.fd(), offloads)?;
        owned.set_offloads(offloads);
        Ok(ok(env))
    })
}

/// Active delivery as one `{:tundra_batch, dev, packets}` per read batch
/// (`true`) or one `{:tundra, dev, packet}` per packet.
#[rustler::nif]
fn set_active_batch<'a>(env: Env<'a>, dev: Term<'a>, on: bool) -> NifResult<Term<'a>> {
    with_owned(env, dev, |mut owned| {
        owned.set_batch(on);
        Ok(ok(env))
    })
}

/// How long reads keep looking for packets before they arm a select, in
/// microseconds (0 to `io::MAX_BUSY_POLL`; Elixir checks the range).
#[rustler::nif]
fn set_busy_poll<'a>(env: Env<'a>, dev: Term<'a>, micros: u64) -> NifResult<Term<'a>> {
    let busy_poll = std::time::Duration::from_micros(micros);
    if busy_poll > crate::io::MAX_BUSY_POLL {
        return Err(rustler::Error::BadArg);
    }
    with_owned(env, dev, |mut owned| {
        owned.set_busy_poll(busy_poll);
        Ok(ok(env))
    })
}

/// The device's reader process: `{:ok, pid}` or `{:ok, nil}`.
#[rustler::nif]
fn reader<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    with_owned(env, dev, |owned| {
        Ok(ok_with(env, or_nil(env, owned.reader())))
    })
}

/// Gives the device its reader process (`Tundra.Reader`), before it is
/// first made active.
#[rustler::nif]
fn set_reader<'a>(env: Env<'a>, dev: Term<'a>, pid: LocalPid) -> NifResult<Term<'a>> {
    with_owned(env, dev, |mut owned| {
        owned.set_reader(pid);
        Ok(ok(env))
    })
}

/// Packets one `deliver` call reads before the reader yields.
const DELIVER_BUDGET: usize = 64;

/// Called by the reader process when the device is readable: delivers
/// waiting packets to the owner (see `resource::Reading::deliver`).
/// `:more` when it should call again at once, `:ok` when the select is
/// re-armed (or the device passive), `:stop` when the device is closed or
/// the caller is not its reader.
#[rustler::nif]
fn deliver<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let started = Instant::now();
    let result = match dev.for_reader() {
        Some(reading) => {
            if reading.deliver(DELIVER_BUDGET) {
                atoms::more()
            } else {
                atoms::ok()
            }
        }
        None => atoms::stop(),
    };
    report_time(env, started);
    Ok(result.encode(env))
}

/// The active mode as the NIF's callers pass it: `{:off | :once |
/// :always, 0}`, or `{:count, n}`.
pub fn encode_active(env: Env, active: Active) -> Term {
    match active {
        Active::Off => (atoms::off(), 0).encode(env),
        Active::Once => (atoms::once(), 0).encode(env),
        Active::Always => (atoms::always(), 0).encode(env),
        Active::Count(n) => (atoms::count(), n).encode(env),
    }
}

/// An active-mode change as the Elixir side passes it: `mode` is `:off`,
/// `:once`, `:always`, `:add` (`n` added to the count, as
/// `inet:setopts/2`) or `:count` (set to `n`, to restore a mode taken by
/// `take_active`).
fn decode_active(mode: Atom, n: i64) -> NifResult<ActiveChange> {
    Ok(if mode == atoms::off() {
        ActiveChange::Set(Active::Off)
    } else if mode == atoms::once() {
        ActiveChange::Set(Active::Once)
    } else if mode == atoms::always() {
        ActiveChange::Set(Active::Always)
    } else if mode == atoms::add() {
        ActiveChange::Add(n)
    } else if mode == atoms::count() {
        ActiveChange::Set(u64::try_from(n).map_or(Active::Off, Active::Count))
    } else {
        return Err(rustler::Error::BadArg);
    })
}

/// Changes the active mode (see `decode_active`); returns the new one.
#[rustler::nif]
fn set_active<'a>(env: Env<'a>, dev: Term<'a>, mode: Atom, n: i64) -> NifResult<Term<'a>> {
    let change = decode_active(mode, n)?;
    with_owned(env, dev, |mut owned| {
        let active = owned.set_active(change)?;
        Ok(ok_with(env, encode_active(env, active)))
    })
}

/// Makes the device passive and returns the mode it had (for a hand-over,
/// which restores it for the new owner).
#[rustler::nif]
fn take_active<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    with_owned(env, dev, |mut owned| {
        Ok(ok_with(env, encode_active(env, owned.take_active())))
    })
}

/// Hands the device to `pid` with the active mode the caller took away
/// (`take_active`, before it forwarded its messages): `:ok`, or `:esrch`
/// when `pid` is not alive (the caller keeps it, mode restored).
#[rustler::nif]
fn controlling_process<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    pid: LocalPid,
    mode: Atom,
    n: i64,
) -> NifResult<Term<'a>> {
    let active = decode_active(mode, n)?;
    with_owned(env, dev, |mut owned| {
        if !owned.set_owner(pid) {
            let _ = owned.set_active(active);
            return Err(Failure::errno(libc::ESRCH));
        }
        owned.set_active(active)?;
        Ok(ok(env))
    })
}

/// Starts or stops link events for the caller's device (see `linkwatch`);
/// they go through its reader, which the caller gave it first. The
/// device is not locked while the kernel is asked for the link's state.
#[rustler::nif(schedule = "DirtyIo")]
fn link_events<'a>(env: Env<'a>, dev: Term<'a>, on: bool) -> NifResult<Term<'a>> {
    let mut found = None;
    let reply = with_owned(env, dev, |mut owned| {
        if !on {
            owned.set_link_events(None);
            return Ok(ok(env));
        }
        let reader = owned.reader().ok_or(Failure::errno(libc::EINVAL))?;
        found = Some((owned.name().to_owned(), owned.netns(), reader));
        Ok(ok(env))
    })?;
    let Some((name, netns, reader)) = found else {
        return Ok(reply);
    };
    let subscription = platform::link_info(&name, netns.as_deref())
        .and_then(|link| linkwatch::subscribe(netns, link.index, reader, (link.up, link.mtu)));
    with_owned(env, dev, |mut owned| {
        owned.set_link_events(Some(subscription.map_err(Failure::Posix)?));
        Ok(ok(env))
    })
}
