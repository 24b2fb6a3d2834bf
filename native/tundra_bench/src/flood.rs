//! A flood of WireGuard handshake initiations with junk in them: 148-byte
//! datagrams whose first four bytes say "initiation" (1, 0, 0, 0) and
//! whose rest changes with every datagram, from `--flows` source ports
//! (so that the receiver's kernel cannot coalesce them), to `--to`:`--port`,
//! at up to `--rate` datagrams a second for `--seconds`. Prints the
//! datagrams sent and the rate reached. For tests of a receiver's
//! resilience: run it only against addresses of devices the test made.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::args::Args;

const INITIATION_LEN: usize = 148;
/// Datagrams between looks at the clock.
const BURST: u64 = 256;

pub fn run(args: &Args) -> Result<(), String> {
    let from: IpAddr = args.get("from")?;
    let to: IpAddr = args.get("to")?;
    let port: u16 = args.get("port")?;
    let rate: f64 = args.get_or("rate", 600_000.0)?;
    let seconds: f64 = args.get_or("seconds", 2.0)?;
    let flows: usize = args.get_or("flows", 256)?;

    let sockets = (0..flows.max(1))
        .map(|_| {
            let socket =
                UdpSocket::bind(SocketAddr::new(from, 0)).map_err(|e| format!("bind: {e}"))?;
            socket
                .connect(SocketAddr::new(to, port))
                .map_err(|e| format!("connect: {e}"))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| format!("nonblocking: {e}"))?;
            Ok(socket)
        })
        .collect::<Result<Vec<_>, String>>()?;

    let mut datagram = [0u8; INITIATION_LEN];
    datagram[0] = 1;
    // A cheap generator (xorshift) for the junk: what matters is that no
    // two datagrams are alike, not that they are unpredictable.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut sent: u64 = 0;
    'flood: loop {
        for _ in 0..BURST {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for (i, chunk) in datagram[4..].chunks_mut(8).enumerate() {
                let word = state.rotate_left(i as u32 * 7).to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            let socket = &sockets[(sent % sockets.len() as u64) as usize];
            match socket.send(&datagram) {
                Ok(_) => sent += 1,
                // A full socket buffer loses it, as a busy link would.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The receiver's ICMP errors (port closed meanwhile).
                Err(_) => {}
            }
        }
        let now = Instant::now();
        if now >= end {
            break 'flood;
        }
        // Paced: never ahead of `rate`.
        let due = Duration::from_secs_f64(sent as f64 / rate);
        let elapsed = now - start;
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(end - now));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} datagrams in {elapsed:.2} s: {:.0} per second",
        sent as f64 / elapsed
    );
    Ok(())
}
