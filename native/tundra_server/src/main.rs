//! `tundra_server`: creates TUN devices for unprivileged Tundra clients and
//! hands them over a Unix socket (SCM_RIGHTS). A device lives as long as
//! the fds its client holds; the server records what it made for each
//! user (for limits) and removes devices a client made persistent once
//! nobody holds them. Group membership grants only the address ranges the
//! administrator delegated (`policy`). The wire protocol is
//! `tundra_core::protocol`; see README.md beside this crate.

mod access;
mod args;
mod grant;
mod inflight;
mod log;
mod made;
mod platform;
mod policy;
mod serve;
mod slots;
mod trusted;
mod unread;

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, Gid, Uid};

use args::{Command, Options};
use log::log;
use policy::{Policy, SystemNames};
use slots::{Full, Slots};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Writes to stderr directly, before serving starts (and the log thread
/// with it); a failed write is ignored rather than a panic.
fn say(text: &str) {
    let _ = writeln!(io::stderr(), "tundra_server: {text}");
}

fn main() -> ExitCode {
    match args::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            let _ = writeln!(io::stdout(), "{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "tundra_server {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(options)) => match run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                say(&message);
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            say(&format!("{message}\n{}", args::USAGE));
            ExitCode::from(2)
        }
    }
}

/// The delegations: from `--config`, or the default file if it exists.
/// The file decides what members may do, so only root may be able to
/// change it, or swap it or a folder on its way (`trusted`); errors name a
/// line and a setting, never what the file holds (it could be any file
/// root can read, through a symlink).
fn load_policy(options: &Options) -> Result<Policy, String> {
    let path = options
        .config
        .clone()
        .unwrap_or_else(|| args::DEFAULT_CONFIG.into());
    if let Err(e) = std::fs::metadata(&path) {
        if e.kind() == io::ErrorKind::NotFound && options.config.is_none() {
            say(&format!(
                "{} does not exist: nothing is delegated, only root is served",
                path.display()
            ));
            return Ok(Policy::default());
        }
        return Err(format!("cannot read {}: {e}", path.display()));
    }
    let text = trusted::read_root_only(&path, "the configuration")?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("{}: not a configuration (not UTF-8 text)", path.display()))?;
    Policy::parse(&text, &SystemNames).map_err(|e| format!("{}: {e}", path.display()))
}

/// The socket's folder and every folder on the way to it must be
/// writable by root only: otherwise another user could swap the path
/// between bind and the chown/chmod below, and have them change a file of
/// their choosing.
fn check_socket_folder(path: &Path) -> Result<(), String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    trusted::open_root_only(parent, trusted::Kind::Folder, "the socket").map(drop)
}

/// The records of devices made earlier, from the state folder (made,
/// mode 0700, if missing), which only this server may use: it holds a
/// lock on it while it runs.
fn open_records(dir: &Path) -> Result<(made::Records, nix::fcntl::Flock<std::fs::File>), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make {}: {e}", dir.display())),
    }
    // Every folder on its way is root's alone, so the paths below lead
    // where this walk did.
    trusted::open_root_only(dir, trusted::Kind::Folder, "the state folder")?;
    let lock_path = dir.join("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| format!("another server uses {}", dir.display()))?;
    let links =
        tundra_core::platform::tun_links().map_err(|e| format!("cannot list TUN devices: {e}"))?;
    let records = made::Records::open(dir, &links)
        .map_err(|e| format!("{}: {e}", dir.join(made::JOURNAL).display()))?;
    // Made by an older server, perhaps, that let them learn from router
    // advertisements their holders wrote.
    for name in records.names() {
        if let Err(e) = tundra_core::platform::refuse_learning(
            &name,
            tundra_core::platform::Isolation::Required,
        ) {
            say(&format!(
                "cannot keep {name} from learning routes: {}",
                tundra_core::errno::io_error_name(&e)
            ));
        }
    }
    Ok((records, lock))
}

