//! Packet I/O on a device, in the style of OTP's `:socket`: `recv`,
//! `recv_many`, `send`, `send_many`, the tunnel's `recv_segments` and
//! `send_segments`, and `cancel`. Every call ends in one `Done`, rendered
//! by `device_io`: a reply, a select armed for the owner, or an error.
//! No call works for more than `CALL_BUDGET` (each writes or reads at
//! least one packet first) and each reports its time to the VM.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};
use tundra_core::offload::{self, Pending};
use tundra_core::{platform, Framing};

use crate::packet::{self, Unfit};
use crate::resource::{Direction, Owned};
use crate::terms::{with_owned, Failure};
use crate::{atoms, vnet};

/// How long one call may go on reading or writing packets (a NIF should
/// return within about a millisecond).
pub const CALL_BUDGET: Duration = Duration::from_micros(500);

/// Packets moved between looks at the clock: a packet takes a few
/// microseconds of system call, the clock tens of nanoseconds, which per
/// packet still showed in profiles.
pub const CLOCK_EVERY: usize = 8;

/// Most packets one `recv_many` call reads.
const MAX_BATCH: usize = 1024;

/// The longest `busy_poll` a device may have: with a call's own budget it
/// stays within about a millisecond of a scheduler's time.
pub const MAX_BUSY_POLL: Duration = Duration::from_micros(200);

/// Runs `read` and, while it finds nothing (`WouldBlock`), again until
/// `busy_poll` has passed: packets that come meanwhile are read without
/// arming a select, and without the wakeups a select costs (the VM's poll
/// thread, then a scheduler). The time is the scheduler's, spent looking.
pub fn polling<T>(busy_poll: Duration, mut read: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let would_block =
        |result: &io::Result<T>| matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    let first = read();
    if busy_poll.is_zero() || !would_block(&first) {
        return first;
    }
    let until = Instant::now() + busy_poll.min(MAX_BUSY_POLL);
    loop {
        // A few hundred nanoseconds between looks: the look is a system call.
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        let again = read();
        if !would_block(&again) || Instant::now() >= until {
            return again;
        }
    }
}

