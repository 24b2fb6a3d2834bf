//! Reads of offload devices (`Framing::VirtioNet`): every read starts with
//! a `virtio_net_hdr`, and may be a super-packet, which is split here into
//! ordinary packets (`tundra_core::offload`). (Writes carry a header
//! too, which `Framing::VirtioNet` gives them; runs of TCP segments go out
//! with `platform::write_run`.)
//!
//! A super-packet's segments that a call cannot hand out wait in the
//! device's `Pending` and come first on its next read, so nothing is lost
//! or reordered whichever read function is used.

use std::cell::RefCell;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use rustler::{Binary, Env, NewBinary, OwnedBinary, Term};
use tundra_core::offload::{self, batch_extent, Pending, Superpacket, VnetHdr, VNET_HDR_LEN};

use crate::packet::to_binary;

/// Largest read: a header and a 64 KB super-packet.
const READ_LEN: usize = VNET_HDR_LEN + 65535;

/// Bytes of one batch read (`recv_many`, active mode): room for a few
/// super-packets' segments.
const BATCH_LEN: usize = 512 * 1024;

thread_local! {
    // One read buffer per scheduler thread: a super-packet is read here
    // and split into its destination.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_LEN]);
}

/// What one read found.
enum Read {
    /// An ordinary packet, its checksum finished: `scratch[at..at + len]`.
    Packet(usize, usize),
    /// A super-packet, in `scratch` after its header.
    Super(VnetHdr, usize),
}

/// Reads one packet into `buf`; drops (and reads past) what cannot be
/// made ordinary, which only a broken kernel would send.
fn read_into(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Read> {
    loop {
        let n = nix::unistd::read(fd, buf)?;
        let Some(hdr) = VnetHdr::parse(&buf[..n]) else {
            continue;
        };
        let packet = &mut buf[VNET_HDR_LEN..n];
        if hdr.is_gso() {
            return Ok(Read::Super(hdr, n - VNET_HDR_LEN));
        }
        if offload::complete_checksum(&hdr, packet).is_ok() {
            return Ok(Read::Packet(VNET_HDR_LEN, n - VNET_HDR_LEN));
        }
    }
}

/// One packet (its first `max_len` bytes, or all for 0): a waiting
/// segment, else the next read's packet or first segment.
pub fn read<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    pending: &mut Pending,
    max_len: usize,
) -> io::Result<Binary<'a>> {
    let cut = |packet: &[u8]| to_binary(env, crate::packet::cut(packet, max_len));
    if let Some(packet) = pending.pop(cut) {
        return Ok(packet);
    }
    SCRATCH.with_borrow_mut(|scratch| loop {
        match read_into(fd, scratch)? {
            Read::Packet(at, len) => return Ok(cut(&scratch[at..at + len])),
            Read::Super(hdr, len) => {
                let body = &scratch[VNET_HDR_LEN..VNET_HDR_LEN + len];
                if let Ok(sp) = Superpacket::new(&hdr, body) {
                    pending.keep(&sp, 0);
                    if let Some(packet) = pending.pop(cut) {
                        return Ok(packet);
                    }
                }
            }
        }
    })
}

/// Up to `count` packets in one binary (as sub-binaries of it): waiting
/// segments first, then reads until the device has none, `until` passes
/// or the batch is full. Segments that do not fit wait in `pending`.
/// `Err` only when nothing was read.
pub fn read_batch<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    pending: &mut Pending,
    count: usize,
    until: Instant,
) -> io::Result<Vec<Term<'a>>> {
    let mut batch = OwnedBinary::new(BATCH_LEN);
    let out = batch.as_mut_slice();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut used = 0;
    while spans.len() < count {
        let moved = pending.pop(|segment| {
            let len = segment.len();
            out[used..used + len].copy_from_slice(segment);
            len
        });
        match moved {
            Some(len) => {
                spans.push((used, len));
                used += len;
            }
            None => break,
        }
    }
    // Reads, each with room for a whole read.
    while spans.len() < count && out.len() - used >= READ_LEN {
        if !spans.is_empty() && Instant::now() >= until {
            break;
        }
        let read = read_into(fd, &mut out[used..used + READ_LEN]);
        match read {
            Ok(Read::Packet(at, len)) => {
                spans.push((used + at, len));
                used += at + len;
            }
            Ok(Read::Super(hdr, len)) => {
                let stopped = SCRATCH.with_borrow_mut(|scratch| {
                    let body = &mut scratch[..len];
                    body.copy_from_slice(&out[used + VNET_HDR_LEN..used + VNET_HDR_LEN + len]);
                    let Ok(sp) = Superpacket::new(&hdr, body) else {
                        return false;
                    };
                    let mut i = 0;
                    while i < sp.count() && spans.len() < count {
                        let len = sp.segment_len(i);
                        if used + len > out.len() {
                            break;
                        }
                        sp.write(i, &mut out[used..]);
                        spans.push((used, len));
                        used += len;
                        i += 1;
                    }
                    if i < sp.count() {
                        pending.keep(&sp, i);
                        return true;
                    }
                    false
                });
                if stopped {
                    break;
                }
            }
            Err(e) if spans.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    if spans.is_empty() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let _ = batch.realloc(used);
    let batch = batch.release(env);
    spans
        .into_iter()
        .map(|(at, len)| {
            batch
                .make_subbinary(at, len)
                .map(|packet| packet.to_term(env))
                .map_err(|_| io::Error::from_raw_os_error(libc::EIO))
        })
        .collect()
}

/// A super-packet's segments laid back to back in one binary, and the
/// length of each but the last (what `UDP_SEGMENT` takes): waiting
/// segments, else the next read's (an ordinary packet comes alone, its
/// length as the size). At most `MAX_BATCH_SEGMENTS` segments and
/// `MAX_BATCH_BYTES`; the rest wait in `pending`.
pub fn read_segments<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    pending: &mut Pending,
) -> io::Result<(Binary<'a>, usize)> {
    if let Some(batch) = pending.take_batch(|bytes, size| (to_binary(env, bytes), size)) {
        return Ok(batch);
    }
    SCRATCH.with_borrow_mut(|scratch| loop {
        match read_into(fd, scratch)? {
            Read::Packet(at, len) => return Ok((to_binary(env, &scratch[at..at + len]), len)),
            Read::Super(hdr, len) => {
                let body = &scratch[VNET_HDR_LEN..VNET_HDR_LEN + len];
                let Ok(sp) = Superpacket::new(&hdr, body) else {
                    continue;
                };
                // Split straight into the batch's binary; what does not
                // fit waits.
                let (count, bytes) = batch_extent((0..sp.count()).map(|i| sp.segment_len(i)));
                let mut batch = NewBinary::new(env, bytes);
                let mut at = 0;
                for i in 0..count {
                    sp.write(i, &mut batch.as_mut_slice()[at..]);
                    at += sp.segment_len(i);
                }
                if count < sp.count() {
                    pending.keep(&sp, count);
                }
                return Ok((batch.into(), sp.segment_size()));
            }
        }
    })
}
