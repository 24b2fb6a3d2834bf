//! Network namespaces: opened by name or path, told apart, and entered by
//! one short-lived thread of Tundra's own, so that no thread of the VM
//! ever changes namespace.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::{fstat, Mode};

/// Where `ip netns add NAME` mounts a namespace.
const NAMED_NETNS_DIR: &str = "/var/run/netns";

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    id: (u64, u64),
}

impl Netns {
    /// The namespace `spec` names: a name as `ip netns` knows it (a file in
    /// /var/run/netns) or a path (anything with a `/`, such as
    /// /proc/PID/ns/net). `EINVAL` for a name `ip netns` could not have
    /// made; opening a file that is not a namespace succeeds, entering it
    /// fails with `EINVAL`.
    pub fn open(spec: &str) -> io::Result<Netns> {
        let path = netns_path(spec).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        Netns::from_fd(fd)
    }

    /// The namespace an open fd refers to.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Netns> {
        let stat = fstat(&fd)?;
        #[allow(clippy::useless_conversion)] // dev_t is u32 on some ABIs
        let id = (u64::from(stat.st_dev), u64::from(stat.st_ino));
        Ok(Netns { fd, id })
    }

    /// Whether this is the namespace of the calling thread.
    pub fn is_current(&self) -> bool {
        current_id().is_ok_and(|id| id == self.id)
    }

    /// Whether two handles name the same namespace.
    pub fn same_as(&self, other: &Netns) -> bool {
        self.id == other.id
    }

    /// Moves the calling thread into this namespace for good. Only for
    /// threads Tundra started for that purpose: a thread of the VM must
    /// never change namespace.
    pub fn enter(&self) -> io::Result<()> {
        Ok(setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)?)
    }

    /// A key that tells namespaces apart.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Runs `work` on a new thread that has entered this namespace, and
    /// returns what it returns. Sockets and devices it opens belong to
    /// this namespace for good; the calling thread is not touched.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("tundra_netns".into())
                .spawn_scoped(scope, || {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
                    work()
                })?;
            // A panic in `work` (there should be none) is a failed call.
            thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)))
        })
    }
}

/// Runs `work` here when `netns` is `None`, else inside it.
pub fn run_in<T: Send>(
    netns: Option<&Netns>,
    work: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    match netns {
        None => work(),
        Some(netns) => netns.run(work),
    }
}

fn current_id() -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((meta.dev(), meta.ino()))
}

/// The file of the namespace `spec` names (see `Netns::open`).
fn netns_path(spec: &str) -> Option<PathBuf> {
    if spec.contains('/') {
        return Some(PathBuf::from(spec));
    }
    let named = !spec.is_empty() && spec != "." && spec != ".." && !spec.contains('\0');
    named.then(|| Path::new(NAMED_NETNS_DIR).join(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(netns_path("vpn"), Some(PathBuf::from("/var/run/netns/vpn")));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            Some(PathBuf::from("/proc/1/ns/net"))
        );
        assert_eq!(netns_path("../etc"), Some(PathBuf::from("../etc")));
        for bad in ["", ".", "..", "a\0b"] {
            assert_eq!(netns_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_own_namespace_is_current_and_can_be_entered() {
        let own = Netns::open("/proc/thread-self/ns/net").expect("own netns");
        assert!(own.is_current());
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("NOTICE: not root; setns(2) not tried");
            return;
        }
        assert!(own.run(|| Ok(own.is_current())).expect("run"));
        let not_a_netns = Netns::open("/proc/self/status").expect("open");
        let err = not_a_netns.run(|| Ok(())).expect_err("not a namespace");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
