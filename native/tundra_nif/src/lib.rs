//! Rustler NIF of Tundra: TUN devices as resources owned by one Elixir
//! process, with non-blocking I/O signalled through `enif_select` in the
//! style of OTP's `:socket`.
//!
//! The functions here are thin: they decode terms, call `tundra_core` or
//! the device resource (`resource`, the only module with raw erl_nif
//! calls), and encode results; every I/O call ends in one `Done` rendered
//! by `device_io`. The Elixir module `Tundra.Nif` holds the stubs;
//! `Tundra` is the public API.

mod atoms;
mod linkwatch;
mod packet;
mod registry;
mod resource;
mod vnet;

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustler::{Atom, Binary, Encoder, Env, LocalPid, NifMap, NifResult, Term};
use tundra_core::client::{self, Outcome};
use tundra_core::closer::DeferredFd;
use tundra_core::offload::{self, Offloads};
use tundra_core::platform::{self, InterfaceAddress, LinkStats, Persist, Placement};
use tundra_core::{
    errno, prefix_from_netmask, AddressSpec, Change, Cidr, ConfigError, DeviceConfig, Framing,
    Mode, RouteSpec,
};

use crate::packet::{Outgoing, Unwritable};
use crate::resource::{Active, ActiveChange, Direction, Refused};

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
    /// `None`: no deadline (`:infinity`).
    timeout_ms: Option<u64>,
    /// `None`: one device, returned alone; `Some(n)`: a list of `n`.
    queues: Option<i64>,
    /// `tun` or `tap`.
    mode: Atom,
    mac: Option<Binary<'a>>,
    ipv6: bool,
    offload: bool,
    /// Direct creation only: a network namespace, and persistence with
    /// an owner and group (each a number or a name).
    netns: Option<String>,
    persist: bool,
    owner: Option<Term<'a>>,
    group: Option<Term<'a>>,
}

/// Why a create is refused before anything is made: a `DeviceConfig`
/// field, or an option only this side knows.
enum BadCreate {
    Config(ConfigError),
    Option(Atom),
}

impl From<ConfigError> for BadCreate {
    fn from(bad: ConfigError) -> Self {
        BadCreate::Config(bad)
    }
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
        if let Some(queues) = self.queues {
            config.queues = u16::try_from(queues).map_err(|_| ConfigError::Queues)?;
        }
        config.mode = if self.mode == atoms::tap() {
            Mode::Tap
        } else {
            Mode::Tun
        };
        if let Some(mac) = &self.mac {
            config.mac = Some(<[u8; 6]>::try_from(mac.as_slice()).map_err(|_| ConfigError::Mac)?);
        }
        config.ipv6 = self.ipv6;
        config.offload = self.offload;
        config.validate()?;
        platform::validate(&config)?;
        Ok(config)
    }

    /// Where the device goes, when not simply here: only direct creation
    /// can place it.
    fn placement(&self) -> Result<Option<Placement>, BadCreate> {
        let persist = if self.persist {
            Some(Persist {
                owner: given(self.owner)
                    .map(|t| user_id(t).ok_or(BadCreate::Option(atoms::owner())))
                    .transpose()?,
                group: given(self.group)
                    .map(|t| group_id(t).ok_or(BadCreate::Option(atoms::group())))
                    .transpose()?,
            })
        } else {
            None
        };
        Ok(
            (self.netns.is_some() || persist.is_some()).then(|| Placement {
                netns: self.netns.clone(),
                persist,
            }),
        )
    }
}

/// An optional term that is not `nil` (a `Term` field decodes `nil`
/// too).
fn given(term: Option<Term>) -> Option<Term> {
    term.filter(|t| t.decode::<Atom>().ok() != Some(rustler::types::atom::nil()))
}

/// A uid: a number, or a user name the user database knows.
fn user_id(term: Term) -> Option<u32> {
    numeric_or_named(term, |name| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    })
}

