//! Properties of the two request decoders the server runs on untrusted
//! bytes: the current framing (`protocol`) and 0.x's fixed struct
//! (`legacy`). Whatever arrives, decoding returns (never panics, never
//! reads past the frame), and what it accepts is a valid configuration;
//! what a client encodes, the server decodes unchanged.

use std::net::IpAddr;

use proptest::prelude::*;
use tundra_core::legacy::{self, REQUEST_LEN};
use tundra_core::protocol::{self, Reply, Request, HEADER_LEN, MAGIC, MAX_PAYLOAD, VERSION};
use tundra_core::{Change, Cidr, DeviceConfig, Mode, RouteSpec};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

/// Any configuration, valid or not: the wire carries what clients send.
fn config() -> impl Strategy<Value = DeviceConfig> {
    (
        ip(),
        proptest::option::of(ip()),
        any::<u8>(),
        any::<u32>(),
        proptest::option::of("[ -~]{0,20}"),
        any::<bool>(),
        any::<u16>(),
        (
            any::<bool>(),
            proptest::option::of(any::<[u8; 6]>()),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(address, dstaddr, prefix, mtu, name, up, queues, (tap, mac, ipv6, offload))| {
                DeviceConfig {
                    address,
                    dstaddr,
                    prefix,
                    mtu,
                    name,
                    up,
                    queues,
                    mode: if tap { Mode::Tap } else { Mode::Tun },
                    mac,
                    ipv6,
                    offload,
                }
            },
        )
}

/// Bytes that look like a frame often enough to get past the header.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..700),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(len, body)| {
            let mut frame = MAGIC.to_vec();
            frame.push(VERSION);
            frame.extend_from_slice(&(len % (MAX_PAYLOAD as u16 + 8)).to_be_bytes());
            frame.extend(body);
            frame
        }),
        config()
            .prop_flat_map(|c| {
                let frame = protocol::encode(&Request::Create(c)).expect("encodes");
                let len = frame.len();
                (Just(frame), 0..len, any::<u8>())
            })
            .prop_map(|(mut frame, at, byte)| {
                frame[at] = byte;
                frame
            }),
    ]
}

/// A change request routing some prefix, with one byte of its frame
/// replaced: host bits and lengths of every kind reach the decoder.
fn mutated_route_frame() -> impl Strategy<Value = Vec<u8>> {
    (ip(), any::<u8>(), proptest::option::of(any::<u32>()))
        .prop_filter_map("a prefix", |(addr, len, metric)| {
            let dst = Cidr::new(addr, len % 129)?;
            let change = Change::AddRoute(RouteSpec { dst, metric });
            protocol::encode(&Request::Change(change)).ok()
        })
        .prop_flat_map(|frame| {
            let len = frame.len();
            (Just(frame), HEADER_LEN..len, any::<u8>())
        })
        .prop_map(|(mut frame, at, byte)| {
            frame[at] = byte;
            frame
        })
}

proptest! {
    #[test]
    fn every_prefix_a_frame_carries_is_a_network(frame in mutated_route_frame()) {
        let Ok(payload) = protocol::read_payload(&mut &frame[..]) else {
            return Ok(());
        };
        if let Ok(Request::Change(Change::AddRoute(route) | Change::RemoveRoute(route))) =
            protocol::decode::<Request>(&payload)
        {
            let dst = route.dst;
            prop_assert_eq!(Cidr::exact(dst.network(), dst.prefix_len()), Some(dst));
            prop_assert_eq!(dst.to_string().parse::<Cidr>(), Ok(dst));
        }
    }

    #[test]
    fn decoding_any_bytes_returns_and_never_reads_past_the_frame(bytes in frame_like()) {
        let mut reader = &bytes[..];
        let payload = protocol::read_payload(&mut reader);
        if let Ok(payload) = &payload {
            prop_assert!(payload.len() <= MAX_PAYLOAD);
            prop_assert_eq!(reader.len(), bytes.len() - HEADER_LEN - payload.len());
            let _ = protocol::decode::<Request>(payload);
            let _ = protocol::decode::<Reply>(payload);
        }
    }

    #[test]
    fn what_a_client_encodes_the_server_decodes_unchanged(c in config()) {
        let request = Request::Create(c);
        let frame = protocol::encode(&request).expect("every config fits a frame");
        let payload = protocol::read_payload(&mut &frame[..]).expect("frame");
        prop_assert_eq!(protocol::decode::<Request>(&payload).expect("decodes"), request);
    }

    #[test]
    fn a_legacy_request_of_any_bytes_is_refused_or_valid(bytes in any::<[u8; 32]>(), rest in proptest::collection::vec(any::<u8>(), REQUEST_LEN - 32)) {
        let mut request = [0u8; REQUEST_LEN];
        request[..32].copy_from_slice(&bytes);
        request[32..].copy_from_slice(&rest);
        if let Ok(config) = legacy::parse_request(&request) {
            prop_assert_eq!(config.validate(), Ok(()));
        }
    }

    #[test]
    fn a_legacy_request_with_real_fields_gives_their_config(
        addr in ip(), peer in proptest::option::of(ip()), mtu in 0i32..70000, garbage in any::<u8>()
    ) {
        let mut request = [0u8; REQUEST_LEN];
        request[8..16].copy_from_slice(&152u64.to_ne_bytes());
        let put = |request: &mut [u8; REQUEST_LEN], at: usize, text: &str| {
            request[at..at + text.len()].copy_from_slice(text.as_bytes());
        };
        put(&mut request, 16, &addr.to_string());
        if let Some(peer) = peer {
            put(&mut request, 62, &peer.to_string());
        }
        request[156..160].copy_from_slice(&mtu.to_ne_bytes());
        // Padding bytes carry no meaning.
        request[4] = garbage;
        request[154] = garbage;
        match legacy::parse_request(&request) {
            Ok(config) => {
                prop_assert_eq!(config.address, addr);
                prop_assert_eq!(config.dstaddr, peer);
                prop_assert_eq!(config.validate(), Ok(()));
            }
            Err(legacy::LegacyError::Invalid(option)) => {
                // Refused only for a reason the fields really have.
                let mut c = DeviceConfig::new(addr);
                c.dstaddr = peer;
                c.mtu = if mtu == 0 { 1500 } else { mtu as u32 };
                prop_assert_eq!(c.validate(), Err(option));
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}
