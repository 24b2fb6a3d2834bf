//! Users and groups by name or number, from the system's user database:
//! the one lookup the NIF (persistent devices' `owner:`/`group:`) and the
//! server (its `--group`, its configuration's `user:`/`group:`) share.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, User};

/// The uid of user `name` in the user database.
pub fn uid_named(name: &str) -> Option<u32> {
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// The gid of group `name` in the group database.
pub fn gid_named(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A uid written as a number (which need not be in the database) or a
/// user's name.
pub fn uid(text: &str) -> Option<u32> {
    text.parse().ok().or_else(|| uid_named(text))
}

/// A gid written as a number (which need not be in the database) or a
/// group's name.
pub fn gid(text: &str) -> Option<u32> {
    text.parse().ok().or_else(|| gid_named(text))
}

/// Why this process may not connect to the socket at `path` (EACCES):
/// the group it lacks (see `missing_group`), or a folder on the way.
pub fn why_refused_by_mode(path: &Path) -> String {
    let at = path.display();
    match std::fs::metadata(path) {
        Err(_) => format!("{at} cannot be reached: a folder on its way is closed to this user"),
        Ok(meta) => missing_group(path).unwrap_or_else(|| {
            format!(
                "{at} (mode {:o}) refuses this process although it is in the socket's group: the socket's mode should be 0660",
                meta.mode() & 0o7777
            )
        }),
    }
}

/// When this process is not in the group of the socket at `path`: why,
/// for the person who must act — not in the group at all, or in it in
/// the user database but not in this process (added after it logged in).
/// `None` when it is in the group (or the socket cannot be looked at).
pub fn missing_group(path: &Path) -> Option<String> {
    let at = path.display();
    let gid = Gid::from_raw(std::fs::metadata(path).ok()?.gid());
    if process_in(gid) {
        return None;
    }
    let group = Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name);
    let euid = nix::unistd::geteuid();
    let user = User::from_uid(euid).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| euid.to_string(), |u| u.name.clone());
    let in_database = user.as_ref().is_some_and(|u| database_in(u, gid));
    Some(if in_database {
        format!(
            "user {name} is in group {group}, which may use tundra_server at {at}, but this process is not: it started before {name} was added; log in again (or start it under `sg {group}`)"
        )
    } else {
        format!(
            "user {name} is not in group {group}, whose members may use tundra_server at {at}: an administrator adds it (usermod -aG {group} {name}), then {name} logs in again"
        )
    })
}

/// Whether this process has group `gid`, primary or supplementary.
#[cfg(not(target_vendor = "apple"))]
fn process_in(gid: Gid) -> bool {
    nix::unistd::getegid() == gid
        || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&gid))
}

/// Whether the user database gives `user` group `gid`.
#[cfg(not(target_vendor = "apple"))]
fn database_in(user: &User, gid: Gid) -> bool {
    user.gid == gid
        || std::ffi::CString::new(user.name.as_str())
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .is_some_and(|groups| groups.contains(&gid))
}

// nix offers neither getgroups nor getgrouplist on macOS.
#[cfg(target_vendor = "apple")]
mod apple;
#[cfg(target_vendor = "apple")]
use apple::{database_in, process_in};

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket file (nobody listens) of group `gid`, removed on drop.
    struct SocketOf(std::path::PathBuf);

    impl SocketOf {
        fn new(name: &str, gid: u32) -> SocketOf {
            let path =
                std::env::temp_dir().join(format!("tundra-{name}-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
            nix::unistd::chown(&path, None, Some(Gid::from_raw(gid))).expect("chgrp");
            SocketOf(path)
        }
    }

    impl Drop for SocketOf {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn as_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root under CI"
        );
        eprintln!("NOTICE: skipping a users test: not root (it gives sockets to groups)");
        false
    }

    #[test]
    fn a_group_this_process_lacks_is_named_with_what_to_do() {
        if !as_root() {
            return;
        }
        let theirs = SocketOf::new("theirs", 61_998);
        let why = missing_group(&theirs.0).expect("a group this process lacks");
        assert!(why.contains("is not in group 61998"), "{why}");
        assert!(why.contains("usermod -aG 61998"), "{why}");
        assert_eq!(why_refused_by_mode(&theirs.0), why);
        // Its own group: nothing missing; the mode is then to blame.
        let own = SocketOf::new("own", nix::unistd::getegid().as_raw());
        assert_eq!(missing_group(&own.0), None);
        assert!(why_refused_by_mode(&own.0).contains("the socket's mode should be 0660"));
        let nowhere = std::path::Path::new("/nonexistent-tundra/s.sock");
        assert!(why_refused_by_mode(nowhere).contains("cannot be reached"));
    }

    /// Run by the next test in a process of its own, whose groups are cut
    /// to none but 65534 (`setpriv`): what it says of a socket of root's
    /// group, which the user database gives root.
    #[test]
    #[ignore = "run by the next test in a process of its own; not a test by itself"]
    fn in_a_process_without_its_groups() {
        let Ok(path) = std::env::var("TUNDRA_TEST_SOCKET") else {
            return;
        };
        println!(
            "WHY {}",
            missing_group(std::path::Path::new(&path)).unwrap_or_default()
        );
    }

    #[test]
    fn a_group_the_database_gives_but_this_process_lacks_says_log_in_again() {
        if !as_root() {
            return;
        }
        let roots = SocketOf::new("roots", 0);
        let out = std::process::Command::new("setpriv")
            .args(["--regid=65534", "--clear-groups"])
            .arg(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "users::tests::in_a_process_without_its_groups",
                "--nocapture",
            ])
            .env("TUNDRA_TEST_SOCKET", &roots.0)
            .output()
            .expect("setpriv (util-linux)");
        let said = String::from_utf8_lossy(&out.stdout);
        let why = said
            .lines()
            .find_map(|l| l.strip_prefix("WHY "))
            .unwrap_or_default();
        assert!(why.contains("is in group root"), "{said}");
        assert!(why.contains("log in again"), "{why}");
    }

    #[test]
    fn numbers_and_names() {
        assert_eq!(uid("0"), Some(0));
        assert_eq!(uid("root"), Some(0));
        assert_eq!(gid("61000"), Some(61000), "a number need not exist");
        assert_eq!(gid("root"), Some(0));
        assert_eq!(uid("no-such-user-tundra"), None);
        assert_eq!(gid_named("no-such-group-tundra"), None);
    }
}
