//! Closes TUN fds off the BEAM's schedulers.
//!
//! Closing a TUN fd unregisters its interface, and the kernel waits for an
//! RCU grace period before that returns (tens of milliseconds). Done on a
//! scheduler thread that would stall every process on it; done one after
//! another it would cap teardown at a few dozen devices per second. The
//! kernel lets unregistrations that overlap share their waits (its RCU
//! barriers), so closes are handed to a pool of threads that grows with
//! the backlog (up to `MAX_CLOSERS`), from its own threads, and shrinks
//! again when idle. Closer threads run at the lowest priority where the OS
//! allows one thread's to be lowered (SCHED_IDLE on Linux), so their
//! kernel work yields to the VM's schedulers; under a load that leaves no
//! CPU idle, closing slows down rather than the VM.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Upper bound on concurrent closing threads. Enough for closes to overlap
/// well (teardown of a thousand devices at once), small enough to be a
/// modest cost in threads.
const MAX_CLOSERS: usize = 128;
/// An idle closer thread exits after this long without work.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Closer threads only call close(2); they need little stack.
const STACK_SIZE: usize = 64 * 1024;

struct Queue {
    fds: VecDeque<OwnedFd>,
    threads: usize,
    idle: usize,
}

struct Closer {
    queue: Mutex<Queue>,
    work: Condvar,
}

fn closer() -> &'static Closer {
    static CLOSER: OnceLock<Closer> = OnceLock::new();
    CLOSER.get_or_init(|| Closer {
        queue: Mutex::new(Queue {
            fds: VecDeque::new(),
            threads: 0,
            idle: 0,
        }),
        work: Condvar::new(),
    })
}

impl Closer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A closer thread cannot panic while holding the lock (it only pops
        // and pushes), so poisoning carries no broken invariant.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An fd that is closed on a closer thread when dropped, so no code path —
/// explicit close, owner exit, garbage collection, an error half-way
/// through creation — ever closes a TUN fd on the thread that drops it.
#[derive(Debug)]
pub struct DeferredFd(Option<OwnedFd>);

impl DeferredFd {
    pub fn new(fd: OwnedFd) -> Self {
        DeferredFd(Some(fd))
    }

    pub fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.0.as_ref().map(|fd| fd.as_fd())
    }
}

impl Drop for DeferredFd {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            close_later(fd);
        }
    }
}

/// Closes `fd` on a closer thread. Never blocks on the close itself, and
/// is cheap for the caller (a scheduler thread, in a resource's down or
/// destructor callback): it starts a thread only when none exists; the
/// pool grows from its own threads, which meet the backlog.
pub fn close_later(fd: OwnedFd) {
    let closer = closer();
    let mut queue = closer.lock();
    queue.fds.push_back(fd);
    if queue.threads > 0 {
        if queue.idle > 0 {
            closer.work.notify_one();
        }
        return;
    }
    queue.threads += 1;
    drop(queue);
    spawn_closer(closer);
}

/// Starts one more closer thread (already counted in `threads`).
fn spawn_closer(closer: &'static Closer) {
    let spawned = std::thread::Builder::new()
        .name("tundra_closer".into())
        .stack_size(STACK_SIZE)
        .spawn(run_closer);
    if spawned.is_err() {
        // No thread could be made (the system is out of them). Leaking fds
        // would be worse than a slow close here, so close one ourselves.
        let mut queue = closer.lock();
        queue.threads -= 1;
        let fd = queue.fds.pop_front();
        drop(queue);
        drop(fd);
    }
}

fn run_closer() {
    crate::platform::deprioritize_thread();
    let closer = closer();
    let mut queue = closer.lock();
    loop {
        if let Some(fd) = queue.fds.pop_front() {
            // More waiting than idle threads can take: add a thread, so
            // that closes overlap (the kernel batches overlapping waits).
            let grow = queue.fds.len() > queue.idle && queue.threads < MAX_CLOSERS;
            if grow {
                queue.threads += 1;
            }
            drop(queue);
            if grow {
                spawn_closer(closer);
            }
            drop(fd); // the slow part: the kernel unregisters the interface
            queue = closer.lock();
            continue;
        }
        queue.idle += 1;
        let (next, timeout) = closer
            .work
            .wait_timeout(queue, IDLE_TIMEOUT)
            .unwrap_or_else(|p| p.into_inner());
        queue = next;
        queue.idle -= 1;
        if timeout.timed_out() && queue.fds.is_empty() {
            queue.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_every_fd_handed_to_it() {
        let mut readers = Vec::new();
        for _ in 0..200 {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            readers.push(r);
            close_later(w);
        }
        // A blocking read returns 0 (end of file) only once the write end
        // has really been closed.
        for r in &readers {
            let mut buf = [0u8; 1];
            assert_eq!(nix::unistd::read(r, &mut buf).expect("read"), 0);
        }
        assert!(closer().lock().threads <= MAX_CLOSERS);
    }
}
