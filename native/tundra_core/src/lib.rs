//! Shared core of Tundra: the validated description of a device and of
//! changes to one, the one errno-to-name mapping, packet framing, the wire
//! protocol and fd passing, closing device fds off-thread, and the per-OS
//! code that creates, configures and inspects devices (`platform`).
//!
//! Used by the NIF (`tundra_nif`) for direct creation and by the privileged
//! daemon (`tundra_server`), so both paths validate and configure identically.

pub mod cidr;
#[cfg(unix)]
pub mod client;
pub mod closer;
pub mod config;
#[cfg(unix)]
pub mod deadline;
pub mod errno;
#[cfg(unix)]
pub mod fdpass;
pub mod framing;
pub mod ip;
pub mod legacy;
pub mod offload;
pub mod platform;
pub mod protocol;
#[cfg(unix)]
pub mod users;

pub use cidr::Cidr;
pub mod change;
pub use change::{Change, RouteSpec};
pub use cidr::prefix_from_netmask;
pub use config::{AddressSpec, ConfigError, DeviceConfig, Mode};
pub use framing::Framing;
