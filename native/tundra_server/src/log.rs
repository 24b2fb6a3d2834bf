//! The server's log: one line per event on stderr, written by a thread of
//! its own so that no serving thread ever waits for stderr (a full pipe, a
//! stopped reader) or fails with it (a closed pipe: writes fail quietly).
//!
//! Lines are rate-limited (a burst, then a steady rate; what is left out is
//! counted and reported with the next line that goes out), and text that
//! came from a client is written through [`Untrusted`], which escapes it.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines that may go out at once, and per second after that.
const BURST: f64 = 200.0;
const PER_SECOND: f64 = 50.0;
/// Lines waiting for the writer; beyond this, lines are left out.
const QUEUE: usize = 1024;

struct Log {
    queue: SyncSender<String>,
    bucket: Mutex<Bucket>,
    /// Lines left out since the last that went out.
    left_out: AtomicU64,
    queued: AtomicU64,
    written: AtomicU64,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// Takes a token if there is one at time `now`.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.refilled).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + earned).min(BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

static LOG: OnceLock<Log> = OnceLock::new();

fn global() -> &'static Log {
    LOG.get_or_init(|| {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        // Without a writer thread lines are queued and then left out; the
        // server itself goes on either way.
        let _ = std::thread::Builder::new()
            .name("tundra_log".into())
            .spawn(move || write_lines(lines));
        Log::new(queue)
    })
}

fn write_lines(lines: Receiver<String>) {
    let mut stderr = std::io::stderr();
    for line in lines {
        // A closed or broken stderr loses the line, nothing else.
        let _ = stderr.write_all(line.as_bytes());
        if let Some(log) = LOG.get() {
            log.written.fetch_add(1, Relaxed);
        }
    }
}

/// Logs one line (prefixed with the server's name). Never blocks and never
/// fails; rate-limited.
pub fn line(args: fmt::Arguments) {
    global().line(args, Instant::now());
}

impl Log {
    fn new(queue: SyncSender<String>) -> Log {
        Log {
            queue,
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
            }),
            left_out: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Waits up to `limit` until every line queued so far is written.
    fn wait_written(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.written.load(Relaxed) < self.queued.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One line at `now`: queued for the writer with a note of the lines
    /// left out before it, or counted as left out (past the rate, or the
    /// queue full: then with the ones it was to report).
    fn line(&self, args: fmt::Arguments, now: Instant) {
        let admitted = self
            .bucket
            .lock()
            .map(|mut bucket| bucket.take(now))
            .unwrap_or(false);
        if !admitted {
            self.left_out.fetch_add(1, Relaxed);
            return;
        }
        let left_out = self.left_out.swap(0, Relaxed);
        let mut text = String::new();
        if left_out > 0 {
            text.push_str(&format!(
                "tundra_server: ({left_out} log lines left out: too many)\n"
            ));
        }
        text.push_str(&format!("tundra_server: {args}\n"));
        match self.queue.try_send(text) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.left_out.fetch_add(1 + left_out, Relaxed);
            }
        }
    }
}

/// Waits up to `limit` for queued lines to be written (before exiting).
pub fn flush(limit: Duration) {
    if let Some(log) = LOG.get() {
        log.wait_written(limit);
    }
}

/// `log!("uid={} ...", ...)`: one rate-limited line.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;

/// Text a client chose (a device name, ...), displayed so that it cannot
/// forge a line or a field: every byte outside printable ASCII, and the
/// space, `\` and `=`, is written as `\xNN`.
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.bytes() {
            if byte.is_ascii_graphic() && byte != b'\\' && byte != b'=' {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_break_a_line_or_a_field() {
        let forged = "tun0\n\u{1b}[31mtundra_server: uid=0 device=x created";
        let shown = Untrusted(forged).to_string();
        assert_eq!(
            shown,
            "tun0\\x0a\\x1b[31mtundra_server:\\x20uid\\x3d0\\x20device\\x3dx\\x20created"
        );
        assert!(shown.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(Untrusted("tun%d").to_string(), "tun%d");
        assert_eq!(Untrusted("é").to_string(), "\\xc3\\xa9");
    }

    #[test]
    fn the_bucket_admits_a_burst_then_a_rate() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: BURST,
            refilled: start,
        };
        let burst = (0..1000).filter(|_| bucket.take(start)).count();
        assert_eq!(burst, BURST as usize);
        let later = start + Duration::from_secs(2);
        let refilled = (0..1000).filter(|_| bucket.take(later)).count();
        assert_eq!(refilled, (2.0 * PER_SECOND) as usize);
    }

    #[test]
    fn flushing_waits_for_the_writer_to_write_what_was_queued() {
        let (queue, lines) = mpsc::sync_channel(8);
        let log = std::sync::Arc::new(Log::new(queue));
        let now = Instant::now();
        for text in ["one", "two", "three"] {
            log.line(format_args!("{text}"), now);
        }
        // A slow writer: flushing must wait for it, however slow.
        let writer = {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let _ = lines.recv();
                    std::thread::sleep(Duration::from_millis(30));
                    log.written.fetch_add(1, Relaxed);
                }
            })
        };
        log.wait_written(Duration::from_secs(60));
        assert_eq!(log.written.load(Relaxed), 3);
        let _ = writer.join();
    }

    #[test]
    fn lines_left_out_are_counted_and_reported_with_the_next_that_goes_out() {
        let (queue, written) = mpsc::sync_channel(2);
        let log = Log::new(queue);
        let now = Instant::now();
        log.line(format_args!("one"), now);
        assert_eq!(
            written.try_recv().unwrap(),
            "tundra_server: one\n",
            "no note"
        );
        // The queue full: the third line and nothing else left out.
        log.line(format_args!("two"), now);
        log.line(format_args!("three"), now);
        log.line(format_args!("four"), now);
        assert_eq!(log.left_out.load(Relaxed), 1);
        assert_eq!(log.queued.load(Relaxed), 3);
        // Each of a flood is left out, past the queue's room or the rate.
        for _ in 0..BURST as usize {
            log.line(format_args!("flood"), now);
        }
        let flooded = log.left_out.load(Relaxed);
        assert_eq!(flooded, 1 + BURST as u64);
        // Room again: a line that cannot be queued gives back its note's count
        // with its own.
        written.try_recv().unwrap();
        written.try_recv().unwrap();
        let later = now + Duration::from_secs(1);
        log.line(format_args!("five"), later);
        assert_eq!(
            written.try_recv().unwrap(),
            format!(
                "tundra_server: ({flooded} log lines left out: too many)\ntundra_server: five\n"
            )
        );
        log.line(format_args!("six"), later);
        log.line(format_args!("seven"), later);
        log.line(format_args!("eight"), later);
        assert_eq!(log.left_out.load(Relaxed), 1);
        log.left_out.store(5, Relaxed);
        log.line(format_args!("nine"), later);
        assert_eq!(
            log.left_out.load(Relaxed),
            6,
            "its own and the five it carried"
        );
    }
}
