//! Steering a UDP port's handshake messages to a socket of their own.
//!
//! Two sockets bound to one port with `SO_REUSEPORT` form a group, and
//! a classic BPF program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`)
//! picks the socket of each datagram: the kernel runs it with the
//! datagram's payload at offset 0 and takes its result as an index into
//! the group, in the order the sockets were bound. Transport data (type
//! 4) goes to the first, everything else to the second. A flood of
//! handshake messages then fills only the second socket's queue, which
//! the kernel drops from when it is full, and never delays or drops data
//! (as the kernel's own WireGuard keeps a queue for handshakes).
//!
//! The only `unsafe` of this crate: one `setsockopt` of a struct that
//! points at the program.

use std::os::fd::RawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// A classic BPF instruction (linux/filter.h `struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// linux/filter.h `struct sock_fprog`.
#[repr(C)]
struct Program {
    len: u16,
    filter: *const Instruction,
}

// linux/bpf_common.h
const BPF_LD: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

/// The message type of transport data.
const TRANSPORT_DATA: u32 = 4;

/// The program: the first byte of the payload; 4 is socket 0, anything
/// else socket 1.
const STEER: [Instruction; 4] = [
    Instruction {
        code: BPF_LD | BPF_B | BPF_ABS,
        jt: 0,
        jf: 0,
        k: 0,
    },
    Instruction {
        code: BPF_JMP | BPF_JEQ | BPF_K,
        jt: 0,
        jf: 1,
        k: TRANSPORT_DATA,
    },
    Instruction {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: 0,
    },
    Instruction {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: 1,
    },
];

/// Attaches the steering program to the reuseport group of socket `fd`
/// (an fd the caller holds open); the errno if the kernel refuses.
pub fn attach(fd: RawFd) -> Result<(), i32> {
    let program = Program {
        len: STEER.len() as u16,
        filter: STEER.as_ptr(),
    };
    // SAFETY: the kernel reads `program` (of the size given) and the
    // `len` instructions it points at, all of which live through the
    // call; it keeps a copy, not the pointer. A bad fd is an error
    // (EBADF/ENOTSOCK), not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&program as *const Program).cast(),
            std::mem::size_of::<Program>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    }
}
