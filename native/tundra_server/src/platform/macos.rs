//! macOS: getpeereid(3) (no pid), and the group's member list for
//! membership (nix offers no getgrouplist there). Not built by this
//! project's CI, which runs on Linux.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::unistd::{getpeereid, Gid, Group, User};

use super::Credentials;

pub fn peer_credentials(stream: &UnixStream) -> nix::Result<Credentials> {
    let (uid, gid) = getpeereid(stream)?;
    Ok(Credentials {
        pid: None,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

pub fn supplementary_member(user: &User, group: Gid) -> bool {
    Group::from_gid(group)
        .ok()
        .flatten()
        .is_some_and(|g| g.mem.contains(&user.name))
}

/// The user's primary group only: nix offers no getgrouplist on macOS, so
/// delegations to supplementary groups do not apply there (the server
/// serves only root on macOS for now; see README.md).
pub fn user_groups(user: &User) -> Vec<Gid> {
    vec![user.gid]
}

/// Root only (macOS has no per-thread capability sets to consult).
pub fn privileged() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Bytes written to `stream` that its peer has not read yet (SO_NWRITE).
pub fn unread_bytes(stream: &UnixStream) -> io::Result<usize> {
    let mut unread: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_NWRITE writes one int into `unread`, whose size `len`
    // gives; the fd is the stream's, open while it is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NWRITE,
            (&mut unread as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unread).unwrap_or(0))
}
