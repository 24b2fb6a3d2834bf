//! The device resource: the only module that calls erl_nif directly.
//!
//! rustler has no safe `enif_select` and no resource `stop` callback, so the
//! resource type is registered here through `rustler::sys` with `dtor`,
//! `stop` and `down` callbacks. Everything outside this module reaches a
//! device through [`DeviceRef`]; the crate's only other `unsafe` code is
//! in `open` (taking ownership of, or borrowing, an fd number a caller
//! names), explained there.
//!
//! Invariants (every `unsafe` block below relies on these):
//!
//! 1. A `Device` lives in memory from `enif_alloc_resource` of
//!    [`RESOURCE_TYPE`]. It is fully written by `new_device` before any term
//!    refers to it, is only ever accessed through `&Device`, and is dropped in
//!    place exactly once, by `dtor`, when the VM destructs the resource.
//! 2. All mutable state is in `Device::state`. That lock is never held
//!    across an `enif_select(STOP)` call, because the stop callback may run
//!    directly inside that call and takes the lock itself, nor across the
//!    release of the resource's reference to itself (which may run `dtor`).
//! 3. `State::fd` is `Some` while the device is open. An fd that was ever
//!    passed to `enif_select` (`State::selected`) is closed only through
//!    `ERL_NIF_SELECT_STOP`: it moves to `State::stopping` and the stop
//!    callback releases it once the VM no longer polls it. An fd never
//!    selected is released at once.
//! 4. Released fds are `DeferredFd`s: they are closed on a closer thread,
//!    never on a scheduler (see `closer`), and leave the `registry` once
//!    closed.
//! 5. While open, the device monitors its owner, the only process allowed
//!    to use it. The owner's exit (the `down` callback) shuts the device
//!    down exactly like `close/1`.
//! 6. While open, the resource holds a reference to itself (the one
//!    `enif_alloc_resource` returned), so the garbage collector can neither
//!    close nor free a device whose owner lives, whether or not any term
//!    still refers to it. Shutting down releases it, last.
//! 7. The VM does not destruct a resource while its fd is selected (erl_nif:
//!    "a resource will not be destructed until all its contained relations
//!    have been dissolved"), so `dtor` never races a pending select.
//! 8. In active mode the device's read select goes to its reader process
//!    (`Tundra.Reader`), which calls `deliver`; only the reader reads the
//!    fd then, and only while `State::active` is not `Off` (passive calls
//!    are refused meanwhile), so active delivery and passive reads never
//!    read the same fd. Leaving active mode cancels that select.
//!
use std::ffi::{c_int, c_void};
use std::mem::{align_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rustler::env::{OwnedEnv, SavedTerm};
use rustler::sys::{
    self, ErlNifEnv, ErlNifEvent, ErlNifMonitor, ErlNifPid, ErlNifResourceDown, ErlNifResourceDtor,
    ErlNifResourceFlags, ErlNifResourceStop, ErlNifResourceType, ErlNifResourceTypeInit,
};
use rustler::{Encoder, Env, LocalPid, Term};
use tundra_core::closer::DeferredFd;
use tundra_core::offload::Offloads;
use tundra_core::platform::Netns;
use tundra_core::Framing;

use crate::linkwatch::Subscription;
use tundra_core::offload::Pending;

use crate::{atoms, io, registry};

// enif_select mode flags (erl_drv_nif.h). rustler's constants of the same
// names mix mode flags with return bits, so they are spelled out here.
const SELECT_READ: c_int = 1 << 0;
const SELECT_WRITE: c_int = 1 << 1;
const SELECT_STOP: c_int = 1 << 2;
const SELECT_CANCEL: c_int = 1 << 3;
const SELECT_CUSTOM_MSG: c_int = 1 << 4;

/// Which readiness a select waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    fn mode(self) -> c_int {
        match self {
            Direction::Read => SELECT_READ,
            Direction::Write => SELECT_WRITE,
        }
    }

    fn slot(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// Active mode, as `:gen_udp`'s: packets are delivered as messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    Off,
    /// One packet, then passive.
    Once,
    /// This many more packets, then passive and `{:tundra_passive, dev}`.
    Count(u64),
    Always,
}

/// A change of active mode asked for with `setopts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveChange {
    Set(Active),
    /// `active: n`: added to the current count (as `inet:setopts/2`).
    Add(i64),
}

