//! The 0.x wire protocol, which `tundra_server` still serves so that 0.x C
//! clients keep working: a fixed C-struct create request and reply, laid
//! out as on x86_64 and aarch64 Linux (native byte order, both ends on
//! one machine).
//!
//! Request, 160 bytes: `u32` type (0 = create), 4 bytes padding, `u64`
//! size (152), three 46-byte NUL-terminated address strings (address,
//! peer, netmask), 2 bytes padding, `i32` MTU. Reply, 32 bytes: `u32`
//! type, 4 bytes padding, `u64` size (24), a 16-byte NUL-terminated
//! interface name; the device fd rides along as SCM_RIGHTS. Those devices
//! carry the 4-byte packet-information header.
//!
//! A request's first four bytes are its type, so a create starts with four
//! zero bytes; a current frame starts with `TNDR` (see `protocol`).
#![forbid(unsafe_code)]

use std::net::IpAddr;

use crate::cidr::{address_bits, prefix_from_netmask};
use crate::config::DEFAULT_MTU;
use crate::{ConfigError, DeviceConfig};

pub const REQUEST_LEN: usize = 160;
pub const REPLY_LEN: usize = 32;
/// First bytes of a 0.x create request: its type, 0.
pub const CREATE_PREFIX: [u8; 4] = 0u32.to_ne_bytes();

const TYPE_CREATE: u32 = 0;
const REQUEST_SIZE: u64 = 152;
const REPLY_SIZE: u64 = 24;
const ADDR_LEN: usize = 46;
const NAME_LEN: usize = 16;
const ADDR_AT: usize = 16;
const DSTADDR_AT: usize = ADDR_AT + ADDR_LEN;
const NETMASK_AT: usize = DSTADDR_AT + ADDR_LEN;
const MTU_AT: usize = 156;

/// Why a 0.x request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyError {
    /// Not a create request, or its size field is not 152.
    Malformed,
    /// A field is unusable; names it as the current API does.
    Invalid(ConfigError),
}

fn text(field: &[u8]) -> Result<&str, LegacyError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(LegacyError::Malformed)?;
    std::str::from_utf8(&field[..end]).map_err(|_| LegacyError::Malformed)
}

fn address(field: &[u8], option: ConfigError) -> Result<Option<IpAddr>, LegacyError> {
    match text(field)? {
        "" => Ok(None),
        s => s
            .parse()
            .map(Some)
            .map_err(|_| LegacyError::Invalid(option)),
    }
}

/// The device a 0.x create request asks for. An empty peer means none, an
/// empty netmask the full host prefix, an MTU of 0 the default (1500).
pub fn parse_request(bytes: &[u8; REQUEST_LEN]) -> Result<DeviceConfig, LegacyError> {
    let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let kind = u32::from_ne_bytes(word(0));
    let mut size = [0u8; 8];
    size.copy_from_slice(&bytes[8..16]);
    if kind != TYPE_CREATE || u64::from_ne_bytes(size) != REQUEST_SIZE {
        return Err(LegacyError::Malformed);
    }
    let addr = address(&bytes[ADDR_AT..DSTADDR_AT], ConfigError::Address)?
        .ok_or(LegacyError::Invalid(ConfigError::Address))?;
    let mut config = DeviceConfig::new(addr);
    config.dstaddr = address(&bytes[DSTADDR_AT..NETMASK_AT], ConfigError::Dstaddr)?;
    config.prefix = match address(
        &bytes[NETMASK_AT..NETMASK_AT + ADDR_LEN],
        ConfigError::Netmask,
    )? {
        None => address_bits(&addr),
        Some(mask) if mask.is_ipv4() == addr.is_ipv4() => {
            prefix_from_netmask(mask).ok_or(LegacyError::Invalid(ConfigError::Netmask))?
        }
        Some(_) => return Err(LegacyError::Invalid(ConfigError::Netmask)),
    };
    config.mtu = match i32::from_ne_bytes(word(MTU_AT)) {
        0 => DEFAULT_MTU,
        mtu => u32::try_from(mtu).map_err(|_| LegacyError::Invalid(ConfigError::Mtu))?,
    };
    config
        .validate()
        .map_err(LegacyError::Invalid)
        .map(|()| config)
}

