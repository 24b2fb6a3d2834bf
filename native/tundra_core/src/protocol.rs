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
/// 3: the same requests; a refusal may be answered with
/// `Reply::Refused`, which says why. A server answers a frame in its
/// version: version 2 clients get `Reply::Failed` only.
pub const VERSION: u8 = 3;
/// The oldest version still spoken.
pub const OLDEST_VERSION: u8 = 2;
/// The longest reason a `Reply::Refused` carries.
pub const MAX_WHY: usize = 300;
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
    /// Refused, and why, in words for the person who must act on it
    /// (version 3 on; at most `MAX_WHY` bytes).
    Refused { errno: i32, why: String },
}

impl Reply {
    /// The reply that says `errno` and `why` to a client of `version`.
    pub fn refusal(errno: i32, why: &str, version: u8) -> Reply {
        if version < 3 {
            return Reply::Failed { errno };
        }
        let mut end = why.len().min(MAX_WHY);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        Reply::Refused {
            errno,
            why: why[..end].to_string(),
        }
    }
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

/// A complete frame for `message`, in this version.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    encode_in(message, VERSION)
}

/// A complete frame for `message`, in `version` (a reply is sent in the
/// request's).
pub fn encode_in<T: Serialize>(message: &T, version: u8) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_stdvec(message).map_err(|_| FrameError::Malformed)?;
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_PAYLOAD)
        .ok_or(FrameError::TooLarge(payload.len()))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(version);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks a frame header; returns its version and the payload length
/// that follows.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), FrameError> {
    if header[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = header[4];
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let len = usize::from(u16::from_be_bytes([header[5], header[6]]));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok((version, len))
}

/// Reads one frame from `reader` (whose read deadline the caller sets),
/// never more than `MAX_PAYLOAD` bytes: its version and payload.
pub fn read_frame(reader: &mut impl Read) -> Result<(u8, Vec<u8>), FrameError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    let (version, len) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok((version, payload))
}

/// Reads one frame's payload (see `read_frame`).
pub fn read_payload(reader: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    read_frame(reader).map(|(_version, payload)| payload)
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

    #[test]
    fn a_long_reason_is_cut_back_to_a_character_boundary() {
        // One byte, then two-byte characters: the bound (even) falls
        // inside one.
        let why = format!("a{}", "é".repeat(MAX_WHY));
        let Reply::Refused { why: sent, .. } = Reply::refusal(libc::EACCES, &why, 3) else {
            panic!("a version-3 refusal");
        };
        assert_eq!(sent.len(), MAX_WHY - 1);
        assert_eq!(
            Reply::refusal(libc::EACCES, "why", 2),
            Reply::Failed {
                errno: libc::EACCES
            }
        );
    }

    #[test]
    fn a_frame_of_the_largest_payload_is_taken() {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[5..7].copy_from_slice(&(MAX_PAYLOAD as u16).to_be_bytes());
        assert!(matches!(parse_header(&header), Ok((VERSION, MAX_PAYLOAD))));
        header[5..7].copy_from_slice(&(MAX_PAYLOAD as u16 + 1).to_be_bytes());
        assert!(matches!(
            parse_header(&header),
            Err(FrameError::TooLarge(len)) if len == MAX_PAYLOAD + 1
        ));
    }
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
            Reply::Refused {
                errno: libc::EACCES,
                why: "10.62.0.2/32 is not delegated".into(),
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
    fn each_version_is_answered_in_its_own() {
        // A version 2 frame is read, and its version told.
        let v2 = encode_in(&Request::Create(config()), 2).unwrap();
        assert_eq!(v2[4], 2);
        let (version, payload) = read_frame(&mut &v2[..]).unwrap();
        assert_eq!(version, 2);
        assert_eq!(
            decode::<Request>(&payload).unwrap(),
            Request::Create(config())
        );
        // A refusal says why from version 3 on, only the errno before.
        assert_eq!(
            Reply::refusal(libc::EACCES, "why", 2),
            Reply::Failed {
                errno: libc::EACCES
            }
        );
        assert_eq!(
            Reply::refusal(libc::EACCES, "why", 3),
            Reply::Refused {
                errno: libc::EACCES,
                why: "why".into()
            }
        );
        // A long reason is cut (on a character's boundary) to MAX_WHY.
        let long = "é".repeat(MAX_WHY);
        let Reply::Refused { why, .. } = Reply::refusal(libc::EACCES, &long, 3) else {
            panic!("a refusal with a reason");
        };
        assert!(why.len() <= MAX_WHY && why.len() >= MAX_WHY - 1);
        assert!(encode(&Reply::refusal(libc::EACCES, &long, 3)).is_ok());
        for version in [1, VERSION + 1] {
            let mut frame = encode(&Request::Create(config())).unwrap();
            frame[4] = version;
            assert!(matches!(
                read_frame(&mut &frame[..]),
                Err(FrameError::UnsupportedVersion(v)) if v == version
            ));
        }
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
