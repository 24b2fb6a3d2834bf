//! The Internet checksum (RFC 1071) over packets' bytes, and finishing
//! the checksum of a packet the kernel left partial.

use super::{get16, put16, Malformed, VnetHdr, F_NEEDS_CSUM};

/// Adds `data` to a running one's-complement sum (big-endian words; an
/// odd last byte is padded with zero).
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum into 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header's sum for an IPv4 or IPv6 packet whose addresses are
/// `src` and `dst` (4 or 16 bytes each), for `proto` and `len` bytes of
/// transport header and payload.
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    let acc = sum(src, sum(dst, u64::from(proto)));
    // IPv6's length is 32 bits; a super-packet's fits in IPv4's 16 too.
    acc + (len as u64 & 0xFFFF) + (len as u64 >> 16)
}

/// Finishes the checksum of a packet the kernel left partial
/// (`F_NEEDS_CSUM` without GSO): the field holds the pseudo-header's sum;
/// the checksum covers everything from `csum_start`.
pub fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), Malformed> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(Malformed::BadHeader);
    }
    let partial = get16(packet, at);
    put16(packet, at, 0);
    let mut csum = !fold(sum(&packet[start..], u64::from(partial)));
    // A UDP checksum of 0 means "none": send all ones instead.
    if csum == 0 && hdr.csum_offset == 6 {
        csum = 0xFFFF;
    }
    put16(packet, at, csum);
    Ok(())
}