/// The reply to a served create request, naming the device.
pub fn encode_reply(name: &str) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    reply[..4].copy_from_slice(&TYPE_CREATE.to_ne_bytes());
    reply[8..16].copy_from_slice(&REPLY_SIZE.to_ne_bytes());
    for (dst, src) in reply[16..16 + NAME_LEN - 1].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_and_terminated_in_the_reply() {
        let reply = encode_reply("tun_with_a_very_long_name");
        let field = &reply[16..16 + NAME_LEN];
        assert_eq!(
            &field[..NAME_LEN - 1],
            &b"tun_with_a_very_long_name"[..NAME_LEN - 1]
        );
        assert_eq!(field[NAME_LEN - 1], 0, "NUL-terminated");
        assert_eq!(&encode_reply("tun3")[16..21], b"tun3\0");
    }

    /// A request as a 0.x client lays it out.
    fn request(addr: &str, dstaddr: &str, netmask: &str, mtu: i32) -> [u8; REQUEST_LEN] {
        let mut r = [0u8; REQUEST_LEN];
        r[8..16].copy_from_slice(&152u64.to_ne_bytes());
        for (at, s) in [(16, addr), (62, dstaddr), (108, netmask)] {
            r[at..at + s.len()].copy_from_slice(s.as_bytes());
        }
        r[156..160].copy_from_slice(&mtu.to_ne_bytes());
        r
    }

    #[test]
    fn a_create_request_becomes_a_config() {
        let config = parse_request(&request("fd00:1::2", "fd00:1::1", "ffff:ffff::", 1400));
        let config = config.expect("valid");
        assert_eq!(config.address, "fd00:1::2".parse::<IpAddr>().unwrap());
        assert_eq!(config.dstaddr, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(config.prefix, 32);
        assert_eq!(config.mtu, 1400);
        assert_eq!(config.name, None);
        assert!(config.up);
        assert_eq!(&request("::1", "", "", 0)[..4], &CREATE_PREFIX);
    }

    #[test]
    fn empty_fields_take_defaults_and_ipv4_works_too() {
        let config = parse_request(&request("10.7.0.2", "", "", 0)).expect("valid");
        assert_eq!(config.dstaddr, None);
        assert_eq!(config.prefix, 32);
        assert_eq!(config.mtu, 1500);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let mut wrong_type = request("fd00::2", "", "", 0);
        wrong_type[0] = 1;
        assert_eq!(parse_request(&wrong_type), Err(LegacyError::Malformed));
        let mut wrong_size = request("fd00::2", "", "", 0);
        wrong_size[8] = 151;
        assert_eq!(parse_request(&wrong_size), Err(LegacyError::Malformed));
        let mut unterminated = request("fd00::2", "", "", 0);
        unterminated[16..62].fill(b'1');
        assert_eq!(parse_request(&unterminated), Err(LegacyError::Malformed));

        let invalid = |r| match parse_request(&r) {
            Err(LegacyError::Invalid(option)) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        };
        assert_eq!(invalid(request("", "", "", 0)), ConfigError::Address);
        assert_eq!(invalid(request("nope", "", "", 0)), ConfigError::Address);
        assert_eq!(
            invalid(request("fd00::2", "x", "", 0)),
            ConfigError::Dstaddr
        );
        assert_eq!(
            invalid(request("fd00::2", "", "ffff::ff", 0)),
            ConfigError::Netmask
        );
        assert_eq!(
            invalid(request("fd00::2", "", "255.0.0.0", 0)),
            ConfigError::Netmask
        );
        assert_eq!(invalid(request("fd00::2", "", "", -1)), ConfigError::Mtu);
        assert_eq!(invalid(request("fd00::2", "", "", 1000)), ConfigError::Mtu);
    }

    #[test]
    fn the_reply_names_the_device() {
        let reply = encode_reply("tun7");
        assert_eq!(&reply[..4], &0u32.to_ne_bytes());
        assert_eq!(&reply[4..8], &[0; 4]);
        assert_eq!(&reply[8..16], &24u64.to_ne_bytes());
        assert_eq!(&reply[16..21], b"tun7\0");
        assert!(reply[21..].iter().all(|&b| b == 0));
    }
}
