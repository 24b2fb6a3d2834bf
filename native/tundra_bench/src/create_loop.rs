//! Creates and configures `--count` devices one after another, as the NIF's
//! direct path does (same `tundra_core` calls), keeping them all open, then
//! closes them all at once from `--close-threads` threads (512, as many as
//! Tundra's closer pool may use), and prints both rates.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use tundra_core::DeviceConfig;

use crate::args::Args;

pub fn run(args: &Args) -> Result<(), String> {
    let count: u32 = args.get("count")?;
    // Addresses 10.<first>.x.y/32, one per device, as the Elixir loop uses.
    let first: u8 = args.get_or("first-octet", 201)?;
    let close_threads: usize = args.get_or("close-threads", 512)?;
    let mut devices = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for i in 0..count {
        let [_, _, x, y] = i.to_be_bytes();
        let mut config = DeviceConfig::new(IpAddr::V4(Ipv4Addr::new(10, first, x, y)));
        config.prefix = 32;
        let device = tundra_core::platform::create(&config).map_err(|e| format!("create: {e}"))?;
        devices.push(device);
    }
    let seconds = started.elapsed().as_secs_f64();
    let closing = Instant::now();
    close_all(devices, close_threads.max(1));
    let close_seconds = closing.elapsed().as_secs_f64();
    println!(
        "count={count} seconds={seconds:.4} per_second={:.1} close_seconds={close_seconds:.4} close_per_second={:.1}",
        f64::from(count) / seconds,
        f64::from(count) / close_seconds
    );
    Ok(())
}

/// Closes the devices from `threads` threads at once: the kernel takes
/// about a millisecond of waiting per interface, which overlapping closes
/// share. close(2) of a TUN fd returns once its interface is gone.
fn close_all(devices: Vec<tundra_core::platform::Device>, threads: usize) {
    let per_thread = devices.len().div_ceil(threads).max(1);
    let mut devices = devices;
    std::thread::scope(|scope| {
        while !devices.is_empty() {
            let batch: Vec<_> = devices.drain(..per_thread.min(devices.len())).collect();
            scope.spawn(move || drop(batch));
        }
    });
}
