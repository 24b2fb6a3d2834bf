//! Offload on Linux TUN devices (`IFF_VNET_HDR`): every packet on the fd
//! starts with a `virtio_net_hdr` (linux/virtio_net.h). With the offloads
//! `TUNSETOFFLOAD` turns on, the kernel hands the program TCP (and UDP)
//! *super-packets* of up to 64 KB, one header for many MTU-sized segments,
//! with checksums left for the program to finish; in the other direction
//! the program may write such super-packets, which the kernel takes as
//! one. Plain, platform-independent code, unit-tested: the header, the
//! split of a super-packet into ordinary packets, finishing a partial
//! checksum, and deciding which consecutive TCP segments of one flow may
//! travel as one super-packet (and building its headers).
#![forbid(unsafe_code)]

/// Bytes of `struct virtio_net_hdr` (without `num_buffers`, as TUN uses
/// it unless told otherwise).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header's sum; the rest is to do.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Set with a TCP GSO type when the segments carry ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

/// Most segments one super-packet is split into or built from: a 64 KB
/// TCP super-packet of 536-byte segments has 123; anything beyond is not a
/// packet the kernel makes.
pub const MAX_SEGMENTS: usize = 128;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`, in the host's byte order (TUN's default, the
/// "legacy" virtio layout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let word = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Whether the packet it heads is a super-packet to split.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Why a packet from the kernel could not be made ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A GSO type this code does not split (UFO, or unknown).
    UnknownGso,
    /// Header fields that do not fit the packet.
    BadHeader,
}

// ---------------------------------------------------------------------
// Which offloads a device has.

/// Offloads turned on for a device: `TUNSETOFFLOAD`'s `TUN_F_*` bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads(pub u32);

impl Offloads {
    /// Checksums left partial (the rest are useless without it).
    pub const CSUM: u32 = 0x01;
    pub const TSO4: u32 = 0x02;
    pub const TSO6: u32 = 0x04;
    pub const TSO_ECN: u32 = 0x08;
    pub const USO4: u32 = 0x20;
    pub const USO6: u32 = 0x40;

    /// What Tundra asks for, in order of preference: everything; without
    /// UDP segmentation (Linux before 6.2); checksums only; nothing.
    pub const LADDER: [u32; 4] = [
        Self::CSUM | Self::TSO4 | Self::TSO6 | Self::TSO_ECN | Self::USO4 | Self::USO6,
        Self::CSUM | Self::TSO4 | Self::TSO6 | Self::TSO_ECN,
        Self::CSUM,
        0,
    ];

    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The offloads' names, as `info/1` reports them.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::CSUM, "csum"),
            (Self::TSO4, "tso4"),
            (Self::TSO6, "tso6"),
            (Self::TSO_ECN, "tso_ecn"),
            (Self::USO4, "uso4"),
            (Self::USO6, "uso6"),
        ]
        .into_iter()
        .filter(|&(bit, _)| self.contains(bit))
        .map(|(_, name)| name)
        .collect()
    }
}

/// Turns on the most of `Offloads::LADDER` that `try_set` (one
/// `TUNSETOFFLOAD`) accepts. A kernel that refuses even 0 leaves the
/// device with none.
pub fn negotiate(mut try_set: impl FnMut(u32) -> std::io::Result<()>) -> Offloads {
    Offloads::LADDER
        .into_iter()
        .find(|&bits| try_set(bits).is_ok())
        .map_or(Offloads::default(), Offloads)
}

// ---------------------------------------------------------------------
// The Internet checksum.

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

fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
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

// ---------------------------------------------------------------------
// Splitting what the kernel hands over.

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

    /// Total length of all segments.
    pub fn total_len(&self) -> usize {
        (0..self.count).map(|i| self.segment_len(i)).sum()
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

// ---------------------------------------------------------------------
// Coalescing what the program writes.

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

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
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
        let grown = Segment::parse(packet).is_some_and(|segment| run.extend(segment));
        if !grown || run.len() == MAX_SEGMENTS {
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

/// Writes `run` (from `run_from`) to an offload device's fd as one
/// super-packet: the vnet header, the first segment's headers adjusted,
/// every payload uncopied, in one `writev`.
pub fn write_run(fd: std::os::fd::BorrowedFd, run: &Run) -> std::io::Result<()> {
    use std::io::IoSlice;
    let (hdr, headers) = coalesced_headers(run.segments());
    let hdr = hdr.encode();
    let mut slices = Vec::with_capacity(run.len() + 2);
    slices.push(IoSlice::new(&hdr));
    slices.push(IoSlice::new(&headers));
    slices.extend(run.segments().iter().map(|s| IoSlice::new(payload_of(s))));
    nix::sys::uio::writev(fd, &slices)?;
    Ok(())
}

/// The payload of a segment (what follows its headers).
pub fn payload_of<'a>(segment: &Segment<'a>) -> &'a [u8] {
    &segment.packet[segment.headers..]
}

#[cfg(test)]
mod tests;
