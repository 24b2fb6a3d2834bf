//! What counts as an IP packet a TUN device may be handed: the kernel
//! takes any bytes whose first nibble is 4 or 6 (`"hello world"` is an
//! IPv6 packet to it) and drops them later, silently. `send/3` refuses them
//! with `EINVAL` instead.
#![forbid(unsafe_code)]

/// Bytes of a packet's start that `is_whole_packet` looks at.
pub const HEAD_LEN: usize = 40;

/// Whether `len` bytes starting with `head` (at least its first
/// `HEAD_LEN` bytes, or all of it if shorter) are one whole IPv4 or IPv6
/// packet: a header that fits, and a length field that the bytes cover
/// (bytes beyond it are padding, which the kernel trims).
pub fn is_whole_packet(head: &[u8], len: usize) -> bool {
    let word = |at: usize| {
        head.get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    match head.first().map(|b| b >> 4) {
        Some(4) => {
            let header = usize::from(head[0] & 0x0F) * 4;
            matches!(word(2), Some(total) if header >= 20 && total >= header && total <= len)
        }
        Some(6) => matches!(word(4), Some(payload) if len >= 40 && 40 + payload <= len),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total: u16, ihl: u8, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        if len > 0 {
            p[0] = 0x40 | ihl;
        }
        if len >= 4 {
            p[2..4].copy_from_slice(&total.to_be_bytes());
        }
        p
    }

    fn v6(payload: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        if len >= 6 {
            p[4..6].copy_from_slice(&payload.to_be_bytes());
        }
        p
    }

    fn whole(p: &[u8]) -> bool {
        is_whole_packet(&p[..p.len().min(HEAD_LEN)], p.len())
    }

    #[test]
    fn whole_ipv4_and_ipv6_packets_pass() {
        assert!(whole(&v4(20, 5, 20)));
        assert!(whole(&v4(28, 5, 28)));
        assert!(whole(&v4(28, 5, 40)), "padding after the packet");
        assert!(whole(&v4(64, 15, 64)), "a header with options");
        assert!(whole(&v6(0, 40)));
        assert!(whole(&v6(8, 48)));
        assert!(whole(&v6(8, 60)));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!whole(b""));
        assert!(!whole(&[0x45]));
        assert!(!whole(b"hello world"), "0x68: an IPv6 nibble, 11 bytes");
        assert!(!whole(&v4(20, 5, 19)));
        assert!(!whole(&v4(29, 5, 28)), "length field past the bytes");
        assert!(!whole(&v4(19, 5, 28)), "length shorter than the header");
        assert!(!whole(&v4(20, 4, 20)), "header shorter than 20 bytes");
        assert!(!whole(&v4(40, 15, 40)), "options past the length");
        assert!(!whole(&v6(0, 39)));
        assert!(!whole(&v6(9, 48)));
        assert!(!whole(&[0x50; 64]));
    }
}
