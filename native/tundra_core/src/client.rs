//! Asking `tundra_server` for a device or a change to one: connect, send
//! the request (a change with the device's fd), receive the reply and the
//! device fds (SCM_RIGHTS). Blocking, with one
//! deadline for the whole exchange, connect included; the NIF runs it on
//! a dirty I/O scheduler, which it therefore never holds for longer.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self, UnixAddr};

use crate::deadline::Deadline;
use crate::errno::explained;
use crate::fdpass;
use crate::platform::{self, Device};
use crate::protocol::{self, Reply, Request, HEADER_LEN, MAX_PAYLOAD};
use crate::{Change, ConfigError, DeviceConfig};

/// Default path of the server's socket.
pub const DEFAULT_SOCKET: &str = "/var/run/tundra.sock";

/// What the server said to a create request, short of an I/O failure.
#[derive(Debug)]
pub enum CreateReply {
    Created(Device),
    Invalid(ConfigError),
}

fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::from_raw_os_error(libc::ETIMEDOUT)
        }
        _ => e,
    }
}

/// Asks the server at `socket` to create `config`, within `timeout` in
/// all. Errors are errno-bearing `io::Error`s: ENOENT/ECONNREFUSED when no
/// server listens, ENOTSOCK when `socket` is something else, ETIMEDOUT past `timeout` (a stopped or overloaded
/// server), or the errno the server replied with (EACCES, EBUSY, ...;
/// EAGAIN, "no connection free", only once retrying it used up `timeout`).
pub fn create(socket: &Path, config: &DeviceConfig, timeout: Duration) -> io::Result<CreateReply> {
    let frame = encode(&Request::Create(config.clone()))?;
    let (reply, fds) = ask(socket, &frame, None, timeout)?;
    match reply {
        Reply::Created { name } => created(name, fds, config.queues).map(CreateReply::Created),
        Reply::Failed { errno } => Err(failed(socket, errno)),
        Reply::Refused { errno, why } => Err(refused(socket, errno, &why)),
        Reply::Invalid { option } => Ok(CreateReply::Invalid(option)),
        Reply::Changed => Err(protocol_error()),
    }
}

/// Asks the server at `socket` to make `change` to the device of `device`
/// (whose fd goes along, as proof that the caller holds it), within
/// `timeout`. `Ok(Err(option))` when the server found the change invalid;
/// errors as for `create`.
pub fn change(
    socket: &Path,
    device: BorrowedFd<'_>,
    change: &Change,
    timeout: Duration,
) -> io::Result<Result<(), ConfigError>> {
    let frame = encode(&Request::Change(*change))?;
    let (reply, _unexpected_fds) = ask(socket, &frame, Some(device), timeout)?;
    match reply {
        Reply::Changed => Ok(Ok(())),
        Reply::Failed { errno } => Err(failed(socket, errno)),
        Reply::Refused { errno, why } => Err(refused(socket, errno, &why)),
        Reply::Invalid { option } => Ok(Err(option)),
        Reply::Created { .. } => Err(protocol_error()),
    }
}

/// A bare errno from the server. The one refusal a current server sends
/// without a reason is of a peer outside its group (it answers before
/// reading the request, as every version reads it): said in words when
/// this process is not in the socket's group.
fn failed(socket: &Path, errno: i32) -> io::Error {
    match (errno, crate::users::missing_group(socket)) {
        (libc::EACCES, Some(why)) => explained(errno, why),
        _ => io::Error::from_raw_os_error(errno),
    }
}

/// The server's refusal, as an error that says who refused and why.
fn refused(socket: &Path, errno: i32, why: &str) -> io::Error {
    // The server's text is the server's: shown, never interpreted.
    let why: String = why.chars().filter(|c| !c.is_control()).collect();
    explained(
        errno,
        format!("tundra_server at {} refused: {why}", socket.display()),
    )
}

fn protocol_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EPROTO)
}