/// A gid: a number, or a group name the group database knows.
fn group_id(term: Term) -> Option<u32> {
    numeric_or_named(term, |name| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

fn numeric_or_named(term: Term, look_up: impl FnOnce(&str) -> Option<u32>) -> Option<u32> {
    match term.decode::<u32>() {
        Ok(id) => Some(id),
        Err(_) => look_up(&term.decode::<String>().ok()?),
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

fn config_error_atom(bad: ConfigError) -> Atom {
    match bad {
        ConfigError::Address => atoms::address(),
        ConfigError::Dstaddr => atoms::dstaddr(),
        ConfigError::Netmask => atoms::netmask(),
        ConfigError::Prefix => atoms::prefix(),
        ConfigError::Mtu => atoms::mtu(),
        ConfigError::Name => atoms::name(),
        ConfigError::Queues => atoms::queues(),
        ConfigError::Mode => atoms::mode(),
        ConfigError::Mac => atoms::mac(),
        ConfigError::Ipv6 => atoms::ipv6(),
        ConfigError::Offload => atoms::offload(),
        ConfigError::Route => atoms::route(),
        ConfigError::Metric => atoms::metric(),
    }
}

fn invalid_option(env: Env, bad: ConfigError) -> Term {
    error(env, (atoms::invalid_option(), config_error_atom(bad)))
}

fn invalid_create(env: Env, bad: BadCreate) -> Term {
    match bad {
        BadCreate::Config(bad) => invalid_option(env, bad),
        BadCreate::Option(key) => error(env, (atoms::invalid_option(), key)),
    }
}

/// Wraps a fresh device fd in a resource owned by the caller: `{:ok,
/// {ref, name}}`.
/// Wraps the fds of a fresh device in resources owned by the caller:
/// `{:ok, {ref, name}}`, or `{:ok, {[ref, ...], name}}` when `as_list`
/// (a device with queues). Should one fail, the others already made
/// close with the list's garbage.
fn make_devices<'a>(env: Env<'a>, dev: platform::Device, as_list: bool) -> Term<'a> {
    let netns = dev.netns.map(Arc::new);
    let offloads = offloads_of(dev.fd.as_fd(), dev.framing);
    let setup = || resource::Setup {
        name: dev.name.clone(),
        framing: dev.framing,
        netns: netns.clone(),
        offloads,
    };
    if !as_list {
        return match make_device_term(env, dev.fd, setup()) {
            Ok(term) => (atoms::ok(), (term, dev.name.clone())).encode(env),
            Err(failed) => failed,
        };
    }
    let mut devices = Vec::with_capacity(1 + dev.queues.len());
    for fd in std::iter::once(dev.fd).chain(dev.queues) {
        match make_device_term(env, fd, setup()) {
            Ok(term) => devices.push(term),
            Err(failed) => return failed,
        }
    }
    (atoms::ok(), (devices, dev.name.clone())).encode(env)
}

/// An offload device's offloads, turned on here (the kernel keeps them
/// per device, and any holder of an fd may set them): whoever made the
/// device, this is where they are decided and known.
fn offloads_of(fd: BorrowedFd, framing: Framing) -> Offloads {
    match framing {
        Framing::VirtioNet => platform::enable_offload(fd),
        _ => Offloads::default(),
    }
}

/// The resource term for a fresh device fd, claimed in the registry here
/// (`{:error, :ebusy}` if a device already owns it).
fn make_device_term<'a>(
    env: Env<'a>,
    fd: OwnedFd,
    setup: resource::Setup,
) -> Result<Term<'a>, Term<'a>> {
    let Some(id) = registry::claim_fresh(fd.as_raw_fd()) else {
        // A fresh fd is never claimed; this would mean the registry lost
        // track of a closed one. Refuse rather than share it.
        drop(DeferredFd::new(fd));
        return Err(error(env, atoms::ebusy()));
    };
    resource_for(env, fd, id, setup)
}

fn resource_for<'a>(
    env: Env<'a>,
    fd: OwnedFd,
    id: registry::Id,
    setup: resource::Setup,
) -> Result<Term<'a>, Term<'a>> {
    let fd = DeferredFd::with_after_close(fd, Box::new(move || registry::released(id)));
    resource::new_device(env, fd, id, setup).ok_or_else(|| error(env, atoms::enomem()))
}

#[rustler::nif(schedule = "DirtyIo")]
fn create<'a>(env: Env<'a>, args: CreateArgs<'a>) -> Term<'a> {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(bad) => return invalid_option(env, bad),
    };
    let placement = match args.placement() {
        Ok(placement) => placement,
        Err(bad) => return invalid_create(env, bad),
    };
    let deadline = deadline_after(args.timeout_ms);
    let alive = |pid: LocalPid| pid.is_alive(env);
    let outcome = loop {
        let outcome = create_once(&args, &config, placement.as_ref(), deadline);
        let again = match (&outcome, config.name.as_deref()) {
            // A name of ours that is still closing (an owner that exited, a
            // restarted supervisor child): wait for the close, then again.
            (Err(e), Some(name))
                if e.raw_os_error() == Some(libc::EBUSY) && !name.contains('%') =>
            {
                registry::holders(name, alive) == registry::Holders::Leaving
                    && registry::wait_released(name, deadline)
            }
            // The server found the addresses in use: if devices of ours
            // are closing, they may be theirs (the same restarted child,
            // without a name); wait for those closes, then again.
            (Err(e), _) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                let leaving = registry::leaving(alive);
                !leaving.is_empty() && registry::wait_closed(&leaving, deadline)
            }
            _ => false,
        };
        if !again {
            break outcome;
        }
    };
    match outcome {
        Ok(Outcome::Created(dev)) => make_devices(env, dev, args.queues.is_some()),
        Ok(Outcome::Invalid(bad)) => invalid_option(env, bad),
        Err(err) => io_error(env, &err),
    }
}

