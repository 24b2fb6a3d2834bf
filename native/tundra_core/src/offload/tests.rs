use super::*;

/// A TCP/IPv4 segment with valid checksums: ID `id`, sequence `seq`,
/// flags, and `payload`; options (12 bytes of timestamps) when `options`.
fn tcp4(id: u16, seq: u32, flags: u8, payload: &[u8], options: bool) -> Vec<u8> {
    let tcp_len = if options { 32 } else { 20 };
    let total = 20 + tcp_len + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    put16(&mut p, 2, total as u16);
    put16(&mut p, 4, id);
    put16(&mut p, 6, 0x4000);
    p[8] = 64;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let csum = !fold(sum(&p[..20], 0));
    put16(&mut p, 10, csum);
    fill_tcp(&mut p, 20, seq, flags, tcp_len, payload);
    p
}

fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 40 + 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x60;
    put16(&mut p, 4, (total - 40) as u16);
    p[6] = PROTO_TCP;
    p[7] = 64;
    p[8] = 0xFD;
    p[23] = 1;
    p[24] = 0xFD;
    p[39] = 2;
    fill_tcp(&mut p, 40, seq, flags, 20, payload);
    p
}

fn fill_tcp(p: &mut [u8], l4: usize, seq: u32, flags: u8, tcp_len: usize, payload: &[u8]) {
    put16(p, l4, 40000);
    put16(p, l4 + 2, 5201);
    p[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    p[l4 + 8..l4 + 12].copy_from_slice(&7u32.to_be_bytes());
    p[l4 + 12] = ((tcp_len / 4) as u8) << 4;
    p[l4 + 13] = flags;
    put16(p, l4 + 14, 512);
    if tcp_len > 20 {
        // NOP, NOP, timestamps.
        p[l4 + 20..l4 + 24].copy_from_slice(&[1, 1, 8, 10]);
        p[l4 + 24..l4 + 28].copy_from_slice(&99u32.to_be_bytes());
    }
    p[l4 + tcp_len..].copy_from_slice(payload);
    let (src, dst) = if l4 == 20 {
        (12..16, 16..20)
    } else {
        (8..24, 24..40)
    };
    let pseudo = pseudo_sum(&p[src], &p[dst], PROTO_TCP, p.len() - l4);
    let csum = !fold(sum(&p[l4..], pseudo));
    put16(p, l4 + 16, csum);
}

fn valid_l4(p: &[u8], proto: u8) -> bool {
    let (l4, src, dst) = if p[0] >> 4 == 4 {
        (usize::from(p[0] & 15) * 4, 12..16, 16..20)
    } else {
        (40, 8..24, 24..40)
    };
    fold(sum(
        &p[l4..],
        pseudo_sum(&p[src], &p[dst], proto, p.len() - l4),
    )) == 0xFFFF
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Builds the super-packet for `segments` as a program writes it, and
/// splits it back as if the kernel had handed it over.
fn round_trip(segments: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice)).expect("a run");
    assert_eq!(run.len(), segments.len(), "one run");
    let (hdr, headers) = coalesced_headers(run.segments());
    let mut packet = headers;
    for s in run.segments() {
        packet.extend_from_slice(payload_of(s));
    }
    let hdr = VnetHdr::parse(&hdr.encode()).unwrap();
    let sp = Superpacket::new(&hdr, &packet).expect("splittable");
    (0..sp.count())
        .map(|i| {
            let mut out = vec![0u8; sp.segment_len(i)];
            sp.write(i, &mut out);
            out
        })
        .collect()
}

#[test]
fn the_header_round_trips_in_host_order() {
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
    };
    let bytes = hdr.encode();
    assert_eq!(bytes[..2], [1, 1]);
    assert_eq!(bytes[2..4], 52u16.to_ne_bytes());
    assert_eq!(VnetHdr::parse(&bytes), Some(hdr));
    assert!(hdr.is_gso());
    assert!(!VnetHdr::default().is_gso());
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
}

#[test]
fn tcp4_segments_coalesce_and_split_back_exactly() {
    let segments: Vec<_> = (0..5u16)
        .map(|i| {
            let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let len = if i == 4 { 700 } else { 1000 };
            tcp4(
                100 + i,
                1000 + 1000 * u32::from(i),
                flags,
                &data(len, i as u8),
                true,
            )
        })
        .collect();
    assert_eq!(round_trip(&segments), segments);
}

