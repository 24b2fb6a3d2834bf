//! Starts the real `tundra_server` binary on a temporary socket and talks to
//! it as clients do, well-behaved and not. Needs root inside the test run's
//! network namespace (scripts/test); the devices it makes live there.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tundra_core::client::{self, Outcome};
use tundra_core::protocol::{self, Reply, Request, MAGIC, VERSION};
use tundra_core::{ConfigError, DeviceConfig};

#[path = "../../tundra_core/tests/support/guard.rs"]
mod guard;
use guard::privileged_netns;

const TIMEOUT: Duration = Duration::from_secs(5);

struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Server {
        Self::start_with(name, extra, &[])
    }

    /// Starts the server behind `wrapper` (e.g. `unshare --net ...`, giving
    /// it a namespace of its own inside the test run's).
    fn start_with(name: &str, extra: &[&str], wrapper: &[&str]) -> Server {
        let socket =
            std::env::temp_dir().join(format!("tundra-test-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let bin = env!("CARGO_BIN_EXE_tundra_server");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args([
                "--socket",
                socket.to_str().expect("utf-8 path"),
                "--group",
                "root",
            ])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("start tundra_server");
        wait_listening(&socket);
        Server { child, socket }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(!self.socket.exists(), "socket removed on SIGTERM");
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Waits until a server accepts connections on `socket`.
fn wait_listening(socket: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "server did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config(n: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new(IpAddr::from([10, 95, n, 2]));
    c.dstaddr = Some(IpAddr::from([10, 95, n, 1]));
    c
}

fn create(socket: &Path, c: &DeviceConfig) -> std::io::Result<Outcome> {
    client::create(socket, c, TIMEOUT)
}

/// Sends raw bytes and returns the reply frame's message, if any.
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Option<Reply> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.write_all(bytes).expect("write");
    let payload = protocol::read_payload(&mut s).ok()?;
    protocol::decode(&payload).ok()
}

fn assert_served(socket: &Path, n: u8) {
    match create(socket, &config(n)) {
        Ok(Outcome::Created(dev)) => {
            assert!(Path::new(&format!("/sys/class/net/{}", dev.name)).exists())
        }
        other => panic!("expected a device, got {other:?}"),
    }
}

#[test]
fn a_valid_request_gets_a_working_device_that_lives_as_long_as_its_fd() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("valid", &[]);
    let Ok(Outcome::Created(dev)) = create(&server.socket, &config(1)) else {
        panic!("create failed")
    };
    let sys = format!("/sys/class/net/{}", dev.name);
    assert!(Path::new(&sys).exists());
    let info = tundra_core::platform::link_info(&dev.name).expect("link info");
    assert!(info.up);
    assert_eq!(
        std::fs::read_to_string(format!("{sys}/owner"))
            .expect("owner")
            .trim(),
        "0"
    );
    drop(dev);
    let deadline = Instant::now() + TIMEOUT;
    while Path::new(&sys).exists() {
        assert!(Instant::now() < deadline, "device outlived its fd");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.stop().success());
}

#[test]
fn invalid_configs_are_named_not_created() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("invalid", &[]);
    let mut bad = config(2);
    bad.mtu = 10;
    assert!(matches!(
        create(&server.socket, &bad),
        Ok(Outcome::Invalid(ConfigError::Mtu))
    ));
}

#[test]
fn garbage_oversized_and_wrong_versions_get_error_replies_while_others_are_served() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("garbage", &[]);
    // A silent client holds a connection open the whole time.
    let _silent = UnixStream::connect(&server.socket).expect("connect");

    let errno_of = |reply| match reply {
        Some(Reply::Failed { errno }) => errno,
        other => panic!("expected a failure reply, got {other:?}"),
    };
    assert_eq!(
        errno_of(raw_exchange(&server.socket, b"GET / HTTP/1.0\r\n\r\n")),
        libc::EPROTO
    );
    let oversized = [&MAGIC[..], &[VERSION, 0xFF, 0xFF]].concat();
    assert_eq!(
        errno_of(raw_exchange(&server.socket, &oversized)),
        libc::EMSGSIZE
    );
    let mut future = protocol::encode(&Request::Create(config(3))).expect("encode");
    future[4] = VERSION + 1;
    assert_eq!(
        errno_of(raw_exchange(&server.socket, &future)),
        libc::EPROTONOSUPPORT
    );
    let undecodable = [&MAGIC[..], &[VERSION, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF]].concat();
    assert_eq!(
        errno_of(raw_exchange(&server.socket, &undecodable)),
        libc::EPROTO
    );

    assert_served(&server.socket, 4);
}

#[test]
fn silent_and_half_frame_clients_are_dropped_without_delaying_others() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("silent", &[]);
    let mut silent = UnixStream::connect(&server.socket).expect("connect");
    let mut half = UnixStream::connect(&server.socket).expect("connect");
    half.write_all(&MAGIC[..3]).expect("write");

    // Served while both stragglers are still connected.
    assert_served(&server.socket, 5);

    // Past the server's read deadline both are dropped: end of file.
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).expect("read"), 0);
    }
    assert_served(&server.socket, 6);
}

#[test]
fn a_client_that_disconnects_mid_request_does_not_hurt_the_server() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("disconnect", &[]);
    for _ in 0..10 {
        let frame = protocol::encode(&Request::Create(config(7))).expect("encode");
        let mut s = UnixStream::connect(&server.socket).expect("connect");
        s.write_all(&frame[..frame.len() / 2]).expect("write");
        drop(s);
        // And one that sends a whole request but leaves before the reply.
        let mut s = UnixStream::connect(&server.socket).expect("connect");
        s.write_all(&frame).expect("write");
        drop(s);
    }
    assert_served(&server.socket, 8);
    assert!(server.stop().success());
}

