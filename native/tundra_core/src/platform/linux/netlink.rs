//! rtnetlink requests: address, MTU and link state of an interface, and
//! reading them back. One request at a time over a blocking NETLINK_ROUTE
//! socket; callers run this off the BEAM's normal schedulers.

use std::io;
use std::net::IpAddr;

use neli::consts::nl::{NlmF, Nlmsg};
use neli::consts::rtnl::{
    Ifa, IfaF, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmF, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::rtnl::{
    Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder, Rtmsg, RtmsgBuilder,
};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;

use crate::cidr::Cidr;
use crate::config::{address_bits, ip_from_bytes};
use crate::platform::{InterfaceAddress, LinkInfo, TunLink};
use crate::DeviceConfig;

/// A connected NETLINK_ROUTE socket.
pub struct Rtnl {
    socket: NlSocketHandle,
    seq: u32,
}

/// Anything neli reports that is not a kernel errno is a malformed
/// exchange; report it as EIO rather than inventing a message.
fn protocol_error<E: std::fmt::Debug>(_err: E) -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn socket_error(err: neli::err::SocketError) -> io::Error {
    match err {
        neli::err::SocketError::Io(e) => match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::from(e.kind()),
        },
        other => protocol_error(other),
    }
}

fn ip_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family_of(addr: &IpAddr) -> RtAddrFamily {
    match addr {
        IpAddr::V4(_) => RtAddrFamily::Inet,
        IpAddr::V6(_) => RtAddrFamily::Inet6,
    }
}

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let socket = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(socket_error)?;
        Ok(Rtnl { socket, seq: 0 })
    }

    fn send<P>(&mut self, ty: Rtm, flags: NlmF, payload: P) -> io::Result<u32>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::REQUEST | flags)
            .nl_seq(self.seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(protocol_error)?;
        self.socket.send(&msg).map_err(socket_error)?;
        Ok(self.seq)
    }

    /// Sends a request that changes state and waits for its acknowledgement,
    /// returning the kernel's errno if it refused.
    fn change<P>(&mut self, ty: Rtm, flags: NlmF, payload: P) -> io::Result<()>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        let seq = self.send(ty, NlmF::ACK | flags, payload)?;
        loop {
            let (messages, _) = self.socket.recv::<Rtm, Buffer>().map_err(socket_error)?;
            for message in messages {
                let message: Nlmsghdr<Rtm, Buffer> = message.map_err(socket_error)?;
                if *message.nl_seq() != seq {
                    continue;
                }
                match message.nl_payload() {
                    NlPayload::Ack(_) => return Ok(()),
                    NlPayload::Err(err) => {
                        return Err(io::Error::from_raw_os_error(-*err.error()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a dump request and hands every payload of the reply to `visit`.
    fn dump<S, R>(&mut self, ty: Rtm, payload: S, mut visit: impl FnMut(&R)) -> io::Result<()>
    where
        S: neli::Size + neli::ToBytes + std::fmt::Debug,
        R: neli::Size + neli::FromBytesWithInput<Input = usize> + std::fmt::Debug,
    {
        let seq = self.send(ty, NlmF::DUMP, payload)?;
        loop {
            let (messages, _) = self.socket.recv::<u16, R>().map_err(socket_error)?;
            for message in messages {
                let message: Nlmsghdr<u16, R> = message.map_err(socket_error)?;
                if *message.nl_seq() != seq {
                    continue;
                }
                if *message.nl_type() == u16::from(Nlmsg::Done) {
                    return Ok(());
                }
                match message.nl_payload() {
                    NlPayload::Err(err) => {
                        return Err(io::Error::from_raw_os_error(-*err.error()));
                    }
                    NlPayload::Payload(p) => visit(p),
                    _ => {}
                }
            }
        }
    }

    /// Adds the configured address (and peer) to interface `index`.
    pub fn add_address(&mut self, index: u32, config: &DeviceConfig) -> io::Result<()> {
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifa::Local)
                .rta_payload(ip_bytes(&config.address))
                .build()
                .map_err(protocol_error)?,
        );
        // IFA_ADDRESS is the peer on a point-to-point link, else the address.
        let peer = config.dstaddr.unwrap_or(config.address);
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifa::Address)
                .rta_payload(ip_bytes(&peer))
                .build()
                .map_err(protocol_error)?,
        );
        // No duplicate address detection: on a point-to-point TUN link there
        // is nobody to collide with, and DAD would leave an IPv6 address
        // unusable ("tentative") for a second or more after create returns.
        let flags = if config.address.is_ipv6() {
            IfaF::NODAD
        } else {
            IfaF::empty()
        };
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(family_of(&config.address))
            .ifa_prefixlen(config.prefix)
            .ifa_flags(flags)
            .ifa_scope(RtScope::Universe)
            .ifa_index(index)
            .rtattrs(attrs)
            .build()
            .map_err(protocol_error)?;
        self.change(Rtm::Newaddr, NlmF::CREATE | NlmF::REPLACE, msg)
    }

    /// Routes `peer`/128 through interface `index` now.
    ///
    /// The kernel adds an IPv6 address's peer route only once duplicate
    /// address detection completes, from a workqueue, even with NODAD: it
    /// may appear after `create` has returned. Adding it here, exactly as
    /// the kernel would (main table, kernel protocol, metric 256), makes the
    /// peer reachable when `create` returns; the kernel's own add then finds
    /// it present and leaves it.
    pub fn add_ipv6_peer_route(&mut self, index: u32, peer: &IpAddr) -> io::Result<()> {
        const ADDRCONF_METRIC: u32 = 256;
        let mut attrs = RtBuffer::new();
        for attr in [
            RtattrBuilder::default()
                .rta_type(Rta::Dst)
                .rta_payload(ip_bytes(peer))
                .build(),
            RtattrBuilder::default()
                .rta_type(Rta::Oif)
                .rta_payload(index)
                .build(),
            RtattrBuilder::default()
                .rta_type(Rta::Priority)
                .rta_payload(ADDRCONF_METRIC)
                .build(),
        ] {
            attrs.push(attr.map_err(protocol_error)?);
        }
        let msg = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::Inet6)
            .rtm_dst_len(128)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Main)
            .rtm_protocol(Rtprot::Kernel)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unicast)
            .rtm_flags(RtmF::empty())
            .rtattrs(attrs)
            .build()
            .map_err(protocol_error)?;
        match self.change(Rtm::Newroute, NlmF::CREATE | NlmF::EXCL, msg) {
            // The kernel's workqueue was quicker: the route is there.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Sets the MTU and, if `up`, brings the link up.
    pub fn set_link(&mut self, index: u32, mtu: u32, up: bool) -> io::Result<()> {
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Mtu)
                .rta_payload(mtu)
                .build()
                .map_err(protocol_error)?,
        );
        let (flags, change) = if up {
            (Iff::UP, Iff::UP)
        } else {
            (Iff::empty(), Iff::empty())
        };
        let index = i32::try_from(index).map_err(protocol_error)?;
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index)
            .ifi_flags(flags)
            .ifi_change(change)
            .rtattrs(attrs)
            .build()
            .map_err(protocol_error)?;
        self.change(Rtm::Newlink, NlmF::empty(), msg)
    }

    /// MTU, state and addresses of interface `index`.
    pub fn link_info(&mut self, index: u32) -> io::Result<LinkInfo> {
        let mut link = None;
        self.dump(
            Rtm::Getlink,
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .build()
                .map_err(protocol_error)?,
            |l: &Ifinfomsg| {
                if u32::try_from(*l.ifi_index()).ok() == Some(index) {
                    let mtu = l
                        .rtattrs()
                        .get_attr_handle()
                        .get_attr_payload_as::<u32>(Ifla::Mtu)
                        .ok();
                    link = Some((mtu, l.ifi_flags().contains(Iff::UP)));
                }
            },
        )?;
        let (mtu, up) = link.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let mtu = mtu.ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;

        let mut addresses = Vec::new();
        self.each_address(|a| {
            if *a.ifa_index() == index {
                addresses.extend(interface_address(a));
            }
        })?;
        Ok(LinkInfo {
            index,
            mtu,
            up,
            addresses,
        })
    }

    /// Dumps the addresses of every interface into `visit`.
    fn each_address(&mut self, visit: impl FnMut(&Ifaddrmsg)) -> io::Result<()> {
        let request = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(protocol_error)?;
        self.dump(Rtm::Getaddr, request, visit)
    }

    /// Every address assigned to an interface of this network namespace.
    pub fn all_addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        let mut addresses = Vec::new();
        self.each_address(|a| addresses.extend(interface_address(a).map(|a| a.address)))?;
        Ok(addresses)
    }

    /// The destination of every route of this network namespace, in every
    /// table and of every type (unicast, local, broadcast, blackhole, ...).
    pub fn all_routes(&mut self) -> io::Result<Vec<Cidr>> {
        let request = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::Unspecified)
            .rtm_dst_len(0)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Unspec)
            .rtm_protocol(Rtprot::Unspec)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unspec)
            .build()
            .map_err(protocol_error)?;
        let mut routes = Vec::new();
        self.dump(Rtm::Getroute, request, |r: &Rtmsg| {
            routes.extend(route_destination(r));
        })?;
        Ok(routes)
    }

    /// Every TUN (and TAP) device of this network namespace, with how many
    /// file descriptors hold it.
    pub fn tun_links(&mut self) -> io::Result<Vec<TunLink>> {
        // Asks the kernel to dump only links of kind "tun" (kernels before
        // 4.15 ignore the filter; the kind is checked on each reply too).
        let kind = RtattrBuilder::default()
            .rta_type(IflaInfo::Kind)
            .rta_payload(&b"tun\0"[..])
            .build()
            .map_err(protocol_error)?;
        let linkinfo = RtattrBuilder::default()
            .rta_type(Ifla::Linkinfo)
            .rta_payload(Buffer::from(Vec::new()))
            .build()
            .map_err(protocol_error)?
            .nest(&kind)
            .map_err(protocol_error)?;
        let mut attrs = RtBuffer::new();
        attrs.push(linkinfo);
        let request = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .build()
            .map_err(protocol_error)?;
        let mut links = Vec::new();
        self.dump(Rtm::Getlink, request, |l: &Ifinfomsg| {
            links.extend(tun_link(l));
        })?;
        Ok(links)
    }

    /// Deletes interface `index`.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let index = i32::try_from(index).map_err(protocol_error)?;
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index)
            .build()
            .map_err(protocol_error)?;
        self.change(Rtm::Dellink, NlmF::empty(), msg)
    }
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

