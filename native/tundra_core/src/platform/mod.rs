//! Routes to the code of the OS being built for. Every OS module exposes the
//! same functions:
//!
//! - `validate(&DeviceConfig)`: the OS's own rules beyond
//!   `DeviceConfig::validate` (none on Linux; on macOS an IPv6 prefix of
//!   0 is refused), naming the option as that does;
//! - `create(&DeviceConfig)`: a configured device whose fd is non-blocking
//!   and close-on-exec, framed as `framing_for` its mode says;
//! - `create_for(&DeviceConfig, Option<u32>, Framing, Isolation)`: the
//!   same for the server, recording the owning uid where the OS can, in a
//!   given framing (`EOPNOTSUPP` for one the OS does not have), kept from
//!   learning from what is written into it as firmly as asked;
//! - `create_placed(&DeviceConfig, &Placement)`: direct creation in
//!   another network namespace and/or as a persistent device;
//! - `attach(name, queues)`: opens an existing persistent device the
//!   caller may use (its owner or group);
//! - `enable_offload(BorrowedFd)`: turns on the offloads the kernel
//!   takes for a vnet-header device (`offload::negotiate`), which any
//!   holder of its fd may do; `set_offload(BorrowedFd, Offloads)` sets
//!   exactly the given ones; `write_run(BorrowedFd, &Run)` writes a run of
//!   TCP segments as one super-packet;
//! - `deprioritize_thread()`: lets the calling (closer) thread yield to the
//!   VM's schedulers, where the OS can do that for one thread;
//! - `inspect(BorrowedFd)`: whether an fd is a TUN or TAP device, its
//!   interface name, framing and network namespace (for adopting fds);
//! - `link_info(name, netns)`: state, addresses, routes and counters of an
//!   interface; `apply(name, &Change, netns, Isolation)`: changes it;
//! - `LinkMonitor`: notifications of link changes (`Netns::enter` puts a
//!   thread of Tundra's own in a device's namespace to hear them there);
//! - `occupied(except)`, `tun_links()`, `delete_link(index)`: what the
//!   server's policy and reaper look at; `refuse_learning(name,
//!   Isolation)`: keeps an existing interface from learning from what is
//!   written into it (the server, for devices an older server made).
//!
//! Where an OS lacks one of these (most of the server's on macOS, network
//! namespaces, TAP and persistent devices), it returns `EOPNOTSUPP`.

use std::io;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::cidr::Cidr;
use crate::{AddressSpec, DeviceConfig, Framing, Mode};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    apply, attach, create, create_for, create_placed, delete_link, deprioritize_thread,
    enable_offload, inspect, link_info, occupied, refuse_learning, set_offload, tun_links,
    validate, write_run, LinkMonitor, Netns, NATIVE_FRAMING,
};

// The plain half of the macOS code (structs, routing messages, the
// configuration plan, `macos::plain`) builds everywhere, so that it is
// tested here too; its system calls only on macOS.
#[cfg(any(target_os = "macos", test))]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{
    apply, attach, create, create_for, create_placed, delete_link, deprioritize_thread,
    enable_offload, inspect, link_info, occupied, refuse_learning, set_offload, tun_links,
    validate, write_run, LinkMonitor, Netns, NATIVE_FRAMING,
};

#[cfg(test)]
mod tests {
    use super::Persist;

