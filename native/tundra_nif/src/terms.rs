//! What crosses the NIF boundary besides packets: the one error type
//! every NIF returns (`Failure`, encoded as `{:error, reason}`), the one
//! place a call on an owned device is rendered (`with_owned`), and the
//! decoding and encoding of addresses, ids and device state.

use std::io;
use std::net::IpAddr;

use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};
use tundra_core::cidr::{ip_from_bytes, prefix_from_netmask};
use tundra_core::platform::{InterfaceAddress, LinkStats, RouteInfo};
use tundra_core::{errno, AddressSpec, ConfigError};

use crate::atoms;
use crate::resource::{self, Owned, Refused};

/// Why a NIF call failed, as its caller gets it.
pub enum Failure<'a> {
    /// A system failure: `{:error, posix}`, or `{:error, {:explained,
    /// posix, why}}` for one whose cause its errno cannot tell (see
    /// `tundra_core::errno::Explained`).
    Posix(io::Error),
    /// A system failure after part of a batch: `{:error, {posix, rest}}`.
    PosixWithRest(io::Error, Term<'a>),
    /// Not the caller's device, or closed: `{:error, :not_owner | :closed}`.
    Refused(Refused),
    /// A value out of range: `{:error, {:invalid_option, key}}`, `key` the
    /// option's name (the Elixir side adds the value the caller gave).
    Invalid(ConfigError),
    /// The same for an option only the NIF knows.
    InvalidOption(Atom),
    /// Arguments of the wrong type: raises `ArgumentError`.
    BadArg,
}

impl<'a> Failure<'a> {
    pub fn errno(errno: i32) -> Failure<'a> {
        Failure::Posix(io::Error::from_raw_os_error(errno))
    }

    /// The term the NIF returns (or the exception it raises).
    pub fn render(self, env: Env<'a>) -> NifResult<Term<'a>> {
        match self {
            Failure::BadArg => Err(rustler::Error::BadArg),
            failure => Ok(failure.encode(env)),
        }
    }
}

impl<'a> Encoder for Failure<'a> {
    fn encode<'b>(&self, env: Env<'b>) -> Term<'b> {
        let reason = match self {
            // Said in words too, when its errno alone cannot say why:
            // `{:explained, posix, why}`, which the Elixir side logs and
            // turns into `posix` (see Tundra.Refusal).
            Failure::Posix(err) => match errno::why_of(err) {
                Some(why) => (atoms::explained(), posix(env, err), why).encode(env),
                None => posix(env, err),
            },
            Failure::PosixWithRest(err, rest) => (posix(env, err), *rest).encode(env),
            Failure::Refused(Refused::NotOwner) => atoms::not_owner().encode(env),
            Failure::Refused(Refused::Closed) => atoms::closed().encode(env),
            Failure::Invalid(bad) => (atoms::invalid_option(), option_atom(env, *bad)).encode(env),
            Failure::InvalidOption(key) => (atoms::invalid_option(), *key).encode(env),
            // Rendered as an exception; never encoded (see `render`).
            Failure::BadArg => atoms::badarg().encode(env),
        };
        (atoms::error(), reason).encode(env)
    }
}

impl From<io::Error> for Failure<'_> {
    fn from(err: io::Error) -> Self {
        Failure::Posix(err)
    }
}

impl From<Refused> for Failure<'_> {
    fn from(why: Refused) -> Self {
        Failure::Refused(why)
    }
}

impl From<ConfigError> for Failure<'_> {
    fn from(bad: ConfigError) -> Self {
        Failure::Invalid(bad)
    }
}

/// An errno's POSIX name as an atom (`tundra_core::errno`'s one table).
pub fn posix<'a>(env: Env<'a>, err: &io::Error) -> Term<'a> {
    Atom::from_str(env, errno::io_error_name(err))
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| atoms::eio().encode(env))
}

/// The atom of an option's name: `ConfigError::option_name`'s table.
fn option_atom(env: Env, bad: ConfigError) -> Term {
    Atom::from_str(env, bad.option_name())
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| atoms::invalid().encode(env))
}

/// Runs `op` on the caller's device, open and owned, and renders what it
/// came to: the one place a call on a device becomes its reply. A device
/// that is closed or not the caller's is refused before `op` runs.
pub fn with_owned<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    op: impl for<'r> FnOnce(Owned<'r, 'a>) -> Result<Term<'a>, Failure<'a>>,
) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let result = dev.owned().map_err(Failure::from).and_then(op);
    match result {
        Ok(reply) => Ok(reply),
        Err(failure) => failure.render(env),
    }
}

/// `:ok`.
pub fn ok(env: Env) -> Term {
    atoms::ok().encode(env)
}

/// `{:ok, value}`.
pub fn ok_with<'a>(env: Env<'a>, value: impl Encoder) -> Term<'a> {
    (atoms::ok(), value).encode(env)
}

