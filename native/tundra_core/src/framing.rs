//! Per-packet headers some TUN flavours put before the IP packet.
//!
//! The public API always deals in raw IP packets; a device whose fd carries
//! a header has it added on write and removed on read by the NIF, using the
//! functions here (plain, platform-independent, unit-tested).

/// How packets are framed on a device's file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Raw IP packets (Linux `IFF_NO_PI`).
    Raw,
    /// Linux `struct tun_pi`: 2 bytes flags, 2 bytes EtherType (big endian).
    LinuxPacketInfo,
    /// macOS utun: the packet's address family as a 4-byte big-endian
    /// integer (Darwin's `AF_INET` or `AF_INET6`).
    AddressFamily,
    /// Ethernet frames, no header before them (a Linux TAP device with
    /// `IFF_NO_PI`).
    Ethernet,
    /// Linux `IFF_VNET_HDR`: a `virtio_net_hdr` before each IP packet,
    /// which may describe a super-packet to split (see `offload`).
    VirtioNet,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Darwin's address family numbers, which utun headers carry. Written out
/// rather than taken from `libc` so that Linux builds (and tests) use the
/// Darwin values too: Linux's `AF_INET6` is 10, Darwin's 30.
pub const DARWIN_AF_INET: u32 = 2;
pub const DARWIN_AF_INET6: u32 = 30;

/// Largest header any framing adds.
pub const MAX_HEADER_LEN: usize = crate::offload::VNET_HDR_LEN;

impl Framing {
    /// Bytes of header before each packet.
    pub fn header_len(self) -> usize {
        match self {
            Framing::Raw | Framing::Ethernet => 0,
            Framing::LinuxPacketInfo | Framing::AddressFamily => 4,
            Framing::VirtioNet => crate::offload::VNET_HDR_LEN,
        }
    }

    /// The header to write before `packet`, judged by its IP version nibble.
    /// Only the first `header_len()` bytes are meaningful.
    pub fn header_for(self, packet: &[u8]) -> [u8; MAX_HEADER_LEN] {
        match self {
            // An ordinary packet's vnet header is all zeros.
            Framing::Raw | Framing::Ethernet | Framing::VirtioNet => [0; MAX_HEADER_LEN],
            Framing::LinuxPacketInfo => {
                let proto = match packet.first().map(|b| b >> 4) {
                    Some(6) => ETH_P_IPV6,
                    _ => ETH_P_IP,
                };
                let [hi, lo] = proto.to_be_bytes();
                let mut header = [0; MAX_HEADER_LEN];
                header[..4].copy_from_slice(&[0, 0, hi, lo]);
                header
            }
            Framing::AddressFamily => {
                let family = match packet.first().map(|b| b >> 4) {
                    Some(6) => DARWIN_AF_INET6,
                    _ => DARWIN_AF_INET,
                };
                let mut header = [0; MAX_HEADER_LEN];
                header[..4].copy_from_slice(&family.to_be_bytes());
                header
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_has_no_header() {
        assert_eq!(Framing::Raw.header_len(), 0);
    }

    #[test]
    fn packet_info_carries_the_ethertype() {
        let v4 = [0x45u8, 0, 0, 20];
        let v6 = [0x60u8, 0, 0, 0];
        assert_eq!(Framing::LinuxPacketInfo.header_len(), 4);
        assert_eq!(
            Framing::LinuxPacketInfo.header_for(&v4)[..4],
            [0, 0, 0x08, 0x00]
        );
        assert_eq!(
            Framing::LinuxPacketInfo.header_for(&v6)[..4],
            [0, 0, 0x86, 0xDD]
        );
    }

    #[test]
    fn utun_header_is_the_darwin_address_family() {
        let v4 = [0x45u8, 0, 0, 20];
        let v6 = [0x60u8, 0, 0, 0];
        assert_eq!(Framing::AddressFamily.header_len(), 4);
        assert_eq!(Framing::AddressFamily.header_for(&v4)[..4], [0, 0, 0, 2]);
        assert_eq!(Framing::AddressFamily.header_for(&v6)[..4], [0, 0, 0, 30]);
    }

    #[test]
    fn an_ordinary_packets_vnet_header_is_zeros() {
        assert_eq!(Framing::VirtioNet.header_len(), 10);
        assert_eq!(Framing::VirtioNet.header_for(&[0x45]), [0; 10]);
    }
}
