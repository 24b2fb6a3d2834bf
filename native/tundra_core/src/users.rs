//! Users and groups by name or number, from the system's user database:
//! the one lookup the NIF (persistent devices' `owner:`/`group:`) and the
//! server (its `--group`, its configuration's `user:`/`group:`) share.
#![forbid(unsafe_code)]

use nix::unistd::{Group, User};

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

#[cfg(test)]
mod tests {
    use super::*;

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
