//! The validated description of a TUN device.
//!
//! Both creation paths (direct and through the server) build a
//! [`DeviceConfig`] and call [`DeviceConfig::validate`] before any privileged
//! call, so a bad request is refused the same way wherever it comes from.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cidr::{address_bits, Cidr};

/// Smallest MTU an IPv4 interface may have (RFC 791).
pub const MIN_MTU_V4: u32 = 68;
/// Smallest MTU an IPv6 interface may have (RFC 8200); below it the kernel
/// silently disables IPv6 on the interface.
pub const MIN_MTU_V6: u32 = 1280;
/// Largest MTU a TUN device accepts.
pub const MAX_MTU: u32 = 65535;
/// MTU used when the caller does not choose one (the kernel's TUN default).
pub const DEFAULT_MTU: u32 = 1500;
/// Interface names are at most this many bytes (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = 15;
/// Most queues (fds) one multi-queue device is made with: far beyond the
/// cores of a machine, and within what one SCM_RIGHTS message carries.
pub const MAX_QUEUES: u16 = 64;

/// What kind of device: TUN (IP packets) or TAP (Ethernet frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    #[default]
    Tun,
    Tap,
}

/// Everything needed to create and configure one TUN device. It is also
/// the body of a create request on the wire (see `protocol`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The device's own address.
    pub address: IpAddr,
    /// The point-to-point peer, routed through the device.
    pub dstaddr: Option<IpAddr>,
    /// Prefix length of the address (or of the peer, when there is one).
    pub prefix: u8,
    pub mtu: u32,
    /// Requested interface name; may contain one `%d` for the kernel to fill.
    pub name: Option<String>,
    /// Whether the link is brought up after configuration.
    pub up: bool,
    /// Queues (fds) of the device: more than one makes a multi-queue
    /// device (Linux `IFF_MULTI_QUEUE`), whose packets the kernel spreads
    /// over the queues by flow.
    pub queues: u16,
    pub mode: Mode,
    /// A TAP device's Ethernet address (the kernel picks one otherwise).
    pub mac: Option<[u8; 6]>,
    /// Whether the interface does IPv6 at all (no link-local address, no
    /// router solicitations or MLD reports when not).
    pub ipv6: bool,
    /// A TUN device with a `virtio_net_hdr` on each packet (Linux
    /// `IFF_VNET_HDR`), whose holder turns offloads on (see `offload`).
    pub offload: bool,
}

/// Names the option that made a configuration invalid. The names are the
/// option keys of the public Elixir API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigError {
    Address,
    Dstaddr,
    Netmask,
    Prefix,
    Mtu,
    Name,
    Queues,
    Mode,
    Mac,
    Ipv6,
    Offload,
    /// A route's destination.
    Route,
    Metric,
}

impl ConfigError {
    pub fn option_name(self) -> &'static str {
        match self {
            ConfigError::Address => "address",
            ConfigError::Dstaddr => "dstaddr",
            ConfigError::Netmask => "netmask",
            ConfigError::Prefix => "prefix",
            ConfigError::Mtu => "mtu",
            ConfigError::Name => "name",
            ConfigError::Queues => "queues",
            ConfigError::Mode => "mode",
            ConfigError::Mac => "mac",
            ConfigError::Ipv6 => "ipv6",
            ConfigError::Offload => "offload",
            ConfigError::Route => "route",
            ConfigError::Metric => "metric",
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid option {}", self.option_name())
    }
}

impl std::error::Error for ConfigError {}

impl DeviceConfig {
    /// A configuration with the defaults: host prefix, no peer, default MTU,
    /// a kernel-chosen name, brought up.
    pub fn new(address: IpAddr) -> Self {
        DeviceConfig {
            prefix: address_bits(&address),
            address,
            dstaddr: None,
            mtu: DEFAULT_MTU,
            name: None,
            up: true,
            queues: 1,
            mode: Mode::Tun,
            mac: None,
            ipv6: true,
            offload: false,
        }
    }

    /// The addresses a device made from this configuration takes (see
    /// `AddressSpec::claims`).
    pub fn claims(&self) -> Vec<Cidr> {
        self.address_spec().claims()
    }

    /// The device's address, as one it could be given later.
    pub fn address_spec(&self) -> AddressSpec {
        AddressSpec {
            address: self.address,
            dstaddr: self.dstaddr,
            prefix: self.prefix,
        }
    }