/// Why the caller may not use a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotOwner,
    Closed,
}

struct ResourceType(NonNull<ErlNifResourceType>);
// SAFETY: the resource type handle is an opaque, immutable VM object that is
// valid for the lifetime of the loaded library and usable from any thread.
unsafe impl Send for ResourceType {}
// SAFETY: as above; it is only ever read after `init`.
unsafe impl Sync for ResourceType {}

static RESOURCE_TYPE: OnceLock<ResourceType> = OnceLock::new();

/// What the resource memory holds.
pub struct Device {
    state: Mutex<State>,
}

struct State {
    fd: Option<DeferredFd>,
    stopping: Option<DeferredFd>,
    selected: bool,
    owner: ErlNifPid,
    monitor: Option<ErlNifMonitor>,
    name: String,
    framing: Framing,
    id: registry::Id,
    /// The handle of the select pending in each direction, which `cancel`
    /// compares with the one it is given.
    handles: [Handle; 2],
    /// Whether the reference the resource holds to itself while open
    /// (invariant 6) is still held.
    self_ref: bool,
    active: Active,
    /// Active delivery as one message per read batch (`{:tundra_batch,
    /// dev, packets}`) rather than one per packet.
    batch: bool,
    /// How long a read that finds nothing keeps looking before it arms a
    /// select (`busy_poll`, see io::polling).
    busy_poll: std::time::Duration,
    /// The process that reads the device for its owner in active mode
    /// (and passes link events on), once there is one.
    reader: Option<ErlNifPid>,
    /// The device's network namespace, when it is not the VM's.
    netns: Option<Arc<Netns>>,
    /// Link events go to the reader while this is held.
    link_events: Option<Subscription>,
    /// An offload device's offloads, and its split segments not yet read.
    offloads: Offloads,
    pending: Pending,
}

/// What a device resource is made of, besides its fd.
pub struct Setup {
    pub name: String,
    pub framing: Framing,
    /// Its network namespace, when it is not the VM's.
    pub netns: Option<Arc<Netns>>,
    pub offloads: Offloads,
}

/// A select handle (a reference), kept in an environment of its own so
/// that a later NIF call can compare another term with it.
#[derive(Default)]
struct Handle {
    env: Option<OwnedEnv>,
    saved: Option<SavedTerm>,
}

impl Handle {
    fn set(&mut self, handle: Term) {
        let env = self.env.get_or_insert_with(OwnedEnv::new);
        // The previous handle is dropped with the terms of the environment.
        self.saved = None;
        env.clear();
        self.saved = Some(env.save(handle));
    }

    fn is(&self, handle: Term) -> bool {
        match (&self.env, &self.saved) {
            (Some(env), Some(saved)) => env.run(|e| saved.load(e) == handle),
            _ => false,
        }
    }

    fn forget(&mut self) {
        self.saved = None;
    }
}

// The VM aligns resource memory to at least 8 bytes.
const _: () = assert!(align_of::<Device>() <= 8);

