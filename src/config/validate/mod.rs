//! The validator: turns the raw file ([`super::raw`], command-line overrides already merged
//! in) and the environment into the runtime [`Config`], once, before anything starts. One
//! file per section: `source` (`[source]`, `[gateway]`), `mqtt` (`[mqtt]`,
//! `[homeassistant]`), `influx`, `storage`, `http` (`[http]`, `[log]`). Invariants: every
//! error names the file and the key (`[section] key: what is wrong`); a value out of range is
//! refused, never clamped; every default comes from [`super::defaults`].

mod http;
mod influx;
mod mqtt;
mod nodes;
mod source;

pub(crate) use source::validate_node_name;
mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawConfig;
use super::{defaults, Config, ConfigError, EnvLookup, MqttConfig, MqttSourceConfig, SourceConfig};
use crate::secret::Secret;

/// Validates one raw config; `file` names it in every error.
pub(super) struct Validator<'a> {
    /// The config file (or "built-in defaults"), for error messages and [`Config::origin`].
    pub(super) file: &'a str,
    /// Where the secrets' environment variables are read.
    pub(super) env: EnvLookup<'a>,
    /// `--move-corrupt-outbox`: a command-line setting with no key in the file.
    pub(super) move_corrupt_aside: bool,
}

impl Validator<'_> {
    /// The error for `key` (`[section] key`, or a command-line flag).
    pub(super) fn err(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            message: format!("{key}: {message}"),
        }
    }

    /// `raw` checked and completed, section by section. `from_file`: without a file at all,
    /// the MQTT sink publishes to the embedded broker; with one, only when `[mqtt]` is there.
    pub(super) fn validate(
        &self,
        mut raw: RawConfig,
        from_file: bool,
    ) -> Result<Config, ConfigError> {
        let identity = raw
            .gateway
            .as_mut()
            .map(|g| mqtt::GatewayIdentity {
                id: g.id.take(),
                site: g.site.take(),
            })
            .unwrap_or_default();
        let storage_raw = raw.storage.take().unwrap_or_default();
        let storage_dir = storage::dir(&storage_raw);
        let topic_prefix = raw
            .mqtt
            .as_ref()
            .and_then(|m| m.topic_prefix.clone())
            .unwrap_or_else(|| defaults::TOPIC_PREFIX.to_string());
        let env = source::SourceEnv {
            storage_dir: &storage_dir,
            topic_prefix: &topic_prefix,
        };
        let (source, ingest) = self.source(raw.source, raw.gateway, &env)?;
        let mut mqtt = match raw.mqtt {
            Some(m) if m.enabled == Some(false) => None,
            Some(m) => Some(self.mqtt(m, &storage_dir, &identity)?),
            None if !from_file => Some(self.mqtt(Default::default(), &storage_dir, &identity)?),
            None => None,
        };
        if let Some(ha) = raw.homeassistant {
            self.homeassistant(ha, mqtt.as_mut())?;
            if let Some(ha) = mqtt.as_mut().and_then(|m| m.homeassistant.as_mut()) {
                ha.command_nodes = command_nodes(&source);
            }
        }
        if mqtt.as_ref().is_none_or(|m| m.packet_events.is_none()) {
            self.identity_unused(&identity)?;
        }
        if let (SourceConfig::Mqtt(source), Some(sink)) = (&source, &mqtt) {
            self.no_loop(source, sink)?;
        }
        let influx = raw.influxdb.map(|i| self.influx(i)).transpose()?;
        let storage = self.storage(storage_raw, storage_dir)?;
        let http = self.http(raw.http.unwrap_or_default())?;
        let summary_interval = self.summary_interval(raw.log.unwrap_or_default());
        let downlink = self.downlink(raw.downlink.unwrap_or_default())?;
        Ok(Config {
            origin: self.file.to_string(),
            source,
            ingest,
            mqtt,
            influx,
            storage,
            http,
            summary_interval,
            downlink,
        })
    }

    /// Refuses a `kind = "mqtt"` source whose topic takes in what this gateway's own MQTT sink
    /// publishes: every packet would come back to be stored and published again.
    fn no_loop(&self, source: &MqttSourceConfig, sink: &MqttConfig) -> Result<(), ConfigError> {
        use crate::mqtt::topic::{filters_overlap, reading_topic, status_topic};
        let topic = match source.subscription.strip_prefix("$share/") {
            Some(shared) => shared.split_once('/').map_or(shared, |(_, t)| t),
            None => &source.subscription,
        };
        let prefix = &sink.topic_prefix;
        let mut published = vec![reading_topic(prefix, "+", "+"), status_topic(prefix)];
        published.extend(sink.packet_events.as_ref().map(|p| p.topic.clone()));
        published.extend(
            sink.homeassistant
                .as_ref()
                .map(|ha| format!("{}/#", ha.discovery_prefix)),
        );
        match published.iter().find(|p| filters_overlap(topic, p)) {
            Some(ours) => Err(self.err(
                "[source] topic",
                format!("{topic:?} takes in what this gateway publishes itself ({ours}): a loop; change the topic, the [mqtt] topic_prefix, or set [mqtt] enabled = false"),
            )),
            None => Ok(()),
        }
    }

    /// `value` as a listen address, or an error naming `key`.
    fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.err(
                key,
                format!("expected an address like \"127.0.0.1:8080\" (got {value:?})"),
            )
        })
    }

    /// A secret from the environment, a file, or the config, in that order.
    fn secret(
        &self,
        inline: Option<Secret>,
        file: Option<PathBuf>,
        env_name: &str,
        file_key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(value) = (self.env)(env_name).filter(|v| !v.is_empty()) {
            return Ok(Some(Secret::new(value)));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| self.err(file_key, format!("cannot read {}: {e}", path.display())))?;
            return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
        }
        Ok(inline)
    }

    /// `value` unless it is below `min`: then an error naming `key`, the bound and the value
    /// (a value out of range is refused, never raised to the bound).
    fn at_least<T: PartialOrd + std::fmt::Display>(
        &self,
        key: &str,
        value: T,
        min: T,
    ) -> Result<T, ConfigError> {
        self.at_least_shown(key, value, min, T::to_string)
    }

    /// [`Self::at_least`] for durations, written as in the file (`"100ms"`, `"1s"`).
    fn at_least_duration(
        &self,
        key: &str,
        value: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        self.at_least_shown(key, value, min, |d| {
            humantime::format_duration(*d).to_string()
        })
    }

    /// [`Self::at_least`], with `show` writing the values in the message.
    fn at_least_shown<T: PartialOrd>(
        &self,
        key: &str,
        value: T,
        min: T,
        show: impl Fn(&T) -> String,
    ) -> Result<T, ConfigError> {
        if value < min {
            let message = format!("must be at least {} (got {})", show(&min), show(&value));
            return Err(self.err(key, message));
        }
        Ok(value)
    }
}

