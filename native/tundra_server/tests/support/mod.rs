//! Shared by the server's integration tests: the real `tundra_server`
//! binary started on a socket in a folder of its own under /run, with a
//! configuration file and its log in that folder too.
#![allow(dead_code)] // each test file uses its own part of this

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../tundra_core/tests/support/guard.rs"]
mod guard;
pub use guard::privileged_netns;

/// Generous bound on waiting for something the test expects; never a
/// measure of how fast it happens.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The gid the test servers admit (`--group`). It needs no entry in the
/// group database: unprivileged test clients get it as their primary gid.
pub const MEMBER_GID: u32 = 61000;

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The command line it was started with, for `restart`.
    pub command: Vec<String>,
    /// Its turn among servers confined as the unit (see `in_flight_turn`).
    pub turn: Option<File>,
}

/// How a test server's stderr is wired.
pub enum Stderr {
    /// To `server.log` in its folder (see `Server::log`).
    File,
    /// To a pipe, handed back to the test.
    Piped,
}

impl Server {
    /// Starts a server whose configuration file holds `config`.
    pub fn start(name: &str, config: &str, extra: &[&str]) -> Server {
        Self::start_with(name, config, extra, Stderr::File)
    }

    /// Starts a server confined as the shipped systemd unit
    /// (`tundra_server.service`) confines it, as far as the unit's
    /// settings touch what the server does: `ProtectKernelTunables=`
    /// (/proc/sys read-only, but for the unit's `ReadWritePaths=` under
    /// it), `CapabilityBoundingSet=`, and at most 1024 open files (below
    /// the unit's `LimitNOFILE=`, so that the kernel's limit on fds in
    /// flight, which applies without CAP_SYS_RESOURCE, is reached soon).
    pub fn start_as_unit(name: &str, config: &str, extra: &[&str]) -> Server {
        let turn = in_flight_turn();
        let unit = Unit::shipped();
        let mut mounts = String::from("mount --bind /proc/sys /proc/sys");
        for path in &unit.writable_proc_sys {
            mounts += &format!(" && {{ [ ! -e {path} ] || mount --bind {path} {path}; }}");
        }
        if unit.protect_kernel_tunables {
            mounts += " && mount -o remount,bind,ro /proc/sys";
        }
        mounts += " && exec \"$@\"";
        let bounding = format!("--bounding-set=-all,{}", unit.capabilities);
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mounts,
            "sh",
            "prlimit",
            "--nofile=1024:1024",
            "--",
            "setpriv",
            &bounding,
            "--inh-caps=-all",
            "--",
        ];
        let mut server = Self::spawn(name, config, extra, Stderr::File, &wrapper);
        server.turn = Some(turn);
        server
    }

    /// Starts a server whose /proc/sys is read-only, as under the unit's
    /// `ProtectKernelTunables=yes` (in a mount namespace of its own).
    pub fn start_with_read_only_proc_sys(name: &str, config: &str, extra: &[&str]) -> Server {
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$@\"",
            "sh",
        ];
        Self::spawn(name, config, extra, Stderr::File, &wrapper)
    }

    pub fn start_with(name: &str, config: &str, extra: &[&str], stderr: Stderr) -> Server {
        Self::spawn(name, config, extra, stderr, &[])
    }

    /// Starts the server, through `wrapper` (a command line that ends by
    /// running what follows it) if that is not empty.
    fn spawn(name: &str, config: &str, extra: &[&str], stderr: Stderr, wrapper: &[&str]) -> Server {
        remove_leftovers();
        let dir = PathBuf::from(format!("/run/tundra-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server folder");
        // Root-owned and not writable by others, as the server demands;
        // reachable by the unprivileged test clients.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let config_path = dir.join("server.conf");
        std::fs::write(&config_path, config).expect("config");
        let socket = dir.join("s.sock");
        let stderr = match stderr {
            Stderr::File => Stdio::from(File::create(dir.join("server.log")).expect("log file")),
            Stderr::Piped => Stdio::piped(),
        };
        let path = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
        let mut command: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
        command.push(env!("CARGO_BIN_EXE_tundra_server").into());
        command.extend([
            "--socket".into(),
            path(socket.clone()),
            "--group".into(),
            MEMBER_GID.to_string(),
            "--config".into(),
            path(config_path),
            "--state-dir".into(),
            path(dir.join("state")),
        ]);
        command.extend(extra.iter().map(|e| e.to_string()));
        let child = run_server(&command, stderr);
        let server = Server {
            child,
            dir,
            socket,
            command,
            turn: None,
        };
        wait_listening(&server.socket);
        server
    }

    /// Stops the server (SIGTERM) and starts it again as it was started,
    /// with its folder, configuration and state; its log goes on.
    pub fn restart(mut self) -> Server {
        self.terminate();
        let log = File::options()
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("log file");
        self.child = run_server(&self.command, Stdio::from(log));
        wait_listening(&self.socket);
        self
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(!self.socket.exists(), "socket removed on SIGTERM");
        status
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Whether the server logs `text` (within `TIMEOUT`: its log thread
    /// writes a moment after the request ends, later on a busy machine).
    pub fn logged(&self, text: &str) -> bool {
        eventually(|| self.log().contains(text))
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the shipped systemd unit says of the server's confinement.
pub struct Unit {
    pub protect_kernel_tunables: bool,
    /// `ReadWritePaths=` under /proc/sys.
    pub writable_proc_sys: Vec<String>,
    /// `CapabilityBoundingSet=` as setpriv takes it (`+net_admin,...`).
    pub capabilities: String,
}

impl Unit {
    pub fn shipped() -> Unit {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tundra_server.service");
        let text = std::fs::read_to_string(&path).expect("the shipped unit");
        let values = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
                .flat_map(|v| v.split_whitespace().map(str::to_string))
                .collect()
        };
        let capabilities: Vec<String> = values("CapabilityBoundingSet")
            .iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        assert!(!capabilities.is_empty(), "the unit bounds capabilities");
        Unit {
            protect_kernel_tunables: values("ProtectKernelTunables") == ["yes"],
            writable_proc_sys: values("ReadWritePaths")
                .into_iter()
                .map(|p| p.trim_start_matches(['-', '+']).to_string())
                .filter(|p| p.starts_with("/proc/sys"))
                .collect(),
            capabilities: capabilities.join(","),
        }
    }
}

fn run_server(command: &[String], stderr: Stdio) -> Child {
    let (program, args) = command.split_first().expect("a command");
    Command::new(program)
        .args(args)
        .stderr(stderr)
        .spawn()
        .expect("start tundra_server")
}

/// Removes the folders (and kills the servers) of earlier test processes
/// that were killed before cleaning up: `/run/tundra-test-PID-NAME` whose
/// PID is gone.
/// A turn, held until dropped, for a test whose fds in flight matter.
///
/// The kernel counts fds in flight (sent, not yet received) per user,
/// across the machine, and refuses a sender without CAP_SYS_RESOURCE once
/// its user has more than the sender's RLIMIT_NOFILE of them. A server
/// confined as the unit (1024 files, no CAP_SYS_RESOURCE) is root's, as is
/// every test server, on this run and on any other: tests that start one,
/// or that leave many replies unread, take turns, machine-wide (a lock on
/// a file in /run, seen from every namespace the tests run in).
pub fn in_flight_turn() -> File {
    let file = File::options()
        .create(true)
        .append(true)
        .open("/run/tundra-tests-in-flight.lock")
        .expect("the in-flight lock file");
    file.lock().expect("a turn");
    file
}

fn remove_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir("/run") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("tundra-test-")
                .and_then(|rest| rest.split('-').next())
                .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()) && !pid.is_empty())
            else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            // Its server, if still running, is orphaned: stop it.
            let socket = entry.path().join("s.sock");
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &format!("--socket {}", socket.display())])
                .status();
            let _ = std::fs::remove_dir_all(entry.path());
        }
    });
}

/// Waits until a server accepts connections on `socket`.
pub fn wait_listening(socket: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "server did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `done` became true within `TIMEOUT` (checked every 20 ms).
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Interfaces a test made that must not outlive it, whether it passes or
/// fails (persistent devices outlive their fds): deleted when dropped.
pub struct Interfaces(pub Vec<String>);

impl Drop for Interfaces {
    fn drop(&mut self) {
        for name in self.0.iter().filter(|n| interface_exists(n)) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs a command that must succeed (e.g. `ip`), returning its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
