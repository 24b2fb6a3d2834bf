//! `--key value` command-line arguments.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tundra_core::DeviceConfig;

pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut map = HashMap::new();
        while let Some(key) = argv.next() {
            let Some(key) = key.strip_prefix("--") else {
                return Err(format!("expected --key, got {key:?}"));
            };
            let value = argv
                .next()
                .ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), value);
        }
        Ok(Args(map))
    }

    pub fn get<T: FromStr>(&self, key: &str) -> Result<T, String> {
        let raw = self
            .0
            .get(key)
            .ok_or_else(|| format!("--{key} is required"))?;
        raw.parse()
            .map_err(|_| format!("--{key}: bad value {raw:?}"))
    }

    pub fn get_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        if self.0.contains_key(key) {
            self.get(key)
        } else {
            Ok(default)
        }
    }

    pub fn socket_addr(&self, key: &str) -> Result<SocketAddr, String> {
        self.get(key)
    }

    /// The device described by `--address`, `--dstaddr`, `--prefix`, `--mtu`.
    pub fn device_config(&self) -> Result<DeviceConfig, String> {
        let address: IpAddr = self.get("address")?;
        let mut config = DeviceConfig::new(address);
        if self.0.contains_key("dstaddr") {
            config.dstaddr = Some(self.get("dstaddr")?);
        }
        config.prefix = self.get_or("prefix", config.prefix)?;
        config.mtu = self.get_or("mtu", config.mtu)?;
        config
            .validate()
            .map_err(|bad| format!("invalid {}", bad.option_name()))?;
        Ok(config)
    }
}