    /// Checks every field; the error names the first offending option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.address_spec().validate()?;
        let min_mtu = if self.address.is_ipv4() {
            MIN_MTU_V4
        } else {
            MIN_MTU_V6
        };
        if !(min_mtu..=MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Mtu);
        }
        if let Some(name) = &self.name {
            if !valid_interface_name(name) {
                return Err(ConfigError::Name);
            }
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(ConfigError::Queues);
        }
        if let Some(mac) = &self.mac {
            if self.mode != Mode::Tap || !usable_mac(mac) {
                return Err(ConfigError::Mac);
            }
        }
        if !self.ipv6 && self.address.is_ipv6() {
            return Err(ConfigError::Ipv6);
        }
        // Offload is for IP packets; TAP frames would need it per frame type.
        if self.offload && self.mode == Mode::Tap {
            return Err(ConfigError::Offload);
        }
        Ok(())
    }
}

/// A unicast, non-zero Ethernet address.
pub fn usable_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|&b| b != 0)
}

/// An address of an interface: its own address and either a peer (on a
/// point-to-point link) or a prefix (its network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpec {
    pub address: IpAddr,
    pub dstaddr: Option<IpAddr>,
    /// Prefix length of the address (or of the peer, when there is one).
    pub prefix: u8,
}

impl AddressSpec {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !usable_address(&self.address) {
            return Err(ConfigError::Address);
        }
        if let Some(dst) = &self.dstaddr {
            if dst.is_ipv4() != self.address.is_ipv4()
                || !usable_address(dst)
                || *dst == self.address
            {
                return Err(ConfigError::Dstaddr);
            }
        }
        if self.prefix > address_bits(&self.address) {
            return Err(ConfigError::Prefix);
        }
        Ok(())
    }

    /// The addresses an interface with this address takes: the address and
    /// its peer (each a host prefix), and the prefix the kernel routes
    /// through it, which is the peer's prefix for IPv4
    /// (`ip addr add A peer P/p` routes P/p) and the address's own for
    /// IPv6 (A/p, besides P/128). Duplicates are left out.
    pub fn claims(&self) -> Vec<Cidr> {
        let mut claims = vec![Cidr::host(self.address)];
        claims.extend(self.dstaddr.map(Cidr::host));
        let routed_from = match (self.address, self.dstaddr) {
            (IpAddr::V4(_), Some(peer)) => peer,
            _ => self.address,
        };
        if let Some(routed) = Cidr::new(routed_from, self.prefix) {
            if !claims.contains(&routed) {
                claims.push(routed);
            }
        }
        claims
    }
}

fn usable_address(addr: &IpAddr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast()) && *addr != IpAddr::from([255u8, 255, 255, 255])
}

