//! Linux: SO_PEERCRED, getgrouplist(3) for group membership, the
//! capability check in /proc, and SIOCOUTQ for replies not yet read.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
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
    nix::unistd::Uid::effective().is_root()
        || has_net_admin(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// Whether a /proc/PID/status text has CAP_NET_ADMIN (bit 12) in `CapEff:`.
fn has_net_admin(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

// SIOCOUTQ (linux/sockios.h) has TIOCOUTQ's number; on a Unix socket it
// reports the bytes sent and not yet read by the peer.
nix::ioctl_read_bad!(siocoutq, libc::TIOCOUTQ, libc::c_int);

/// Bytes written to `stream` that its peer has not read yet.
pub fn unread_bytes(stream: &UnixStream) -> io::Result<usize> {
    let mut unread: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points
    // at `unread`; the fd is the stream's, open while it is borrowed.
    unsafe { siocoutq(stream.as_raw_fd(), &mut unread) }?;
    Ok(usize::try_from(unread).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::has_net_admin;

    #[test]
    fn cap_net_admin_is_read_from_the_effective_set() {
        let status =
            |eff: &str| format!("Name:\ttundra\nCapInh:\t0000000000001000\nCapEff:\t{eff}\n");
        assert!(has_net_admin(&status("0000000000001000")));
        assert!(has_net_admin(&status("000001ffffffffff")));
        assert!(!has_net_admin(&status("0000000000000800")), "bit 11");
        assert!(!has_net_admin(&status("0000000000002000")), "bit 13");
        assert!(!has_net_admin(&status("0000000000000000")));
        assert!(
            !has_net_admin("CapInh:\t0000000000001000\n"),
            "only the effective set"
        );
        assert!(!has_net_admin("CapEff:\tnot hex\n"));
    }
}