fn encode(request: &Request) -> io::Result<Vec<u8>> {
    protocol::encode(request).map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

/// The device the server made, from the fds that came with its reply.
fn created(name: String, fds: Vec<OwnedFd>, queues: u16) -> io::Result<Device> {
    if fds.len() != usize::from(queues) {
        return Err(protocol_error());
    }
    let mut framing = None;
    for fd in &fds {
        platform::set_nonblocking(fd.as_fd(), true)?;
        // Trust, but verify: each must be a queue of the TUN device the
        // reply names.
        let tun = platform::inspect(fd.as_fd())?;
        if tun.name != name || framing.is_some_and(|f| f != tun.framing) {
            return Err(protocol_error());
        }
        framing = Some(tun.framing);
    }
    let mut fds = fds.into_iter();
    let (Some(fd), Some(framing)) = (fds.next(), framing) else {
        return Err(protocol_error());
    };
    Ok(Device {
        fd,
        queues: fds.collect(),
        name,
        framing,
        netns: None,
    })
}

/// Sends `frame` (with `fd` attached, if any) and returns the reply and
/// the fds that came with it. A server with no connection slot free (for
/// this user) replies EAGAIN: that frees up as other requests finish, so
/// this tries again while there is time.
fn ask(
    socket: &Path,
    frame: &[u8],
    fd: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> io::Result<(Reply, Vec<OwnedFd>)> {
    let deadline = Deadline::after(timeout);
    let mut pause = Duration::from_millis(5);
    loop {
        let mut stream = connect(socket, deadline)?;
        let answer = exchange(&mut stream, frame, fd, deadline)?;
        if answer.0
            != (Reply::Failed {
                errno: libc::EAGAIN,
            })
        {
            return Ok(answer);
        }
        match deadline.left() {
            Some(left) if left > pause => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            _ => return Ok(answer),
        }
    }
}

/// Connects to `socket` before `deadline`.
///
/// A blocking connect to a Unix socket whose listener's backlog is full
/// waits, with no timeout, until the server accepts (a stopped server
/// never does). Non-blocking, it fails with EAGAIN at once instead: retry
/// until the deadline.
fn connect(path: &Path, deadline: Deadline) -> io::Result<UnixStream> {
    // Something other than a socket at the path (a typo'd file, a folder)
    // would otherwise read as a refusal (EACCES) or as no server at all.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(explained(
                libc::ENOTSOCK,
                format!(
                    "{} is not a socket: give tundra_server's socket (:socket_path, the :tundra application's socket_path, or TUNDRA_SOCKET)",
                    path.display()
                ),
            ));
        }
    }
    let addr = UnixAddr::new(path)?;
    let fd = fdpass::stream_socket()?;
    platform::set_nonblocking(fd.as_fd(), true)?;
    let mut pause = Duration::from_millis(1);
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EAGAIN) => {
                std::thread::sleep(pause.min(deadline.left_or_timeout()?));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(not_connected(path, e as i32)),
        }
    }
    platform::set_nonblocking(fd.as_fd(), false)?;
    Ok(UnixStream::from(fd))
}

/// Why connecting to the server's socket at `path` failed with `errno`,
/// for the person who must act: no server, or (EACCES) which group this
/// process lacks, and whether logging in again would give it.
fn not_connected(path: &Path, errno: i32) -> io::Error {
    let at = path.display();
    let why = match errno {
        libc::ENOENT => format!(
            "no tundra_server listens at {at} (no such socket): start it (systemctl start tundra_server), or give its socket (:socket_path, the :tundra application's socket_path, or TUNDRA_SOCKET)"
        ),
        libc::ECONNREFUSED => format!(
            "nothing listens at {at}: the server that made the socket is not running (systemctl start tundra_server)"
        ),
        libc::EACCES => crate::users::why_refused_by_mode(path),
        _ => return io::Error::from_raw_os_error(errno),
    };
    explained(errno, why)
}

/// Sends a request frame and reads the reply (and the fd with it, if any).
///
/// A server that refuses the peer (EACCES) replies and closes without
/// reading the request, so the write may fail with EPIPE while that reply
/// waits to be read: read it, and report the write's failure only if there
/// is none.
fn exchange(
    stream: &mut UnixStream,
    frame: &[u8],
    fd: Option<BorrowedFd<'_>>,
    deadline: Deadline,
) -> io::Result<(Reply, Vec<OwnedFd>)> {
    let mut write_failure = None;
    deadline.apply(stream)?;
    if let Err(e) = send_frame(stream, frame, fd) {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => write_failure = Some(e),
            _ => return Err(timed_out(e)),
        }
    }
    read_reply(stream, deadline).map_err(|e| write_failure.unwrap_or(e))
}

