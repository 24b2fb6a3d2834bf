//! Reference programs for Tundra's benchmark (`make bench`), the "raw Rust"
//! side of every comparison and the load that drives both sides:
//!
//! - `loadgen`: keeps a window of UDP datagrams in flight to an address and
//!   counts the answers per second;
//! - `reflect`: a TUN device answered by a blocking read/write loop (UDP
//!   turned around, echo requests answered);
//! - `relay`: one end of an IP-over-UDP tunnel (TUN fd <-> UDP socket);
//! - `relay-offload`: the same with TUN offload and UDP GSO/GRO;
//! - `create-loop`: creates and configures devices one after another with
//!   the same `tundra_core` calls the NIF uses, and reports the rate.
//!
//! Long-running commands print `ready <name>` once their device exists and
//! exit when their standard input closes, so a parent can drive them
//! through a pipe. Results are printed as one line of `key=value` pairs.

mod args;
mod create_loop;
mod flood;
mod loadgen;
mod packet;
mod reflect;
mod relay;
#[cfg(target_os = "linux")]
mod relay_offload;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let args = match args::Args::parse(argv) {
        Ok(args) => args,
        Err(msg) => return fail(&msg),
    };
    let result = match command.as_str() {
        "loadgen" => loadgen::run(&args),
        "reflect" => reflect::run(&args),
        "relay" => relay::run(&args),
        #[cfg(target_os = "linux")]
        "relay-offload" => relay_offload::run(&args),
        "create-loop" => create_loop::run(&args),
        "flood" => flood::run(&args),
        _ => Err(
            "usage: tundra_bench loadgen|reflect|relay|relay-offload|create-loop|flood --key value ..."
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("tundra_bench: {msg}");
    ExitCode::FAILURE
}

/// Exits the process once standard input reaches end of file: the parent
/// closed its pipe (or died).
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// Announces a created device to the parent.
fn announce_ready(name: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {name}");
    let _ = out.flush();
}
