//! Addresses of interfaces: adding, removing, reading.

use std::io;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder};
use neli::types::RtBuffer;

use super::{attr, family_of, ip_bytes, protocol_error, Rtnl};
use crate::cidr::{address_bits, ip_from_bytes};
use crate::config::AddressSpec;
use crate::platform::InterfaceAddress;

impl Rtnl {
    /// Adds `spec` to interface `index` (`EEXIST` if it has it).
    pub fn add_address(&mut self, index: u32, spec: &AddressSpec) -> io::Result<()> {
        let msg = address_message(index, spec)?;
        self.change(Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, msg)
    }

    /// Removes `spec` from interface `index` (`EADDRNOTAVAIL` if it has not
    /// got it).
    pub fn remove_address(&mut self, index: u32, spec: &AddressSpec) -> io::Result<()> {
        let msg = address_message(index, spec)?;
        self.change(Rtm::Deladdr, NlmF::empty(), msg)
    }

    /// The addresses of interface `index`.
    pub fn addresses_of(&mut self, index: u32) -> io::Result<Vec<InterfaceAddress>> {
        let mut addresses = Vec::new();
        self.each_address(|a| {
            if *a.ifa_index() == index {
                addresses.extend(interface_address(a));
            }
        })?;
        Ok(addresses)
    }

    /// Every address assigned to an interface of this network namespace
    /// (up or down), but interface `except`.
    pub fn all_addresses(&mut self, except: Option<u32>) -> io::Result<Vec<InterfaceAddress>> {
        let mut addresses = Vec::new();
        self.each_address(|a| {
            if Some(*a.ifa_index()) != except {
                addresses.extend(interface_address(a));
            }
        })?;
        Ok(addresses)
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
}

fn address_message(index: u32, spec: &AddressSpec) -> io::Result<Ifaddrmsg> {
    let mut attrs = RtBuffer::new();
    attrs.push(attr(Ifa::Local, ip_bytes(&spec.address))?);
    // IFA_ADDRESS is the peer on a point-to-point link, else the address.
    let peer = spec.dstaddr.unwrap_or(spec.address);
    attrs.push(attr(Ifa::Address, ip_bytes(&peer))?);
    // No duplicate address detection: on a point-to-point TUN link there
    // is nobody to collide with, and DAD would leave an IPv6 address
    // unusable ("tentative") for a second or more after the call returns.
    let flags = if spec.address.is_ipv6() {
        IfaF::NODAD
    } else {
        IfaF::empty()
    };
    IfaddrmsgBuilder::default()
        .ifa_family(family_of(&spec.address))
        .ifa_prefixlen(spec.prefix)
        .ifa_flags(flags)
        .ifa_scope(RtScope::Universe)
        .ifa_index(index)
        .rtattrs(attrs)
        .build()
        .map_err(protocol_error)
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