/// How one I/O call on a device ended, before it is rendered.
pub enum Done<'a> {
    /// Finished: this term is the reply.
    Reply(Term<'a>),
    /// The fd would block: a select is armed and `{:select, info}` (or
    /// `{:select, {info, rest}}` with the unsent `rest`) returned.
    WouldBlock(Option<Term<'a>>),
    /// A system error: `{:error, posix}` (or `{:error, {posix, rest}}`).
    Failed(io::Error, Option<Term<'a>>),
    /// A packet that is not iodata: raises `ArgumentError`.
    NotIodata,
}

impl<'a> Done<'a> {
    fn from_io(result: io::Result<Term<'a>>) -> Done<'a> {
        match result {
            Ok(reply) => Done::Reply(reply),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Done::WouldBlock(None),
            Err(e) => Done::Failed(e, None),
        }
    }

    /// How a write of the packets from `rest` on ended.
    fn from_write(result: io::Error, rest: Term<'a>) -> Done<'a> {
        if result.kind() == io::ErrorKind::WouldBlock {
            Done::WouldBlock(Some(rest))
        } else {
            Done::Failed(result, Some(rest))
        }
    }
}

/// Runs `op` on the caller's open device and renders what it came to:
/// the one place I/O results become terms.
fn device_io<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    direction: Direction,
    op: impl for<'r> FnOnce(&mut Owned<'r, 'a>) -> Done<'a>,
) -> NifResult<Term<'a>> {
    with_owned(env, dev, |mut owned| match op(&mut owned) {
        Done::Reply(reply) => Ok(reply),
        Done::WouldBlock(rest) => {
            let info = arm_select(env, &mut owned, direction)?;
            Ok(match rest {
                None => (atoms::select(), info).encode(env),
                Some(rest) => (atoms::select(), (info, rest)).encode(env),
            })
        }
        Done::Failed(err, None) => Err(Failure::Posix(err)),
        Done::Failed(err, Some(rest)) => Err(Failure::PosixWithRest(err, rest)),
        Done::NotIodata => Err(Failure::BadArg),
    })
}

/// Arms a select for `direction`: the select_info, where the select
/// message is `{:"$socket", {:"$tundra", ref}, :select, handle}`; `:eio`
/// if the VM refused it.
fn arm_select<'a>(
    env: Env<'a>,
    owned: &mut Owned<'_, 'a>,
    direction: Direction,
) -> Result<Term<'a>, Failure<'a>> {
    let handle = env.make_ref();
    let device = (atoms::dollar_tundra(), owned.term());
    let msg = (atoms::dollar_socket(), device, atoms::select(), handle).encode(env);
    if !owned.select(direction, msg, handle.encode(env)) {
        return Err(Failure::errno(libc::EIO));
    }
    Ok((atoms::select_info(), op_atom(direction), handle).encode(env))
}

fn op_atom(direction: Direction) -> Atom {
    match direction {
        Direction::Read => atoms::recv(),
        Direction::Write => atoms::send(),
    }
}

/// Tells the VM how much of a timeslice a call used, so that a process
/// making many calls in a row is preempted as if it had run Erlang code
/// for as long.
pub fn report_time(env: Env, since: Instant) {
    let percent = since.elapsed().as_micros() / 10; // 1 ms is a whole slice
    let _ = rustler::schedule::consume_timeslice(
        env,
        i32::try_from(percent.clamp(1, 100)).unwrap_or(100),
    );
}

/// Passive reads of an active device are refused, as `:gen_udp` does:
/// the reader process owns its reads until it is made passive.
fn refuse_if_active<'a>(owned: &Owned) -> Option<Done<'a>> {
    owned
        .is_active()
        .then(|| Done::Failed(io::Error::from_raw_os_error(libc::EINVAL), None))
}

/// Reads up to `count` whole packets of a device in one batch (one binary
/// for all, handed out as sub-binaries), whatever its framing, until the
/// device has no more or `until` passes: what `recv_many` and active
/// delivery both read with. `Err` only when nothing was read.
pub fn read_batch<'a>(
    env: Env<'a>,
    fd: BorrowedFd,
    framing: Framing,
    pending: &mut Pending,
    count: usize,
    until: Instant,
) -> io::Result<Vec<Term<'a>>> {
    match framing {
        Framing::VirtioNet => vnet::read_batch(env, fd, pending, count, until),
        framing => packet::read_batch(env, fd, framing, count, until),
    }
}

#[rustler::nif]
fn recv<'a>(env: Env<'a>, dev: Term<'a>, max_len: usize) -> NifResult<Term<'a>> {
    device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let busy_poll = owned.busy_poll();
        let packet = match owned.framing() {
            Framing::VirtioNet => {
                let (fd, pending) = owned.fd_and_pending();
                polling(busy_poll, || vnet::read(env, fd, pending, max_len))
            }
            framing => {
                let fd = owned.fd();
                polling(busy_poll, || packet::read(env, fd, framing, max_len))
            }
        };
        Done::from_io(packet.map(|bin| (atoms::ok(), bin).encode(env)))
    })
}

/// Reads up to `count` whole packets, stopping early when the fd has no
/// more or the call's time is up: `{:ok, [packet, ...]}` (at least one),
/// or a select when there is none. An error after some packets were read
/// returns those packets; the error comes back on the next call.
#[rustler::nif]
fn recv_many<'a>(env: Env<'a>, dev: Term<'a>, count: usize) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let framing = owned.framing();
        let busy_poll = owned.busy_poll();
        let (fd, pending) = owned.fd_and_pending();
        let until = started + CALL_BUDGET;
        let batch = polling(busy_poll, || {
            read_batch(env, fd, framing, pending, count.min(MAX_BATCH), until)
        });
        Done::from_io(batch.map(|packets| (atoms::ok(), packets).encode(env)))
    });
    report_time(env, started);
    result
}

