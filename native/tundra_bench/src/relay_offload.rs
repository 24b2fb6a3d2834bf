//! One end of the raw IP-over-UDP tunnel with the offloads Tundra's
//! offload path uses, as a Rust program would do it: an offload TUN device
//! (`IFF_VNET_HDR`, `TUNSETOFFLOAD`) whose super-packets are split into
//! packets sent with one `UDP_SEGMENT` `sendmsg` each, and a socket with
//! `UDP_GRO` whose coalesced datagrams go to the device as super-packets
//! where they are runs of TCP segments of one flow. The splitting and
//! coalescing are `tundra_core::offload`'s, as the NIF's are. One blocking
//! thread per direction.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use tundra_core::offload::{self, Superpacket, VnetHdr, VNET_HDR_LEN};

use crate::args::Args;
use crate::relay::{connected_socket, set_blocking};

/// Most datagrams, and bytes, one `UDP_SEGMENT` send may carry.
const MAX_SEGMENTS: usize = 64;
const MAX_BYTES: usize = 65_000;

pub fn run(args: &Args) -> Result<(), String> {
    let mut config = args.device_config()?;
    config.offload = true;
    let socket = connected_socket(args)?;
    setsockopt(&socket, sockopt::UdpGroSegment, &true).map_err(|e| format!("UDP_GRO: {e}"))?;
    let device = tundra_core::platform::create(&config).map_err(|e| format!("create: {e}"))?;
    let offloads = tundra_core::platform::enable_offload(device.fd.as_fd());
    eprintln!("offloads: {}", offloads.names().join(","));
    set_blocking(device.fd.as_fd())?;
    let device = Arc::new(device);
    let socket = Arc::new(socket);

    let (tun, udp) = (Arc::clone(&device), Arc::clone(&socket));
    std::thread::spawn(move || socket_to_device(udp.as_fd(), tun.fd.as_fd()));
    crate::exit_when_stdin_closes();
    crate::announce_ready(&device.name);
    device_to_socket(device.fd.as_fd(), socket.as_fd())
}

/// Datagrams (coalesced by UDP_GRO) to the device.
fn socket_to_device(socket: BorrowedFd, tun: BorrowedFd) {
    let mut buf = vec![0u8; 65536];
    let mut space = nix::cmsg_space!(i32);
    loop {
        let (n, size) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            ) {
                Ok(msg) => msg,
                // An ICMP error for an earlier send (the other end not up).
                Err(nix::errno::Errno::ECONNREFUSED) => continue,
                Err(_) => return,
            };
            let mut size = msg.bytes;
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::UdpGroSegments(gso) = cmsg {
                        size = usize::try_from(gso).unwrap_or(size);
                    }
                }
            }
            (msg.bytes, size.max(1))
        };
        let packets: Vec<&[u8]> = buf[..n].chunks(size).collect();
        let mut i = 0;
        while i < packets.len() {
            i += match offload::run_from(packets[i], packets[i + 1..].iter().copied()) {
                Some(run) => {
                    let _ = tundra_core::platform::write_run(tun, &run);
                    run.len()
                }
                None => {
                    let hdr = [0u8; VNET_HDR_LEN];
                    let plain = [IoSlice::new(&hdr), IoSlice::new(packets[i])];
                    let _ = nix::sys::uio::writev(tun, &plain);
                    1
                }
            };
        }
    }
}

/// Device reads (super-packets split) to the other end, one UDP_SEGMENT
/// send per batch of equal-sized packets.
fn device_to_socket(tun: BorrowedFd, socket: BorrowedFd) -> Result<(), String> {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65536];
    let mut out = vec![0u8; 2 * 65536];
    loop {
        let n = nix::unistd::read(tun, &mut buf).map_err(|e| format!("read: {e}"))?;
        let Some(hdr) = VnetHdr::parse(&buf[..n]) else {
            continue;
        };
        let packet = &mut buf[VNET_HDR_LEN..n];
        if !hdr.is_gso() {
            if offload::complete_checksum(&hdr, packet).is_ok() {
                let _ = send_batch(socket, packet, packet.len());
            }
            continue;
        }
        let Ok(sp) = Superpacket::new(&hdr, packet) else {
            continue;
        };
        let size = sp.segment_size();
        let (mut from, mut used) = (0, 0);
        for i in 0..sp.count() {
            let len = sp.segment_len(i);
            if i - from == MAX_SEGMENTS || used + len > MAX_BYTES {
                let _ = send_batch(socket, &out[..used], size);
                (from, used) = (i, 0);
            }
            sp.write(i, &mut out[used..]);
            used += len;
        }
        let _ = send_batch(socket, &out[..used], size);
    }
}

/// One `sendmsg` of packets laid back to back, each `size` bytes but the
/// last (a lost batch is lost packets, as on any tunnel).
fn send_batch(socket: BorrowedFd, data: &[u8], size: usize) -> nix::Result<usize> {
    let size16 = u16::try_from(size).unwrap_or(u16::MAX);
    let gso = [ControlMessage::UdpGsoSegments(&size16)];
    let control: &[ControlMessage] = if data.len() > size { &gso } else { &[] };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(data)],
        control,
        MsgFlags::empty(),
        None,
    )
}
