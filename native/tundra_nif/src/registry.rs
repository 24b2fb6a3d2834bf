//! Every device fd this VM holds, from the moment a device takes it until
//! a closer thread has closed it (not merely until `close/1`):
//!
//! - `adopt(fd, dup: false)` of an fd a device already owns is refused
//!   (two owners of one fd would close it twice, the second time closing
//!   whatever reused the number);
//! - `create/2` of a name this VM is still closing waits for that close,
//!   so a supervised owner that is restarted gets its interface name back
//!   (a device whose interface was deleted from outside holds no name);
//!   one that the server refuses because its addresses are in use waits
//!   for this VM's closing devices (whose addresses they may be) likewise.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use rustler::LocalPid;

struct Entry {
    fd: RawFd,
    /// The interface's index (0 if unknown), which tells two devices of
    /// the same name apart.
    index: u32,
    name: String,
    owner: Option<LocalPid>,
    /// Closed by its owner or its owner's exit; the fd is on its way to a
    /// closer thread.
    closing: bool,
}

struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    /// Notified whenever an entry goes away.
    released: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        entries: Mutex::new(HashMap::new()),
        released: Condvar::new(),
    })
}

fn entries() -> MutexGuard<'static, HashMap<u64, Entry>> {
    // Entries are whole values, inserted or removed; a poisoned lock holds
    // no half-made one.
    registry().entries.lock().unwrap_or_else(|p| p.into_inner())
}

/// A device's place in the registry, from `claim` until `released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(u64);

/// Claims `fd`, just opened (or duplicated, or received) by this VM, for
/// a new device. A closing device may still be listed under that number:
/// the kernel reuses a number as soon as a close begins, while the close
/// (and the interface's removal) goes on, so that device keeps its entry,
/// without the number. `None` only if an open device lists the number,
/// which would mean the registry lost track of a close.
pub fn claim_fresh(fd: RawFd) -> Option<Id> {
    let mut entries = entries();
    for entry in entries.values_mut().filter(|e| e.fd == fd) {
        if !entry.closing {
            return None;
        }
        entry.fd = -1;
    }
    Some(insert(&mut entries, fd))
}

/// Claims `fd`, handed over by the caller (`adopt(fd, dup: false)`) and
/// attached to interface `index` (0 if unknown); `None` if a device of
/// this VM owns it. A closing device that lists the number may or may not
/// have closed it yet: if it was for another interface, the number was
/// reused and `fd` is not its; if for the same (or an unknown) one, it may
/// still be, and is refused.
pub fn claim_given(fd: RawFd, index: u32) -> Option<Id> {
    let mut entries = entries();
    let maybe_ours = |e: &Entry| !e.closing || index == 0 || e.index == 0 || e.index == index;
    if entries.values().any(|e| e.fd == fd && maybe_ours(e)) {
        return None;
    }
    for entry in entries.values_mut().filter(|e| e.fd == fd) {
        entry.fd = -1;
    }
    Some(insert(&mut entries, fd))
}

fn insert(entries: &mut HashMap<u64, Entry>, fd: RawFd) -> Id {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    entries.insert(
        id,
        Entry {
            fd,
            index: 0,
            name: String::new(),
            owner: None,
            closing: false,
        },
    );
    Id(id)
}

/// Names the device, its interface's index and its owner, once it has
/// them.
pub fn describe(id: Id, name: &str, index: u32, owner: LocalPid) {
    if let Some(entry) = entries().get_mut(&id.0) {
        entry.name = name.into();
        entry.index = index;
        entry.owner = Some(owner);
    }
}

pub fn set_owner(id: Id, owner: LocalPid) {
    if let Some(entry) = entries().get_mut(&id.0) {
        entry.owner = Some(owner);
    }
}

/// The device was closed; its fd is on its way to a closer thread.
pub fn closing(id: Id) {
    if let Some(entry) = entries().get_mut(&id.0) {
        entry.closing = true;
    }
}

/// The fd is closed (run on the closer thread, after the close).
pub fn released(id: Id) {
    entries().remove(&id.0);
    registry().released.notify_all();
}

/// What this VM holds of interface `name`, index `index`.
#[derive(Debug, PartialEq, Eq)]
pub enum Holders {
    /// Nothing.
    None,
    /// Only these devices, closing or with owners that have exited (their
    /// close is on its way): the name will be free when they are closed.
    Leaving(Vec<Id>),
    /// A device with a live owner.
    InUse,
}

/// Which devices of this VM hold the interface `name` whose index is now
/// `index`, judging owners with `alive`. A device of that name with
/// another index does not: its interface was deleted from outside (`ip
/// link del`) while it stayed open, and the name went to another.
pub fn holders(name: &str, index: u32, alive: impl Fn(LocalPid) -> bool) -> Holders {
    let entries = entries();
    let mut leaving = Vec::new();
    let holding = entries
        .iter()
        .filter(|(_, e)| e.name == name && (e.index == index || e.index == 0));
    for (id, entry) in holding {
        match entry.owner {
            Some(owner) if !entry.closing && alive(owner) => return Holders::InUse,
            _ => leaving.push(Id(*id)),
        }
    }
    if leaving.is_empty() {
        Holders::None
    } else {
        Holders::Leaving(leaving)
    }
}

/// The devices of this VM that are closing, or whose owners have exited
/// (judged with `alive`): their interfaces, and the addresses on them,
/// are on their way out.
pub fn leaving(alive: impl Fn(LocalPid) -> bool) -> Vec<Id> {
    entries()
        .iter()
        .filter(|(_, e)| e.closing || e.owner.is_some_and(|owner| !alive(owner)))
        .map(|(id, _)| Id(*id))
        .collect()
}

/// Waits until every device of `ids` has been closed, at most until
/// `deadline`; whether it came to that.
pub fn wait_closed(ids: &[Id], deadline: Instant) -> bool {
    wait_until(deadline, |entries| {
        !ids.iter().any(|id| entries.contains_key(&id.0))
    })
}

/// Waits until `done` holds of the entries (looked at again each time one
/// goes away), at most until `deadline`; whether it came to that.
fn wait_until(deadline: Instant, done: impl Fn(&HashMap<u64, Entry>) -> bool) -> bool {
    let mut entries = entries();
    loop {
        if done(&entries) {
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        entries = registry()
            .released
            .wait_timeout(entries, left)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}
