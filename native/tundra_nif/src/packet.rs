//! Moving packets between a TUN fd and the BEAM, adding or removing the
//! fd's framing header so callers always see raw IP packets.
//!
//! Reads go through one reused per-thread buffer into a binary of the
//! packet's exact size (one copy, no MTU-sized allocation). Writes take
//! iodata and never flatten it into a new binary: a packet is written with
//! one `write` (small ones gathered in the same per-thread buffer) or one
//! `writev` straight from its binaries.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::time::Instant;

use rustler::{Binary, Env, NewBinary, OwnedBinary, Term};
use tundra_core::framing::MAX_HEADER_LEN;
use tundra_core::Framing;

/// Largest packet a TUN device can carry (its maximum MTU) plus header;
/// the same for a TAP device's frames.
const SCRATCH_LEN: usize = MAX_FRAME + MAX_HEADER_LEN;

/// Most pieces of iodata written without flattening; longer or deeper
/// iodata, or iodata with byte integers, is flattened by the VM first.
const MAX_PIECES: usize = 16;
const MAX_DEPTH: usize = 8;

/// Packets in several pieces up to this size are copied and written with
/// `write`; larger ones with `writev` (see `write`).
const COPY_LIMIT: usize = 2048;

thread_local! {
    // One read buffer per scheduler thread, reused for every packet: a
    // read costs one copy of the packet's own size, never an MTU-sized
    // allocation.
    // Room for two packets: `read_batch` reads its first two here.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 2 * SCRATCH_LEN]);
}

/// Reads one packet (at most `max_len` bytes of it, or all of it for 0;
/// the rest of a longer packet is discarded, as with a datagram socket)
/// into a binary of exactly that size.
pub fn read<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    framing: Framing,
    max_len: usize,
) -> io::Result<Binary<'a>> {
    read_with(fd, framing, |packet| to_binary(env, cut(packet, max_len)))
}

/// The first `max_len` bytes of `packet`, or all of it for 0 (`recv/3`'s
/// length).
pub fn cut(packet: &[u8], max_len: usize) -> &[u8] {
    match max_len {
        0 => packet,
        max => &packet[..packet.len().min(max)],
    }
}

/// Reads one packet into the per-thread buffer and hands `use_packet` its
/// bytes, framing header removed.
pub fn read_with<R>(
    fd: BorrowedFd,
    framing: Framing,
    use_packet: impl FnOnce(&[u8]) -> R,
) -> io::Result<R> {
    SCRATCH.with_borrow_mut(|buf| {
        let n = nix::unistd::read(fd, &mut buf[..SCRATCH_LEN])?;
        let packet = buf.get(framing.header_len()..n).unwrap_or_default();
        Ok(use_packet(packet))
    })
}

/// A binary of `env` holding a copy of `bytes`.
pub fn to_binary<'a>(env: Env<'a>, bytes: &[u8]) -> Binary<'a> {
    let mut out = NewBinary::new(env, bytes.len());
    out.as_mut_slice().copy_from_slice(bytes);
    out.into()
}

/// Size of the binary one `read_batch` reads into. A read is only made
/// while a largest possible packet still fits, so no packet is ever cut:
/// about 190 KiB of packets per batch (64 of 1400 bytes, 1024 small ones).
const BATCH_LEN: usize = 256 * 1024;

