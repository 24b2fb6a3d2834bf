//! macOS: utun devices from the kernel control `com.apple.net.utun_control`,
//! configured with interface ioctls. Mirrors the Linux module's functions.
//!
//! Not run by this project's CI (it runs on Linux, where this module is
//! type-checked with `cargo check --target x86_64-apple-darwin`): the
//! packing of every struct and message, and the plan of which requests
//! to make, are tested on Linux in `platform::macos::plain`; the calls here are
//! untested. utun fds carry a 4-byte address-family header
//! (`Framing::AddressFamily`), which the NIF adds and removes.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use std::time::Duration;

use super::plain::plan::{self, Plan};
use super::plain::route;
use super::plain::utun::{self, AliasRequest};
use super::sys;
use crate::cidr::address_bits;
use crate::platform::{
    Device, InterfaceAddress, Isolation, LinkEvent, LinkInfo, Occupied, Placement, TunFd, TunLink,
};
use crate::{Change, ConfigError, DeviceConfig, Framing, Mode};

/// utun devices always carry the address-family header.
pub const NATIVE_FRAMING: Framing = Framing::AddressFamily;

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// macOS's own rules beyond `DeviceConfig::validate` (see
/// `plain::plan::check`).
pub fn validate(config: &DeviceConfig) -> Result<(), ConfigError> {
    plan::check(config)
}

/// Creates a utun device configured as `config` says; dropping the fd on
/// any failure removes it again.
pub fn create(config: &DeviceConfig) -> io::Result<Device> {
    create_for(config, None, NATIVE_FRAMING, Isolation::BestEffort)
}

/// Like `create`. macOS records no owner on a utun device, so `owner` is
/// not kept; only the native framing exists.
pub fn create_for(
    config: &DeviceConfig,
    _owner: Option<u32>,
    framing: Framing,
    // utun interfaces accept no router advertisements unless configured
    // to (IFEF_ACCEPT_RTADV): nothing to turn off.
    _isolation: Isolation,
) -> io::Result<Device> {
    config.validate().map_err(|_| errno(libc::EINVAL))?;
    validate(config).map_err(|_| errno(libc::EINVAL))?;
    // utun has one queue per device, only its own framing, no TAP, and
    // no switch for IPv6.
    if framing != NATIVE_FRAMING || config.queues != 1 || config.mode != Mode::Tun || !config.ipv6 {
        return Err(errno(libc::EOPNOTSUPP));
    }
    let unit = utun::unit_for_name(config.name.as_deref()).ok_or_else(|| errno(libc::EINVAL))?;

    let fd = sys::socket(
        libc::c_int::from(utun::AF_SYSTEM),
        libc::SOCK_DGRAM,
        utun::SYSPROTO_CONTROL,
    )?;
    let mut info = utun::ctl_info_request();
    sys::ioctl(fd.as_fd(), utun::CTLIOCGINFO, &mut info)?;
    sys::connect_control(fd.as_fd(), utun::ctl_id(&info), unit)?;
    let name = sys::utun_ifname(fd.as_fd())?;
    crate::platform::set_nonblocking(fd.as_fd(), true)?;

    let family = match config.address {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    let ctl = sys::socket(family, libc::SOCK_DGRAM, 0)?;
    let Plan { alias, route } = plan::plan(config);
    match utun::alias_request(&name, &alias).ok_or_else(|| errno(libc::EINVAL))? {
        AliasRequest::V4(mut req) => sys::ioctl(ctl.as_fd(), utun::SIOCAIFADDR, &mut req)?,
        AliasRequest::V6(mut req) => sys::ioctl(ctl.as_fd(), utun::SIOCAIFADDR_IN6, &mut req)?,
    }
    let mtu = i32::try_from(config.mtu).map_err(|_| errno(libc::EINVAL))?;
    sys::ioctl(
        ctl.as_fd(),
        utun::SIOCSIFMTU,
        &mut utun::ifreq_int(&name, mtu),
    )?;
    set_up(ctl.as_fd(), &name, config.up)?;
    if let Some(route) = route {
        add_route(&name, &route)?;
    }
    Ok(Device {
        fd,
        queues: Vec::new(),
        name,
        framing,
        netns: None,
    })
}

/// Routes `dst` through interface `name` with a routing-socket message.
fn add_route(name: &str, dst: &crate::Cidr) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(name)?;
    let index = u16::try_from(index).map_err(|_| errno(libc::EINVAL))?;
    let socket = sys::socket(libc::PF_ROUTE, libc::SOCK_RAW, libc::AF_UNSPEC)?;
    sys::write_message(socket.as_fd(), &route::add_route(1, dst, index, name))
}

fn set_up(ctl: BorrowedFd<'_>, name: &str, up: bool) -> io::Result<()> {
    let mut req = utun::ifreq_int(name, 0);
    sys::ioctl(ctl, utun::SIOCGIFFLAGS, &mut req)?;
    let flags = utun::ifreq_flags(&req);
    let wanted = if up {
        flags | utun::IFF_UP
    } else {
        flags & !utun::IFF_UP
    };
    if wanted != flags {
        sys::ioctl(
            ctl,
            utun::SIOCSIFFLAGS,
            &mut utun::ifreq_with_flags(name, wanted),
        )?;
    }
    Ok(())
}

