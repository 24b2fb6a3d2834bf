//! Hand-built IPv4 and IPv6 packets a hostile member writes into its own
//! device: ICMPv6 router advertisements and redirects, ICMP redirects,
//! and echo requests (whose replies tell the test the kernel has taken
//! everything written before). Written apart from the offload code's
//! checksums, so that a bug there cannot hide one here.
#![allow(dead_code)] // each test file uses its own part of this

use std::net::{Ipv4Addr, Ipv6Addr};

/// The Internet checksum of `parts`, concatenated.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv6 packet of ICMPv6 message `icmp` (its checksum filled in).
fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut icmp: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(icmp.len()).expect("length");
    let pseudo = [
        &src.octets()[..],
        &dst.octets(),
        &len.to_be_bytes(),
        &[0, 0, 0, 58],
    ]
    .concat();
    icmp[2..4].copy_from_slice(&[0, 0]);
    let sum = checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(len as u16).to_be_bytes());
    packet.extend_from_slice(&[58, hop_limit]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&icmp);
    packet
}

/// A Prefix Information option: on-link and autonomous (SLAAC), a day.
fn prefix_option(prefix: Ipv6Addr, len: u8) -> Vec<u8> {
    let mut option = vec![3, 4, len, 0xC0];
    option.extend_from_slice(&86_400u32.to_be_bytes());
    option.extend_from_slice(&86_400u32.to_be_bytes());
    option.extend_from_slice(&[0; 4]);
    option.extend_from_slice(&prefix.octets());
    option
}

/// A Route Information option (RFC 4191) for `prefix`/`len`.
fn route_option(prefix: Ipv6Addr, len: u8) -> Vec<u8> {
    let mut option = vec![24, 3, len, 0];
    option.extend_from_slice(&86_400u32.to_be_bytes());
    option.extend_from_slice(&prefix.octets());
    option
}

/// A router advertisement from `router` (link-local) to all nodes: a
/// default router for 30 minutes, with prefix information (on-link and
/// SLAAC) for each of `prefixes` and route information for `routes`.
pub fn router_advertisement(
    router: Ipv6Addr,
    prefixes: &[(Ipv6Addr, u8)],
    routes: &[(Ipv6Addr, u8)],
) -> Vec<u8> {
    let mut icmp = vec![134, 0, 0, 0, 64, 0];
    icmp.extend_from_slice(&1800u16.to_be_bytes());
    icmp.extend_from_slice(&[0; 8]);
    for &(prefix, len) in prefixes {
        icmp.extend(prefix_option(prefix, len));
    }
    for &(prefix, len) in routes {
        icmp.extend(route_option(prefix, len));
    }
    icmpv6(router, "ff02::1".parse().expect("all nodes"), 255, icmp)
}

/// An ICMPv6 redirect from `router`: `destination` is better reached
/// through `target`.
pub fn redirect_v6(
    router: Ipv6Addr,
    to: Ipv6Addr,
    target: Ipv6Addr,
    destination: Ipv6Addr,
) -> Vec<u8> {
    let mut icmp = vec![137, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&destination.octets());
    icmpv6(router, to, 255, icmp)
}

/// An ICMPv6 echo request of `id`.
pub fn echo_v6(src: Ipv6Addr, dst: Ipv6Addr, id: u16) -> Vec<u8> {
    let mut icmp = vec![128, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&[0, 1]);
    icmpv6(src, dst, 64, icmp)
}

/// Whether `packet` is an echo reply (IPv4 or IPv6) of `id`.
pub fn is_echo_reply(packet: &[u8], id: u16) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(6) => {
            packet.len() >= 48
                && packet[6] == 58
                && packet[40] == 129
                && packet[44..46] == id.to_be_bytes()
        }
        Some(4) => {
            let ihl = usize::from(packet[0] & 0x0F) * 4;
            packet.len() >= ihl + 8
                && packet[9] == 1
                && packet[ihl] == 0
                && packet[ihl + 4..ihl + 6] == id.to_be_bytes()
        }
        _ => false,
    }
}

/// An IPv4 packet of protocol `proto` carrying `payload`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("length");
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&dst.octets());
    let sum = checksum(&[&header]);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header.extend_from_slice(payload);
    header
}

fn icmpv4(src: Ipv4Addr, dst: Ipv4Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 1, &icmp)
}

/// An ICMPv4 echo request of `id`.
pub fn echo_v4(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&[0, 1]);
    icmpv4(src, dst, icmp)
}

/// An ICMP host redirect from `router`: the host's packets to
/// `destination` (as if it had sent one to `to`'s address) should go
/// through `gateway`.
pub fn redirect_v4(
    router: Ipv4Addr,
    to: Ipv4Addr,
    gateway: Ipv4Addr,
    destination: Ipv4Addr,
) -> Vec<u8> {
    let mut icmp = vec![5, 1, 0, 0];
    icmp.extend_from_slice(&gateway.octets());
    // The start of the packet the host is said to have sent.
    icmp.extend(ipv4(
        to,
        destination,
        17,
        &[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0],
    ));
    icmpv4(router, to, icmp)
}
