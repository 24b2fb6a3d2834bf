//! The server's trust model, attacked as a hostile member of its group
//! would: each test is an attack that was really tried, against the real
//! binary in the test run's network namespace. Members are unprivileged
//! processes: this test binary run again as another uid (see
//! `unprivileged_client`), by setpriv, with the server's group as its gid.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tundra_core::client::{self, CreateReply};
use tundra_core::protocol::{self, Reply, Request};
use tundra_core::{AddressSpec, Change, Cidr, DeviceConfig, RouteSpec};

#[path = "support/packets.rs"]
mod packets;
mod support;
use support::{
    eventually, in_flight_turn, interface_exists, privileged_netns, run, Interfaces, Server,
    MEMBER_GID, TIMEOUT,
};

/// Unprivileged members of the server's group, with no entry in the user
/// database: delegations name them by uid.
const ALICE: u32 = 61001;
const BOB: u32 = 61002;

// ---------------------------------------------------------------------
// The unprivileged client: this binary, run again by `as_member`.

/// Not a test: the entry point of the unprivileged client processes the
/// tests start (run with `--ignored --exact`). It performs the action in
/// TUNDRA_TEST_CLIENT, prints one `RESULT ...` line, and for actions that
/// hold something, waits for its stdin to close before exiting.
#[test]
#[ignore = "the unprivileged client the other tests start; not a test by itself"]
fn unprivileged_client() {
    let Ok(action) = std::env::var("TUNDRA_TEST_CLIENT") else {
        panic!("run only by the tests, with TUNDRA_TEST_CLIENT set");
    };
    let fields: Vec<&str> = action.split('|').collect();
    let socket = Path::new(fields[1]);
    let result = |text: String| {
        println!("RESULT {text}");
        std::io::stdout().flush().expect("flush");
    };
    let wait_for_stdin_to_close = || {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
    };
    match fields[0] {
        "create" => {
            let mut config = device(fields[2], fields[3], fields[4], fields[5]);
            if fields.get(6) == Some(&"tap") {
                config.mode = tundra_core::Mode::Tap;
            }
            result(describe(client::create(socket, &config, TIMEOUT)));
        }
        "legacy" => result(legacy_create(socket, fields[2], fields[3])),
        "change" => {
            // The device: one inherited from the test (its fd number), or
            // a new one from the server (address and peer).
            let dev = match fields[2].parse::<RawFd>() {
                // SAFETY: the test handed this fd down, open and not
                // close-on-exec, for this process alone to use.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(_) => {
                    match client::create(socket, &device(fields[2], fields[3], "", ""), TIMEOUT) {
                        Ok(CreateReply::Created(dev)) => dev.fd,
                        other => panic!("create: {}", describe(other)),
                    }
                }
            };
            let outcomes: Vec<String> = fields[4]
                .split(';')
                .map(|spec| change(socket, dev.as_fd(), spec))
                .collect();
            result(outcomes.join(","));
        }
        "persist" => {
            // Devices made persistent and given to another user with the
            // ioctls any holder of the fd may use.
            let count: u8 = fields[2].parse().expect("count");
            let owner: libc::c_int = fields[3].parse().expect("owner");
            let base: u8 = fields[4].parse().expect("base");
            let mut held = Vec::new();
            for i in 1..=count {
                let addr = format!("10.{base}.{i}.2");
                let peer = format!("10.{base}.{i}.1");
                let Ok(CreateReply::Created(dev)) =
                    client::create(socket, &device(&addr, &peer, "", ""), TIMEOUT)
                else {
                    panic!("create {addr}");
                };
                let fd = dev.fd.as_raw_fd();
                // SAFETY: `fd` is an attached TUN fd this process owns; both
                // ioctls take an integer argument by value.
                let persisted = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1) };
                // SAFETY: as above.
                let reowned = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, owner) };
                assert_eq!((persisted, reowned), (0, 0), "the ioctls need no privilege");
                held.push(dev);
            }
            let names: Vec<_> = held.iter().map(|d| d.name.as_str()).collect();
            result(format!("held {}", names.join(" ")));
            wait_for_stdin_to_close();
        }
        "stepwise" => {
            // A device whose changes come one line of stdin at a time.
            let dev = match client::create(socket, &device(fields[2], fields[3], "", ""), TIMEOUT) {
                Ok(CreateReply::Created(dev)) => dev,
                other => panic!("create: {}", describe(other)),
            };
            result(format!("created {}", dev.name));
            for line in std::io::stdin().lines() {
                let spec = line.expect("stdin");
                result(change(socket, dev.fd.as_fd(), &spec));
            }
        }
        "keep" => {
            // A device held until stdin closes (fields: address, peer,
            // prefix, and a name if given).
            let config = device(
                fields[2],
                fields[3],
                fields[4],
                fields.get(5).unwrap_or(&""),
            );
            let outcome = client::create(socket, &config, TIMEOUT);
            result(match &outcome {
                Ok(CreateReply::Created(dev)) => format!("created {}", dev.name),
                _ => "refused".into(),
            });
            wait_for_stdin_to_close();
            drop(outcome);
        }
        "rawroute" => {
            // Routes written straight into the frame, host bits and all,
            // as a hostile client would (the library never sends them).
            let dev = match client::create(socket, &device(fields[2], fields[3], "", ""), TIMEOUT) {
                Ok(CreateReply::Created(dev)) => dev,
                other => panic!("create: {}", describe(other)),
            };
            let outcomes: Vec<String> = fields[4]
                .split(';')
                .map(|route| raw_route_change(socket, dev.fd.as_fd(), route))
                .collect();
            result(outcomes.join(","));
        }
        "unread" => {
            // Asks for devices (of 64 queues unless told), and never reads
            // a reply.
            let count: u8 = fields[2].parse().expect("count");
            let base: u8 = fields[3].parse().expect("base");
            let queues = fields.get(4).map_or(tundra_core::config::MAX_QUEUES, |q| {
                q.parse().expect("queues")
            });
            let mut held = Vec::new();
            for i in 1..=count {
                let mut config = device(&format!("10.{base}.{i}.2"), "", "", "");
                config.queues = queues;
                let frame = protocol::encode(&Request::Create(config)).expect("encode");
                let Ok(mut stream) = UnixStream::connect(socket) else {
                    continue;
                };
                if stream.write_all(&frame).is_ok() {
                    // Paced by the server: the reply is there (unread).
                    let mut ready = [nix::poll::PollFd::new(
                        stream.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut ready, nix::poll::PollTimeout::from(2000u16));
                    held.push(stream);
                }
            }
            result(format!("sent {}", held.len()));
            wait_for_stdin_to_close();
        }
        "teach" => {
            // Router advertisements and redirects written into the
            // member's own device, as if from a router on its link.
            let mut config = device(fields[2], fields[3], "", "");
            config.ipv6 = fields[4] == "ipv6";
            let dev = match client::create(socket, &config, TIMEOUT) {
                Ok(CreateReply::Created(dev)) => dev,
                other => panic!("create: {}", describe(other)),
            };
            teach(&dev.fd, fields[2], fields[3]);
            result(format!("taught {}", dev.name));
            wait_for_stdin_to_close();
        }
        "hold" => {
            let n: usize = fields[2].parse().expect("count");
            let held: Vec<_> = (0..n)
                .filter_map(|_| UnixStream::connect(socket).ok())
                .collect();
            result(format!("holding {}", held.len()));
            wait_for_stdin_to_close();
        }
        other => panic!("unknown action {other}"),
    }
}

