//! Who may use the server: root, or a member of its group (primary or
//! supplementary), judged from the peer's SO_PEERCRED credentials.

use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{getgrouplist, Gid, Group, User};

#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer(stream: &UnixStream) -> nix::Result<Peer> {
    let creds = getsockopt(stream, PeerCredentials)?;
    Ok(Peer {
        pid: creds.pid(),
        uid: creds.uid(),
        gid: creds.gid(),
    })
}

/// Whether `peer` may create devices: uid 0, or `group` among the peer's
/// primary and supplementary groups (as the user database lists them).
pub fn allowed(peer: &Peer, group: Gid) -> bool {
    if peer.uid == 0 || peer.gid == group.as_raw() {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(peer.uid.into()) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&group))
}

/// The gid of group `name`, if it exists.
pub fn group_id(name: &str) -> Option<Gid> {
    Group::from_name(name).ok().flatten().map(|g| g.gid)
}
