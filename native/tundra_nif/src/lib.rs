//! Rustler NIF of Tundra: TUN devices as resources owned by one Elixir
//! process, with non-blocking I/O signalled through `enif_select` in the
//! style of OTP's `:socket`.
//!
//! The functions here are thin: they decode terms, call `tundra_core` or
//! the device resource (`resource`, the only module with raw erl_nif
//! calls), and encode results. The Elixir module `Tundra.Nif` holds the
//! stubs; `Tundra` is the public API.

mod atoms;
mod packet;
mod resource;

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustler::{Atom, Binary, Encoder, Env, LocalPid, NifMap, NifResult, Term};
use tundra_core::client::{self, Outcome};
use tundra_core::platform::{self, InterfaceAddress};
use tundra_core::{errno, prefix_from_netmask, ConfigError, DeviceConfig, Framing};

use crate::resource::{Direction, Refused};
use tundra_core::closer::DeferredFd;

/// `create/2` options after the Elixir side has parsed and type-checked
/// them; ranges and meaning are checked here (by `DeviceConfig`).
#[derive(NifMap)]
struct CreateArgs<'a> {
    address: Binary<'a>,
    dstaddr: Option<Binary<'a>>,
    netmask: Option<Binary<'a>>,
    prefix: Option<i64>,
    mtu: Option<i64>,
    name: Option<String>,
    up: bool,
    /// `direct`, `server`, or `auto` (direct, then the server on EPERM/EACCES).
    via: Atom,
    socket_path: String,
    timeout_ms: u64,
}

fn ip_from_binary(bin: &Binary, err: ConfigError) -> Result<IpAddr, ConfigError> {
    tundra_core::config::ip_from_bytes(bin.as_slice()).ok_or(err)
}

impl CreateArgs<'_> {
    fn to_config(&self) -> Result<DeviceConfig, ConfigError> {
        let address = ip_from_binary(&self.address, ConfigError::Address)?;
        let mut config = DeviceConfig::new(address);
        if let Some(dst) = &self.dstaddr {
            config.dstaddr = Some(ip_from_binary(dst, ConfigError::Dstaddr)?);
        }
        if let Some(mask) = &self.netmask {
            let mask = ip_from_binary(mask, ConfigError::Netmask)?;
            if mask.is_ipv4() != address.is_ipv4() {
                return Err(ConfigError::Netmask);
            }
            config.prefix = prefix_from_netmask(mask).ok_or(ConfigError::Netmask)?;
        }
        if let Some(prefix) = self.prefix {
            config.prefix = u8::try_from(prefix).map_err(|_| ConfigError::Prefix)?;
        }
        if let Some(mtu) = self.mtu {
            config.mtu = u32::try_from(mtu).map_err(|_| ConfigError::Mtu)?;
        }
        config.name = self.name.clone();
        config.up = self.up;
        config.validate()?;
        Ok(config)
    }
}

fn errno_atom<'a>(env: Env<'a>, err: &io::Error) -> Term<'a> {
    Atom::from_str(env, errno::io_error_name(err))
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| atoms::eio().encode(env))
}

fn error<'a>(env: Env<'a>, reason: impl Encoder) -> Term<'a> {
    (atoms::error(), reason).encode(env)
}

fn io_error<'a>(env: Env<'a>, err: &io::Error) -> Term<'a> {
    error(env, errno_atom(env, err))
}

fn refused<'a>(env: Env<'a>, why: Refused) -> Term<'a> {
    match why {
        Refused::NotOwner => error(env, atoms::not_owner()),
        Refused::Closed => error(env, atoms::closed()),
    }
}

/// Wraps a freshly made device fd in a resource owned by the caller:
/// `{:ok, {ref, name}}`.
fn make_device<'a>(env: Env<'a>, fd: OwnedFd, name: String, framing: Framing) -> Term<'a> {
    match resource::new_device(env, DeferredFd::new(fd), name.clone(), framing) {
        Some(term) => (atoms::ok(), (term, name)).encode(env),
        None => error(env, atoms::enomem()),
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn create<'a>(env: Env<'a>, args: CreateArgs<'a>) -> Term<'a> {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(bad) => return invalid_option(env, bad),
    };
    let via_server = || {
        let socket = std::path::Path::new(&args.socket_path);
        let timeout = std::time::Duration::from_millis(args.timeout_ms);
        client::create(socket, &config, timeout)
    };
    let outcome = if args.via == atoms::server() {
        via_server()
    } else {
        match platform::create(&config) {
            Err(e) if args.via == atoms::auto() && is_privilege_error(&e) => via_server(),
            direct => direct.map(Outcome::Created),
        }
    };
    match outcome {
        Ok(Outcome::Created(dev)) => make_device(env, dev.fd, dev.name, dev.framing),
        Ok(Outcome::Invalid(bad)) => invalid_option(env, bad),
        Err(err) => io_error(env, &err),
    }
}