fn device(addr: &str, peer: &str, prefix: &str, name: &str) -> DeviceConfig {
    let mut config = DeviceConfig::new(addr.parse().expect("address"));
    if !peer.is_empty() {
        config.dstaddr = Some(peer.parse().expect("peer"));
    }
    if !prefix.is_empty() {
        config.prefix = prefix.parse().expect("prefix");
    }
    if !name.is_empty() {
        config.name = Some(name.into());
    }
    config
}

/// Asks for the change `spec` (see `change_of`) of the device of `fd`:
/// `ok`, `invalid OPTION` or `errno NAME`.
fn change(socket: &Path, fd: std::os::fd::BorrowedFd, spec: &str) -> String {
    match client::change(socket, fd, &change_of(spec), TIMEOUT) {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(option)) => format!("invalid {}", option.option_name()),
        Err(e) => format!("errno {}", tundra_core::errno::io_error_name(&e)),
    }
}

/// A change written as `mtu N`, `addr A/P`, `peer A P` or `route N/P`.
fn change_of(spec: &str) -> Change {
    let words: Vec<&str> = spec.split(' ').collect();
    let prefixed = |text: &str| {
        let (address, prefix) = text.split_once('/').expect("A/P");
        (
            address.parse::<IpAddr>().expect("address"),
            prefix.parse::<u8>().expect("prefix"),
        )
    };
    match words[..] {
        ["down"] | ["up"] => Change::Link {
            up: Some(words[0] == "up"),
            mtu: None,
        },
        ["mtu", n] => Change::Link {
            up: None,
            mtu: Some(n.parse().expect("mtu")),
        },
        ["addr", text] => {
            let (address, prefix) = prefixed(text);
            Change::AddAddress(AddressSpec {
                address,
                dstaddr: None,
                prefix,
            })
        }
        ["peer", address, peer] => {
            let peer: IpAddr = peer.parse().expect("peer");
            Change::AddAddress(AddressSpec {
                address: address.parse().expect("address"),
                dstaddr: Some(peer),
                prefix: if peer.is_ipv4() { 32 } else { 128 },
            })
        }
        ["route", text] | ["route", text, "metric", _] => {
            let (network, prefix) = prefixed(text);
            Change::AddRoute(RouteSpec {
                dst: Cidr::new(network, prefix).expect("route"),
                metric: words.get(3).map(|m| m.parse().expect("metric")),
            })
        }
        _ => panic!("unknown change {spec:?}"),
    }
}

/// Sends a change adding route `text` (`ADDRESS/LEN`, host bits allowed)
/// for the device of `fd`; `ok`, `errno NAME` or `invalid OPTION`.
fn raw_route_change(socket: &Path, fd: std::os::fd::BorrowedFd, text: &str) -> String {
    let (address, len) = text.split_once('/').expect("A/P");
    let address: IpAddr = address.parse().expect("address");
    let len: u8 = len.parse().expect("len");
    let network = Cidr::new(address, len).expect("a length of the family");
    let change = Change::AddRoute(RouteSpec {
        dst: network,
        metric: None,
    });
    let mut frame = protocol::encode(&Request::Change(change)).expect("encode");
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (wanted, written) = (octets(network.network()), octets(address));
    let at = frame
        .windows(wanted.len())
        .position(|w| w == wanted.as_slice())
        .expect("the network's bytes are in the frame");
    frame[at..at + written.len()].copy_from_slice(&written);
    let stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    tundra_core::fdpass::send_with_fds(stream.as_fd(), &frame, &[fd.as_raw_fd()]).expect("send");
    match protocol::read_payload(&mut &stream).map(|p| protocol::decode::<Reply>(&p)) {
        Ok(Ok(Reply::Changed)) => "ok".into(),
        Ok(Ok(Reply::Failed { errno } | Reply::Refused { errno, .. })) => {
            format!("errno {}", tundra_core::errno::name(errno))
        }
        Ok(Ok(Reply::Invalid { option })) => format!("invalid {}", option.option_name()),
        other => format!("unexpected {other:?}"),
    }
}

/// What a hostile member writes into its device `fd` (address `addr`,
/// peer `peer`) to teach the host routes: a router advertisement from
/// fe80::1 (a default router, on-link and SLAAC prefixes for
/// 2001:db8:77::/64 and the host's own fd50::/64, a route to
/// 2001:db8:78::/48), an ICMPv6 redirect for 2001:db8:99::1, and for an
/// IPv4 device an ICMP redirect for 192.0.2.55; then an echo request to
/// the device's own address, whose reply says the kernel has taken
/// everything written before it.
fn teach(fd: &OwnedFd, addr: &str, peer: &str) {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v6 = |text: &str| text.parse::<Ipv6Addr>().expect("IPv6 address");
    let router = v6("fe80::1");
    let write = |packet: &[u8]| {
        let written = nix::unistd::write(fd, packet).expect("write into the device");
        assert_eq!(written, packet.len());
    };
    write(&packets::router_advertisement(
        router,
        &[(v6("2001:db8:77::"), 64), (v6("fd50::"), 64)],
        &[(v6("2001:db8:78::"), 48)],
    ));
    let id = 0x7e57;
    match (addr.parse::<IpAddr>(), peer.parse::<IpAddr>()) {
        (Ok(IpAddr::V6(own)), Ok(IpAddr::V6(peer))) => {
            write(&packets::redirect_v6(
                router,
                own,
                v6("fe80::2"),
                v6("2001:db8:99::1"),
            ));
            write(&packets::echo_v6(peer, own, id));
        }
        (Ok(IpAddr::V4(own)), Ok(IpAddr::V4(peer))) => {
            let all_nodes = v6("ff02::1");
            write(&packets::redirect_v6(
                router,
                all_nodes,
                v6("fe80::2"),
                v6("2001:db8:99::1"),
            ));
            let target: Ipv4Addr = "192.0.2.55".parse().expect("address");
            write(&packets::redirect_v4(peer, own, peer, target));
            write(&packets::echo_v4(peer, own, id));
        }
        _ => panic!("an address and a peer of one family"),
    }
    // The reply, past whatever else the kernel sends out (solicitations).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no echo reply from the device's own address"
        );
        let mut ready = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut ready, nix::poll::PollTimeout::from(millis));
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) if packets::is_echo_reply(&buf[..n], id) => return,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read from the device: {e}"),
        }
    }
}

