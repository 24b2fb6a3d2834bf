//! Creates real TUN devices. Needs root and must run inside a network
//! namespace made for the test run (`scripts/test` does both); anywhere
//! else it says why it did not run, and under `CI=true` that is a failure.
#![cfg(target_os = "linux")]

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use tundra_core::platform::{self, InterfaceAddress};
use tundra_core::{DeviceConfig, Framing};

#[path = "support/guard.rs"]
mod guard;
use guard::privileged_netns;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn creates_configures_and_removes_ipv4_and_ipv6_devices() {
    if !privileged_netns() {
        return;
    }
    let mut v4 = DeviceConfig::new(ip("10.77.0.2"));
    v4.dstaddr = Some(ip("10.77.0.1"));
    v4.mtu = 1400;
    v4.name = Some("tcore%d".into());
    let dev = platform::create(&v4).expect("create v4");
    assert!(dev.name.starts_with("tcore"), "{}", dev.name);
    assert_eq!(dev.framing, Framing::Raw);
    let info = platform::link_info(&dev.name).expect("link info");
    assert_eq!(info.mtu, 1400);
    assert!(info.up);
    // The kernel also adds an IPv6 link-local address when the link is up.
    assert!(info.addresses.contains(&InterfaceAddress {
        address: ip("10.77.0.2"),
        prefix: 32,
        peer: Some(ip("10.77.0.1")),
    }));
    let inspected = platform::inspect(dev.fd.as_fd()).expect("inspect");
    assert_eq!(inspected.name, dev.name);
    let sys = format!("/sys/class/net/{}", dev.name);
    assert!(Path::new(&sys).exists());
    drop(dev);
    assert!(
        !Path::new(&sys).exists(),
        "closing the fd removes the device"
    );

    let mut v6 = DeviceConfig::new(ip("fd11:b7b7:4360::2"));
    v6.dstaddr = Some(ip("fd11:b7b7:4360::1"));
    v6.prefix = 64;
    let dev = platform::create(&v6).expect("create v6");
    let info = platform::link_info(&dev.name).expect("link info");
    assert_eq!(info.mtu, 1500);
    assert!(info.addresses.contains(&InterfaceAddress {
        address: ip("fd11:b7b7:4360::2"),
        prefix: 64,
        peer: Some(ip("fd11:b7b7:4360::1")),
    }));
}

#[test]
fn a_file_that_is_not_a_tun_device_is_refused() {
    let file = std::fs::File::open("/proc/self/stat").expect("open");
    assert!(platform::inspect(file.as_fd()).is_err());
}

#[test]
fn devices_can_carry_the_packet_information_header_and_say_so() {
    if !privileged_netns() {
        return;
    }
    let config = DeviceConfig::new(ip("10.77.1.2"));
    let dev = platform::create_for(&config, None, Framing::LinuxPacketInfo).expect("create");
    assert_eq!(dev.framing, Framing::LinuxPacketInfo);
    let inspected = platform::inspect(dev.fd.as_fd()).expect("inspect");
    assert_eq!(inspected.framing, Framing::LinuxPacketInfo);
    // utun's framing does not exist on Linux.
    let refused = platform::create_for(&config, None, Framing::AddressFamily);
    assert_eq!(
        refused.expect_err("no utun framing").raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
}
