//! The wire protocol between the library and `tundra_server`, defined once
//! and used by both sides.
//!
//! A frame is `MAGIC` (4 bytes, `TNDR`), a version byte, a big-endian `u16`
//! payload length, then the payload: a postcard-encoded [`Request`] or
//! [`Reply`]. The reply to a successful create carries the device fd as
//! SCM_RIGHTS ancillary data on the same `sendmsg`; a change request
//! carries the fd of the device to change the same way, as proof that the
//! client holds it.
//!
//! A 0.x C client's request starts with its 4-byte request type (0 for
//! create), so its first byte is never `T`: the two can't be confused.
#![forbid(unsafe_code)]

use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Change, ConfigError, DeviceConfig};

pub const MAGIC: [u8; 4] = *b"TNDR";
/// 2: `DeviceConfig` has `queues`, `mode`, `mac` and `ipv6`, a reply to a
/// create carries one fd per queue, and there are change requests.
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 7;
/// Largest payload either side accepts. A create request is well under 100
/// bytes; anything larger is refused before it is read.
pub const MAX_PAYLOAD: usize = 512;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create and configure a device; the reply carries its fd.
    Create(DeviceConfig),
    /// Change the device whose fd is attached to this frame.
    Change(Change),
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The device was made; its fds (one per queue) are attached to this
    /// frame.
    Created { name: String },
    /// The change was made.
    Changed,
    /// The request was refused or failed with this errno (EACCES for a
    /// peer that may not use the server, EPROTO for a malformed frame,
    /// EPROTONOSUPPORT for an unknown version, ...).
    Failed { errno: i32 },
    /// The configuration was invalid; names the option.
    Invalid { option: ConfigError },
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    BadMagic,
    UnsupportedVersion(u8),
    TooLarge(usize),
    Malformed,
}

impl FrameError {
    /// The errno a reply reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FrameError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FrameError::BadMagic | FrameError::Malformed => libc::EPROTO,
            FrameError::UnsupportedVersion(_) => libc::EPROTONOSUPPORT,
            FrameError::TooLarge(_) => libc::EMSGSIZE,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// A complete frame for `message`.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_stdvec(message).map_err(|_| FrameError::Malformed)?;
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_PAYLOAD)
        .ok_or(FrameError::TooLarge(payload.len()))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(VERSION);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks a frame header; returns the payload length that follows.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    if header[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if header[4] != VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    let len = usize::from(u16::from_be_bytes([header[5], header[6]]));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame's payload from `reader` (whose read deadline the caller
/// sets), never more than `MAX_PAYLOAD` bytes.
pub fn read_payload(reader: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    let len = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok(payload)
}

/// Decodes a payload; the whole payload must be one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((message, [])) => Ok(message),
        _ => Err(FrameError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn config() -> DeviceConfig {
        let mut c = DeviceConfig::new("fd00::2".parse::<IpAddr>().unwrap());
        c.dstaddr = Some("fd00::1".parse().unwrap());
        c.prefix = 64;
        c.name = Some("tvpn%d".into());
        c
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let change = Change::AddRoute(crate::RouteSpec {
            dst: "10.8.0.0/16".parse().unwrap(),
            metric: Some(5),
        });
        for request in [Request::Create(config()), Request::Change(change)] {
            let frame = encode(&request).unwrap();
            assert_eq!(&frame[..4], b"TNDR");
            let payload = read_payload(&mut &frame[..]).unwrap();
            assert_eq!(decode::<Request>(&payload).unwrap(), request);
        }

        for reply in [
            Reply::Created {
                name: "tun0".into(),
            },
            Reply::Changed,
            Reply::Failed {
                errno: libc::EACCES,
            },
            Reply::Invalid {
                option: ConfigError::Mtu,
            },
        ] {
            let frame = encode(&reply).unwrap();
            let payload = read_payload(&mut &frame[..]).unwrap();
            assert_eq!(decode::<Reply>(&payload).unwrap(), reply);
        }
    }

    #[test]
    fn bad_frames_are_refused_with_their_reason() {
        let mut frame = encode(&Request::Create(config())).unwrap();
        frame[4] = 9;
        assert!(matches!(
            read_payload(&mut &frame[..]),
            Err(FrameError::UnsupportedVersion(9))
        ));

        let legacy_create = [0u8; 160];
        assert!(matches!(
            read_payload(&mut &legacy_create[..]),
            Err(FrameError::BadMagic)
        ));

        let huge = [b'T', b'N', b'D', b'R', VERSION, 0xFF, 0xFF];
        assert!(matches!(
            read_payload(&mut &huge[..]),
            Err(FrameError::TooLarge(65535))
        ));

        let garbage = [b'T', b'N', b'D', b'R', VERSION, 0, 3, 0xFF, 0xFF, 0xFF];
        let payload = read_payload(&mut &garbage[..]).unwrap();
        assert!(matches!(
            decode::<Request>(&payload),
            Err(FrameError::Malformed)
        ));

        let truncated = &encode(&Request::Create(config())).unwrap()[..10];
        assert!(matches!(
            read_payload(&mut &truncated[..]),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut payload = postcard::to_stdvec(&Request::Create(config())).unwrap();
        payload.push(0);
        assert!(matches!(
            decode::<Request>(&payload),
            Err(FrameError::Malformed)
        ));
    }
}
