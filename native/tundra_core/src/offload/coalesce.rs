//! Deciding which consecutive TCP segments of one flow the program writes
//! may travel as one super-packet, and building its headers.

use super::checksum::{fold, pseudo_sum, sum};
use super::{
    get16, get32, put16, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, MAX_SEGMENTS, PROTO_TCP,
    TCP_ACK, TCP_PSH,
};

/// A TCP segment that may join others into a super-packet: IPv4 without
/// options and not fragmented, or IPv6 without extension headers; flags
/// ACK (or ACK|PSH, which ends a run); some payload. Its checksum is
/// checked once it is part of a run (see `run_from`).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub packet: &'a [u8],
    ipv4: bool,
    l4: usize,
    headers: usize,
    seq: u32,
    psh: bool,
}

impl<'a> Segment<'a> {
    pub fn parse(packet: &'a [u8]) -> Option<Segment<'a>> {
        let ipv4 = match packet.first()? >> 4 {
            4 => true,
            6 => false,
            _ => return None,
        };
        let l4 = if ipv4 {
            let plain = packet[0] & 0x0F == 5 && packet.len() >= 40 && packet[9] == PROTO_TCP;
            // Not a fragment: MF clear and offset 0 (DF may be set).
            let whole = plain && get16(packet, 6) & 0x3FFF == 0;
            if !whole || usize::from(get16(packet, 2)) != packet.len() {
                return None;
            }
            20
        } else {
            let plain = packet.len() >= 60 && packet[6] == PROTO_TCP;
            if !plain || usize::from(get16(packet, 4)) + 40 != packet.len() {
                return None;
            }
            40
        };
        let tcp_len = usize::from(packet[l4 + 12] >> 4) * 4;
        let headers = l4 + tcp_len;
        if tcp_len < 20 || headers >= packet.len() {
            return None;
        }
        let psh = match packet[l4 + 13] {
            TCP_ACK => false,
            f if f == TCP_ACK | TCP_PSH => true,
            _ => return None,
        };
        Some(Segment {
            packet,
            ipv4,
            l4,
            headers,
            seq: get32(packet, l4 + 4),
            psh,
        })
    }

    fn payload(&self) -> usize {
        self.packet.len() - self.headers
    }

    /// Whether its TCP checksum is right.
    fn checksum_ok(&self) -> bool {
        let p = self.packet;
        let (src, dst) = if self.ipv4 {
            (&p[12..16], &p[16..20])
        } else {
            (&p[8..24], &p[24..40])
        };
        let pseudo = pseudo_sum(src, dst, PROTO_TCP, p.len() - self.l4);
        fold(sum(&p[self.l4..], pseudo)) == 0xFFFF
    }

    /// Whether `next` continues this run (whose segments so far are
    /// `count`, carrying `payload` bytes of `mss` each but the last):
    /// same flow and headers but for the fields that differ per segment,
    /// in sequence, no larger than the first, and the run still fits a
    /// super-packet.
    fn continued_by(&self, last: &Segment, next: &Segment, count: usize, payload: usize) -> bool {
        let mss = self.payload();
        let (a, b) = (self.packet, next.packet);
        let same_ip = if self.ipv4 {
            // Version/IHL, TOS; flags (DF); TTL, protocol; addresses.
            next.ipv4
                && a[..2] == b[..2]
                && a[6] == b[6]
                && a[8..10] == b[8..10]
                && a[12..20] == b[12..20]
        } else {
            // Version, traffic class, flow label; next header, hop limit;
            // addresses.
            !next.ipv4 && a[..4] == b[..4] && a[6..40] == b[6..40]
        };
        let l4 = self.l4;
        // Ports; ack; header length and flags (checked as ACK or ACK|PSH);
        // window; urgent pointer; options.
        let same_tcp = self.headers == next.headers
            && a[l4..l4 + 4] == b[l4..l4 + 4]
            && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13]
            && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
            && a[l4 + 18..self.headers] == b[l4 + 18..next.headers];
        same_ip
            && same_tcp
            && !last.psh
            && last.payload() == mss
            && next.payload() <= mss
            && next.seq == last.seq.wrapping_add(last.payload() as u32)
            && count < MAX_SEGMENTS
            && self.headers + payload + next.payload() <= 65535
    }
}

