//! The server's own record of the devices it made for each user: what
//! per-user limits count (never anything a client can change, such as a
//! device's owner), checked against the kernel's list of TUN devices.
//!
//! A client holding a device's fd can make it persistent (TUNSETPERSIST
//! needs no privilege on an attached fd), so that it outlives every fd.
//! The reaper removes such a device once no fd holds it: every
//! `REAP_INTERVAL`, one netlink dump of the namespace's TUN devices.
//! Devices that went away on their own are forgotten at the same time.
//!
//! The records outlive the server: each is appended to a journal under
//! the state folder (`made UID INDEX NAME CLAIMS`, and `gone INDEX NAME`
//! once forgotten) before the client is answered, replayed at start and
//! reconciled with the kernel's devices, so limits, ownership and reaping
//! hold across a restart or a crash. Every line read back passes the
//! same validating constructors as anything else the server reads.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tundra_core::config::valid_interface_name;
use tundra_core::platform::{self, TunLink};
use tundra_core::Cidr;

use crate::log::log;

/// How often the reaper looks; a persisted device nobody holds is removed
/// within about this long.
pub const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// The journal's name in the state folder.
pub const JOURNAL: &str = "devices";

/// One device the server made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub index: u32,
    pub name: String,
    /// What its configuration claimed when it was made.
    pub claims: Vec<Cidr>,
}

#[derive(Default)]
pub struct Records {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_uid: HashMap<u32, Vec<Made>>,
    journal: Option<Journal>,
}

/// The append-only file the records are kept in.
struct Journal {
    path: PathBuf,
    file: File,
    /// Lines in the file, to know when rewriting it pays.
    lines: usize,
}

/// What reconciling the records with the kernel's list found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Devices no fd holds any more: to remove, with the uid they were for.
    pub orphaned: Vec<(u32, Made)>,
}

impl Records {
    /// The records kept in `folder`'s journal: those it holds (of devices
    /// that still exist in the kernel's list `links`), the file then
    /// rewritten with just those. Lines that do not read as records are
    /// left out, and reported.
    pub fn open(folder: &Path, links: &[TunLink]) -> io::Result<Records> {
        let path = folder.join(JOURNAL);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let (by_uid, unreadable) = replay(&text);
        if unreadable > 0 {
            log!(
                "{}: {unreadable} lines that are not records left out",
                path.display()
            );
        }
        let records = Records {
            state: Mutex::new(State {
                by_uid,
                journal: None,
            }),
        };
        // Devices that went while no server ran are simply forgotten; the
        // reaper looks at the rest.
        let kept = records.lock().by_uid.values().map(Vec::len).sum::<usize>();
        {
            let mut state = records.lock();
            for made in state.by_uid.values_mut() {
                made.retain(|m| links.iter().any(|l| l.index == m.index && l.name == m.name));
            }
            state.by_uid.retain(|_, made| !made.is_empty());
            let journal = Journal::rewrite(path, &state.by_uid)?;
            state.journal = Some(journal);
        }
        let live = records.lock().by_uid.values().map(Vec::len).sum::<usize>();
        if kept > 0 {
            log!(
                "{live} devices made earlier are still there ({} gone meanwhile)",
                kept - live
            );
        }
        Ok(records)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only whole values are moved under the lock; poisoning is harmless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `made` for `uid`, in the journal first: a device that could
    /// not be recorded must not be handed out.
    pub fn add(&self, uid: u32, made: Made) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(journal) = &mut state.journal {
            journal.append(&made_line(uid, &made))?;
        }
        state.by_uid.entry(uid).or_default().push(made);
        Ok(())
    }

    /// Whether device `index` called `name` was made for `uid`.
    pub fn holds(&self, uid: u32, index: u32, name: &str) -> bool {
        self.lock()
            .by_uid
            .get(&uid)
            .is_some_and(|made| made.iter().any(|m| m.index == index && m.name == name))
    }