/// utun has no offloads.
pub fn enable_offload(_fd: BorrowedFd<'_>) -> crate::offload::Offloads {
    crate::offload::Offloads::default()
}

/// utun has no offloads.
/// utun has no offload devices.
pub fn write_run(_fd: BorrowedFd<'_>, _run: &crate::offload::Run) -> io::Result<()> {
    Err(errno(libc::EOPNOTSUPP))
}

pub fn set_offload(_fd: BorrowedFd<'_>, _offloads: crate::offload::Offloads) -> io::Result<()> {
    Err(errno(libc::EOPNOTSUPP))
}

/// macOS has no per-thread nice value like Linux's (setpriority would
/// lower the whole VM); closer threads keep the default priority there.
pub fn deprioritize_thread() {}

/// Whether `fd` is a utun control socket, and its interface name.
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<TunFd> {
    // Any fd that is not a connected utun socket fails this getsockopt.
    let name = sys::utun_ifname(fd).map_err(|_| errno(libc::EINVAL))?;
    Ok(TunFd {
        name,
        framing: NATIVE_FRAMING,
        netns: None,
    })
}

/// Not written for macOS yet (it would read the routing table with
/// sysctl): the server serves only root there.
pub fn occupied(_except: Option<u32>) -> io::Result<Occupied> {
    Err(errno(libc::EOPNOTSUPP))
}

/// utun devices cannot outlive their fd, so the server has none to reap.
pub fn tun_links() -> io::Result<Vec<TunLink>> {
    Err(errno(libc::EOPNOTSUPP))
}

pub fn delete_link(_index: u32) -> io::Result<()> {
    Err(errno(libc::EOPNOTSUPP))
}

/// MTU, state and addresses of the interface called `name` (routes and
/// counters are not read on macOS yet).
pub fn link_info(name: &str, _netns: Option<&Netns>) -> io::Result<LinkInfo> {
    let index = nix::net::if_::if_nametoindex(name)?;
    let ctl = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut req = utun::ifreq_int(name, 0);
    sys::ioctl(ctl.as_fd(), utun::SIOCGIFMTU, &mut req)?;
    let mtu = u32::try_from(utun::ifreq_mtu(&req)).map_err(|_| errno(libc::EIO))?;
    let mut req = utun::ifreq_int(name, 0);
    sys::ioctl(ctl.as_fd(), utun::SIOCGIFFLAGS, &mut req)?;
    let up = utun::ifreq_flags(&req) & utun::IFF_UP != 0;

    let mut addresses = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        if ifa.interface_name != name {
            continue;
        }
        let ip = |s: Option<nix::sys::socket::SockaddrStorage>| -> Option<IpAddr> {
            let s = s?;
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        };
        let Some(address) = ip(ifa.address) else {
            continue;
        };
        let prefix = ip(ifa.netmask)
            .and_then(crate::prefix_from_netmask)
            .unwrap_or_else(|| address_bits(&address));
        addresses.push(InterfaceAddress {
            address,
            prefix,
            peer: plan::reported_peer(address, ip(ifa.destination)),
        });
    }
    Ok(LinkInfo {
        index,
        mtu,
        up,
        addresses,
        routes: Vec::new(),
        stats: Default::default(),
        mac: None,
    })
}

/// macOS has no network namespaces and utun devices cannot outlive their
/// fd.
pub fn create_placed(_config: &DeviceConfig, _placement: &Placement) -> io::Result<Device> {
    Err(errno(libc::EOPNOTSUPP))
}

/// utun devices cannot outlive their fd: there is nothing to attach to.
pub fn attach(_name: &str, _queues: u16) -> io::Result<Device> {
    Err(errno(libc::EOPNOTSUPP))
}

/// utun interfaces accept no router advertisements unless configured to
/// (IFEF_ACCEPT_RTADV): nothing to turn off.
pub fn refuse_learning(_name: &str, _isolation: Isolation) -> io::Result<()> {
    Ok(())
}

/// Not written for macOS yet.
pub fn apply(
    _name: &str,
    _change: &Change,
    _netns: Option<&Netns>,
    _isolation: Isolation,
) -> io::Result<()> {
    Err(errno(libc::EOPNOTSUPP))
}

/// macOS has no network namespaces: no value of this type exists.
#[derive(Debug)]
pub enum Netns {}

impl Netns {
    pub fn open(_spec: &str) -> io::Result<Netns> {
        Err(errno(libc::EOPNOTSUPP))
    }

    pub fn is_current(&self) -> bool {
        match *self {}
    }

    pub fn same_as(&self, _other: &Netns) -> bool {
        match *self {}
    }

    pub fn id(&self) -> (u64, u64) {
        match *self {}
    }

    pub fn enter(&self) -> io::Result<()> {
        match *self {}
    }

    pub fn run<T: Send>(&self, _work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        match *self {}
    }
}

/// Link notifications are not written for macOS yet (a PF_ROUTE socket
/// would give them).
pub struct LinkMonitor(());

impl LinkMonitor {
    pub fn open(_poll: Duration) -> io::Result<LinkMonitor> {
        Err(errno(libc::EOPNOTSUPP))
    }

    pub fn read(&mut self) -> io::Result<Vec<LinkEvent>> {
        Err(errno(libc::EOPNOTSUPP))
    }
}
