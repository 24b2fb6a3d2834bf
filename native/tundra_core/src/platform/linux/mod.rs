//! Linux: TUN devices from `/dev/net/tun`, configured over rtnetlink.

mod netlink;
mod sys;
mod tun;

use std::io;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use super::{Device, LinkInfo, Occupied, TunFd, TunLink};
use crate::{DeviceConfig, Framing};

fn interface_index(name: &str) -> io::Result<u32> {
    Ok(nix::net::if_::if_nametoindex(name)?)
}

/// How this platform's devices frame packets unless asked otherwise.
pub const NATIVE_FRAMING: Framing = Framing::Raw;

/// Creates a TUN device and configures it as `config` says. On any failure
/// the fd is dropped, which removes the half-made device.
pub fn create(config: &DeviceConfig) -> io::Result<Device> {
    create_for(config, None, NATIVE_FRAMING)
}

/// Like `create`, recording `owner` as the device's owning uid, with the
/// given framing: `Raw`, or `LinuxPacketInfo` (0.x clients' devices).
pub fn create_for(
    config: &DeviceConfig,
    owner: Option<u32>,
    framing: Framing,
) -> io::Result<Device> {
    config
        .validate()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let packet_info = match framing {
        Framing::Raw => false,
        Framing::LinuxPacketInfo => true,
        Framing::AddressFamily => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
    };
    let name = config.name.as_deref().unwrap_or("");
    let (fd, queues, name) = tun::open_device(name, packet_info, config.queues)?;
    if let Some(uid) = owner {
        tun::set_owner(std::os::fd::AsFd::as_fd(&fd), uid)?;
    }
    let index = interface_index(&name)?;
    let mut rtnl = netlink::Rtnl::open()?;
    rtnl.add_address(index, config)?;
    rtnl.set_link(index, config.mtu, config.up)?;
    // A route needs its device up; for a link left down the kernel adds
    // the peer route itself when it is brought up.
    if let (Some(peer @ IpAddr::V6(_)), true) = (config.dstaddr, config.up) {
        rtnl.add_ipv6_peer_route(index, &peer)?;
    }
    Ok(Device {
        fd,
        queues,
        name,
        framing,
    })
}

/// Makes the calling thread yield to the VM's own threads (SCHED_IDLE):
/// the closer threads' kernel work must not delay the schedulers.
pub fn deprioritize_thread() {
    // Best effort: a thread that keeps its priority still closes fds.
    let _ = sys::set_thread_sched_idle();
}

/// What TUN device `fd` is attached to; `EINVAL` if it is not a TUN fd.
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<TunFd> {
    let (framing, name) = tun::inspect(fd)?;
    Ok(TunFd { name, framing })
}

/// The addresses and routes of this network namespace.
pub fn occupied() -> io::Result<Occupied> {
    let mut rtnl = netlink::Rtnl::open()?;
    Ok(Occupied {
        addresses: rtnl.all_addresses()?,
        routes: rtnl.all_routes()?,
    })
}

/// The TUN devices of this network namespace.
pub fn tun_links() -> io::Result<Vec<TunLink>> {
    netlink::Rtnl::open()?.tun_links()
}

/// Deletes interface `index`.
pub fn delete_link(index: u32) -> io::Result<()> {
    netlink::Rtnl::open()?.delete_link(index)
}

/// MTU, state and addresses of the interface called `name`.
pub fn link_info(name: &str) -> io::Result<LinkInfo> {
    let index = interface_index(name)?;
    netlink::Rtnl::open()?.link_info(index)
}