#[test]
fn tcp6_segments_coalesce_and_split_back_exactly() {
    let segments: Vec<_> = (0..3u32)
        .map(|i| tcp6(5 + 1200 * i, TCP_ACK, &data(1200, i as u8)))
        .collect();
    assert_eq!(round_trip(&segments), segments);
}

#[test]
fn what_may_not_coalesce_stays_apart() {
    let a = tcp4(1, 0, TCP_ACK, &data(100, 1), false);
    let next = |seq, flags, len, seed| tcp4(2, seq, flags, &data(len, seed), false);
    let runs = |packets: &[Vec<u8>]| {
        run_from(&packets[0], packets[1..].iter().map(Vec::as_slice)).map_or(1, |run| run.len())
    };
    assert_eq!(runs(&[a.clone(), next(100, TCP_ACK, 100, 2)]), 2);
    // A gap, a retransmission, a larger segment after a smaller one.
    assert_eq!(runs(&[a.clone(), next(101, TCP_ACK, 100, 2)]), 1);
    assert_eq!(runs(&[a.clone(), next(0, TCP_ACK, 100, 2)]), 1);
    assert_eq!(
        runs(&[
            a.clone(),
            next(100, TCP_ACK, 50, 2),
            next(150, TCP_ACK, 50, 3)
        ]),
        2
    );
    assert_eq!(runs(&[a.clone(), next(100, TCP_ACK, 101, 2)]), 1);
    // PSH ends a run; SYN, FIN or RST never join one.
    let psh = tcp4(1, 0, TCP_ACK | TCP_PSH, &data(100, 1), false);
    assert_eq!(runs(&[psh, next(100, TCP_ACK, 100, 2)]), 1);
    assert_eq!(runs(&[a.clone(), next(100, TCP_ACK | TCP_FIN, 100, 2)]), 1);
    // A bad checksum: the kernel would not check it in a super-packet.
    let mut corrupt = next(100, TCP_ACK, 100, 2);
    corrupt[50] ^= 1;
    assert_eq!(runs(&[a.clone(), corrupt]), 1);
    // Not TCP, or no payload.
    assert!(Segment::parse(&[0x45, 0, 0, 20]).is_none());
    assert!(Segment::parse(&tcp4(1, 0, TCP_ACK, &[], false)).is_none());
}

#[test]
fn a_run_holds_at_most_max_segments() {
    // 100-byte payloads: 140 would fit in 64 KB, the segment bound stops
    // the run first, and what is left starts a run of its own.
    let segments: Vec<Vec<u8>> = (0..140u32)
        .map(|i| tcp4(i as u16, i * 100, TCP_ACK, &data(100, i as u8), false))
        .collect();
    let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice)).expect("a run");
    assert_eq!(run.len(), MAX_SEGMENTS);
    let rest = &segments[MAX_SEGMENTS..];
    let next = run_from(&rest[0], rest[1..].iter().map(Vec::as_slice)).expect("a second run");
    assert_eq!(next.len(), 140 - MAX_SEGMENTS);
}

#[test]
fn a_run_stops_short_of_64_kilobytes_and_fragments_never_join() {
    // 1448-byte payloads: 45 fit under 65,535 bytes with the headers, 46
    // would not.
    let segments: Vec<Vec<u8>> = (0..50u32)
        .map(|i| tcp4(i as u16, i * 1448, TCP_ACK, &data(1448, i as u8), false))
        .collect();
    let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice)).expect("a run");
    assert_eq!(run.len(), 45);
    let (_, headers) = coalesced_headers(run.segments());
    assert!(headers.len() + 45 * 1448 <= 65_535);

    // A fragment (more fragments, offset 0) of the right length: never a
    // segment of a run.
    let mut fragment = tcp4(1, 0, TCP_ACK, &data(100, 1), false);
    put16(&mut fragment, 6, 0x2000);
    refresh(&mut fragment);
    assert!(Segment::parse(&fragment).is_none());
    let mut offset = tcp4(1, 0, TCP_ACK, &data(100, 1), false);
    put16(&mut offset, 6, 0x0001);
    refresh(&mut offset);
    assert!(Segment::parse(&offset).is_none());
}

