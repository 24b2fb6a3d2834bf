//! utun: interface names, ioctl request numbers, and the structs the
//! ioctls and `connect` take (`<sys/kern_control.h>`, `<net/if.h>`,
//! `<netinet6/in6_var.h>`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::plan::AliasSpec;
use crate::cidr::netmask_from_prefix;
use crate::framing::{DARWIN_AF_INET, DARWIN_AF_INET6};

/// The kernel control that makes utun devices.
pub const UTUN_CONTROL_NAME: &str = "com.apple.net.utun_control";
/// `getsockopt` option (level `SYSPROTO_CONTROL`) giving the interface name.
pub const UTUN_OPT_IFNAME: i32 = 2;
pub const SYSPROTO_CONTROL: i32 = 2;
pub const AF_SYSTEM: u8 = 32;
pub const AF_SYS_CONTROL: u16 = 2;
/// `IN6_IFF_NODAD`: no duplicate address detection (as Linux's NODAD).
pub const IN6_IFF_NODAD: i32 = 0x0020;
const ND6_INFINITE_LIFETIME: u32 = 0xFFFF_FFFF;
pub const IFF_UP: i16 = 0x1;

const IFNAMSIZ: usize = 16;
const MAX_KCTL_NAME: usize = 96;

pub const CTL_INFO_LEN: usize = 4 + MAX_KCTL_NAME;
pub const SOCKADDR_CTL_LEN: usize = 32;
pub const IFREQ_LEN: usize = 32;
pub const IFALIASREQ_LEN: usize = 64;
pub const IN6_ALIASREQ_LEN: usize = 128;
pub const SOCKADDR_IN_LEN: usize = 16;
pub const SOCKADDR_IN6_LEN: usize = 28;

// BSD ioctl numbers: direction, parameter size, group, number.
const IOC_OUT: u32 = 0x4000_0000;
const IOC_IN: u32 = 0x8000_0000;
const IOC_INOUT: u32 = IOC_IN | IOC_OUT;

const fn ioc(direction: u32, group: u8, number: u8, len: usize) -> u32 {
    direction | ((len as u32 & 0x1FFF) << 16) | ((group as u32) << 8) | number as u32
}

pub const CTLIOCGINFO: u32 = ioc(IOC_INOUT, b'N', 3, CTL_INFO_LEN);
pub const SIOCAIFADDR: u32 = ioc(IOC_IN, b'i', 26, IFALIASREQ_LEN);
pub const SIOCAIFADDR_IN6: u32 = ioc(IOC_IN, b'i', 26, IN6_ALIASREQ_LEN);
pub const SIOCSIFFLAGS: u32 = ioc(IOC_IN, b'i', 16, IFREQ_LEN);
pub const SIOCGIFFLAGS: u32 = ioc(IOC_INOUT, b'i', 17, IFREQ_LEN);
pub const SIOCSIFMTU: u32 = ioc(IOC_IN, b'i', 52, IFREQ_LEN);
pub const SIOCGIFMTU: u32 = ioc(IOC_INOUT, b'i', 51, IFREQ_LEN);

/// The `sc_unit` to connect to for a requested name: `utunN` is unit
/// N + 1; no name, or `utun%d`, is 0 (the kernel picks a free one).
/// `None` for names utun cannot have.
pub fn unit_for_name(name: Option<&str>) -> Option<u32> {
    match name {
        None | Some("utun%d") => Some(0),
        Some(name) => {
            let digits = name.strip_prefix("utun")?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if digits.len() > 1 && digits.starts_with('0') {
                return None;
            }
            digits.parse::<u32>().ok()?.checked_add(1)
        }
    }
}

/// A NUL-terminated name as the kernel writes it, up to its first NUL.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub(super) fn put_name(buf: &mut [u8], name: &str, room: usize) {
    for (dst, src) in buf[..room - 1].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
}

/// `struct ctl_info` asking for the id of `UTUN_CONTROL_NAME`.
pub fn ctl_info_request() -> [u8; CTL_INFO_LEN] {
    let mut buf = [0u8; CTL_INFO_LEN];
    put_name(&mut buf[4..], UTUN_CONTROL_NAME, MAX_KCTL_NAME);
    buf
}

