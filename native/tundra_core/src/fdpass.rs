//! Unix stream sockets that carry device fds (SCM_RIGHTS) between the
//! library and `tundra_server`, the same on both sides and on every OS.
//!
//! Linux makes a socket, and installs received fds, close-on-exec
//! atomically (`SOCK_CLOEXEC`, `MSG_CMSG_CLOEXEC`); macOS has neither, so
//! there the flag is set right after, and a process forked by another
//! thread in between could inherit the fd. Sends never raise SIGPIPE
//! (`MSG_NOSIGNAL` on Linux; the BEAM and Rust programs ignore SIGPIPE,
//! which is what macOS relies on).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

#[cfg(any(target_os = "linux", target_os = "android"))]
const SOCKET_FLAGS: SockFlag = SockFlag::SOCK_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SOCKET_FLAGS: SockFlag = SockFlag::empty();

#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: MsgFlags = MsgFlags::MSG_CMSG_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: MsgFlags = MsgFlags::empty();

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: MsgFlags = MsgFlags::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: MsgFlags = MsgFlags::empty();

fn close_on_exec(fd: &OwnedFd) -> io::Result<()> {
    // Already set on Linux; the one system call it costs is not worth a cfg.
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// A new Unix stream socket, close-on-exec.
pub fn stream_socket() -> io::Result<OwnedFd> {
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SOCKET_FLAGS, None)?;
    close_on_exec(&fd)?;
    Ok(fd)
}

/// One `sendmsg` of `data` with `fds` attached; returns the bytes sent.
pub fn send_with_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match socket::sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(data)],
            control,
            SEND_FLAGS,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => {}
            other => return Ok(other?),
        }
    }
}

/// Most fds one message can carry (Linux's SCM_MAX_FD). The control
/// buffer always has room for this many: were it truncated, the fds that
/// did arrive could not be walked (nix refuses a truncated buffer) and
/// would stay open, which a hostile peer could repeat until the table is
/// full.
const MAX_FDS_PER_MESSAGE: usize = 253;

/// One `recvmsg` into `buf`, taking every fd that rides along. Every fd
/// received is owned, and close-on-exec, when this returns; callers close
/// those they did not expect by dropping them.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let msg = socket::recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), RECV_FLAGS)?;
    // Own every fd at once, so that every path closes them.
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds.into_iter().map(own_received));
        }
    }
    for fd in &received {
        close_on_exec(fd)?;
    }
    Ok((msg.bytes, received))
}

fn own_received(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just received with SCM_RIGHTS: the kernel installed
    // it in this process's table, and nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fds_travel_with_their_bytes_and_arrive_close_on_exec() {
        let (a, b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/dev/null").expect("open");
        let sent = send_with_fds(a.as_fd(), b"hello", &[file.as_raw_fd()]).expect("send");
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).expect("recv");
        assert_eq!((&buf[..n], fds.len()), (&b"hello"[..], 1));
        let flags = fcntl(&fds[0], FcntlArg::F_GETFD).expect("flags");
        assert!(FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC));

        // However many come, each arrives owned (so closed when dropped):
        // none is left behind in a truncated control buffer.
        let many = [file.as_raw_fd(); 200];
        send_with_fds(a.as_fd(), b"x", &many).expect("send");
        let (_, fds) = recv_with_fds(b.as_fd(), &mut buf).expect("recv");
        assert_eq!(fds.len(), 200);

        let socket = stream_socket().expect("socket");
        let flags = fcntl(&socket, FcntlArg::F_GETFD).expect("flags");
        assert!(FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC));
    }
}