#[test]
fn a_superpackets_own_headers_say_its_length_and_sum_as_the_kernel_reads_them() {
    // The kernel takes the super-packet as a packet: its IPv4 total length
    // and header checksum, or its IPv6 payload length, must be its own,
    // and the TCP checksum field the pseudo-header's sum over all of it.
    let v4: Vec<Vec<u8>> = (0..3u32)
        .map(|i| tcp4(i as u16, i * 500, TCP_ACK, &data(500, i as u8), true))
        .collect();
    let v6: Vec<Vec<u8>> = (0..3u32)
        .map(|i| tcp6(i * 500, TCP_ACK, &data(500, i as u8)))
        .collect();
    for segments in [v4, v6] {
        let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice)).expect("a run");
        assert_eq!(run.len(), 3);
        let (hdr, headers) = coalesced_headers(run.segments());
        let total = headers.len() + 3 * 500;
        let (l4, src, dst) = if headers[0] >> 4 == 4 {
            assert_eq!(usize::from(get16(&headers, 2)), total);
            assert_eq!(fold(sum(&headers[..20], 0)), 0xFFFF, "IPv4 header checksum");
            (20, 12..16, 16..20)
        } else {
            assert_eq!(usize::from(get16(&headers, 4)), total - 40);
            (40, 8..24, 24..40)
        };
        let pseudo = fold(pseudo_sum(
            &headers[src],
            &headers[dst],
            PROTO_TCP,
            total - l4,
        ));
        assert_eq!(get16(&headers, l4 + 16), pseudo);
        assert_eq!(usize::from(hdr.hdr_len), headers.len());
        assert_eq!(hdr.gso_size, 500);
    }
}

#[test]
fn a_segment_that_does_not_continue_a_run_ends_it_even_if_a_later_one_would() {
    let a = tcp4(1, 0, TCP_ACK, &data(100, 1), false);
    let gap = tcp4(2, 150, TCP_ACK, &data(100, 2), false);
    let after_a = tcp4(3, 100, TCP_ACK, &data(100, 3), false);
    assert!(run_from(&a, [gap.as_slice(), after_a.as_slice()].into_iter()).is_none());
}

#[test]
fn offloads_are_named_and_taken_by_name() {
    let named = Offloads::from_names(&["csum", "tso6"]).expect("known names");
    assert_eq!(named.names(), ["csum", "tso6"]);
    assert!(named.contains(Offloads::CSUM | Offloads::TSO6));
    assert!(!named.contains(Offloads::TSO4));
    assert_eq!(Offloads::from_names(&[]), Some(Offloads::default()));
    assert_eq!(Offloads::from_names(&["csum", "gro"]), None);
    // A name given twice is still that offload.
    assert_eq!(
        Offloads::from_names(&["csum", "csum"]),
        Offloads::from_names(&["csum"])
    );
}

#[test]
fn a_batch_takes_segments_up_to_its_byte_bound_exactly() {
    assert_eq!(
        batch_extent([MAX_BATCH_BYTES - 100, 100, 1].into_iter()),
        (2, MAX_BATCH_BYTES)
    );
    assert!(Pending::default().is_empty());
}

/// Puts right the IPv4 header checksum and the TCP checksum of `p` (a
/// segment from `tcp4`/`tcp6` that a test changed).
fn refresh(p: &mut [u8]) {
    let (l4, src, dst) = if p[0] >> 4 == 4 {
        put16(p, 10, 0);
        let csum = !fold(sum(&p[..20], 0));
        put16(p, 10, csum);
        (20, 12..16, 16..20)
    } else {
        (40, 8..24, 24..40)
    };
    put16(p, l4 + 16, 0);
    let pseudo = pseudo_sum(&p[src], &p[dst], PROTO_TCP, p.len() - l4);
    let csum = !fold(sum(&p[l4..], pseudo));
    put16(p, l4 + 16, csum);
}

