//! Linux: SO_PEERCRED, and getgrouplist(3) for group membership.

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
    let Ok(name) = CString::new(user.name.as_str()) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&group))
}
