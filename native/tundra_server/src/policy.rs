//! What the administrator delegated: which address ranges each user or
//! group may put on a device, and the name prefix of server-made devices.
//! Read once at start from the configuration file (see README.md):
//!
//! ```text
//! # A member's device (its address, its peer and the prefix it routes)
//! # must lie inside ranges delegated to the member or one of its groups.
//! allow group:tundra 10.99.0.0/16 fd11:b7b7:4360::/48
//! allow user:alice   10.60.0.0/24
//! allow uid:1001     fd60::/64
//! name-prefix tun
//! tap-name-prefix tap
//! ```
#![forbid(unsafe_code)]

use std::net::IpAddr;

use tundra_core::config::valid_interface_name;
use tundra_core::platform::Occupied;
use tundra_core::{Cidr, Mode};

/// Name prefixes of server-made TUN and TAP devices unless configured
/// otherwise (the kernel's own defaults, as direct creation gets).
pub const DEFAULT_NAME_PREFIX: &str = "tun";
pub const DEFAULT_TAP_NAME_PREFIX: &str = "tap";

/// Who a delegation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Uid(u32),
    Gid(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub to: Principal,
    pub ranges: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub delegations: Vec<Delegation>,
    /// What TUN devices' names start with.
    pub name_prefix: String,
    /// What TAP devices' names start with.
    pub tap_name_prefix: String,
}

impl Default for Policy {
    /// Nothing delegated: only root is served.
    fn default() -> Self {
        Policy {
            delegations: Vec::new(),
            name_prefix: DEFAULT_NAME_PREFIX.into(),
            tap_name_prefix: DEFAULT_TAP_NAME_PREFIX.into(),
        }
    }
}

/// Looks user and group names up; a seam so that parsing is testable
/// without the system's user database.
pub trait Names {
    fn uid(&self, user: &str) -> Option<u32>;
    fn gid(&self, group: &str) -> Option<u32>;
}

/// The system's user database.
pub struct SystemNames;

impl Names for SystemNames {
    fn uid(&self, user: &str) -> Option<u32> {
        tundra_core::users::uid_named(user)
    }
    fn gid(&self, group: &str) -> Option<u32> {
        tundra_core::users::gid_named(group)
    }
}