#[test]
fn segments_that_differ_in_any_field_a_run_shares_stay_apart() {
    // Each change to the second segment, its checksums put right, so that
    // only the field tells them apart.
    let runs = |packets: &[Vec<u8>]| {
        run_from(&packets[0], packets[1..].iter().map(Vec::as_slice)).map_or(1, |run| run.len())
    };
    let v4 = |seq, seed| tcp4(7, seq, TCP_ACK, &data(100, seed), true);
    let changes_v4: [(&str, usize, u8); 12] = [
        ("TOS", 1, 0x10),
        ("DF", 6, 0x00),
        ("TTL", 8, 63),
        ("source address", 15, 9),
        ("destination address", 19, 9),
        ("source port", 21, 0x41),
        ("destination port", 23, 0x52),
        ("ack", 31, 8),
        ("window", 35, 1),
        ("urgent pointer", 39, 1),
        ("options", 47, 100),
        ("option kind", 42, 2),
    ];
    assert_eq!(runs(&[v4(0, 1), v4(100, 2)]), 2, "alike, they join");
    for (field, at, value) in changes_v4 {
        let mut other = v4(100, 2);
        assert_ne!(other[at], value, "{field} changes");
        other[at] = value;
        refresh(&mut other);
        assert!(valid_l4(&other, PROTO_TCP));
        assert_eq!(runs(&[v4(0, 1), other]), 1, "another {field} joined");
    }
    let v6 = |seq, seed| tcp6(seq, TCP_ACK, &data(100, seed));
    let changes_v6: [(&str, usize, u8); 6] = [
        ("traffic class", 1, 0x40),
        ("flow label", 3, 7),
        ("hop limit", 7, 63),
        ("source address", 23, 9),
        ("destination address", 39, 9),
        ("window", 55, 1),
    ];
    assert_eq!(runs(&[v6(0, 1), v6(100, 2)]), 2, "alike, they join");
    for (field, at, value) in changes_v6 {
        let mut other = v6(100, 2);
        assert_ne!(other[at], value, "{field} changes");
        other[at] = value;
        refresh(&mut other);
        assert!(valid_l4(&other, PROTO_TCP));
        assert_eq!(runs(&[v6(0, 1), other]), 1, "another {field} joined");
    }
    // An IPv6 segment never continues an IPv4 run, nor the other way.
    assert_eq!(runs(&[v4(0, 1), v6(100, 2)]), 1);
    assert_eq!(runs(&[v6(0, 1), v4(100, 2)]), 1);
}

#[test]
fn cwr_stays_on_the_first_segment_fin_and_psh_on_the_last() {
    let segments: Vec<_> = (0..3u32)
        .map(|i| tcp4(1, 1000 * i, TCP_ACK, &data(1000, i as u8), false))
        .collect();
    let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice)).expect("a run");
    let (hdr, mut packet) = coalesced_headers(run.segments());
    for s in run.segments() {
        packet.extend_from_slice(payload_of(s));
    }
    // As the kernel hands it over: CWR, PSH and FIN on the super-packet.
    packet[33] |= TCP_CWR | TCP_PSH | TCP_FIN;
    let sp = Superpacket::new(&hdr, &packet).expect("splittable");
    let flags: Vec<u8> = (0..sp.count())
        .map(|i| {
            let mut out = vec![0u8; sp.segment_len(i)];
            sp.write(i, &mut out);
            assert!(valid_l4(&out, PROTO_TCP));
            out[33]
        })
        .collect();
    assert_eq!(
        flags,
        [TCP_ACK | TCP_CWR, TCP_ACK, TCP_ACK | TCP_PSH | TCP_FIN]
    );
}

/// A UDP/IPv4 datagram of `payload` whose checksum comes out as zero: the
/// word at payload offset 0 is chosen for it.
fn udp4_summing_to_zero(payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload_len];
    p[0] = 0x45;
    let total = p.len() as u16;
    put16(&mut p, 2, total);
    p[8] = 64;
    p[9] = PROTO_UDP;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    put16(&mut p, 20, 1111);
    put16(&mut p, 22, 2222);
    put16(&mut p, 24, (8 + payload_len) as u16);
    p[30..].copy_from_slice(&data(payload_len - 2, 5));
    let pseudo = pseudo_sum(&[10, 0, 0, 1], &[10, 0, 0, 2], PROTO_UDP, 8 + payload_len);
    // With this word the sum is all ones, and its complement zero.
    let word = !fold(sum(&p[20..], pseudo));
    put16(&mut p, 28, word);
    assert_eq!(!fold(sum(&p[20..], pseudo)), 0);
    p
}