/// One try: a placed device directly (the server places none), else
/// directly or through the server as `via` says.
fn create_once(
    args: &CreateArgs,
    config: &DeviceConfig,
    placement: Option<&Placement>,
    deadline: Instant,
) -> io::Result<Outcome> {
    if let Some(placement) = placement {
        return platform::create_placed(config, placement).map(Outcome::Created);
    }
    let via_server = || {
        let socket = std::path::Path::new(&args.socket_path);
        let left = deadline.saturating_duration_since(Instant::now());
        client::create(socket, config, left)
    };
    if args.via == atoms::server() {
        return via_server();
    }
    match platform::create(config) {
        Err(e) if args.via == atoms::auto() && is_privilege_error(&e) => via_server(),
        direct => direct.map(Outcome::Created),
    }
}

fn is_privilege_error(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

#[rustler::nif]
fn adopt(env: Env, fd: RawFd, dup: bool) -> Term {
    if fd < 0 || nix::fcntl::fcntl(borrow_named_fd(fd), nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return error(env, atoms::ebadf());
    }
    let borrowed = borrow_named_fd(fd);
    let tun = match platform::inspect(borrowed) {
        Ok(tun) => tun,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return error(env, atoms::eopnotsupp())
        }
        Err(_) => return error(env, atoms::not_tun()),
    };
    let (owned, id) = if dup {
        let owned = match borrowed.try_clone_to_owned() {
            Ok(owned) => owned,
            Err(err) => return io_error(env, &err),
        };
        match registry::claim_fresh(owned.as_raw_fd()) {
            Some(id) => (owned, id),
            None => {
                drop(DeferredFd::new(owned));
                return error(env, atoms::ebusy());
            }
        }
    } else {
        // Claimed before it is owned: a number a device of this VM owns is
        // refused, and never closed here.
        let index = nix::net::if_::if_nametoindex(tun.name.as_str()).unwrap_or(0);
        let Some(id) = registry::claim_given(fd, index) else {
            return error(env, atoms::ebusy());
        };
        // SAFETY: the caller gave up `fd` (dup: false is documented as a
        // transfer of ownership), it is open (F_GETFD succeeded), it is a
        // TUN fd, and no device of this VM owns it (the claim succeeded).
        (unsafe { OwnedFd::from_raw_fd(fd) }, id)
    };
    if let Err(err) = platform::set_nonblocking(owned.as_fd(), true) {
        drop(DeferredFd::with_after_close(
            owned,
            Box::new(move || registry::released(id)),
        ));
        return io_error(env, &err);
    }
    let setup = resource::Setup {
        name: tun.name.clone(),
        framing: tun.framing,
        netns: tun.netns.map(Arc::new),
        offloads: offloads_of(owned.as_fd(), tun.framing),
    };
    match resource_for(env, owned, id, setup) {
        Ok(term) => (atoms::ok(), (term, tun.name)).encode(env),
        Err(failed) => failed,
    }
}

/// Opens the existing persistent device `name` (with `queues` fds; a list
/// of devices when `queues` is given), as its owner or group may without
/// privilege.
#[rustler::nif(schedule = "DirtyIo")]
fn attach<'a>(env: Env<'a>, name: String, queues: Option<u16>) -> Term<'a> {
    // An existing interface's name: what create/2 takes, without `%d`.
    if !tundra_core::config::valid_interface_name(&name) || name.contains('%') {
        return invalid_option(env, ConfigError::Name);
    }
    match platform::attach(&name, queues.unwrap_or(1)) {
        Ok(dev) => make_devices(env, dev, queues.is_some()),
        Err(err) => io_error(env, &err),
    }
}

/// Borrows a raw fd number that the caller names for the length of one
/// NIF call.
fn borrow_named_fd<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: only used on fds the caller names, for system calls that
    // report EBADF for a closed number; none of them close the fd.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// How one I/O call on a device ended, before it is rendered.
