//! The load generator: a UDP socket keeps `--window` datagrams of
//! `--payload` bytes in flight to `--to`:`--port` and counts the answers.
//! Every answer is replaced by a new datagram at once; if nothing comes
//! back for a while (packets were dropped), the window is refilled.
//! `all_received` counts the warm-up's answers too, for per-packet costs
//! measured over the whole run.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

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

    let socket = UdpSocket::bind(SocketAddr::new(from, 0)).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(SocketAddr::new(to, port))
        .map_err(|e| format!("connect: {e}"))?;
    socket
        .set_read_timeout(Some(STALL))
        .map_err(|e| format!("timeout: {e}"))?;
    let data = vec![0x5au8; payload];
    let mut buf = vec![0u8; payload + 1];

    let fill = |n: usize| -> Result<(), String> {
        for _ in 0..n {
            socket.send(&data).map_err(|e| format!("send: {e}"))?;
        }
        Ok(())
    };

    let mut run_for = |duration: Duration| -> Result<(u64, u64), String> {
        let (mut received, mut stalls) = (0u64, 0u64);
        let started = Instant::now();
        fill(window)?;
        while started.elapsed() < duration {
            match socket.recv(&mut buf) {
                Ok(n) if n == payload => {
                    received += 1;
                    fill(1)?;
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    stalls += 1;
                    fill(window)?;
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        // Let the window drain so a following run starts clean.
        while socket.recv(&mut buf).is_ok() {}
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

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
