//! The native part of `TundraWireGuard`: only what OTP's `:crypto` and
//! `:socket` lack for WireGuard's cheap checks. Keyed BLAKE2s (the
//! protocol's `MAC`), so that a handshake message with a bad `mac1` is
//! refused for a fraction of a microsecond instead of tens in Elixir,
//! before any Curve25519 work; and the steering of handshake messages to
//! a socket of their own (`steer`).
//!
//! Every NIF here runs in well under a millisecond on a normal
//! scheduler: inputs are bounded (`MAX_INPUT`), and `badarg` beyond.

mod blake2s;
#[cfg(target_os = "linux")]
mod steer;

use rustler::{Binary, Env, Error, NewBinary, NifResult};

/// The most bytes a MAC is taken over: WireGuard's messages are at most
/// 148 bytes; this bounds a call to about a microsecond's work per KB.
const MAX_INPUT: usize = 4096;
const MAC_LEN: usize = 16;

/// The MAC, or `None` for a key or input of a length not taken.
fn mac_of(key: &[u8], data: &[u8]) -> Option<[u8; MAC_LEN]> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let mut out = [0u8; MAC_LEN];
    blake2s::hash(key, data, &mut out).ok()?;
    Some(out)
}

/// BLAKE2s of `data`, `outlen` bytes (1 to 32), keyed with `key` (0 to
/// 32 bytes); WireGuard's MAC is `blake2s(key, data, 16)`.
#[rustler::nif]
fn blake2s<'a>(
    env: Env<'a>,
    key: Binary<'a>,
    data: Binary<'a>,
    outlen: usize,
) -> NifResult<Binary<'a>> {
    if data.len() > MAX_INPUT {
        return Err(Error::BadArg);
    }
    let mut out = [0u8; 32];
    let out = out.get_mut(..outlen).ok_or(Error::BadArg)?;
    blake2s::hash(key.as_slice(), data.as_slice(), out).map_err(|_| Error::BadArg)?;
    let mut binary = NewBinary::new(env, out.len());
    binary.as_mut_slice().copy_from_slice(out);
    Ok(binary.into())
}

/// Whether a handshake message's MAC field at `from_end` bytes from its
/// end (32: mac1, 16: mac2) is the MAC under `key` of all that precedes
/// it; compared in constant time.
fn mac_field_valid(message: &[u8], key: &[u8], from_end: usize) -> Option<bool> {
    if message.len() < from_end.max(MAC_LEN) {
        return Some(false);
    }
    let at = message.len() - from_end;
    let expected = mac_of(key, &message[..at])?;
    Some(blake2s::equal(&expected, &message[at..at + MAC_LEN]))
}

/// Whether `message`'s mac1 is right for the receiver's `mac1_key`.
#[rustler::nif]
fn mac1_valid(message: Binary, mac1_key: Binary) -> NifResult<bool> {
    mac_field_valid(message.as_slice(), mac1_key.as_slice(), 32).ok_or(Error::BadArg)
}

/// Whether `message`'s mac2 is right for `cookie`.
#[rustler::nif]
fn mac2_valid(message: Binary, cookie: Binary) -> NifResult<bool> {
    mac_field_valid(message.as_slice(), cookie.as_slice(), 16).ok_or(Error::BadArg)
}

/// Steers the handshake messages of socket `fd`'s reuseport group to its
/// second socket (see `steer`): `true` if the kernel took the program.
#[rustler::nif]
fn steer_handshakes(fd: i32) -> bool {
    #[cfg(target_os = "linux")]
    return steer::attach(fd).is_ok();
    #[cfg(not(target_os = "linux"))]
    return {
        let _ = fd;
        false
    };
}

rustler::init!("Elixir.TundraWireGuard.Native");