fn describe(outcome: std::io::Result<CreateReply>) -> String {
    match outcome {
        Ok(CreateReply::Created(dev)) => format!("created {}", dev.name),
        Ok(CreateReply::Invalid(option)) => format!("invalid {}", option.option_name()),
        Err(e) => format!("errno {}", tundra_core::errno::io_error_name(&e)),
    }
}

/// A 0.x create request; `created NAME`, or `closed` (0.x has no error
/// reply: a refused request's connection is closed).
fn legacy_create(socket: &Path, addr: &str, peer: &str) -> String {
    let mut request = [0u8; 160];
    request[8..16].copy_from_slice(&152u64.to_ne_bytes());
    request[16..16 + addr.len()].copy_from_slice(addr.as_bytes());
    request[62..62 + peer.len()].copy_from_slice(peer.as_bytes());
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(&request).expect("request");
    let mut reply = [0u8; 32];
    match stream.read_exact(&mut reply) {
        Ok(()) => {
            let name = &reply[16..];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            format!("created {}", String::from_utf8_lossy(&name[..end]))
        }
        Err(_) => "closed".into(),
    }
}

/// A running unprivileged client.
struct Member {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Member {
    /// The client's `RESULT` line, without the prefix.
    fn result(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("client output");
            assert!(n > 0, "the client ended without a result");
            if let Some(result) = line.strip_prefix("RESULT ") {
                return result.trim().to_string();
            }
        }
    }

    /// Sends the client one line on its stdin and returns its result.
    fn ask(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the client");
        self.result()
    }

    /// Closes its stdin (ending what it holds) and waits for it.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().expect("wait").success());
    }
}

/// This test binary, copied where an unprivileged user can run it (the
/// checkout may be under a folder only root can enter).
fn client_binary() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        remove_leftover_copies();
        let dir = std::env::temp_dir().join(format!("tundra-test-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("client folder");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = dir.join("client");
        std::fs::copy(std::env::current_exe().expect("test binary"), &copy).expect("copy");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        copy
    })
}

/// Copies left by earlier runs whose process is gone (killed runs).
fn remove_leftover_copies() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tundra-test-client-"))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts the unprivileged client as `uid`, a member of the server's
/// group, performing `action` (fields separated by `|`).
fn as_member(uid: u32, action: &str) -> Member {
    as_user(uid, MEMBER_GID, None, action)
}

