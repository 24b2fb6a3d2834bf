//! Linux: TUN devices from `/dev/net/tun`, configured over rtnetlink.

mod netlink;
mod sys;
mod tun;

use std::io;
use std::os::fd::BorrowedFd;

use super::{Device, LinkInfo, TunFd};
use crate::{DeviceConfig, Framing};

pub use tun::set_nonblocking;

fn interface_index(name: &str) -> io::Result<u32> {
    Ok(nix::net::if_::if_nametoindex(name)?)
}

/// Creates a TUN device and configures it as `config` says. On any failure
/// the fd is dropped, which removes the half-made device.
pub fn create(config: &DeviceConfig) -> io::Result<Device> {
    config
        .validate()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (fd, name) = tun::open_device(config.name.as_deref().unwrap_or(""))?;
    let index = interface_index(&name)?;
    let mut rtnl = netlink::Rtnl::open()?;
    rtnl.add_address(index, config)?;
    rtnl.set_link(index, config.mtu, config.up)?;
    Ok(Device {
        fd,
        name,
        framing: Framing::Raw,
    })
}

/// What TUN device `fd` is attached to; `EINVAL` if it is not a TUN fd.
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<TunFd> {
    let (name, framing) = tun::inspect(fd)?;
    Ok(TunFd { name, framing })
}

/// MTU, state and addresses of the interface called `name`.
pub fn link_info(name: &str) -> io::Result<LinkInfo> {
    let index = interface_index(name)?;
    netlink::Rtnl::open()?.link_info(index)
}
