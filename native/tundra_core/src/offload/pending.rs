//! The segments of a split super-packet that a read could not hand out
//! yet: they come first on the device's next read, so nothing is lost or
//! reordered whichever read function comes next; and how many segments
//! one `UDP_SEGMENT` batch takes.

use std::collections::VecDeque;

use super::Superpacket;

/// Most segments, and bytes, one batch (`recv_segments`) hands out: one
/// `UDP_SEGMENT` send takes at most 64 datagrams, of at most 65,507 bytes
/// in all over IPv4.
pub const MAX_BATCH_SEGMENTS: usize = 64;
pub const MAX_BATCH_BYTES: usize = 65_000;

/// Segments waiting, back to back in one buffer, equal in size but for
/// the last.
#[derive(Debug, Default)]
pub struct Pending {
    bytes: Vec<u8>,
    spans: VecDeque<(usize, usize)>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The next waiting segment, handed to `take`.
    pub fn pop<R>(&mut self, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (at, len) = self.spans.pop_front()?;
        let result = take(&self.bytes[at..at + len]);
        if self.spans.is_empty() {
            self.bytes.clear();
        }
        Some(result)
    }

    /// The waiting segments that one batch takes (see `batch_extent`),
    /// handed to `take` back to back with the size of each but the last.
    pub fn take_batch<R>(&mut self, take: impl FnOnce(&[u8], usize) -> R) -> Option<R> {
        let &(start, size) = self.spans.front()?;
        let (taken, bytes) = batch_extent(self.spans.iter().map(|&(_, len)| len));
        let result = take(&self.bytes[start..start + bytes], size);
        self.spans.drain(..taken);
        if self.spans.is_empty() {
            self.bytes.clear();
        }
        Some(result)
    }

    /// Keeps segments `from..` of `sp` (what was there is dropped: it is
    /// only ever called once the waiting ones were handed out).
    pub fn keep(&mut self, sp: &Superpacket, from: usize) {
        self.bytes.clear();
        self.spans.clear();
        for i in from..sp.count() {
            let at = self.bytes.len();
            let len = sp.segment_len(i);
            self.bytes.resize(at + len, 0);
            sp.write(i, &mut self.bytes[at..]);
            self.spans.push_back((at, len));
        }
    }
}

/// How many segments of these lengths (from the first) one batch takes,
/// and their bytes: at most `MAX_BATCH_SEGMENTS` and `MAX_BATCH_BYTES`,
/// but always the first.
pub fn batch_extent(lens: impl Iterator<Item = usize>) -> (usize, usize) {
    let mut taken = 0;
    let mut bytes = 0;
    for len in lens.take(MAX_BATCH_SEGMENTS) {
        if taken > 0 && bytes + len > MAX_BATCH_BYTES {
            break;
        }
        bytes += len;
        taken += 1;
    }
    (taken, bytes)
}
