//! Linux kernel ABI used by this platform: the TUN ioctls and the `ifreq`
//! layout they take. Nothing else in the crate declares ioctls or
//! `repr(C)` structs.

use std::os::raw::{c_char, c_short};

pub const IFNAMSIZ: usize = libc::IFNAMSIZ;
pub const IFF_TUN: c_short = libc::IFF_TUN as c_short;
pub const IFF_TAP: c_short = libc::IFF_TAP as c_short;
pub const IFF_NO_PI: c_short = libc::IFF_NO_PI as c_short;
pub const IFF_MULTI_QUEUE: c_short = libc::IFF_MULTI_QUEUE as c_short;
pub const IFF_VNET_HDR: c_short = libc::IFF_VNET_HDR as c_short;
// 0x8000 does not fit a c_short's positive range; the kernel reads the
// same 16 bits.
pub const IFF_TUN_EXCL: c_short = libc::IFF_TUN_EXCL as u16 as c_short;

/// `struct ifreq` as TUNSETIFF/TUNGETIFF use it: the name, then the flags
/// member of the union, padded to the union's full size (24 bytes on every
/// Linux ABI, so `ifreq` is 40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TunIfReq {
    pub name: [c_char; IFNAMSIZ],
    pub flags: c_short,
    pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<TunIfReq>() == 40);

impl TunIfReq {
    /// A request for `flags`, with `name` (already validated to be shorter
    /// than IFNAMSIZ) or an empty name for the kernel's `tun%d`.
    pub fn new(name: &str, flags: c_short) -> Self {
        let mut req = TunIfReq {
            name: [0; IFNAMSIZ],
            flags,
            pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes().take(IFNAMSIZ - 1)) {
            *dst = src as c_char;
        }
        req
    }

    /// The NUL-terminated name the kernel wrote back.
    pub fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Lowers the calling thread's priority to `nice` (Linux keeps a nice
/// value per thread, so the rest of the VM keeps its own).
pub fn set_thread_nice(nice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions and touches no memory.
    let tid = unsafe { libc::gettid() };
    let who =
        libc::id_t::try_from(tid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: setpriority takes plain integers; PRIO_PROCESS with a thread
    // id names that one thread. Raising one's own nice value needs no
    // privilege.
    let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// TUNSETIFF reads the request and writes the chosen name back.
nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, TunIfReq);
nix::ioctl_read_bad!(tungetiff, libc::TUNGETIFF, TunIfReq);
// TUNSETOWNER, TUNSETGROUP and TUNSETPERSIST take their value (uid, gid,
// 0/1) as the argument itself.
nix::ioctl_write_int_bad!(tunsetowner, libc::TUNSETOWNER);
nix::ioctl_write_int_bad!(tunsetgroup, libc::TUNSETGROUP);
nix::ioctl_write_int_bad!(tunsetpersist, libc::TUNSETPERSIST);
// TUNSETOFFLOAD takes the TUN_F_* bits as the argument itself.
nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
// TUNGETDEVNETNS takes no argument and returns a new fd of the device's
// network namespace (Linux 5.2+).
nix::ioctl_none_bad!(tungetdevnetns, libc::TUNGETDEVNETNS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_name_round_trips_and_is_nul_terminated() {
        let req = TunIfReq::new("tunvpn%d", IFF_TUN | IFF_NO_PI);
        assert_eq!(req.name(), "tunvpn%d");
        assert_eq!(req.flags, IFF_TUN | IFF_NO_PI);
        let long = TunIfReq::new(&"x".repeat(40), IFF_TUN);
        assert_eq!(long.name().len(), IFNAMSIZ - 1);
    }

    #[test]
    fn a_deprioritized_thread_is_niced_and_only_it() {
        // SAFETY: getpriority reads the nice value of the calling thread
        // (who 0 = the caller) and touches no memory of ours.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        // 19 is the lowest priority: any thread may go there.
        let set = std::thread::spawn(move || (set_thread_nice(19).is_ok(), nice()));
        assert_eq!(set.join().ok(), Some((true, 19)));
        let deprioritized = std::thread::spawn(move || {
            crate::platform::deprioritize_thread();
            nice()
        });
        // (Without privilege a thread cannot come back up from a nicer
        // value it inherited; it keeps that one.)
        assert_eq!(deprioritized.join().ok(), Some(before.max(10)));
        assert_eq!(nice(), before, "only the calling thread changes");
    }
}