impl Device {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code holding this lock can panic mid-update (the NIF bodies are
        // plain data moves), so a poisoned lock carries no broken state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Registers the resource type. Called once, from the NIF `load` callback.
pub fn init(env: Env) -> bool {
    let init = ErlNifResourceTypeInit {
        dtor: dtor as *const ErlNifResourceDtor,
        stop: stop as *const ErlNifResourceStop,
        down: down as *const ErlNifResourceDown,
    };
    let mut tried = MaybeUninit::<ErlNifResourceFlags>::uninit();
    // SAFETY: called from `load` with its env; the name is NUL-terminated and
    // `init` outlives the call (the VM copies it).
    let handle = unsafe {
        sys::enif_open_resource_type_x(
            env.as_c_arg(),
            c"tundra_device".as_ptr(),
            &init,
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            tried.as_mut_ptr(),
        )
    };
    match NonNull::new(handle.cast_mut()) {
        Some(handle) => RESOURCE_TYPE.set(ResourceType(handle)).is_ok(),
        None => false,
    }
}

fn self_pid(env: Env) -> ErlNifPid {
    let mut pid = MaybeUninit::<ErlNifPid>::uninit();
    // SAFETY: NIFs here are always called from a process, whose env is
    // process-bound, so enif_self initialises `pid`.
    unsafe {
        sys::enif_self(env.as_c_arg(), pid.as_mut_ptr());
        pid.assume_init()
    }
}

fn same_pid(a: &ErlNifPid, b: &ErlNifPid) -> bool {
    // SAFETY: both are initialised pids.
    unsafe { sys::enif_compare_pids(a, b) == 0 }
}

/// Allocates a device resource for `fd` (claimed in the registry as
/// `id`), owned and monitored by the calling process, and returns its term.
pub fn new_device<'a>(
    env: Env<'a>,
    fd: DeferredFd,
    id: registry::Id,
    setup: Setup,
) -> Option<Term<'a>> {
    let Setup {
        name,
        framing,
        netns,
        offloads,
    } = setup;
    let kind = RESOURCE_TYPE.get()?.0.as_ptr();
    let owner = self_pid(env);
    // The registry matches names of this namespace only.
    let index = match netns {
        None => nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0),
        Some(_) => 0,
    };
    registry::describe(id, &name, index, LocalPid::from_c_arg(owner));
    // SAFETY: `kind` is our registered type; the size is that of `Device`.
    let obj = unsafe { sys::enif_alloc_resource(kind, std::mem::size_of::<Device>()) };
    let obj = NonNull::new(obj.cast::<Device>())?;
    // SAFETY: `obj` is fresh, suitably aligned (see the const assert) and
    // large enough; nothing else can see it yet (invariant 1).
    unsafe {
        ptr::write(
            obj.as_ptr(),
            Device {
                state: Mutex::new(State {
                    fd: Some(fd),
                    stopping: None,
                    selected: false,
                    owner,
                    monitor: None,
                    name,
                    framing,
                    id,
                    handles: Default::default(),
                    // The reference enif_alloc_resource returned (invariant 6).
                    self_ref: true,
                    active: Active::Off,
                    batch: false,
                    busy_poll: std::time::Duration::ZERO,
                    reader: None,
                    netns,
                    link_events: None,
                    offloads,
                    pending: Pending::default(),
                }),
            },
        )
    };
    let mut monitor = MaybeUninit::<ErlNifMonitor>::uninit();
    // SAFETY: `obj` is a live resource of a type with a down callback and
    // `owner` is the (alive) calling process.
    let monitored = unsafe {
        sys::enif_monitor_process(
            env.as_c_arg(),
            obj.as_ptr().cast(),
            &owner,
            monitor.as_mut_ptr(),
        )
    } == 0;
    // SAFETY: `obj` is live (we hold its first reference); the term takes a
    // reference of its own.
    let term = unsafe {
        Term::new(
            env,
            sys::enif_make_resource(env.as_c_arg(), obj.as_ptr().cast()),
        )
    };
    // SAFETY: invariant 1: `obj` is live while `term` is.
    let device = unsafe { obj.as_ref() };
    let mut state = device.lock();
    if monitored {
        // SAFETY: enif_monitor_process returned 0, so it wrote the monitor.
        state.monitor = Some(unsafe { monitor.assume_init() });
    } else {
        // No owner to watch (it cannot have exited while calling, but if
        // the VM says so): a device nobody could close must not stay open.
        shut_down(env.as_c_arg(), obj.as_ptr().cast(), state);
        return None;
    }
    Some(term)
}

/// A device resource found in a term, valid as long as that term (`'a`).
pub struct DeviceRef<'a> {
    env: Env<'a>,
    term: Term<'a>,
    device: &'a Device,
}

/// Looks up the device a resource term refers to.
pub fn get<'a>(env: Env<'a>, term: Term<'a>) -> Option<DeviceRef<'a>> {
    let kind = RESOURCE_TYPE.get()?.0.as_ptr();
    let mut obj: *const c_void = ptr::null();
    // SAFETY: `kind` is our registered type; on success `obj` points at a
    // live `Device` that the term keeps alive for the NIF call (`'a`).
    let found = unsafe { sys::enif_get_resource(env.as_c_arg(), term.as_c_arg(), kind, &mut obj) };
    if found == 0 || obj.is_null() {
        return None;
    }
    // SAFETY: invariant 1 and the above.
    let device = unsafe { &*obj.cast::<Device>() };
    Some(DeviceRef { env, term, device })
}

/// What `DeviceRef::describe` reads.
pub struct Described {
    pub name: String,
    pub owner: LocalPid,
    pub fd: RawFd,
    pub framing: Framing,
    pub offloads: Offloads,
    pub netns: Option<Arc<Netns>>,
    pub link_events: bool,
    pub active: Active,
    pub batch: bool,
    pub busy_poll: std::time::Duration,
}

