//! rtnetlink requests: links, addresses and routes of interfaces, changed
//! and read back. One request at a time over a blocking NETLINK_ROUTE
//! socket; callers run this off the BEAM's normal schedulers. The socket
//! belongs to the network namespace of the thread that opened it.

mod address;
mod link;
mod monitor;
mod route;

pub use monitor::LinkMonitor;

use std::io;
use std::net::IpAddr;

use neli::consts::nl::{NlmF, Nlmsg};
use neli::consts::rtnl::{RtAddrFamily, RtaType, Rtm};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::rtnl::{Rtattr, RtattrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;

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

/// One attribute of type `ty` holding `payload`.
fn attr<T, P>(ty: T, payload: P) -> io::Result<Rtattr<T, Buffer>>
where
    T: RtaType,
    P: neli::Size + neli::ToBytes,
{
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(payload)
        .build()
        .map_err(protocol_error)
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
        self.exchange::<P, Buffer>(ty, NlmF::ACK | flags, payload, |_| false)
    }

    /// Sends a request for one object and returns the payload of the reply.
    fn get<S, R>(&mut self, ty: Rtm, payload: S) -> io::Result<R>
    where
        S: neli::Size + neli::ToBytes + std::fmt::Debug,
        R: neli::Size + neli::FromBytesWithInput<Input = usize> + std::fmt::Debug + Clone,
    {
        let mut reply = None;
        self.exchange(ty, NlmF::empty(), payload, |r: &R| {
            reply = Some(r.clone());
            true
        })?;
        reply.ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// Sends a dump request and hands every payload of the reply to `visit`.
    fn dump<S, R>(&mut self, ty: Rtm, payload: S, mut visit: impl FnMut(&R)) -> io::Result<()>
    where
        S: neli::Size + neli::ToBytes + std::fmt::Debug,
        R: neli::Size + neli::FromBytesWithInput<Input = usize> + std::fmt::Debug,
    {
        self.exchange(ty, NlmF::DUMP, payload, |r: &R| {
            visit(r);
            false
        })
    }

    /// Sends one request and reads the replies to it (others are skipped)
    /// until the kernel acknowledges it, ends a dump, refuses it (its
    /// errno), or `take` says it has what it wanted.
    fn exchange<S, R>(
        &mut self,
        ty: Rtm,
        flags: NlmF,
        payload: S,
        mut take: impl FnMut(&R) -> bool,
    ) -> io::Result<()>
    where
        S: neli::Size + neli::ToBytes + std::fmt::Debug,
        R: neli::Size + neli::FromBytesWithInput<Input = usize> + std::fmt::Debug,
    {
        let seq = self.send(ty, flags, payload)?;
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
                    NlPayload::Ack(_) => return Ok(()),
                    NlPayload::Err(err) => {
                        return Err(io::Error::from_raw_os_error(-*err.error()));
                    }
                    NlPayload::Payload(p) if take(p) => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

fn u32_payload(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

fn u64_at(payload: &[u8], index: usize) -> Option<u64> {
    let at = index * 8;
    Some(u64::from_ne_bytes(
        payload.get(at..at + 8)?.try_into().ok()?,
    ))
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

    #[test]
    fn stats_are_read_as_native_u64s() {
        let mut stats = Vec::new();
        for n in 1u64..=8 {
            stats.extend_from_slice(&n.to_ne_bytes());
        }
        assert_eq!(u64_at(&stats, 0), Some(1));
        assert_eq!(u64_at(&stats, 7), Some(8));
        assert_eq!(u64_at(&stats, 8), None);
    }
}
