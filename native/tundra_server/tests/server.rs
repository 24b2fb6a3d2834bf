//! Starts the real `tundra_server` binary on a temporary socket and talks to
//! it as clients do, well-behaved and not. Needs root inside the test run's
//! network namespace (scripts/test); the devices it makes live there. The
//! clients here are root, which the delegation policy does not restrict;
//! tests/trust.rs has unprivileged clients and the attacks on the policy.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tundra_core::client::{self, CreateReply};
use tundra_core::protocol::{self, Reply, Request, MAGIC, VERSION};
use tundra_core::{ConfigError, DeviceConfig};

mod support;
use support::{privileged_netns, wait_listening, Server, TIMEOUT};

fn config(n: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new(IpAddr::from([10, 95, n, 2]));
    c.dstaddr = Some(IpAddr::from([10, 95, n, 1]));
    c
}

fn create(socket: &Path, c: &DeviceConfig) -> std::io::Result<CreateReply> {
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
        Ok(CreateReply::Created(dev)) => {
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
    let server = Server::start("valid", "", &[]);
    let Ok(CreateReply::Created(dev)) = create(&server.socket, &config(1)) else {
        panic!("create failed")
    };
    let sys = format!("/sys/class/net/{}", dev.name);
    assert!(Path::new(&sys).exists());
    let info = tundra_core::platform::link_info(&dev.name, None).expect("link info");
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
    let server = Server::start("invalid", "", &[]);
    let mut bad = config(2);
    bad.mtu = 10;
    assert!(matches!(
        create(&server.socket, &bad),
        Ok(CreateReply::Invalid(ConfigError::Mtu))
    ));
}

#[test]
fn garbage_oversized_and_wrong_versions_get_error_replies_while_others_are_served() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("garbage", "", &[]);
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
fn each_client_is_answered_in_its_version_and_from_3_on_told_why() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("versions", "", &[]);
    let exchange = |version: u8, config: &DeviceConfig| {
        let frame = protocol::encode_in(&Request::Create(config.clone()), version).expect("encode");
        let mut stream = UnixStream::connect(&server.socket).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.write_all(&frame).expect("request");
        let (got, payload) = protocol::read_frame(&mut stream).expect("reply");
        (got, protocol::decode::<Reply>(&payload).expect("decode"))
    };
    // A 0.x-era version 2 client gets a version 2 reply, as before.
    let (version, reply) = exchange(2, &config(20));
    assert_eq!(version, 2);
    assert!(matches!(reply, Reply::Created { .. }), "{reply:?}");
    let mut outside = config(21);
    outside.name = Some("eth9".into());
    assert_eq!(
        exchange(2, &outside),
        (
            2,
            Reply::Failed {
                errno: libc::EACCES
            }
        )
    );
    // From version 3 a refusal says why.
    match exchange(VERSION, &outside) {
        (v, Reply::Refused { errno, why }) if v == VERSION => {
            assert_eq!(errno, libc::EACCES);
            assert!(why.contains("start with \"tun\""), "{why}");
        }
        other => panic!("expected a refusal with a reason, got {other:?}"),
    }
}

