//! macOS: utun devices. `plain` is Darwin's structs, routing messages and
//! the plan of which requests configure a device, packed byte by byte and
//! free of system calls: it builds (and is tested) on every OS. `calls`
//! and `sys` make the system calls, on macOS only.

pub mod plain;

#[cfg(target_os = "macos")]
mod calls;
#[cfg(target_os = "macos")]
mod sys;

#[cfg(target_os = "macos")]
pub use calls::*;
