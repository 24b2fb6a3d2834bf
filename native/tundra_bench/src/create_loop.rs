//! Creates and configures `--count` devices one after another, as the NIF's
//! direct path does (same `tundra_core` calls), keeping them all open, and
//! prints the rate. The devices go when the process exits.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use tundra_core::DeviceConfig;

use crate::args::Args;

const CLOSE_THREADS: usize = 32;

pub fn run(args: &Args) -> Result<(), String> {
    let count: u32 = args.get("count")?;
    // Addresses 10.<first>.x.y/32, one per device, as the Elixir loop uses.
    let first: u8 = args.get_or("first-octet", 201)?;
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
    println!(
        "count={count} seconds={seconds:.4} per_second={:.1}",
        f64::from(count) / seconds
    );
    close_all(devices);
    Ok(())
}

/// Closes the devices in parallel (not timed): the kernel takes tens of
/// milliseconds per interface, which overlap across threads, as the NIF's
/// closer pool does. Left to process exit they would close one by one.
fn close_all(devices: Vec<tundra_core::platform::Device>) {
    let per_thread = devices.len().div_ceil(CLOSE_THREADS).max(1);
    let mut devices = devices;
    std::thread::scope(|scope| {
        while !devices.is_empty() {
            let batch: Vec<_> = devices.drain(..per_thread.min(devices.len())).collect();
            scope.spawn(move || drop(batch));
        }
    });
}
