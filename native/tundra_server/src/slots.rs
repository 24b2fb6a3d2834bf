//! Connection slots: at most `total` members' connections are served at
//! once, and at most `per_uid` of them for one user, so that one user's
//! flood or trickle of connections cannot deny the others. Root has
//! `total` slots of its own besides, so that members, all together,
//! cannot deny root either. A slot is a value whose drop gives it back, so
//! every way a connection ends (a reply, an error, a panic unwinding its
//! thread) returns it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Slots {
    total: usize,
    per_uid: usize,
    taken: Mutex<Taken>,
}

#[derive(Default)]
struct Taken {
    /// Members' slots in use.
    members: usize,
    root: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// All slots are taken.
    Server,
    /// This user holds its share.
    User,
}

/// A taken slot; dropping it gives it back.
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    pub fn new(total: usize, per_uid: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_uid: per_uid.min(total),
            taken: Mutex::new(Taken::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Taken> {
        // Only counters are updated under the lock; a poisoned one is sound.
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, Full> {
        let mut taken = self.lock();
        if uid == 0 {
            if taken.root >= self.total {
                return Err(Full::Server);
            }
            taken.root += 1;
            return Ok(Slot {
                slots: Arc::clone(self),
                uid,
            });
        }
        let mine = taken.by_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.per_uid {
            return Err(Full::User);
        }
        if taken.members >= self.total {
            return Err(Full::Server);
        }
        taken.members += 1;
        taken.by_uid.insert(uid, mine + 1);
        Ok(Slot {
            slots: Arc::clone(self),
            uid,
        })
    }

    /// Connections being served now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        let taken = self.lock();
        taken.members + taken.root
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        if self.uid == 0 {
            taken.root = taken.root.saturating_sub(1);
            return;
        }
        taken.members = taken.members.saturating_sub(1);
        if let Some(mine) = taken.by_uid.get_mut(&self.uid) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                taken.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_its_share_and_others_still_get_theirs() {
        let slots = Slots::new(4, 2);
        let a1 = slots.take(1).expect("first");
        let _a2 = slots.take(1).expect("second");
        assert_eq!(slots.take(1).err(), Some(Full::User));
        let _b1 = slots.take(2).expect("another user");
        let _c1 = slots.take(3).expect("a third");
        assert_eq!(slots.take(4).err(), Some(Full::Server));
        drop(a1);
        assert!(slots.take(1).is_ok(), "given back on drop");
    }

    #[test]
    fn members_all_together_cannot_take_roots_slots() {
        let slots = Slots::new(4, 2);
        let members: Vec<_> = (1..=2)
            .flat_map(|uid| [slots.take(uid), slots.take(uid)])
            .collect::<Result<_, _>>()
            .expect("members fill every slot");
        assert_eq!(slots.take(3).err(), Some(Full::Server));
        let root: Vec<_> = (0..4).map(|_| slots.take(0).expect("root")).collect();
        assert_eq!(slots.take(0).err(), Some(Full::Server), "root's own bound");
        assert_eq!(slots.in_use(), 8);
        drop(root);
        assert_eq!(slots.take(3).err(), Some(Full::Server), "root's were apart");
        drop(members);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_slot_given_back_leaves_the_users_others_counted() {
        let slots = Slots::new(8, 3);
        let held: Vec<_> = (0..3).map(|_| slots.take(5).expect("share")).collect();
        let mut held = held.into_iter();
        drop(held.next());
        let _again = slots.take(5).expect("the one given back");
        assert_eq!(slots.take(5).err(), Some(Full::User), "two still held");
        drop(held);
    }

    #[test]
    fn a_panicking_holder_gives_its_slot_back() {
        let slots = Slots::new(1, 1);
        let slot = slots.take(7).expect("slot");
        let joined = std::thread::spawn(move || {
            let _slot = slot;
            panic!("client thread failure");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(slots.in_use(), 0);
    }
}
