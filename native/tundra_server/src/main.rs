//! `tundra_server`: creates TUN devices for unprivileged Tundra clients and
//! hands them over a Unix socket (SCM_RIGHTS). It keeps no device state: a
//! device lives as long as the fd its client holds. The wire protocol is
//! `tundra_core::protocol`; see README.md beside this crate.

mod access;
mod args;
mod platform;
mod serve;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, Gid, Uid};

use args::{Command, Options};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    match args::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("tundra_server {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(options)) => match run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("tundra_server: {message}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("tundra_server: {message}\n{}", args::USAGE);
            ExitCode::from(2)
        }
    }
}

/// Root, or CAP_NET_ADMIN (bit 12) in the effective capability set.
fn privileged() -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Binds `path` (mode 0660, owner root, group `gid`), replacing a stale
/// socket file but never a live server's.
fn listen(path: &Path, gid: Gid) -> Result<UnixListener, String> {
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
    let bound = UnixListener::bind(path);
    umask(old_mask);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    chown(path, Some(Uid::from_raw(0)), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
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
    // A client vanishing mid-reply must be an EPIPE, not the server's end.
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
    if !privileged() {
        return Err("needs root or CAP_NET_ADMIN to create devices".into());
    }
    install_signal_handlers()?;
    let listener = listen(&options.socket, group)?;
    eprintln!(
        "tundra_server: listening on {} (group {}, max {} clients, {} devices per uid)",
        options.socket.display(),
        options.group,
        options.max_clients,
        options.max_devices_per_uid
    );
    let ctx = Arc::new(serve::Context {
        group,
        max_devices_per_uid: options.max_devices_per_uid,
        live_bound: Mutex::new(HashMap::new()),
    });
    let active = Arc::new(AtomicUsize::new(0));
    let result = accept_loop(&listener, &ctx, &active, options.max_clients);
    let _ = std::fs::remove_file(&options.socket);
    eprintln!("tundra_server: stopped");
    result
}

fn accept_loop(
    listener: &UnixListener,
    ctx: &Arc<serve::Context>,
    active: &Arc<AtomicUsize>,
    max_clients: usize,
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
                eprintln!("tundra_server: accept: {e}");
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= max_clients {
            active.fetch_sub(1, Ordering::SeqCst);
            serve::refuse_busy(stream);
            continue;
        }
        let (thread_ctx, thread_active) = (Arc::clone(ctx), Arc::clone(active));
        let spawned = std::thread::Builder::new()
            .name("tundra_client".into())
            .spawn(move || {
                serve::handle(stream, &thread_ctx);
                thread_active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("tundra_server: cannot start a client thread: {e}");
        }
    }
    Ok(())
}
