//! Linux: TUN and TAP devices from `/dev/net/tun`, configured over
//! rtnetlink, in this network namespace or another one.

mod learning;
mod netlink;
mod netns;
mod sys;
mod tun;

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

pub use learning::refuse_learning;
pub use netlink::LinkMonitor;
pub use netns::Netns;

use super::{Device, Isolation, LinkInfo, Occupied, Persist, Placement, TunFd, TunLink};
use crate::config::valid_interface_name;
use crate::{Change, DeviceConfig, Framing, Mode};
use netlink::Rtnl;
use netns::run_in;
use tun::Kind;

fn interface_index(name: &str) -> io::Result<u32> {
    Ok(nix::net::if_::if_nametoindex(name)?)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Linux takes every configuration `DeviceConfig::validate` accepts.
pub fn validate(_config: &DeviceConfig) -> Result<(), crate::ConfigError> {
    Ok(())
}

/// How this platform's TUN devices frame packets unless asked otherwise.
pub const NATIVE_FRAMING: Framing = Framing::Raw;

/// Creates a device and configures it as `config` says. On any failure
/// the fd is dropped, which removes the half-made device. It learns no
/// routes or addresses from what is written into it where /proc/sys can
/// be written (see `learning`).
pub fn create(config: &DeviceConfig) -> io::Result<Device> {
    create_for(
        config,
        None,
        super::framing_for(config),
        Isolation::BestEffort,
    )
}

/// Like `create`, recording `owner` as the device's owning uid, with the
/// given framing: `Raw`, `VirtioNet` or `LinuxPacketInfo` (0.x clients'
/// devices) for TUN, `Ethernet` for TAP; kept from learning as
/// `isolation` says.
pub fn create_for(
    config: &DeviceConfig,
    owner: Option<u32>,
    framing: Framing,
    isolation: Isolation,
) -> io::Result<Device> {
    make(config, framing, isolation, |fd| match owner {
        Some(uid) => tun::set_owner(fd, uid),
        None => Ok(()),
    })
}

/// Creates a device as `create` does, in `placement`'s network namespace
/// (on a thread of its own that enters it) and/or persistent, its owner
/// and group recorded so that they may attach to it without privilege.
pub fn create_placed(config: &DeviceConfig, placement: &Placement) -> io::Result<Device> {
    let netns = placement.netns.as_deref().map(Netns::open).transpose()?;
    let framing = super::framing_for(config);
    let mut device = run_in(netns.as_ref(), || {
        let device = make(
            config,
            framing,
            Isolation::BestEffort,
            |fd| match placement.persist {
                Some(persist) => set_persist_ids(fd, persist),
                None => Ok(()),
            },
        )?;
        // Last, so that a failure before leaves no device behind.
        if placement.persist.is_some() {
            tun::set_persist(device.fd.as_fd(), true)?;
        }
        Ok(device)
    })?;
    device.netns = netns.filter(|ns| !ns.is_current());
    Ok(device)
}

fn set_persist_ids(fd: BorrowedFd<'_>, persist: Persist) -> io::Result<()> {
    let persist = persist.or_creator(nix::unistd::geteuid().as_raw());
    if let Some(uid) = persist.owner {
        tun::set_owner(fd, uid)?;
    }
    if let Some(gid) = persist.group {
        tun::set_group(fd, gid)?;
    }
    Ok(())
}

/// Opens the device, lets `prepare` act on its first fd, then configures
/// it, all in the calling thread's network namespace.
fn make(
    config: &DeviceConfig,
    framing: Framing,
    isolation: Isolation,
    prepare: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<Device> {
    config.validate().map_err(|_| einval())?;
    let (tap, packet_info, vnet_hdr) = match (config.mode, framing) {
        (Mode::Tun, Framing::Raw) => (false, false, false),
        (Mode::Tun, Framing::VirtioNet) => (false, false, true),
        (Mode::Tun, Framing::LinuxPacketInfo) => (false, true, false),
        (Mode::Tap, Framing::Ethernet) => (true, false, false),
        _ => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
    };
    let kind = Kind {
        tap,
        packet_info,
        multi_queue: config.queues > 1,
        vnet_hdr,
    };
    let name = config.name.as_deref().unwrap_or("");
    let (fd, queues, name) = tun::open_device(name, kind, config.queues)?;
    prepare(fd.as_fd())?;
    configure(&name, config, isolation)?;
    Ok(Device {
        fd,
        queues,
        name,
        framing,
        netns: None,
    })
}

/// Gives the new interface `name` what `config` says, in order: no
/// learning from what is written into it and no automatic IPv6 (both
/// before the link is up, so nothing is learnt or generated), the
/// address, the Ethernet address, MTU and link state, and an IPv6 peer's
/// route.
fn configure(name: &str, config: &DeviceConfig, isolation: Isolation) -> io::Result<()> {
    let index = interface_index(name)?;
    let mut rtnl = Rtnl::open()?;
    learning::refuse_learning(name, isolation)?;
    if !config.ipv6 {
        match rtnl.set_no_ipv6_addresses(index) {
            // A kernel without IPv6 has none to turn off.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
            other => other?,
        }
    }
    rtnl.add_address(index, &config.address_spec())?;
    rtnl.set_link(index, Some(config.mtu), Some(config.up), config.mac)?;
    // A route needs its device up; for a link left down it is added when
    // the link is brought up (see `apply`).
    if let (Some(peer @ IpAddr::V6(_)), true) = (config.dstaddr, config.up) {
        rtnl.add_ipv6_peer_route(index, &peer)?;
    }
    if config.address.is_ipv6() && config.up {
        await_local_route(&mut rtnl, index, &config.address)?;
    }
    Ok(())
}

/// Waits (up to a second) until the kernel delivers packets to `address`
/// of interface `index`: a reply to the device's own IPv6 address, written
/// right after `create` returns, is dropped until then. The kernel does it
/// soon, from a workqueue; a busy machine may take a while.
fn await_local_route(rtnl: &mut Rtnl, index: u32, address: &IpAddr) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !rtnl.has_local_route(index, address)? && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Opens the existing persistent device `name` with `queues` fds (more
/// than one for a multi-queue device). The kernel lets the device's owner
/// or group do this without privilege; anyone else gets `EPERM`, and a
/// device another fd holds (not multi-queue) `EBUSY`.
pub fn attach(name: &str, queues: u16) -> io::Result<Device> {
    if !valid_interface_name(name) || name.contains('%') || queues == 0 {
        return Err(einval());
    }
    let link = Rtnl::open()?.link(interface_index(name)?)?;
    let Some(tun) = link.tun else {
        return Err(einval());
    };
    if queues > 1 && !tun.multi_queue {
        return Err(einval());
    }
    let kind = Kind {
        tap: tun.tap,
        packet_info: false,
        multi_queue: tun.multi_queue,
        vnet_hdr: false,
    };
    let fd = tun::attach_existing(name, kind)?;
    let queues = (1..queues)
        .map(|_| tun::attach_existing(name, kind))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Device {
        fd,
        queues,
        name: name.into(),
        framing: if tun.tap {
            Framing::Ethernet
        } else {
            Framing::Raw
        },
        netns: None,
    })
}

/// Turns on what offloads the kernel takes for the vnet-header device of
/// `fd` (see `offload::negotiate`).
pub fn enable_offload(fd: BorrowedFd<'_>) -> crate::offload::Offloads {
    crate::offload::negotiate(|bits| tun::set_offload(fd, bits))
}

/// Writes `run` (from `offload::run_from`) to the offload device of `fd`
/// as one super-packet: the vnet header, the first segment's headers
/// adjusted, every payload uncopied, in one `writev`.
pub fn write_run(fd: BorrowedFd<'_>, run: &crate::offload::Run) -> io::Result<()> {
    use std::io::IoSlice;
    let (hdr, headers) = crate::offload::coalesced_headers(run.segments());
    let hdr = hdr.encode();
    let mut slices = Vec::with_capacity(run.len() + 2);
    slices.push(IoSlice::new(&hdr));
    slices.push(IoSlice::new(&headers));
    slices.extend(
        run.segments()
            .iter()
            .map(|s| IoSlice::new(crate::offload::payload_of(s))),
    );
    nix::sys::uio::writev(fd, &slices)?;
    Ok(())
}

/// Sets exactly `offloads` for the vnet-header device of `fd` (`EINVAL`
/// for a set the kernel refuses, such as segmentation without checksums).
pub fn set_offload(fd: BorrowedFd<'_>, offloads: crate::offload::Offloads) -> io::Result<()> {
    tun::set_offload(fd, offloads.0)
}

/// Makes the calling thread yield to the VM's own threads (nice 10): the
/// closer threads' kernel work must not delay the schedulers. Not
/// SCHED_IDLE: an unregistering close takes kernel locks (RTNL among
/// them) that creates need too, and at SCHED_IDLE, with two CPU-bound
/// programs running on two cores, creates waited behind starved closes
/// for more than 10 s. At nice 10 a closer still gets about a tenth of a
/// busy CPU.
pub fn deprioritize_thread() {
    // Best effort: a thread that keeps its priority still closes fds.
    let _ = sys::set_thread_nice(10);
}

/// What TUN or TAP device `fd` is attached to: `EINVAL` if it is not one,
/// `EOPNOTSUPP` for a TAP device with the packet-information header or a
/// vnet header, or a TUN device with both headers.
///
/// Its network namespace comes from TUNGETDEVNETNS, which needs
/// CAP_NET_ADMIN there; without, the device counts as this namespace's
/// (an unprivileged process cannot have moved it elsewhere). Its framing
/// is what the kernel reports of the link, asked in that namespace.
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<TunFd> {
    let tun::Attached {
        name,
        tap,
        vnet_hdr,
    } = tun::inspect(fd)?;
    let netns = match tun::device_netns(fd) {
        Ok(ns) => Some(Netns::from_fd(ns)?).filter(|ns| !ns.is_current()),
        Err(_) => None,
    };
    let link = run_in(netns.as_ref(), || {
        Rtnl::open()?.link(interface_index(&name)?)
    })?;
    let packet_info = link.tun.as_ref().is_some_and(|t| t.packet_info);
    let framing = match (tap, packet_info, vnet_hdr) {
        (false, false, false) => Framing::Raw,
        (false, false, true) => Framing::VirtioNet,
        (false, true, false) => Framing::LinuxPacketInfo,
        (true, false, false) => Framing::Ethernet,
        _ => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
    };
    Ok(TunFd {
        name,
        framing,
        netns,
    })
}

/// The addresses and routes of this network namespace, and what its
/// interfaces' addresses claim, but those of interface `except` (a device
/// about to be changed).
pub fn occupied(except: Option<u32>) -> io::Result<Occupied> {
    let mut rtnl = Rtnl::open()?;
    let addresses = rtnl.all_addresses(except)?;
    Ok(Occupied {
        claimed: addresses.iter().flat_map(|a| a.spec().claims()).collect(),
        addresses: addresses.into_iter().map(|a| a.address).collect(),
        routes: rtnl.all_routes(except)?,
    })
}

/// The TUN devices of this network namespace.
pub fn tun_links() -> io::Result<Vec<TunLink>> {
    Rtnl::open()?.tun_links()
}

/// Deletes interface `index`.
pub fn delete_link(index: u32) -> io::Result<()> {
    Rtnl::open()?.delete_link(index)
}

/// State, addresses, routes and counters of interface `name` (in `netns`,
/// or this namespace): one RTM_GETLINK for this link, then its addresses
/// and routes.
pub fn link_info(name: &str, netns: Option<&Netns>) -> io::Result<LinkInfo> {
    run_in(netns, || {
        let index = interface_index(name)?;
        let mut rtnl = Rtnl::open()?;
        let link = rtnl.link(index)?;
        Ok(LinkInfo {
            index,
            mtu: link.mtu,
            up: link.up,
            addresses: rtnl.addresses_of(index)?,
            routes: rtnl.routes_via(index)?,
            stats: link.stats,
            mac: link
                .mac
                .filter(|_| link.tun.as_ref().is_some_and(|t| t.tap)),
        })
    })
}

/// Applies `change` to interface `name` (in `netns`, or this namespace).
/// Errors are the kernel's: `EEXIST` for an address or route it has,
/// `EADDRNOTAVAIL`/`ESRCH` for one to remove that it has not.
///
/// An MTU raised from below 1280 gives the interface IPv6 again, with the
/// namespace's defaults: learning is turned off again before the link
/// comes up. Under `Isolation::Required`, a link that is up meanwhile
/// takes packets its holder writes before that, so such a change is
/// refused (`EBUSY`) unless the link is down.
pub fn apply(
    name: &str,
    change: &Change,
    netns: Option<&Netns>,
    isolation: Isolation,
) -> io::Result<()> {
    change.validate().map_err(|_| einval())?;
    run_in(netns, || {
        let index = interface_index(name)?;
        let mut rtnl = Rtnl::open()?;
        match change {
            Change::Link { up, mtu } => {
                if let Some(mtu) = *mtu {
                    let gains_ipv6 = mtu >= crate::config::MIN_MTU_V6
                        && !learning::has_ipv6(name)?
                        && learning::kernel_has_ipv6().unwrap_or(true);
                    if gains_ipv6 && isolation == Isolation::Required && rtnl.link(index)?.up {
                        return Err(io::Error::from_raw_os_error(libc::EBUSY));
                    }
                    rtnl.set_link(index, Some(mtu), None, None)?;
                    learning::refuse_learning(name, isolation)?;
                }
                if up.is_some() {
                    rtnl.set_link(index, None, *up, None)?;
                }
                if *up == Some(true) {
                    // As `configure` does at creation: IPv6 peers are
                    // reachable when this returns.
                    for address in rtnl.addresses_of(index)? {
                        if let Some(peer @ IpAddr::V6(_)) = address.peer {
                            rtnl.add_ipv6_peer_route(index, &peer)?;
                        }
                    }
                }
                Ok(())
            }
            Change::AddAddress(spec) => {
                rtnl.add_address(index, spec)?;
                match spec.dstaddr {
                    Some(peer @ IpAddr::V6(_)) if rtnl.link(index)?.up => {
                        rtnl.add_ipv6_peer_route(index, &peer)
                    }
                    _ => Ok(()),
                }
            }
            // Whatever prefix and peer it has: the kernel matches them.
            Change::RemoveAddress(spec) => {
                let found = rtnl
                    .addresses_of(index)?
                    .into_iter()
                    .find(|a| a.address == spec.address)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))?;
                rtnl.remove_address(index, &found.spec())
            }
            Change::AddRoute(route) => rtnl.add_route(index, route),
            Change::RemoveRoute(route) => rtnl.remove_route(index, route),
        }
    })
}
