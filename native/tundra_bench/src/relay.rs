//! One end of the raw IP-over-UDP tunnel: packets read from the TUN device
//! go to the remote end as UDP datagrams; datagrams received are written to
//! the device. One blocking thread per direction.

use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::args::Args;

pub fn run(args: &Args) -> Result<(), String> {
    let config = args.device_config()?;
    let socket = connected_socket(args)?;
    let device = tundra_core::platform::create(&config).map_err(|e| format!("create: {e}"))?;
    set_blocking(device.fd.as_fd())?;
    let device = Arc::new(device);
    let socket = Arc::new(socket);

    let (tun, udp) = (Arc::clone(&device), Arc::clone(&socket));
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match udp.recv(&mut buf) {
                Ok(n) => {
                    let _ = nix::unistd::write(tun.fd.as_fd(), &buf[..n]);
                }
                // A connected UDP socket reports an ICMP error from an
                // earlier send (ECONNREFUSED while the other end was not
                // up yet) on the next recv; it is not fatal.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            }
        }
    });
    crate::exit_when_stdin_closes();
    crate::announce_ready(&device.name);
    let mut buf = vec![0u8; 65536];
    loop {
        let n = nix::unistd::read(device.fd.as_fd(), &mut buf).map_err(|e| format!("read: {e}"))?;
        // A datagram the socket refuses (no listener yet: ECONNREFUSED) is
        // a lost packet, as on any tunnel.
        let _ = socket.send(&buf[..n]);
    }
}

/// The tunnel's UDP socket: bound to `--bind`, connected to `--remote`.
pub fn connected_socket(args: &Args) -> Result<UdpSocket, String> {
    let bind = args.socket_addr("bind")?;
    let remote = args.socket_addr("remote")?;
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    // As the Elixir tunnel's: with the default 212 KB a burst of GSO
    // datagrams overflows the receive queue, and whole super-packets are
    // lost (UDP RcvbufErrors, TCP retransmits): a reference that loses
    // what the other side keeps is no reference.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &SOCKET_BUFFER)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SOCKET_BUFFER)
        .map_err(|e| format!("SO_SNDBUF: {e}"))?;
    socket
        .connect(remote)
        .map_err(|e| format!("connect {remote}: {e}"))?;
    Ok(socket)
}

/// Socket buffers of both relays, the same as `TundraExamples.UdpTunnel`'s.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Clears O_NONBLOCK (tundra_core makes every device fd non-blocking).
pub fn set_blocking(fd: BorrowedFd) -> Result<(), String> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}
