//! Routes to the code of the OS being built for. Each OS module exposes:
//!
//! - `peer_credentials(&UnixStream) -> nix::Result<Credentials>`: who is at
//!   the other end of a connection, as the kernel vouches;
//! - `supplementary_member(&User, Gid) -> bool`: whether the user database
//!   lists the user in the group;
//! - `user_groups(&User) -> Vec<Gid>`: the user's groups, as far as the OS
//!   can list them;
//! - `privileged() -> bool`: whether this process may create devices;
//! - `unread_bytes(&UnixStream) -> io::Result<usize>`: what the peer has
//!   not read yet of what was written to it.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{peer_credentials, privileged, supplementary_member, unread_bytes, user_groups};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{peer_credentials, privileged, supplementary_member, unread_bytes, user_groups};

/// A connected peer's identity.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    /// The peer's process, where the OS reports it.
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}