#[test]
fn silent_and_half_frame_clients_are_dropped_without_delaying_others() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("silent", "", &[]);
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
    let server = Server::start("disconnect", "", &[]);
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
    let server = Server::start(
        "concurrent",
        "",
        &["--max-clients", "128", "--max-clients-per-uid", "128"],
    );
    let socket = server.socket.clone();
    let handles: Vec<_> = (0..100u8)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = DeviceConfig::new(IpAddr::from([10, 94, i, 2]));
                c.dstaddr = Some(IpAddr::from([10, 94, i, 1]));
                match create(&socket, &c) {
                    Ok(CreateReply::Created(dev)) => dev,
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
fn refuses_to_start_without_its_group_or_a_safe_folder_or_beside_a_live_server() {
    if !privileged_netns() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_tundra_server");
    let refusal = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().expect("run");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let server = Server::start("twice", "", &[]);
    let socket = server.socket.to_str().expect("path");
    let config = server.dir.join("server.conf");
    let config = config.to_str().expect("path");
    let state = server.dir.join("state-of-refused");
    let state = state.to_str().expect("path");
    let refusal_as_root = |socket: &str, config: &str| {
        refusal(&[
            "--socket",
            socket,
            "--group",
            "root",
            "--config",
            config,
            "--state-dir",
            state,
        ])
    };

    let no_group = refusal(&["--socket", socket, "--group", "no-such-group-tundra"]);
    assert!(no_group.contains("does not exist"), "{no_group}");
    let twice = refusal_as_root(socket, config);
    assert!(twice.contains("another server"), "{twice}");
    // A folder others may write to (here the sticky, world-writable /tmp):
    // the path could be swapped under the chown and chmod.
    let unsafe_socket = std::env::temp_dir().join(format!("tundra-{}.sock", std::process::id()));
    let unsafe_socket = unsafe_socket.to_str().expect("path");
    let why = refusal_as_root(unsafe_socket, config);
    assert!(
        why.contains("may be written by users other than root"),
        "{why}"
    );
    assert!(!Path::new(unsafe_socket).exists());
    // A configuration that does not parse, or is missing when named.
    let bad = server.dir.join("bad.conf");
    std::fs::write(&bad, "allow uid:5 not-a-range\n").expect("write");
    let other = server.dir.join("other.sock");
    let other = other.to_str().expect("path");
    let why = refusal_as_root(other, bad.to_str().expect("path"));
    assert!(why.contains("line 1"), "{why}");
    let why = refusal_as_root(other, "/nonexistent/tundra.conf");
    assert!(why.contains("cannot read"), "{why}");
    // A state folder that cannot be made (its parent is missing).
    let missing = server.dir.join("missing/state");
    let why = refusal(&[
        "--socket",
        other,
        "--group",
        "root",
        "--config",
        config,
        "--state-dir",
        missing.to_str().expect("path"),
    ]);
    assert!(why.contains("cannot make"), "{why}");
    // Without root or CAP_NET_ADMIN it could make no device.
    let out = Command::new("setpriv")
        .args(["--reuid=61001", "--regid=61000", "--clear-groups", bin])
        .args(["--socket", other, "--group", "61000"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("needs root or CAP_NET_ADMIN"), "{why}");
    assert!(server.stop().success());

    // A socket file nobody listens on is stale: replaced.
    let mut stale = Server::start("stale", "", &[]);
    let path = stale.socket.clone();
    drop(UnixStream::connect(&path).expect("listening"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stale.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    stale.child.wait().expect("wait");
    let dir = stale.dir.clone();
    // Keep its folder (and the stale socket in it) for the next server.
    std::mem::forget(stale);
    assert!(path.exists(), "a killed server leaves its socket");
    let child = Command::new(bin)
        .args([
            "--socket",
            path.to_str().expect("path"),
            "--group",
            "root",
            "--config",
        ])
        .arg(dir.join("server.conf"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let server = Server {
        child,
        dir,
        socket: path,
        command: Vec::new(),
        turn: None,
    };
    wait_listening(&server.socket);
    let mode = std::fs::metadata(&server.socket).expect("meta");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    assert!(server.stop().success());
}

#[test]
fn without_its_default_configuration_it_serves_root_alone() {
    if !privileged_netns() {
        return;
    }
    // /etc/tundra/server.conf missing (an empty /etc, in a mount namespace
    // of the server's own), and no --config: nothing is delegated.
    let server = Server::start("defaults", "", &[]);
    let socket = server.dir.join("defaults.sock");
    let log = server.dir.join("defaults.log");
    // Killed when the test ends, also when it fails half-way.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tundra-test /etc && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_tundra_server"))
            .arg("--socket")
            .arg(&socket)
            .args(["--group", "61000", "--state-dir"])
            .arg(server.dir.join("defaults-state"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start"),
    );
    wait_listening(&socket);
    assert!(matches!(
        create(&socket, &config(41)),
        Ok(CreateReply::Created(_))
    ));
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(
        said.contains("/etc/tundra/server.conf does not exist: nothing is delegated"),
        "{said}"
    );
    assert!(server.stop().success());
}

#[test]
fn refuses_a_configuration_or_state_others_could_write_and_never_echoes_a_file() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("config", "", &[]);
    let dir = server.dir.clone();
    let bin = env!("CARGO_BIN_EXE_tundra_server");
    let start = |config: &Path, state: &Path| {
        let socket = dir.join("refused.sock");
        let out = Command::new(bin)
            .args([
                "--socket",
                socket.to_str().expect("path"),
                "--group",
                "root",
            ])
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{config:?} {state:?}: started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let state = dir.join("state-refused");
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod")
    };

    // A configuration anyone may write, or one in a folder anyone may
    // write (and so replace).
    let writable = dir.join("writable.conf");
    std::fs::write(&writable, "allow uid:5 10.0.0.0/8\n").expect("write");
    mode(&writable, 0o666);
    let why = start(&writable, &state);
    assert!(
        why.contains("may be written by users other than root"),
        "{why}"
    );
    let open_folder = dir.join("open");
    std::fs::create_dir(&open_folder).expect("mkdir");
    mode(&open_folder, 0o777);
    let inside = open_folder.join("server.conf");
    std::fs::write(&inside, "allow uid:5 10.0.0.0/8\n").expect("write");
    let why = start(&inside, &state);
    assert!(
        why.contains("may be written by users other than root"),
        "{why}"
    );

    // A symlink to a file of secrets, as root may read it: named by line,
    // none of it repeated.
    let shadow = dir.join("shadow");
    std::fs::write(&shadow, "root:$6$SECRETHASH$xyz:19000:0:99999:7:::\n").expect("write");
    mode(&shadow, 0o640);
    let link = dir.join("linked.conf");
    std::os::unix::fs::symlink(&shadow, &link).expect("symlink");
    let why = start(&link, &state);
    assert!(why.contains("line 1"), "{why}");
    assert!(
        !why.contains("SECRETHASH") && !why.contains("root:"),
        "{why}"
    );

    // A state folder others may write, or one another server uses.
    let fine = dir.join("server.conf");
    let open_state = dir.join("open-state");
    std::fs::create_dir(&open_state).expect("mkdir");
    mode(&open_state, 0o775);
    let why = start(&fine, &open_state);
    assert!(
        why.contains("may be written by users other than root"),
        "{why}"
    );
    let why = start(&fine, &dir.join("state"));
    assert!(why.contains("another server uses"), "{why}");
    assert!(!dir.join("refused.sock").exists());
}

#[test]
fn a_configuration_or_state_reached_through_a_folder_others_may_write_is_refused() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start("swap", "", &[]);
    let dir = server.dir.clone();
    let real = dir.join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::write(real.join("server.conf"), "allow uid:7 10.7.0.0/16\n").expect("write");
    // A world-writable sticky folder, as /tmp, where a user keeps a
    // symlink of their own: now to root's folder, now to theirs.
    let open = std::env::temp_dir().join(format!("tundra-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&open);
    std::fs::create_dir(&open).expect("mkdir");
    let _cleanup = RemoveOnDrop(open.clone());
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .expect("chmod");
    let user = 61001;
    let as_user = |script: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                "--regid=61001",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(script)
            .current_dir(&open)
            .spawn()
            .expect("setpriv")
    };
    let real_text = real.display().to_string();
    let setup = format!(
        "mkdir evil && printf 'allow uid:{user} 0.0.0.0/1 128.0.0.0/1 ::/0\\n' > evil/server.conf && ln -s {real_text} conf && ln -s {real_text} state"
    );
    assert!(as_user(&setup).wait().expect("wait").success());
    let bin = env!("CARGO_BIN_EXE_tundra_server");
    let start = |config: &Path, state: &Path| {
        let mut child = Command::new(bin)
            .arg("--socket")
            .arg(dir.join("swapped.sock"))
            .args(["--group", "root", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return "started".to_string();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut why = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut why);
        why
    };
    let through = open.join("conf").join("server.conf");
    // /tmp itself, or the folder in it: whichever the walk meets first.
    let folder_named = "may be written by users other than root";
    let why = start(&through, &dir.join("state"));
    assert!(why.contains(folder_named), "{why}");
    let why = start(&dir.join("server.conf"), &open.join("state"));
    assert!(why.contains(folder_named), "{why}");
    // While the user swaps the link as fast as they can, no start reads
    // their file.
    let _swapper = KillOnDrop(as_user(&format!(
        "while :; do ln -sfn evil c.new && mv -T c.new conf; ln -sfn {real_text} c.new && mv -T c.new conf; done"
    )));
    for _ in 0..20 {
        let why = start(&through, &dir.join("state"));
        assert!(why.contains(folder_named), "{why}");
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_ipv4_only_device_is_made_as_the_unit_confines_the_server() {
    if !privileged_netns() {
        return;
    }
    // /proc/sys read-only but for the devices' IPv6 settings.
    let server = Server::start_as_unit("unitsys", "", &[]);
    let mut config = config(60);
    config.ipv6 = false;
    let dev = match create(&server.socket, &config) {
        Ok(CreateReply::Created(dev)) => dev,
        other => panic!("expected a device, got {other:?}\n{}", server.log()),
    };
    let link = run_ip(&["-d", "link", "show", &dev.name]);
    assert!(link.contains("addrgenmode none"), "{link}");
    assert!(!run_ip(&["addr", "show", &dev.name]).contains("inet6"));
}

#[test]
fn where_no_device_can_be_kept_from_learning_none_is_made() {
    if !privileged_netns() {
        return;
    }
    let server = Server::start_with_read_only_proc_sys("rosys", "", &[]);
    let refused = create(&server.socket, &config(61))
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(tundra_core::errno::errno_of(&refused), Some(libc::EROFS));
    // The client hears why, as the log says.
    let why = tundra_core::errno::why_of(&refused).expect("a reason");
    assert!(
        why.contains("cannot keep the device from learning routes"),
        "{why}"
    );
    assert!(support::eventually(|| server
        .log()
        .contains("cannot keep the device from learning routes")));
}

fn run_ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the 0.x C test client in c_src_legacy/ with the system's `cc`.
/// The 0.x C client, built from the checkout's c_src_legacy/ (or
/// TUNDRA_C_SRC_LEGACY's folder, where the crates are tested out of their
/// checkout, as scripts/mutants tests them).
fn legacy_client() -> PathBuf {
    let dir = std::env::var_os("TUNDRA_C_SRC_LEGACY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../c_src_legacy"));
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
    let server = Server::start("legacy", "", &[]);
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
    let server = Server::start("legacy-bad", "", &[]);
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
