//! The `virtio_net_hdr` before every packet of an offload device, and
//! the offloads (`TUNSETOFFLOAD`'s `TUN_F_*`) a device has.

/// Bytes of `struct virtio_net_hdr` (without `num_buffers`, as TUN uses
/// it unless told otherwise).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header's sum; the rest is to do.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Set with a TCP GSO type when the segments carry ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr`, in the host's byte order (TUN's default, the
/// "legacy" virtio layout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let word = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Whether the packet it heads is a super-packet to split.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Offloads turned on for a device: `TUNSETOFFLOAD`'s `TUN_F_*` bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads(pub u32);

impl Offloads {
    /// Checksums left partial (the rest are useless without it).
    pub const CSUM: u32 = 0x01;
    pub const TSO4: u32 = 0x02;
    pub const TSO6: u32 = 0x04;
    pub const TSO_ECN: u32 = 0x08;
    pub const USO4: u32 = 0x20;
    pub const USO6: u32 = 0x40;

    /// What Tundra asks for, in order of preference: everything; without
    /// UDP segmentation (Linux before 6.2); checksums only; nothing.
    pub const LADDER: [u32; 4] = [
        Self::CSUM | Self::TSO4 | Self::TSO6 | Self::TSO_ECN | Self::USO4 | Self::USO6,
        Self::CSUM | Self::TSO4 | Self::TSO6 | Self::TSO_ECN,
        Self::CSUM,
        0,
    ];

    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Each offload's bit and name (as `info/1` reports them and
    /// `setopts/2` takes them): the one table of both.
    const NAMED: [(u32, &'static str); 6] = [
        (Self::CSUM, "csum"),
        (Self::TSO4, "tso4"),
        (Self::TSO6, "tso6"),
        (Self::TSO_ECN, "tso_ecn"),
        (Self::USO4, "uso4"),
        (Self::USO6, "uso6"),
    ];

    /// The offloads' names.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED
            .into_iter()
            .filter(|&(bit, _)| self.contains(bit))
            .map(|(_, name)| name)
            .collect()
    }

    /// The offloads named; `None` if a name is none of theirs.
    pub fn from_names(names: &[&str]) -> Option<Offloads> {
        names.iter().try_fold(Offloads::default(), |set, name| {
            let (bit, _) = Self::NAMED.into_iter().find(|(_, n)| n == name)?;
            Some(Offloads(set.0 | bit))
        })
    }
}

/// Turns on the most of `Offloads::LADDER` that `try_set` (one
/// `TUNSETOFFLOAD`) accepts. A kernel that refuses even 0 leaves the
/// device with none.
pub fn negotiate(mut try_set: impl FnMut(u32) -> std::io::Result<()>) -> Offloads {
    Offloads::LADDER
        .into_iter()
        .find(|&bits| try_set(bits).is_ok())
        .map_or(Offloads::default(), Offloads)
}
