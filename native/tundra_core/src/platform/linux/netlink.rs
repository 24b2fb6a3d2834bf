//! rtnetlink requests: address, MTU and link state of an interface, and
//! reading them back. One request at a time over a blocking NETLINK_ROUTE
//! socket; callers run this off the BEAM's normal schedulers.

use std::io;
use std::net::IpAddr;

use neli::consts::nl::{NlmF, Nlmsg};
use neli::consts::rtnl::{
    Ifa, IfaF, Iff, Ifla, RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmF, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::rtnl::{
    Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder, RtmsgBuilder,
};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;

use crate::config::{address_bits, ip_from_bytes};
use crate::platform::{InterfaceAddress, LinkInfo};
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
        self.dump(
            Rtm::Getaddr,
            IfaddrmsgBuilder::default()
                .ifa_family(RtAddrFamily::Unspecified)
                .ifa_prefixlen(0)
                .ifa_scope(RtScope::Universe)
                .ifa_index(0)
                .build()
                .map_err(protocol_error)?,
            |a: &Ifaddrmsg| {
                if *a.ifa_index() == index {
                    addresses.extend(interface_address(a));
                }
            },
        )?;
        Ok(LinkInfo {
            index,
            mtu,
            up,
            addresses,
        })
    }
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
