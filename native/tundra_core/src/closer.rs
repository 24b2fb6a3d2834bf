//! Closes TUN fds off the BEAM's schedulers.
//!
//! Closing a TUN fd unregisters its interface, and the kernel waits for an
//! RCU grace period before that returns (tens of milliseconds). Done on a
//! scheduler thread that would stall every process on it; done one after
//! another it would cap teardown at a few dozen devices per second. The
//! kernel lets unregistrations that overlap share their waits (its RCU
//! barriers), so closes are handed to a pool of threads that grows with
//! the backlog (up to `MAX_CLOSERS`), from its own threads, and shrinks
//! again when idle. Closer threads run at a lower priority where the OS
//! allows one thread's to be lowered (nice 10 on Linux), so their kernel
//! work yields to the VM's schedulers; under a load that leaves no CPU
//! idle, closing slows down (but goes on) rather than the VM.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bound on concurrent closing threads. Closes that overlap share
/// the kernel's waits, so teardown speeds up with the pool: measured on
/// 1,000 devices closed at once, about 770/s with 64 threads, 830/s with
/// 128, 990/s with 256, 1,280/s with 512. The threads exist only during
/// such a burst (mostly asleep in the kernel) and leave soon after.
const MAX_CLOSERS: usize = 512;
/// Closer threads leave once no fd has come for this long.
const IDLE_TIMEOUT: Duration = Duration::from_millis(200);
/// Closer threads only call close(2); they need little stack.
const STACK_SIZE: usize = 64 * 1024;

/// Something to run on the closer thread once its fd is closed.
pub type AfterClose = Box<dyn FnOnce() + Send>;

/// One fd to close, and what to do once it is closed.
struct Job {
    fd: OwnedFd,
    after: Option<AfterClose>,
}

/// The pool. Callers only send on the channel and touch atomics: a
/// scheduler thread never waits for a lock a (low-priority, possibly
/// preempted) closer holds. The receiver's lock is shared by closers only.
struct Closer {
    sender: Sender<Job>,
    receiver: Mutex<Receiver<Job>>,
    /// Fds sent and not yet taken by a closer.
    queued: AtomicUsize,
    /// Closer threads alive, and how many of them are closing an fd now.
    threads: AtomicUsize,
    busy: AtomicUsize,
    /// When a closer last took an fd, in milliseconds since `epoch`: idle
    /// threads wait for the receiver in turn, and each leaves at once when
    /// the pool has been idle for `IDLE_TIMEOUT`, so a large pool shrinks
    /// in about one timeout, not one timeout per thread.
    last_work_ms: AtomicU64,
    epoch: Instant,
}

impl Closer {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn closer() -> &'static Closer {
    static CLOSER: OnceLock<Closer> = OnceLock::new();
    CLOSER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel();
        Closer {
            sender,
            receiver: Mutex::new(receiver),
            queued: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            last_work_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    })
}

/// An fd that is closed on a closer thread when dropped, so no code path —
/// explicit close, owner exit, an error half-way through creation — ever
/// closes a TUN fd on the thread that drops it.
pub struct DeferredFd {
    fd: Option<OwnedFd>,
    after: Option<AfterClose>,
}

impl DeferredFd {
    pub fn new(fd: OwnedFd) -> Self {
        DeferredFd {
            fd: Some(fd),
            after: None,
        }
    }

    /// Like `new`, running `after` on the closer thread once the fd is
    /// closed (for a TUN fd: once the kernel has removed its interface, if
    /// it was the last fd).
    pub fn with_after_close(fd: OwnedFd, after: AfterClose) -> Self {
        DeferredFd {
            fd: Some(fd),
            after: Some(after),
        }
    }

    pub fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

impl std::fmt::Debug for DeferredFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeferredFd").field(&self.fd).finish()
    }
}

impl Drop for DeferredFd {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            queue(Job {
                fd,
                after: self.after.take(),
            });
        }
    }
}

