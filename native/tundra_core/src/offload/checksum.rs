//! The Internet checksum (RFC 1071) over packets' bytes, and finishing
//! the checksum of a packet the kernel left partial.

use super::{get16, put16, Malformed, VnetHdr, F_NEEDS_CSUM};

/// 32-bit words summed side by side per round: independent additions the
/// CPU runs in parallel (and the compiler vectorizes), where one running
/// sum of 16-bit words waits on itself every step.
const LANES: usize = 8;
const STRIDE: usize = 4 * LANES;

/// Adds `data` to a running one's-complement sum (big-endian words; an
/// odd last byte is padded with zero).
///
/// The bulk is summed as native-order 32-bit words in `LANES` lanes: a
/// one's-complement sum of 16-bit words is the same however the words are
/// grouped (2^16 is 1 modulo 2^16 - 1), and byte order only swaps the two
/// bytes of the folded result (RFC 1071, 2.(B)). The tail goes word by
/// word, as `sum_scalar` does everything.
pub fn sum(data: &[u8], acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(STRIDE);
    let mut lanes = [0u64; LANES];
    for chunk in &mut chunks {
        for (lane, word) in lanes.iter_mut().zip(chunk.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
        }
    }
    // Each lane holds at most 2^32 words of 32 bits before it could
    // overflow: far beyond any packet.
    let native = fold(lanes.iter().sum());
    let bulk = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    sum_scalar(chunks.remainder(), acc + u64::from(bulk))
}

/// `sum`, one big-endian 16-bit word at a time: the plain definition,
/// which `sum` is tested against.
pub fn sum_scalar(data: &[u8], mut acc: u64) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against the plain definition: any length (odd ones too) over
        /// many rounds of the lanes, at every alignment, from any running
        /// sum. (Whole super-packets' lengths: `edges_of_the_lanes`.)
        #[test]
        fn lanes_sum_as_the_plain_definition_does(
            bytes in proptest::collection::vec(any::<u8>(), 0..4_096),
            offset in 0usize..8,
            acc in 0u64..(1 << 40),
        ) {
            let data = &bytes[offset.min(bytes.len())..];
            prop_assert_eq!(fold(sum(data, acc)) % 0xFFFF, fold(sum_scalar(data, acc)) % 0xFFFF);
            // As a checksum is made: complemented, 0 and 0xFFFF apart.
            let (a, b) = (!fold(sum(data, acc)), !fold(sum_scalar(data, acc)));
            prop_assert!(a == b || (a, b) == (0, 0xFFFF) || (a, b) == (0xFFFF, 0));
        }
    }

    #[test]
    fn known_sums() {
        // RFC 1071's example (section 3): 0x2ddf0, folded 0xddf2.
        let rfc = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum_scalar(&rfc, 0), 0x2ddf0);
        assert_eq!(fold(sum(&rfc, 0)), 0xddf2);
        // An odd last byte is the high byte of a word padded with zero.
        assert_eq!(sum_scalar(&[0xab], 0), 0xab00);
        assert_eq!(sum_scalar(&[0x12, 0x34, 0x56], 1), 0x1234 + 0x5600 + 1);
        let long: Vec<u8> = (0..100u8).collect();
        let expected: u64 = long
            .chunks(2)
            .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
            .sum();
        assert_eq!(u64::from(fold(sum(&long, 0))), fold(expected).into());
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x2_fffe), 1);
    }

    #[test]
    fn edges_of_the_lanes() {
        for len in [0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 1399, 1400, 65_535] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(fold(sum(&data, 0)), fold(sum_scalar(&data, 0)), "{len}");
            let ones = vec![0xFFu8; len];
            assert_eq!(
                fold(sum(&ones, 0)) % 0xFFFF,
                fold(sum_scalar(&ones, 0)) % 0xFFFF
            );
        }
    }

    /// The pseudo-header written out as RFC 768 and RFC 8200 lay it out,
    /// summed by the plain definition.
    fn written_out(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u16 {
        let mut bytes = [src, dst].concat();
        if src.len() == 4 {
            bytes.extend_from_slice(&[0, proto]);
            bytes.extend_from_slice(&u16::try_from(len).expect("IPv4 length").to_be_bytes());
        } else {
            bytes.extend_from_slice(&u32::try_from(len).expect("IPv6 length").to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, proto]);
        }
        fold(sum_scalar(&bytes, 0))
    }

    #[test]
    fn the_pseudo_header_sums_as_written_out() {
        let v4 = ([192, 0, 2, 1], [198, 51, 100, 254]);
        for (proto, len) in [(6, 20), (17, 1480), (6, 65_535)] {
            assert_eq!(
                fold(pseudo_sum(&v4.0, &v4.1, proto, len)),
                written_out(&v4.0, &v4.1, proto, len),
                "IPv4 {proto} {len}"
            );
        }
        let src: Vec<u8> = (1..=16).collect();
        let dst: Vec<u8> = (0xF0..=0xFF).collect();
        // IPv6's length is 32 bits: past 65,535 (a super-packet) too.
        for (proto, len) in [(6, 40), (17, 1452), (6, 70_000), (6, 0x1_FFFF)] {
            assert_eq!(
                fold(pseudo_sum(&src, &dst, proto, len)),
                written_out(&src, &dst, proto, len),
                "IPv6 {proto} {len}"
            );
        }
    }

    fn needs_csum(start: u16, offset: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: 0,
            hdr_len: 0,
            gso_size: 0,
            csum_start: start,
            csum_offset: offset,
        }
    }

    #[test]
    fn a_checksum_field_must_lie_within_the_packet_up_to_its_last_byte() {
        // The field as the packet's last two bytes: completed.
        let mut packet = vec![0x11u8, 0x22, 0x33, 0x44, 0, 0];
        complete_checksum(&needs_csum(0, 4), &mut packet).expect("in the packet");
        let expected = !fold(sum_scalar(&[0x11, 0x22, 0x33, 0x44], 0));
        assert_eq!(get16(&packet, 4), expected);
        // One byte past the end, or far past it: malformed, nothing written.
        let mut short = vec![0x11u8, 0x22, 0x33, 0x44, 0];
        assert!(complete_checksum(&needs_csum(0, 4), &mut short).is_err());
        assert!(complete_checksum(&needs_csum(2, 60), &mut short).is_err());
        assert_eq!(short, [0x11, 0x22, 0x33, 0x44, 0]);
        // Without F_NEEDS_CSUM nothing is done.
        let mut untouched = vec![1u8, 2, 3, 4, 5, 6];
        let mut hdr = needs_csum(0, 4);
        hdr.flags = 0;
        complete_checksum(&hdr, &mut untouched).expect("nothing to do");
        assert_eq!(untouched, [1, 2, 3, 4, 5, 6]);
    }
}
