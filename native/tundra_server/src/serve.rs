//! One client connection: check the peer, read one bounded request before
//! one deadline, decide, create the device (and reply with its fds) or
//! change one the peer holds. Every connection ends in one [`Outcome`],
//! rendered (reply and log line) in one place; nothing a client sends can
//! take the server down.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::unistd::Gid;
use tundra_core::deadline::Deadline;
use tundra_core::fdpass;
use tundra_core::legacy::{self, LegacyError};
use tundra_core::platform;
use tundra_core::protocol::{self, FrameError, Reply, Request};
use tundra_core::{errno, Change, Cidr, DeviceConfig, Framing};

use crate::access::{self, Peer};
use crate::inflight::{self, InFlight, Reserved};
use crate::log::{log, Untrusted};
use crate::made::{self, Made, Records};
use crate::policy::{self, Policy};

/// How long a client has for its whole request, from accept to the last
/// byte (and the reply, at least a short while, to be taken).
pub const DEADLINE: Duration = Duration::from_secs(2);
const MIN_REPLY_TIME: Duration = Duration::from_millis(100);

pub struct Context {
    pub group: Gid,
    pub policy: Policy,
    pub max_devices_per_uid: usize,
    pub records: Arc<Records>,
    /// Device fds sent and not yet read, per uid.
    pub in_flight: Arc<InFlight>,
    /// Held from the checks to the record of a new device, so that two
    /// requests cannot both pass the conflict or limit checks.
    pub creating: Mutex<()>,
}

/// A device made for a client, and the fds its reply will leave in
/// flight, reserved (see `inflight`).
struct Handed {
    device: platform::Device,
    reserved: Reserved,
}

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
    /// Nothing was made. `answer` is sent if there is one (silent clients
    /// and 0.x requests, which had no error reply, get none); `device` is
    /// the name asked for, as the client wrote it.
    Refused {
        answer: Option<Reply>,
        device: String,
        why: String,
    },
}

impl Outcome {
    fn failed(errno: i32, device: &str, why: String) -> Outcome {
        Outcome::Refused {
            answer: Some(Reply::Failed { errno }),
            device: device.into(),
            why,
        }
    }

    fn dropped(device: &str, why: String) -> Outcome {
        Outcome::Refused {
            answer: None,
            device: device.into(),
            why,
        }
    }
}

/// Why a device was not made: the errno to reply and what to log.
struct Refusal {
    errno: i32,
    why: String,
}

impl Refusal {
    fn new(errno: i32, why: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            why: why.into(),
        }
    }

    fn io(e: &io::Error) -> Refusal {
        Refusal::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("failed: {}", errno::io_error_name(e)),
        )
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
    render(&stream, &peer, outcome, deadline);
}