fn is_privilege_error(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn invalid_option(env: Env, bad: ConfigError) -> Term {
    let key = Atom::from_str(env, bad.option_name()).map(|a| a.encode(env));
    error(
        env,
        (
            atoms::invalid_option(),
            key.unwrap_or(atoms::eio().encode(env)),
        ),
    )
}

#[rustler::nif]
fn adopt(env: Env, fd: RawFd, dup: bool) -> Term {
    if fd < 0 || nix::fcntl::fcntl(borrow_named_fd(fd), nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return error(env, atoms::ebadf());
    }
    let borrowed = borrow_named_fd(fd);
    let tun = match platform::inspect(borrowed) {
        Ok(tun) => tun,
        Err(_) => return error(env, atoms::not_tun()),
    };
    let owned = if dup {
        match borrowed.try_clone_to_owned() {
            Ok(owned) => owned,
            Err(err) => return io_error(env, &err),
        }
    } else {
        // SAFETY: the caller gave up `fd` (dup: false is documented as a
        // transfer of ownership), it is open (F_GETFD succeeded) and it is a
        // TUN fd, which nothing else in the VM owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    if let Err(err) = platform::set_nonblocking(owned.as_fd(), true) {
        drop(DeferredFd::new(owned));
        return io_error(env, &err);
    }
    make_device(env, owned, tun.name, tun.framing)
}

/// Borrows a raw fd number that the caller names for the length of one
/// NIF call.
fn borrow_named_fd<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: only used on fds the caller names, for system calls that
    // report EBADF for a closed number; none of them close the fd.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The select message, `{:"$socket", {:"$tundra", ref}, :select, handle}`,
/// and the return value `{:select, {:select_info, op, handle}}`.
fn arm_select<'a>(
    env: Env<'a>,
    dev: &resource::DeviceRef<'a>,
    owned: &mut resource::Owned,
    direction: Direction,
) -> Term<'a> {
    match select_info(env, dev, owned, direction) {
        Ok(info) => (atoms::select(), info).encode(env),
        Err(failed) => failed,
    }
}

/// Arms a select for `direction`: `Ok(select_info)`, or `Err({:error, :eio})`
/// if the VM refused it.
fn select_info<'a>(
    env: Env<'a>,
    dev: &resource::DeviceRef<'a>,
    owned: &mut resource::Owned,
    direction: Direction,
) -> Result<Term<'a>, Term<'a>> {
    let handle = env.make_ref();
    let device = (atoms::dollar_tundra(), dev.term());
    let msg = (atoms::dollar_socket(), device, atoms::select(), handle).encode(env);
    if !owned.select(direction, msg) {
        return Err(error(env, atoms::eio()));
    }
    let op = match direction {
        Direction::Read => atoms::recv(),
        Direction::Write => atoms::send(),
    };
    Ok((atoms::select_info(), op, handle).encode(env))
}

#[rustler::nif]
fn recv<'a>(env: Env<'a>, dev: Term<'a>, max_len: usize) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let mut owned = match dev.owned() {
        Ok(owned) => owned,
        Err(why) => return Ok(refused(env, why)),
    };
    Ok(
        match packet::read(env, owned.fd(), owned.framing(), max_len) {
            Ok(bin) => (atoms::ok(), bin).encode(env),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                arm_select(env, &dev, &mut owned, Direction::Read)
            }
            Err(err) => io_error(env, &err),
        },
    )
}

/// Reads up to `count` whole packets, stopping early when the fd has no
/// more: `{:ok, [packet, ...]}` (at least one), or a select when there is
/// none. An error after some packets were read returns those packets; the
/// error comes back on the next call.
#[rustler::nif]
fn recv_many<'a>(env: Env<'a>, dev: Term<'a>, count: usize) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let mut owned = match dev.owned() {
        Ok(owned) => owned,
        Err(why) => return Ok(refused(env, why)),
    };
    Ok(
        match packet::read_batch(env, owned.fd(), owned.framing(), count.min(MAX_BATCH)) {
            Ok(packets) => (atoms::ok(), packets).encode(env),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                arm_select(env, &dev, &mut owned, Direction::Read)
            }
            Err(err) => io_error(env, &err),
        },
    )
}

/// Most packets one `recv_many` call reads, so that a call on a flooded
/// device stays as short as a NIF call must.
const MAX_BATCH: usize = 1024;