/// The test client as `uid` with primary group `gid` and, if given, one
/// supplementary group.
fn as_user(uid: u32, gid: u32, supplementary: Option<u32>, action: &str) -> Member {
    let groups = match supplementary {
        Some(group) => format!("--groups={group}"),
        None => "--clear-groups".to_string(),
    };
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(groups)
        .arg(client_binary())
        .args(["--ignored", "--exact", "unprivileged_client", "--nocapture"])
        .env("TUNDRA_TEST_CLIENT", action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Member { child, stdout }
}

/// One create request as `uid`: `created NAME`, `errno NAME` or
/// `invalid OPTION`. The device, if made, goes with the client.
fn create_as(
    uid: u32,
    server: &Server,
    addr: &str,
    peer: &str,
    prefix: &str,
    name: &str,
) -> String {
    let socket = server.socket.display();
    let mut member = as_member(
        uid,
        &format!("create|{socket}|{addr}|{peer}|{prefix}|{name}"),
    );
    let result = member.result();
    member.finish();
    result
}

fn legacy_as(uid: u32, server: &Server, addr: &str, peer: &str) -> String {
    let mut member = as_member(
        uid,
        &format!("legacy|{}|{addr}|{peer}", server.socket.display()),
    );
    let result = member.result();
    member.finish();
    result
}

// ---------------------------------------------------------------------
// A host with a real remote host behind a veth, and default routes
// through it: what a member must not be able to hijack.

struct RemoteHost {
    netns: String,
    link: String,
    /// One at a time: their names and default routes are the same.
    _alone: std::sync::MutexGuard<'static, ()>,
}

impl RemoteHost {
    /// 10.50.0.1/24 and fd50::1/64 here, the remote host 10.50.0.9 and
    /// fd50::9 in a namespace of its own, default routes through it.
    fn new() -> RemoteHost {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let id = std::process::id();
        let host = RemoteHost {
            netns: format!("tundra-remote-{id}"),
            link: format!("trh{id}"),
            _alone: alone,
        };
        let peer = format!("trr{id}");
        run("ip", &["netns", "add", &host.netns]);
        run(
            "ip",
            &[
                "link", "add", &host.link, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &host.netns]);
        let remote = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &host.netns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        remote(&["addr", "add", "10.50.0.9/24", "dev", &peer]);
        remote(&["addr", "add", "fd50::9/64", "dev", &peer, "nodad"]);
        remote(&["link", "set", &peer, "up"]);
        run("ip", &["addr", "add", "10.50.0.1/24", "dev", &host.link]);
        run(
            "ip",
            &["addr", "add", "fd50::1/64", "dev", &host.link, "nodad"],
        );
        run("ip", &["link", "set", &host.link, "up"]);
        run("ip", &["route", "add", "default", "via", "10.50.0.9"]);
        run("ip", &["-6", "route", "add", "default", "via", "fd50::9"]);
        host
    }

    /// The interface the host would send `addr`'s traffic through.
    fn route_to(&self, addr: &str) -> String {
        let out = run("ip", &["-o", "route", "get", addr]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let dev = words
            .iter()
            .position(|w| *w == "dev")
            .expect("dev in route");
        words[dev + 1].to_string()
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        // Deleting the link removes its routes (the defaults included).
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

// ---------------------------------------------------------------------
// The tests.

#[test]
fn a_device_given_ipv6_back_by_its_mtu_learns_nothing_either() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.77.0.0/16\n");
    let server = Server::start_as_unit("mtu6", &config, &[]);
    let socket = server.socket.display().to_string();
    let mut alice = as_member(ALICE, &format!("stepwise|{socket}|10.77.0.2|10.77.0.1"));
    let created = alice.result();
    let name = created
        .strip_prefix("created ")
        .expect(&created)
        .to_string();
    let accept_ra = || std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/accept_ra"));
    assert_eq!(accept_ra().ok().as_deref(), Some("0\n"));
    // Below 1280 the kernel drops the link's IPv6, and brings it back,
    // with the namespace's defaults, when the MTU rises again: while the
    // link is up, its holder could have a router advertisement taken
    // before the server turns learning off again.
    assert_eq!(alice.ask("mtu 1000"), "ok");
    assert!(accept_ra().is_err(), "no IPv6 below 1280");
    assert_eq!(alice.ask("mtu 1500"), "errno ebusy");
    assert_eq!(alice.ask("down"), "ok");
    assert_eq!(alice.ask("mtu 1500"), "ok");
    assert_eq!(alice.ask("up"), "ok");
    assert_eq!(accept_ra().ok().as_deref(), Some("0\n"));
    for key in ["autoconf", "accept_redirects"] {
        let value = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/{key}"));
        assert_eq!(value.ok().as_deref(), Some("0\n"), "{key}");
    }
    drop(alice.child.stdin.take());
    let _ = alice.child.wait();
}

#[test]
fn a_members_router_advertisements_and_redirects_teach_the_host_nothing() {
    if !privileged_netns() {
        return;
    }
    let host = RemoteHost::new();
    let config = format!("allow uid:{ALICE} 10.89.0.0/16 fd89::/48\n");
    let server = Server::start_as_unit("teach", &config, &[]);
    let socket = server.socket.display().to_string();
    for (addr, peer, family) in [
        ("fd89::2", "fd89::1", "ipv6"),
        ("10.89.0.2", "10.89.0.1", "ipv4"),
    ] {
        let mut alice = as_member(ALICE, &format!("teach|{socket}|{addr}|{peer}|{family}"));
        let taught = alice.result();
        let name = taught
            .strip_prefix("taught ")
            .unwrap_or_else(|| panic!("{taught}\n{}", server.log()))
            .to_string();
        let routes = run("ip", &["-6", "route", "show", "dev", &name]);
        for learned in ["2001:db8:77::", "2001:db8:78::", "fd50::", "default"] {
            assert!(
                !routes.contains(learned),
                "{family}: learned {learned}:\n{routes}"
            );
        }
        let global = run(
            "ip",
            &["-6", "addr", "show", "dev", &name, "scope", "global"],
        );
        let expected = if family == "ipv6" { 1 } else { 0 };
        assert_eq!(
            global.matches("inet6 ").count(),
            expected,
            "{family}:\n{global}"
        );
        for elsewhere in ["2001:db8:77::1", "2001:db8:99::1", "fd50::77", "192.0.2.55"] {
            assert_eq!(host.route_to(elsewhere), host.link, "{family}: {elsewhere}");
        }
        let cache = run("ip", &["-6", "route", "show", "cache"]);
        assert!(
            !cache.contains(&name),
            "{family}: a redirect took:\n{cache}"
        );
        alice.finish();
    }
}

#[test]
fn delegated_requests_are_served_and_everything_else_refused_with_eacces() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.61.0.0/16 fd61::/48\n");
    let server = Server::start("delegated", &config, &[]);

    let v4 = create_as(ALICE, &server, "10.61.1.2", "10.61.1.1", "", "");
    assert!(v4.starts_with("created tun"), "{v4}");
    let v6 = create_as(ALICE, &server, "fd61::1:2", "fd61::1:1", "64", "tunalice%d");
    assert!(v6.starts_with("created tunalice"), "{v6}");
    // Outside the delegation, and a member with no delegation at all.
    assert_eq!(
        create_as(ALICE, &server, "10.62.0.2", "", "", ""),
        "errno eacces"
    );
    assert_eq!(
        create_as(ALICE, &server, "10.61.2.2", "10.62.2.1", "", ""),
        "errno eacces"
    );
    assert_eq!(
        create_as(BOB, &server, "10.61.3.2", "", "", ""),
        "errno eacces"
    );
    assert!(server.logged("nothing is delegated to uid 61002"));

    // 0.x requests go through the same checks.
    let legacy = legacy_as(ALICE, &server, "10.61.4.2", "10.61.4.1");
    assert!(legacy.starts_with("created tun"), "{legacy}");
    assert_eq!(
        legacy_as(ALICE, &server, "10.62.4.2", "10.62.4.1"),
        "closed"
    );
    assert_eq!(legacy_as(BOB, &server, "fd61:4::2", ""), "closed");
}

#[test]
fn peer_hijack_short_prefixes_and_address_theft_are_refused() {
    if !privileged_netns() {
        return;
    }
    let host = RemoteHost::new();
    // A careless delegation that overlaps the host's own network: the
    // conflict check must still protect it.
    let config = format!("allow uid:{ALICE} 10.50.0.0/16 fd50::/16 10.63.0.0/16 fd63::/48\n");
    let server = Server::start("hijack", &config, &[]);
    assert_eq!(host.route_to("10.50.0.9"), host.link);

    // Peer hijack: the remote host as the device's peer.
    assert_eq!(
        create_as(ALICE, &server, "10.50.7.2", "10.50.0.9", "", ""),
        "errno eaddrinuse"
    );
    assert_eq!(
        create_as(ALICE, &server, "fd50:7::2", "fd50::9", "", ""),
        "errno eaddrinuse"
    );
    // ... or anything else outside the delegation, cloud metadata included.
    assert_eq!(
        create_as(ALICE, &server, "10.63.0.2", "169.254.169.254", "", ""),
        "errno eacces"
    );
    // Short prefixes that would capture most of the host's traffic.
    assert_eq!(
        create_as(ALICE, &server, "200.0.0.1", "", "1", ""),
        "errno eacces"
    );
    assert_eq!(
        create_as(ALICE, &server, "10.63.0.2", "", "1", ""),
        "errno eacces"
    );
    assert_eq!(
        create_as(ALICE, &server, "fd63::2", "", "0", ""),
        "errno eacces"
    );
    // A prefix inside the delegation that covers the host's network.
    assert_eq!(
        create_as(ALICE, &server, "10.50.200.2", "", "16", ""),
        "errno eaddrinuse"
    );
    // Address theft: the routed remote host's address, or a local one.
    assert_eq!(
        create_as(ALICE, &server, "10.50.0.9", "", "", ""),
        "errno eaddrinuse"
    );
    assert_eq!(
        create_as(ALICE, &server, "fd50::9", "", "", ""),
        "errno eaddrinuse"
    );
    assert_eq!(
        create_as(ALICE, &server, "10.50.0.1", "10.63.9.1", "", ""),
        "errno eaddrinuse"
    );
    // The same through 0.x.
    assert_eq!(
        legacy_as(ALICE, &server, "10.50.8.2", "10.50.0.9"),
        "closed"
    );

    // Nothing moved; and a request that collides with nothing is served.
    assert_eq!(host.route_to("10.50.0.9"), host.link);
    assert_eq!(host.route_to("fd50::9"), host.link);
    assert_eq!(host.route_to("198.51.100.7"), host.link);
    let fine = create_as(ALICE, &server, "10.63.1.2", "10.63.1.1", "", "");
    assert!(fine.starts_with("created"), "{fine}");
}

#[test]
fn changes_stay_inside_the_delegation_on_the_members_own_devices() {
    if !privileged_netns() {
        return;
    }
    let host = RemoteHost::new();
    let config = format!(
        "allow uid:{ALICE} 10.50.0.0/16 10.68.0.0/16 fd68::/48\nallow uid:{BOB} 10.69.0.0/16\n"
    );
    let server = Server::start("change", &config, &[]);
    let socket = server.socket.display().to_string();
    // Root's device in Alice's range, which she must not shadow.
    let mut root = DeviceConfig::new("10.68.9.1".parse().expect("address"));
    root.prefix = 24;
    let root = tundra_core::platform::create(&root).expect("root's device");
    // A route of the host's through a gateway, which no address claims.
    run("ip", &["route", "add", "10.68.40.0/24", "via", "10.50.0.9"]);

    let changes = [
        // Hers to make.
        "mtu 1400",
        "addr 10.68.1.2/24",
        "peer fd68::1:2 fd68::1:1",
        "route 10.68.2.0/24",
        // Outside her delegation: the host's routing.
        "route 10.0.0.0/8",
        "addr fd68::2:2/0",
        "peer 10.68.3.2 169.254.169.254",
        // Inside it, but the host's or root's already.
        "route 10.50.0.0/24",
        "peer 10.68.3.2 10.50.0.9",
        "addr 10.50.0.9/32",
        "route 10.68.9.0/25",
        "addr 10.68.9.1/32",
        "route 10.68.40.0/25",
    ];
    let mut alice = as_member(
        ALICE,
        &format!("change|{socket}|10.68.0.2|10.68.0.1|{}", changes.join(";")),
    );
    assert_eq!(
        alice.result(),
        "ok,ok,ok,ok,errno eacces,errno eacces,errno eacces,\
         errno eaddrinuse,errno eaddrinuse,errno eaddrinuse,errno eaddrinuse,errno eaddrinuse,\
         errno eaddrinuse"
    );
    // Root's address itself is named as taken, not only the route it makes.
    assert!(
        server.logged("10.68.9.1 is already assigned to an interface"),
        "{}",
        server.log()
    );
    assert_eq!(host.route_to("10.50.0.9"), host.link);
    assert_eq!(host.route_to("10.68.9.7"), root.name);
    alice.finish();

    // Bob holds an fd of root's device: not his, whatever he asks.
    let fd = root.fd.as_raw_fd();
    nix::fcntl::fcntl(
        &root.fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .expect("inheritable");
    let mut bob = as_member(
        BOB,
        &format!("change|{socket}|{fd}||mtu 1300;route 10.69.1.0/24"),
    );
    assert_eq!(bob.result(), "errno eacces,errno eacces");
    bob.finish();
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", root.name)).expect("mtu");
    assert_eq!(mtu.trim(), "1500");
    assert!(server.logged("not a device the server made for this user"));
}

#[test]
fn a_route_with_host_bits_is_refused_not_widened_past_the_conflict_check() {
    if !privileged_netns() {
        return;
    }
    let host = RemoteHost::new();
    // Both share the README's delegation; the host's fd50::/64 lies in a
    // careless one of Alice's.
    let config = format!(
        "allow uid:{ALICE} fd11:b7b7:4360::/48 fd50::/16\nallow uid:{BOB} fd11:b7b7:4360::/48\n"
    );
    let server = Server::start("hostbits", &config, &[]);
    let socket = server.socket.display().to_string();
    let mut bob = as_member(BOB, &format!("keep|{socket}|fd11:b7b7:4360:2::2||64"));
    let held = bob.result();
    assert!(held.starts_with("created"), "{held}");
    let victim = held.trim_start_matches("created ").to_string();

    let mut alice = as_member(
        ALICE,
        &format!(
            "rawroute|{socket}|fd11:b7b7:4360:1::2||\
             fd11:b7b7:4360::1/48;fd50::1/16;fd11:b7b7:4360::/48;fd50::/16"
        ),
    );
    // Host bits make a malformed frame; the same
    // networks written right still collide with Bob's and the host's.
    assert_eq!(
        alice.result(),
        "errno eproto,errno eproto,errno eaddrinuse,errno eaddrinuse"
    );
    let routes = run("ip", &["-6", "route", "show", "table", "all"]);
    assert!(!routes.contains("fd11:b7b7:4360::/48"), "{routes}");
    assert!(!routes.contains("fd50::/16"), "{routes}");
    assert_eq!(host.route_to("fd50::9"), host.link);
    assert_eq!(host.route_to("fd11:b7b7:4360:2::7"), victim);
    alice.finish();
    bob.finish();
}

#[test]
fn unread_replies_cannot_stop_the_server_handing_devices_to_others() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.72.0.0/16\nallow uid:{BOB} 10.73.0.0/16\n");
    let server = Server::start_as_unit("unread", &config, &[]);
    let socket = server.socket.display().to_string();
    // 20 requests for 64 queues each, never read: 1280 fds, past the
    // 1024 the kernel lets the confined server have in flight.
    let mut alice = as_member(ALICE, &format!("unread|{socket}|20|72"));
    let sent = alice.result();
    assert!(sent.starts_with("sent "), "{sent}");
    // Let the server take every request in before the others ask.
    assert!(eventually(
        || server.log().matches("uid=61001").count() >= 20
    ));

    let bob = create_as(BOB, &server, "10.73.0.2", "10.73.0.1", "", "");
    assert!(bob.starts_with("created"), "{bob}");
    assert_served_as_root(&server, 5);
    assert!(
        server.logged("device fds of earlier replies are unread"),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("dropped") && !l.contains("closed before a whole request")),
        "{log}"
    );
    // Past the deadline her unread reply is watched apart from its slot;
    // once she is gone, what it held is hers again.
    assert!(
        server.logged("reply not read by the deadline"),
        "{}",
        server.log()
    );
    alice.finish();
    assert!(
        eventually(
            || create_as(ALICE, &server, "10.72.9.2", "10.72.9.1", "", "").starts_with("created")
        ),
        "{}",
        server.log()
    );
}

#[test]
fn a_group_the_user_database_does_not_give_the_user_admits_nothing() {
    if !privileged_netns() {
        return;
    }
    // nobody (in the user database, not in the group) with the group as a
    // supplementary group of its process: it passes the socket's mode,
    // but the server goes by the database (a member removed from the
    // group keeps it in sessions started before).
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("NOTICE: no user nobody here: test skipped");
        return;
    };
    let config = format!("allow gid:{MEMBER_GID} 10.66.0.0/16\n");
    let server = Server::start("database", &config, &[]);
    let socket = server.socket.display();
    let mut client = as_user(
        nobody.uid.as_raw(),
        nobody.gid.as_raw(),
        Some(MEMBER_GID),
        &format!("create|{socket}|10.66.0.2||24|"),
    );
    assert_eq!(client.result(), "errno eacces");
    client.finish();
    assert!(
        server.logged("not root and not in the group"),
        "{}",
        server.log()
    );
}

