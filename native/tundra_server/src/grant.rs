//! What the server grants: whether a peer may have the device or the
//! change it asks for (delegations, conflicts, limits, its share of fds
//! in flight), and making it. `serve` reads a request, asks here, and
//! renders the answer; nothing here touches the connection.

use std::io;
use std::sync::{Arc, Mutex};

use nix::unistd::Gid;
use tundra_core::platform::{self, Isolation};
use tundra_core::{errno, Change, Cidr, DeviceConfig, Framing};

use crate::access::{self, Peer};
use crate::inflight::{self, InFlight, Reserved};
use crate::made::{self, Made, Records};
use crate::policy::{self, Policy};
use crate::unread::Unread;

/// What the server serves every request with.
pub struct Context {
    pub group: Gid,
    pub policy: Policy,
    pub max_devices_per_uid: usize,
    pub records: Arc<Records>,
    /// Device fds sent and not yet read, per uid.
    pub in_flight: Arc<InFlight>,
    /// Replies not read by their deadline, and their connections.
    pub unread: Arc<Unread>,
    /// Held from the checks to the record of a new device, so that two
    /// requests cannot both pass the conflict or limit checks.
    pub creating: Mutex<()>,
}

/// A device made for a client, and the fds its reply will leave in
/// flight, reserved (see `inflight`).
pub struct Handed {
    pub device: platform::Device,
    pub reserved: Reserved,
}

/// Why a device was not made: the errno to reply and what to log.
pub struct Refusal {
    pub errno: i32,
    pub why: String,
}

impl Refusal {
    pub fn new(errno: i32, why: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            why: why.into(),
        }
    }

    pub fn io(e: &io::Error) -> Refusal {
        Refusal::new(
            errno::errno_of(e).unwrap_or(libc::EIO),
            format!("failed: {}", errno::io_error_name(e)),
        )
    }

    /// A device (or an MTU change) that could not be made; the one file
    /// system it writes is /proc/sys, for `Isolation::Required`.
    fn making(e: &io::Error) -> Refusal {
        if errno::errno_of(e) == Some(libc::EBUSY) {
            return Refusal::new(
                libc::EBUSY,
                "raising the MTU from below 1280 gives the link IPv6 again, which it may not get while up: take the link down, set the MTU, bring it up",
            );
        }
        if errno::errno_of(e) == Some(libc::EROFS) {
            return Refusal::new(
                libc::EROFS,
                "cannot keep the device from learning routes: /proc/sys/net/ipv6/conf is read-only for the server (see ReadWritePaths= in tundra_server.service)",
            );
        }
        Refusal::io(e)
    }
}

/// Decides whether `peer` may have `config` and makes it. Root may ask
/// for any addresses; anyone else only for delegated ones that collide
/// with nothing in the namespace, up to its device limit and its share of
/// unread replies. Every device is new (never an existing interface),
/// named under the name prefix, and learns nothing from the packets its
/// holder writes (`Isolation::Required`): a device that cannot be kept
/// so is not made.
pub fn create(
    ctx: &Context,
    peer: &Peer,
    mut config: DeviceConfig,
    framing: Framing,
) -> Result<Handed, Refusal> {
    let name = ctx
        .policy
        .device_name(config.name.as_deref(), config.mode)
        .map_err(|why| Refusal::new(libc::EACCES, why))?;
    config.name = Some(name);
    let reserved = ctx
        .in_flight
        .reserve(peer.uid, usize::from(config.queues))
        .map_err(|full| {
            let why = match full {
                inflight::Full::User(n) => format!("{n} device fds of earlier replies are unread"),
                inflight::Full::Server(n) => {
                    format!("{n} device fds of replies to members are unread")
                }
            };
            Refusal::new(libc::EAGAIN, why)
        })?;
    let hand = |device| Handed { device, reserved };
    if peer.uid == 0 {
        return platform::create_for(&config, Some(peer.uid), framing, Isolation::Required)
            .map(hand)
            .map_err(|e| Refusal::making(&e));
    }
    let claims = config.claims();
    ctx.policy
        .check_delegated(peer.uid, &access::groups(peer), &claims)
        .map_err(|why| Refusal::new(libc::EACCES, why))?;

    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    if ctx.records.count(peer.uid) >= ctx.max_devices_per_uid {
        // The records may still hold devices that are gone: look first.
        made::sweep(&ctx.records);
        if ctx.records.count(peer.uid) >= ctx.max_devices_per_uid {
            return Err(Refusal::new(
                libc::EDQUOT,
                format!(
                    "holds {} devices already (--max-devices-per-uid)",
                    ctx.max_devices_per_uid
                ),
            ));
        }
    }
    let occupied = platform::occupied(None).map_err(|e| Refusal::io(&e))?;
    if let Some(why) = policy::conflict(&config.address, &claims, &occupied) {
        return Err(Refusal::new(libc::EADDRINUSE, why));
    }
    let device = platform::create_for(&config, Some(peer.uid), framing, Isolation::Required)
        .map_err(|e| Refusal::making(&e))?;
    let index = nix::net::if_::if_nametoindex(device.name.as_str())
        .map_err(|e| Refusal::io(&io::Error::from(e)))?;
    // Recorded before the client hears of it; a device that cannot be
    // recorded is dropped (and so removed) instead.
    ctx.records
        .add(
            peer.uid,
            Made {
                index,
                name: device.name.clone(),
                claims,
            },
        )
        .map_err(|e| Refusal::io(&e))?;
    Ok(hand(device))
}