// ---------------------------------------------------------------------
// Decoding.

/// An address from its 4 or 16 bytes; `err` names the option otherwise.
pub fn ip(bin: &Binary, err: ConfigError) -> Result<IpAddr, ConfigError> {
    ip_from_bytes(bin.as_slice()).ok_or(err)
}

/// An address as `create/2` and `add_address/3` take it: the address, a
/// peer, and a prefix length or a netmask (at most one; neither is the
/// whole address), all checked as one `AddressSpec`.
pub fn address_spec(
    address: &Binary,
    dstaddr: Option<&Binary>,
    prefix: Option<i64>,
    netmask: Option<&Binary>,
) -> Result<AddressSpec, ConfigError> {
    let address = ip(address, ConfigError::Address)?;
    let dstaddr = dstaddr.map(|d| ip(d, ConfigError::Dstaddr)).transpose()?;
    let prefix = match (prefix, netmask) {
        (Some(prefix), _) => u8::try_from(prefix).map_err(|_| ConfigError::Prefix)?,
        (None, Some(mask)) => {
            let mask = ip(mask, ConfigError::Netmask)?;
            if mask.is_ipv4() != address.is_ipv4() {
                return Err(ConfigError::Netmask);
            }
            prefix_from_netmask(mask).ok_or(ConfigError::Netmask)?
        }
        (None, None) => tundra_core::cidr::address_bits(&address),
    };
    let spec = AddressSpec {
        address,
        dstaddr,
        prefix,
    };
    spec.validate()?;
    Ok(spec)
}

/// An optional term that is not `nil` (a `Term` field decodes `nil` too).
pub fn given(term: Option<Term>) -> Option<Term> {
    term.filter(|t| t.decode::<Atom>().ok() != Some(rustler::types::atom::nil()))
}

/// A uid or gid given as a number or a name (`tundra_core::users`).
pub fn id(term: Term, by_text: fn(&str) -> Option<u32>) -> Option<u32> {
    match term.decode::<u32>() {
        Ok(id) => Some(id),
        Err(_) => by_text(&term.decode::<String>().ok()?),
    }
}

// ---------------------------------------------------------------------
// Encoding.

/// An address as an `:inet` tuple.
pub fn encode_ip<'a>(env: Env<'a>, addr: &IpAddr) -> Term<'a> {
    match addr {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            (a, b, c, d).encode(env)
        }
        IpAddr::V6(a) => {
            let segments: Vec<Term> = a.segments().iter().map(|s| s.encode(env)).collect();
            rustler::types::tuple::make_tuple(env, &segments)
        }
    }
}

/// A map with atom keys.
pub fn map_of<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> NifResult<Term<'a>> {
    let pairs: Vec<(Term, Term)> = pairs.iter().map(|(k, v)| (k.encode(env), *v)).collect();
    Term::map_from_pairs(env, &pairs)
}

/// `nil`, or the value.
pub fn or_nil<'a, T: Encoder>(env: Env<'a>, value: Option<T>) -> Term<'a> {
    match value {
        Some(value) => value.encode(env),
        None => rustler::types::atom::nil().encode(env),
    }
}

pub fn encode_address<'a>(env: Env<'a>, a: &InterfaceAddress) -> NifResult<Term<'a>> {
    let peer = a.peer.map(|peer| encode_ip(env, &peer));
    map_of(
        env,
        &[
            (atoms::address(), encode_ip(env, &a.address)),
            (atoms::prefix(), a.prefix.encode(env)),
            (atoms::dstaddr(), or_nil(env, peer)),
        ],
    )
}

pub fn encode_route<'a>(env: Env<'a>, route: &RouteInfo) -> NifResult<Term<'a>> {
    map_of(
        env,
        &[
            (atoms::address(), encode_ip(env, &route.dst.network())),
            (atoms::prefix(), route.dst.prefix_len().encode(env)),
            (atoms::metric(), route.metric.encode(env)),
        ],
    )
}

pub fn encode_stats<'a>(env: Env<'a>, stats: &LinkStats) -> NifResult<Term<'a>> {
    map_of(
        env,
        &[
            (atoms::rx_packets(), stats.rx_packets.encode(env)),
            (atoms::rx_bytes(), stats.rx_bytes.encode(env)),
            (atoms::rx_errors(), stats.rx_errors.encode(env)),
            (atoms::rx_dropped(), stats.rx_dropped.encode(env)),
            (atoms::tx_packets(), stats.tx_packets.encode(env)),
            (atoms::tx_bytes(), stats.tx_bytes.encode(env)),
            (atoms::tx_errors(), stats.tx_errors.encode(env)),
            (atoms::tx_dropped(), stats.tx_dropped.encode(env)),
        ],
    )
}
