//! Cutting a super-packet the kernel handed over into ordinary packets,
//! each with its own headers and valid checksums.

use super::checksum::{fold, pseudo_sum, sum};
use super::{
    get16, get32, put16, Malformed, VnetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4,
    MAX_SEGMENTS, PROTO_TCP, PROTO_UDP, TCP_CWR, TCP_FIN, TCP_PSH,
};

/// A super-packet the kernel handed over, ready to be cut into ordinary
/// packets: `count()` of them, the `i`-th `segment_len(i)` bytes long and
/// written by `write(i, dst)`.
#[derive(Debug)]
pub struct Superpacket<'a> {
    packet: &'a [u8],
    ipv4: bool,
    tcp: bool,
    /// Where the transport header starts (the IP header's length).
    l4: usize,
    /// IP and transport headers: what each segment repeats.
    headers: usize,
    mss: usize,
    count: usize,
}

impl<'a> Superpacket<'a> {
    /// Reads the headers of `packet` (what follows the vnet header) as
    /// `hdr` describes it.
    pub fn new(hdr: &VnetHdr, packet: &'a [u8]) -> Result<Superpacket<'a>, Malformed> {
        let (ipv4, tcp) = match hdr.gso_type & !GSO_ECN {
            GSO_TCPV4 => (true, true),
            GSO_TCPV6 => (false, true),
            GSO_UDP_L4 => (packet.first().map(|b| b >> 4) == Some(4), false),
            _ => return Err(Malformed::UnknownGso),
        };
        let l4 = usize::from(hdr.csum_start);
        let version_ok = packet.first().map(|b| b >> 4) == Some(if ipv4 { 4 } else { 6 });
        let ip_ok = if ipv4 {
            l4 >= 20 && usize::from(packet.first().copied().unwrap_or(0) & 0x0F) * 4 == l4
        } else {
            l4 == 40
        };
        // The transport header's own length, from the packet itself.
        let l4_len = if tcp {
            usize::from(packet.get(l4 + 12).copied().unwrap_or(0) >> 4) * 4
        } else {
            8
        };
        let headers = l4 + l4_len;
        let mss = usize::from(hdr.gso_size);
        if !version_ok || !ip_ok || (tcp && l4_len < 20) || mss == 0 || headers > packet.len() {
            return Err(Malformed::BadHeader);
        }
        let payload = packet.len() - headers;
        let count = payload.div_ceil(mss).max(1);
        if count > MAX_SEGMENTS {
            return Err(Malformed::BadHeader);
        }
        Ok(Superpacket {
            packet,
            ipv4,
            tcp,
            l4,
            headers,
            mss,
            count,
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of every segment but (perhaps) the last.
    pub fn segment_size(&self) -> usize {
        self.headers + self.mss
    }

    /// Length of segment `i`.
    pub fn segment_len(&self, i: usize) -> usize {
        let payload = self.packet.len() - self.headers;
        let from = i * self.mss;
        self.headers + payload.saturating_sub(from).min(self.mss)
    }

    /// Writes segment `i`, a whole ordinary packet with valid checksums,
    /// at the start of `dst` (at least `segment_len(i)` bytes).
    pub fn write(&self, i: usize, dst: &mut [u8]) {
        let len = self.segment_len(i);
        let (headers, l4) = (self.headers, self.l4);
        let from = headers + i * self.mss;
        let out = &mut dst[..len];
        out[..headers].copy_from_slice(&self.packet[..headers]);
        out[headers..].copy_from_slice(&self.packet[from..from + len - headers]);
        let last = i + 1 == self.count;
        // IP: length, and for IPv4 an ID per segment and the header checksum.
        if self.ipv4 {
            put16(out, 2, len as u16);
            let id = get16(out, 4).wrapping_add(i as u16);
            put16(out, 4, id);
            put16(out, 10, 0);
            let csum = !fold(sum(&out[..l4], 0));
            put16(out, 10, csum);
        } else {
            put16(out, 4, (len - l4) as u16);
        }
        let (src, dst_addr) = if self.ipv4 {
            (12..16, 16..20)
        } else {
            (8..24, 24..40)
        };
        let (proto, csum_at) = if self.tcp {
            // Sequence number, and FIN/PSH on the last segment only, CWR on
            // the first only.
            let seq = get32(out, l4 + 4).wrapping_add((i * self.mss) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                out[l4 + 13] &= !TCP_CWR;
            }
            (PROTO_TCP, l4 + 16)
        } else {
            put16(out, l4 + 4, (len - l4) as u16);
            (PROTO_UDP, l4 + 6)
        };
        put16(out, csum_at, 0);
        let pseudo = pseudo_sum(&out[src], &out[dst_addr], proto, len - l4);
        let mut csum = !fold(sum(&out[l4..], pseudo));
        if csum == 0 && !self.tcp {
            csum = 0xFFFF;
        }
        put16(out, csum_at, csum);
    }
}
