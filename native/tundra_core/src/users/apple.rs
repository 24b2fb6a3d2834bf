//! Group membership on macOS, where nix offers neither getgroups nor
//! getgrouplist: the primary group only, as tundra_server's own check
//! (which serves only root on macOS for now).

use nix::unistd::{Gid, User};

/// Whether this process has group `gid` (its primary group only here).
pub(super) fn process_in(gid: Gid) -> bool {
    nix::unistd::getegid() == gid
}

/// Whether the user database gives `user` group `gid` (primary only here).
pub(super) fn database_in(user: &User, gid: Gid) -> bool {
    user.gid == gid
}
