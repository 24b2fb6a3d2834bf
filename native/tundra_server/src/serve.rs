//! One client connection: check the peer, read one bounded request under a
//! deadline, validate it, create the device, reply with its fd. Nothing a
//! client sends can take the server down: every failure becomes an error
//! reply or a closed connection, and one log line.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use nix::unistd::Gid;
use sendfd::SendWithFd;
use tundra_core::legacy::{self, LegacyError};
use tundra_core::platform;
use tundra_core::protocol::{self, FrameError, Reply, Request};
use tundra_core::{errno, DeviceConfig, Framing};

use crate::access::{self, Peer};

/// How long a client may take to send its request or take its reply.
pub const DEADLINE: Duration = Duration::from_secs(2);

pub struct Context {
    pub group: Gid,
    pub max_devices_per_uid: usize,
    /// Per uid, an upper bound on its live devices: the count found by the
    /// last scan plus the devices made since. Devices only go away on
    /// their own, so the bound never undercounts; the (linear) scan of the
    /// system's devices runs only when the bound reaches the limit.
    /// The lock also serialises "check the limit, then create".
    pub live_bound: Mutex<HashMap<u32, usize>>,
}

fn log(peer: Option<&Peer>, device: &str, outcome: &str) {
    match peer {
        Some(p) => match p.pid {
            Some(pid) => eprintln!(
                "tundra_server: uid={} pid={pid} device={device} {outcome}",
                p.uid
            ),
            None => eprintln!(
                "tundra_server: uid={} pid=? device={device} {outcome}",
                p.uid
            ),
        },
        None => eprintln!("tundra_server: uid=? pid=? device={device} {outcome}"),
    }
}

fn reply(stream: &mut UnixStream, reply: &Reply) {
    // A client that went away cannot be answered; nothing else to do.
    if let Ok(frame) = protocol::encode(reply) {
        let _ = stream.write_all(&frame);
    }
}

/// Refuses a connection accepted beyond the client limit.
pub fn refuse_busy(mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    reply(
        &mut stream,
        &Reply::Failed {
            errno: libc::EAGAIN,
        },
    );
    log(None, "-", "refused: too many clients");
}

pub fn handle(mut stream: UnixStream, ctx: &Context) {
    if stream.set_read_timeout(Some(DEADLINE)).is_err()
        || stream.set_write_timeout(Some(DEADLINE)).is_err()
    {
        return;
    }
    let peer = match access::peer(&stream) {
        Ok(peer) => peer,
        Err(e) => return log(None, "-", &format!("no peer credentials: {e}")),
    };
    if !access::allowed(&peer, ctx.group) {
        reply(
            &mut stream,
            &Reply::Failed {
                errno: libc::EACCES,
            },
        );
        return log(
            Some(&peer),
            "-",
            "refused: not root and not in the group (eacces)",
        );
    }

    // A current frame starts with MAGIC, a 0.x create request with its
    // type, 0: the first four bytes tell the two apart.
    let mut first = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut first) {
        return log(Some(&peer), "-", &format!("dropped: {}", read_failure(&e)));
    }
    if first == legacy::CREATE_PREFIX {
        return handle_legacy(stream, ctx, &peer, first);
    }

    let request = protocol::read_payload(&mut (&first[..]).chain(&mut stream))
        .and_then(|p| protocol::decode::<Request>(&p));
    let config = match request {
        Ok(Request::Create(config)) => config,
        Err(FrameError::Io(e)) => {
            // Silent, slow or vanished client: drop it without a reply.
            return log(Some(&peer), "-", &format!("dropped: {}", read_failure(&e)));
        }
        Err(bad) => {
            reply(&mut stream, &Reply::Failed { errno: bad.errno() });
            return log(Some(&peer), "-", &format!("bad request: {bad:?}"));
        }
    };
    let wanted = config.name.clone().unwrap_or_else(|| "tun%d".into());
    if let Err(option) = config.validate() {
        reply(&mut stream, &Reply::Invalid { option });
        return log(
            Some(&peer),
            &wanted,
            &format!("invalid option {}", option.option_name()),
        );
    }

    let device = match create_within_limit(ctx, &peer, &config, platform::NATIVE_FRAMING) {
        Ok(device) => device,
        Err(e) => {
            reply(
                &mut stream,
                &Reply::Failed {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                },
            );
            return log(
                Some(&peer),
                &wanted,
                &format!("failed: {}", errno::io_error_name(&e)),
            );
        }
    };
    let frame = match protocol::encode(&Reply::Created {
        name: device.name.clone(),
    }) {
        Ok(frame) => frame,
        Err(bad) => {
            return log(
                Some(&peer),
                &device.name,
                &format!("cannot encode reply: {bad:?}"),
            )
        }
    };
    send_device(&stream, &peer, &device, &frame, "created");
}

