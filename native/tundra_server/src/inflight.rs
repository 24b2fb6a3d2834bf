//! Device fds sent in replies that their clients have not read yet.
//!
//! The kernel charges an fd in flight (sent with SCM_RIGHTS, not yet
//! received) to the *sender's* user, and once that user has more in
//! flight than the sender's RLIMIT_NOFILE, every further send fails with
//! ETOOMANYREFS (unless the sender has CAP_SYS_RESOURCE, which the shipped
//! unit does not grant). A client that asks for devices and never reads
//! the replies would so stop the server from handing anyone a device.
//!
//! The server cannot take back a message once sent: the fds stay in
//! flight until the client reads them or closes its socket. So each reply
//! with fds is counted here, against its uid, from before the device is
//! made until the client has taken the reply (`serve` keeps the
//! connection, and its slot, until then), and a request that would take
//! its uid past `per_uid`, or all non-root uids together past `total`, is
//! refused before anything is made. Root's requests are counted too but
//! never refused: `total` stays well below the kernel's limit, so what
//! members hold can never use up root's share.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct InFlight {
    per_uid: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Unread fds of non-root uids.
    members: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why fds were not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This uid has this many fds unread already.
    User(usize),
    /// All members together have this many unread.
    Server(usize),
}

/// Fds reserved for one reply; dropping it gives them back.
pub struct Reserved {
    in_flight: Arc<InFlight>,
    uid: u32,
    fds: usize,
}

impl InFlight {
    pub fn new(per_uid: usize, total: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            per_uid,
            total,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Only counters change under the lock; a poisoned one is sound.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `fds` for a reply to `uid`.
    pub fn reserve(self: &Arc<Self>, uid: u32, fds: usize) -> Result<Reserved, Full> {
        let mut counts = self.lock();
        let mine = counts.by_uid.get(&uid).copied().unwrap_or(0);
        if uid != 0 {
            if mine + fds > self.per_uid {
                return Err(Full::User(mine));
            }
            if counts.members + fds > self.total {
                return Err(Full::Server(counts.members));
            }
            counts.members += fds;
        }
        counts.by_uid.insert(uid, mine + fds);
        Ok(Reserved {
            in_flight: Arc::clone(self),
            uid,
            fds,
        })
    }

    /// Fds of `uid` not yet read.
    #[cfg(test)]
    pub fn unread(&self, uid: u32) -> usize {
        self.lock().by_uid.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut counts = self.in_flight.lock();
        if self.uid != 0 {
            counts.members = counts.members.saturating_sub(self.fds);
        }
        if let Some(mine) = counts.by_uid.get_mut(&self.uid) {
            *mine = mine.saturating_sub(self.fds);
            if *mine == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_gets_its_share_all_members_the_total_and_root_is_never_refused() {
        let in_flight = InFlight::new(64, 100);
        let a = in_flight
            .reserve(1000, 64)
            .expect("a whole multi-queue device");
        assert_eq!(in_flight.reserve(1000, 1).err(), Some(Full::User(64)));
        let _b = in_flight.reserve(2000, 30).expect("another uid");
        assert_eq!(in_flight.reserve(3000, 7).err(), Some(Full::Server(94)));
        let _root = in_flight.reserve(0, 64).expect("root");
        assert!(in_flight.reserve(0, 64).is_ok(), "root, again");
        drop(a);
        assert_eq!(in_flight.unread(1000), 0);
        assert!(in_flight.reserve(3000, 7).is_ok(), "given back on drop");
    }

    #[test]
    fn roots_fds_given_back_leave_the_members_total_alone() {
        let in_flight = InFlight::new(64, 100);
        let root = in_flight.reserve(0, 64).expect("root");
        let member = in_flight.reserve(1000, 60).expect("a member");
        drop(root);
        assert_eq!(in_flight.unread(0), 0);
        // The members' 60 still count: 41 more would pass 100.
        assert_eq!(in_flight.reserve(2000, 41).err(), Some(Full::Server(60)));
        assert!(in_flight.reserve(2000, 40).is_ok());
        drop(member);
    }
}
