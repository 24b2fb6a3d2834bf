//! One client connection: check the peer, read one bounded request under a
//! deadline, validate it, create the device, reply with its fd. Nothing a
//! client sends can take the server down: every failure becomes an error
//! reply or a closed connection, and one log line.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use nix::unistd::Gid;
use sendfd::SendWithFd;
use tundra_core::errno;
use tundra_core::platform;
use tundra_core::protocol::{self, FrameError, Reply, Request};

use crate::access::{self, Peer};

/// How long a client may take to send its request or take its reply.
pub const DEADLINE: Duration = Duration::from_secs(2);

pub struct Context {
    pub group: Gid,
    pub max_devices_per_uid: usize,
    /// Serialises "count this user's devices, then create one", so
    /// concurrent requests cannot overshoot the per-user limit.
    pub create_lock: Mutex<()>,
}

fn log(peer: Option<&Peer>, device: &str, outcome: &str) {
    match peer {
        Some(p) => eprintln!(
            "tundra_server: uid={} pid={} device={device} {outcome}",
            p.uid, p.pid
        ),
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

    let request = protocol::read_payload(&mut stream).and_then(|p| protocol::decode::<Request>(&p));
    let config = match request {
        Ok(Request::Create(config)) => config,
        Err(FrameError::Io(e)) => {
            // Silent, slow or vanished client: drop it without a reply.
            let why = match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "closed before a whole request",
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    "no whole request before the deadline"
                }
                _ => errno::io_error_name(&e),
            };
            return log(Some(&peer), "-", &format!("dropped: {why}"));
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

    let created = {
        let _guard = ctx.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        match platform::devices_owned_by(peer.uid) {
            Ok(n) if n >= ctx.max_devices_per_uid => {
                Err(std::io::Error::from_raw_os_error(libc::EDQUOT))
            }
            Ok(_) | Err(_) => platform::create_for(&config, Some(peer.uid)),
        }
    };
    let device = match created {
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
    // The reply and the fd travel in one sendmsg; the server's own copy of
    // the fd is closed when `device` drops, leaving the client's as the
    // only one: the device lives exactly as long as the client holds it.
    match stream.send_with_fd(&frame, &[device.fd.as_raw_fd()]) {
        Ok(n) if n == frame.len() => log(Some(&peer), &device.name, "created"),
        Ok(_) => log(Some(&peer), &device.name, "dropped: short write of reply"),
        Err(e) => log(
            Some(&peer),
            &device.name,
            &format!("dropped: {}", errno::io_error_name(&e)),
        ),
    }
}
