//! Opening and inspecting TUN and TAP file descriptors.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::raw::c_short;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::sys::{self, TunIfReq};

/// What kind of device a TUNSETIFF asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// TAP (Ethernet frames) rather than TUN (IP packets).
    pub tap: bool,
    /// With the 4-byte `tun_pi` header before each packet (0.x devices).
    pub packet_info: bool,
    pub multi_queue: bool,
    /// A `virtio_net_hdr` before each packet (IFF_VNET_HDR).
    pub vnet_hdr: bool,
}

impl Kind {
    fn flags(self) -> c_short {
        let mut flags = if self.tap { sys::IFF_TAP } else { sys::IFF_TUN };
        if !self.packet_info {
            flags |= sys::IFF_NO_PI;
        }
        if self.multi_queue {
            flags |= sys::IFF_MULTI_QUEUE;
        }
        if self.vnet_hdr {
            flags |= sys::IFF_VNET_HDR;
        }
        flags
    }
}

/// Opens `/dev/net/tun` and attaches a new device of `kind`. `name` may
/// be empty or contain `%d`. The device must be new (IFF_TUN_EXCL): a
/// name that exists, even as an unattached persistent device, gives
/// `EBUSY` instead of attaching to it. With `queues` > 1 (and a
/// multi-queue `kind`) the fds of its other queues come second.
pub fn open_device(
    name: &str,
    kind: Kind,
    queues: u16,
) -> io::Result<(OwnedFd, Vec<OwnedFd>, String)> {
    let flags = kind.flags();
    let (first, name) = set_iff(name, flags | sys::IFF_TUN_EXCL)?;
    // The other queues attach to the device just made, by its name.
    let others = (1..queues)
        .map(|_| set_iff(&name, flags).map(|(fd, _)| fd))
        .collect::<io::Result<Vec<_>>>()?;
    Ok((first, others, name))
}

/// Attaches one fd to the existing device `name` of `kind` (a persistent
/// device: the kernel lets its owner or group do this without privilege).
pub fn attach_existing(name: &str, kind: Kind) -> io::Result<OwnedFd> {
    set_iff(name, kind.flags()).map(|(fd, _)| fd)
}

/// One fd of /dev/net/tun attached with TUNSETIFF. The device is made in
/// the network namespace of the calling thread.
fn set_iff(name: &str, flags: c_short) -> io::Result<(OwnedFd, String)> {
    let fd = open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut req = TunIfReq::new(name, flags);
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` is a valid,
    // properly sized `ifreq` that lives across the call; TUNSETIFF reads it
    // and writes the chosen name back into it.
    unsafe { sys::tunsetiff(fd.as_raw_fd(), &mut req) }?;
    Ok((fd, req.name()))
}

fn c_int_id(id: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(id).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Records `uid` as the device's owner: it may attach to the device
/// without privilege (a persistent device), and shows in
/// /sys/class/net/NAME/owner.
pub fn set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    let uid = c_int_id(uid)?;
    // SAFETY: `fd` is an attached TUN fd; TUNSETOWNER reads only its integer
    // argument.
    unsafe { sys::tunsetowner(fd.as_raw_fd(), uid) }?;
    Ok(())
}

/// Records `gid` as the device's group, whose members may attach to it.
pub fn set_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
    let gid = c_int_id(gid)?;
    // SAFETY: as in `set_owner`.
    unsafe { sys::tunsetgroup(fd.as_raw_fd(), gid) }?;
    Ok(())
}

/// Makes the device outlive its fds (or not).
pub fn set_persist(fd: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    // SAFETY: as in `set_owner`.
    unsafe { sys::tunsetpersist(fd.as_raw_fd(), libc::c_int::from(persist)) }?;
    Ok(())
}

/// What TUNGETIFF says of the device `fd` is attached to.
pub struct Attached {
    pub name: String,
    pub tap: bool,
    pub vnet_hdr: bool,
}

/// Turns on offloads (`TUN_F_*` bits) for the device of `fd`: any holder
/// of the fd may.
pub fn set_offload(fd: BorrowedFd<'_>, bits: u32) -> io::Result<()> {
    let bits =
        libc::c_int::try_from(bits).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `fd` is an attached TUN fd; TUNSETOFFLOAD reads only its
    // integer argument.
    unsafe { sys::tunsetoffload(fd.as_raw_fd(), bits) }?;
    Ok(())
}

/// The name of the device `fd` is attached to, and whether it is a TAP
/// device; `EINVAL` when it is neither TUN nor TAP. (Whether its packets
/// carry `tun_pi` cannot be read here: the kernel ORs IFF_NOFILTER, which
/// has IFF_NO_PI's value, into the flags of every fd without a filter.)
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<Attached> {
    let mut req = TunIfReq::new("", 0);
    // SAFETY: `req` is a valid, properly sized `ifreq` that TUNGETIFF fills
    // in; on an fd that is not a TUN device the ioctl fails without writing.
    unsafe { sys::tungetiff(fd.as_raw_fd(), &mut req) }?;
    let tap = req.flags & sys::IFF_TAP != 0;
    if !tap && req.flags & sys::IFF_TUN == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(Attached {
        name: req.name(),
        tap,
        vnet_hdr: req.flags & sys::IFF_VNET_HDR != 0,
    })
}

/// A new fd of the network namespace the device of `fd` is in. Needs
/// CAP_NET_ADMIN there (`EPERM` otherwise); older kernels say `ENOTTY`
/// or `EINVAL`.
pub fn device_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: `fd` is a TUN fd; TUNGETDEVNETNS takes no argument and
    // returns a new descriptor, which is owned here and nowhere else.
    let raw = unsafe { sys::tungetdevnetns(fd.as_raw_fd()) }?;
    // SAFETY: `raw` is the fresh descriptor the ioctl just returned (the
    // kernel opens it close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