/// The `ctl_id` the kernel filled into a `ctl_info`.
pub fn ctl_id(info: &[u8; CTL_INFO_LEN]) -> u32 {
    u32::from_ne_bytes([info[0], info[1], info[2], info[3]])
}

/// `struct sockaddr_ctl` for `connect`.
pub fn sockaddr_ctl(ctl_id: u32, unit: u32) -> [u8; SOCKADDR_CTL_LEN] {
    let mut buf = [0u8; SOCKADDR_CTL_LEN];
    buf[0] = SOCKADDR_CTL_LEN as u8;
    buf[1] = AF_SYSTEM;
    buf[2..4].copy_from_slice(&AF_SYS_CONTROL.to_ne_bytes());
    buf[4..8].copy_from_slice(&ctl_id.to_ne_bytes());
    buf[8..12].copy_from_slice(&unit.to_ne_bytes());
    buf
}

/// `struct sockaddr_in` for `addr` (port 0).
pub fn sockaddr_in(addr: Ipv4Addr) -> [u8; SOCKADDR_IN_LEN] {
    let mut buf = [0u8; SOCKADDR_IN_LEN];
    buf[0] = SOCKADDR_IN_LEN as u8;
    buf[1] = DARWIN_AF_INET as u8;
    buf[4..8].copy_from_slice(&addr.octets());
    buf
}

/// `struct sockaddr_in6` for `addr` (port, flow and scope 0).
pub fn sockaddr_in6(addr: Ipv6Addr) -> [u8; SOCKADDR_IN6_LEN] {
    let mut buf = [0u8; SOCKADDR_IN6_LEN];
    buf[0] = SOCKADDR_IN6_LEN as u8;
    buf[1] = DARWIN_AF_INET6 as u8;
    buf[8..24].copy_from_slice(&addr.octets());
    buf
}

/// `struct ifreq` naming `name`, with `value` (an MTU or flags) as its
/// union's first member.
pub fn ifreq_int(name: &str, value: i32) -> [u8; IFREQ_LEN] {
    let mut buf = [0u8; IFREQ_LEN];
    put_name(&mut buf, name, IFNAMSIZ);
    buf[16..20].copy_from_slice(&value.to_ne_bytes());
    buf
}

/// The MTU an `SIOCGIFMTU` wrote into an `ifreq`.
pub fn ifreq_mtu(req: &[u8; IFREQ_LEN]) -> i32 {
    i32::from_ne_bytes([req[16], req[17], req[18], req[19]])
}

/// The flags an `SIOCGIFFLAGS` wrote into an `ifreq` (a `short`).
pub fn ifreq_flags(req: &[u8; IFREQ_LEN]) -> i16 {
    i16::from_ne_bytes([req[16], req[17]])
}

/// The `ifreq` for `SIOCSIFFLAGS` setting `flags`.
pub fn ifreq_with_flags(name: &str, flags: i16) -> [u8; IFREQ_LEN] {
    let mut buf = [0u8; IFREQ_LEN];
    put_name(&mut buf, name, IFNAMSIZ);
    buf[16..18].copy_from_slice(&flags.to_ne_bytes());
    buf
}

/// The request that adds an address to interface `name`: an `ifaliasreq`
/// (`SIOCAIFADDR`) for IPv4, an `in6_aliasreq` (`SIOCAIFADDR_IN6`, no
/// DAD, infinite lifetimes) for IPv6. The destination, when there is one,
/// goes in the destination field.
pub enum AliasRequest {
    V4([u8; IFALIASREQ_LEN]),
    V6([u8; IN6_ALIASREQ_LEN]),
}