/// A group and a user of the user database, made for one test (the user
/// in the group as a supplementary group, as `usermod -aG` makes it) and
/// removed when dropped.
struct DatabaseMember {
    user: String,
    group: String,
}

impl DatabaseMember {
    fn new() -> DatabaseMember {
        let n = std::process::id();
        let member = DatabaseMember {
            user: format!("tundrau{n}"),
            group: format!("tundrag{n}"),
        };
        member.remove();
        run("groupadd", &[&member.group]);
        run(
            "useradd",
            &[
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "-G",
                &member.group,
                &member.user,
            ],
        );
        member
    }

    fn ids(&self) -> (u32, u32, u32) {
        let id = |args: &[&str]| run("id", args).trim().parse::<u32>().expect("id");
        let group = nix::unistd::Group::from_name(&self.group)
            .ok()
            .flatten()
            .expect("group");
        (
            id(&["-u", &self.user]),
            id(&["-g", &self.user]),
            group.gid.as_raw(),
        )
    }

    fn remove(&self) {
        let _ = Command::new("userdel")
            .arg(&self.user)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel")
            .arg(&self.group)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for DatabaseMember {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn a_member_by_a_supplementary_group_of_the_user_database_is_served() {
    if !privileged_netns() {
        return;
    }
    // The usual member: added to the server's group with usermod -aG, its
    // own primary group apart.
    let member = DatabaseMember::new();
    let (uid, primary, group) = member.ids();
    assert_ne!(primary, group);
    let config = format!("allow group:{} 10.67.0.0/16\n", member.group);
    let server = Server::start("supplementary", &config, &["--group", &member.group]);
    let socket = server.socket.display();
    let mut client = as_user(
        uid,
        primary,
        Some(group),
        &format!("create|{socket}|10.67.0.2||24|"),
    );
    let result = client.result();
    assert!(result.starts_with("created"), "{result}\n{}", server.log());
    client.finish();
}

#[test]
fn members_together_hold_at_most_half_of_what_may_be_in_flight() {
    if !privileged_netns() {
        return;
    }
    // Confined as the unit (1024 open files here): members may hold 512
    // device fds unread, all together. Eight users hold 64 each.
    let config = format!("allow gid:{MEMBER_GID} 10.88.0.0/13\n");
    let server = Server::start_as_unit("budget", &config, &[]);
    let socket = server.socket.display().to_string();
    let first = 61030;
    let members: Vec<Member> = (0..8u8)
        .map(|i| {
            let mut member = as_member(
                first + u32::from(i),
                &format!("unread|{socket}|1|{}", 88 + i),
            );
            assert_eq!(member.result(), "sent 1");
            member
        })
        .collect();
    assert!(eventually(|| server.log().matches(" created").count() >= 8));
    // A ninth user, within its own share, finds the members' half used.
    assert_eq!(
        create_as(first + 8, &server, "10.95.9.2", "", "", ""),
        "errno eagain"
    );
    assert!(
        server.logged("512 device fds of replies to members are unread"),
        "{}",
        server.log()
    );
    // The other half is root's.
    assert_served_as_root(&server, 61);
    for member in members {
        member.finish();
    }
}

#[test]
fn members_unread_replies_neither_lock_root_out_nor_keep_their_slots() {
    if !privileged_netns() {
        return;
    }
    // 64 fds in flight, root's: see `in_flight_turn`.
    let _turn = in_flight_turn();
    // Every member's group has 10.80.0.0/13: 10.80 to 10.87.
    let config = format!("allow gid:{MEMBER_GID} 10.80.0.0/13\n");
    let server = Server::start("lockout", &config, &[]);
    let socket = server.socket.display().to_string();
    // 8 users x 8 one-queue replies left unread: the 64 slots members
    // have, 8 a user (the defaults).
    let first = 61010;
    let members: Vec<Member> = (0..8u8)
        .map(|i| {
            as_member(
                first + u32::from(i),
                &format!("unread|{socket}|8|{}|1", 80 + i),
            )
        })
        .collect();
    let members: Vec<Member> = members
        .into_iter()
        .map(|mut member| {
            let sent = member.result();
            assert_eq!(sent, "sent 8");
            member
        })
        .collect();
    assert!(eventually(|| server.log().matches(" created").count() >= 64));
    // Root is served while they hold every slot.
    assert_served_as_root(&server, 60);
    // And a held slot is given back at the deadline, the fds still
    // counted: the first user may ask again.
    let again = create_as(first, &server, "10.80.9.2", "", "", "");
    assert!(again.starts_with("created"), "{again}\n{}", server.log());
    assert!(server.logged("reply not read by the deadline"));
    for member in members {
        member.finish();
    }
}

#[test]
fn a_link_taken_down_keeps_its_claims_and_is_checked_again_when_it_comes_up() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.74.0.0/16\nallow uid:{BOB} 10.74.0.0/16\n");
    let server = Server::start("linkdown", &config, &[]);
    let socket = server.socket.display().to_string();
    let mut alice = as_member(ALICE, &format!("stepwise|{socket}|10.74.1.2|10.74.1.1"));
    let created = alice.result();
    let name = created.trim_start_matches("created ").to_string();
    // Down, the kernel drops the route to her peer, not the address.
    assert_eq!(alice.ask("down"), "ok");
    assert_eq!(
        create_as(BOB, &server, "10.74.2.2", "10.74.1.1", "", ""),
        "errno eaddrinuse"
    );
    // Up again; and down once more, while root (whom nothing stops) gives
    // that peer to a device of its own: her link may not come back up.
    assert_eq!(alice.ask("up"), "ok");
    assert_eq!(alice.ask("down"), "ok");
    let mut root = DeviceConfig::new("10.74.3.2".parse().expect("address"));
    root.dstaddr = Some("10.74.1.1".parse().expect("peer"));
    let root = tundra_core::platform::create(&root).expect("root's device");
    assert_eq!(alice.ask("up"), "errno eaddrinuse");
    let route = run("ip", &["-o", "route", "get", "10.74.1.1"]);
    assert!(route.contains(&format!("dev {} ", root.name)), "{route}");
    assert!(!run("ip", &["route"]).contains(&format!("dev {name} ")));
    alice.finish();
}

#[test]
fn a_default_route_is_granted_only_where_it_was_delegated() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.78.0.0/16\nallow uid:{BOB} 0.0.0.0/0\n");
    let server = Server::start("default", &config, &[]);
    let socket = server.socket.display().to_string();
    let mut alice = as_member(
        ALICE,
        &format!("change|{socket}|10.78.1.2|10.78.1.1|route 0.0.0.0/0 metric 3000"),
    );
    assert_eq!(alice.result(), "errno eacces");
    alice.finish();
    let mut bob = as_member(BOB, &format!("stepwise|{socket}|10.79.1.2|10.79.1.1"));
    let name = bob.result().trim_start_matches("created ").to_string();
    assert_eq!(bob.ask("route 0.0.0.0/0 metric 3000"), "ok");
    let defaults = run("ip", &["route", "show", "default"]);
    assert!(defaults.contains(&format!("dev {name} ")), "{defaults}");
    bob.finish();
    // What was changed, in the log line of the request.
    assert!(
        eventually(|| server.logged(&format!("device={name} changed: route added"))),
        "{}",
        server.log()
    );
}

#[test]
fn a_name_outside_the_prefix_or_of_an_existing_device_is_refused() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.64.0.0/16\n");
    let server = Server::start("names", &config, &[]);
    for name in ["eth0", "wg0", "-", "123", "tun"] {
        assert_eq!(
            create_as(ALICE, &server, "10.64.1.2", "", "", name),
            "errno eacces",
            "{name}"
        );
    }
    // TAP devices have a prefix of their own, as direct creation's names.
    let tap = |name: &str| {
        let socket = server.socket.display();
        let mut member = as_member(ALICE, &format!("create|{socket}|10.64.3.2|||{name}|tap"));
        let result = member.result();
        member.finish();
        result
    };
    assert!(tap("").starts_with("created tap"), "{}", tap(""));
    assert!(tap("tapalice%d").starts_with("created tapalice"));
    assert_eq!(tap("tun%d"), "errno eacces");