#[test]
fn a_udp_checksum_that_comes_out_zero_is_sent_as_all_ones() {
    // Zero in a UDP checksum means "none": a receiver would not check it.
    let mut udp = udp4_summing_to_zero(200);
    let pseudo = fold(pseudo_sum(&[10, 0, 0, 1], &[10, 0, 0, 2], PROTO_UDP, 208));
    put16(&mut udp, 26, pseudo);
    let partial = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    complete_checksum(&partial, &mut udp).expect("completed");
    assert_eq!(get16(&udp, 26), 0xFFFF);
    assert!(valid_l4(&udp, PROTO_UDP));

    // Split from a super-packet: its first datagram's checksum is zero.
    let mut sp = udp4_summing_to_zero(100);
    sp.extend_from_slice(&data(100, 6));
    let total = sp.len() as u16;
    put16(&mut sp, 2, total);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 100,
        csum_start: 20,
        csum_offset: 6,
    };
    let split = Superpacket::new(&hdr, &sp).expect("splittable");
    let mut first = vec![0u8; split.segment_len(0)];
    split.write(0, &mut first);
    assert_eq!(get16(&first, 26), 0xFFFF);
    assert!(valid_l4(&first, PROTO_UDP));
}

#[test]
fn a_kernel_style_tcp_superpacket_splits_into_valid_packets() {
    // As the kernel hands one over: IPv4 total length of the whole, TCP
    // checksum holding only the pseudo-header's sum.
    let payload = data(3 * 1448 + 100, 9);
    let mut packet = tcp4(7, 500, TCP_ACK | TCP_PSH, &payload, true);
    put16(&mut packet, 2, 0);
    put16(&mut packet, 36, 0x1234);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
    };
    let sp = Superpacket::new(&hdr, &packet).unwrap();
    assert_eq!(sp.count(), 4);
    assert_eq!(sp.segment_size(), 52 + 1448);
    let mut got = Vec::new();
    for i in 0..4 {
        let mut out = vec![0u8; sp.segment_len(i)];
        sp.write(i, &mut out);
        assert!(valid_l4(&out, PROTO_TCP), "segment {i}");
        assert_eq!(fold(sum(&out[..20], 0)), 0xFFFF, "IP header checksum {i}");
        assert_eq!(usize::from(get16(&out, 2)), out.len());
        assert_eq!(get16(&out, 4), 7 + i as u16);
        assert_eq!(get32(&out, 24), 500 + 1448 * i as u32);
        // PSH only on the last.
        assert_eq!(out[33] & TCP_PSH != 0, i == 3);
        got.extend_from_slice(&out[52..]);
    }
    assert_eq!(got, payload);
    let total: usize = (0..sp.count()).map(|i| sp.segment_len(i)).sum();
    assert_eq!(total, 4 * 52 + payload.len());
}

#[test]
fn a_udp_superpacket_splits_into_datagrams() {
    let payload = data(2500, 3);
    let mut p = vec![0u8; 28 + payload.len()];
    p[0] = 0x45;
    p[8] = 64;
    p[9] = PROTO_UDP;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    put16(&mut p, 20, 1111);
    put16(&mut p, 22, 2222);
    p[28..].copy_from_slice(&payload);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 1000,
        csum_start: 20,
        csum_offset: 6,
    };
    let sp = Superpacket::new(&hdr, &p).unwrap();
    assert_eq!(sp.count(), 3);
    for i in 0..3 {
        let mut out = vec![0u8; sp.segment_len(i)];
        sp.write(i, &mut out);
        assert!(valid_l4(&out, PROTO_UDP));
        assert_eq!(usize::from(get16(&out, 24)), out.len() - 20);
        assert_eq!(&out[28..], &payload[i * 1000..(i * 1000 + 1000).min(2500)]);
    }
}

#[test]
fn a_partial_checksum_is_completed() {
    let mut udp = vec![0u8; 28 + 11];
    udp[0] = 0x45;
    udp[9] = PROTO_UDP;
    udp[12..16].copy_from_slice(&[10, 0, 0, 1]);
    udp[16..20].copy_from_slice(&[10, 0, 0, 2]);
    put16(&mut udp, 24, 19);
    udp[28..].copy_from_slice(b"hello world");
    // What the kernel leaves: the pseudo-header's sum, folded.
    let pseudo = fold(pseudo_sum(&[10, 0, 0, 1], &[10, 0, 0, 2], PROTO_UDP, 19));
    put16(&mut udp, 26, pseudo);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    complete_checksum(&hdr, &mut udp).unwrap();
    assert!(valid_l4(&udp, PROTO_UDP));
    // A packet without the flag is left as it is.
    let before = udp.clone();
    complete_checksum(&VnetHdr::default(), &mut udp).unwrap();
    assert_eq!(udp, before);
    let bad = VnetHdr {
        csum_start: 60,
        ..hdr
    };
    assert_eq!(complete_checksum(&bad, &mut udp), Err(Malformed::BadHeader));
}

