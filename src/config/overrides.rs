//! Command-line settings that override the config file (`--http-listen`, `--mqtt-listen`,
//! `--storage-dir`, `--move-corrupt-outbox`). They are merged into the raw file before
//! validation, so the validator checks them as it checks the file's values, and what derives
//! from them follows (the default MQTT client id hashes the storage dir). A flag that would
//! do nothing with this config is refused, never ignored.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::raw::RawConfig;

/// Settings given on the command line, each winning over the config file's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--http-listen`: `[http] listen`.
    pub http_listen: Option<SocketAddr>,
    /// `--mqtt-listen`: `[mqtt] embedded_listen`.
    pub mqtt_listen: Option<SocketAddr>,
    /// `--storage-dir`: `[storage] dir`.
    pub storage_dir: Option<PathBuf>,
    /// `--move-corrupt-outbox`: rename a corrupt outbox aside instead of refusing to start
    /// (no key in the file).
    pub move_corrupt_aside: bool,
}

/// A flag refused with this config: the flag and why.
pub(super) type Refusal = (&'static str, &'static str);

impl Overrides {
    /// Writes the overriding values into `raw`'s keys. `from_file`: without a config file
    /// the embedded broker runs, so `--mqtt-listen` has a broker to move; with one, only
    /// when `[mqtt]` is there without `broker_url`. `move_corrupt_aside` has no key: the
    /// validator takes it directly.
    pub(super) fn merge_into(&self, raw: &mut RawConfig, from_file: bool) -> Result<(), Refusal> {
        if let Some(addr) = self.http_listen {
            let http = raw.http.get_or_insert_with(Default::default);
            if http.enabled == Some(false) {
                return Err((
                    "--http-listen",
                    "the HTTP server is off ([http] enabled = false): remove one of the two",
                ));
            }
            http.listen = Some(addr.to_string());
        }
        if let Some(addr) = self.mqtt_listen {
            if raw.mqtt.is_none() && from_file {
                return Err((
                    "--mqtt-listen",
                    "no embedded broker runs: the config has no [mqtt] section",
                ));
            }
            let mqtt = raw.mqtt.get_or_insert_with(Default::default);
            if mqtt.broker_url.is_some() {
                return Err((
                    "--mqtt-listen",
                    "no embedded broker runs: [mqtt] broker_url names an external one (remove one of the two)",
                ));
            }
            mqtt.embedded_listen = Some(addr.to_string());
        }
        if let Some(dir) = &self.storage_dir {
            raw.storage.get_or_insert_with(Default::default).dir = Some(dir.clone());
        }
        Ok(())
    }
}