/// IFLA_TUN_* attributes inside IFLA_INFO_DATA (linux/if_link.h).
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES: u16 = 9;

/// A link message as a `TunLink`, if it is a TUN/TAP device.
///
/// The kernel reports queue counts only for multi-queue devices. For the
/// others the carrier tells: TUN turns it on when an fd attaches and off
/// when the last one detaches (a holder may also turn it off itself, with
/// TUNSETCARRIER).
fn tun_link(msg: &Ifinfomsg) -> Option<TunLink> {
    let attrs = msg.rtattrs().get_attr_handle();
    let name = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        .ok()?;
    let carrier = attrs.get_attr_payload_as::<u8>(Ifla::Carrier).ok()?;
    let info = attrs
        .get_nested_attributes::<IflaInfo>(Ifla::Linkinfo)
        .ok()?;
    let kind = info.get_attribute(IflaInfo::Kind)?.rta_payload().as_ref();
    if kind.strip_suffix(b"\0").unwrap_or(kind) != b"tun" {
        return None;
    }
    let data = info.get_attribute(IflaInfo::Data)?.rta_payload().as_ref();
    let (mut persist, mut queues) = (false, None);
    for (kind, payload) in nested_attributes(data) {
        match kind {
            IFLA_TUN_PERSIST => persist = payload.first().is_some_and(|&b| b != 0),
            IFLA_TUN_NUM_QUEUES | IFLA_TUN_NUM_DISABLED_QUEUES => {
                *queues.get_or_insert(0) += u32_payload(payload)?;
            }
            _ => {}
        }
    }
    Some(TunLink {
        index: u32::try_from(*msg.ifi_index()).ok()?,
        name,
        persist,
        attached: queues.unwrap_or(u32::from(carrier != 0)),
    })
}