impl Policy {
    /// Parses a configuration file's text. Errors name the line and the
    /// setting, never the text itself: the file might not be a
    /// configuration at all (a symlink to a file of secrets).
    pub fn parse(text: &str, names: &dyn Names) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let at = |what: &str| format!("line {}: {what}", n + 1);
            match words.next() {
                None => {}
                Some("allow") => {
                    let who = words
                        .next()
                        .ok_or_else(|| at("allow needs a user or group"))?;
                    let to = principal(who, names).map_err(|e| at(&format!("allow: {e}")))?;
                    let ranges = words
                        .map(|w| {
                            w.parse::<Cidr>()
                                .map_err(|e| at(&format!("allow: {e}, with no host bits set")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if ranges.is_empty() {
                        return Err(at("allow names no address range"));
                    }
                    policy.delegations.push(Delegation { to, ranges });
                }
                Some(setting @ ("name-prefix" | "tap-name-prefix")) => {
                    let prefix = words.next().unwrap_or_default();
                    // Room is left for a number after the prefix.
                    if prefix.len() > 12 || prefix.contains('%') || !valid_interface_name(prefix) {
                        return Err(at(&format!(
                            "{setting}: not something interface names can start with (at most 12 printable characters, no %, / or :)"
                        )));
                    }
                    if words.next().is_some() {
                        return Err(at(&format!("{setting} takes one value")));
                    }
                    if setting == "name-prefix" {
                        policy.name_prefix = prefix.into();
                    } else {
                        policy.tap_name_prefix = prefix.into();
                    }
                }
                Some(_) => {
                    return Err(at(
                        "not a setting (the settings are allow, name-prefix and tap-name-prefix)",
                    ))
                }
            }
        }
        Ok(policy)
    }

    /// The interface name to request for a device of `mode` asked for as
    /// `requested`: a name of its own under the mode's prefix, or the
    /// prefix and a kernel-chosen number. `Err` says why a name is refused.
    pub fn device_name(&self, requested: Option<&str>, mode: Mode) -> Result<String, String> {
        let (prefix, kind) = match mode {
            Mode::Tun => (&self.name_prefix, "TUN"),
            Mode::Tap => (&self.tap_name_prefix, "TAP"),
        };
        match requested {
            None => Ok(format!("{prefix}%d")),
            Some(name) if name.len() > prefix.len() && name.starts_with(prefix.as_str()) => {
                Ok(name.into())
            }
            Some(_) => Err(format!(
                "names of server-made {kind} devices start with {prefix:?}"
            )),
        }
    }

    /// The ranges delegated to `uid` or one of `groups`.
    pub fn ranges_for<'a>(&'a self, uid: u32, groups: &'a [u32]) -> impl Iterator<Item = &'a Cidr> {
        self.delegations
            .iter()
            .filter(move |d| match d.to {
                Principal::Uid(u) => u == uid,
                Principal::Gid(g) => groups.contains(&g),
            })
            .flat_map(|d| d.ranges.iter())
    }

    /// `Ok` if every claim lies inside one range delegated to `uid` or its
    /// `groups`; otherwise names the first claim that does not.
    pub fn check_delegated(&self, uid: u32, groups: &[u32], claims: &[Cidr]) -> Result<(), String> {
        for claim in claims {
            if !self
                .ranges_for(uid, groups)
                .any(|range| range.covers(claim))
            {
                return Err(if self.ranges_for(uid, groups).next().is_none() {
                    format!(
                        "nothing is delegated to uid {uid} or its groups (add an \"allow\" line to the server's configuration)"
                    )
                } else {
                    format!("{claim} is not inside a range delegated to uid {uid} or its groups")
                });
            }
        }
        Ok(())
    }
}

/// Who an `allow` line is for; errors say what was expected, not what
/// was written.
fn principal(text: &str, names: &dyn Names) -> Result<Principal, &'static str> {
    const EXPECTED: &str = "expected user:NAME, group:NAME, uid:N or gid:N";
    let (kind, name) = text.split_once(':').ok_or(EXPECTED)?;
    let number = || {
        name.parse::<u32>()
            .map_err(|_| "uid: and gid: take a number")
    };
    match kind {
        "user" => names
            .uid(name)
            .map(Principal::Uid)
            .ok_or("no such user in the user database"),
        "group" => names
            .gid(name)
            .map(Principal::Gid)
            .ok_or("no such group in the group database"),
        "uid" => number().map(Principal::Uid),
        "gid" => number().map(Principal::Gid),
        _ => Err(EXPECTED),
    }
}

/// `Some(why)` when a device claiming `claims` would collide with what the
/// namespace already uses: its address assigned to an interface, or a
/// claim overlapping a route other than a default route (in any table, so
/// local addresses, other devices' peers and prefixes, and routed
/// networks all count).
pub fn conflict(address: &IpAddr, claims: &[Cidr], occupied: &Occupied) -> Option<String> {
    if occupied.addresses.contains(address) {
        return Some(format!("{address} is already assigned to an interface"));
    }
    route_conflict(claims, occupied)
}

/// `Some(why)` when a claim overlaps a route other than a default route,
/// or what an interface's address claims (its peer and prefix, held even
/// while its link is down and its routes are gone; see `conflict`). A
/// default route claims nothing another route has (the longest prefix
/// wins): it is granted where it is delegated, and never otherwise.
pub fn route_conflict(claims: &[Cidr], occupied: &Occupied) -> Option<String> {
    claims.iter().filter(|c| !c.is_default()).find_map(|claim| {
        let overlapping = |held: &&Cidr| !held.is_default() && held.overlaps(claim);
        if let Some(route) = occupied.routes.iter().find(overlapping) {
            return Some(format!("{claim} overlaps the existing route {route}"));
        }
        occupied
            .claimed
            .iter()
            .find(overlapping)
            .map(|held| format!("{claim} overlaps {held}, which an interface's address claims"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeNames;
    impl Names for FakeNames {
        fn uid(&self, user: &str) -> Option<u32> {
            (user == "alice").then_some(1001)
        }
        fn gid(&self, group: &str) -> Option<u32> {
            (group == "tundra").then_some(990)
        }
    }

    #[test]
    fn the_system_names_are_the_user_databases() {
        let root = nix::unistd::User::from_uid(0.into()).ok().flatten();
        let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
        for user in [root, nobody].into_iter().flatten() {
            assert_eq!(SystemNames.uid(&user.name), Some(user.uid.as_raw()));
            assert_eq!(
                SystemNames.gid(&user.name).is_some(),
                nix::unistd::Group::from_name(&user.name)
                    .ok()
                    .flatten()
                    .is_some()
            );
        }
        assert_eq!(SystemNames.uid("no-such-user-tundra"), None);
        assert_eq!(SystemNames.gid("no-such-group-tundra"), None);
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    const CONFIG: &str = "
        # comment
        allow group:tundra 10.99.0.0/16 fd11:b7b7:4360::/48
        allow user:alice 10.60.0.0/24   # trailing comment
        allow uid:2000 10.70.0.0/24
        name-prefix tnd
    ";

    #[test]
    fn parses_delegations_by_name_and_number() {
        let p = Policy::parse(CONFIG, &FakeNames).expect("parses");
        assert_eq!(p.name_prefix, "tnd");
        assert_eq!(
            p.delegations,
            vec![
                Delegation {
                    to: Principal::Gid(990),
                    ranges: cidrs(&["10.99.0.0/16", "fd11:b7b7:4360::/48"])
                },
                Delegation {
                    to: Principal::Uid(1001),
                    ranges: cidrs(&["10.60.0.0/24"])
                },
                Delegation {
                    to: Principal::Uid(2000),
                    ranges: cidrs(&["10.70.0.0/24"])
                },
            ]
        );
        assert_eq!(Policy::parse("", &FakeNames), Ok(Policy::default()));
    }

    #[test]
    fn the_shipped_default_delegates_the_readme_examples_to_the_group() {
        let p = Policy::parse(include_str!("../server.conf"), &FakeNames).expect("parses");
        assert_eq!(p.name_prefix, "tun");
        let member = [990];
        let mut v4 = tundra_core::DeviceConfig::new("10.99.0.2".parse().unwrap());
        v4.dstaddr = Some("10.99.0.1".parse().unwrap());
        let mut v6 = tundra_core::DeviceConfig::new("fd11:b7b7:4360::2".parse().unwrap());
        v6.dstaddr = Some("fd11:b7b7:4360::1".parse().unwrap());
        v6.prefix = 64;
        for config in [v4, v6] {
            assert_eq!(p.check_delegated(1234, &member, &config.claims()), Ok(()));
            assert!(p.check_delegated(1234, &[], &config.claims()).is_err());
        }
    }

    #[test]
    fn bad_lines_are_named_without_their_text() {
        for (text, wanted) in [
            (
                "allow group:nobody 10.0.0.0/8",
                "line 1: allow: no such group",
            ),
            ("\nallow user:bob 10.0.0.0/8", "line 2: allow: no such user"),
            ("allow uid:x 10.0.0.0/8", "take a number"),
            ("allow alice 10.0.0.0/8", "expected user:NAME"),
            ("allow uid:5", "names no address range"),
            ("allow uid:5 10.0.0.1/8", "no host bits"),
            ("frobnicate", "line 1: not a setting"),
            ("name-prefix a%d", "name-prefix: not something"),
            ("name-prefix", "name-prefix: not something"),
            ("name-prefix tun extra", "takes one value"),
            ("name-prefix abcdefghijklm", "name-prefix: not something"),
            (
                "tap-name-prefix abcdefghijklmnop",
                "tap-name-prefix: not something",
            ),
        ] {
            let err = Policy::parse(text, &FakeNames).expect_err(text);
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
        // Whatever a line holds, none of it comes back: a shadow file's
        // hash, a user name, a range.
        for secret in [
            "root:$6$SECRETHASH:19000:0:99999:7:::",
            "allow user:SECRETHASH 10.0.0.0/8",
            "allow uid:5 SECRETHASH",
            "allow SECRETHASH 10.0.0.0/8",
            "name-prefix SECRETHASH%d",
            "name-prefix tun SECRETHASH",
        ] {
            let err = Policy::parse(secret, &FakeNames).expect_err(secret);
            assert!(!err.contains("SECRETHASH"), "{secret:?}: {err}");
        }
    }

    #[test]
    fn names_must_carry_the_prefix_of_their_mode() {
        let p = Policy::default();
        assert_eq!(p.device_name(None, Mode::Tun), Ok("tun%d".into()));
        assert_eq!(p.device_name(None, Mode::Tap), Ok("tap%d".into()));
        for (name, mode) in [
            ("tunvpn%d", Mode::Tun),
            ("tun-alice", Mode::Tun),
            ("tap%d", Mode::Tap),
        ] {
            assert_eq!(p.device_name(Some(name), mode), Ok(name.into()));
        }
        for bad in ["eth0", "wg0", "-", "123", "tun", "tu", "xtun0", "tap0"] {
            assert!(p.device_name(Some(bad), Mode::Tun).is_err(), "{bad}");
        }
        assert!(p.device_name(Some("tun0"), Mode::Tap).is_err());
        // Twelve characters leave room for a number.
        assert!(Policy::parse("name-prefix abcdefghijkl", &FakeNames).is_ok());
        let p = Policy::parse("name-prefix vpn\ntap-name-prefix br", &FakeNames).unwrap();
        assert_eq!(p.device_name(None, Mode::Tap), Ok("br%d".into()));
        assert_eq!(p.device_name(None, Mode::Tun), Ok("vpn%d".into()));
    }

    #[test]
    fn every_claim_must_be_delegated_to_the_user_or_a_group() {
        let p = Policy::parse(CONFIG, &FakeNames).unwrap();
        let member = [990];
        assert_eq!(
            p.check_delegated(5, &member, &cidrs(&["10.99.1.2/32", "10.99.1.1/32"])),
            Ok(())
        );
        assert_eq!(
            p.check_delegated(1001, &[], &cidrs(&["10.60.0.2/32", "10.60.0.0/24"])),
            Ok(())
        );
        // A prefix wider than the delegation, an address outside it, a
        // peer outside it, another user's range, the default route.
        for claims in [
            &["10.60.0.2/32", "10.60.0.0/23"][..],
            &["10.61.0.2/32"],
            &["10.60.0.2/32", "10.50.0.9/32"],
            &["10.70.0.2/32"],
            &["10.60.0.2/32", "0.0.0.0/0"],
        ] {
            let err = p
                .check_delegated(1001, &[], &cidrs(claims))
                .expect_err("refused");
            assert!(err.contains("not inside"), "{err}");
        }
        let err = p
            .check_delegated(7, &[8], &cidrs(&["10.99.1.2/32"]))
            .expect_err("nothing");
        assert!(err.contains("nothing is delegated"), "{err}");
    }

    #[test]
    fn conflicts_with_addresses_and_non_default_routes() {
        let occupied = Occupied {
            addresses: vec!["10.50.0.1".parse().unwrap()],
            routes: cidrs(&[
                "0.0.0.0/0",
                "::/0",
                "10.50.0.0/24",
                "10.50.0.1/32",
                "fd50::/64",
            ]),
            // A link that is down: its address's peer, without a route.
            claimed: cidrs(&["10.51.0.2/32", "10.51.0.1/32"]),
        };
        let free: IpAddr = "10.99.0.2".parse().unwrap();
        assert_eq!(
            conflict(&free, &cidrs(&["10.99.0.2/32", "10.99.0.1/32"]), &occupied),
            None
        );
        let taken: IpAddr = "10.50.0.1".parse().unwrap();
        assert!(conflict(&taken, &cidrs(&["10.50.0.1/32"]), &occupied).is_some());
        for claims in [
            &["10.99.0.2/32", "10.50.0.9/32"][..],
            &["10.50.0.9/32"],
            &["10.99.0.2/32", "10.0.0.0/8"],
            &["fd99::2/128", "fd50::9/128"],
            &["10.99.0.2/32", "10.51.0.1/32"],
        ] {
            assert!(
                conflict(&free, &cidrs(claims), &occupied).is_some(),
                "{claims:?}"
            );
        }
    }
}
