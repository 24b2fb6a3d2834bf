//! Which requests give a utun device the addressing `create/2` documents,
//! as a pure decision table (each row unit-tested).
//!
//! utun is a point-to-point interface, and xnu treats its addresses so:
//! an IPv4 alias needs a destination (`in.c` refuses one without,
//! `EDESTADDRREQ`) and routes only that destination (a host route); an
//! IPv6 alias with a destination must have a /128 mask (`in6.c`, `EINVAL`),
//! and a mask of /0 is refused. The prefix the docs promise to route
//! through the device is therefore added as a route of its own.

use std::net::IpAddr;

use crate::cidr::Cidr;
use crate::{ConfigError, DeviceConfig};

/// One address alias request: `SIOCAIFADDR` or `SIOCAIFADDR_IN6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasSpec {
    pub address: IpAddr,
    /// The point-to-point destination field.
    pub destination: Option<IpAddr>,
    /// The mask's length.
    pub prefix: u8,
}

/// The alias, and the route through the interface to add after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub alias: AliasSpec,
    pub route: Option<Cidr>,
}

/// The rules macOS adds to `DeviceConfig::validate`: an IPv6 prefix of 0
/// is refused by the kernel.
pub fn check(config: &DeviceConfig) -> Result<(), ConfigError> {
    if config.address.is_ipv6() && config.prefix == 0 {
        return Err(ConfigError::Prefix);
    }
    Ok(())
}

/// The requests for a (valid, `check`ed) `config`. What is routed through
/// the device matches Linux: IPv4 routes the peer's prefix (or the
/// address's, without a peer), IPv6 the address's prefix and the peer.
pub fn plan(config: &DeviceConfig) -> Plan {
    let prefix = config.prefix;
    let routed =
        |from: IpAddr, full: u8| (prefix < full).then(|| Cidr::new(from, prefix)).flatten();
    match (config.address, config.dstaddr) {
        // The address stands in as its own destination, as wg-quick does.
        (address @ IpAddr::V4(_), None) => Plan {
            alias: AliasSpec {
                address,
                destination: Some(address),
                prefix,
            },
            route: routed(address, 32),
        },
        (address @ IpAddr::V4(_), Some(peer)) => Plan {
            alias: AliasSpec {
                address,
                destination: Some(peer),
                prefix,
            },
            route: routed(peer, 32),
        },
        (address @ IpAddr::V6(_), None) => Plan {
            alias: AliasSpec {
                address,
                destination: None,
                prefix,
            },
            route: None,
        },
        (address @ IpAddr::V6(_), Some(peer)) => Plan {
            alias: AliasSpec {
                address,
                destination: Some(peer),
                prefix: 128,
            },
            route: routed(address, 128),
        },
    }
}

/// The peer `info/1` reports for an address the kernel lists with
/// `destination`: none when it is the address's own stand-in.
pub fn reported_peer(address: IpAddr, destination: Option<IpAddr>) -> Option<IpAddr> {
    destination.filter(|d| *d != address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, peer: Option<&str>, prefix: u8) -> DeviceConfig {
        DeviceConfig {
            dstaddr: peer.map(|p| p.parse().unwrap()),
            prefix,
            ..DeviceConfig::new(address.parse().unwrap())
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn row(address: &str, peer: Option<&str>, prefix: u8) -> (Option<IpAddr>, u8, Option<String>) {
        let plan = plan(&config(address, peer, prefix));
        assert_eq!(plan.alias.address, ip(address));
        (
            plan.alias.destination,
            plan.alias.prefix,
            plan.route.map(|r| r.to_string()),
        )
    }

    #[test]
    fn ipv4_without_a_peer_is_its_own_destination_and_routes_its_prefix() {
        let me = Some(ip("10.0.0.2"));
        assert_eq!(row("10.0.0.2", None, 32), (me, 32, None));
        assert_eq!(
            row("10.0.0.2", None, 24),
            (me, 24, Some("10.0.0.0/24".into()))
        );
        assert_eq!(row("10.0.0.2", None, 1), (me, 1, Some("0.0.0.0/1".into())));
    }

    #[test]
    fn ipv4_with_a_peer_routes_the_peers_prefix() {
        let peer = Some(ip("10.9.0.1"));
        assert_eq!(row("10.0.0.2", Some("10.9.0.1"), 32), (peer, 32, None));
        assert_eq!(
            row("10.0.0.2", Some("10.9.0.1"), 16),
            (peer, 16, Some("10.9.0.0/16".into()))
        );
    }

    #[test]
    fn ipv6_without_a_peer_keeps_its_prefix_mask() {
        assert_eq!(row("fd00::2", None, 64), (None, 64, None));
        assert_eq!(row("fd00::2", None, 128), (None, 128, None));
        assert_eq!(row("fd00::2", None, 1), (None, 1, None));
    }

    #[test]
    fn ipv6_with_a_peer_is_a_host_alias_plus_its_prefix_route() {
        let peer = Some(ip("fd00::1"));
        assert_eq!(
            row("fd00::2", Some("fd00::1"), 64),
            (peer, 128, Some("fd00::/64".into()))
        );
        assert_eq!(row("fd00::2", Some("fd00::1"), 128), (peer, 128, None));
        assert_eq!(
            row("fd00::2", Some("fd00::1"), 1),
            (peer, 128, Some("8000::/1".into()))
        );
    }

    #[test]
    fn macos_refuses_an_ipv6_prefix_of_zero_only() {
        assert_eq!(check(&config("fd00::2", None, 0)), Err(ConfigError::Prefix));
        assert_eq!(
            check(&config("fd00::2", Some("fd00::1"), 0)),
            Err(ConfigError::Prefix)
        );
        assert_eq!(check(&config("fd00::2", None, 1)), Ok(()));
        assert_eq!(check(&config("10.0.0.2", None, 0)), Ok(()));
    }

    #[test]
    fn the_stand_in_destination_is_not_reported_as_a_peer() {
        assert_eq!(reported_peer(ip("10.0.0.2"), Some(ip("10.0.0.2"))), None);
        assert_eq!(
            reported_peer(ip("10.0.0.2"), Some(ip("10.0.0.1"))),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(reported_peer(ip("fd00::2"), None), None);
    }
}
