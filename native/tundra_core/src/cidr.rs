//! IP prefixes (`10.8.0.0/16`, `fd00::/64`): the address ranges the server
//! delegates and the routes a device adds, compared as sets of addresses;
//! and the one home of address arithmetic (family widths, netmasks and
//! prefix lengths, addresses from bytes).
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A prefix: an address with its low bits cleared, and a length.
///
/// Every `Cidr` is normalised, however it was made: [`Cidr::new`] clears
/// host bits, while text ([`FromStr`]) and the wire (`Deserialize`) refuse
/// them through one constructor, [`Cidr::exact`], so a value from a client
/// can never carry host bits past the policy's comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "CidrParts", into = "CidrParts")]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

/// A `Cidr` as it travels: an address and a length, checked by
/// [`Cidr::exact`] on the way in. (The same two fields in the same order,
/// so the wire format is unchanged.)
#[derive(Serialize, Deserialize)]
struct CidrParts {
    network: IpAddr,
    len: u8,
}

impl TryFrom<CidrParts> for Cidr {
    type Error = ParseCidrError;

    fn try_from(parts: CidrParts) -> Result<Cidr, ParseCidrError> {
        Cidr::exact(parts.network, parts.len).ok_or(ParseCidrError)
    }
}

impl From<Cidr> for CidrParts {
    fn from(cidr: Cidr) -> CidrParts {
        CidrParts {
            network: cidr.network,
            len: cidr.len,
        }
    }
}

/// The address as a 128-bit number, IPv4 in the high 32 bits so that
/// prefix arithmetic is the same for both families.
fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)) << 96,
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Number of bits in an address of this family.
pub fn address_bits(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// An address from its 4 (IPv4) or 16 (IPv6) bytes in network order.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The prefix length of a contiguous netmask, or `None` if the mask has a
/// hole in it (e.g. `255.0.255.0`).
pub fn prefix_from_netmask(netmask: IpAddr) -> Option<u8> {
    let value = bits(&netmask);
    // In the 128-bit form an IPv4 mask's low 96 bits are zero too.
    let ones = u8::try_from(value.leading_ones()).ok()?;
    (value == mask(ones)).then_some(ones)
}

/// The netmask with `prefix` leading ones, in the family of `like`.
pub fn netmask_from_prefix(prefix: u8, like: &IpAddr) -> IpAddr {
    from_bits(mask(prefix.min(address_bits(like))), like)
}

fn from_bits(value: u128, like: &IpAddr) -> IpAddr {
    match like {
        // The low 96 bits are zero for an IPv4 value; the shift keeps the top 32.
        IpAddr::V4(_) => IpAddr::from(((value >> 96) as u32).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(value.to_be_bytes()),
    }
}

impl Cidr {
    /// The prefix of length `len` that contains `addr` (host bits cleared);
    /// `None` if `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let width = address_bits(&addr);
        if len > width {
            return None;
        }
        // In the 128-bit form an IPv4 prefix of `len` is `len` high bits.
        let network = from_bits(bits(&addr) & mask(len), &addr);
        Some(Cidr { network, len })
    }

    /// The prefix `addr`/`len` exactly as written: `None` if `len` is
    /// longer than the address or `addr` has host bits set (`10.8.0.1/16`
    /// is refused: a range is written as its network, so a typo cannot
    /// widen it, and a client cannot slip past a comparison).
    pub fn exact(addr: IpAddr, len: u8) -> Option<Cidr> {
        Cidr::new(addr, len).filter(|cidr| cidr.network == addr)
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            network: addr,
            len: address_bits(&addr),
        }
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this prefix is all addresses of its family (a default route).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        addr.is_ipv4() == self.network.is_ipv4()
            && bits(addr) & mask(self.len) == bits(&self.network)
    }

    /// Whether every address of `other` is in this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(&other.network)
    }

    /// Whether the two prefixes share an address (one covers the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCidrError;

impl fmt::Display for ParseCidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an address range such as 10.8.0.0/16 or fd00::/64")
    }
}