enum Done<'a> {
    /// Finished: this term is the reply.
    Reply(Term<'a>),
    /// The fd would block: a select is armed and `{:select, info}` (or
    /// `{:select, {info, rest}}` with the unsent `rest`) returned.
    WouldBlock(Option<Term<'a>>),
    /// A system error: `{:error, posix}` (or `{:error, {posix, rest}}`).
    Failed(io::Error, Option<Term<'a>>),
    /// A packet that is not iodata: raises `ArgumentError`.
    NotIodata,
}

impl<'a> Done<'a> {
    fn from_io(result: io::Result<Term<'a>>) -> Done<'a> {
        match result {
            Ok(reply) => Done::Reply(reply),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Done::WouldBlock(None),
            Err(e) => Done::Failed(e, None),
        }
    }
}

/// Runs `op` on the caller's open device and renders what it came to:
/// the one place I/O results become terms.
fn device_io<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    direction: Direction,
    op: impl FnOnce(&mut resource::Owned<'_, 'a>) -> Done<'a>,
) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let mut owned = match dev.owned() {
        Ok(owned) => owned,
        Err(why) => return Ok(refused(env, why)),
    };
    Ok(match op(&mut owned) {
        Done::Reply(reply) => reply,
        Done::WouldBlock(rest) => match arm_select(env, &dev, &mut owned, direction) {
            Ok(info) => match rest {
                None => (atoms::select(), info).encode(env),
                Some(rest) => (atoms::select(), (info, rest)).encode(env),
            },
            Err(failed) => failed,
        },
        Done::Failed(err, None) => io_error(env, &err),
        Done::Failed(err, Some(rest)) => error(env, (errno_atom(env, &err), rest)),
        Done::NotIodata => return Err(rustler::Error::BadArg),
    })
}

/// Arms a select for `direction`: `Ok(select_info)`, where the select
/// message is `{:"$socket", {:"$tundra", ref}, :select, handle}`, or
/// `Err({:error, :eio})` if the VM refused it.
fn arm_select<'a>(
    env: Env<'a>,
    dev: &resource::DeviceRef<'a>,
    owned: &mut resource::Owned,
    direction: Direction,
) -> Result<Term<'a>, Term<'a>> {
    let handle = env.make_ref();
    let device = (atoms::dollar_tundra(), dev.term());
    let msg = (atoms::dollar_socket(), device, atoms::select(), handle).encode(env);
    if !owned.select(direction, msg, handle.encode(env)) {
        return Err(error(env, atoms::eio()));
    }
    Ok((atoms::select_info(), op_atom(direction), handle).encode(env))
}

fn op_atom(direction: Direction) -> Atom {
    match direction {
        Direction::Read => atoms::recv(),
        Direction::Write => atoms::send(),
    }
}

/// Tells the VM how much of a timeslice a call used, so that a process
/// making many calls in a row is preempted as if it had run Erlang code
/// for as long. Returns whether the slice is used up.
fn report_time(env: Env, since: Instant) -> bool {
    let percent = since.elapsed().as_micros() / 10; // 1 ms is a whole slice
    rustler::schedule::consume_timeslice(env, i32::try_from(percent.clamp(1, 100)).unwrap_or(100))
}

/// How long one call may go on reading or writing packets (a NIF should
/// return within about a millisecond).
const CALL_BUDGET: Duration = Duration::from_micros(500);

/// Passive reads of an active device are refused, as `:gen_udp` does:
/// the reader thread owns its reads until it is made passive.
fn refuse_if_active<'a>(owned: &resource::Owned) -> Option<Done<'a>> {
    owned
        .is_active()
        .then(|| Done::Failed(io::Error::from_raw_os_error(libc::EINVAL), None))
}

#[rustler::nif]
fn recv<'a>(env: Env<'a>, dev: Term<'a>, max_len: usize) -> NifResult<Term<'a>> {
    device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let packet = match owned.framing() {
            Framing::VirtioNet => {
                let (fd, pending) = owned.fd_and_pending();
                vnet::read(env, fd, pending, max_len)
            }
            framing => packet::read(env, owned.fd(), framing, max_len),
        };
        Done::from_io(packet.map(|bin| (atoms::ok(), bin).encode(env)))
    })
}

/// Reads up to `count` whole packets, stopping early when the fd has no
/// more or the call's time is up: `{:ok, [packet, ...]}` (at least one),
/// or a select when there is none. An error after some packets were read
/// returns those packets; the error comes back on the next call.
#[rustler::nif]
fn recv_many<'a>(env: Env<'a>, dev: Term<'a>, count: usize) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let (count, until) = (count.min(MAX_BATCH), started + CALL_BUDGET);
        let batch = match owned.framing() {
            Framing::VirtioNet => {
                let (fd, pending) = owned.fd_and_pending();
                vnet::read_batch(env, fd, pending, count, until)
            }
            framing => packet::read_batch(env, owned.fd(), framing, count, until),
        };
        Done::from_io(batch.map(|packets| (atoms::ok(), packets).encode(env)))
    });
    report_time(env, started);
    result
}

/// Most packets one `recv_many` call reads.
const MAX_BATCH: usize = 1024;

/// Why a packet is not written as it is.
enum Unfit {
    /// Its iodata must be flattened first, by the caller.
    NeedsFlattening,
    /// Not iodata: raises `ArgumentError`.
    NotIodata,
    /// Refused with this errno (`EMSGSIZE`, `EINVAL`).
    Refused(i32),
}