/// Serves a 0.x create request (see `tundra_core::legacy`) as the 0.x
/// server did: a device with the packet-information header, the 32-byte
/// reply and its fd. 0.x had no error reply: a request that cannot be
/// served is logged and its connection closed, which 0.x clients report
/// as a failed create.
fn handle_legacy(mut stream: UnixStream, ctx: &Context, peer: &Peer, first: [u8; 4]) {
    let mut request = [0u8; legacy::REQUEST_LEN];
    request[..4].copy_from_slice(&first);
    if let Err(e) = stream.read_exact(&mut request[4..]) {
        return log(
            Some(peer),
            "-",
            &format!("0.x request dropped: {}", read_failure(&e)),
        );
    }
    let config = match legacy::parse_request(&request) {
        Ok(config) => config,
        Err(LegacyError::Malformed) => return log(Some(peer), "-", "0.x request malformed"),
        Err(LegacyError::Invalid(option)) => {
            return log(
                Some(peer),
                "-",
                &format!("0.x request: invalid option {}", option.option_name()),
            )
        }
    };
    let created = create_within_limit(ctx, peer, &config, Framing::LinuxPacketInfo)
        // 0.x clients got blocking fds, and the flag belongs to the open
        // file the client shares.
        .and_then(|device| platform::set_nonblocking(device.fd.as_fd(), false).map(|()| device));
    match created {
        Ok(device) => {
            let reply = legacy::encode_reply(&device.name);
            send_device(&stream, peer, &device, &reply, "created (0.x client)");
        }
        Err(e) => log(
            Some(peer),
            "tun%d",
            &format!("0.x request failed: {}", errno::io_error_name(&e)),
        ),
    }
}

/// Why reading a request failed, for the log.
fn read_failure(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "closed before a whole request",
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "no whole request before the deadline"
        }
        _ => errno::io_error_name(e),
    }
}

/// Creates `config` for `peer` unless the peer already holds its limit of
/// devices (EDQUOT). Where the OS cannot count a user's devices, the
/// limit is not applied.
fn create_within_limit(
    ctx: &Context,
    peer: &Peer,
    config: &DeviceConfig,
    framing: Framing,
) -> std::io::Result<platform::Device> {
    let mut bounds = ctx.live_bound.lock().unwrap_or_else(|p| p.into_inner());
    let bound = bounds.entry(peer.uid).or_insert(0);
    if *bound >= ctx.max_devices_per_uid {
        *bound = platform::devices_owned_by(peer.uid).unwrap_or(0);
        if *bound >= ctx.max_devices_per_uid {
            return Err(std::io::Error::from_raw_os_error(libc::EDQUOT));
        }
    }
    let device = platform::create_for(config, Some(peer.uid), framing)?;
    *bound += 1;
    Ok(device)
}

/// Sends `reply` with the device's fd in one sendmsg. The server's own copy
/// of the fd is closed when `device` drops, leaving the client's as the
/// only one: the device lives exactly as long as the client holds it.
fn send_device(
    stream: &UnixStream,
    peer: &Peer,
    device: &platform::Device,
    reply: &[u8],
    outcome: &str,
) {
    match stream.send_with_fd(reply, &[device.fd.as_raw_fd()]) {
        Ok(n) if n == reply.len() => log(Some(peer), &device.name, outcome),
        Ok(_) => log(Some(peer), &device.name, "dropped: short write of reply"),
        Err(e) => log(
            Some(peer),
            &device.name,
            &format!("dropped: {}", errno::io_error_name(&e)),
        ),
    }
}
