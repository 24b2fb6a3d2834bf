//! macOS kernel ABI used by this platform: the utun control socket, the
//! interface ioctls and the routing socket. The structs and messages they
//! take are packed as byte arrays by `platform::macos::plain` (tested on
//! Linux); this file only passes them to the kernel. Nothing else in the
//! crate makes these calls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::plain::utun;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A new socket, owned, close-on-exec at once (macOS has no
/// `SOCK_CLOEXEC`: a fork by another thread between the two calls is the
/// only way for a child to inherit it).
pub fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = check(unsafe { libc::socket(domain, kind, protocol) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(fd)
}

/// Writes one whole routing message; the kernel answers a refused one
/// with the write's error (`EEXIST`, `ENETUNREACH`, ...).
pub fn write_message(fd: BorrowedFd<'_>, message: &[u8]) -> io::Result<()> {
    let written = nix::unistd::write(fd, message)?;
    if written != message.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// `ioctl(fd, request, buf)` for a request whose parameter is `buf`
/// (in, out or both, as the request number says).
pub fn ioctl<const N: usize>(
    fd: BorrowedFd<'_>,
    request: u32,
    buf: &mut [u8; N],
) -> io::Result<()> {
    // SAFETY: `buf` is a live, writable buffer of exactly the parameter
    // size encoded in `request` (checked by the callers' use of the
    // matching `utun` constants); the kernel copies at most that much in
    // and out during the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, buf.as_mut_ptr()) })?;
    Ok(())
}

/// Connects a `SYSPROTO_CONTROL` socket to the utun control, unit `unit`.
pub fn connect_control(fd: BorrowedFd<'_>, ctl_id: u32, unit: u32) -> io::Result<()> {
    let addr = utun::sockaddr_ctl(ctl_id, unit);
    // SAFETY: `addr` is a complete `sockaddr_ctl` of the length passed,
    // alive for the call; connect(2) only reads it.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            addr.as_ptr().cast::<libc::sockaddr>(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The interface name of a connected utun socket (`UTUN_OPT_IFNAME`).
pub fn utun_ifname(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut name = [0u8; libc::IFNAMSIZ];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: `name` and `len` are live and writable; getsockopt(2) writes
    // at most `len` bytes and updates `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            utun::SYSPROTO_CONTROL,
            utun::UTUN_OPT_IFNAME,
            name.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    })?;
    Ok(utun::name_from_bytes(
        &name[..(len as usize).min(name.len())],
    ))
}