/// Decides whether `peer` may make `change` to device `name` and makes it.
pub fn make_change(ctx: &Context, peer: &Peer, name: &str, change: &Change) -> Result<(), Refusal> {
    let index =
        nix::net::if_::if_nametoindex(name).map_err(|e| Refusal::io(&io::Error::from(e)))?;
    let apply =
        || platform::apply(name, change, None, Isolation::Required).map_err(|e| Refusal::io(&e));
    if peer.uid == 0 {
        return apply();
    }
    if !ctx.records.holds(peer.uid, index, name) {
        return Err(Refusal::new(
            libc::EACCES,
            "not a device the server made for this user",
        ));
    }
    if let Change::Link { up: Some(true), .. } = change {
        return bring_up(ctx, name, index, apply);
    }
    let claims = change.claims();
    if claims.is_empty() {
        return apply();
    }
    ctx.policy
        .check_delegated(peer.uid, &access::groups(peer), &claims)
        .map_err(|why| Refusal::new(libc::EACCES, why))?;
    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    // What the device itself has does not collide with its own additions.
    let occupied = platform::occupied(Some(index)).map_err(|e| Refusal::io(&e))?;
    let address = match change {
        Change::AddAddress(spec) => Some(spec.address),
        _ => None,
    };
    let collision = match address {
        Some(address) => policy::conflict(&address, &claims, &occupied),
        None => policy::route_conflict(&claims, &occupied),
    };
    if let Some(why) = collision {
        return Err(Refusal::new(libc::EADDRINUSE, why));
    }
    apply()
}

/// Brings a member's link up (with whatever MTU the change sets): the
/// kernel then restores the routes of the link's addresses without asking
/// anyone, so what they claim is checked again first, as for a new device
/// (someone may have been given those addresses while the link was down).
/// Link-local addresses claim nothing: every link has its own.
fn bring_up(
    ctx: &Context,
    name: &str,
    index: u32,
    apply: impl FnOnce() -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    let _creating = ctx.creating.lock().unwrap_or_else(|p| p.into_inner());
    let link = platform::link_info(name, None).map_err(|e| Refusal::io(&e))?;
    let claims: Vec<Cidr> = link
        .addresses
        .iter()
        .filter(|a| !is_link_local(&a.address))
        .flat_map(|a| a.spec().claims())
        .collect();
    let occupied = platform::occupied(Some(index)).map_err(|e| Refusal::io(&e))?;
    if let Some(why) = policy::route_conflict(&claims, &occupied) {
        return Err(Refusal::new(libc::EADDRINUSE, why));
    }
    apply()
}

fn is_link_local(address: &std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(a) => a.is_link_local(),
        std::net::IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}
