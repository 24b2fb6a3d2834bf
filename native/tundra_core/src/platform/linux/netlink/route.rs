//! Routes: through one interface (added, removed, listed), and every
//! route's destination (for the server's conflict check).

use std::io;
use std::net::IpAddr;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmF, Rtn, Rtprot};
use neli::rtnl::{Rtmsg, RtmsgBuilder};
use neli::types::RtBuffer;

use super::{attr, family_of, ip_bytes, protocol_error, u32_payload, Rtnl};
use crate::change::RouteSpec;
use crate::cidr::ip_from_bytes;
use crate::cidr::Cidr;
use crate::platform::RouteInfo;

/// The metric the kernel gives the routes it adds for IPv6 addresses.
const ADDRCONF_METRIC: u32 = 256;

impl Rtnl {
    /// Routes `peer`/128 through interface `index` now.
    ///
    /// The kernel adds an IPv6 address's peer route only once duplicate
    /// address detection completes, from a workqueue, even with NODAD: it
    /// may appear after `create` has returned. Adding it here, exactly as
    /// the kernel would (main table, kernel protocol, metric 256), makes the
    /// peer reachable when `create` returns; the kernel's own add then finds
    /// it present and leaves it.
    pub fn add_ipv6_peer_route(&mut self, index: u32, peer: &IpAddr) -> io::Result<()> {
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Rta::Dst, ip_bytes(peer))?);
        attrs.push(attr(Rta::Oif, index)?);
        attrs.push(attr(Rta::Priority, ADDRCONF_METRIC)?);
        let msg = route_message(peer, 128, Rtprot::Kernel, RtScope::Universe, attrs)?;
        match self.change(Rtm::Newroute, NlmF::CREATE | NlmF::EXCL, msg) {
            // The kernel's workqueue was quicker: the route is there.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Routes `route.dst` through interface `index` (as `ip route add DST
    /// dev NAME [metric M]`: main table, no gateway).
    pub fn add_route(&mut self, index: u32, route: &RouteSpec) -> io::Result<()> {
        let msg = device_route(index, route)?;
        self.change(Rtm::Newroute, NlmF::CREATE | NlmF::EXCL, msg)
    }

    /// Removes a route added by `add_route` (`ESRCH` if there is none).
    pub fn remove_route(&mut self, index: u32, route: &RouteSpec) -> io::Result<()> {
        let msg = device_route(index, route)?;
        self.change(Rtm::Delroute, NlmF::empty(), msg)
    }

    /// Whether the kernel has put `address` of interface `index` in its
    /// local table: until it has, a packet to that address arriving on
    /// the interface is not delivered to this host (the kernel adds the
    /// route from a workqueue, as the IPv6 peer route above).
    pub fn has_local_route(&mut self, index: u32, address: &IpAddr) -> io::Result<bool> {
        let host = Cidr::host(*address);
        let mut found = false;
        self.dump(Rtm::Getroute, dump_request()?, |r: &Rtmsg| {
            found |= *r.rtm_table() == RtTable::Local
                && *r.rtm_type() == Rtn::Local
                && out_interface(r) == Some(index)
                && route_destination(r) == Some(host);
        })?;
        Ok(found)
    }

    /// The main table's routes through interface `index`.
    pub fn routes_via(&mut self, index: u32) -> io::Result<Vec<RouteInfo>> {
        let mut routes = Vec::new();
        self.dump(Rtm::Getroute, dump_request()?, |r: &Rtmsg| {
            let through = out_interface(r);
            let main = *r.rtm_table() == RtTable::Main;
            if through == Some(index) && main && *r.rtm_type() == Rtn::Unicast {
                if let Some(dst) = route_destination(r) {
                    let metric = r
                        .rtattrs()
                        .iter()
                        .find(|a| *a.rta_type() == Rta::Priority)
                        .and_then(|a| u32_payload(a.rta_payload().as_ref()));
                    routes.push(RouteInfo { dst, metric });
                }
            }
        })?;
        Ok(routes)
    }

    /// The destination of every route of this network namespace, in every
    /// table and of every type (unicast, local, broadcast, blackhole, ...),
    /// but those through interface `except`.
    pub fn all_routes(&mut self, except: Option<u32>) -> io::Result<Vec<Cidr>> {
        let mut routes = Vec::new();
        self.dump(Rtm::Getroute, dump_request()?, |r: &Rtmsg| {
            if except.is_none() || out_interface(r) != except {
                routes.extend(route_destination(r));
            }
        })?;
        Ok(routes)
    }
}

/// The interface a route goes out through, if it names one.
fn out_interface(msg: &Rtmsg) -> Option<u32> {
    msg.rtattrs()
        .iter()
        .find(|a| *a.rta_type() == Rta::Oif)
        .and_then(|a| u32_payload(a.rta_payload().as_ref()))
}

fn dump_request() -> io::Result<Rtmsg> {
    RtmsgBuilder::default()
        .rtm_family(RtAddrFamily::Unspecified)
        .rtm_dst_len(0)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Unspec)
        .rtm_protocol(Rtprot::Unspec)
        .rtm_scope(RtScope::Universe)
        .rtm_type(Rtn::Unspec)
        .build()
        .map_err(protocol_error)
}

fn device_route(index: u32, route: &RouteSpec) -> io::Result<Rtmsg> {
    let dst = route.dst.network();
    let mut attrs = RtBuffer::new();
    attrs.push(attr(Rta::Dst, ip_bytes(&dst))?);
    attrs.push(attr(Rta::Oif, index)?);
    // IPv6 routes without a metric get the kernel's default for them.
    let metric = route.metric.or(dst.is_ipv6().then_some(1024));
    if let Some(metric) = metric {
        attrs.push(attr(Rta::Priority, metric)?);
    }
    // A route with no gateway reaches its hosts on the link.
    let scope = if dst.is_ipv4() {
        RtScope::Link
    } else {
        RtScope::Universe
    };
    route_message(&dst, route.dst.prefix_len(), Rtprot::Boot, scope, attrs)
}

fn route_message(
    dst: &IpAddr,
    len: u8,
    protocol: Rtprot,
    scope: RtScope,
    attrs: RtBuffer<Rta, neli::types::Buffer>,
) -> io::Result<Rtmsg> {
    RtmsgBuilder::default()
        .rtm_family(family_of(dst))
        .rtm_dst_len(len)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Main)
        .rtm_protocol(protocol)
        .rtm_scope(scope)
        .rtm_type(Rtn::Unicast)
        .rtm_flags(RtmF::empty())
        .rtattrs(attrs)
        .build()
        .map_err(protocol_error)
}

/// A route's destination prefix; the default route has length 0.
fn route_destination(msg: &Rtmsg) -> Option<Cidr> {
    let len = *msg.rtm_dst_len();
    let dst = msg
        .rtattrs()
        .iter()
        .find(|a| *a.rta_type() == Rta::Dst)
        .and_then(|a| ip_from_bytes(a.rta_payload().as_ref()));
    match (dst, msg.rtm_family()) {
        (Some(dst), _) => Cidr::new(dst, len),
        (None, RtAddrFamily::Inet) => Cidr::new(IpAddr::from([0u8; 4]), 0),
        (None, RtAddrFamily::Inet6) => Cidr::new(IpAddr::from([0u8; 16]), 0),
        (None, _) => None,
    }
}
