//! Routing-socket (`PF_ROUTE`) messages: a route through an interface, as
//! `route add -net DST/LEN -interface utunN` asks for it (`<net/route.h>`,
//! `<net/if_dl.h>`): an `rt_msghdr`, then the destination, the interface's
//! link-level address as gateway, and the netmask, each a sockaddr padded
//! to 4 bytes (all three already are).

use std::net::IpAddr;

use super::utun::{put_name, sockaddr_in, sockaddr_in6};
use crate::cidr::netmask_from_prefix;
use crate::cidr::Cidr;

pub const RTM_VERSION: u8 = 5;
pub const RTM_ADD: u8 = 0x1;
pub const RTF_UP: i32 = 0x1;
pub const RTF_HOST: i32 = 0x4;
pub const RTF_STATIC: i32 = 0x800;
pub const RTA_DST: i32 = 0x1;
pub const RTA_GATEWAY: i32 = 0x2;
pub const RTA_NETMASK: i32 = 0x4;
/// `sizeof(struct rt_msghdr)`: 36 bytes of header, then `rt_metrics`
/// (14 32-bit fields).
pub const RT_MSGHDR_LEN: usize = 92;
const AF_LINK: u8 = 18;
/// `sizeof(struct sockaddr_dl)`, with its 12 bytes of `sdl_data`.
pub const SOCKADDR_DL_LEN: usize = 20;

/// `struct sockaddr_dl` naming interface `index` (and `name`, when it
/// fits `sdl_data`; the kernel finds the interface by index).
pub fn sockaddr_dl(index: u16, name: &str) -> [u8; SOCKADDR_DL_LEN] {
    let mut buf = [0u8; SOCKADDR_DL_LEN];
    buf[0] = SOCKADDR_DL_LEN as u8;
    buf[1] = AF_LINK;
    buf[2..4].copy_from_slice(&index.to_ne_bytes());
    // sdl_type stays 0; sdl_alen and sdl_slen are 0: no link address.
    if name.len() <= 12 {
        buf[5] = name.len() as u8;
        put_name(&mut buf[8..], name, 13);
    }
    buf
}

fn sockaddr(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => sockaddr_in(a).to_vec(),
        IpAddr::V6(a) => sockaddr_in6(a).to_vec(),
    }
}

/// The `RTM_ADD` message routing `dst` through interface `index`
/// (`name`), with sequence number `seq`: `RTF_UP | RTF_STATIC`, and
/// `RTF_HOST` with no netmask for a host route.
pub fn add_route(seq: i32, dst: &Cidr, index: u16, name: &str) -> Vec<u8> {
    let network = dst.network();
    let host = dst.prefix_len() == crate::cidr::address_bits(&network);
    let mut addrs = RTA_DST | RTA_GATEWAY;
    let mut flags = RTF_UP | RTF_STATIC;
    let mut body = sockaddr(network);
    body.extend_from_slice(&sockaddr_dl(index, name));
    if host {
        flags |= RTF_HOST;
    } else {
        addrs |= RTA_NETMASK;
        body.extend(sockaddr(netmask_from_prefix(dst.prefix_len(), &network)));
    }
    let len = RT_MSGHDR_LEN + body.len();
    let mut msg = vec![0u8; RT_MSGHDR_LEN];
    msg[0..2].copy_from_slice(&(len as u16).to_ne_bytes());
    msg[2] = RTM_VERSION;
    msg[3] = RTM_ADD;
    // rtm_index (4..6) stays 0: not an interface-scoped route.
    msg[8..12].copy_from_slice(&flags.to_ne_bytes());
    msg[12..16].copy_from_slice(&addrs.to_ne_bytes());
    // rtm_pid (16..20) is filled in by the kernel.
    msg[20..24].copy_from_slice(&seq.to_ne_bytes());
    // rtm_errno, rtm_use, rtm_inits and rt_metrics stay 0.
    msg.extend(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    fn ne32(v: i32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// The header as `route(8)` writes it for an RTM_ADD.
    fn header(len: u16, flags: i32, addrs: i32, seq: i32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(ne16(len));
        h.extend([RTM_VERSION, RTM_ADD]);
        h.extend([0, 0, 0, 0]); // rtm_index, padding
        h.extend(ne32(flags));
        h.extend(ne32(addrs));
        h.extend([0; 4]); // rtm_pid
        h.extend(ne32(seq));
        h.extend([0; 12]); // rtm_errno, rtm_use, rtm_inits
        h.extend([0; 56]); // rt_metrics
        h
    }

    fn link(index: u16, name: &[u8]) -> Vec<u8> {
        let mut l = vec![20, 18];
        l.extend(ne16(index));
        l.extend([0, name.len() as u8, 0, 0]);
        l.extend(name);
        l.resize(20, 0);
        l
    }

    #[test]
    fn an_ipv4_slash_24_through_a_utun_interface() {
        let msg = add_route(7, &"10.1.2.0/24".parse().unwrap(), 9, "utun4");
        let mut want = header(144, 0x801, 0x7, 7);
        want.extend([16, 2, 0, 0, 10, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend(link(9, b"utun4"));
        want.extend([16, 2, 0, 0, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(msg.len(), 144);
        assert_eq!(msg, want);
    }

    #[test]
    fn an_ipv6_slash_64_through_a_utun_interface() {
        let msg = add_route(8, &"fd00:1::/64".parse().unwrap(), 12, "utun10");
        let mut want = header(168, 0x801, 0x7, 8);
        let mut dst = vec![28, 30, 0, 0, 0, 0, 0, 0, 0xFD, 0, 0, 1];
        dst.resize(28, 0);
        want.extend(dst);
        want.extend(link(12, b"utun10"));
        let mut mask = vec![28, 30, 0, 0, 0, 0, 0, 0];
        mask.extend([0xFF; 8]);
        mask.resize(28, 0);
        want.extend(mask);
        assert_eq!(msg.len(), 168);
        assert_eq!(msg, want);
    }

    #[test]
    fn a_host_route_has_no_netmask() {
        let msg = add_route(1, &"10.1.2.3/32".parse().unwrap(), 3, "utun0");
        let mut want = header(128, 0x805, 0x3, 1);
        want.extend([16, 2, 0, 0, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend(link(3, b"utun0"));
        assert_eq!(msg, want);
    }

    #[test]
    fn a_name_too_long_for_sdl_data_is_left_out() {
        let dl = sockaddr_dl(5, "utun1234567890");
        assert_eq!(
            &dl[..8],
            &[
                20,
                18,
                5u16.to_ne_bytes()[0],
                5u16.to_ne_bytes()[1],
                0,
                0,
                0,
                0
            ]
        );
        assert!(dl[8..].iter().all(|&b| b == 0));
    }
}
