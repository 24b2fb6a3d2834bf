//! One client connection: read one bounded request before one deadline,
//! dispatch it (what is granted is `grant`'s to decide and make), render
//! the answer. Every connection ends in one [`Outcome`], rendered (reply
//! and log line) in one place; nothing a client sends can take the server
//! down.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tundra_core::deadline::Deadline;
use tundra_core::fdpass;
use tundra_core::legacy::{self, LegacyError};
use tundra_core::platform;
use tundra_core::protocol::{self, FrameError, Reply, Request};
use tundra_core::{errno, Change, Framing};

use crate::access::{self, Peer};
use crate::grant::{self, Context, Handed, Refusal};
use crate::log::{log, Untrusted};
use crate::unread::{still_unread, Unread};

/// How long a client has for its whole request, from accept to the last
/// byte (and the reply, at least a short while, to be taken).
pub const DEADLINE: Duration = Duration::from_secs(2);
const MIN_REPLY_TIME: Duration = Duration::from_millis(100);

/// How one connection ends.
enum Outcome {
    /// Done: `reply` goes out, with the fds of `made` when a device was
    /// made; `device` names the device.
    Served {
        made: Option<Handed>,
        device: String,
        reply: Vec<u8>,
        note: &'static str,
    },
    /// Nothing was made. `answer` is sent, in the request's `version`, if
    /// there is one (silent clients and 0.x requests, which had no error
    /// reply, get none); `device` is the name asked for, as the client
    /// wrote it; `why` is for the log.
    Refused {
        answer: Option<Reply>,
        version: u8,
        device: String,
        why: String,
    },
}

impl Outcome {
    /// Refused for `why`, which the client hears too (from version 3).
    fn refused(version: u8, errno: i32, device: &str, why: &str) -> Outcome {
        Outcome::Refused {
            answer: Some(Reply::refusal(errno, why, version)),
            version,
            device: device.into(),
            why: format!("refused ({}): {why}", errno::name(errno)),
        }
    }

    /// A request the server could not read as one: an errno reply only.
    fn bad_request(version: u8, errno: i32, device: &str, why: String) -> Outcome {
        Outcome::Refused {
            answer: Some(Reply::Failed { errno }),
            version,
            device: device.into(),
            why: format!("bad request: {why}"),
        }
    }

    fn invalid(version: u8, device: String, option: tundra_core::ConfigError) -> Outcome {
        Outcome::Refused {
            answer: Some(Reply::Invalid { option }),
            version,
            device,
            why: format!("invalid option {}", option.option_name()),
        }
    }

    fn dropped(device: &str, why: String) -> Outcome {
        Outcome::Refused {
            answer: None,
            version: protocol::OLDEST_VERSION,
            device: device.into(),
            why,
        }
    }
}

/// Reads from the stream with each read bounded by what is left of the
/// deadline, so a client trickling bytes cannot stretch its request.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Deadline,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.left().ok_or(io::ErrorKind::TimedOut)?;
        self.stream.set_read_timeout(Some(left))?;
        (&*self.stream).read(buf)
    }
}

/// Serves one connection, which holds a slot until this returns.
pub fn handle(stream: UnixStream, peer: Peer, ctx: &Context) {
    let deadline = Deadline::after(DEADLINE);
    let outcome = serve(&stream, &peer, ctx, deadline);
    render(stream, &peer, outcome, deadline, &ctx.unread);
}

fn serve(stream: &UnixStream, peer: &Peer, ctx: &Context, deadline: Deadline) -> Outcome {
    if !access::allowed(peer, ctx.group) {
        // Before its request is read: answered as every version reads it;
        // the client tells the cause from the socket's group.
        return Outcome::refused(
            protocol::OLDEST_VERSION,
            libc::EACCES,
            "-",
            "not root and not in the group",
        );
    }
    let mut reader = DeadlineReader { stream, deadline };
    // A current frame starts with MAGIC, a 0.x create request with its
    // type, 0: the first four bytes tell the two apart. A change request's
    // device fd rides on its first byte.
    let mut first = [0u8; 4];
    let attached = match read_first(&mut reader, &mut first) {
        Ok(attached) => attached,
        Err(e) => return Outcome::dropped("-", format!("dropped: {}", read_failure(&e))),
    };
    if first == legacy::CREATE_PREFIX {
        return serve_legacy(&mut reader, first, peer, ctx);
    }
    let (version, request) = match protocol::read_frame(&mut (&first[..]).chain(reader)) {
        Ok((version, payload)) => (version, protocol::decode(&payload)),
        Err(e) => (protocol::OLDEST_VERSION, Err(e)),
    };
    let config = match request {
        Ok(Request::Create(config)) => config,
        Ok(Request::Change(change)) => return serve_change(ctx, peer, change, attached, version),
        // Silent, slow or vanished client: dropped without a reply.
        Err(FrameError::Io(e)) => {
            return Outcome::dropped("-", format!("dropped: {}", read_failure(&e)))
        }
        Err(bad) => return Outcome::bad_request(version, bad.errno(), "-", format!("{bad:?}")),
    };
    let wanted = config.name.clone().unwrap_or_else(|| "-".into());
    if let Err(option) = config.validate().and_then(|()| platform::validate(&config)) {
        return Outcome::invalid(version, wanted, option);
    }
    let framing = platform::framing_for(&config);
    match grant::create(ctx, peer, config, framing) {
        Ok(handed) => match protocol::encode_in(
            &Reply::Created {
                name: handed.device.name.clone(),
            },
            version,
        ) {
            Ok(reply) => Outcome::Served {
                device: handed.device.name.clone(),
                made: Some(handed),
                reply,
                note: "created",
            },
            Err(bad) => Outcome::dropped(&wanted, format!("cannot encode the reply: {bad:?}")),
        },
        Err(refused) => Outcome::refused(version, refused.errno, &wanted, &refused.why),
    }
}