#[test]
fn malformed_superpackets_are_refused_not_panicked_on() {
    let packet = tcp4(1, 0, TCP_ACK, &data(100, 1), false);
    let hdr = |gso_type, csum_start, gso_size| VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: 40,
        gso_size,
        csum_start,
        csum_offset: 16,
    };
    assert_eq!(
        Superpacket::new(&hdr(3, 20, 10), &packet).err(),
        Some(Malformed::UnknownGso)
    );
    assert_eq!(
        Superpacket::new(&hdr(GSO_TCPV6, 40, 10), &packet).err(),
        Some(Malformed::BadHeader)
    );
    assert_eq!(
        Superpacket::new(&hdr(GSO_TCPV4, 24, 10), &packet).err(),
        Some(Malformed::BadHeader)
    );
    assert_eq!(
        Superpacket::new(&hdr(GSO_TCPV4, 20, 0), &packet).err(),
        Some(Malformed::BadHeader)
    );
    assert_eq!(
        Superpacket::new(&hdr(GSO_TCPV4, 20, 10), &packet[..30]).err(),
        Some(Malformed::BadHeader)
    );
    // Too many segments.
    assert!(Superpacket::new(&hdr(GSO_TCPV4, 20, 1), &packet).is_ok());
    let big = tcp4(1, 0, TCP_ACK, &data(300, 1), false);
    assert_eq!(
        Superpacket::new(&hdr(GSO_TCPV4, 20, 1), &big).err(),
        Some(Malformed::BadHeader)
    );
}

#[test]
fn offloads_degrade_to_what_the_kernel_takes() {
    // A kernel without USO (before 6.2) refuses its bits with EINVAL.
    let no_uso = |bits: u32| {
        if bits & (Offloads::USO4 | Offloads::USO6) != 0 {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            Ok(())
        }
    };
    let got = negotiate(no_uso);
    assert_eq!(got.names(), ["csum", "tso4", "tso6", "tso_ecn"]);
    // One that takes everything, and one that takes nothing at all.
    assert_eq!(negotiate(|_| Ok(())).names().len(), 6);
    let refused = negotiate(|_| Err(std::io::Error::from_raw_os_error(libc::EINVAL)));
    assert_eq!(refused, Offloads::default());
    assert!(refused.names().is_empty());
    // Asked in order: the first accepted wins.
    let mut asked = Vec::new();
    negotiate(|bits| {
        asked.push(bits);
        if bits == Offloads::CSUM {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
    });
    assert_eq!(asked, Offloads::LADDER[..3]);
}

#[test]
fn pending_segments_come_out_in_order_and_batches_keep_their_bounds() {
    let payload = data(100 * 600 + 17, 5);
    let mut packet = tcp4(1, 0, TCP_ACK, &payload, false);
    put16(&mut packet, 2, 0);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size: 600,
        csum_start: 20,
        csum_offset: 16,
    };
    let sp = Superpacket::new(&hdr, &packet).unwrap();
    assert_eq!(sp.count(), 101);
    let mut pending = Pending::default();
    pending.keep(&sp, 1);
    assert!(!pending.is_empty());
    // The first batch: at most MAX_BATCH_SEGMENTS and MAX_BATCH_BYTES.
    let (bytes, size) = pending.take_batch(|b, size| (b.to_vec(), size)).unwrap();
    assert_eq!(size, 640);
    assert_eq!(bytes.len(), 64 * 640);
    let mut seen = vec![bytes[..640].to_vec()];
    assert!(!pending.is_empty(), "36 left after one batch");
    while let Some(segment) = pending.pop(<[u8]>::to_vec) {
        seen.push(segment);
    }
    assert!(pending.is_empty());
    assert_eq!(seen.len(), 1 + 36);
    assert_eq!(get32(&seen[0], 24), 600, "the second segment first");
    assert_eq!(get32(seen.last().unwrap(), 24), 100 * 600);
    assert_eq!(
        batch_extent([70_000, 10].into_iter()),
        (1, 70_000),
        "the first always"
    );
    assert_eq!(batch_extent([40_000, 30_000].into_iter()), (1, 40_000));
}