/// `None` when the destination is of the other family.
pub fn alias_request(name: &str, alias: &AliasSpec) -> Option<AliasRequest> {
    let mask = netmask_from_prefix(alias.prefix, &alias.address);
    match (alias.address, alias.destination, mask) {
        (IpAddr::V4(addr), destination, IpAddr::V4(mask)) => {
            let destination = match destination {
                None => None,
                Some(IpAddr::V4(d)) => Some(d),
                Some(IpAddr::V6(_)) => return None,
            };
            let mut buf = [0u8; IFALIASREQ_LEN];
            put_name(&mut buf, name, IFNAMSIZ);
            buf[16..32].copy_from_slice(&sockaddr_in(addr));
            if let Some(destination) = destination {
                buf[32..48].copy_from_slice(&sockaddr_in(destination));
            }
            buf[48..64].copy_from_slice(&sockaddr_in(mask));
            Some(AliasRequest::V4(buf))
        }
        (IpAddr::V6(addr), destination, IpAddr::V6(mask)) => {
            let destination = match destination {
                None => None,
                Some(IpAddr::V6(d)) => Some(d),
                Some(IpAddr::V4(_)) => return None,
            };
            let mut buf = [0u8; IN6_ALIASREQ_LEN];
            put_name(&mut buf, name, IFNAMSIZ);
            buf[16..44].copy_from_slice(&sockaddr_in6(addr));
            if let Some(destination) = destination {
                buf[44..72].copy_from_slice(&sockaddr_in6(destination));
            }
            buf[72..100].copy_from_slice(&sockaddr_in6(mask));
            buf[100..104].copy_from_slice(&IN6_IFF_NODAD.to_ne_bytes());
            // in6_addrlifetime: expire, preferred (time_t, 0 = none),
            // then the valid and preferred lifetimes.
            buf[120..124].copy_from_slice(&ND6_INFINITE_LIFETIME.to_ne_bytes());
            buf[124..128].copy_from_slice(&ND6_INFINITE_LIFETIME.to_ne_bytes());
            Some(AliasRequest::V6(buf))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_darwins_headers() {
        // The values <sys/sockio.h> and <sys/kern_control.h> expand to.
        assert_eq!(CTLIOCGINFO, 0xC064_4E03);
        assert_eq!(SIOCAIFADDR, 0x8040_691A);
        assert_eq!(SIOCAIFADDR_IN6, 0x8080_691A);
        assert_eq!(SIOCSIFFLAGS, 0x8020_6910);
        assert_eq!(SIOCGIFFLAGS, 0xC020_6911);
        assert_eq!(SIOCSIFMTU, 0x8020_6934);
        assert_eq!(SIOCGIFMTU, 0xC020_6933);
    }

    #[test]
    fn names_map_to_units() {
        assert_eq!(unit_for_name(None), Some(0));
        assert_eq!(unit_for_name(Some("utun%d")), Some(0));
        assert_eq!(unit_for_name(Some("utun0")), Some(1));
        assert_eq!(unit_for_name(Some("utun12")), Some(13));
        for bad in [
            "tun0",
            "utun",
            "utun01",
            "utunx",
            "utun-1",
            "utun99999999999",
        ] {
            assert_eq!(unit_for_name(Some(bad)), None, "{bad}");
        }
        assert_eq!(name_from_bytes(b"utun3\0garbage"), "utun3");
    }

    #[test]
    fn control_requests_are_packed() {
        let info = ctl_info_request();
        assert_eq!(&info[..4], &[0; 4]);
        assert_eq!(&info[4..30], UTUN_CONTROL_NAME.as_bytes());
        assert!(info[30..].iter().all(|&b| b == 0));

        let mut filled = info;
        filled[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(ctl_id(&filled), 7);

        let addr = sockaddr_ctl(7, 4);
        assert_eq!(addr[0], 32);
        assert_eq!(addr[1], 32);
        assert_eq!(&addr[2..4], &2u16.to_ne_bytes());
        assert_eq!(&addr[4..8], &7u32.to_ne_bytes());
        assert_eq!(&addr[8..12], &4u32.to_ne_bytes());
        assert!(addr[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ifreqs_carry_name_and_value() {
        let req = ifreq_int("utun3", 1400);
        assert_eq!(&req[..6], b"utun3\0");
        assert_eq!(ifreq_mtu(&req), 1400);
        let up = ifreq_with_flags("utun3", IFF_UP | 0x10);
        assert_eq!(ifreq_flags(&up), 0x11);
        // A name is cut to fit with its NUL.
        let long = ifreq_int("a-very-long-interface-name", 1);
        assert_eq!(name_from_bytes(&long[..16]).len(), 15);
    }

    fn alias(address: &str, destination: Option<&str>, prefix: u8) -> AliasSpec {
        AliasSpec {
            address: address.parse().unwrap(),
            destination: destination.map(|d| d.parse().unwrap()),
            prefix,
        }
    }

    #[test]
    fn ipv4_alias_has_address_peer_and_mask() {
        let Some(AliasRequest::V4(req)) =
            alias_request("utun4", &alias("10.1.2.3", Some("10.1.2.1"), 32))
        else {
            panic!("expected an IPv4 request");
        };
        assert_eq!(name_from_bytes(&req[..16]), "utun4");
        assert_eq!(&req[16..24], &[16, 2, 0, 0, 10, 1, 2, 3]);
        assert_eq!(&req[32..40], &[16, 2, 0, 0, 10, 1, 2, 1]);
        assert_eq!(&req[48..56], &[16, 2, 0, 0, 255, 255, 255, 255]);
    }

    #[test]
    fn ipv6_alias_has_prefix_mask_nodad_and_infinite_lifetimes() {
        let Some(AliasRequest::V6(req)) = alias_request("utun5", &alias("fd00::2", None, 64))
        else {
            panic!("expected an IPv6 request");
        };
        assert_eq!(&req[16..18], &[28, 30]);
        assert_eq!(&req[24..26], &[0xFD, 0]);
        assert_eq!(req[39], 2);
        // No peer: the destination is left empty.
        assert!(req[44..72].iter().all(|&b| b == 0));
        assert_eq!(&req[72..74], &[28, 30]);
        assert_eq!(&req[80..88], &[0xFF; 8]);
        assert_eq!(&req[88..96], &[0; 8]);
        assert_eq!(&req[100..104], &IN6_IFF_NODAD.to_ne_bytes());
        assert_eq!(&req[120..128], &[0xFF; 8]);
    }

    #[test]
    fn a_peerless_ipv4_alias_has_its_own_address_as_destination() {
        // What `plan` asks for a plain `create("10.0.0.2", prefix: 24)`:
        // utun is point-to-point, and in.c refuses an IPv4 alias without
        // a destination there (EDESTADDRREQ).
        let config = crate::DeviceConfig {
            prefix: 24,
            ..crate::DeviceConfig::new("10.0.0.2".parse().unwrap())
        };
        let planned = super::super::plan::plan(&config);
        let Some(AliasRequest::V4(req)) = alias_request("utun6", &planned.alias) else {
            panic!("expected an IPv4 request");
        };
        assert_eq!(&req[16..24], &[16, 2, 0, 0, 10, 0, 0, 2]);
        assert_eq!(&req[32..40], &[16, 2, 0, 0, 10, 0, 0, 2]);
        assert_eq!(&req[48..56], &[16, 2, 0, 0, 255, 255, 255, 0]);
    }

    #[test]
    fn an_ipv6_alias_with_a_peer_has_a_host_mask() {
        // in6.c refuses a destination with any mask but /128 (EINVAL).
        let config = crate::DeviceConfig {
            dstaddr: Some("fd00::1".parse().unwrap()),
            prefix: 64,
            ..crate::DeviceConfig::new("fd00::2".parse().unwrap())
        };
        let planned = super::super::plan::plan(&config);
        let Some(AliasRequest::V6(req)) = alias_request("utun7", &planned.alias) else {
            panic!("expected an IPv6 request");
        };
        assert_eq!(&req[44..46], &[28, 30]);
        assert_eq!(&req[52..54], &[0xFD, 0]);
        assert_eq!(req[67], 1);
        assert_eq!(&req[80..96], &[0xFF; 16]);
    }

    #[test]
    fn mixed_families_are_refused() {
        assert!(alias_request("utun0", &alias("10.0.0.2", Some("fd00::1"), 32)).is_none());
    }
}