/// `path` made absolute against the working directory, once, so every message and every
/// process the gateway starts sees the same place.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// [`absolute`] of a path given as text (a program or firmware file on a command line).
fn absolute_text(path: &str) -> String {
    absolute(PathBuf::from(path)).display().to_string()
}

/// The nodes `source` can send commands to (`crate::downlink::Reach`, for Home Assistant).
fn command_nodes(source: &SourceConfig) -> super::CommandNodes {
    match source {
        SourceConfig::Rylr998(r) => {
            super::CommandNodes::Only(r.nodes.values().map(|n| n.name.clone()).collect())
        }
        SourceConfig::Serial(_) => node2_path(),
        _ => super::CommandNodes::None,
    }
}

/// Through Node 2: its radio nodes, not Node 2 itself nor the link's own readings.
fn node2_path() -> super::CommandNodes {
    super::CommandNodes::AllBut(
        ["node2", "signal", "stats", "gateway"]
            .into_iter()
            .map(String::from)
            .collect(),
    )
}

/// `n` if it is at least 1.
fn positive(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_load as load;
    use super::super::{Config, InfluxApi};

    /// Each config text is refused with an error that contains its expected words.
    fn refused_naming(cases: &[(&str, &str)]) {
        for (text, expected) in cases {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("[mqtt]\nqos = 3\n", "[mqtt] qos: must be 0, 1 or 2 (got 3)"),
            (
                "[source]\nkind = \"carrier-pigeon\"\n",
                "[source] kind: unknown kind",
            ),
            (
                "[influxdb]\nurl = \"localhost:8086\"\nbucket = \"b\"\n",
                "[influxdb] url: must start with http://",
            ),
            (
                "[influxdb]\nurl = \"http://x\"\napi = \"v1\"\n",
                "[influxdb] database: required",
            ),
            (
                "[http]\nlisten = \"everywhere\"\n",
                "[http] listen: expected an address",
            ),
            (
                "[http]\nready_max_backlog_age = \"0s\"\n",
                "[http] ready_max_backlog_age: must be more than 0s",
            ),
            (
                "[mqtt]\ntopic_prefix = \"a/#\"\n",
                "[mqtt] topic_prefix: must not contain",
            ),
            ("[source]\nkind = \"serial\"\n", "[source] path: required"),
            ("[source]\nkind = \"probe-rs\"\n", "[source] chip: required"),
            ("[mqtt]\nkeep_alive = \"soon\"\n", "keep_alive"),
            (
                "[source]\nkind = \"serial\"\npath = \"/dev/x\"\nbaud = \"fast\"\n",
                "[source] baud: invalid type: string \"fast\", expected u32",
            ),
            (
                "[source]\ninterval = \"soon\"\n",
                "[source] interval: invalid value: string \"soon\", expected a duration",
            ),
            (
                "[storage]\nmax_bytes = \"12 parsecs\"\n",
                "unknown size unit",
            ),
            (
                "[storage]\nmax_bytes = 1000\n",
                "[storage] max_bytes: must be at least 1MiB",
            ),
            (
                "[storage]\non_full = \"panic\"\n",
                "line 2, column 11, on_full: unknown variant `panic`, expected `drop_oldest` or `block`",
            ),
            (
                "[storage]\nsync = \"fsync\"\n",
                "unknown variant `fsync`, expected `normal` or `full`",
            ),
            (
                "[influxdb]\nurl = \"http://x\"\napi = \"v3\"\n",
                "line 3, column 7",
            ),
            (
                "[influxdb]\nurl = \"http://x\"\napi = \"v3\"\n",
                "unknown variant `v3`, expected `v2` or `v1`",
            ),
            (
                "[influxdb]\nurl = \"http://x\"\nbucket = \"b\"\nprecision = \"m\"\n",
                "unknown variant `m`, expected one of `ns`, `us`, `ms`, `s`",
            ),
            (
                "[source]\nkind = \"stdin\"\nmax_line_length = 100\n",
                "[source] max_line_length: must be at least 256 (got 100)",
            ),
            (
                "[mqtt]\nkeep_alive = \"500ms\"\n",
                "[mqtt] keep_alive: must be at least 1s (got 500ms)",
            ),
            (
                "[mqtt]\nkeep_alive = \"0s\"\n",
                "[mqtt] keep_alive: must be at least 1s (got 0s)",
            ),
            (
                "[mqtt]\nack_timeout = \"200ms\"\n",
                "[mqtt] ack_timeout: must be at least 1s (got 200ms)",
            ),
            (
                "[influxdb]\nurl = \"http://x\"\nbucket = \"b\"\ntimeout = \"50ms\"\n",
                "[influxdb] timeout: must be at least 100ms (got 50ms)",
            ),
        ];
        refused_naming(&cases);
    }

    #[test]
    fn bad_source_settings_name_the_key() {
        let cases = [
            (
                "[source]\nkind = \"rylr998\"\n",
                "[source] path: required for kind = \"rylr998\"",
            ),
            (
                "[source]\nkind = \"simulator\"\npath = \"/dev/ttyACM0\"\n",
                "[source] path: not a key of kind = \"simulator\", which uses interval, remote_nodes, seed, drain_timeout",
            ),
            (
                "[source]\nbaud = 9600\n",
                "[source] baud: not a key of kind = \"simulator\"",
            ),
            (
                "[gateway]\nchip = \"STM32F446RETx\"\n",
                "[gateway] chip: selects the probe-rs source only with firmware_path",
            ),
            (
                "[source]\nkind = \"probe-rs\"\nchip = \"a\"\nfirmware_path = \"f\"\n[gateway]\nchip = \"b\"\n",
                "[gateway] chip: also set in [source], which wins: keep one of the two",
            ),
            (
                "[source]\nkind = \"stdin\"\n[gateway]\nprobe_id = \"x\"\n",
                "[gateway] probe_id: only the probe-rs source uses it, and [source] kind is \"stdin\"",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnetwork_id = 16\n",
                "[source] network_id: the RYLR998 takes 3 to 15 or 18 (got 16)",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nband = 433000000\n",
                "[source] band: the RYLR998 tunes 820000000 to 960000000 Hz",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nparameter = \"7,9,1\"\n",
                "[source] parameter: expected four numbers",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nparameter = \"12,9,1,7\"\n",
                "the spreading factor must be 5 to 11 (got \"12\"",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnetwork_id = 5\n",
                "the preamble must be 12 unless network_id is 18 (got 7)",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnodes = { one = \"n\" }\n",
                "[source.nodes.one]: the key is a sender address",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnodes = { 1 = \"a/b\" }\n",
                "[source.nodes.1]: node names use 1 to 64 letters",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnodes = { 1 = \"stats\" }\n",
                "\"stats\" is taken by the link's own readings",
            ),
        ];
        refused_naming(&cases);
    }

    #[test]
    fn the_smallest_values_accepted_are_kept_as_given() {
        let c = load(
            "[source]\nkind = \"stdin\"\nmax_line_length = 256\n[mqtt]\nkeep_alive = \"1s\"\n[influxdb]\nurl = \"http://x\"\nbucket = \"b\"\ntimeout = \"100ms\"\n",
        )
        .unwrap();
        assert_eq!(c.ingest.max_line_length, 256);
        assert_eq!(
            c.mqtt.unwrap().connection.keep_alive,
            Duration::from_secs(1)
        );
        assert_eq!(c.influx.unwrap().timeout, Duration::from_millis(100));
    }

    #[test]
    fn environment_overrides_secrets() {
        let env = |name: &str| (name == "INFLUXDB_TOKEN").then(|| "from-env".to_string());
        let c = Config::from_toml(
            "[influxdb]\nurl = \"http://x\"\nbucket = \"b\"\ntoken = \"from-file\"\n",
            "t.toml",
            &env,
        )
        .unwrap();
        let InfluxApi::V2 { token, .. } = c.influx.unwrap().api else {
            panic!()
        };
        assert_eq!(token.unwrap().expose(), "from-env");
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = load(&format!(
            "[mqtt]\npassword_file = {:?}\n",
            f.display().to_string()
        ))
        .unwrap();
        assert_eq!(
            c.mqtt.unwrap().connection.password.unwrap().expose(),
            "s3cret"
        );
    }
}