/// Queues `job` for a closer thread. Never blocks, and is cheap for the
/// caller (a scheduler thread, in a resource's down or destructor
/// callback): it starts a thread only when none is alive; the pool grows
/// from its own threads, which meet the backlog.
fn queue(job: Job) {
    let closer = closer();
    closer.queued.fetch_add(1, SeqCst);
    if let Err(mpsc::SendError(job)) = closer.sender.send(job) {
        // The receiver lives in a static and is never dropped; should the
        // send fail anyway, closing here beats leaking the fd.
        closer.queued.fetch_sub(1, SeqCst);
        finish(job);
        return;
    }
    if closer
        .threads
        .compare_exchange(0, 1, SeqCst, SeqCst)
        .is_ok()
    {
        spawn_closer(closer);
    }
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
        closer.threads.fetch_sub(1, SeqCst);
        take_and_close(closer, Duration::ZERO);
    }
}

/// Takes one queued fd (waiting up to `wait`) and closes it; false if none
/// came.
fn take_and_close(closer: &'static Closer, wait: Duration) -> bool {
    let next = {
        // A closer cannot panic while holding the lock (it only receives),
        // so poisoning carries no broken invariant.
        let receiver = closer.receiver.lock().unwrap_or_else(|p| p.into_inner());
        // Wait only for what is left of the idle time since the last fd.
        let idle = closer
            .now_ms()
            .saturating_sub(closer.last_work_ms.load(SeqCst));
        let left = wait.saturating_sub(Duration::from_millis(idle));
        receiver.recv_timeout(left)
    };
    let job = match next {
        Ok(job) => job,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
    };
    closer.queued.fetch_sub(1, SeqCst);
    closer.last_work_ms.store(closer.now_ms(), SeqCst);
    let busy = closer.busy.fetch_add(1, SeqCst) + 1;
    // More waiting and no other closer free to take it: add a thread, so
    // that closes overlap (the kernel shares overlapping waits).
    let threads = closer.threads.load(SeqCst);
    if closer.queued.load(SeqCst) > 0
        && busy >= threads
        && threads < MAX_CLOSERS
        && closer
            .threads
            .compare_exchange(threads, threads + 1, SeqCst, SeqCst)
            .is_ok()
    {
        spawn_closer(closer);
    }
    finish(job);
    closer.busy.fetch_sub(1, SeqCst);
    true
}

/// Closes the job's fd (the slow part: the kernel unregisters the
/// interface), then runs what was to follow.
fn finish(job: Job) {
    drop(job.fd);
    if let Some(after) = job.after {
        after();
    }
}

fn run_closer() {
    crate::platform::deprioritize_thread();
    let closer = closer();
    loop {
        if take_and_close(closer, IDLE_TIMEOUT) {
            continue;
        }
        // Idle for a while: leave, unless fds wait and every thread left is
        // busy. An fd queued as this thread leaves is then not stranded
        // behind long closes: its sender either saw no thread and started
        // one, or a closer that took an fd while this one still counted as
        // free (and so added no thread) is seen busy here. Both sides use
        // SeqCst, so at least one of them sees the other.
        let left = closer.threads.fetch_sub(1, SeqCst) - 1;
        if must_stay(closer.queued.load(SeqCst), closer.busy.load(SeqCst), left)
            && closer
                .threads
                .compare_exchange(left, left + 1, SeqCst, SeqCst)
                .is_ok()
        {
            continue;
        }
        return;
    }
}