    // An administrator's persistent device, unattached: never taken over.
    let existing = format!("tunx{}", std::process::id() % 100_000);
    run("ip", &["tuntap", "add", "dev", &existing, "mode", "tun"]);
    let result = create_as(ALICE, &server, "10.64.2.2", "10.64.2.1", "", &existing);
    let owner = std::fs::read_to_string(format!("/sys/class/net/{existing}/owner"));
    let addresses = run("ip", &["-o", "addr", "show", "dev", &existing]);
    run("ip", &["link", "del", &existing]);
    assert_eq!(result, "errno ebusy");
    assert_eq!(owner.expect("owner").trim(), "-1", "owner unchanged");
    assert!(!addresses.contains("10.64.2.2"), "{addresses}");
}

#[test]
fn persisting_or_reowning_a_handed_over_fd_neither_escapes_limits_nor_outlives_its_holder() {
    if !privileged_netns() {
        return;
    }
    let config =
        format!("allow uid:{ALICE} 10.65.0.0/16 10.66.0.0/16\nallow uid:{BOB} 10.67.0.0/16\n");
    let server = Server::start("persist", &config, &["--max-devices-per-uid", "3"]);
    let socket = server.socket.display().to_string();

    // Alice makes her three devices persistent and gives them to Bob.
    let mut alice = as_member(ALICE, &format!("persist|{socket}|3|{BOB}|65"));
    let held = alice.result();
    let names: Vec<String> = held
        .strip_prefix("held ")
        .unwrap_or_else(|| panic!("{held}"))
        .split(' ')
        .map(String::from)
        .collect();
    // Persistent: gone with the test, passed or failed.
    let _made = Interfaces(names.clone());
    assert_eq!(names.len(), 3);
    // Her limit still holds, and Bob is not locked out.
    assert_eq!(
        create_as(ALICE, &server, "10.66.0.2", "", "", ""),
        "errno edquot"
    );
    let bob = create_as(BOB, &server, "10.67.0.2", "10.67.0.1", "", "");
    assert!(bob.starts_with("created"), "{bob}");

    // Once she exits, nothing holds them: the server removes them, and
    // their peer routes with them.
    alice.finish();
    assert!(
        eventually(|| names.iter().all(|n| !interface_exists(n))),
        "persisted devices outlived their holder: {names:?}"
    );
    assert!(!run("ip", &["route"]).contains("10.65.1.1"));
    assert!(server.logged("removed: no fd holds it"));
    let again = create_as(ALICE, &server, "10.66.0.2", "", "", "");
    assert!(again.starts_with("created"), "{again}");
}

