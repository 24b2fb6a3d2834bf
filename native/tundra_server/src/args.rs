//! Command-line options.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage: tundra_server [--socket PATH] [--group NAME] [--config PATH] [--state-dir PATH]
                     [--max-clients N] [--max-clients-per-uid N]
                     [--max-devices-per-uid N] [--max-unread-fds-per-uid N]
                     [--help] [--version]

Creates TUN devices for unprivileged Tundra clients that connect to PATH
(default /var/run/tundra.sock) and are root or members of group NAME
(default tundra). A member's device must use addresses the configuration
delegates to the member or one of its groups. Runs in the foreground,
logs to stderr, stops on SIGTERM or SIGINT.

  --socket PATH            Unix socket to listen on; its folder must be
                           writable by root only
  --group NAME             group whose members may connect (or a gid)
  --config PATH            delegations and name prefix (default
                           /etc/tundra/server.conf; if that is missing,
                           nothing is delegated and only root is served)
  --state-dir PATH         where the records of the devices it made are
                           kept across restarts (default /run/tundra); it
                           and its folders must be writable by root only
  --max-clients N          members' connections served at once (default
                           64); root has as many of its own besides
  --max-clients-per-uid N  of those, connections of one user (default 8)
  --max-devices-per-uid N  live devices one user may hold (default 256)
  --max-unread-fds-per-uid N
                           device fds one user may leave unread in replies
                           (default 64: one device of 64 queues)";

/// The configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/tundra/server.conf";

/// The state folder unless `--state-dir` says otherwise: under /run, as
/// the devices it records do not outlive a reboot either.
pub const DEFAULT_STATE_DIR: &str = "/run/tundra";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: PathBuf,
    pub group: String,
    /// `None`: the default file, which may be missing.
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub max_clients: usize,
    pub max_clients_per_uid: usize,
    pub max_devices_per_uid: usize,
    pub max_unread_fds_per_uid: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve(Options),
    Help,
    Version,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options {
        socket: PathBuf::from(tundra_core::client::DEFAULT_SOCKET),
        group: "tundra".into(),
        config: None,
        state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        max_clients: 64,
        max_clients_per_uid: 8,
        max_devices_per_uid: 256,
        max_unread_fds_per_uid: usize::from(tundra_core::config::MAX_QUEUES),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--socket" => options.socket = PathBuf::from(value("--socket")?),
            "--group" => options.group = value("--group")?,
            "--config" => options.config = Some(PathBuf::from(value("--config")?)),
            "--state-dir" => options.state_dir = PathBuf::from(value("--state-dir")?),
            "--max-clients" => options.max_clients = count(&value("--max-clients")?)?,
            "--max-clients-per-uid" => {
                options.max_clients_per_uid = count(&value("--max-clients-per-uid")?)?
            }
            "--max-devices-per-uid" => {
                options.max_devices_per_uid = count(&value("--max-devices-per-uid")?)?
            }
            "--max-unread-fds-per-uid" => {
                options.max_unread_fds_per_uid = count(&value("--max-unread-fds-per-uid")?)?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Serve(options))
}

fn count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_overrides() {
        let Ok(Command::Serve(o)) = parse_strs(&[]) else {
            panic!()
        };
        assert_eq!(o.socket, PathBuf::from("/var/run/tundra.sock"));
        assert_eq!(o.group, "tundra");
        let Ok(Command::Serve(o)) = parse_strs(&[
            "--socket",
            "/tmp/t.sock",
            "--group",
            "wheel",
            "--max-clients",
            "3",
            "--max-clients-per-uid",
            "2",
            "--config",
            "/etc/t.conf",
        ]) else {
            panic!()
        };
        assert_eq!(
            (o.socket, o.group, o.max_clients, o.max_clients_per_uid),
            (PathBuf::from("/tmp/t.sock"), "wheel".into(), 3, 2)
        );
        assert_eq!(o.config, Some(PathBuf::from("/etc/t.conf")));
    }

    #[test]
    fn bad_arguments_are_reported() {
        assert!(parse_strs(&["--socket"]).is_err());
        assert!(parse_strs(&["--max-clients", "0"]).is_err());
        assert!(parse_strs(&["--frobnicate"]).is_err());
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["--version"]), Ok(Command::Version));
    }
}