#[rustler::nif]
fn send<'a>(env: Env<'a>, dev: Term<'a>, data: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let data = packet::Outgoing::from_iodata(data)?;
    let mut owned = match dev.owned() {
        Ok(owned) => owned,
        Err(why) => return Ok(refused(env, why)),
    };
    Ok(match packet::write(owned.fd(), owned.framing(), &data) {
        Ok(()) => atoms::ok().encode(env),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
            arm_select(env, &dev, &mut owned, Direction::Write)
        }
        Err(err) => io_error(env, &err),
    })
}

/// Most packets one `send_many` call writes; the Elixir side calls again
/// for the rest (`{:more, rest}`), so a NIF call stays short.
const MAX_SEND_BATCH: usize = 256;

#[rustler::nif]
fn send_many<'a>(env: Env<'a>, dev: Term<'a>, packets: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    // Every packet of the batch is decoded before any is written, so a
    // term that is not iodata raises with nothing sent. Each keeps the
    // list cell it heads: the unsent rest, returned as it came.
    let mut batch = Vec::with_capacity(64);
    let mut rest = packets;
    while batch.len() < MAX_SEND_BATCH {
        let Ok((head, tail)) = rest.list_get_cell() else {
            if rest.is_empty_list() {
                break;
            }
            return Err(rustler::Error::BadArg);
        };
        batch.push((rest, packet::Outgoing::from_iodata(head)?));
        rest = tail;
    }
    let mut owned = match dev.owned() {
        Ok(owned) => owned,
        Err(why) => return Ok(refused(env, why)),
    };
    for (unsent, data) in &batch {
        match packet::write(owned.fd(), owned.framing(), data) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Ok(match select_info(env, &dev, &mut owned, Direction::Write) {
                    Ok(info) => (atoms::select(), (info, *unsent)).encode(env),
                    Err(failed) => failed,
                });
            }
            Err(err) => return Ok(error(env, (errno_atom(env, &err), *unsent))),
        }
    }
    Ok(if rest.is_empty_list() {
        atoms::ok().encode(env)
    } else {
        (atoms::more(), rest).encode(env)
    })
}

#[rustler::nif]
fn cancel<'a>(env: Env<'a>, dev: Term<'a>, op: Atom) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let direction = if op == atoms::recv() {
        Direction::Read
    } else if op == atoms::send() {
        Direction::Write
    } else {
        return Err(rustler::Error::BadArg);
    };
    Ok(match dev.owned() {
        Ok(mut owned) => {
            owned.cancel(direction);
            atoms::ok().encode(env)
        }
        Err(why) => refused(env, why),
    })
}

#[rustler::nif]
fn close<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(owned) => {
            owned.close();
            atoms::ok().encode(env)
        }
        Err(why) => refused(env, why),
    })
}

#[rustler::nif]
fn controlling_process<'a>(env: Env<'a>, dev: Term<'a>, pid: LocalPid) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) => {
            if owned.set_owner(pid) {
                atoms::ok().encode(env)
            } else {
                error(env, atoms::esrch())
            }
        }
        Err(why) => refused(env, why),
    })
}

fn encode_ip<'a>(env: Env<'a>, addr: &IpAddr) -> Term<'a> {
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

fn encode_address<'a>(env: Env<'a>, a: &InterfaceAddress) -> Term<'a> {
    let peer = match &a.peer {
        Some(peer) => encode_ip(env, peer),
        None => rustler::types::atom::nil().encode(env),
    };
    Term::map_from_pairs(
        env,
        &[
            (atoms::address().encode(env), encode_ip(env, &a.address)),
            (atoms::prefix().encode(env), a.prefix.encode(env)),
            (atoms::dstaddr().encode(env), peer),
        ],
    )
    .unwrap_or_else(|_| rustler::types::atom::nil().encode(env))
}

#[rustler::nif(schedule = "DirtyIo")]
fn info<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let (name, owner, fd) = match dev.describe() {
        Ok(found) => found,
        Err(why) => return Ok(refused(env, why)),
    };
    let link = match platform::link_info(&name) {
        Ok(link) => link,
        Err(err) => return Ok(io_error(env, &err)),
    };
    let addresses: Vec<Term> = link
        .addresses
        .iter()
        .map(|a| encode_address(env, a))
        .collect();
    let map = Term::map_from_pairs(
        env,
        &[
            (atoms::name().encode(env), name.encode(env)),
            (atoms::index().encode(env), link.index.encode(env)),
            (atoms::mtu().encode(env), link.mtu.encode(env)),
            (atoms::up().encode(env), link.up.encode(env)),
            (atoms::addresses().encode(env), addresses.encode(env)),
            (atoms::owner().encode(env), owner.encode(env)),
            (atoms::fd().encode(env), fd.encode(env)),
        ],
    )?;
    Ok((atoms::ok(), map).encode(env))
}

fn load(env: Env, _info: Term) -> bool {
    resource::init(env)
}

rustler::init!("Elixir.Tundra.Nif", load = load);