/// A packet checked for the kernel.
fn prepare<'a>(data: Term<'a>, framing: Framing) -> Result<Outgoing<'a>, Unfit> {
    let packet = Outgoing::from_iodata(data).map_err(|why| match why {
        Unwritable::NeedsFlattening => Unfit::NeedsFlattening,
        Unwritable::NotIodata => Unfit::NotIodata,
    })?;
    packet
        .check(framing)
        .map_err(|why| Unfit::Refused(why.errno()))?;
    Ok(packet)
}

/// Writes one packet: `:ok`, a select, `{:error, reason}`, or `:flatten`
/// when the iodata must be flattened first (done by the caller, which
/// the VM lets yield).
#[rustler::nif]
fn send<'a>(env: Env<'a>, dev: Term<'a>, data: Term<'a>) -> NifResult<Term<'a>> {
    device_io(env, dev, Direction::Write, |owned| {
        match prepare(data, owned.framing()) {
            Ok(packet) => Done::from_io(
                packet::write(owned.fd(), owned.framing(), &packet)
                    .map(|()| atoms::ok().encode(env)),
            ),
            Err(Unfit::NeedsFlattening) => Done::Reply(atoms::flatten().encode(env)),
            Err(Unfit::NotIodata) => Done::NotIodata,
            Err(Unfit::Refused(errno)) => Done::Failed(io::Error::from_raw_os_error(errno), None),
        }
    })
}

/// Writes packets of a list in order, for as long as the call's time
/// allows: `:ok` when all are written, `{:more, rest}` when time is up
/// (the caller calls again, after the VM has had its turn), a select or
/// an error with the unsent `rest`, or `{:flatten, rest}` when the first
/// of `rest` must be flattened first.
#[rustler::nif]
fn send_many<'a>(env: Env<'a>, dev: Term<'a>, packets: Term<'a>) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Write, |owned| {
        let mut rest = packets;
        let mut wrote = false;
        loop {
            let Ok((head, tail)) = rest.list_get_cell() else {
                return if rest.is_empty_list() {
                    Done::Reply(atoms::ok().encode(env))
                } else {
                    Done::NotIodata
                };
            };
            // Something is written before the clock counts (see
            // `send_segments`).
            if wrote && started.elapsed() >= CALL_BUDGET {
                return Done::Reply((atoms::more(), rest).encode(env));
            }
            wrote = true;
            // On an offload device, consecutive TCP segments of one flow
            // (each a whole binary) go out as one super-packet.
            let run = match owned.framing() {
                Framing::VirtioNet => whole_binary(head)
                    .and_then(|first| offload::run_from(first, leading_binaries(tail))),
                _ => None,
            };
            if let Some(run) = run {
                match offload::write_run(owned.fd(), &run) {
                    Ok(()) => {
                        rest = skip(rest, run.len());
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Done::WouldBlock(Some(rest))
                    }
                    Err(e) => return Done::Failed(e, Some(rest)),
                }
            }
            let packet = match prepare(head, owned.framing()) {
                Ok(packet) => packet,
                Err(Unfit::NeedsFlattening) => {
                    return Done::Reply((atoms::flatten(), rest).encode(env))
                }
                Err(Unfit::NotIodata) => return Done::NotIodata,
                Err(Unfit::Refused(errno)) => {
                    return Done::Failed(io::Error::from_raw_os_error(errno), Some(rest))
                }
            };
            match packet::write(owned.fd(), owned.framing(), &packet) {
                Ok(()) => rest = tail,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Done::WouldBlock(Some(rest))
                }
                Err(e) => return Done::Failed(e, Some(rest)),
            }
        }
    });
    report_time(env, started);
    result
}

/// The bytes of `term` if it is a binary.
fn whole_binary<'a>(term: Term<'a>) -> Option<&'a [u8]> {
    term.is_binary()
        .then(|| Binary::from_term(term).ok())
        .flatten()
        .map(|bin| bin.as_slice())
}

/// The binaries that begin `list`, up to the first element that is not one.
fn leading_binaries<'a>(mut list: Term<'a>) -> impl Iterator<Item = &'a [u8]> {
    std::iter::from_fn(move || {
        let (head, tail) = list.list_get_cell().ok()?;
        list = tail;
        whole_binary(head)
    })
}

/// `list` without its first `n` elements.
fn skip<'a>(mut list: Term<'a>, n: usize) -> Term<'a> {
    for _ in 0..n {
        match list.list_get_cell() {
            Ok((_, tail)) => list = tail,
            Err(_) => break,
        }
    }
    list
}

