//! Routes to the code of the OS being built for. Every OS module exposes the
//! same functions:
//!
//! - `create(&DeviceConfig) -> io::Result<Device>`: a configured device whose
//!   fd is non-blocking and close-on-exec;
//! - `inspect(BorrowedFd) -> io::Result<TunFd>`: whether an fd is a TUN
//!   device, its interface name and framing (for adopting inherited fds);
//! - `link_info(&str) -> io::Result<LinkInfo>`: MTU and addresses of an
//!   interface.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use crate::Framing;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{create, create_for, devices_owned_by, inspect, link_info, set_nonblocking};

#[cfg(not(target_os = "linux"))]
compile_error!("tundra_core supports Linux; other systems are not implemented yet");

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