    #[test]
    fn nonblocking_is_set_and_cleared_leaving_the_other_flags() {
        use super::set_nonblocking;
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use std::os::fd::AsFd;
        let path = std::env::temp_dir().join(format!("tundra-flags-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("file");
        let flags =
            || OFlag::from_bits_retain(fcntl(file.as_fd(), FcntlArg::F_GETFL).expect("getfl"));
        for _ in 0..2 {
            set_nonblocking(file.as_fd(), true).expect("set");
            assert!(flags().contains(OFlag::O_NONBLOCK | OFlag::O_APPEND));
        }
        set_nonblocking(file.as_fd(), false).expect("clear");
        assert!(!flags().contains(OFlag::O_NONBLOCK));
        assert!(flags().contains(OFlag::O_APPEND));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_persistent_device_is_never_left_open_to_all() {
        let none = Persist::default();
        assert_eq!(none.or_creator(0).owner, Some(0));
        let group = Persist {
            owner: None,
            group: Some(7),
        };
        assert_eq!(group.or_creator(0), group);
        let owner = Persist {
            owner: Some(1000),
            group: None,
        };
        assert_eq!(owner.or_creator(0), owner);
    }
}

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

/// How firmly a device must be kept from learning routes or addresses
/// from the packets its holder writes into it (router advertisements,
/// redirects): on Linux, see `linux::learning`; macOS's utun interfaces
/// accept no router advertisements unless configured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// It must hold, or the device is not made (nor its MTU changed):
    /// the devices `tundra_server` makes, whose holders it does not trust.
    Required,
    /// Where the system lets it be set (not where /proc/sys is read-only,
    /// as in many containers): devices a privileged program makes for
    /// itself.
    BestEffort,
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
    /// The network namespace it was made in, when not this process's.
    pub netns: Option<Netns>,
}

/// How a device made from `config` frames packets: TAP devices carry
/// Ethernet frames, offload devices a vnet header, other TUN devices the
/// platform's native framing.
pub fn framing_for(config: &DeviceConfig) -> Framing {
    match (config.mode, config.offload) {
        (Mode::Tap, _) => Framing::Ethernet,
        (Mode::Tun, true) => Framing::VirtioNet,
        (Mode::Tun, false) => NATIVE_FRAMING,
    }
}

/// What an existing TUN or TAP fd is attached to.
#[derive(Debug)]
pub struct TunFd {
    pub name: String,
    pub framing: Framing,
    /// The device's network namespace, when it is not this process's.
    pub netns: Option<Netns>,
}

/// Where and how a device is made by `create_placed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The network namespace to make it in: a name as `ip netns` knows
    /// it, or a path such as `/proc/PID/ns/net`.
    pub netns: Option<String>,
    /// Made persistent: it outlives its fds, and these may open it again.
    pub persist: Option<Persist>,
}

/// Who may open a persistent device without privilege.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Persist {
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl Persist {
    /// Who is recorded: as given, or, when neither an owner nor a group
    /// is, the creating user `creator`. The kernel lets anyone open a
    /// persistent device whose owner and group are both unset, so a
    /// device is never left that way.
    pub fn or_creator(self, creator: u32) -> Persist {
        match self {
            Persist {
                owner: None,
                group: None,
            } => Persist {
                owner: Some(creator),
                group: None,
            },
            given => given,
        }
    }
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix: u8,
    /// The point-to-point peer, when the address has one.
    pub peer: Option<IpAddr>,
}

impl InterfaceAddress {
    /// The address as one an interface is given.
    pub fn spec(&self) -> AddressSpec {
        AddressSpec {
            address: self.address,
            dstaddr: self.peer,
            prefix: self.prefix,
        }
    }
}

/// Live state of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<InterfaceAddress>,
    /// The main table's routes through it.
    pub routes: Vec<RouteInfo>,
    pub stats: LinkStats,
    /// A TAP device's Ethernet address.
    pub mac: Option<[u8; 6]>,
}

/// A route through an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Cidr,
    pub metric: Option<u32>,
}

/// An interface's counters (IFLA_STATS64): "rx" is what the system
/// received on the interface (what the program sent), "tx" what it sent
/// through it (what the program is given to read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A link's state as a notification reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    pub index: u32,
    pub up: bool,
    pub mtu: u32,
    /// The link was deleted.
    pub removed: bool,
}

/// What a network namespace already uses: every address assigned to an
/// interface, the destination of every route (default routes too; the
/// caller decides what counts), and what every interface's addresses
/// claim (`AddressSpec::claims`), whether their routes are there or not:
/// a link that is down has none, and gets them back when it comes up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupied {
    pub addresses: Vec<IpAddr>,
    pub routes: Vec<Cidr>,
    pub claimed: Vec<Cidr>,
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
    /// Whether its packets carry the `tun_pi` header.
    pub packet_info: bool,
    /// A TAP device (Ethernet frames).
    pub tap: bool,
    pub multi_queue: bool,
}
