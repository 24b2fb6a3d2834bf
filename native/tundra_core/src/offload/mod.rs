//! Offload on Linux TUN devices (`IFF_VNET_HDR`): every packet on the fd
//! starts with a `virtio_net_hdr` (linux/virtio_net.h). With the offloads
//! `TUNSETOFFLOAD` turns on, the kernel hands the program TCP (and UDP)
//! *super-packets* of up to 64 KB, one header for many MTU-sized segments,
//! with checksums left for the program to finish; in the other direction
//! the program may write such super-packets, which the kernel takes as
//! one. Plain, platform-independent code, unit- and property-tested, in
//! parts:
//!
//! - `header`: the vnet header, and which offloads a device has;
//! - `checksum`: the Internet checksum, and finishing a partial one;
//! - `split`: cutting a super-packet from the kernel into packets;
//! - `coalesce`: which consecutive TCP segments of one flow may travel as
//!   one super-packet, and its headers;
//! - `pending`: a split super-packet's segments not handed out yet.
//!
//! Writing to the device is the platform's (`platform::write_run`).
#![forbid(unsafe_code)]

mod checksum;
mod coalesce;
mod header;
mod pending;
mod split;

pub use checksum::{complete_checksum, fold, pseudo_sum, sum, sum_scalar};
pub use coalesce::{coalesced_headers, payload_of, run_from, Run, Segment};
pub use header::{
    negotiate, Offloads, VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6,
    GSO_UDP_L4, VNET_HDR_LEN,
};
pub use pending::{batch_extent, Pending, MAX_BATCH_BYTES, MAX_BATCH_SEGMENTS};
pub use split::Superpacket;

/// Most segments one super-packet is split into or built from: a 64 KB
/// TCP super-packet of 536-byte segments has 123; anything beyond is not a
/// packet the kernel makes.
pub const MAX_SEGMENTS: usize = 128;

pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const TCP_CWR: u8 = 0x80;

/// Why a packet from the kernel could not be made ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A GSO type this code does not split (UFO, or unknown).
    UnknownGso,
    /// Header fields that do not fit the packet.
    BadHeader,
}

// Big-endian fields of the packets' headers.

pub(crate) fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

pub(crate) fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests;
