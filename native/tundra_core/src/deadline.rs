//! A point in time a whole exchange must be done by: every blocking step
//! gets what is left of it, so no step (connect, each read) can stretch
//! the whole. Used by the client of the server and by the server itself.
#![forbid(unsafe_code)]

use std::io;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

/// What stands for "no deadline": an `Instant` cannot be unbounded.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout.min(FOREVER))
    }

    /// `timeout_ms` milliseconds from now; `None` is no deadline (a year).
    pub fn after_ms(timeout_ms: Option<u64>) -> Deadline {
        Deadline::after(timeout_ms.map_or(FOREVER, Duration::from_millis))
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    /// What is left, if anything.
    pub fn left(self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// What is left, or `ETIMEDOUT`.
    pub fn left_or_timeout(self) -> io::Result<Duration> {
        self.left()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ETIMEDOUT))
    }

    /// Bounds the stream's next reads and writes by what is left
    /// (`ETIMEDOUT` once nothing is).
    pub fn apply(self, stream: &UnixStream) -> io::Result<()> {
        let left = self.left_or_timeout()?;
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_is_a_year_away() {
        let left = Deadline::after_ms(None)
            .instant()
            .saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(364 * 24 * 3600), "{left:?}");
        assert!(left <= FOREVER);
        // A longer timeout is cut to it, not an overflow.
        let far = Deadline::after(Duration::MAX).instant();
        assert!(far.saturating_duration_since(Instant::now()) <= FOREVER);
    }

    #[test]
    fn what_is_left_runs_out() {
        assert!(Deadline::after(Duration::from_secs(5)).left().is_some());
        let past = Deadline::after(Duration::ZERO);
        assert_eq!(past.left(), None);
        assert_eq!(
            past.left_or_timeout().map_err(|e| e.raw_os_error()),
            Err(Some(libc::ETIMEDOUT))
        );
        // No deadline is a long one, not an overflow.
        assert!(Deadline::after_ms(None).left() > Some(Duration::from_secs(3600)));
    }
}