/// Binds `path` (mode 0660, owner root, group `gid`), replacing a stale
/// socket file but never a live server's.
fn listen(path: &Path, gid: Gid) -> Result<UnixListener, String> {
    check_socket_folder(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("another server is listening on {}", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    // Nobody else may connect in the instant between bind and chmod.
    let old_mask = umask(Mode::from_bits_truncate(0o177));
    let bound = bind(path);
    umask(old_mask);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    chown(path, Some(Uid::from_raw(0)), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}

/// Connections waiting to be accepted. The accept loop takes them as fast
/// as they come (refusing, without waiting, those beyond the slots), so a
/// modest queue suffices; clients retry a full one until their deadline.
const BACKLOG: i32 = 128;

fn bind(path: &Path) -> nix::Result<UnixListener> {
    use nix::sys::socket::{self, Backlog, UnixAddr};
    let fd = tundra_core::fdpass::stream_socket().map_err(|e| {
        e.raw_os_error()
            .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw)
    })?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    socket::listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(UnixListener::from(fd))
}

/// Raises the soft limit on open files to the hard one and returns it:
/// the kernel bounds the fds the server may have in flight (sent, not yet
/// received) by this limit, and the server uses it as its budget for them.
fn raise_fd_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let limit = if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    usize::try_from(limit).unwrap_or(usize::MAX)
}

fn install_signal_handlers() -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|e| format!("sigaction: {e}"))?;
    }
    // A client (or stderr's reader) vanishing must be an EPIPE, not the
    // server's end.
    // SAFETY: ignoring a signal installs no code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map_err(|e| format!("signal: {e}"))?;
    Ok(())
}

fn run(options: &Options) -> Result<(), String> {
    let group = access::group_id(&options.group).ok_or_else(|| {
        format!(
            "group {:?} does not exist (create it: groupadd {})",
            options.group, options.group
        )
    })?;
    if !platform::privileged() {
        return Err("needs root or CAP_NET_ADMIN to create devices".into());
    }
    let policy = load_policy(options)?;
    // Members' unread replies may hold half of what the kernel lets the
    // server have in flight; the other half is always root's.
    let members_in_flight = raise_fd_limit() / 2;
    install_signal_handlers()?;
    let (records, _state_lock) = open_records(&options.state_dir)?;
    let records = Arc::new(records);
    let listener = listen(&options.socket, group)?;
    made::start_reaper(Arc::clone(&records))
        .map_err(|e| format!("cannot start the reaper: {e}"))?;
    log!(
        "listening on {} (group {}, {} delegations, names {}* and {}*, max {} clients, {} per uid, {} devices per uid, {} unread fds per uid, {} for all members)",
        options.socket.display(),
        options.group,
        policy.delegations.len(),
        policy.name_prefix,
        policy.tap_name_prefix,
        options.max_clients,
        options.max_clients_per_uid,
        options.max_devices_per_uid,
        options.max_unread_fds_per_uid,
        members_in_flight
    );
    let ctx = Arc::new(grant::Context {
        group,
        policy,
        max_devices_per_uid: options.max_devices_per_uid,
        records,
        in_flight: inflight::InFlight::new(options.max_unread_fds_per_uid, members_in_flight),
        unread: unread::Unread::start().map_err(|e| format!("cannot start a thread: {e}"))?,
        creating: Mutex::new(()),
    });
    let slots = Slots::new(options.max_clients, options.max_clients_per_uid);
    let result = accept_loop(&listener, &ctx, &slots);
    let _ = std::fs::remove_file(&options.socket);
    log!("stopped");
    log::flush(Duration::from_millis(500));
    result
}

fn accept_loop(
    listener: &UnixListener,
    ctx: &Arc<grant::Context>,
    slots: &Arc<Slots>,
) -> Result<(), String> {
    while !STOP.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log!("accept: {e}");
                continue;
            }
        };
        let peer = match access::peer(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                serve::refuse_busy(stream, None, &format!("no peer credentials: {e}"));
                continue;
            }
        };
        let slot = match slots.take(peer.uid) {
            Ok(slot) => slot,
            Err(Full::User) => {
                serve::refuse_busy(
                    stream,
                    Some(&peer),
                    "this user's connections are all in use",
                );
                continue;
            }
            Err(Full::Server) => {
                serve::refuse_busy(stream, Some(&peer), "too many clients");
                continue;
            }
        };
        let thread_ctx = Arc::clone(ctx);
        let spawned = std::thread::Builder::new()
            .name("tundra_client".into())
            .spawn(move || {
                // Given back when the connection ends, however it ends.
                let _slot = slot;
                serve::handle(stream, peer, &thread_ctx);
            });
        if let Err(e) = spawned {
            log!("cannot start a client thread: {e}");
        }
    }
    Ok(())
}