/// Whether the kernel would accept `name` as an interface name (or name
/// template), restricted to printable ASCII so names survive every tool.
///
/// Linux refuses empty names, `.` and `..`, names of 16 bytes or more, and
/// names containing `/`, `:` or white space; a `%` must be a single `%d`.
pub fn valid_interface_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || name == "." || name == ".." {
        return false;
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_graphic() && b != b'/' && b != b':')
    {
        return false;
    }
    match name.find('%') {
        None => true,
        Some(i) => bytes.get(i + 1) == Some(&b'd') && !name[i + 2..].contains('%'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> IpAddr {
        s.parse::<Ipv4Addr>().map(IpAddr::V4).unwrap()
    }
    fn v6(s: &str) -> IpAddr {
        s.parse::<Ipv6Addr>().map(IpAddr::V6).unwrap()
    }

    #[test]
    fn an_invalid_option_is_named_by_its_elixir_key() {
        use ConfigError::*;
        let all = [
            Address, Dstaddr, Netmask, Prefix, Mtu, Name, Queues, Mode, Mac, Ipv6, Offload, Route,
            Metric,
        ];
        for error in all {
            // The Elixir API's keys are the variants' names, in lower case.
            assert_eq!(error.option_name(), format!("{error:?}").to_lowercase());
        }
        assert_eq!(Mtu.to_string(), "invalid option mtu");
    }

    #[test]
    fn defaults_are_valid_for_both_families() {
        assert_eq!(DeviceConfig::new(v4("10.0.0.1")).validate(), Ok(()));
        assert_eq!(DeviceConfig::new(v4("10.0.0.1")).prefix, 32);
        assert_eq!(DeviceConfig::new(v6("fd00::1")).validate(), Ok(()));
        assert_eq!(DeviceConfig::new(v6("fd00::1")).prefix, 128);
    }

    #[test]
    fn each_bad_field_names_its_option() {
        let base = DeviceConfig::new(v4("10.0.0.2"));
        let check = |f: &dyn Fn(&mut DeviceConfig), want| {
            let mut c = base.clone();
            f(&mut c);
            assert_eq!(c.validate(), Err(want), "{c:?}");
        };
        check(&|c| c.address = v4("0.0.0.0"), ConfigError::Address);
        check(&|c| c.address = v4("224.0.0.1"), ConfigError::Address);
        check(&|c| c.dstaddr = Some(v6("fd00::1")), ConfigError::Dstaddr);
        check(&|c| c.dstaddr = Some(v4("10.0.0.2")), ConfigError::Dstaddr);
        check(&|c| c.prefix = 33, ConfigError::Prefix);
        check(&|c| c.mtu = 67, ConfigError::Mtu);
        check(&|c| c.mtu = 65536, ConfigError::Mtu);
        check(&|c| c.name = Some("a".repeat(16)), ConfigError::Name);
        check(&|c| c.queues = 0, ConfigError::Queues);
        check(&|c| c.queues = MAX_QUEUES + 1, ConfigError::Queues);
        check(&|c| c.mac = Some([2, 0, 0, 0, 0, 1]), ConfigError::Mac);
        let mut tap = base.clone();
        tap.mode = Mode::Tap;
        tap.mac = Some([2, 0, 0, 0, 0, 1]);
        assert_eq!(tap.validate(), Ok(()));
        tap.mac = Some([1, 0, 0, 0, 0, 1]);
        assert_eq!(tap.validate(), Err(ConfigError::Mac), "multicast");
        tap.mac = Some([0; 6]);
        assert_eq!(tap.validate(), Err(ConfigError::Mac), "zero");

        let mut c6 = DeviceConfig::new(v6("fd00::2"));
        c6.mtu = 1279;
        assert_eq!(c6.validate(), Err(ConfigError::Mtu));
        c6.mtu = 1280;
        c6.prefix = 129;
        assert_eq!(c6.validate(), Err(ConfigError::Prefix));
        c6.prefix = 64;
        c6.ipv6 = false;
        assert_eq!(c6.validate(), Err(ConfigError::Ipv6));

        let mut tap_offload = base.clone();
        tap_offload.mode = Mode::Tap;
        tap_offload.offload = true;
        assert_eq!(tap_offload.validate(), Err(ConfigError::Offload));
    }

    #[test]
    fn claims_are_the_address_the_peer_and_the_routed_prefix() {
        let cidrs =
            |list: &[&str]| -> Vec<Cidr> { list.iter().map(|c| c.parse().unwrap()).collect() };
        let mut c = DeviceConfig::new(v4("10.60.0.2"));
        assert_eq!(c.claims(), cidrs(&["10.60.0.2/32"]));
        c.prefix = 24;
        assert_eq!(c.claims(), cidrs(&["10.60.0.2/32", "10.60.0.0/24"]));
        c.dstaddr = Some(v4("10.61.5.1"));
        assert_eq!(
            c.claims(),
            cidrs(&["10.60.0.2/32", "10.61.5.1/32", "10.61.5.0/24"])
        );
        c.prefix = 32;
        assert_eq!(c.claims(), cidrs(&["10.60.0.2/32", "10.61.5.1/32"]));

        let mut c6 = DeviceConfig::new(v6("fd01::2"));
        c6.dstaddr = Some(v6("fd05::1"));
        c6.prefix = 64;
        assert_eq!(
            c6.claims(),
            cidrs(&["fd01::2/128", "fd05::1/128", "fd01::/64"])
        );
        c6.prefix = 0;
        assert!(c6.claims().contains(&"::/0".parse().unwrap()));
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for ok in [
            "tun0",
            "tunvpn%d",
            "a",
            "x".repeat(15).as_str(),
            "my-tun_1.2",
        ] {
            assert!(valid_interface_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "a/b",
            "a:b",
            "tab\t",
            "%s",
            "a%d%d",
            "100%",
            "é",
            "x".repeat(16).as_str(),
        ] {
            assert!(!valid_interface_name(bad), "{bad:?}");
        }
    }
}