#[test]
fn a_hundred_concurrent_clients_all_get_devices() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("concurrent", &["--max-clients", "128"]);
    let socket = server.socket.clone();
    let handles: Vec<_> = (0..100u8)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = DeviceConfig::new(IpAddr::from([10, 94, i, 2]));
                c.dstaddr = Some(IpAddr::from([10, 94, i, 1]));
                match create(&socket, &c) {
                    Ok(Outcome::Created(dev)) => dev,
                    other => panic!("client {i}: {other:?}"),
                }
            })
        })
        .collect();
    let devices: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let mut names: Vec<_> = devices.iter().map(|d| d.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 100);
}

#[test]
fn each_user_may_hold_only_so_many_devices() {
    if !privileged_netns() {
        return;
    }
    // All test clients are root, and other tests create devices at the same
    // time; the server counts devices in its own network namespace, so it
    // gets one of its own (inside the test run's) to count only these.
    let server = Server::start_with(
        "quota",
        &["--max-devices-per-uid", "2"],
        &[
            "unshare",
            "--net",
            "--mount",
            "sh",
            "-c",
            // /sys shows the namespace of whoever mounted it: remount it, as
            // `ip netns exec` does, so the server sees its own devices.
            "mount -t sysfs sysfs /sys && exec \"$0\" \"$@\"",
        ],
    );
    let first = create(&server.socket, &config(9)).expect("first");
    let _second = create(&server.socket, &config(10)).expect("second");
    let third = create(&server.socket, &config(11));
    assert_eq!(
        third.expect_err("over the limit").raw_os_error(),
        Some(libc::EDQUOT)
    );
    drop(first);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match create(&server.socket, &config(12)) {
            Ok(Outcome::Created(_)) => break,
            _ => assert!(Instant::now() < deadline, "a freed slot was not reusable"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refuses_to_start_without_its_group_or_beside_a_live_server_and_replaces_stale_sockets() {
    if !privileged_netns() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_tundra_server");
    let out = Command::new(bin)
        .args([
            "--socket",
            "/tmp/tundra-nogroup.sock",
            "--group",
            "no-such-group-tundra",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let server = Server::start("twice", &[]);
    let out = Command::new(bin)
        .args([
            "--socket",
            server.socket.to_str().expect("path"),
            "--group",
            "root",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server"));
    assert!(server.stop().success());

    // A socket file nobody listens on is stale: replaced.
    let stale = std::env::temp_dir().join(format!("tundra-stale-{}.sock", std::process::id()));
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    let child = Command::new(bin)
        .args(["--socket", stale.to_str().expect("path"), "--group", "root"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let server = Server {
        child,
        socket: stale,
    };
    wait_listening(&server.socket);
    let mode = std::fs::metadata(&server.socket).expect("meta");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    assert!(server.stop().success());
}

/// Builds the 0.x C test client in c_src_legacy/ with the system's `cc`.
fn legacy_client() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../c_src_legacy");
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("run make (needs make and cc)");
    assert!(status.success(), "building c_src_legacy failed");
    dir.join("tundra_legacy_client")
}

#[test]
fn a_0x_c_client_gets_a_device_with_the_packet_information_header() {
    if !privileged_netns() {
        return;
    }
    let client = legacy_client();
    let server = Server::start("legacy", &[]);
    let mut child = Command::new(&client)
        .args([
            server.socket.to_str().expect("utf-8 path"),
            "fd00:95:50::2",
            "fd00:95:50::1",
            "ffff:ffff:ffff:ffff::",
            "1400",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the 0.x client");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    let name = line
        .strip_prefix("device ")
        .map(str::trim)
        .unwrap_or_else(|| panic!("expected `device NAME`, got {line:?}"))
        .to_string();

    let sys = Path::new("/sys/class/net").join(&name);
    let read = |file: &str| std::fs::read_to_string(sys.join(file)).expect(file);
    assert_eq!(read("mtu").trim(), "1400");
    let flags = u32::from_str_radix(read("tun_flags").trim().trim_start_matches("0x"), 16)
        .expect("tun_flags");
    assert_eq!(flags & libc::IFF_TUN as u32, libc::IFF_TUN as u32);
    assert_eq!(
        flags & libc::IFF_NO_PI as u32,
        0,
        "0.x devices carry tun_pi"
    );

    // The client answers one echo request, read and written with the
    // 4-byte header; ping sees the answer.
    let ping = Command::new("ping")
        .args(["-6", "-n", "-c", "1", "-W", "5", "fd00:95:50::1"])
        .output()
        .expect("run ping");
    assert!(ping.status.success(), "ping failed: {ping:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    assert!(child.wait().expect("wait").success());
    assert_eq!(rest.trim(), "pi flags=0x0000 proto=0x86dd");
    // The client is gone, and with its fd the device.
    let deadline = Instant::now() + TIMEOUT;
    while sys.exists() {
        assert!(Instant::now() < deadline, "{name} outlived its 0.x client");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_0x_requests_are_closed_without_a_reply_and_current_clients_still_served() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("legacy-bad", &[]);
    let request = |addr: &str, size: u64| {
        let mut r = [0u8; 160];
        r[8..16].copy_from_slice(&size.to_ne_bytes());
        r[16..16 + addr.len()].copy_from_slice(addr.as_bytes());
        r
    };
    for bad in [request("not an address", 152), request("fd00::2", 99)] {
        let mut s = UnixStream::connect(&server.socket).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.write_all(&bad).expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).expect("closed, not timed out"), 0);
    }
    assert_served(&server.socket, 51);
}