/// Reads up to `count` whole packets into one binary, one allocation for
/// the batch, and returns them as sub-binaries of it, shrunk to what was
/// read. The first two packets go through the scratch buffer, so a call
/// that finds nothing (the last of every drain) allocates nothing, and
/// one that finds a single packet (a ping, light traffic) allocates only
/// that packet's binary; from the third on they are read straight into
/// the batch, until `until`. `Err` only when no packet was read; an error
/// after some packets ends the batch, and the next read meets it.
pub fn read_batch<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    framing: Framing,
    count: usize,
    until: Instant,
) -> io::Result<Vec<Term<'a>>> {
    let header = framing.header_len();
    let packet_at = |at: usize, n: usize| (at + header.min(n), n - header.min(n));
    let first_two = SCRATCH.with_borrow_mut(|scratch| -> io::Result<_> {
        let first = nix::unistd::read(fd, &mut scratch[..SCRATCH_LEN])?;
        let (offset, len) = packet_at(0, first);
        if count == 1 {
            return Ok(FirstReads::One(to_binary(
                env,
                &scratch[offset..offset + len],
            )));
        }
        match nix::unistd::read(fd, &mut scratch[first..first + SCRATCH_LEN]) {
            Ok(second) => {
                let mut buf = OwnedBinary::new(BATCH_LEN);
                buf.as_mut_slice()[..first + second].copy_from_slice(&scratch[..first + second]);
                Ok(FirstReads::Two(buf, first, second))
            }
            // Only one was waiting (or the next read fails: it comes back
            // on the next call).
            Err(_) => Ok(FirstReads::One(to_binary(
                env,
                &scratch[offset..offset + len],
            ))),
        }
    })?;
    let (mut buf, first, second) = match first_two {
        FirstReads::Two(buf, first, second) => (buf, first, second),
        FirstReads::One(single) => return Ok(vec![single.to_term(env)]),
    };
    let mut spans = vec![packet_at(0, first), packet_at(first, second)];
    let mut used = first + second;
    while spans.len() < count && BATCH_LEN - used >= SCRATCH_LEN {
        if spans.len().is_multiple_of(crate::io::CLOCK_EVERY) && Instant::now() >= until {
            break;
        }
        match nix::unistd::read(fd, &mut buf.as_mut_slice()[used..]) {
            Ok(n) => {
                spans.push(packet_at(used, n));
                used += n;
            }
            Err(_) => break,
        }
    }
    // Shrinking keeps the data; if the VM would rather move it, the
    // batch keeps its full size until the packets are garbage.
    let _ = buf.realloc(used);
    let batch = buf.release(env);
    spans
        .into_iter()
        .map(|(offset, len)| {
            batch
                .make_subbinary(offset, len)
                .map(|packet| packet.to_term(env))
                .map_err(|_| io::Error::from_raw_os_error(libc::EIO))
        })
        .collect()
}

/// What `read_batch`'s first reads found: one packet (as its binary), or
/// two, already in the batch (their byte counts, headers included).
enum FirstReads<'a> {
    One(Binary<'a>),
    Two(OwnedBinary, usize, usize),
}

/// Largest packet `send` takes: an IP packet's length field cannot say
/// more (and a TUN device's MTU is at most this).
pub const MAX_PACKET: usize = 65535;

/// An Ethernet header: two addresses and the EtherType.
const ETHERNET_HEADER: usize = 14;
/// Largest frame `send` takes on a TAP device: a largest packet with its
/// Ethernet header and a VLAN tag.
pub const MAX_FRAME: usize = MAX_PACKET + ETHERNET_HEADER + 4;

/// Most terms of an iolist looked at before giving up on writing it
/// without flattening: bounds the work of one call whatever its input.
const MAX_VISITS: usize = 64;

/// A packet to write, borrowed from the terms that hold it.
pub struct Outgoing<'a> {
    pieces: [&'a [u8]; MAX_PIECES],
    count: usize,
    len: usize,
    visits: usize,
}

/// Why a packet is not written as it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Not iodata at all: raises `ArgumentError`.
    NotIodata,
    /// Iodata with byte integers, or more pieces or nesting than are
    /// written without flattening: the caller flattens it (the VM's
    /// `iolist_to_binary` yields, a NIF would not).
    NeedsFlattening,
    /// Longer than `MAX_PACKET` (a frame: than its largest).
    TooLong,
    /// Not a whole IPv4 or IPv6 packet (see `tundra_core::ip`), or a
    /// frame shorter than an Ethernet header.
    NotIp,
}

impl Unfit {
    /// The errno `send` reports for a packet refused as it is.
    pub fn errno(self) -> i32 {
        match self {
            Unfit::TooLong => libc::EMSGSIZE,
            _ => libc::EINVAL,
        }
    }
}

/// The packet `data` (iodata), checked for the kernel.
pub fn prepare(data: Term, framing: Framing) -> Result<Outgoing, Unfit> {
    let packet = Outgoing::from_iodata(data)?;
    packet.check(framing)?;
    Ok(packet)
}

/// Checks one packet given as bytes, as `Outgoing::check` does.
pub fn check_slice(packet: &[u8], framing: Framing) -> Result<(), Unfit> {
    let head = &packet[..packet.len().min(tundra_core::ip::HEAD_LEN)];
    check_head(head, packet.len(), framing)
}

/// Whether a packet of `len` bytes starting with `head` (its first
/// `ip::HEAD_LEN` bytes, or all of it) should be handed to the kernel.
fn check_head(head: &[u8], len: usize, framing: Framing) -> Result<(), Unfit> {
    if framing == Framing::Ethernet {
        // The kernel checks nothing else of a frame before it is received
        // on the TAP interface.
        return match len {
            len if len > MAX_FRAME => Err(Unfit::TooLong),
            len if len < ETHERNET_HEADER => Err(Unfit::NotIp),
            _ => Ok(()),
        };
    }
    if len > MAX_PACKET {
        return Err(Unfit::TooLong);
    }
    if tundra_core::ip::is_whole_packet(head, len) {
        Ok(())
    } else {
        Err(Unfit::NotIp)
    }
}

