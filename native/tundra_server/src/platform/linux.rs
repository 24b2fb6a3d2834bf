//! Linux: SO_PEERCRED, getgrouplist(3) for group membership, and the
//! capability check in /proc.

use std::ffi::CString;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{getgrouplist, Gid, User};

use super::Credentials;

pub fn peer_credentials(stream: &UnixStream) -> nix::Result<Credentials> {
    let creds = getsockopt(stream, PeerCredentials)?;
    Ok(Credentials {
        pid: Some(creds.pid()),
        uid: creds.uid(),
        gid: creds.gid(),
    })
}

pub fn supplementary_member(user: &User, group: Gid) -> bool {
    user_groups(user).contains(&group)
}

/// The user's groups in the user database, primary included.
pub fn user_groups(user: &User) -> Vec<Gid> {
    let Ok(name) = CString::new(user.name.as_str()) else {
        return vec![user.gid];
    };
    getgrouplist(&name, user.gid).unwrap_or_else(|_| vec![user.gid])
}

/// Root, or CAP_NET_ADMIN (bit 12) in the effective capability set, as
/// /proc/self/status lists it.
pub fn privileged() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}