/// Writes one packet: `:ok`, a select, `{:error, reason}`, or `:flatten`
/// when the iodata must be flattened first (done by the caller, which
/// the VM lets yield).
#[rustler::nif]
fn send<'a>(env: Env<'a>, dev: Term<'a>, data: Term<'a>) -> NifResult<Term<'a>> {
    device_io(env, dev, Direction::Write, |owned| {
        match packet::prepare(data, owned.framing()) {
            Ok(packet) => Done::from_io(
                packet::write(owned.fd(), owned.framing(), &packet)
                    .map(|()| atoms::ok().encode(env)),
            ),
            Err(Unfit::NeedsFlattening) => Done::Reply(atoms::flatten().encode(env)),
            Err(Unfit::NotIodata) => Done::NotIodata,
            Err(refused) => Done::Failed(io::Error::from_raw_os_error(refused.errno()), None),
        }
    })
}

/// Writes packets of a list in order, for as long as the call's time
/// allows: `:ok` when all are written, `{:more, rest}` when time is up
/// (the caller calls again, after the VM has had its turn), a select or
/// an error with the unsent `rest`, or `{:flatten, rest}` when the first
/// of `rest` must be flattened first.
#[rustler::nif]
fn send_many<'a>(env: Env<'a>, dev: Term<'a>, packets: Term<'a>) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Write, |owned| {
        let mut rest = packets;
        let mut wrote = 0usize;
        loop {
            let Ok((head, tail)) = rest.list_get_cell() else {
                return if rest.is_empty_list() {
                    Done::Reply(atoms::ok().encode(env))
                } else {
                    Done::NotIodata
                };
            };
            // Something is written before the clock counts, so a caller
            // that calls again always gets further.
            if wrote > 0 && wrote.is_multiple_of(CLOCK_EVERY) && started.elapsed() >= CALL_BUDGET {
                return Done::Reply((atoms::more(), rest).encode(env));
            }
            wrote += 1;
            // On an offload device, consecutive TCP segments of one flow
            // (each a whole binary) go out as one super-packet.
            let run = match owned.framing() {
                Framing::VirtioNet => whole_binary(head)
                    .and_then(|first| offload::run_from(first, leading_binaries(tail))),
                _ => None,
            };
            if let Some(run) = run {
                match platform::write_run(owned.fd(), &run) {
                    Ok(()) => {
                        rest = skip(rest, run.len());
                        continue;
                    }
                    Err(e) => return Done::from_write(e, rest),
                }
            }
            let packet = match packet::prepare(head, owned.framing()) {
                Ok(packet) => packet,
                Err(Unfit::NeedsFlattening) => {
                    return Done::Reply((atoms::flatten(), rest).encode(env))
                }
                Err(Unfit::NotIodata) => return Done::NotIodata,
                Err(refused) => {
                    let err = io::Error::from_raw_os_error(refused.errno());
                    return Done::Failed(err, Some(rest));
                }
            };
            match packet::write(owned.fd(), owned.framing(), &packet) {
                Ok(()) => rest = tail,
                Err(e) => return Done::from_write(e, rest),
            }
        }
    });
    report_time(env, started);
    result
}

/// The bytes of `term` if it is a binary.
fn whole_binary<'a>(term: Term<'a>) -> Option<&'a [u8]> {
    term.is_binary()
        .then(|| Binary::from_term(term).ok())
        .flatten()
        .map(|bin| bin.as_slice())
}

/// The binaries that begin `list`, up to the first element that is not one.
fn leading_binaries<'a>(mut list: Term<'a>) -> impl Iterator<Item = &'a [u8]> {
    std::iter::from_fn(move || {
        let (head, tail) = list.list_get_cell().ok()?;
        list = tail;
        whole_binary(head)
    })
}

/// `list` without its first `n` elements.
fn skip<'a>(mut list: Term<'a>, n: usize) -> Term<'a> {
    for _ in 0..n {
        match list.list_get_cell() {
            Ok((_, tail)) => list = tail,
            Err(_) => break,
        }
    }
    list
}

