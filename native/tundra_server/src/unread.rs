//! Replies whose device fds their clients have not read by the request's
//! deadline, watched by one thread until they are.
//!
//! Until a client reads (or closes its end), the fds of its reply stay in
//! flight, charged to the server by the kernel (see `inflight`), and the
//! server must keep its end of the connection open: closing it would not
//! take them back. A client thread waits for that up to the request's
//! deadline; after it, the connection moves here, giving back its slot
//! and its thread, while its fds stay counted to the user (`Reserved`)
//! until the reply is read. How many connections a user can leave here
//! is bounded by the fds it may have in flight: each holds at least one.

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::inflight::Reserved;

/// How often the watcher looks at what is unread.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// A reply left unread: the connection, and the fds it counts.
struct Left {
    stream: UnixStream,
    _reserved: Reserved,
}

#[derive(Default)]
pub struct Unread {
    left: Mutex<Vec<Left>>,
}

impl Unread {
    /// Starts the watcher thread; it runs as long as the server.
    pub fn start() -> std::io::Result<Arc<Unread>> {
        let unread = Arc::new(Unread::default());
        let watched = Arc::clone(&unread);
        std::thread::Builder::new()
            .name("tundra_unread".into())
            .spawn(move || loop {
                std::thread::sleep(LOOK_EVERY);
                watched.look();
            })?;
        Ok(unread)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Left>> {
        // Only whole values are moved under the lock; poisoning is harmless.
        self.left.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `stream`, whose reply carries the fds `reserved` counts,
    /// until its client has read the reply or gone.
    pub fn keep(&self, stream: UnixStream, reserved: Reserved) {
        self.lock().push(Left {
            stream,
            _reserved: reserved,
        });
    }

    /// Lets go of the replies that were read (or whose client went):
    /// their connections close and their fds are no longer counted.
    fn look(&self) {
        self.lock().retain(|left| still_unread(&left.stream));
    }

    /// Replies kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Whether the client has yet to read what was sent on `stream` (an
/// error means the stream is gone, and what it held with it).
pub fn still_unread(stream: &UnixStream) -> bool {
    crate::platform::unread_bytes(stream).unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inflight::InFlight;
    use std::io::{Read, Write};

    #[test]
    fn a_reply_is_let_go_once_read_or_abandoned_and_its_fds_with_it() {
        let in_flight = InFlight::new(8, 100);
        let unread = Unread::default();
        let (read_later, mut reader) = UnixStream::pair().expect("pair");
        let (abandoned, gone) = UnixStream::pair().expect("pair");
        for stream in [&read_later, &abandoned] {
            (&*stream).write_all(b"reply").expect("write");
        }
        unread.keep(read_later, in_flight.reserve(1000, 3).expect("reserve"));
        unread.keep(abandoned, in_flight.reserve(1000, 2).expect("reserve"));
        unread.look();
        assert_eq!((unread.len(), in_flight.unread(1000)), (2, 5));
        drop(gone);
        unread.look();
        assert_eq!((unread.len(), in_flight.unread(1000)), (1, 3));
        let mut reply = [0u8; 5];
        reader.read_exact(&mut reply).expect("read");
        unread.look();
        assert_eq!((unread.len(), in_flight.unread(1000)), (0, 0));
    }
}
