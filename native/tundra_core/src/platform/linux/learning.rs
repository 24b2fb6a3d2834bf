//! What a device may learn from the packets its holder writes into it.
//!
//! The kernel takes packets written into a TUN or TAP device as if they
//! came from a host on its link: by default an IPv6 router advertisement
//! written there installs routes (the advertised prefixes, a default
//! route) and SLAAC addresses, and an IPv6 redirect re-points routes. Its
//! holder, not the administrator, would then decide where the host's
//! traffic goes. So Tundra's devices learn nothing that way: per device,
//! `accept_ra`, `autoconf` and `accept_redirects` are 0.
//!
//! These settings exist only in /proc/sys (rtnetlink sets an IPv6 link's
//! address generation mode and token, not these), which the kernel
//! resolves in the calling thread's network namespace. A device whose MTU
//! is below 1280 has no IPv6 at all, and gets the namespace's defaults
//! back, learning included, when its MTU rises again (see `linux::apply`).
//!
//! IPv4 needs nothing here: an ICMP redirect re-points only a route whose
//! gateway sent it, through the device it came in on, and Tundra's
//! devices have no gateway routes.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::valid_interface_name;
use crate::platform::Isolation;

/// The settings that make an IPv6 link learn from what it receives.
const LEARNING: [&str; 3] = ["accept_ra", "autoconf", "accept_redirects"];

const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

fn conf_dir(name: &str) -> io::Result<PathBuf> {
    // A name from the kernel or a validated request; never a path, nor
    // the namespace-wide settings (no interface may have their names).
    if !valid_interface_name(name) || name.contains('%') || ["all", "default"].contains(&name) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(Path::new(IPV6_CONF).join(name))
}

/// Whether interface `name` does IPv6 now (its settings are listed).
pub fn has_ipv6(name: &str) -> io::Result<bool> {
    Ok(conf_dir(name)?.join(LEARNING[0]).exists())
}

/// Whether this kernel, in this network namespace, does IPv6 at all.
/// `ENOENT` if that cannot be told (no /proc/sys/net: /proc not mounted).
pub fn kernel_has_ipv6() -> io::Result<bool> {
    if Path::new(IPV6_CONF).exists() {
        return Ok(true);
    }
    if Path::new("/proc/sys/net").exists() {
        return Ok(false);
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

/// Turns off, for interface `name`, all that would let it learn routes
/// or addresses from the packets written into it. An interface without
/// IPv6 (MTU below 1280, or a kernel without IPv6) has nothing to turn
/// off. With `BestEffort`, failures are ignored.
pub fn refuse_learning(name: &str, isolation: Isolation) -> io::Result<()> {
    match (turn_off(name), isolation) {
        (Err(e), Isolation::Required) => Err(e),
        _ => Ok(()),
    }
}

fn turn_off(name: &str) -> io::Result<()> {
    let dir = conf_dir(name)?;
    for key in LEARNING {
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(key));
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !has_ipv6(name)? => {
                // No IPv6 on it now, or none in the kernel: nothing it can
                // learn (unless /proc is missing, which this tells).
                kernel_has_ipv6()?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        file.write_all(b"0\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interface_names_become_paths() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "tun%d",
            "../all",
            "all",
            "default",
            "sixteen-chars-xx",
        ] {
            assert_eq!(
                conf_dir(bad).map_err(|e| e.raw_os_error()),
                Err(Some(libc::EINVAL)),
                "{bad:?}"
            );
        }
        assert_eq!(
            conf_dir("tun0").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv6/conf/tun0"))
        );
    }

    #[test]
    fn an_interface_that_is_not_there_has_nothing_to_learn_with() {
        // No such interface: no settings, and so nothing to turn off.
        assert!(refuse_learning("tundranone0", Isolation::Required).is_ok());
        assert_eq!(has_ipv6("tundranone0").ok(), Some(false));
    }
}
