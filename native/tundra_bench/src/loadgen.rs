//! The load generator: UDP sockets (`--flows`, one source port each) keep
//! `--window` datagrams of `--payload` bytes in flight to `--to`:`--port`
//! between them and count the answers. Every answer is replaced by a new
//! datagram on its socket at once; if nothing comes back for a while
//! (packets were dropped), the windows are refilled. `all_received` counts
//! the warm-up's answers too, for per-packet costs measured over the
//! whole run.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::args::Args;

/// How long without any answer before the window counts as lost.
const STALL: Duration = Duration::from_millis(20);

pub fn run(args: &Args) -> Result<(), String> {
    let from: IpAddr = args.get("from")?;
    let to: IpAddr = args.get("to")?;
    let port: u16 = args.get_or("port", 9000)?;
    let payload: usize = args.get_or("payload", 64)?;
    let window: usize = args.get_or("window", 64)?;
    let seconds: f64 = args.get_or("seconds", 2.0)?;
    let warmup: f64 = args.get_or("warmup", 0.3)?;

    let flows: usize = args.get_or("flows", 1)?;
    let per_flow = (window / flows.max(1)).max(1);

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
    let data = vec![0x5au8; payload];
    let mut buf = vec![0u8; payload + 1];

    let fill = |socket: &UdpSocket, n: usize| -> Result<(), String> {
        for _ in 0..n {
            match socket.send(&data) {
                Ok(_) => {}
                // A full socket buffer loses the datagram, as a busy link would.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(())
    };
    let stall_ms = u16::try_from(STALL.as_millis()).unwrap_or(u16::MAX);

    let mut run_for = |duration: Duration| -> Result<(u64, u64), String> {
        let (mut received, mut stalls) = (0u64, 0u64);
        let started = Instant::now();
        for socket in &sockets {
            fill(socket, per_flow)?;
        }
        while started.elapsed() < duration {
            let mut fds: Vec<_> = sockets
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            let ready =
                poll(&mut fds, PollTimeout::from(stall_ms)).map_err(|e| format!("poll: {e}"))?;
            if ready == 0 {
                stalls += 1;
                for socket in &sockets {
                    fill(socket, per_flow)?;
                }
                continue;
            }
            let readable: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .collect();
            for (socket, readable) in sockets.iter().zip(readable) {
                if !readable {
                    continue;
                }
                loop {
                    match socket.recv(&mut buf) {
                        Ok(n) if n == payload => {
                            received += 1;
                            fill(socket, 1)?;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(format!("recv: {e}")),
                    }
                }
            }
        }
        // Let the windows drain so a following run starts clean.
        std::thread::sleep(STALL);
        for socket in &sockets {
            while socket.recv(&mut buf).is_ok() {}
        }
        Ok((received, stalls))
    };

    let (warmup_received, _) = run_for(Duration::from_secs_f64(warmup))?;
    let started = Instant::now();
    let (received, stalls) = run_for(Duration::from_secs_f64(seconds))?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "pps={:.0} received={received} seconds={elapsed:.3} stalls={stalls} all_received={}",
        received as f64 / elapsed,
        warmup_received + received
    );
    Ok(())
}
