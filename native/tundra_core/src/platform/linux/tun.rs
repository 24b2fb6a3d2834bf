//! Opening and inspecting TUN file descriptors.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::sys::{self, TunIfReq};
use crate::Framing;

/// Opens `/dev/net/tun` and attaches a new TUN device: raw IP packets, or
/// with `packet_info` the 4-byte `tun_pi` header before each (as 0.x
/// made them). `name` may be empty or contain `%d`. The device must be
/// new (IFF_TUN_EXCL): a name that exists, even as an unattached
/// persistent device, gives `EBUSY` instead of attaching to it. With
/// `queues` > 1 it is a multi-queue device, and the fds of its other
/// queues come second.
pub fn open_device(
    name: &str,
    packet_info: bool,
    queues: u16,
) -> io::Result<(OwnedFd, Vec<OwnedFd>, String)> {
    let mut flags = sys::IFF_TUN;
    if !packet_info {
        flags |= sys::IFF_NO_PI;
    }
    if queues > 1 {
        flags |= sys::IFF_MULTI_QUEUE;
    }
    let (first, name) = attach(name, flags | sys::IFF_TUN_EXCL)?;
    // The other queues attach to the device just made, by its name.
    let others = (1..queues)
        .map(|_| attach(&name, flags).map(|(fd, _)| fd))
        .collect::<io::Result<Vec<_>>>()?;
    Ok((first, others, name))
}

/// One fd of /dev/net/tun attached with TUNSETIFF.
fn attach(name: &str, flags: std::os::raw::c_short) -> io::Result<(OwnedFd, String)> {
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

/// Records `uid` as the device's owner (shown in /sys/class/net/NAME/owner);
/// the server uses it to count each user's live devices without keeping
/// state of its own.
pub fn set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    let uid = libc::c_int::try_from(uid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `fd` is an attached TUN fd; TUNSETOWNER reads only its integer
    // argument.
    unsafe { sys::tunsetowner(fd.as_raw_fd(), uid) }?;
    Ok(())
}

/// Whether `fd` is attached to a TUN (not TAP) device, and if so its name
/// and framing. `ENOTTY`/`EINVAL`/`EBADFD` mean "not a TUN fd".
pub fn inspect(fd: BorrowedFd<'_>) -> io::Result<(Framing, String)> {
    let mut req = TunIfReq::new("", 0);
    // SAFETY: `req` is a valid, properly sized `ifreq` that TUNGETIFF fills
    // in; on an fd that is not a TUN device the ioctl fails without writing.
    unsafe { sys::tungetiff(fd.as_raw_fd(), &mut req) }?;
    if req.flags & sys::IFF_TUN == 0 || req.flags & sys::IFF_TAP != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let name = req.name();
    Ok((framing_of(&name), name))
}

/// The framing of TUN device `name`. TUNGETIFF cannot say: the kernel
/// ORs IFF_NOFILTER, which has IFF_NO_PI's value, into the flags it
/// reports for every fd without a socket filter. The device's
/// `tun_flags` in sysfs are its own. A device sysfs does not show (one in
/// another network namespace than this process's /sys) counts as raw.
fn framing_of(name: &str) -> Framing {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags"))
        .ok()
        .and_then(|text| i64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok());
    match flags {
        Some(flags) if flags & i64::from(sys::IFF_NO_PI) == 0 => Framing::LinuxPacketInfo,
        _ => Framing::Raw,
    }
}
