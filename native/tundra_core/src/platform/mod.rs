//! Routes to the code of the OS being built for. Every OS module exposes the
//! same functions:
//!
//! - `create(&DeviceConfig) -> io::Result<Device>`: a configured device whose
//!   fd is non-blocking and close-on-exec, framed as `NATIVE_FRAMING`;
//! - `create_for(&DeviceConfig, Option<u32>, Framing)`: the same for the
//!   server, recording the owning uid where the OS can, in a given framing
//!   (`EOPNOTSUPP` for one the OS does not have);
//! - `devices_owned_by(uid) -> io::Result<usize>`: live devices of a uid
//!   (for the server's per-user limit);
//! - `deprioritize_thread()`: lets the calling (closer) thread yield to the
//!   VM's schedulers, where the OS can do that for one thread;
//! - `inspect(BorrowedFd) -> io::Result<TunFd>`: whether an fd is a TUN
//!   device, its interface name and framing (for adopting inherited fds);
//! - `link_info(&str) -> io::Result<LinkInfo>`: MTU and addresses of an
//!   interface.

use std::io;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::Framing;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    create, create_for, deprioritize_thread, devices_owned_by, inspect, link_info, NATIVE_FRAMING,
};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{
    create, create_for, deprioritize_thread, devices_owned_by, inspect, link_info, NATIVE_FRAMING,
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

/// A created device: its fd (closing it removes the interface) and name.
#[derive(Debug)]
pub struct Device {
    pub fd: OwnedFd,
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
