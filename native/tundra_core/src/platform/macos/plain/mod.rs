//! The plain half of the macOS code: Darwin's structs and routing messages
//! packed byte by byte at the offsets its headers give, and the decision
//! of which requests configure a device. No system calls: compiled on
//! every OS for `cargo test`, and used by `platform::macos`'s calls.
#![forbid(unsafe_code)]
// Some constants are used only by the macOS system calls.
#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

pub mod plan;
pub mod route;
pub mod utun;