fn serve(stream: &UnixStream, peer: &Peer, ctx: &Context, deadline: Deadline) -> Outcome {
    if !access::allowed(peer, ctx.group) {
        return Outcome::failed(
            libc::EACCES,
            "-",
            "refused (eacces): not root and not in the group".into(),
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
    let request =
        protocol::read_payload(&mut (&first[..]).chain(reader)).and_then(|p| protocol::decode(&p));
    let config = match request {
        Ok(Request::Create(config)) => config,
        Ok(Request::Change(change)) => return serve_change(ctx, peer, change, attached),
        // Silent, slow or vanished client: dropped without a reply.
        Err(FrameError::Io(e)) => {
            return Outcome::dropped("-", format!("dropped: {}", read_failure(&e)))
        }
        Err(bad) => return Outcome::failed(bad.errno(), "-", format!("bad request: {bad:?}")),
    };
    let wanted = config.name.clone().unwrap_or_else(|| "-".into());
    if let Err(option) = config.validate().and_then(|()| platform::validate(&config)) {
        return Outcome::Refused {
            answer: Some(Reply::Invalid { option }),
            device: wanted,
            why: format!("invalid option {}", option.option_name()),
        };
    }
    let framing = platform::framing_for(&config);
    match create(ctx, peer, config, framing) {
        Ok(handed) => match protocol::encode(&Reply::Created {
            name: handed.device.name.clone(),
        }) {
            Ok(reply) => Outcome::Served {
                device: handed.device.name.clone(),
                made: Some(handed),
                reply,
                note: "created",
            },
            Err(bad) => Outcome::dropped(&wanted, format!("cannot encode the reply: {bad:?}")),
        },
        Err(refused) => Outcome::failed(refused.errno, &wanted, refused.why),
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
    let created = create(ctx, peer, config, Framing::LinuxPacketInfo).and_then(|handed| {
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
        Err(refused) => Outcome::dropped("-", format!("0.x request {}", refused.why)),
    }
}

/// Decides whether `peer` may have `config` and makes it. Root may ask
/// for any addresses; anyone else only for delegated ones that collide
/// with nothing in the namespace, up to its device limit and its share of
/// unread replies. Every device is new (never an existing interface) and
/// named under the name prefix.
fn create(
    ctx: &Context,
    peer: &Peer,
    mut config: DeviceConfig,
    framing: Framing,
) -> Result<Handed, Refusal> {
    let name = ctx
        .policy
        .device_name(config.name.as_deref(), config.mode)
        .map_err(|why| Refusal::new(libc::EACCES, format!("refused (eacces): {why}")))?;
    config.name = Some(name);
    let reserved = ctx
        .in_flight
        .reserve(peer.uid, usize::from(config.queues))
        .map_err(|full| {
            let why = match full {
                inflight::Full::User(n) => format!("{n} device fds of earlier replies are unread"),
                inflight::Full::Server(n) => {
                    format!("{n} device fds of replies to members are unread")
                }
            };
            Refusal::new(libc::EAGAIN, format!("refused (eagain): {why}"))
        })?;
    let hand = |device| Handed { device, reserved };
    if peer.uid == 0 {
        return platform::create_for(&config, Some(peer.uid), framing)
            .map(hand)
            .map_err(|e| Refusal::io(&e));
    }
    let claims = config.claims();
    ctx.policy
        .check_delegated(peer.uid, &access::groups(peer), &claims)
        .map_err(|why| Refusal::new(libc::EACCES, format!("refused (eacces): {why}")))?;

    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    if ctx.records.count(peer.uid) >= ctx.max_devices_per_uid {
        // The records may still hold devices that are gone: look first.
        made::sweep(&ctx.records);
        if ctx.records.count(peer.uid) >= ctx.max_devices_per_uid {
            return Err(Refusal::new(
                libc::EDQUOT,
                format!(
                    "refused (edquot): holds {} devices already",
                    ctx.max_devices_per_uid
                ),
            ));
        }
    }
    let occupied = platform::occupied(None).map_err(|e| Refusal::io(&e))?;
    if let Some(why) = policy::conflict(&config.address, &claims, &occupied) {
        return Err(Refusal::new(
            libc::EADDRINUSE,
            format!("refused (eaddrinuse): {why}"),
        ));
    }
    let device =
        platform::create_for(&config, Some(peer.uid), framing).map_err(|e| Refusal::io(&e))?;
    let index = nix::net::if_::if_nametoindex(device.name.as_str())
        .map_err(|e| Refusal::io(&io::Error::from(e)))?;
    // Recorded before the client hears of it; a device that cannot be
    // recorded is dropped (and so removed) instead.
    ctx.records
        .add(
            peer.uid,
            Made {
                index,
                name: device.name.clone(),
                claims,
            },
        )
        .map_err(|e| Refusal::io(&e))?;
    Ok(hand(device))
}

/// Serves a change request: the attached fd must be a device the server
/// made for this peer (root: any device of the server's namespace), and
/// an address or route it adds must pass the checks a new device's would.
fn serve_change(ctx: &Context, peer: &Peer, change: Change, attached: Option<OwnedFd>) -> Outcome {
    let Some(fd) = attached else {
        return Outcome::failed(
            libc::EBADF,
            "-",
            "bad request: no device fd attached".into(),
        );
    };
    let name = match platform::inspect(fd.as_fd()) {
        Ok(tun) if tun.netns.is_none() => tun.name,
        Ok(tun) => {
            return Outcome::failed(
                libc::EACCES,
                &tun.name,
                "refused (eacces): the device is in another network namespace".into(),
            )
        }
        Err(_) => {
            return Outcome::failed(libc::EBADF, "-", "bad request: not a TUN or TAP fd".into())
        }
    };
    if let Err(option) = change.validate() {
        return Outcome::Refused {
            answer: Some(Reply::Invalid { option }),
            device: name,
            why: format!("invalid option {}", option.option_name()),
        };
    }
    match make_change(ctx, peer, &name, &change) {
        Ok(()) => match protocol::encode(&Reply::Changed) {
            Ok(reply) => Outcome::Served {
                made: None,
                device: name,
                reply,
                note: change_note(&change),
            },
            Err(bad) => Outcome::dropped(&name, format!("cannot encode the reply: {bad:?}")),
        },
        Err(refused) => Outcome::failed(refused.errno, &name, refused.why),
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

/// Decides whether `peer` may make `change` to device `name` and makes it.
fn make_change(ctx: &Context, peer: &Peer, name: &str, change: &Change) -> Result<(), Refusal> {
    let index =
        nix::net::if_::if_nametoindex(name).map_err(|e| Refusal::io(&io::Error::from(e)))?;
    let apply = || platform::apply(name, change, None).map_err(|e| Refusal::io(&e));
    if peer.uid == 0 {
        return apply();
    }
    if !ctx.records.holds(peer.uid, index, name) {
        return Err(Refusal::new(
            libc::EACCES,
            "refused (eacces): not a device the server made for this user",
        ));
    }
    if let Change::Link { up: Some(true), .. } = change {
        return bring_up(ctx, name, index, apply);
    }
    let claims = change.claims();
    if claims.is_empty() {
        return apply();
    }
    ctx.policy
        .check_delegated(peer.uid, &access::groups(peer), &claims)
        .map_err(|why| Refusal::new(libc::EACCES, format!("refused (eacces): {why}")))?;
    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    // What the device itself has does not collide with its own additions.
    let occupied = platform::occupied(Some(index)).map_err(|e| Refusal::io(&e))?;
    let address = match change {
        Change::AddAddress(spec) => Some(spec.address),
        _ => None,
    };
    let collision = match address {
        Some(address) => policy::conflict(&address, &claims, &occupied),
        None => policy::route_conflict(&claims, &occupied),
    };
    if let Some(why) = collision {
        return Err(Refusal::new(
            libc::EADDRINUSE,
            format!("refused (eaddrinuse): {why}"),
        ));
    }
    apply()
}

/// Brings a member's link up (with whatever MTU the change sets): the
/// kernel then restores the routes of the link's addresses without asking
/// anyone, so what they claim is checked again first, as for a new device
/// (someone may have been given those addresses while the link was down).
/// Link-local addresses claim nothing: every link has its own.
fn bring_up(
    ctx: &Context,
    name: &str,
    index: u32,
    apply: impl FnOnce() -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    let link = platform::link_info(name, None).map_err(|e| Refusal::io(&e))?;
    let claims: Vec<Cidr> = link
        .addresses
        .iter()
        .filter(|a| !is_link_local(&a.address))
        .flat_map(|a| a.spec().claims())
        .collect();
    let occupied = platform::occupied(Some(index)).map_err(|e| Refusal::io(&e))?;
    if let Some(why) = policy::route_conflict(&claims, &occupied) {
        return Err(Refusal::new(
            libc::EADDRINUSE,
            format!("refused (eaddrinuse): {why}"),
        ));
    }
    apply()
}

fn is_link_local(address: &std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(a) => a.is_link_local(),
        std::net::IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
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

/// Sends what `outcome` says to send and logs its one line.
fn render(stream: &UnixStream, peer: &Peer, outcome: Outcome, deadline: Deadline) {
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
                if delivered {
                    wait_until_taken(stream, peer, &device, deadline);
                }
                drop(reserved);
            }
        }
        Outcome::Refused {
            answer,
            device,
            why,
        } => {
            if let Some(answer) = answer {
                // A client that went away cannot be answered.
                if let Ok(frame) = protocol::encode(&answer) {
                    let _ = (&*stream).write_all(&frame);
                }
            }
            log_request(peer, &device, &why);
        }
    }
}

/// Waits until the client has read the reply on `stream` (or closed its
/// end, which drops what it had not read): until then the fds the reply
/// carries are in flight, charged to the server (see `inflight`), and the
/// connection keeps its slot. A client that never reads holds only its
/// own share of both.
fn wait_until_taken(stream: &UnixStream, peer: &Peer, device: &str, deadline: Deadline) {
    let mut pause = Duration::from_millis(1);
    let mut said = false;
    // An error would mean the stream is gone, and what it held with it.
    while crate::platform::unread_bytes(stream).unwrap_or(0) > 0 {
        if !said && deadline.left().is_none() {
            log_request(
                peer,
                device,
                "reply not read yet: its fds stay counted to this user until it is",
            );
            said = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
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
        if let Ok(frame) = protocol::encode(&Reply::Failed {
            errno: libc::EAGAIN,
        }) {
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