/// The device locked for its owner, open. Dropping it unlocks.
pub struct Owned<'r, 'a> {
    dev: &'r DeviceRef<'a>,
    state: MutexGuard<'a, State>,
}

impl<'a> DeviceRef<'a> {
    /// The resource term itself.
    pub fn term(&self) -> Term<'a> {
        self.term
    }

    /// Locks the device for the calling process if the device is open and
    /// the caller is its owner. A closed device is `Closed` to everyone,
    /// whoever owned it last.
    pub fn owned(&self) -> Result<Owned<'_, 'a>, Refused> {
        let state = self.device.lock();
        if state.fd.is_none() {
            return Err(Refused::Closed);
        }
        if !same_pid(&state.owner, &self_pid(self.env)) {
            return Err(Refused::NotOwner);
        }
        Ok(Owned { dev: self, state })
    }

    /// Locks the device for its reader process (the caller), if the device
    /// is open; `None` otherwise (the reader then has nothing left to do).
    pub fn for_reader(&self) -> Option<Reading<'_, 'a>> {
        let state = self.device.lock();
        let caller = self_pid(self.env);
        let is_reader = state.reader.is_some_and(|r| same_pid(&r, &caller));
        (is_reader && state.fd.is_some()).then_some(Reading { dev: self, state })
    }

    /// What anyone may read of the device; `Closed` once closed.
    pub fn describe(&self) -> Result<Described, Refused> {
        let state = self.device.lock();
        match state.fd.as_ref().and_then(DeferredFd::as_fd) {
            Some(fd) => Ok(Described {
                name: state.name.clone(),
                owner: LocalPid::from_c_arg(state.owner),
                fd: fd.as_raw_fd(),
                framing: state.framing,
                offloads: state.offloads,
                netns: state.netns.clone(),
                link_events: state.link_events.is_some(),
                active: state.active,
                batch: state.batch,
                busy_poll: state.busy_poll,
            }),
            None => Err(Refused::Closed),
        }
    }

    fn obj(&self) -> *mut c_void {
        ptr::from_ref(self.device).cast_mut().cast()
    }
}