/// Writes `frame`, its first byte carrying `fd` (SCM_RIGHTS) if given.
fn send_frame(stream: &mut UnixStream, frame: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let Some(fd) = fd else {
        return stream.write_all(frame);
    };
    let sent = fdpass::send_with_fds(stream.as_fd(), frame, &[fd.as_raw_fd()])?;
    stream.write_all(&frame[sent..])
}

/// Reads the reply frame, and the fds that come with it, if any.
fn read_reply(stream: &mut UnixStream, deadline: Deadline) -> io::Result<(Reply, Vec<OwnedFd>)> {
    // The reply and its fd come in one sendmsg; read it with room for the
    // largest frame, then finish a frame that arrived in pieces.
    let mut buf = vec![0u8; HEADER_LEN + MAX_PAYLOAD];
    deadline.apply(stream)?;
    let (mut got, fds) = fdpass::recv_with_fds(stream.as_fd(), &mut buf).map_err(timed_out)?;
    if got < HEADER_LEN {
        deadline.apply(stream)?;
        stream
            .read_exact(&mut buf[got..HEADER_LEN])
            .map_err(timed_out)?;
        got = HEADER_LEN;
    }
    let header: [u8; HEADER_LEN] = buf[..HEADER_LEN]
        .try_into()
        .map_err(|_| io::Error::from_raw_os_error(libc::EPROTO))?;
    let (_version, len) =
        protocol::parse_header(&header).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    if got < HEADER_LEN + len {
        deadline.apply(stream)?;
        stream
            .read_exact(&mut buf[got..HEADER_LEN + len])
            .map_err(timed_out)?;
    }
    let reply = protocol::decode(&buf[HEADER_LEN..HEADER_LEN + len])
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    Ok((reply, fds))
}

