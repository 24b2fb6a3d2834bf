//! Who may use the server: root, or a member of its group (primary or
//! supplementary), judged from the credentials the kernel gives for the
//! peer of the connection; and which groups a peer's delegations may come
//! from.

use std::os::unix::net::UnixStream;

use nix::unistd::{Gid, Uid, User};

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

/// The groups whose delegations apply to `peer`: its primary group as the
/// kernel reports it, and the user's groups in the user database.
pub fn groups(peer: &Peer) -> Vec<u32> {
    let mut groups = vec![peer.gid];
    if let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) {
        groups.extend(platform::user_groups(&user).iter().map(|g| g.as_raw()));
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The gid of `group`: a group name, or a number (which need not be in
/// the group database).
pub fn group_id(group: &str) -> Option<Gid> {
    tundra_core::users::gid(group).map(Gid::from_raw)
}
