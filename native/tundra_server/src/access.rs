//! Who may use the server: root, or a member of its group (primary or
//! supplementary), judged from the credentials the kernel gives for the
//! peer of the connection.

use std::os::unix::net::UnixStream;

use nix::unistd::{Gid, Group, User};

use crate::platform;

pub use crate::platform::Credentials as Peer;

pub fn peer(stream: &UnixStream) -> nix::Result<Peer> {
    platform::peer_credentials(stream)
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
    user.gid == group || platform::supplementary_member(&user, group)
}

/// The gid of group `name`, if it exists.
pub fn group_id(name: &str) -> Option<Gid> {
    Group::from_name(name).ok().flatten().map(|g| g.gid)
}