impl std::error::Error for ParseCidrError {}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    /// `ADDRESS/LENGTH`, as [`Cidr::exact`] takes it.
    fn from_str(text: &str) -> Result<Cidr, ParseCidrError> {
        let (addr, len) = text.split_once('/').ok_or(ParseCidrError)?;
        let addr: IpAddr = addr.parse().map_err(|_| ParseCidrError)?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseCidrError);
        }
        let len: u8 = len.parse().map_err(|_| ParseCidrError)?;
        Cidr::exact(addr, len).ok_or(ParseCidrError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Cidr {
        text.parse().expect(text)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn netmask_prefix_round_trip() {
        assert_eq!(prefix_from_netmask(ip("255.255.255.0")), Some(24));
        assert_eq!(prefix_from_netmask(ip("255.255.255.255")), Some(32));
        assert_eq!(prefix_from_netmask(ip("0.0.0.0")), Some(0));
        assert_eq!(prefix_from_netmask(ip("ffff:ffff:ffff:ffff::")), Some(64));
        assert_eq!(prefix_from_netmask(ip("::")), Some(0));
        assert_eq!(
            prefix_from_netmask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(128)
        );
        for p in 0..=32u8 {
            let mask = netmask_from_prefix(p, &ip("1.2.3.4"));
            assert_eq!(prefix_from_netmask(mask), Some(p));
        }
        for p in 0..=128u8 {
            let mask = netmask_from_prefix(p, &ip("::1"));
            assert_eq!(prefix_from_netmask(mask), Some(p));
        }
    }

    #[test]
    fn non_contiguous_netmask_is_refused() {
        assert_eq!(prefix_from_netmask(ip("255.0.255.0")), None);
        assert_eq!(prefix_from_netmask(ip("0.255.255.255")), None);
        assert_eq!(prefix_from_netmask(ip("ffff::ffff")), None);
    }

    #[test]
    fn parses_networks_and_refuses_host_bits_and_junk() {
        assert_eq!(c("10.8.0.0/16").to_string(), "10.8.0.0/16");
        assert_eq!(c("fd00::/64").to_string(), "fd00::/64");
        assert_eq!(c("0.0.0.0/0").prefix_len(), 0);
        for bad in [
            "10.8.0.1/16",
            "10.8.0.0/33",
            "fd00::/129",
            "10.8.0.0",
            "10.8.0.0/",
            "10.8.0.0/+8",
            "10.0.0.0/+8",
            "10.8.0.0/ 8",
            "x/8",
            "/8",
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(ParseCidrError), "{bad}");
        }
    }

    #[test]
    fn a_parse_error_says_what_was_expected() {
        assert_eq!(
            ParseCidrError.to_string(),
            "expected an address range such as 10.8.0.0/16 or fd00::/64"
        );
    }

    #[test]
    fn new_clears_host_bits() {
        assert_eq!(Cidr::new(ip("10.8.3.7"), 16), Some(c("10.8.0.0/16")));
        assert_eq!(Cidr::new(ip("10.8.3.7"), 0), Some(c("0.0.0.0/0")));
        assert_eq!(Cidr::new(ip("fd00::1:2"), 64), Some(c("fd00::/64")));
        assert_eq!(Cidr::new(ip("10.8.3.7"), 33), None);
        assert_eq!(Cidr::host(ip("10.8.3.7")), c("10.8.3.7/32"));
    }

    #[test]
    fn the_wire_refuses_what_text_refuses() {
        // What a hostile client could put in a frame: the same two fields,
        // host bits set or a length past the family's.
        for (addr, len) in [
            ("fd11:b7b7:4360::1", 48),
            ("fd50::1", 16),
            ("10.8.0.1", 16),
            ("10.8.0.0", 33),
            ("fd00::", 129),
        ] {
            let raw = postcard::to_stdvec(&CidrParts {
                network: ip(addr),
                len,
            })
            .expect("encode");
            assert!(
                postcard::from_bytes::<Cidr>(&raw).is_err(),
                "{addr}/{len} was accepted"
            );
        }
        for text in ["fd11:b7b7:4360::/48", "10.8.0.0/16", "0.0.0.0/0", "::/0"] {
            let raw = postcard::to_stdvec(&c(text)).expect("encode");
            assert_eq!(postcard::from_bytes::<Cidr>(&raw), Ok(c(text)));
        }
    }

    #[test]
    fn containment_and_overlap() {
        let net = c("10.8.0.0/16");
        assert!(net.contains(&ip("10.8.255.1")));
        assert!(!net.contains(&ip("10.9.0.1")));
        assert!(!net.contains(&ip("::a08:1")), "families never mix");
        assert!(net.covers(&c("10.8.4.0/24")));
        assert!(!net.covers(&c("10.0.0.0/8")));
        assert!(net.overlaps(&c("10.0.0.0/8")));
        assert!(net.overlaps(&c("10.8.4.4/32")));
        assert!(!net.overlaps(&c("10.9.0.0/16")));
        assert!(c("0.0.0.0/0").covers(&net));
        assert!(!c("::/0").overlaps(&net));
        assert!(c("fd00::/8").covers(&c("fd50::9/128")));
        assert!(!c("fd00::/8").covers(&c("fe80::/64")));
        assert!(c("0.0.0.0/0").is_default());
    }

    #[test]
    fn a_prefix_covers_itself_and_what_lies_inside_it_only() {
        let net = c("10.8.0.0/16");
        assert!(net.covers(&net), "itself");
        assert!(net.covers(&c("10.8.255.255/32")), "its last address");
        assert!(net.covers(&c("10.8.0.0/17")));
        assert!(
            !c("10.8.0.0/17").covers(&net),
            "a longer prefix never covers"
        );
        assert!(
            !net.covers(&c("10.9.0.0/16")),
            "a neighbour of the same length"
        );
        assert!(!net.covers(&c("10.7.255.255/32")), "just below");
        assert!(
            !c("10.8.0.0/16").covers(&c("::a08:0/112")),
            "families never mix"
        );
        let v6 = c("fd11:b7b7:4360::/48");
        assert!(v6.covers(&c("fd11:b7b7:4360:2::/64")));
        assert!(!v6.covers(&c("fd11:b7b7:4361::/64")));
        assert!(!c("fd11:b7b7:4360:2::/64").covers(&v6));
        // Overlap is covering, one way or the other.
        assert!(c("fd11:b7b7:4360:2::/64").overlaps(&v6));
        assert!(v6.overlaps(&c("fd11:b7b7:4360:2::/64")));
        for default in ["0.0.0.0/0", "::/0"] {
            assert!(c(default).is_default(), "{default}");
        }
        for not_default in ["0.0.0.0/1", "128.0.0.0/1", "::/1", "10.8.0.0/16"] {
            assert!(!c(not_default).is_default(), "{not_default}");
        }
    }
}