#[test]
fn a_change_with_the_fd_of_a_device_in_another_namespace_is_refused_and_changes_nothing() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.57.0.0/16\n");
    let server = Server::start("othernetns", &config, &[]);
    let socket = server.socket.display().to_string();
    let name = format!("tunns{}", std::process::id() % 100_000);
    let mut alice = as_member(ALICE, &format!("keep|{socket}|10.57.0.2|10.57.0.1||{name}"));
    assert_eq!(alice.result(), format!("created {name}"));

    // Root's device of the same name in another namespace: its fd, were
    // the namespace not checked, would name Alice's device here.
    let other = OtherNetns::new();
    let placement = tundra_core::platform::Placement {
        netns: Some(other.0.clone()),
        persist: None,
    };
    let mut config = DeviceConfig::new("10.57.9.2".parse().expect("address"));
    config.name = Some(name.clone());
    let foreign = tundra_core::platform::create_placed(&config, &placement).expect("device");
    nix::fcntl::fcntl(
        &foreign.fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .expect("inheritable");
    let fd = foreign.fd.as_raw_fd();
    let mut change = as_member(
        ALICE,
        &format!("change|{socket}|{fd}||mtu 1300;route 10.57.1.0/24"),
    );
    assert_eq!(change.result(), "errno eacces,errno eacces");
    change.finish();
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).expect("mtu");
    assert_eq!(mtu.trim(), "1500", "Alice's own device changed");
    assert!(!run("ip", &["route"]).contains("10.57.1.0"));
    let there = run("ip", &["-n", &other.0, "-d", "link", "show", &name]);
    assert!(there.contains("mtu 1500"), "{there}");
    assert!(server.logged("the device is in another network namespace"));
    alice.finish();
}

/// A network namespace of this test's own, removed when dropped.
struct OtherNetns(String);