/// Whether an idle closer about to leave must stay: fds wait (`queued`)
/// and each of the `left` other threads is closing one (`busy`), so none
/// would take them before a close ends.
fn must_stay(queued: usize, busy: usize, left: usize) -> bool {
    queued > 0 && busy >= left
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::mpsc::channel;

    /// The pool is one per process: its tests take turns, and each starts
    /// once the pool has emptied.
    fn alone() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        let turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(20);
        while closer().threads.load(SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        turn
    }

    #[test]
    fn a_deferred_fd_lends_its_fd_until_dropped_and_says_what_it_holds() {
        let (_r, w) = nix::unistd::pipe().expect("pipe");
        let raw = w.as_raw_fd();
        let deferred = DeferredFd::new(w);
        assert_eq!(deferred.as_fd().map(|fd| fd.as_raw_fd()), Some(raw));
        let shown = format!("{deferred:?}");
        assert!(shown.starts_with("DeferredFd(Some("), "{shown}");
        assert!(shown.contains(&raw.to_string()), "{shown}");
    }

    #[test]
    fn an_idle_closer_stays_only_for_fds_no_other_thread_is_free_to_take() {
        assert!(must_stay(1, 0, 0), "the last thread leaves fds behind");
        assert!(must_stay(3, 2, 2), "the others are all closing");
        assert!(!must_stay(3, 1, 2), "another thread is free to take them");
        assert!(!must_stay(0, 2, 2), "nothing waits");
        assert!(!must_stay(0, 0, 0), "nothing waits and nothing runs");
    }

    #[test]
    fn closes_one_at_a_time_need_one_thread() {
        let _turn = alone();
        let (seen, threads) = channel();
        for _ in 0..50 {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            let seen = seen.clone();
            drop(DeferredFd::with_after_close(
                w,
                Box::new(move || {
                    let _ = seen.send(closer().threads.load(SeqCst));
                }),
            ));
            assert!(closed_soon(&r));
            let during = threads.recv_timeout(Duration::from_secs(10));
            assert_eq!(during, Ok(1), "no backlog, no second thread");
        }
    }

    /// Whether `reader` reaches end of file (its write end closed) within
    /// a generous bound: a test that fails, never one that hangs.
    fn closed_soon(reader: &OwnedFd) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(10_000u16)) != Ok(1) {
            return false;
        }
        let mut buf = [0u8; 1];
        nix::unistd::read(reader, &mut buf) == Ok(0)
    }

    #[test]
    fn closes_every_fd_handed_to_it() {
        let _turn = alone();
        let mut readers = Vec::new();
        for _ in 0..200 {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            readers.push(r);
            drop(DeferredFd::new(w));
        }
        for r in &readers {
            assert!(closed_soon(r), "a queued fd was not closed");
        }
        assert!(closer().threads.load(SeqCst) <= MAX_CLOSERS);
    }

    #[test]
    fn runs_what_follows_after_the_close() {
        let _turn = alone();
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let (done, after) = channel();
        let fd = DeferredFd::with_after_close(
            w,
            Box::new(move || {
                let _ = done.send(());
            }),
        );
        drop(fd);
        assert_eq!(after.recv_timeout(Duration::from_secs(10)), Ok(()));
        assert!(closed_soon(&r));
    }

    #[test]
    fn a_backlog_grows_the_pool_and_idleness_empties_it() {
        use std::sync::{Arc, Condvar};
        let _turn = alone();
        // 64 closes whose follow-ups wait until all have begun: only a pool
        // grown to 64 threads at once gets there. All are queued before a
        // closer may take one (it waits for the receiver meanwhile): the
        // pool grows from a backlog its threads meet, and a closer that
        // caught up with this loop would see none.
        const CLOSES: usize = 64;
        let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (done, finished) = channel();
        let queuing = closer().receiver.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..CLOSES {
            let (_r, w) = nix::unistd::pipe().expect("pipe");
            let (gate, done) = (Arc::clone(&gate), done.clone());
            drop(DeferredFd::with_after_close(
                w,
                Box::new(move || {
                    let (begun, all) = &*gate;
                    let mut begun = begun.lock().unwrap_or_else(|p| p.into_inner());
                    *begun += 1;
                    all.notify_all();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while *begun < CLOSES {
                        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                            break;
                        };
                        begun = all
                            .wait_timeout(begun, left)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    let _ = done.send(*begun >= CLOSES);
                }),
            ));
        }
        drop(queuing);
        for _ in 0..CLOSES {
            let together = finished.recv_timeout(Duration::from_secs(90));
            assert_eq!(together, Ok(true), "the pool did not grow to {CLOSES}");
        }
        // Idle, the pool goes, all at once: in about one IDLE_TIMEOUT
        // (200 ms), since the threads share how long the pool has been
        // idle. Were each to wait out its own in turn, 64 would take 12.8 s;
        // the bound is 6 s, 30 times the expected time.
        let idle_from = Instant::now();
        while closer().threads.load(SeqCst) > 0 {
            assert!(
                idle_from.elapsed() < Duration::from_secs(6),
                "closer threads stayed idle"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // And it stays gone: the last thread to leave must not take itself
        // back without a queued fd (it would spin, counted, for ever).
        for _ in 0..100 {
            assert_eq!(closer().threads.load(SeqCst), 0, "an idle closer came back");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