/// One read of the caller's device as a batch for `UDP_SEGMENT`:
/// `{:ok, {binary, size}}` where `binary` holds packets back to back, each
/// `size` bytes but the last (a super-packet's segments on an offload
/// device; one packet otherwise), or a select, or `{:error, reason}`.
#[rustler::nif]
fn recv_segments<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let batch = match owned.framing() {
            Framing::VirtioNet => {
                let (fd, pending) = owned.fd_and_pending();
                vnet::read_segments(env, fd, pending)
            }
            framing => packet::read(env, owned.fd(), framing, 0).map(|bin| {
                let size = bin.len();
                (bin, size)
            }),
        };
        Done::from_io(batch.map(|(bin, size)| (atoms::ok(), (bin, size)).encode(env)))
    });
    report_time(env, started);
    result
}

/// Writes the packets that lie back to back in `data`, each `size` bytes
/// but the last (as `UDP_GRO` hands them over), each checked as `send`
/// checks one; on an offload device runs of TCP segments of one flow go
/// out as super-packets. `:ok`, `{:more, rest}` when the call's time is
/// up, or a select or error with the unwritten `rest` (a sub-binary).
#[rustler::nif]
fn send_segments<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    data: Binary<'a>,
    size: usize,
) -> NifResult<Term<'a>> {
    if size == 0 {
        return Err(rustler::Error::BadArg);
    }
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Write, |owned| {
        let bytes = data.as_slice();
        let rest_from = |at: usize| {
            let at = at.min(bytes.len());
            data.make_subbinary(at, bytes.len() - at)
                .map(|rest| rest.to_term(env))
                .unwrap_or_else(|_| data.to_term(env))
        };
        let framing = owned.framing();
        let mut at = 0;
        while at < bytes.len() {
            // Every call writes something before it looks at the clock, so
            // a caller that calls again always gets further.
            if at > 0 && started.elapsed() >= CALL_BUDGET {
                return Done::Reply((atoms::more(), rest_from(at)).encode(env));
            }
            let packet = &bytes[at..bytes.len().min(at + size)];
            let run = match framing {
                Framing::VirtioNet => {
                    offload::run_from(packet, bytes[at + packet.len()..].chunks(size))
                }
                _ => None,
            };
            let written = match run {
                // A run's segments are whole `size` pieces but maybe the
                // last, which ends the data.
                Some(run) => offload::write_run(owned.fd(), &run)
                    .map(|()| run.segments().iter().map(|s| s.packet.len()).sum()),
                None => match packet::check_slice(packet, framing) {
                    Ok(()) => {
                        packet::write_slice(owned.fd(), framing, packet).map(|()| packet.len())
                    }
                    Err(refusal) => Err(io::Error::from_raw_os_error(refusal.errno())),
                },
            };
            match written {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Done::WouldBlock(Some(rest_from(at)))
                }
                Err(e) => return Done::Failed(e, Some(rest_from(at))),
            }
        }
        Done::Reply(atoms::ok().encode(env))
    });
    report_time(env, started);
    result
}

/// Cancels the select pending in `op`'s direction if `handle` is its:
/// `:ok`, or `:invalid` for a handle that is not (`:socket`'s answer).
#[rustler::nif]
fn cancel<'a>(env: Env<'a>, dev: Term<'a>, op: Atom, handle: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let direction = if op == atoms::recv() {
        Direction::Read
    } else if op == atoms::send() {
        Direction::Write
    } else {
        return Err(rustler::Error::BadArg);
    };
    Ok(match dev.owned() {
        Ok(mut owned) if owned.is_pending(direction, handle) => {
            owned.cancel(direction);
            atoms::ok().encode(env)
        }
        Ok(_) => atoms::invalid().encode(env),
        Err(why) => refused(env, why),
    })
}

#[rustler::nif]
fn close<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(owned) => {
            let was_active = owned.is_active();
            // The reader has nothing left to read.
            if let Some(reader) = owned.reader() {
                let _ = env.send(&reader, atoms::stop());
            }
            owned.close();
            (atoms::ok(), was_active).encode(env)
        }
        Err(why) => refused(env, why),
    })
}

/// Sets exactly the offloads named by `bits` (`TUN_F_*`) on the caller's
/// offload device: `:ok`, or `{:error, :einval}` for a device without a
/// vnet header or a set the kernel refuses.
#[rustler::nif]
fn set_offload<'a>(env: Env<'a>, dev: Term<'a>, bits: u32) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) if owned.framing() == Framing::VirtioNet => {
            let offloads = Offloads(bits);
            match platform::set_offload(owned.fd(), offloads) {
                Ok(()) => {
                    owned.set_offloads(offloads);
                    atoms::ok().encode(env)
                }
                Err(err) => io_error(env, &err),
            }
        }
        Ok(_) => io_error(env, &io::Error::from_raw_os_error(libc::EINVAL)),
        Err(why) => refused(env, why),
    })
}

/// The device's reader process: `{:ok, pid}` or `{:ok, nil}`.
#[rustler::nif]
fn reader<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(owned) => match owned.reader() {
            Some(pid) => (atoms::ok(), pid).encode(env),
            None => (atoms::ok(), rustler::types::atom::nil()).encode(env),
        },
        Err(why) => refused(env, why),
    })
}

