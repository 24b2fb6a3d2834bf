//! Creates real TUN devices. Needs root and must run inside a network
//! namespace made for the test run (`scripts/test` does both); anywhere
//! else it says why it did not run, and under `CI=true` that is a failure.
#![cfg(target_os = "linux")]

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use tundra_core::platform::{self, InterfaceAddress, Isolation, Persist, Placement, RouteInfo};
use tundra_core::{Change, DeviceConfig, Framing, Mode, RouteSpec};

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
    let info = platform::link_info(&dev.name, None).expect("link info");
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
    let info = platform::link_info(&dev.name, None).expect("link info");
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
    let dev = platform::create_for(&config, None, Framing::LinuxPacketInfo, Isolation::Required)
        .expect("create");
    assert_eq!(dev.framing, Framing::LinuxPacketInfo);
    let inspected = platform::inspect(dev.fd.as_fd()).expect("inspect");
    assert_eq!(inspected.framing, Framing::LinuxPacketInfo);
    // utun's framing does not exist on Linux.
    let refused = platform::create_for(&config, None, Framing::AddressFamily, Isolation::Required);
    assert_eq!(
        refused.expect_err("no utun framing").raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
}

#[test]
fn tap_devices_carry_ethernet_frames_and_say_so() {
    if !privileged_netns() {
        return;
    }
    let mut config = DeviceConfig::new(ip("10.77.2.2"));
    config.prefix = 24;
    config.mode = Mode::Tap;
    config.mac = Some([2, 0, 0x5e, 0, 0, 9]);
    let dev = platform::create(&config).expect("create tap");
    assert_eq!(dev.framing, Framing::Ethernet);
    let inspected = platform::inspect(dev.fd.as_fd()).expect("inspect");
    assert_eq!(
        (inspected.name.as_str(), inspected.framing),
        (dev.name.as_str(), Framing::Ethernet)
    );
    let info = platform::link_info(&dev.name, None).expect("link info");
    assert_eq!(info.mac, Some([2, 0, 0x5e, 0, 0, 9]));
}

/// A network namespace of its own, held by an fd: a thread that leaves
/// this one opens it.
fn new_netns() -> std::fs::File {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        std::fs::File::open("/proc/thread-self/ns/net").expect("open netns")
    })
    .join()
    .expect("thread")
}

#[test]
fn a_device_made_in_another_namespace_is_found_and_changed_there() {
    if !privileged_netns() {
        return;
    }
    let netns = new_netns();
    let placement = Placement {
        netns: Some(format!("/proc/self/fd/{}", netns.as_raw_fd())),
        persist: None,
    };
    let mut config = DeviceConfig::new(ip("10.77.3.2"));
    config.dstaddr = Some(ip("10.77.3.1"));
    config.name = Some("tcorens0".into());
    let dev = platform::create_placed(&config, &placement).expect("create there");
    let ns = dev.netns.as_ref().expect("made elsewhere");
    assert!(!Path::new("/sys/class/net/tcorens0").exists(), "not here");
    assert!(platform::link_info("tcorens0", None).is_err(), "not here");

    let inspected = platform::inspect(dev.fd.as_fd()).expect("inspect");
    assert!(inspected
        .netns
        .as_ref()
        .is_some_and(|found| found.same_as(ns)));
    assert_eq!(inspected.framing, Framing::Raw);

    let route = RouteSpec {
        dst: "10.77.4.0/24".parse().expect("route"),
        metric: Some(9),
    };
    platform::apply(
        "tcorens0",
        &Change::AddRoute(route),
        Some(ns),
        Isolation::BestEffort,
    )
    .expect("add route");
    let info = platform::link_info("tcorens0", Some(ns)).expect("link info there");
    assert!(info.routes.contains(&RouteInfo {
        dst: route.dst,
        metric: Some(9)
    }));
    assert!(info.up);
}

#[test]
fn a_persistent_device_outlives_its_fd_and_is_attached_again() {
    if !privileged_netns() {
        return;
    }
    let mut config = DeviceConfig::new(ip("10.77.5.2"));
    config.name = Some("tcorep0".into());
    let placement = Placement {
        netns: None,
        persist: Some(Persist {
            owner: Some(65534),
            group: None,
        }),
    };
    let dev = platform::create_placed(&config, &placement).expect("create");
    drop(dev);
    assert!(Path::new("/sys/class/net/tcorep0").exists());
    let owner = std::fs::read_to_string("/sys/class/net/tcorep0/owner").expect("owner");
    assert_eq!(owner.trim(), "65534");

    let again = platform::attach("tcorep0", 1).expect("attach");
    assert_eq!(again.framing, Framing::Raw);
    assert_eq!(
        platform::attach("tcorep0", 1)
            .expect_err("held")
            .raw_os_error(),
        Some(libc::EBUSY)
    );
    let info = platform::link_info("tcorep0", None).expect("info");
    drop(again);
    platform::delete_link(info.index).expect("delete");
    assert!(!Path::new("/sys/class/net/tcorep0").exists());
}

#[test]
fn a_device_learns_nothing_from_what_is_written_into_it() {
    if !privileged_netns() {
        return;
    }
    let settings = |name: &str| {
        ["accept_ra", "autoconf", "accept_redirects"].map(|key| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/{key}"))
                .map(|v| v.trim().to_string())
                .ok()
        })
    };
    let off = [Some("0".to_string()), Some("0".into()), Some("0".into())];
    let mut config = DeviceConfig::new(ip("10.77.4.2"));
    config.ipv6 = false;
    let direct = platform::create(&config).expect("create");
    assert_eq!(settings(&direct.name), off, "direct, IPv4 only");
    let server = platform::create_for(
        &DeviceConfig::new(ip("fd77:4::2")),
        Some(0),
        Framing::Raw,
        Isolation::Required,
    )
    .expect("create");
    assert_eq!(settings(&server.name), off, "as the server makes them");

    // Below 1280 there is no IPv6; above again, the kernel's defaults
    // would come back with it.
    let mtu = |mtu| Change::Link {
        up: None,
        mtu: Some(mtu),
    };
    platform::apply(&direct.name, &mtu(1000), None, Isolation::BestEffort).expect("mtu 1000");
    assert_eq!(settings(&direct.name), [None, None, None]);
    platform::apply(&direct.name, &mtu(1400), None, Isolation::BestEffort).expect("mtu 1400");
    assert_eq!(settings(&direct.name), off, "after the MTU came back");
    // Where the holder is not trusted, not while the link is up.
    let (down, up) = (
        Change::Link {
            up: Some(false),
            mtu: None,
        },
        Change::Link {
            up: Some(true),
            mtu: None,
        },
    );
    platform::apply(&server.name, &mtu(1000), None, Isolation::Required).expect("mtu 1000");
    let raised = platform::apply(&server.name, &mtu(1400), None, Isolation::Required);
    assert_eq!(raised.map_err(|e| e.raw_os_error()), Err(Some(libc::EBUSY)));
    platform::apply(&server.name, &down, None, Isolation::Required).expect("down");
    platform::apply(&server.name, &mtu(1400), None, Isolation::Required).expect("mtu 1400");
    platform::apply(&server.name, &up, None, Isolation::Required).expect("up");
    assert_eq!(settings(&server.name), off, "after the MTU came back");
}