    /// The names of every device recorded.
    pub fn names(&self) -> Vec<String> {
        let state = self.lock();
        state
            .by_uid
            .values()
            .flatten()
            .map(|m| m.name.clone())
            .collect()
    }

    pub fn count(&self, uid: u32) -> usize {
        self.lock().by_uid.get(&uid).map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_uid.is_empty()
    }

    /// Brings the records up to date with `links`, the kernel's TUN
    /// devices: forgets devices that are gone (same index and name no
    /// longer present) and returns, forgotten too, persistent ones that
    /// exist with no fd attached.
    pub fn reconcile(&self, links: &[TunLink]) -> Reconciled {
        let mut found = Reconciled::default();
        let mut forgotten = Vec::new();
        let mut state = self.lock();
        for (uid, made) in state.by_uid.iter_mut() {
            made.retain(|m| {
                match links
                    .iter()
                    .find(|l| l.index == m.index && l.name == m.name)
                {
                    None => {
                        forgotten.push(gone_line(m));
                        false
                    }
                    // Only a persistent device can lack an fd; one whose
                    // holder turned its carrier off is not persistent.
                    Some(link) if link.persist && link.attached == 0 => {
                        forgotten.push(gone_line(m));
                        found.orphaned.push((*uid, m.clone()));
                        false
                    }
                    Some(_) => true,
                }
            });
        }
        state.by_uid.retain(|_, made| !made.is_empty());
        let State { by_uid, journal } = &mut *state;
        if let Some(journal) = journal {
            if let Err(e) = journal.forget(&forgotten, by_uid) {
                // The next start reconciles these with the kernel anyway.
                log!("cannot write {}: {e}", journal.path.display());
            }
        }
        found
    }
}

impl Journal {
    /// Writes the records `by_uid` as a new journal at `path` (through a
    /// temporary file renamed over it, so a crash leaves one or the other).
    fn rewrite(path: PathBuf, by_uid: &HashMap<u32, Vec<Made>>) -> io::Result<Journal> {
        let temporary = path.with_extension("new");
        let mut file = create_private(&temporary, true)?;
        let mut lines = 0;
        for (uid, made) in by_uid {
            for m in made {
                file.write_all(made_line(*uid, m).as_bytes())?;
                lines += 1;
            }
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        let file = create_private(&path, false)?;
        Ok(Journal { path, file, lines })
    }

    fn append(&mut self, line: &str) -> io::Result<()> {
        // One write per line: a crash cannot interleave two records.
        self.file.write_all(line.as_bytes())?;
        self.lines += 1;
        Ok(())
    }

    /// Records that `lines` (`gone` lines) were forgotten, and rewrites
    /// the journal once it is mostly such lines.
    fn forget(&mut self, lines: &[String], by_uid: &HashMap<u32, Vec<Made>>) -> io::Result<()> {
        for line in lines {
            self.append(line)?;
        }
        let live: usize = by_uid.values().map(Vec::len).sum();
        if self.lines > 2 * live + 1024 {
            *self = Journal::rewrite(self.path.clone(), by_uid)?;
        }
        Ok(())
    }
}

/// Opens `path` for appending, mode 0600 if it is created; `truncate`
/// empties it first.
fn create_private(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
}

fn made_line(uid: u32, made: &Made) -> String {
    let claims: Vec<String> = made.claims.iter().map(Cidr::to_string).collect();
    format!(
        "made {uid} {} {} {}\n",
        made.index,
        made.name,
        if claims.is_empty() {
            "-".to_string()
        } else {
            claims.join(",")
        }
    )
}

fn gone_line(made: &Made) -> String {
    format!("gone {} {}\n", made.index, made.name)
}

/// The records a journal's text leaves, and how many lines did not read
/// as records.
fn replay(text: &str) -> (HashMap<u32, Vec<Made>>, usize) {
    let mut by_uid: HashMap<u32, Vec<Made>> = HashMap::new();
    let mut unreadable = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["made", uid, index, name, claims] => {
                match (uid.parse::<u32>(), parse_made(index, name, claims)) {
                    (Ok(uid), Some(made)) => by_uid.entry(uid).or_default().push(made),
                    _ => unreadable += 1,
                }
            }
            ["gone", index, name] => match (index.parse::<u32>(), device_name(name)) {
                (Ok(index), Some(name)) => {
                    for made in by_uid.values_mut() {
                        made.retain(|m| !(m.index == index && m.name == name));
                    }
                }
                _ => unreadable += 1,
            },
            _ => unreadable += 1,
        }
    }
    by_uid.retain(|_, made| !made.is_empty());
    (by_uid, unreadable)
}

