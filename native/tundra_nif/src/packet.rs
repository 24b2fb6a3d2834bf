//! Moving one packet between a TUN fd and the BEAM, adding or removing the
//! fd's framing header so callers always see raw IP packets.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use rustler::{Binary, Env, NewBinary};
use tundra_core::framing::MAX_HEADER_LEN;
use tundra_core::Framing;

/// Largest packet a TUN device can carry (its maximum MTU) plus header.
const SCRATCH_LEN: usize = 65535 + MAX_HEADER_LEN;

thread_local! {
    // One read buffer per scheduler thread, reused for every packet: a
    // read costs one copy of the packet's own size, never an MTU-sized
    // allocation.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// Reads one packet (at most `max_len` bytes of it; the rest of a longer
/// packet is discarded, as with a datagram socket) into a binary of exactly
/// that size.
pub fn read<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    framing: Framing,
    max_len: usize,
) -> io::Result<Binary<'a>> {
    SCRATCH.with_borrow_mut(|buf| {
        let n = nix::unistd::read(fd, buf)?;
        let header = framing.header_len();
        let packet = buf.get(header..n).unwrap_or_default();
        let packet = &packet[..packet.len().min(max_len)];
        let mut out = NewBinary::new(env, packet.len());
        out.as_mut_slice().copy_from_slice(packet);
        Ok(out.into())
    })
}

/// Writes one packet, with the header its framing needs.
pub fn write(fd: BorrowedFd, framing: Framing, packet: &[u8]) -> io::Result<()> {
    let header_len = framing.header_len();
    if header_len == 0 {
        nix::unistd::write(fd, packet)?;
    } else {
        let header = framing.header_for(packet);
        let parts = [IoSlice::new(&header[..header_len]), IoSlice::new(packet)];
        nix::sys::uio::writev(fd, &parts)?;
    }
    Ok(())
}