/// Gives the device its reader process (`Tundra.Reader`), before it is
/// first made active.
#[rustler::nif]
fn set_reader<'a>(env: Env<'a>, dev: Term<'a>, pid: LocalPid) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) => {
            owned.set_reader(pid);
            atoms::ok().encode(env)
        }
        Err(why) => refused(env, why),
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
fn encode_active(env: Env, active: Active) -> Term {
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
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) => match owned.set_active(change) {
            Ok(active) => (atoms::ok(), encode_active(env, active)).encode(env),
            Err(err) => io_error(env, &err),
        },
        Err(why) => refused(env, why),
    })
}

/// Makes the device passive and returns the mode it had (for a hand-over,
/// which restores it for the new owner).
#[rustler::nif]
fn take_active<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) => (atoms::ok(), encode_active(env, owned.take_active())).encode(env),
        Err(why) => refused(env, why),
    })
}

#[rustler::nif]
fn controlling_process<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    pid: LocalPid,
    mode: Atom,
    n: i64,
) -> NifResult<Term<'a>> {
    let active = decode_active(mode, n)?;
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.owned() {
        Ok(mut owned) => {
            // The new owner gets the active mode the caller took away
            // (take_active) before forwarding its messages.
            if !owned.set_owner(pid) {
                let _ = owned.set_active(active);
                return Ok(error(env, atoms::esrch()));
            }
            match owned.set_active(active) {
                Ok(_) => atoms::ok().encode(env),
                Err(err) => io_error(env, &err),
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

fn map<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> NifResult<Term<'a>> {
    let pairs: Vec<(Term, Term)> = pairs.iter().map(|(k, v)| (k.encode(env), *v)).collect();
    Term::map_from_pairs(env, &pairs)
}

fn encode_route<'a>(env: Env<'a>, route: &platform::RouteInfo) -> NifResult<Term<'a>> {
    map(
        env,
        &[
            (atoms::address(), encode_ip(env, &route.dst.network())),
            (atoms::prefix(), route.dst.prefix_len().encode(env)),
            (atoms::metric(), route.metric.encode(env)),
        ],
    )
}

fn encode_stats<'a>(env: Env<'a>, stats: &LinkStats) -> NifResult<Term<'a>> {
    map(
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

#[rustler::nif(schedule = "DirtyIo")]
fn info<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let found = match dev.describe() {
        Ok(found) => found,
        Err(why) => return Ok(refused(env, why)),
    };
    let link = match platform::link_info(&found.name, found.netns.as_deref()) {
        Ok(link) => link,
        Err(err) => return Ok(io_error(env, &err)),
    };
    let addresses: Vec<Term> = link
        .addresses
        .iter()
        .map(|a| encode_address(env, a))
        .collect();
    let routes = link
        .routes
        .iter()
        .map(|r| encode_route(env, r))
        .collect::<NifResult<Vec<Term>>>()?;
    let (mode, mac) = match found.framing {
        Framing::Ethernet => (atoms::tap(), link.mac.map(|m| m.to_vec())),
        _ => (atoms::tun(), None),
    };
    let mac = match mac {
        Some(bytes) => packet::to_binary(env, &bytes).encode(env),
        None => rustler::types::atom::nil().encode(env),
    };
    let offload = encode_offload(env, &found)?;
    let info = map(
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
            (atoms::mac(), mac),
            (atoms::offload(), offload),
            (atoms::owner(), found.owner.encode(env)),
            (atoms::fd(), found.fd.encode(env)),
            (atoms::link_events(), found.link_events.encode(env)),
            (atoms::active(), encode_active(env, found.active)),
        ],
    )?;
    Ok((atoms::ok(), info).encode(env))
}

/// An offload device's offloads by name; `false` for any other.
fn encode_offload<'a>(env: Env<'a>, found: &resource::Described) -> NifResult<Term<'a>> {
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
/// system call): `{:ok, {active, offload, link_events}}`, active as
/// `set_active` returns it.
#[rustler::nif]
fn getopts<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    Ok(match dev.describe() {
        Ok(found) => (
            atoms::ok(),
            (
                encode_active(env, found.active),
                encode_offload(env, &found)?,
                found.link_events,
            ),
        )
            .encode(env),
        Err(why) => refused(env, why),
    })
}