fn parse_made(index: &str, name: &str, claims: &str) -> Option<Made> {
    let claims = match claims {
        "-" => Vec::new(),
        list => list
            .split(',')
            .map(|c| c.parse::<Cidr>().ok())
            .collect::<Option<Vec<_>>>()?,
    };
    Some(Made {
        index: index.parse().ok()?,
        name: device_name(name)?.to_string(),
        claims,
    })
}

/// An interface name as the kernel could have given it.
fn device_name(name: &str) -> Option<&str> {
    (valid_interface_name(name) && !name.contains('%')).then_some(name)
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
            claims: vec![format!("10.0.0.{index}/32").parse().unwrap()],
        }
    }

    #[test]
    fn counts_forget_the_gone_and_return_the_orphaned() {
        let records = Records::default();
        records.add(1000, made(10, "tun0")).unwrap();
        records.add(1000, made(11, "tun1")).unwrap();
        records.add(1000, made(12, "tun2")).unwrap();
        records.add(2000, made(13, "tun3")).unwrap();
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

    #[test]
    fn a_link_is_a_records_device_only_by_index_and_name_both() {
        let records = Records::default();
        records.add(1000, made(13, "tun3")).unwrap();
        records.add(1000, made(14, "tun4")).unwrap();
        // Index 13 is another device now; tun4's name is on index 99.
        let found = records.reconcile(&[link(13, "other", 1), link(99, "tun4", 0)]);
        assert_eq!(found.orphaned, vec![], "neither is one of ours");
        assert_eq!(records.count(1000), 0);
        assert!(!records.holds(1000, 13, "tun3"));
        assert!(!records.holds(1000, 14, "tun4"));
    }

    #[test]
    fn the_journal_keeps_what_exists_and_refuses_what_is_not_a_record() {
        let dir = std::env::temp_dir().join(format!("tundra-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let links = [
            link(10, "tun0", 1),
            link(11, "tun1", 0),
            link(12, "tun2", 1),
        ];
        let records = Records::open(&dir, &links).unwrap();
        records.add(1000, made(10, "tun0")).unwrap();
        records.add(1000, made(11, "tun1")).unwrap();
        records.add(2000, made(12, "tun2")).unwrap();
        // tun1 is reaped (persistent, no fd); tun2 goes later, unseen.
        assert_eq!(records.reconcile(&links).orphaned.len(), 1);
        drop(records);
        let mut journal = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL))
            .unwrap();
        journal
            .write_all(b"made 5 9 tun9 10.0.0.1/8\nmade x 9 tun9 -\nmade 5 9 a%d -\nrm -rf /\n")
            .unwrap();

        let again = Records::open(&dir, &links[..1]).unwrap();
        assert_eq!(again.count(1000), 1, "tun0 only: tun1 was reaped");
        assert!(again.holds(1000, 10, "tun0"));
        assert_eq!(again.count(2000), 0, "tun2 is gone");
        assert_eq!(again.count(5), 0, "no line of junk is a record");
        let text = std::fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert_eq!(text, "made 1000 10 tun0 10.0.0.10/32\n", "rewritten");
        let mode = std::fs::metadata(dir.join(JOURNAL)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replay_applies_gone_lines_and_counts_what_is_no_record() {
        let text = "made 1 10 tun0 -\n\
                    made 1 11 tun1 10.0.0.0/8\n\
                    made 2 12 tun2 10.1.0.0/16,fd00::/8\n\
                    gone 11 tun1\n\
                    gone 12 other\n\
                    gone 10 tun9\n\
                    gone x tun2\n\
                    made 3 13 a%d -\n\
                    made 3 14 tun4 10.0.0.1/8\n\
                    made 3 15 tun5 nonsense\n";
        let (by_uid, unreadable) = replay(text);
        // tun1 gone; a gone line names a device by index and name both.
        assert_eq!(by_uid[&1], vec![made_with(10, "tun0", &[])]);
        assert_eq!(
            by_uid[&2],
            vec![made_with(12, "tun2", &["10.1.0.0/16", "fd00::/8"])]
        );
        assert!(!by_uid.contains_key(&3), "a%d, host bits, junk: no record");
        assert_eq!(unreadable, 4);
        assert_eq!(
            replay("gone 1 tun0\n").1,
            0,
            "a gone line of nothing is no error"
        );
    }

    fn made_with(index: u32, name: &str, claims: &[&str]) -> Made {
        Made {
            index,
            name: name.into(),
            claims: claims.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn the_journal_is_compacted_once_mostly_gone_lines_and_not_before() {
        let dir = std::env::temp_dir().join(format!("tundra-compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(JOURNAL);
        let live: HashMap<u32, Vec<Made>> = [(1000, vec![made(10, "tun0")])].into();
        let mut journal = Journal::rewrite(path.clone(), &live).unwrap();
        let lines = |path: &Path| std::fs::read_to_string(path).unwrap().lines().count();
        assert_eq!(lines(&path), 1);
        // One live record: compacted past 2 * 1 + 1024 lines, not at them.
        let gone: Vec<String> = (0..1025)
            .map(|i| gone_line(&made_with(100 + i, "tunx", &[])))
            .collect();
        journal.forget(&gone, &live).unwrap();
        assert_eq!(lines(&path), 1026, "at the bound, kept");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().nth(1),
            Some("gone 100 tunx")
        );
        journal.forget(&gone[..1], &live).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "made 1000 10 tun0 10.0.0.10/32\n",
            "past it, rewritten"
        );
        // And counting again from there.
        journal.forget(&gone[..10], &live).unwrap();
        assert_eq!(lines(&path), 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn at_start_a_record_keeps_only_the_link_of_its_index_and_name() {
        let dir = std::env::temp_dir().join(format!("tundra-journal-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(JOURNAL),
            "made 1000 13 tun3 -\nmade 1000 14 tun4 -\nmade 1000 15 tun5 -\n",
        )
        .unwrap();
        // Index 13 is another device now; tun4's name is on index 99.
        let links = [
            link(13, "other", 1),
            link(99, "tun4", 0),
            link(15, "tun5", 0),
        ];
        let records = Records::open(&dir, &links).unwrap();
        assert_eq!(records.count(1000), 1, "tun5 only");
        assert!(records.holds(1000, 15, "tun5"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_that_cannot_be_read_is_an_error_not_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("tundra-unreadable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(JOURNAL)).unwrap();
        assert!(
            Records::open(&dir, &[]).is_err(),
            "a folder where the journal should be"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // Nor is one that is not text (and that could be rewritten).
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(JOURNAL), b"made 1000 13 tun\xff -\n").unwrap();
        assert!(Records::open(&dir, &[]).is_err(), "not UTF-8");
        std::fs::remove_dir_all(&dir).unwrap();
        // No journal yet is an empty one.
        std::fs::create_dir_all(&dir).unwrap();
        let records = Records::open(&dir, &[]).unwrap();
        assert!(records.is_empty());
        records.add(7, made(3, "tun3")).unwrap();
        records.add(8, made(4, "tun4")).unwrap();
        assert!(!records.is_empty());
        let mut names = records.names();
        names.sort();
        assert_eq!(names, ["tun3", "tun4"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
