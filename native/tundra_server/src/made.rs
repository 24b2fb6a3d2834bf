//! The server's own record of the devices it made for each user: what
//! per-user limits count (never anything a client can change, such as a
//! device's owner), checked against the kernel's list of TUN devices.
//!
//! A client holding a device's fd can make it persistent (TUNSETPERSIST
//! needs no privilege on an attached fd), so that it outlives every fd.
//! The reaper removes such a device once no fd holds it: every
//! `REAP_INTERVAL`, one netlink dump of the namespace's TUN devices.
//! Devices that went away on their own are forgotten at the same time.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tundra_core::platform::{self, TunLink};

use crate::log::log;

/// How often the reaper looks; a persisted device nobody holds is removed
/// within about this long.
pub const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// One device the server made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub index: u32,
    pub name: String,
}

#[derive(Default)]
pub struct Records {
    by_uid: Mutex<HashMap<u32, Vec<Made>>>,
}

/// What reconciling the records with the kernel's list found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Devices no fd holds any more: to remove, with the uid they were for.
    pub orphaned: Vec<(u32, Made)>,
}

impl Records {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Vec<Made>>> {
        // Only whole values are moved under the lock; poisoning is harmless.
        self.by_uid.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, uid: u32, made: Made) {
        self.lock().entry(uid).or_default().push(made);
    }

    /// Whether device `index` called `name` was made for `uid`.
    pub fn holds(&self, uid: u32, index: u32, name: &str) -> bool {
        self.lock()
            .get(&uid)
            .is_some_and(|made| made.iter().any(|m| m.index == index && m.name == name))
    }

    pub fn count(&self, uid: u32) -> usize {
        self.lock().get(&uid).map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Brings the records up to date with `links`, the kernel's TUN
    /// devices: forgets devices that are gone (same index and name no
    /// longer present) and returns, forgotten too, persistent ones that
    /// exist with no fd attached.
    pub fn reconcile(&self, links: &[TunLink]) -> Reconciled {
        let mut found = Reconciled::default();
        let mut records = self.lock();
        for (uid, made) in records.iter_mut() {
            made.retain(|m| {
                match links
                    .iter()
                    .find(|l| l.index == m.index && l.name == m.name)
                {
                    None => false,
                    // Only a persistent device can lack an fd; one whose
                    // holder turned its carrier off is not persistent.
                    Some(link) if link.persist && link.attached == 0 => {
                        found.orphaned.push((*uid, m.clone()));
                        false
                    }
                    Some(_) => true,
                }
            });
        }
        records.retain(|_, made| !made.is_empty());
        found
    }
}

/// Reconciles with the kernel now and removes orphaned devices. Errors
/// (netlink failing) leave the records as they are.
pub fn sweep(records: &Records) {
    let links = match platform::tun_links() {
        Ok(links) => links,
        Err(e) => {
            log!("cannot list TUN devices: {e}");
            return;
        }
    };
    for (uid, made) in records.reconcile(&links).orphaned {
        match platform::delete_link(made.index) {
            Ok(()) => log!(
                "uid={uid} device={} removed: no fd holds it (it was made persistent)",
                made.name
            ),
            Err(e) => log!("uid={uid} device={} could not be removed: {e}", made.name),
        }
    }
}

/// Starts the reaper thread.
pub fn start_reaper(records: Arc<Records>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tundra_reaper".into())
        .spawn(move || loop {
            std::thread::sleep(REAP_INTERVAL);
            if !records.is_empty() {
                sweep(&records);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, attached: u32) -> TunLink {
        TunLink {
            index,
            name: name.into(),
            persist: attached == 0,
            attached,
            packet_info: false,
            tap: false,
            multi_queue: false,
        }
    }

    fn made(index: u32, name: &str) -> Made {
        Made {
            index,
            name: name.into(),
        }
    }

    #[test]
    fn counts_forget_the_gone_and_return_the_orphaned() {
        let records = Records::default();
        records.add(1000, made(10, "tun0"));
        records.add(1000, made(11, "tun1"));
        records.add(1000, made(12, "tun2"));
        records.add(2000, made(13, "tun3"));
        assert_eq!(records.count(1000), 3);
        assert!(records.holds(1000, 11, "tun1"));
        assert!(!records.holds(2000, 11, "tun1"), "another user's");
        assert!(!records.holds(1000, 11, "tun9"), "index reused by another");

        // tun0 held, tun1 gone, tun2 persisted with no fd, and index 13
        // now names another device (the record's is gone).
        let found = records.reconcile(&[
            link(10, "tun0", 1),
            link(12, "tun2", 0),
            link(13, "other", 1),
        ]);
        let mut carrier_off = link(10, "tun0", 0);
        carrier_off.persist = false;
        assert_eq!(records.reconcile(&[carrier_off]).orphaned, vec![]);
        assert_eq!(found.orphaned, vec![(1000, made(12, "tun2"))]);
        assert_eq!(records.count(1000), 1);
        assert_eq!(records.count(2000), 0);
        assert!(!records.is_empty());
    }
}