impl OtherNetns {
    fn new() -> OtherNetns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tundra-other{n}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        OtherNetns(name)
    }
}

impl Drop for OtherNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_restart_forgets_nothing_the_server_made() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{ALICE} 10.75.0.0/16 10.76.0.0/16\n");
    let server = Server::start("restart", &config, &["--max-devices-per-uid", "3"]);
    let socket = server.socket.display().to_string();
    let mut alice = as_member(ALICE, &format!("persist|{socket}|3|{BOB}|75"));
    let held = alice.result();
    let names: Vec<String> = held
        .strip_prefix("held ")
        .unwrap_or_else(|| panic!("{held}"))
        .split(' ')
        .map(String::from)
        .collect();
    // Persistent: gone with the test, passed or failed.
    let _made = Interfaces(names.clone());

    // A new server, as after a crash or an upgrade: the devices are still
    // hers, and count.
    let server = server.restart();
    assert_eq!(
        create_as(ALICE, &server, "10.76.0.2", "", "", ""),
        "errno edquot"
    );
    // Once nothing holds them, the new server removes them.
    alice.finish();
    assert!(
        eventually(|| names.iter().all(|n| !interface_exists(n))),
        "persisted devices outlived their holder across a restart: {names:?}"
    );
    let again = create_as(ALICE, &server, "10.76.0.2", "", "", "");
    assert!(again.starts_with("created"), "{again}");
    let journal = std::fs::read_to_string(server.dir.join("state/devices")).expect("journal");
    assert!(journal.contains(&format!("made {ALICE} ")), "{journal}");
}

#[test]
fn a_trickling_client_is_dropped_at_the_request_deadline_while_others_are_served() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("trickle", "", &[]);
    let frame = protocol::encode(&Request::Create(root_device(1))).expect("encode");
    let stream = UnixStream::connect(&server.socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    // One byte every 300 ms: each read would meet a per-read deadline, so
    // only a deadline for the whole request ends it (after 2 s).
    let trickle = std::thread::spawn(move || {
        for byte in frame.iter().take(frame.len() - 1) {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert_served_as_root(&server, 2);
    let mut reader = stream;
    reader.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = [0u8; 64];
    // Closed by the server: end of file, or ECONNRESET when a trickled
    // byte was still unread at the close (the kernel resets then). A
    // read that times out is a connection kept.
    let read = reader.read(&mut buf);
    let dropped = match &read {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    trickle.join().expect("trickle thread");
    assert!(
        dropped,
        "a trickling client kept its connection past the deadline: {read:?}"
    );
    assert!(server.logged("no whole request before the deadline"));
}

#[test]
fn one_users_flood_of_connections_denies_no_one_else_and_is_logged_briefly() {
    if !privileged_netns() {
        return;
    }
    let config = format!("allow uid:{BOB} 10.68.0.0/16\n");
    let server = Server::start(
        "flood",
        &config,
        &["--max-clients", "16", "--max-clients-per-uid", "4"],
    );
    let socket = server.socket.display().to_string();
    // Alice opens 800 connections and sends nothing on any of them.
    let mut alice = as_member(ALICE, &format!("hold|{socket}|800"));
    let holding = alice.result();
    assert!(holding.starts_with("holding"), "{holding}");
    let bob = create_as(BOB, &server, "10.68.0.2", "10.68.0.1", "", "");
    assert!(bob.starts_with("created"), "{bob}");
    alice.finish();
    // Hundreds of refusals, a bounded number of lines.
    assert!(server.logged("this user's connections are all in use"));
    assert!(
        server.logged("log lines left out"),
        "not rate-limited:\n{}",
        server.log()
    );
    let log = server.log();
    let lines = log.lines().count();
    assert!(lines < 600, "{lines} log lines for 800 connections");
}

#[test]
fn client_text_in_the_log_is_escaped() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("escape", "", &[]);
    let mut config = root_device(3);
    config.name = Some("tun\n\u{1b}[31mtundra_server: uid=0 device=x created".into());
    // Refused by validation (a name with white space), and logged.
    let frame = protocol::encode(&Request::Create(config)).expect("encode");
    let mut stream = UnixStream::connect(&server.socket).expect("connect");
    stream.write_all(&frame).expect("write");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let reply = protocol::read_payload(&mut stream).expect("reply");
    assert!(matches!(
        protocol::decode(&reply),
        Ok(Reply::Invalid { .. })
    ));
    assert!(server.logged("invalid option name"));
    let log = server.log();
    assert!(
        log.contains("device=tun\\x0a\\x1b[31mtundra_server:\\x20uid\\x3d0"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'));
    assert!(!log
        .lines()
        .any(|l| l.starts_with("tundra_server: uid=0 device=x")));
}

#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    if !privileged_netns() {
        return;
    }
    let mut server = Server::start_with(
        "stderr",
        "",
        &["--max-clients", "2"],
        support::Stderr::Piped,
    );
    drop(server.child.stderr.take());
    // More requests than slots, each logged to the closed pipe.
    for n in 10..40 {
        assert_served_as_root(&server, n);
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the server exited"
    );
    assert!(server.stop().success());
}

fn root_device(n: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new(IpAddr::from([10, 69, n, 2]));
    c.dstaddr = Some(IpAddr::from([10, 69, n, 1]));
    c
}

fn assert_served_as_root(server: &Server, n: u8) {
    match client::create(&server.socket, &root_device(n), TIMEOUT) {
        Ok(CreateReply::Created(dev)) => assert!(interface_exists(&dev.name)),
        other => panic!("expected a device, got {other:?}"),
    }
}

#[test]
fn the_deadline_covers_the_whole_exchange() {
    if !privileged_netns() {
        return;
    }
    // A server that accepts nothing (stopped) with its queue full: the
    // client gives up at its timeout instead of waiting in connect.
    let server = Server::start("stopped", "", &[]);
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let mut queued = Vec::new();
    loop {
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        let addr = nix::sys::socket::UnixAddr::new(&server.socket).expect("addr");
        match nix::sys::socket::connect(s.as_raw_fd(), &addr) {
            Ok(()) => queued.push(s),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(queued.len() < 10_000, "the queue never filled");
    }
    // On a thread, so that a client stuck in connect fails the test
    // instead of hanging it.
    let (done, outcome) = std::sync::mpsc::channel();
    let socket = server.socket.clone();
    std::thread::spawn(move || {
        let _ = done.send(client::create(
            &socket,
            &root_device(4),
            Duration::from_millis(500),
        ));
    });
    let result = outcome.recv_timeout(TIMEOUT);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let err = result
        .expect("the client was still waiting long after its timeout")
        .expect_err("no answer from a stopped server");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
}