impl<'a> Owned<'_, 'a> {
    /// The device's resource term.
    pub fn term(&self) -> Term<'a> {
        self.dev.term()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // `owned()` checked that the fd is open and the lock is held since.
        match self.state.fd.as_ref().and_then(DeferredFd::as_fd) {
            Some(fd) => fd,
            None => unreachable!("Owned is only made for an open device"),
        }
    }

    pub fn framing(&self) -> Framing {
        self.state.framing
    }

    /// The fd, and the segments an offload device has waiting.
    pub fn fd_and_pending(&mut self) -> (BorrowedFd<'_>, &mut Pending) {
        let state = &mut *self.state;
        match state.fd.as_ref().and_then(DeferredFd::as_fd) {
            Some(fd) => (fd, &mut state.pending),
            None => unreachable!("Owned is only made for an open device"),
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn netns(&self) -> Option<Arc<Netns>> {
        self.state.netns.clone()
    }

    pub fn set_offloads(&mut self, offloads: Offloads) {
        self.state.offloads = offloads;
    }

    /// Starts (`Some`) or ends (`None`) link events.
    pub fn set_link_events(&mut self, subscription: Option<Subscription>) {
        self.state.link_events = subscription;
    }

    /// Asks the VM to send `msg` to the owner once the fd is ready in
    /// `direction`, and remembers `handle` as that select's. Returns false
    /// if the VM could not add it to its poll set.
    pub fn select(&mut self, direction: Direction, msg: Term, handle: Term) -> bool {
        let fd = self.fd().as_raw_fd();
        // SAFETY: `fd` is open and belongs to this resource (invariant 3);
        // `msg` is a term of the caller's env, copied by the VM (msg_env is
        // NULL); the pid NULL means the calling process, the owner.
        let rc = unsafe {
            sys::enif_select_x(
                self.dev.env.as_c_arg(),
                fd as ErlNifEvent,
                direction.mode() | SELECT_CUSTOM_MSG,
                self.dev.obj(),
                ptr::null(),
                msg.as_c_arg(),
                ptr::null_mut(),
            )
        };
        if rc >= 0 {
            self.state.selected = true;
            self.state.handles[direction.slot()].set(handle);
        }
        rc >= 0
    }

    /// Whether `handle` is that of the select pending in `direction`.
    pub fn is_pending(&self, direction: Direction, handle: Term) -> bool {
        self.state.handles[direction.slot()].is(handle)
    }

    /// Cancels a pending select in `direction`; true if the VM guarantees no
    /// notification for it will be sent (otherwise one may be on its way).
    pub fn cancel(&mut self, direction: Direction) -> bool {
        self.state.handles[direction.slot()].forget();
        if !self.state.selected {
            return true;
        }
        let fd = self.fd().as_raw_fd();
        // SAFETY: as in `select`; CANCEL ignores pid and the message.
        let rc = unsafe {
            sys::enif_select(
                self.dev.env.as_c_arg(),
                fd as ErlNifEvent,
                direction.mode() | SELECT_CANCEL,
                self.dev.obj(),
                ptr::null(),
                undefined(self.dev.env.as_c_arg()),
            )
        };
        // READ_CANCELLED / WRITE_CANCELLED are bits 4 and 5 of the result.
        let cancelled_bit = match direction {
            Direction::Read => 1 << 4,
            Direction::Write => 1 << 5,
        };
        rc >= 0 && rc & cancelled_bit != 0
    }

    /// Hands the device to `new_owner`. Pending selects are cancelled (their
    /// notifications would go to the old owner). Returns false if
    /// `new_owner` is not alive.
    pub fn set_owner(&mut self, new_owner: LocalPid) -> bool {
        let new_pid = *new_owner.as_c_arg();
        if same_pid(&new_pid, &self.state.owner) {
            return true;
        }
        let env = self.dev.env.as_c_arg();
        let obj = self.dev.obj();
        let mut monitor = MaybeUninit::<ErlNifMonitor>::uninit();
        // SAFETY: `obj` is a live resource of a type with a down callback.
        if unsafe { sys::enif_monitor_process(env, obj, &new_pid, monitor.as_mut_ptr()) } != 0 {
            return false;
        }
        if let Some(old) = self.state.monitor.take() {
            // SAFETY: `old` is a monitor this resource holds.
            unsafe { sys::enif_demonitor_process(env, obj, &old) };
        }
        // SAFETY: enif_monitor_process returned 0, so it wrote the monitor.
        self.state.monitor = Some(unsafe { monitor.assume_init() });
        self.state.owner = new_pid;
        registry::set_owner(self.state.id, new_owner);
        self.cancel(Direction::Read);
        self.cancel(Direction::Write);
        true
    }

    pub fn is_active(&self) -> bool {
        self.state.active != Active::Off
    }

    /// Active delivery one message per batch (`true`) or per packet.
    pub fn set_batch(&mut self, batch: bool) {
        self.state.batch = batch;
    }

    /// How long reads keep looking before they arm a select.
    pub fn busy_poll(&self) -> std::time::Duration {
        self.state.busy_poll
    }

    pub fn set_busy_poll(&mut self, busy_poll: std::time::Duration) {
        self.state.busy_poll = busy_poll;
    }

    /// The device's reader process, if it has one.
    pub fn reader(&self) -> Option<LocalPid> {
        self.state.reader.map(LocalPid::from_c_arg)
    }

    pub fn set_reader(&mut self, reader: LocalPid) {
        self.state.reader = Some(*reader.as_c_arg());
    }

    /// Changes the active mode as `change` says (`:gen_udp`'s rules: a
    /// count is added to the current one, and a sum of 0 or less makes the
    /// device passive). Returns the new mode; `Ok(Active::Off)` after a
    /// count ran out here, which the caller reports with
    /// `{:tundra_passive, dev}`. Active needs a reader (`EINVAL` without).
    pub fn set_active(&mut self, change: ActiveChange) -> std::io::Result<Active> {
        let active = match (change, self.state.active) {
            (ActiveChange::Set(mode), _) => mode,
            (ActiveChange::Add(n), Active::Count(current)) => {
                count(i128::from(current) + i128::from(n))
            }
            (ActiveChange::Add(n), _) => count(i128::from(n)),
        };
        if active == Active::Off {
            self.take_active();
            return Ok(active);
        }
        let reader = self
            .state
            .reader
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        self.state.active = active;
        if !self.select_for(reader) {
            self.state.active = Active::Off;
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(active)
    }

    /// Makes the device passive and returns the mode it had, for a
    /// hand-over that restores it afterwards. The reader's select is
    /// cancelled (a notification already on its way finds it passive).
    pub fn take_active(&mut self) -> Active {
        let was = std::mem::replace(&mut self.state.active, Active::Off);
        if was != Active::Off {
            self.cancel(Direction::Read);
        }
        was
    }

    /// Arms the read select for the reader process: it is sent
    /// `{:"$tundra_readable", dev}` once the fd is readable.
    fn select_for(&mut self, reader: ErlNifPid) -> bool {
        let env = self.dev.env;
        let device = (atoms::dollar_tundra(), self.dev.term());
        let msg = (atoms::dollar_tundra_readable(), device).encode(env);
        let fd = self.fd().as_raw_fd();
        // SAFETY: `fd` is open and belongs to this resource (invariant 3);
        // `msg` is a term of the caller's env, copied by the VM (msg_env is
        // NULL); `reader` is a pid the owner gave (invariant 8).
        let rc = unsafe {
            sys::enif_select_x(
                env.as_c_arg(),
                fd as ErlNifEvent,
                SELECT_READ | SELECT_CUSTOM_MSG,
                self.dev.obj(),
                &reader,
                msg.as_c_arg(),
                ptr::null_mut(),
            )
        };
        if rc >= 0 {
            self.state.selected = true;
        }
        rc >= 0
    }

    /// Closes the device: its fd is released (off the schedulers) and the
    /// kernel removes the interface.
    pub fn close(self) {
        let Owned { dev, mut state } = self;
        if let Some(monitor) = state.monitor.take() {
            // SAFETY: `monitor` is one this resource holds.
            unsafe { sys::enif_demonitor_process(dev.env.as_c_arg(), dev.obj(), &monitor) };
        }
        shut_down(dev.env.as_c_arg(), dev.obj(), state);
    }
}

fn count(n: i128) -> Active {
    match u64::try_from(n) {
        Ok(0) | Err(_) => Active::Off,
        Ok(n) => Active::Count(n),
    }
}

/// The device locked for its reader process, open.
pub struct Reading<'r, 'a> {
    dev: &'r DeviceRef<'a>,
    state: MutexGuard<'a, State>,
}

impl<'a> Reading<'_, 'a> {
    /// Delivers up to `budget` waiting packets to the owner as
    /// `{:tundra, dev, packet}`, following the active mode:
    /// `{:tundra_passive, dev}` when a count runs out, `{:tundra_closed,
    /// dev}` when the device can no longer be read (its interface was
    /// deleted). Returns `true` when a whole budget came and more may be
    /// waiting: the reader calls again at once, without a round through
    /// the VM's poll (under load it keeps reading, as NAPI polls, and its
    /// scheduler stays busy instead of sleeping and waking per batch).
    /// Otherwise re-arms the reader's select while the device stays active.
    pub fn deliver(mut self, budget: usize) -> bool {
        let env = self.dev.env;
        let device = (atoms::dollar_tundra(), self.dev.term()).encode(env);
        let owner = LocalPid::from_c_arg(self.state.owner);
        let framing = self.state.framing;
        // A dead owner's device is about to shut down: sends to it fail, harmlessly.
        let tell = |tag: rustler::Atom| {
            let _ = env.send(&owner, (tag, device));
        };
        // Never more than the mode allows: a packet read is a packet sent.
        let wanted = match self.state.active {
            Active::Off => return false,
            Active::Once => 1,
            Active::Count(n) => usize::try_from(n).unwrap_or(budget).min(budget),
            Active::Always => budget,
        };
        let state = &mut *self.state;
        let Some(fd) = state.fd.as_ref().and_then(DeferredFd::as_fd) else {
            return false;
        };
        let mut more = false;
        // One batch read, as recv_many's: the packets are parts of one
        // binary, which their messages share.
        let until = std::time::Instant::now() + io::CALL_BUDGET;
        let batch = io::polling(state.busy_poll, || {
            io::read_batch(env, fd, framing, &mut state.pending, wanted, until)
        });
        match batch {
            Ok(packets) => {
                let delivered = packets.len();
                // Split segments still waiting are read without a select.
                more = delivered == budget || !self.state.pending.is_empty();
                if self.state.batch {
                    let _ = env.send(&owner, (atoms::tundra_batch(), device, packets));
                } else {
                    for packet in packets {
                        let _ = env.send(&owner, (atoms::tundra(), device, packet));
                    }
                }
                self.state.active = match self.state.active {
                    Active::Count(n) if n > delivered as u64 => Active::Count(n - delivered as u64),
                    Active::Count(_) => {
                        tell(atoms::tundra_passive());
                        Active::Off
                    }
                    Active::Once => Active::Off,
                    other => other,
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.state.active = Active::Off;
                tell(atoms::tundra_closed());
                return false;
            }
        }
        if self.state.active == Active::Off {
            return false;
        }
        if more {
            return true;
        }
        if let Some(reader) = self.state.reader {
            let mut owned = Owned {
                dev: self.dev,
                state: self.state,
            };
            if !owned.select_for(reader) {
                owned.state.active = Active::Off;
                tell(atoms::tundra_closed());
            }
        }
        false
    }
}

/// The atom `undefined`, for the `ref` argument that CANCEL and STOP ignore.
fn undefined(env: *mut ErlNifEnv) -> sys::ErlNifTerm {
    // SAFETY: atoms are global; any env, including a callback env, can make
    // one from a NUL-terminated Latin-1 name.
    unsafe { sys::enif_make_atom(env, c"undefined".as_ptr()) }
}

/// Releases the fd of the device at `obj`, consuming its lock guard
/// (invariant 2: the lock must not be held across a STOP), and then the
/// resource's reference to itself (invariant 6).
fn shut_down(env: *mut ErlNifEnv, obj: *mut c_void, mut state: MutexGuard<'_, State>) {
    let Some(fd) = state.fd.take() else {
        return;
    };
    registry::closing(state.id);
    state.active = Active::Off;
    state.link_events = None;
    state.handles = Default::default();
    let self_ref = std::mem::take(&mut state.self_ref);
    if state.selected {
        let raw: RawFd = fd.as_fd().map_or(-1, |fd| fd.as_raw_fd());
        state.stopping = Some(fd);
        drop(state);
        // SAFETY: `raw` was selected with this resource; STOP ignores pid and
        // ref, cancels pending selects and calls `stop` (now or later), which
        // releases `stopping` (invariant 3).
        unsafe {
            sys::enif_select(
                env,
                raw as ErlNifEvent,
                SELECT_STOP,
                obj,
                ptr::null(),
                undefined(env),
            )
        };
    } else {
        drop(state);
        drop(fd); // invariant 4: closed on a closer thread
    }
    if self_ref {
        // SAFETY: the reference enif_alloc_resource returned, held since
        // (invariant 6) and released once. `obj` is not touched after: this
        // may have been the last reference.
        unsafe { sys::enif_release_resource(obj) };
    }
}

/// Resource destructor: drops the `Device` in place. An open device is
/// never destructed (invariant 6), so it holds no fd by now, or one whose
/// stop callback has run (invariant 7).
unsafe extern "C" fn dtor(_env: *mut ErlNifEnv, obj: *mut c_void) {
    // SAFETY: invariant 1: `obj` holds a `Device` and the VM calls the
    // destructor exactly once, after which the memory is freed.
    unsafe { ptr::drop_in_place(obj.cast::<Device>()) };
}

/// Select stop callback: the VM no longer polls the fd; release it.
unsafe extern "C" fn stop(
    _env: *mut ErlNifEnv,
    obj: *mut c_void,
    _event: ErlNifEvent,
    _direct: c_int,
) {
    // SAFETY: invariant 1: `obj` holds a live `Device` (it is not destructed
    // before its select relation is dissolved, invariant 7).
    let device = unsafe { &*obj.cast::<Device>() };
    let fd = device.lock().stopping.take();
    drop(fd);
}

/// Monitor callback: the owner exited, so the device shuts down.
unsafe extern "C" fn down(
    env: *mut ErlNifEnv,
    obj: *mut c_void,
    pid: *const ErlNifPid,
    _monitor: *const ErlNifMonitor,
) {
    // SAFETY: invariant 1; the VM passes a live resource and a valid pid.
    let (device, pid) = unsafe { (&*obj.cast::<Device>(), &*pid) };
    let mut state = device.lock();
    // A monitor of a former owner may fire after a hand-over raced its
    // demonitor; only the current owner's exit closes the device.
    if !same_pid(&state.owner, pid) {
        return;
    }
    state.monitor = None;
    shut_down(env, obj, state);
}
