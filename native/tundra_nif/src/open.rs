//! Getting a device: `create` (directly, or from `tundra_server`), `adopt`
//! (an fd the caller has) and `attach` (a persistent device). Each wraps
//! the new fds in device resources owned by the caller.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use rustler::{Atom, Binary, Encoder, Env, LocalPid, NifMap, Term};
use tundra_core::client::{self, CreateReply};
use tundra_core::closer::DeferredFd;
use tundra_core::config::valid_interface_name;
use tundra_core::deadline::Deadline;
use tundra_core::offload::Offloads;
use tundra_core::platform::{self, Persist, Placement};
use tundra_core::{errno, users, ConfigError, DeviceConfig, Framing, Mode};

use crate::terms::{self, given, Failure};
use crate::{atoms, registry, resource};

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
    /// `None`: the default socket (`client::DEFAULT_SOCKET`).
    socket_path: Option<String>,
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

impl CreateArgs<'_> {
    fn to_config(&self) -> Result<DeviceConfig, ConfigError> {
        let spec = terms::address_spec(
            &self.address,
            self.dstaddr.as_ref(),
            self.prefix,
            self.netmask.as_ref(),
        )?;
        let mut config = DeviceConfig::new(spec.address);
        config.dstaddr = spec.dstaddr;
        config.prefix = spec.prefix;
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
    fn placement(&self) -> Result<Option<Placement>, Failure<'static>> {
        let persist = if self.persist {
            let id = |term: Option<Term>, by_text: fn(&str) -> Option<u32>, key: Atom| {
                given(term)
                    .map(|t| terms::id(t, by_text).ok_or(Failure::InvalidOption(key)))
                    .transpose()
            };
            Some(Persist {
                owner: id(self.owner, users::uid, atoms::owner())?,
                group: id(self.group, users::gid, atoms::group())?,
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

    fn socket(&self) -> &Path {
        Path::new(
            self.socket_path
                .as_deref()
                .unwrap_or(client::DEFAULT_SOCKET),
        )
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn create<'a>(env: Env<'a>, args: CreateArgs<'a>) -> Term<'a> {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(bad) => return Failure::from(bad).encode(env),
    };
    let placement = match args.placement() {
        Ok(placement) => placement,
        Err(bad) => return bad.encode(env),
    };
    let deadline = Deadline::after_ms(args.timeout_ms);
    let alive = |pid: LocalPid| pid.is_alive(env);
    let outcome = loop {
        let outcome = create_once(&args, &config, placement.as_ref(), deadline);
        let again = match (&outcome, config.name.as_deref()) {
            // A name of ours that is still closing (an owner that exited, a
            // restarted supervisor child): wait for the close, then again.
            (Err(e), Some(name))
                if errno::errno_of(e) == Some(libc::EBUSY) && !name.contains('%') =>
            {
                match current_index(name, placement.as_ref()) {
                    // Gone meanwhile: its close just ended.
                    None => deadline.left().is_some(),
                    Some(index) => match registry::holders(name, index, alive) {
                        registry::Holders::Leaving(ids) => {
                            registry::wait_closed(&ids, deadline.instant())
                        }
                        _ => false,
                    },
                }
            }
            // The server found the addresses in use: if devices of ours
            // are closing, they may be theirs (the same restarted child,
            // without a name); wait for those closes, then again.
            (Err(e), _) if errno::errno_of(e) == Some(libc::EADDRINUSE) => {
                let leaving = registry::leaving(alive);
                !leaving.is_empty() && registry::wait_closed(&leaving, deadline.instant())
            }
            _ => false,
        };
        if !again {
            break outcome;
        }
    };
    match outcome {
        Ok(CreateReply::Created(dev)) => make_devices(env, dev, args.queues.is_some()),
        Ok(CreateReply::Invalid(bad)) => Failure::from(bad).encode(env),
        Err(err) => Failure::from(err).encode(env),
    }
}

/// The index of interface `name` now, in the namespace the device is to
/// be made in.
fn current_index(name: &str, placement: Option<&Placement>) -> Option<u32> {
    let netns = placement
        .and_then(|p| p.netns.as_deref())
        .map(platform::Netns::open)
        .transpose()
        .ok()?;
    platform::link_info(name, netns.as_ref())
        .ok()
        .map(|link| link.index)
}

/// One try: a placed device directly (the server places none), else
/// directly or through the server as `via` says.
fn create_once(
    args: &CreateArgs,
    config: &DeviceConfig,
    placement: Option<&Placement>,
    deadline: Deadline,
) -> io::Result<CreateReply> {
    if let Some(placement) = placement {
        return platform::create_placed(config, placement).map(CreateReply::Created);
    }
    let via_server = || {
        let left = deadline.left().unwrap_or_default();
        client::create(args.socket(), config, left)
    };
    if args.via == atoms::server() {
        return via_server();
    }
    match platform::create(config) {
        Err(e) if args.via == atoms::auto() && is_privilege_error(&e) => {
            via_server().map_err(|e| after_direct(e, DIRECT_NEEDS))
        }
        Err(e) if is_privilege_error(&e) => Err(after_direct(e, DIRECT_ONLY)),
        direct => direct.map(CreateReply::Created),
    }
}

/// Why direct creation failed, for a caller without privilege.
const DIRECT_NEEDS: &str = "creating the device directly needs root or CAP_NET_ADMIN";
const DIRECT_ONLY: &str = "creating the device directly needs root or CAP_NET_ADMIN (or /dev/net/tun open to this user), which this process lacks; without them, create/2 asks tundra_server (via: :auto, the default)";

/// `err` (of the server path, or of direct creation itself), saying
/// first that direct creation was refused for lack of privilege.
fn after_direct(err: io::Error, direct: &str) -> io::Error {
    let errno = errno::errno_of(&err).unwrap_or(libc::EIO);
    match errno::why_of(&err) {
        Some(why) => errno::explained(errno, format!("{direct}; then {why}")),
        None if direct == DIRECT_ONLY => errno::explained(errno, direct),
        None => err,
    }
}

/// A refusal for lack of privilege, which the server may make up for.
pub fn is_privilege_error(err: &io::Error) -> bool {
    matches!(errno::errno_of(err), Some(libc::EPERM) | Some(libc::EACCES))
}

#[rustler::nif]
fn adopt(env: Env, fd: RawFd, dup: bool) -> Term {
    if fd < 0 || nix::fcntl::fcntl(borrow_named_fd(fd), nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Failure::errno(libc::EBADF).encode(env);
    }
    let borrowed = borrow_named_fd(fd);
    let tun = match platform::inspect(borrowed) {
        Ok(tun) => tun,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Failure::from(e).encode(env)
        }
        Err(_) => return (atoms::error(), atoms::not_tun()).encode(env),
    };
    let (owned, id) = if dup {
        let owned = match borrowed.try_clone_to_owned() {
            Ok(owned) => owned,
            Err(err) => return Failure::from(err).encode(env),
        };
        match registry::claim_fresh(owned.as_raw_fd()) {
            Some(id) => (owned, id),
            None => {
                drop(DeferredFd::new(owned));
                return Failure::errno(libc::EBUSY).encode(env);
            }
        }
    } else {
        // Claimed before it is owned: a number a device of this VM owns is
        // refused, and never closed here.
        let index = nix::net::if_::if_nametoindex(tun.name.as_str()).unwrap_or(0);
        let Some(id) = registry::claim_given(fd, index) else {
            return Failure::errno(libc::EBUSY).encode(env);
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
        return Failure::from(err).encode(env);
    }
    let setup = resource::Setup {
        name: tun.name.clone(),
        framing: tun.framing,
        netns: tun.netns.map(Arc::new),
        offloads: offloads_of(owned.as_fd(), tun.framing),
    };
    match resource_for(env, owned, id, setup) {
        Ok(term) => (atoms::ok(), (term, tun.name)).encode(env),
        Err(failed) => failed.encode(env),
    }
}

/// Opens the existing persistent device `name` (with `queues` fds; a list
/// of devices when `queues` is given), as its owner or group may without
/// privilege.
#[rustler::nif(schedule = "DirtyIo")]
fn attach<'a>(env: Env<'a>, name: String, queues: Option<u16>) -> Term<'a> {
    // An existing interface's name: what create/2 takes, without `%d`.
    if !valid_interface_name(&name) || name.contains('%') {
        return Failure::from(ConfigError::Name).encode(env);
    }
    match platform::attach(&name, queues.unwrap_or(1)) {
        Ok(dev) => make_devices(env, dev, queues.is_some()),
        Err(err) => Failure::from(err).encode(env),
    }
}

/// Borrows a raw fd number that the caller names for the length of one
/// NIF call.
fn borrow_named_fd<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: only used on fds the caller names, for system calls that
    // report EBADF for a closed number; none of them close the fd.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

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
            Err(failed) => failed.encode(env),
        };
    }
    let mut devices = Vec::with_capacity(1 + dev.queues.len());
    for fd in std::iter::once(dev.fd).chain(dev.queues) {
        match make_device_term(env, fd, setup()) {
            Ok(term) => devices.push(term),
            Err(failed) => return failed.encode(env),
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
/// (`:ebusy` if a device already owns it).
fn make_device_term<'a>(
    env: Env<'a>,
    fd: OwnedFd,
    setup: resource::Setup,
) -> Result<Term<'a>, Failure<'a>> {
    let Some(id) = registry::claim_fresh(fd.as_raw_fd()) else {
        // A fresh fd is never claimed; this would mean the registry lost
        // track of a closed one. Refuse rather than share it.
        drop(DeferredFd::new(fd));
        return Err(Failure::errno(libc::EBUSY));
    };
    resource_for(env, fd, id, setup)
}

fn resource_for<'a>(
    env: Env<'a>,
    fd: OwnedFd,
    id: registry::Id,
    setup: resource::Setup,
) -> Result<Term<'a>, Failure<'a>> {
    let fd = DeferredFd::with_after_close(fd, Box::new(move || registry::released(id)));
    resource::new_device(env, fd, id, setup).ok_or(Failure::errno(libc::ENOMEM))
}