/// A change as the Elixir side passes it (types already checked there):
/// `{:link, up | nil, mtu | nil}`, `{:add_address | :remove_address,
/// address, dstaddr | nil, prefix}` (addresses as 4 or 16 bytes), or
/// `{:add_route | :remove_route, network, prefix, metric | nil}`.
fn decode_change(term: Term) -> NifResult<Result<Change, ConfigError>> {
    let parts = rustler::types::tuple::get_tuple(term)?;
    let kind: Atom = parts.first().ok_or(rustler::Error::BadArg)?.decode()?;
    let part = |i: usize| parts.get(i).copied().ok_or(rustler::Error::BadArg);
    if kind == atoms::link() {
        let up: Option<bool> = part(1)?.decode()?;
        let mtu: Option<i64> = part(2)?.decode()?;
        let mtu = match mtu.map(u32::try_from).transpose() {
            Ok(mtu) => mtu,
            Err(_) => return Ok(Err(ConfigError::Mtu)),
        };
        return Ok(Ok(Change::Link { up, mtu }));
    }
    if kind == atoms::add_address() || kind == atoms::remove_address() {
        let address: Binary = part(1)?.decode()?;
        let dstaddr: Option<Binary> = part(2)?.decode()?;
        let prefix: i64 = part(3)?.decode()?;
        let spec = (|| {
            Ok(AddressSpec {
                address: ip_from_binary(&address, ConfigError::Address)?,
                dstaddr: dstaddr
                    .map(|d| ip_from_binary(&d, ConfigError::Dstaddr))
                    .transpose()?,
                prefix: u8::try_from(prefix).map_err(|_| ConfigError::Prefix)?,
            })
        })();
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
            let network = ip_from_binary(&network, ConfigError::Route)?;
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

/// The end of a wait of `timeout_ms` from now; `None` is `:infinity`, a
/// year here (an `Instant` cannot be unbounded).
fn deadline_after(timeout_ms: Option<u64>) -> Instant {
    const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
    let wait = timeout_ms.map_or(FOREVER, |ms| Duration::from_millis(ms).min(FOREVER));
    Instant::now() + wait
}

/// Changes the caller's device: directly, or, without the privilege,
/// through the server at `socket_path` (within `timeout_ms`), which checks
/// the change as it checks a new device. `:ok`, `{:error, {:invalid_option,
/// key}}` or `{:error, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn change<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    what: Term<'a>,
    socket_path: String,
    timeout_ms: Option<u64>,
) -> NifResult<Term<'a>> {
    let change = match decode_change(what)?.and_then(|c| c.validate().map(|()| c)) {
        Ok(change) => change,
        Err(bad) => return Ok(invalid_option(env, bad)),
    };
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let (name, netns) = match dev.owned() {
        Ok(owned) => (owned.name().to_owned(), owned.netns()),
        Err(why) => return Ok(refused(env, why)),
    };
    let result = match platform::apply(&name, &change, netns.as_deref()) {
        // The server changes only devices of its own namespace.
        Err(e) if is_privilege_error(&e) && netns.is_none() => {
            // A copy of the fd goes along as proof that the caller holds it.
            let copy = match dev.owned() {
                Ok(owned) => owned.fd().try_clone_to_owned(),
                Err(why) => return Ok(refused(env, why)),
            };
            copy.and_then(|fd| {
                let socket = std::path::Path::new(&socket_path);
                client::change(
                    socket,
                    fd.as_fd(),
                    &change,
                    deadline_after(timeout_ms).saturating_duration_since(Instant::now()),
                )
            })
        }
        direct => direct.map(Ok),
    };
    Ok(match result {
        Ok(Ok(())) => atoms::ok().encode(env),
        Ok(Err(bad)) => invalid_option(env, bad),
        Err(err) => io_error(env, &err),
    })
}

/// Starts or stops link events for the caller's device (see `linkwatch`);
/// they go through its reader, which the caller gave it first.
#[rustler::nif(schedule = "DirtyIo")]
fn link_events<'a>(env: Env<'a>, dev: Term<'a>, on: bool) -> NifResult<Term<'a>> {
    let dev = resource::get(env, dev).ok_or(rustler::Error::BadArg)?;
    let (name, netns, reader) = match dev.owned() {
        Ok(mut owned) if !on => {
            owned.set_link_events(None);
            return Ok(atoms::ok().encode(env));
        }
        Ok(owned) => (owned.name().to_owned(), owned.netns(), owned.reader()),
        Err(why) => return Ok(refused(env, why)),
    };
    let Some(reader) = reader else {
        return Ok(io_error(env, &io::Error::from_raw_os_error(libc::EINVAL)));
    };
    let subscription = platform::link_info(&name, netns.as_deref())
        .and_then(|link| linkwatch::subscribe(netns, link.index, reader, (link.up, link.mtu)));
    Ok(match (subscription, dev.owned()) {
        (Ok(subscription), Ok(mut owned)) => {
            owned.set_link_events(Some(subscription));
            atoms::ok().encode(env)
        }
        (Err(err), _) => io_error(env, &err),
        (_, Err(why)) => refused(env, why),
    })
}

fn load(env: Env, _info: Term) -> bool {
    resource::init(env)
}

rustler::init!("Elixir.Tundra.Nif", load = load);