/// Serves a 0.x create request (see `tundra_core::legacy`) as the 0.x
/// server did: a device with the packet-information header, the 32-byte
/// reply and its fd. 0.x had no error reply: a request that cannot be
/// served is logged and its connection closed, which 0.x clients report
/// as a failed create. The same checks apply as to current requests.
fn serve_legacy(reader: &mut impl Read, first: [u8; 4], peer: &Peer, ctx: &Context) -> Outcome {
    let mut request = [0u8; legacy::REQUEST_LEN];
    request[..4].copy_from_slice(&first);
    if let Err(e) = reader.read_exact(&mut request[4..]) {
        return Outcome::dropped("-", format!("0.x request dropped: {}", read_failure(&e)));
    }
    let config = match legacy::parse_request(&request) {
        Ok(config) => config,
        Err(LegacyError::Malformed) => {
            return Outcome::dropped("-", "0.x request malformed".into())
        }
        Err(LegacyError::Invalid(option)) => {
            return Outcome::dropped(
                "-",
                format!("0.x request: invalid option {}", option.option_name()),
            )
        }
    };
    let created = grant::create(ctx, peer, config, Framing::LinuxPacketInfo).and_then(|handed| {
        // 0.x clients got blocking fds; the flag belongs to the open file
        // the client shares.
        platform::set_nonblocking(handed.device.fd.as_fd(), false)
            .map(|()| handed)
            .map_err(|e| Refusal::io(&e))
    });
    match created {
        Ok(handed) => Outcome::Served {
            reply: legacy::encode_reply(&handed.device.name).to_vec(),
            device: handed.device.name.clone(),
            made: Some(handed),
            note: "created (0.x client)",
        },
        Err(refused) => Outcome::dropped(
            "-",
            format!(
                "0.x request refused ({}): {}",
                errno::name(refused.errno),
                refused.why
            ),
        ),
    }
}

/// Serves a change request: the attached fd must be a device the server
/// made for this peer (root: any device of the server's namespace), and
/// an address or route it adds must pass the checks a new device's would.
fn serve_change(
    ctx: &Context,
    peer: &Peer,
    change: Change,
    attached: Option<OwnedFd>,
    version: u8,
) -> Outcome {
    let Some(fd) = attached else {
        return Outcome::bad_request(version, libc::EBADF, "-", "no device fd attached".into());
    };
    let name = match platform::inspect(fd.as_fd()) {
        Ok(tun) if tun.netns.is_none() => tun.name,
        Ok(tun) => {
            return Outcome::refused(
                version,
                libc::EACCES,
                &tun.name,
                "the device is in another network namespace",
            )
        }
        Err(_) => {
            return Outcome::bad_request(version, libc::EBADF, "-", "not a TUN or TAP fd".into())
        }
    };
    if let Err(option) = change.validate() {
        return Outcome::invalid(version, name, option);
    }
    match grant::make_change(ctx, peer, &name, &change) {
        Ok(()) => match protocol::encode_in(&Reply::Changed, version) {
            Ok(reply) => Outcome::Served {
                made: None,
                device: name,
                reply,
                note: change_note(&change),
            },
            Err(bad) => Outcome::dropped(&name, format!("cannot encode the reply: {bad:?}")),
        },
        Err(refused) => Outcome::refused(version, refused.errno, &name, &refused.why),
    }
}

fn change_note(change: &Change) -> &'static str {
    match change {
        Change::Link { .. } => "changed: link",
        Change::AddAddress(_) => "changed: address added",
        Change::RemoveAddress(_) => "changed: address removed",
        Change::AddRoute(_) => "changed: route added",
        Change::RemoveRoute(_) => "changed: route removed",
    }
}

