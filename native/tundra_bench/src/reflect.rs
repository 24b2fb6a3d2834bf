//! The raw reflector: what a Rust program with no BEAM in the way does
//! with a TUN device. Blocking read, turn the packet around, write.

use std::os::fd::AsFd;

use crate::args::Args;
use crate::packet::turn_around;

pub fn run(args: &Args) -> Result<(), String> {
    let config = args.device_config()?;
    let device = tundra_core::platform::create(&config).map_err(|e| format!("create: {e}"))?;
    crate::relay::set_blocking(device.fd.as_fd())?;
    crate::exit_when_stdin_closes();
    crate::announce_ready(&device.name);
    let mut buf = vec![0u8; 65536];
    loop {
        let n = nix::unistd::read(device.fd.as_fd(), &mut buf).map_err(|e| format!("read: {e}"))?;
        let packet = &mut buf[..n];
        if turn_around(packet) {
            // A refused packet is the kernel's business (as for any
            // reflector); keep going.
            let _ = nix::unistd::write(device.fd.as_fd(), packet);
        }
    }
}