/// Consecutive segments that travel as one super-packet, grown one
/// segment at a time.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    segments: Vec<Segment<'a>>,
    payload: usize,
}

impl<'a> Run<'a> {
    pub fn start(first: Segment<'a>) -> Run<'a> {
        Run {
            payload: first.payload(),
            segments: vec![first],
        }
    }

    /// Adds `next` if it continues the run; false (and nothing added)
    /// when it does not.
    pub fn extend(&mut self, next: Segment<'a>) -> bool {
        let (first, last) = match (self.segments.first(), self.segments.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return false,
        };
        if !first.continued_by(last, &next, self.segments.len(), self.payload) {
            return false;
        }
        self.payload += next.payload();
        self.segments.push(next);
        true
    }

    /// Segments in the run; never 0 (a run starts with one), so there is
    /// no `is_empty`.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }
}

/// The run of TCP segments of one flow that `first` starts, grown from
/// `next` while each continues it, up to its first segment with a wrong
/// checksum (the kernel does not check a super-packet's segments);
/// `None` when there is no run of two. Checksums are checked only once
/// a run of two exists, so a lone segment costs no pass over its bytes.
pub fn run_from<'a>(first: &'a [u8], next: impl Iterator<Item = &'a [u8]>) -> Option<Run<'a>> {
    let mut run = Run::start(Segment::parse(first)?);
    for packet in next {
        // `extend` refuses a segment past MAX_SEGMENTS, as any other.
        if !Segment::parse(packet).is_some_and(|segment| run.extend(segment)) {
            break;
        }
    }
    if run.len() < 2 {
        return None;
    }
    if let Some(bad) = run.segments.iter().position(|s| !s.checksum_ok()) {
        run.segments.truncate(bad);
    }
    (run.len() >= 2).then_some(run)
}

/// The vnet header and the headers (IP and TCP, from the first segment)
/// of the super-packet that carries `run` (consecutive segments that
/// `run_from` put together, at least two); its payload is the runs'
/// payloads in order, after these headers.
pub fn coalesced_headers(run: &[Segment]) -> (VnetHdr, Vec<u8>) {
    let first = &run[0];
    let l4 = first.l4;
    let payload: usize = run.iter().map(|s| s.payload()).sum();
    let total = first.headers + payload;
    let mut headers = first.packet[..first.headers].to_vec();
    if first.ipv4 {
        put16(&mut headers, 2, total as u16);
        put16(&mut headers, 10, 0);
        let csum = !fold(sum(&headers[..l4], 0));
        put16(&mut headers, 10, csum);
    } else {
        put16(&mut headers, 4, (total - l4) as u16);
    }
    // PSH, if the last segment has it.
    if run.last().is_some_and(|s| s.psh) {
        headers[l4 + 13] |= TCP_PSH;
    }
    // The checksum field holds the pseudo-header's sum; the kernel (or the
    // device the packet leaves by) finishes each segment's.
    let (src, dst) = if first.ipv4 {
        (12..16, 16..20)
    } else {
        (8..24, 24..40)
    };
    let pseudo = fold(pseudo_sum(
        &headers[src],
        &headers[dst],
        PROTO_TCP,
        total - l4,
    ));
    put16(&mut headers, l4 + 16, pseudo);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if first.ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: first.headers as u16,
        gso_size: first.payload() as u16,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, headers)
}

/// The payload of a segment (what follows its headers).
pub fn payload_of<'a>(segment: &Segment<'a>) -> &'a [u8] {
    &segment.packet[segment.headers..]
}