/// Reads the first bytes of a request into `first`, with the first fd
/// that rides on them (SCM_RIGHTS; close-on-exec, and closed when dropped
/// unless a change request uses it). Any others are closed here.
fn read_first(reader: &mut DeadlineReader, first: &mut [u8; 4]) -> io::Result<Option<OwnedFd>> {
    let left = reader.deadline.left().ok_or(io::ErrorKind::TimedOut)?;
    reader.stream.set_read_timeout(Some(left))?;
    let (got, fds) = fdpass::recv_with_fds(reader.stream.as_fd(), first)?;
    if got == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    reader.read_exact(&mut first[got..])?;
    Ok(fds.into_iter().next())
}

/// Sends what `outcome` says to send and logs its one line. A reply whose
/// fds are not read by the deadline goes to `unread`, with its
/// connection.
fn render(stream: UnixStream, peer: &Peer, outcome: Outcome, deadline: Deadline, unread: &Unread) {
    let stream = &stream;
    // A request that made it in time still gets a moment for its reply.
    let reply_time = deadline.left().unwrap_or_default().max(MIN_REPLY_TIME);
    let _ = stream.set_write_timeout(Some(reply_time));
    match outcome {
        Outcome::Served {
            made,
            device,
            reply,
            note,
        } => {
            let sent = match &made {
                Some(made) => send_with_fds(stream, &reply, &made.device),
                None => (&*stream).write(&reply),
            };
            let delivered = matches!(sent, Ok(n) if n == reply.len());
            let result = match sent {
                Ok(n) if n == reply.len() => note.to_string(),
                Ok(_) => "dropped: short write of the reply".into(),
                Err(e) => format!("dropped: {}", errno::io_error_name(&e)),
            };
            log_request(peer, &device, &result);
            if let Some(Handed {
                device: fds,
                reserved,
            }) = made
            {
                // The server's own copies of the fds close here, leaving
                // the client's as the only ones; those stay charged to
                // the server until the client reads them.
                drop(fds);
                if delivered && !taken_by(stream, deadline) {
                    log_request(
                        peer,
                        &device,
                        "reply not read by the deadline: its fds stay counted to this user until it is",
                    );
                    if let Ok(kept) = stream.try_clone() {
                        unread.keep(kept, reserved);
                    }
                }
            }
        }
        Outcome::Refused {
            answer,
            version,
            device,
            why,
        } => {
            if let Some(answer) = answer {
                // A client that went away cannot be answered.
                if let Ok(frame) = protocol::encode_in(&answer, version) {
                    let _ = (&*stream).write_all(&frame);
                }
            }
            log_request(peer, &device, &why);
        }
    }
}

/// Whether the client reads the reply on `stream` (or closes its end,
/// which drops what it had not read) by the deadline, or at least
/// `MIN_REPLY_TIME` from now: until then the fds the reply carries are in
/// flight, charged to the server (see `inflight`). The connection keeps
/// its slot meanwhile; a reply unread after that is `unread`'s to watch.
fn taken_by(stream: &UnixStream, deadline: Deadline) -> bool {
    let patience = Deadline::after(deadline.left().unwrap_or_default().max(MIN_REPLY_TIME));
    let mut pause = Duration::from_millis(1);
    while still_unread(stream) {
        let Some(left) = patience.left() else {
            return false;
        };
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    true
}

/// Sends `reply` with the device's fds, one per queue (SCM_RIGHTS), in
/// one `sendmsg`.
fn send_with_fds(
    stream: &UnixStream,
    reply: &[u8],
    device: &platform::Device,
) -> io::Result<usize> {
    let fds: Vec<_> = std::iter::once(&device.fd)
        .chain(&device.queues)
        .map(|fd| fd.as_raw_fd())
        .collect();
    fdpass::send_with_fds(stream.as_fd(), reply, &fds)
}

fn log_request(peer: &Peer, device: &str, outcome: &str) {
    let pid = peer.pid.map_or("?".to_string(), |pid| pid.to_string());
    log!(
        "uid={} pid={pid} device={} {outcome}",
        peer.uid,
        Untrusted(device)
    );
}

/// Refuses a connection that gets no slot: one non-blocking write of the
/// EAGAIN reply (the accept loop must never wait on a client), then close.
pub fn refuse_busy(stream: UnixStream, peer: Option<&Peer>, why: &str) {
    if stream.set_nonblocking(true).is_ok() {
        // In the oldest version: the request, and so its version, is not read.
        let busy = Reply::Failed {
            errno: libc::EAGAIN,
        };
        if let Ok(frame) = protocol::encode_in(&busy, protocol::OLDEST_VERSION) {
            let _ = (&stream).write(&frame);
        }
    }
    match peer {
        Some(peer) => log_request(peer, "-", &format!("refused (eagain): {why}")),
        None => log!("uid=? pid=? device=- refused (eagain): {why}"),
    }
}

/// Why reading a request failed, for the log.
fn read_failure(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "closed before a whole request",
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "no whole request before the deadline"
        }
        _ => errno::io_error_name(e),
    }
}
