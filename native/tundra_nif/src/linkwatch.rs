//! Link events for the owners who ask: when a device's link goes up or
//! down or its MTU changes, whoever changed it, the device's reader
//! process is sent `{:"$tundra_link", up, mtu}` and passes it on to the
//! owner as `{:tundra_link, dev, %{up: up, mtu: mtu}}`; when the link is
//! deleted, `:"$tundra_link_removed"`, passed on as
//! `{:tundra_link, dev, :removed}`.
//!
//! One watcher thread per network namespace that has subscribed devices
//! reads the kernel's link notifications there (a thread of Tundra's own:
//! no thread of the VM changes namespace or blocks on the socket). It
//! ends within `POLL` of its namespace's last unsubscription.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rustler::env::OwnedEnv;
use rustler::{Encoder, LocalPid};
use tundra_core::platform::{LinkEvent, LinkMonitor, Netns};

use crate::atoms;

/// How long a watcher waits for news before it looks whether it still
/// has subscribers.
const POLL: Duration = Duration::from_millis(500);

/// A network namespace: `None` for the VM's own.
type Key = Option<(u64, u64)>;

struct Subscriber {
    id: u64,
    index: u32,
    reader: LocalPid,
    /// The state last reported (or found at subscription).
    last: Option<(bool, u32)>,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole values are moved under these locks.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watchers by namespace. Lock order: this map, then a watcher's
/// subscribers.
fn watchers() -> &'static Mutex<HashMap<Key, Subscribers>> {
    static WATCHERS: OnceLock<Mutex<HashMap<Key, Subscribers>>> = OnceLock::new();
    WATCHERS.get_or_init(Default::default)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A device's subscription; dropping it ends it.
#[derive(Debug)]
pub struct Subscription {
    key: Key,
    id: u64,
}

/// Subscribes `reader` to the events of link `index` of `netns`, starting
/// that namespace's watcher if it has none. `current` is the link's state
/// now: only changes from it are reported.
pub fn subscribe(
    netns: Option<Arc<Netns>>,
    index: u32,
    reader: LocalPid,
    current: (bool, u32),
) -> io::Result<Subscription> {
    let key = netns.as_ref().map(|ns| ns.id());
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut all = lock(watchers());
    let subscribers = match all.get(&key) {
        Some(subscribers) => Arc::clone(subscribers),
        None => {
            let subscribers = Subscribers::default();
            start_watcher(netns, key, Arc::clone(&subscribers))?;
            all.insert(key, Arc::clone(&subscribers));
            subscribers
        }
    };
    lock(&subscribers).push(Subscriber {
        id,
        index,
        reader,
        last: Some(current),
    });
    Ok(Subscription { key, id })
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let all = lock(watchers());
        if let Some(subscribers) = all.get(&self.key) {
            lock(subscribers).retain(|s| s.id != self.id);
        }
    }
}

/// Starts the watcher of a namespace; returns once it listens, so that
/// no change after `subscribe` returns goes unheard.
fn start_watcher(netns: Option<Arc<Netns>>, key: Key, subscribers: Subscribers) -> io::Result<()> {
    let (listening, started) = mpsc::channel();
    std::thread::Builder::new()
        .name("tundra_links".into())
        .spawn(move || {
            let monitor = netns
                .as_deref()
                .map_or(Ok(()), Netns::enter)
                .and_then(|()| LinkMonitor::open(POLL));
            match monitor {
                Ok(monitor) => {
                    let _ = listening.send(Ok(()));
                    watch(monitor, key, &subscribers);
                }
                Err(e) => {
                    let _ = listening.send(Err(e));
                }
            }
        })?;
    started
        .recv()
        .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)))
}

/// The watcher's loop: reports changes until nobody is subscribed.
fn watch(mut monitor: LinkMonitor, key: Key, subscribers: &Subscribers) {
    let mut env = OwnedEnv::new();
    loop {
        match monitor.read() {
            Ok(events) => {
                for event in events {
                    report(&mut env, subscribers, event);
                }
            }
            // Notifications were lost (or the socket failed): what is
            // missed shows in the next notification of each link.
            Err(_) => std::thread::sleep(POLL / 10),
        }
        if lock(subscribers).is_empty() {
            let mut all = lock(watchers());
            if lock(subscribers).is_empty() {
                all.remove(&key);
                return;
            }
        }
    }
}

/// Tells the subscribers of `event`'s link what changed; forgets those
/// whose reader is gone.
fn report(env: &mut OwnedEnv, subscribers: &Subscribers, event: LinkEvent) {
    if event.removed {
        // Said once; the subscription has nothing more to say.
        lock(subscribers).retain(|s| {
            if s.index == event.index {
                let _ = env.send_and_clear(&s.reader, |env| {
                    atoms::dollar_tundra_link_removed().encode(env)
                });
                return false;
            }
            true
        });
        return;
    }
    let now = (event.up, event.mtu);
    lock(subscribers).retain_mut(|s| {
        if s.index != event.index || s.last == Some(now) {
            return true;
        }
        s.last = Some(now);
        env.send_and_clear(&s.reader, |env| {
            (atoms::dollar_tundra_link(), event.up, event.mtu).encode(env)
        })
        .is_ok()
    });
}
