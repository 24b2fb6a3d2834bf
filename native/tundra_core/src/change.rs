//! Changes to a live device: link state and MTU, addresses, routes. The
//! same values travel to `tundra_server` when an unprivileged VM asks for
//! them (see `protocol`).
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::config::{AddressSpec, ConfigError, MAX_MTU, MIN_MTU_V4};

/// A route through the device: its destination and, optionally, metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: Cidr,
    pub metric: Option<u32>,
}

/// One change to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Link up or down, and/or a new MTU.
    Link {
        up: Option<bool>,
        mtu: Option<u32>,
    },
    AddAddress(AddressSpec),
    RemoveAddress(AddressSpec),
    AddRoute(RouteSpec),
    RemoveRoute(RouteSpec),
}

impl Change {
    /// Checks the values; the error names the first offending option.
    /// (An MTU below 1280 is allowed: the kernel then turns IPv6 off on
    /// the interface, which is the caller's choice.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Change::Link { mtu: Some(mtu), .. } if !(MIN_MTU_V4..=MAX_MTU).contains(mtu) => {
                Err(ConfigError::Mtu)
            }
            Change::Link { .. } => Ok(()),
            Change::AddAddress(spec) | Change::RemoveAddress(spec) => spec.validate(),
            // A default route (a full tunnel) is a privileged caller's
            // choice, as `ip route add default dev tun0` is; the server
            // grants it only where it was delegated, as for an address
            // with prefix 0: one rule for both.
            Change::AddRoute(_) | Change::RemoveRoute(_) => Ok(()),
        }
    }

    /// The addresses this change would make the device take (none for a
    /// removal or a link change).
    pub fn claims(&self) -> Vec<Cidr> {
        match self {
            Change::AddAddress(spec) => spec.claims(),
            Change::AddRoute(route) => vec![route.dst],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> RouteSpec {
        RouteSpec {
            dst: text.parse().unwrap(),
            metric: None,
        }
    }

    #[test]
    fn bad_values_are_named() {
        let link = |mtu| Change::Link {
            up: None,
            mtu: Some(mtu),
        };
        assert_eq!(link(67).validate(), Err(ConfigError::Mtu));
        assert_eq!(link(65536).validate(), Err(ConfigError::Mtu));
        assert_eq!(link(1400).validate(), Ok(()));
        assert_eq!(Change::AddRoute(route("0.0.0.0/0")).validate(), Ok(()));
        assert_eq!(Change::AddRoute(route("::/0")).validate(), Ok(()));
        assert_eq!(Change::AddRoute(route("10.8.0.0/16")).validate(), Ok(()));
        let bad = AddressSpec {
            address: "10.0.0.1".parse().unwrap(),
            dstaddr: Some("fd00::1".parse().unwrap()),
            prefix: 32,
        };
        assert_eq!(
            Change::AddAddress(bad).validate(),
            Err(ConfigError::Dstaddr)
        );
    }

    #[test]
    fn only_additions_claim_addresses() {
        let spec = AddressSpec {
            address: "10.1.0.2".parse().unwrap(),
            dstaddr: None,
            prefix: 24,
        };
        assert_eq!(
            Change::AddAddress(spec).claims(),
            vec![
                "10.1.0.2/32".parse().unwrap(),
                "10.1.0.0/24".parse().unwrap()
            ]
        );
        assert_eq!(
            Change::AddRoute(route("10.8.0.0/16")).claims(),
            vec!["10.8.0.0/16".parse().unwrap()]
        );
        assert!(Change::RemoveAddress(spec).claims().is_empty());
    }
}