/// Writes one packet given as bytes, with its framing's header.
pub fn write_slice(fd: BorrowedFd, framing: Framing, packet: &[u8]) -> io::Result<()> {
    let header = framing.header_for(packet);
    let header = &header[..framing.header_len()];
    if header.is_empty() {
        nix::unistd::write(fd, packet)?;
    } else {
        nix::sys::uio::writev(fd, &[IoSlice::new(header), IoSlice::new(packet)])?;
    }
    Ok(())
}

impl<'a> Outgoing<'a> {
    /// Borrows the binaries of `data` (a binary or an iolist).
    pub fn from_iodata(data: Term<'a>) -> Result<Outgoing<'a>, Unfit> {
        let mut out = Outgoing {
            pieces: [&[]; MAX_PIECES],
            count: 0,
            len: 0,
            visits: 0,
        };
        out.gather(data, 0)?;
        Ok(out)
    }

    /// Collects the binaries of `term` in order.
    fn gather(&mut self, term: Term<'a>, depth: usize) -> Result<(), Unfit> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(Unfit::NeedsFlattening);
        }
        if term.is_binary() {
            let bin = Binary::from_term(term).map_err(|_| Unfit::NotIodata)?;
            if self.count == MAX_PIECES {
                return Err(Unfit::NeedsFlattening);
            }
            self.pieces[self.count] = bin.as_slice();
            self.count += 1;
            self.len += bin.len();
            return Ok(());
        }
        if term.is_number() {
            // A byte integer is iodata, but has no bytes to borrow.
            return Err(Unfit::NeedsFlattening);
        }
        if !term.is_list() {
            return Err(Unfit::NotIodata);
        }
        if depth == MAX_DEPTH {
            return Err(Unfit::NeedsFlattening);
        }
        let mut rest = term;
        loop {
            if rest.is_empty_list() {
                return Ok(());
            }
            match rest.list_get_cell() {
                Ok((head, tail)) => {
                    self.gather(head, depth + 1)?;
                    rest = tail;
                }
                // An improper tail may be a binary (iodata allows it).
                Err(_) => return self.gather(rest, depth + 1),
            }
        }
    }

    /// Whether the kernel should be handed this packet.
    pub fn check(&self, framing: Framing) -> Result<(), Unfit> {
        let mut head = [0u8; tundra_core::ip::HEAD_LEN];
        let mut at = 0;
        for piece in &self.pieces[..self.count] {
            let take = piece.len().min(head.len() - at);
            head[at..at + take].copy_from_slice(&piece[..take]);
            at += take;
            if at == head.len() {
                break;
            }
        }
        check_head(&head[..at], self.len, framing)
    }

    fn first_byte(&self) -> Option<u8> {
        self.pieces[..self.count]
            .iter()
            .find_map(|piece| piece.first().copied())
    }
}

/// Writes one packet, with the header its framing needs, in one system call.
///
/// A packet in one piece is written as it is. One in several pieces (with
/// a header, or iodata) is copied into the per-thread buffer and written
/// with `write` when it is small: the kernel's single-buffer path is
/// cheaper than `writev`'s, and copying a few hundred bytes costs less than
/// the difference. Larger ones go out with `writev`, uncopied.
pub fn write(fd: BorrowedFd, framing: Framing, packet: &Outgoing) -> io::Result<()> {
    let header_len = framing.header_len();
    let header = framing.header_for(&[packet.first_byte().unwrap_or(0)]);
    let header = &header[..header_len];
    let pieces = &packet.pieces[..packet.count];
    match (header.is_empty(), pieces) {
        (true, []) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        (true, [only]) => nix::unistd::write(fd, only)?,
        _ => {
            let len = header.len() + pieces.iter().map(|p| p.len()).sum::<usize>();
            if len <= COPY_LIMIT {
                SCRATCH.with_borrow_mut(|buf| {
                    let mut at = 0;
                    for piece in std::iter::once(header).chain(pieces.iter().copied()) {
                        buf[at..at + piece.len()].copy_from_slice(piece);
                        at += piece.len();
                    }
                    nix::unistd::write(fd, &buf[..at])
                })?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_PIECES + 1];
                let mut n = 0;
                for piece in std::iter::once(header).chain(pieces.iter().copied()) {
                    slices[n] = IoSlice::new(piece);
                    n += 1;
                }
                nix::sys::uio::writev(fd, &slices[..n])?
            }
        }
    };
    Ok(())
}
