//! Links: state, MTU, Ethernet address and counters of one interface; the
//! namespace's TUN devices; removing one.

use std::io;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, IflaInfo, RtAddrFamily, Rtm};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder};
use neli::types::{Buffer, RtBuffer};

use super::{attr, nested_attributes, protocol_error, u32_payload, u64_at, Rtnl};
use crate::platform::{LinkStats, TunLink};

/// What RTM_GETLINK says of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    pub stats: LinkStats,
    /// Its TUN/TAP details, if it is one.
    pub tun: Option<TunLink>,
}

/// IFLA_TUN_* attributes inside IFLA_INFO_DATA (linux/if_link.h).
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_PI: u16 = 4;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES: u16 = 9;
/// IFLA_TUN_TYPE's value for a TAP device (IFF_TAP).
const TYPE_TAP: u8 = 2;
/// Inside IFLA_AF_SPEC: the family's nest (AF_INET6), and in it the
/// address generation mode (linux/if_link.h) and its "none" value.
const AF_INET6: u16 = libc::AF_INET6 as u16;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const ADDR_GEN_MODE_NONE: u8 = 1;

impl Rtnl {
    /// Changes what is given of interface `index`: its MTU (and with it
    /// the most segments of a super-packet, see `gso_max_segs`), its
    /// Ethernet address, whether it is up.
    pub fn set_link(
        &mut self,
        index: u32,
        mtu: Option<u32>,
        up: Option<bool>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let mut attrs = RtBuffer::new();
        if let Some(mtu) = mtu {
            attrs.push(attr(Ifla::Mtu, mtu)?);
            attrs.push(attr(Ifla::GsoMaxSegs, gso_max_segs(mtu))?);
        }
        if let Some(mac) = mac {
            attrs.push(attr(Ifla::Address, &mac[..])?);
        }
        let (flags, change) = match up {
            Some(true) => (Iff::UP, Iff::UP),
            Some(false) => (Iff::empty(), Iff::UP),
            None => (Iff::empty(), Iff::empty()),
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

    /// Gives interface `index` no automatic IPv6: no link-local address,
    /// so none of the kernel's router solicitations or MLD reports either
    /// (IFLA_AF_SPEC/AF_INET6/IFLA_INET6_ADDR_GEN_MODE = NONE, what `ip
    /// link set NAME addrgenmode none` sets). Unlike writing
    /// `/proc/sys/net/ipv6/conf/NAME/disable_ipv6`, it works where /proc/sys
    /// is read-only (the server's systemd unit); an IPv6 address added on
    /// purpose still works.
    pub fn set_no_ipv6_addresses(&mut self, index: u32) -> io::Result<()> {
        let mode = attr(
            Ifla::UnrecognizedConst(IFLA_INET6_ADDR_GEN_MODE),
            ADDR_GEN_MODE_NONE,
        )?;
        let inet6 = attr(Ifla::UnrecognizedConst(AF_INET6), Buffer::from(Vec::new()))?
            .nest(&mode)
            .map_err(protocol_error)?;
        let af_spec = attr(Ifla::AfSpec, Buffer::from(Vec::new()))?
            .nest(&inet6)
            .map_err(protocol_error)?;
        let mut attrs = RtBuffer::new();
        attrs.push(af_spec);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(i32::try_from(index).map_err(protocol_error)?)
            .rtattrs(attrs)
            .build()
            .map_err(protocol_error)?;
        self.change(Rtm::Newlink, NlmF::empty(), msg)
    }

    /// Interface `index` as the kernel sees it (one RTM_GETLINK, not a dump
    /// of every link); `ENODEV` if there is none.
    pub fn link(&mut self, index: u32) -> io::Result<LinkState> {
        let request = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(i32::try_from(index).map_err(protocol_error)?)
            .build()
            .map_err(protocol_error)?;
        let reply: Ifinfomsg = self.get(Rtm::Getlink, request)?;
        link_state(&reply).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// Every TUN (and TAP) device of this network namespace, with how many
    /// file descriptors hold it.
    pub fn tun_links(&mut self) -> io::Result<Vec<TunLink>> {
        // Asks the kernel to dump only links of kind "tun" (kernels before
        // 4.15 ignore the filter; the kind is checked on each reply too).
        let kind = attr(IflaInfo::Kind, &b"tun\0"[..])?;
        let linkinfo = attr(Ifla::Linkinfo, Buffer::from(Vec::new()))?
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
            links.extend(link_state(l).and_then(|l| l.tun));
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

/// Bytes one `UDP_SEGMENT` send may carry (65,507 over IPv4, less a
/// margin), which a tunnel sends a super-packet's segments with.
const UDP_SEGMENT_BYTES: u32 = 65_000;

/// The most segments the kernel may put in one super-packet for an
/// offload device of this MTU: as many MTU-sized packets as one
/// `UDP_SEGMENT` send carries, so that each super-packet a tunnel reads
/// leaves in one send (at MTU 1400, 46: with the kernel's 64 KB default
/// every super-packet was two sends, 46 + 2). Devices without offload get
/// no super-packets, so this changes nothing for them.
pub fn gso_max_segs(mtu: u32) -> u32 {
    (UDP_SEGMENT_BYTES / mtu.max(1)).clamp(1, 128)
}

/// A link message as a `LinkState`.
pub(super) fn link_state(msg: &Ifinfomsg) -> Option<LinkState> {
    let attrs = msg.rtattrs().get_attr_handle();
    let index = u32::try_from(*msg.ifi_index()).ok()?;
    let name = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        .ok()?;
    let mtu = attrs.get_attr_payload_as::<u32>(Ifla::Mtu).ok()?;
    let mac = attrs
        .get_attribute(Ifla::Address)
        .and_then(|a| <[u8; 6]>::try_from(a.rta_payload().as_ref()).ok());
    let stats = attrs
        .get_attribute(Ifla::Stats64)
        .map(|a| stats64(a.rta_payload().as_ref()))
        .unwrap_or_default();
    let carrier = attrs.get_attr_payload_as::<u8>(Ifla::Carrier).ok();
    let tun = attrs
        .get_nested_attributes::<IflaInfo>(Ifla::Linkinfo)
        .ok()
        .and_then(|info| {
            let kind = info.get_attribute(IflaInfo::Kind)?.rta_payload().as_ref();
            if kind.strip_suffix(b"\0").unwrap_or(kind) != b"tun" {
                return None;
            }
            let data = info.get_attribute(IflaInfo::Data)?.rta_payload().as_ref();
            Some(tun_link(index, &name, data, carrier.unwrap_or(0)))
        })
        .flatten();
    Some(LinkState {
        index,
        up: msg.ifi_flags().contains(Iff::UP),
        name,
        mtu,
        mac,
        stats,
        tun,
    })
}

/// The TUN details in IFLA_INFO_DATA.
///
/// The kernel reports queue counts only for multi-queue devices. For the
/// others the carrier tells: TUN turns it on when an fd attaches and off
/// when the last one detaches (a holder may also turn it off itself, with
/// TUNSETCARRIER).
fn tun_link(index: u32, name: &str, data: &[u8], carrier: u8) -> Option<TunLink> {
    let (mut persist, mut queues, mut packet_info, mut tap) = (false, None, false, false);
    let mut multi_queue = false;
    for (kind, payload) in nested_attributes(data) {
        let flag = payload.first().is_some_and(|&b| b != 0);
        match kind {
            IFLA_TUN_TYPE => tap = payload.first() == Some(&TYPE_TAP),
            IFLA_TUN_PI => packet_info = flag,
            IFLA_TUN_PERSIST => persist = flag,
            IFLA_TUN_MULTI_QUEUE => multi_queue = flag,
            IFLA_TUN_NUM_QUEUES | IFLA_TUN_NUM_DISABLED_QUEUES => {
                *queues.get_or_insert(0) += u32_payload(payload)?;
            }
            _ => {}
        }
    }
    Some(TunLink {
        index,
        name: name.into(),
        persist,
        attached: queues.unwrap_or(u32::from(carrier != 0)),
        packet_info,
        tap,
        multi_queue,
    })
}

/// The counters of `struct rtnl_link_stats64` that `info/1` reports.
fn stats64(payload: &[u8]) -> LinkStats {
    let at = |i| u64_at(payload, i).unwrap_or(0);
    LinkStats {
        rx_packets: at(0),
        tx_packets: at(1),
        rx_bytes: at(2),
        tx_bytes: at(3),
        rx_errors: at(4),
        tx_errors: at(5),
        rx_dropped: at(6),
        tx_dropped: at(7),
    }
}

#[cfg(test)]
mod tests {
    use super::gso_max_segs;

    #[test]
    fn a_super_packet_fits_one_udp_segment_send() {
        assert_eq!(gso_max_segs(1400), 46);
        assert_eq!(gso_max_segs(1500), 43);
        assert!(gso_max_segs(1400) * 1400 <= 65_000);
        assert_eq!(gso_max_segs(9000), 7);
        // Never more than the splitter takes, never none.
        assert_eq!(gso_max_segs(68), 128);
        assert_eq!(gso_max_segs(65_535), 1);
    }
}