mod props {
    //! Properties over many inputs, as wireguard-go keeps corpora for its
    //! GRO code: whatever bytes and header arrive, parsing never panics
    //! and never reads past the packet; what the kernel could send splits
    //! into valid packets carrying exactly its payload, which coalesce
    //! back into one run.

    use super::*;
    use proptest::prelude::*;

    fn any_hdr() -> impl Strategy<Value = VnetHdr> {
        (
            any::<u8>(),
            prop_oneof![
                Just(GSO_TCPV4),
                Just(GSO_TCPV6),
                Just(GSO_UDP_L4),
                any::<u8>()
            ],
            any::<u16>(),
            prop_oneof![1u16..2000, any::<u16>()],
            prop_oneof![Just(20u16), Just(40u16), any::<u16>()],
            any::<u16>(),
        )
            .prop_map(
                |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| VnetHdr {
                    flags,
                    gso_type,
                    hdr_len,
                    gso_size,
                    csum_start,
                    csum_offset,
                },
            )
    }

    /// A TCP super-packet as the kernel hands one over, its payload, and
    /// its vnet header.
    fn superpacket() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, VnetHdr)> {
        (
            any::<bool>(),
            1usize..60_000,
            536usize..1460,
            any::<u32>(),
            any::<u8>(),
        )
            .prop_map(|(ipv4, len, mss, seq, seed)| {
                let payload = data(len, seed);
                let (mut packet, l4) = if ipv4 {
                    (tcp4(9, seq, TCP_ACK | TCP_PSH, &payload, true), 20)
                } else {
                    (tcp6(seq, TCP_ACK | TCP_PSH, &payload), 40)
                };
                // As the kernel leaves them: lengths of the whole (IPv4's
                // may be anything), a partial checksum.
                if ipv4 {
                    put16(&mut packet, 2, 0);
                }
                let hdr = VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: if ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
                    hdr_len: (packet.len() - payload.len()) as u16,
                    gso_size: mss as u16,
                    csum_start: l4 as u16,
                    csum_offset: 16,
                };
                (packet, payload, hdr)
            })
    }

    proptest! {
        #[test]
        fn any_header_and_bytes_split_without_panic_or_overrun(
            hdr in any_hdr(),
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let mut copy = bytes.clone();
            let _ = complete_checksum(&hdr, &mut copy);
            if let Ok(sp) = Superpacket::new(&hdr, &bytes) {
                prop_assert!(sp.count() <= MAX_SEGMENTS);
                for i in 0..sp.count() {
                    let len = sp.segment_len(i);
                    prop_assert!(len <= bytes.len());
                    let mut out = vec![0u8; len];
                    sp.write(i, &mut out);
                }
            }
        }

        #[test]
        fn any_segments_parse_and_coalesce_without_panic(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
        ) {
            for p in &packets {
                let _ = Segment::parse(p);
            }
            if let Some(run) = run_from(&packets[0], packets[1..].iter().map(Vec::as_slice)) {
                prop_assert!(run.len() >= 2);
                let (_, headers) = coalesced_headers(run.segments());
                prop_assert!(!headers.is_empty());
            }
        }

        #[test]
        fn a_kernel_superpacket_splits_into_valid_packets_that_coalesce_back(
            (packet, payload, hdr) in superpacket(),
        ) {
            let sp = Superpacket::new(&hdr, &packet).expect("the kernel's shape");
            let segments: Vec<Vec<u8>> = (0..sp.count())
                .map(|i| {
                    let mut out = vec![0u8; sp.segment_len(i)];
                    sp.write(i, &mut out);
                    out
                })
                .collect();
            let mut carried = Vec::new();
            for s in &segments {
                prop_assert!(valid_l4(s, PROTO_TCP));
                let segment = Segment::parse(s).expect("an ordinary TCP segment");
                carried.extend_from_slice(payload_of(&segment));
            }
            prop_assert_eq!(&carried, &payload);
            if segments.len() >= 2 {
                let run = run_from(&segments[0], segments[1..].iter().map(Vec::as_slice))
                    .expect("one flow, in order");
                prop_assert_eq!(run.len(), segments.len());
                prop_assert_eq!(round_trip(&segments), segments);
            }
        }
    }
}
