//! Routes to the code of the OS being built for. Every OS module exposes the
//! same functions:
//!
//! - `create(&DeviceConfig) -> io::Result<Device>`: a configured device whose
//!   fd is non-blocking and close-on-exec, framed as `NATIVE_FRAMING`;
//! - `create_for(&DeviceConfig, Option<u32>, Framing)`: the same for the
//!   server, recording the owning uid where the OS can, in a given framing
//!   (`EOPNOTSUPP` for one the OS does not have);
//! - `deprioritize_thread()`: lets the calling (closer) thread yield to the
//!   VM's schedulers, where the OS can do that for one thread;
//! - `inspect(BorrowedFd) -> io::Result<TunFd>`: whether an fd is a TUN
//!   device, its interface name and framing (for adopting inherited fds);
//! - `link_info(&str) -> io::Result<LinkInfo>`: MTU and addresses of an
//!   interface;
//! - `occupied() -> io::Result<Occupied>`: the addresses and routes of the
//!   network namespace, which a new device must not collide with (for the
//!   server);
//! - `tun_links() -> io::Result<Vec<TunLink>>` and `delete_link(index)`:
//!   the namespace's TUN devices and how many fds hold each, and removing
//!   one (for the server, which removes its devices nobody holds).
//!
//! Where an OS lacks one of these (the server's on macOS), it returns
//! `EOPNOTSUPP`.

use std::io;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::cidr::Cidr;
use crate::Framing;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    create, create_for, delete_link, deprioritize_thread, inspect, link_info, occupied, tun_links,
    NATIVE_FRAMING,
};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{
    create, create_for, delete_link, deprioritize_thread, inspect, link_info, occupied, tun_links,
    NATIVE_FRAMING,
};

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("tundra_core supports Linux and macOS; other systems are not implemented");

/// Sets or clears O_NONBLOCK on `fd` (plain POSIX, the same on every OS;
/// close-on-exec, a descriptor flag, is left as it was).
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if nonblocking {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// A created device: its fd (closing it removes the interface, once the
/// fds of its other queues are closed too) and name.
#[derive(Debug)]
pub struct Device {
    pub fd: OwnedFd,
    /// The fds of a multi-queue device's other queues (empty for one).
    pub queues: Vec<OwnedFd>,
    pub name: String,
    pub framing: Framing,
}

/// What an existing TUN fd is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunFd {
    pub name: String,
    pub framing: Framing,
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix: u8,
    /// The point-to-point peer, when the address has one.
    pub peer: Option<IpAddr>,
}

/// Live state of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<InterfaceAddress>,
}

/// What a network namespace already uses: every address assigned to an
/// interface, and the destination of every route (default routes too; the
/// caller decides what counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupied {
    pub addresses: Vec<IpAddr>,
    pub routes: Vec<Cidr>,
}

/// A TUN (or TAP) device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunLink {
    pub index: u32,
    pub name: String,
    /// Whether it outlives its fds (TUNSETPERSIST).
    pub persist: bool,
    /// Queues attached to an fd, enabled or not, where the kernel counts
    /// them (multi-queue devices); else 1 or 0 as its carrier is on or off.
    /// 0 on a persistent device means no fd holds it (or its holder turned
    /// the carrier off).
    pub attached: u32,
}