/// One read of the caller's device as a batch for `UDP_SEGMENT`:
/// `{:ok, {binary, size}}` where `binary` holds packets back to back, each
/// `size` bytes but the last (a super-packet's segments on an offload
/// device; one packet otherwise), or a select, or `{:error, reason}`.
#[rustler::nif]
fn recv_segments<'a>(env: Env<'a>, dev: Term<'a>) -> NifResult<Term<'a>> {
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Read, |owned| {
        if let Some(refused) = refuse_if_active(owned) {
            return refused;
        }
        let batch = match owned.framing() {
            Framing::VirtioNet => {
                let (fd, pending) = owned.fd_and_pending();
                vnet::read_segments(env, fd, pending)
            }
            framing => packet::read(env, owned.fd(), framing, 0).map(|bin| {
                let size = bin.len();
                (bin, size)
            }),
        };
        Done::from_io(batch.map(|(bin, size)| (atoms::ok(), (bin, size)).encode(env)))
    });
    report_time(env, started);
    result
}

/// Writes the packets that lie back to back in `data`, each `size` bytes
/// but the last (as `UDP_GRO` hands them over), each checked as `send`
/// checks one; on an offload device runs of TCP segments of one flow go
/// out as super-packets. `:ok`, `{:more, rest}` when the call's time is
/// up, or a select or error with the unwritten `rest` (a sub-binary).
#[rustler::nif]
fn send_segments<'a>(
    env: Env<'a>,
    dev: Term<'a>,
    data: Binary<'a>,
    size: usize,
) -> NifResult<Term<'a>> {
    if size == 0 {
        return Err(rustler::Error::BadArg);
    }
    let started = Instant::now();
    let result = device_io(env, dev, Direction::Write, |owned| {
        let bytes = data.as_slice();
        let rest_from = |at: usize| {
            let at = at.min(bytes.len());
            data.make_subbinary(at, bytes.len() - at)
                .map(|rest| rest.to_term(env))
                .unwrap_or_else(|_| data.to_term(env))
        };
        let framing = owned.framing();
        let mut at = 0;
        let mut writes = 0usize;
        while at < bytes.len() {
            // Every call writes something before it looks at the clock, so
            // a caller that calls again always gets further.
            if writes > 0 && writes.is_multiple_of(CLOCK_EVERY) && started.elapsed() >= CALL_BUDGET
            {
                return Done::Reply((atoms::more(), rest_from(at)).encode(env));
            }
            writes += 1;
            let packet = &bytes[at..bytes.len().min(at + size)];
            let run = match framing {
                Framing::VirtioNet => {
                    offload::run_from(packet, bytes[at + packet.len()..].chunks(size))
                }
                _ => None,
            };
            let written = match run {
                // A run's segments are whole `size` pieces but maybe the
                // last, which ends the data.
                Some(run) => platform::write_run(owned.fd(), &run)
                    .map(|()| run.segments().iter().map(|s| s.packet.len()).sum()),
                None => match packet::check_slice(packet, framing) {
                    Ok(()) => {
                        packet::write_slice(owned.fd(), framing, packet).map(|()| packet.len())
                    }
                    Err(refused) => Err(io::Error::from_raw_os_error(refused.errno())),
                },
            };
            match written {
                Ok(n) => at += n,
                Err(e) => return Done::from_write(e, rest_from(at)),
            }
        }
        Done::Reply(atoms::ok().encode(env))
    });
    report_time(env, started);
    result
}

/// Cancels the select pending in `op`'s direction if `handle` is its:
/// `:ok`, or `:invalid` for a handle that is not (`:socket`'s answer).
#[rustler::nif]
fn cancel<'a>(env: Env<'a>, dev: Term<'a>, op: Atom, handle: Term<'a>) -> NifResult<Term<'a>> {
    let direction = if op == atoms::recv() {
        Direction::Read
    } else if op == atoms::send() {
        Direction::Write
    } else {
        return Err(rustler::Error::BadArg);
    };
    with_owned(env, dev, |mut owned| {
        Ok(if owned.is_pending(direction, handle) {
            owned.cancel(direction);
            atoms::ok().encode(env)
        } else {
            atoms::invalid().encode(env)
        })
    })
}