// Whether tests that make devices may run here (shared with the
// integration tests).
#[cfg(all(test, target_os = "linux"))]
#[path = "../tests/support/guard.rs"]
mod test_guard;

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[test]
    fn a_reply_sent_before_the_server_closed_is_read_even_if_the_write_fails() {
        let (mut client, mut server) = UnixStream::pair().expect("pair");
        let refusal = protocol::encode(&Reply::Failed {
            errno: libc::EACCES,
        })
        .expect("encode");
        server.write_all(&refusal).expect("reply");
        drop(server);
        // Large enough that the write really meets the closed peer.
        let request = vec![0u8; 64 * 1024];
        match exchange(&mut client, &request, None, soon()) {
            Ok((Reply::Failed { errno }, fds)) if fds.is_empty() => {
                assert_eq!(errno, libc::EACCES)
            }
            other => panic!("expected the EACCES reply, got {other:?}"),
        }
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_enotsock() {
        let file = std::env::temp_dir().join(format!("tundra-not-a-socket-{}", std::process::id()));
        std::fs::write(&file, b"").expect("file");
        let err = connect(&file, soon()).expect_err("not a socket");
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::ENOTSOCK));
        let missing = connect(&file, soon()).expect_err("nothing there");
        assert_eq!(crate::errno::errno_of(&missing), Some(libc::ENOENT));
        let why = crate::errno::why_of(&missing).expect("why");
        assert!(why.contains(&file.display().to_string()), "{why}");
        assert!(why.contains("no tundra_server listens"), "{why}");
    }

    /// A server at a socket of its own that answers each connection with
    /// the next of `replies` (raw bytes, written in pieces of `piece`
    /// bytes), after reading the request's header; the connections it
    /// took come back from the thread.
    fn fake_server(
        replies: Vec<Vec<u8>>,
        piece: usize,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<usize>) {
        use std::os::unix::net::UnixListener;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tundra-fake-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            for reply in replies {
                let Ok((mut stream, _)) = listener.accept() else {
                    break;
                };
                served += 1;
                let mut header = [0u8; HEADER_LEN];
                let _ = stream.read_exact(&mut header);
                for chunk in reply.chunks(piece.max(1)) {
                    let _ = stream.write_all(chunk);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            served
        });
        (path, thread)
    }

    fn frame(reply: &Reply) -> Vec<u8> {
        protocol::encode(reply).expect("encode")
    }

    fn a_change() -> Change {
        Change::Link {
            up: Some(true),
            mtu: None,
        }
    }

    fn some_fd() -> OwnedFd {
        std::fs::File::open("/dev/null").expect("open").into()
    }

    #[test]
    fn a_refusal_says_who_refused_and_why_without_control_characters() {
        let refused = Reply::Refused {
            errno: libc::EACCES,
            why: "10.9.0.2/32 is not delegated\x1b[31m\n".into(),
        };
        let (path, server) = fake_server(vec![frame(&refused)], 7);
        let fd = some_fd();
        let err =
            change(&path, fd.as_fd(), &a_change(), Duration::from_secs(5)).expect_err("refused");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::EACCES));
        let why = crate::errno::why_of(&err).expect("why");
        assert_eq!(
            why,
            format!(
                "tundra_server at {} refused: 10.9.0.2/32 is not delegated[31m",
                path.display()
            )
        );
        assert_eq!(server.join().expect("server"), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_busy_server_is_asked_again_until_it_answers_or_the_deadline_passes() {
        let busy = frame(&Reply::Failed {
            errno: libc::EAGAIN,
        });
        let (path, server) =
            fake_server(vec![busy.clone(), busy.clone(), frame(&Reply::Changed)], 3);
        let fd = some_fd();
        let changed = change(&path, fd.as_fd(), &a_change(), Duration::from_secs(10));
        assert!(matches!(changed, Ok(Ok(()))), "{changed:?}");
        assert_eq!(server.join().expect("server"), 3, "asked three times");

        // Busy for good: EAGAIN once the deadline has passed.
        let (path2, server2) = fake_server(vec![busy; 200], 64);
        let started = std::time::Instant::now();
        let err =
            change(&path2, fd.as_fd(), &a_change(), Duration::from_millis(300)).expect_err("busy");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::EAGAIN));
        assert!(started.elapsed() < Duration::from_secs(30), "gave up");
        drop(server2);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&path2);
    }

    #[test]
    fn replies_that_do_not_fit_the_request_are_protocol_errors() {
        let option = Reply::Invalid {
            option: ConfigError::Mtu,
        };
        let created = Reply::Created {
            name: "tun0".into(),
        };
        let mut future = frame(&Reply::Changed);
        future[4] = protocol::VERSION + 1;
        let (path, server) = fake_server(
            vec![
                frame(&option),
                frame(&created),
                future,
                frame(&Reply::Changed),
            ],
            1,
        );
        let fd = some_fd();
        let ask = || change(&path, fd.as_fd(), &a_change(), Duration::from_secs(5));
        assert!(matches!(ask(), Ok(Err(ConfigError::Mtu))));
        let errno = |r: io::Result<Result<(), ConfigError>>| {
            crate::errno::errno_of(&r.expect_err("an error"))
        };
        assert_eq!(errno(ask()), Some(libc::EPROTO), "created, to a change");
        assert_eq!(errno(ask()), Some(libc::EPROTONOSUPPORT), "a later version");
        assert!(matches!(ask(), Ok(Ok(()))), "a frame in one-byte pieces");
        assert_eq!(server.join().expect("server"), 4);
        // A created reply with no fds, where one was asked for.
        let (path, server) = fake_server(vec![frame(&created), frame(&Reply::Changed)], 16);
        let config = DeviceConfig::new("10.9.0.2".parse().expect("address"));
        let err = create(&path, &config, Duration::from_secs(5)).expect_err("no fd");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::EPROTO));
        // A change reply to a create.
        let err = create(&path, &config, Duration::from_secs(5)).expect_err("changed");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::EPROTO));
        assert_eq!(server.join().expect("server"), 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_bare_eacces_is_explained_only_for_a_group_this_process_lacks() {
        // The test's socket belongs to the test's own group: nothing to
        // add to the server's word.
        let plain = frame(&Reply::Failed {
            errno: libc::EACCES,
        });
        let (path, server) = fake_server(vec![plain], 64);
        let fd = some_fd();
        let err =
            change(&path, fd.as_fd(), &a_change(), Duration::from_secs(5)).expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        assert_eq!(crate::errno::why_of(&err), None);
        assert_eq!(server.join().expect("server"), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_server_that_never_answers_is_etimedout_at_the_deadline() {
        use std::os::unix::net::UnixListener;
        let path = std::env::temp_dir().join(format!("tundra-silent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let fd = some_fd();
        let err =
            change(&path, fd.as_fd(), &a_change(), Duration::from_millis(200)).expect_err("silent");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::ETIMEDOUT));
        drop(holder.join());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_bare_eacces_is_explained_for_a_socket_of_a_group_this_process_lacks() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "needs root under CI"
            );
            eprintln!("NOTICE: skipping a client test: not root (it gives a socket to a group)");
            return;
        }
        let plain = frame(&Reply::Failed {
            errno: libc::EACCES,
        });
        let (path, server) = fake_server(vec![plain], 64);
        // A group no process of the test is in (nor, in the database, root).
        nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(61_999))).expect("chgrp");
        let fd = some_fd();
        let err =
            change(&path, fd.as_fd(), &a_change(), Duration::from_secs(5)).expect_err("refused");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::EACCES));
        let why = crate::errno::why_of(&err).expect("explained");
        assert!(why.contains("is not in group 61999"), "{why}");
        assert_eq!(server.join().expect("server"), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_socket_nobody_listens_on_or_refused_by_its_mode_is_said_so() {
        use std::os::unix::net::UnixListener;
        let path = std::env::temp_dir().join(format!("tundra-stale-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        drop(UnixListener::bind(&path).expect("bind"));
        // The socket file stays; nothing listens.
        let err = connect(&path, soon()).expect_err("refused");
        assert_eq!(crate::errno::errno_of(&err), Some(libc::ECONNREFUSED));
        let why = crate::errno::why_of(&err).expect("why");
        assert!(why.contains("nothing listens at"), "{why}");
        // What its mode refuses is explained from the socket's group.
        let denied = not_connected(&path, libc::EACCES);
        assert_eq!(crate::errno::errno_of(&denied), Some(libc::EACCES));
        assert!(crate::errno::why_of(&denied).is_some());
        // Anything else is the bare errno.
        let other = not_connected(&path, libc::EIO);
        assert_eq!(other.raw_os_error(), Some(libc::EIO));
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_fds_of_a_created_reply_must_be_the_named_devices_queues() {
        if !super::test_guard::privileged_netns() {
            return;
        }
        let mut config = DeviceConfig::new("10.76.0.2".parse().expect("address"));
        config.queues = 2;
        config.name = Some("tclient%d".into());
        let device = crate::platform::create(&config).expect("a two-queue device");
        let dup = |fd: &OwnedFd| fd.try_clone().expect("dup");
        let both = || vec![dup(&device.fd), dup(&device.queues[0])];
        let errno = |made: io::Result<Device>| crate::errno::errno_of(&made.expect_err("refused"));

        let made = created(device.name.clone(), both(), 2).expect("its name, its queues");
        assert_eq!(made.name, device.name);
        assert_eq!(made.queues.len(), 1);
        assert_eq!(made.framing, device.framing);
        assert_eq!(
            errno(created("tother0".into(), both(), 2)),
            Some(libc::EPROTO)
        );
        assert_eq!(
            errno(created(device.name.clone(), vec![dup(&device.fd)], 2)),
            Some(libc::EPROTO),
            "a queue short"
        );
        assert_eq!(
            errno(created(device.name.clone(), both(), 1)),
            Some(libc::EPROTO),
            "a queue more than asked for"
        );
    }

    #[test]
    fn without_a_reply_the_write_failure_is_reported() {
        let (mut client, server) = UnixStream::pair().expect("pair");
        drop(server);
        let err = exchange(&mut client, b"request", None, soon()).expect_err("no server");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
