//! Rustler NIF of Tundra: TUN devices as resources owned by one Elixir
//! process, with non-blocking I/O signalled through `enif_select` in the
//! style of OTP's `:socket`. The Elixir module `Tundra.Nif` holds the
//! stubs; `Tundra` is the public API.
//!
//! - `open`: getting a device (create, adopt, attach);
//! - `io`: packet I/O, rendered through one outcome type;
//! - `control`: close, active mode and its reader, hand-over, link
//!   events, offloads;
//! - `manage`: `info`, `getopts` and changes to the device's link;
//! - `terms`: the one error type, the one place a call is rendered, and
//!   what crosses the boundary besides packets;
//! - `packet` and `vnet`: framing, reads and writes of plain and offload
//!   devices;
//! - `resource`: the device resource, the only module with raw erl_nif
//!   calls (its invariants are written at its top);
//! - `registry` (this VM's device fds) and `linkwatch` (link events).

mod atoms;
mod control;
mod io;
mod linkwatch;
mod manage;
mod open;
mod packet;
mod registry;
mod resource;
mod terms;
mod vnet;

fn load(env: rustler::Env, _info: rustler::Term) -> bool {
    resource::init(env)
}

rustler::init!("Elixir.Tundra.Nif", load = load);
