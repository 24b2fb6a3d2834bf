//! Turning a packet around in place, as the raw reflector does: UDP
//! datagrams get source and destination (addresses and ports) swapped,
//! ICMP/ICMPv6 echo requests become echo replies. Neither needs a checksum
//! recomputed: swapping leaves the sums unchanged, and an echo reply's
//! checksum is patched incrementally (RFC 1624).

const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Rewrites `packet` into its answer. Returns false for packets that get
/// none (router solicitations, MLD reports, anything unexpected).
pub fn turn_around(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => turn_around_v4(packet),
        Some(6) => turn_around_v6(packet),
        _ => false,
    }
}

fn turn_around_v4(packet: &mut [u8]) -> bool {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len + 8 {
        return false;
    }
    let proto = packet[9];
    let l4 = header_len;
    match proto {
        UDP => swap_ports(&mut packet[l4..]),
        ICMP if packet[l4] == 8 && packet[l4 + 1] == 0 => {
            packet[l4] = 0;
            // Type 8 -> 0 lowers the first 16-bit word by 0x0800.
            patch_checksum(&mut packet[l4 + 2..l4 + 4], 0x0800, 0x0000);
        }
        _ => return false,
    }
    swap(packet, 12, 16, 4);
    true
}

fn turn_around_v6(packet: &mut [u8]) -> bool {
    if packet.len() < 48 {
        return false;
    }
    let l4 = 40;
    match packet[6] {
        UDP => swap_ports(&mut packet[l4..]),
        ICMPV6 if packet[l4] == 128 && packet[l4 + 1] == 0 => {
            packet[l4] = 129;
            patch_checksum(&mut packet[l4 + 2..l4 + 4], 0x8000, 0x8100);
        }
        _ => return false,
    }
    swap(packet, 8, 24, 16);
    true
}

fn swap_ports(udp: &mut [u8]) {
    swap(udp, 0, 2, 2);
}

fn swap(data: &mut [u8], a: usize, b: usize, len: usize) {
    for i in 0..len {
        data.swap(a + i, b + i);
    }
}

/// Updates the Internet checksum at `field` for one 16-bit word changing
/// from `old` to `new`: HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3).
fn patch_checksum(field: &mut [u8], old: u16, new: u16) {
    let sum = u16::from_be_bytes([field[0], field[1]]);
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    field.copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn icmp_v4(kind: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, ICMP, 0, 0];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend([kind, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let sum = checksum(&p[20..]);
        p[22..24].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn v4_echo_request_becomes_a_valid_reply() {
        let mut p = icmp_v4(8);
        assert!(turn_around(&mut p));
        assert_eq!(p[20], 0);
        assert_eq!(&p[12..20], &[10, 0, 0, 2, 10, 0, 0, 1]);
        assert_eq!(checksum(&p[20..]), 0, "checksum still verifies");
        assert_eq!(p, {
            let mut expected = icmp_v4(0);
            expected[12..20].copy_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
            expected
        });
    }

    #[test]
    fn v4_udp_swaps_addresses_and_ports() {
        let mut p = vec![0x45, 0, 0, 30, 0, 0, 0, 0, 64, UDP, 0xab, 0xcd];
        p.extend([
            10, 0, 0, 1, 10, 0, 0, 2, 0x10, 0x00, 0x20, 0x00, 0, 10, 0x55, 0x66, 7, 8,
        ]);
        assert!(turn_around(&mut p));
        assert_eq!(&p[12..20], &[10, 0, 0, 2, 10, 0, 0, 1]);
        assert_eq!(&p[20..24], &[0x20, 0x00, 0x10, 0x00]);
        assert_eq!(&p[24..], &[0, 10, 0x55, 0x66, 7, 8], "checksum kept");
        assert_eq!(&p[10..12], &[0xab, 0xcd], "header checksum kept");
    }

    #[test]
    fn v6_echo_request_becomes_a_valid_reply() {
        let src: Vec<u8> = (1..=16).collect();
        let dst: Vec<u8> = (101..=116).collect();
        let mut p = vec![0x60, 0, 0, 0, 0, 8, ICMPV6, 64];
        p.extend(&src);
        p.extend(&dst);
        p.extend([128, 0, 0, 0, 0, 1, 0, 1]);
        let pseudo_sum = |p: &[u8]| {
            let mut data = p[8..40].to_vec();
            data.extend([0, 0, 0, 8, 0, 0, 0, ICMPV6]);
            data.extend(&p[40..]);
            checksum(&data)
        };
        let sum = pseudo_sum(&p);
        p[42..44].copy_from_slice(&sum.to_be_bytes());
        assert!(turn_around(&mut p));
        assert_eq!(p[40], 129);
        assert_eq!(&p[8..24], &dst[..]);
        assert_eq!(&p[24..40], &src[..]);
        assert_eq!(pseudo_sum(&p), 0, "checksum still verifies");
    }

    #[test]
    fn other_packets_get_no_answer() {
        let mut rs = vec![0x60, 0, 0, 0, 0, 8, ICMPV6, 255];
        rs.extend([0; 32]);
        rs.extend([133, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!turn_around(&mut rs));
        assert!(!turn_around(&mut []));
        assert!(!turn_around(&mut [0x45, 0, 0]));
    }
}