fn u32_payload(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// The (type, payload) pairs of a buffer of netlink attributes: each is a
/// native-endian u16 length (header included) and u16 type, its payload,
/// and padding to 4 bytes. Stops at the first malformed one.
fn nested_attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?);
        let payload = bytes.get(4..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
        // NLA_F_NESTED and NLA_F_NET_BYTEORDER live in the type's top bits.
        Some((kind & 0x3FFF, payload))
    })
}

/// An address message as an `InterfaceAddress`: IFA_LOCAL is the address
/// when present (then IFA_ADDRESS, if different, is the peer).
fn interface_address(msg: &Ifaddrmsg) -> Option<InterfaceAddress> {
    let mut local = None;
    let mut address = None;
    for attr in msg.rtattrs().iter() {
        let bytes = attr.rta_payload().as_ref();
        match attr.rta_type() {
            Ifa::Local => local = ip_from_bytes(bytes),
            Ifa::Address => address = ip_from_bytes(bytes),
            _ => {}
        }
    }
    let (own, peer) = match (local, address) {
        (Some(l), Some(a)) if l != a => (l, Some(a)),
        (Some(l), _) => (l, None),
        (None, Some(a)) => (a, None),
        (None, None) => return None,
    };
    let prefix = (*msg.ifa_prefixlen()).min(address_bits(&own));
    Some(InterfaceAddress {
        address: own,
        prefix,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_walked_with_padding_and_stop_at_junk() {
        let mut bytes = Vec::new();
        for (kind, payload) in [(6u16, &[1u8][..]), (8, &3u32.to_ne_bytes()[..])] {
            let len = 4 + payload.len();
            bytes.extend_from_slice(&(len as u16).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(payload);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        let found: Vec<_> = nested_attributes(&bytes).collect();
        assert_eq!(found, vec![(6, &[1u8][..]), (8, &3u32.to_ne_bytes()[..])]);
        // A length past the end, or shorter than the header, ends the walk.
        assert_eq!(nested_attributes(&[200, 0, 1, 0, 9]).count(), 0);
        assert_eq!(nested_attributes(&[2, 0, 1, 0]).count(), 0);
    }
}
