//! The TOML file as written: serde structs with `deny_unknown_fields`, every key optional
//! so that defaults live in one place ([`super::defaults`]). Validation into runtime types
//! happens in [`super`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret::Secret;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where telemetry lines come from.
    pub source: Option<RawSource>,
    /// The hardware project's section: probe-rs keys and the channel capacity.
    pub gateway: Option<RawGateway>,
    /// MQTT sink (and the embedded broker when no `broker_url` is set).
    pub mqtt: Option<RawMqtt>,
    /// InfluxDB sink.
    pub influxdb: Option<RawInflux>,
    /// Outbox and history.
    pub storage: Option<RawStorage>,
    /// Dashboard, API and health endpoints.
    pub http: Option<RawHttp>,
    /// Home Assistant MQTT discovery.
    pub homeassistant: Option<RawHomeAssistant>,
    /// What the log says while running.
    pub log: Option<RawLog>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Time between summary lines ("0s": none).
    #[serde(default, with = "humantime_serde")]
    pub summary_interval: Option<Duration>,
}

/// `[homeassistant]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    /// Publish discovery configs (retained) for every series.
    pub enabled: Option<bool>,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: Option<String>,
    /// Identifies this gateway in unique ids and discovery topics.
    pub gateway_id: Option<String>,
}

/// `[source]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// probe-rs | command | serial | rylr998 | stdin | file | simulator.
    pub kind: Option<String>,
    /// probe-rs: the probe selector (`VID:PID[:serial]`).
    pub probe_id: Option<String>,
    /// probe-rs: the target chip.
    pub chip: Option<String>,
    /// probe-rs: the firmware ELF.
    pub firmware_path: Option<String>,
    /// probe-rs: the executable to run (default `probe-rs` on PATH).
    pub probe_rs: Option<String>,
    /// command: argv of the process whose stdout carries telemetry.
    pub command: Option<Vec<String>>,
    /// probe-rs/command/serial/rylr998: first restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_initial: Option<Duration>,
    /// probe-rs/command/serial/rylr998: longest restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_max: Option<Duration>,
    /// serial/rylr998/file: device or file path.
    pub path: Option<PathBuf>,
    /// serial/rylr998: baud rate.
    pub baud: Option<u32>,
    /// rylr998: the modem's own address (`AT+ADDRESS`).
    pub address: Option<u16>,
    /// rylr998: network id (`AT+NETWORKID`), 3 to 15 or 18.
    pub network_id: Option<u8>,
    /// rylr998: radio frequency in Hz (`AT+BAND`).
    pub band: Option<u32>,
    /// rylr998: `"<spreading factor>,<bandwidth>,<coding rate>,<preamble>"` (`AT+PARAMETER`).
    pub parameter: Option<String>,
    /// rylr998: acknowledge every good frame (`AT+SEND` of an ACK packet).
    pub ack: Option<bool>,
    /// rylr998: node names by sender address, e.g. `{ 1 = "node1" }`.
    pub nodes: Option<std::collections::BTreeMap<String, String>>,
    /// file: replay speed (1 = recorded pace, 0 = as fast as possible).
    pub speed: Option<f64>,
    /// simulator: time between packets.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// simulator: number of remote nodes.
    pub remote_nodes: Option<u32>,
    /// simulator: PRNG seed (same seed, same data).
    pub seed: Option<u64>,
    /// Longest line accepted; longer lines are cut, counted and quarantined.
    pub max_line_length: Option<usize>,
    /// stdin/file: how long to keep delivering after end of input.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `[gateway]`, as the hardware project wrote it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// probe-rs probe selector.
    pub probe_id: Option<String>,
    /// probe-rs chip.
    pub chip: Option<String>,
    /// Firmware ELF path.
    pub firmware_path: Option<String>,
    /// Lines buffered between the source and the outbox writer.
    pub channel_capacity: Option<usize>,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `mqtt://host:port`; unset = publish to the embedded broker.
    pub broker_url: Option<String>,
    /// Where the embedded broker listens when `broker_url` is unset.
    pub embedded_listen: Option<String>,
    /// Embedded broker over TLS: its PEM certificate (must name the listen address).
    pub embedded_cert_file: Option<PathBuf>,
    /// Embedded broker over TLS: the certificate's PEM private key.
    pub embedded_key_file: Option<PathBuf>,
    /// Client id (fixed: the broker keeps the persistent session under it).
    pub client_id: Option<String>,
    /// First topic level(s).
    pub topic_prefix: Option<String>,
    /// 0, 1 or 2.
    pub qos: Option<u8>,
    /// Retain reading messages.
    pub retain: Option<bool>,
    /// MQTT keep-alive.
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    /// Publishes awaiting PUBACK at once.
    pub inflight: Option<u16>,
    /// First reconnect delay.
    #[serde(default, with = "humantime_serde")]
    pub reconnect_initial: Option<Duration>,
    /// Longest reconnect delay.
    #[serde(default, with = "humantime_serde")]
    pub reconnect_max: Option<Duration>,
    /// Username for the broker.
    pub username: Option<String>,
    /// Password (better: `MQTT_PASSWORD` or `password_file`).
    pub password: Option<Secret>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// `mqtts://`: PEM file of the CA that signed the broker's certificate (default: the
    /// system's trusted roots).
    pub ca_file: Option<PathBuf>,
    /// `mqtts://`: PEM client certificate for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// `mqtts://`: PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

/// `[influxdb]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    /// Base URL, e.g. `http://127.0.0.1:8086` or `https://influx.example:8086`.
    pub url: Option<String>,
    /// `v2` (org/bucket/token) or `v1` (database, user/password).
    pub api: Option<String>,
    /// v2 organisation.
    pub org: Option<String>,
    /// v2 bucket.
    pub bucket: Option<String>,
    /// v2 token (better: `INFLUXDB_TOKEN` or `token_file`).
    pub token: Option<Secret>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// v1 database.
    pub database: Option<String>,
    /// v1 user.
    pub username: Option<String>,
    /// v1 password (better: `INFLUXDB_PASSWORD` or `password_file`).
    pub password: Option<Secret>,
    /// File holding the v1 password.
    pub password_file: Option<PathBuf>,
    /// `https://` only: PEM file of the CA that signed the server's certificate (default:
    /// the Mozilla roots built into the gateway).
    pub ca_file: Option<PathBuf>,
    /// Timestamp precision of the points: `ns` (default), `us`, `ms` or `s`.
    pub precision: Option<String>,
    /// Points per write request at most.
    pub batch_size: Option<usize>,
    /// Longest time a reading waits for its batch to fill.
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// Gzip request bodies.
    pub gzip: Option<bool>,
    /// Request timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde")]
    pub retry_initial: Option<Duration>,
    /// Longest retry delay.
    #[serde(default, with = "humantime_serde")]
    pub retry_max: Option<Duration>,
}

/// `[storage]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Directory of the outbox database and the quarantine file.
    pub dir: Option<PathBuf>,
    /// How long delivered readings are kept as history.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// `normal` (survives a crash of the gateway) or `full` (also a power loss).
    pub sync: Option<String>,
    /// Disk budget of the outbox: bytes, or a string like "512MiB", "2GB".
    pub max_bytes: Option<ByteSize>,
    /// What happens at the budget: `drop_oldest` or `block`.
    pub on_full: Option<String>,
}

/// A size in bytes: an integer, or a string with a unit (KB, MB, GB, KiB, MiB, GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// "512MiB" → 536870912.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("expected a size like \"512MiB\" or a number of bytes, got {text:?}")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `false` turns the HTTP server off.
    pub enabled: Option<bool>,
    /// Listen address.
    pub listen: Option<String>,
    /// `/readyz` fails when a sink's oldest undelivered reading is older than this.
    #[serde(default, with = "humantime_serde")]
    pub ready_max_backlog_age: Option<Duration>,
    /// Bearer token required for the dashboard and `/api` (better: `HTTP_TOKEN` or
    /// `token_file`).
    pub token: Option<Secret>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Require the token for `/metrics` too.
    pub protect_metrics: Option<bool>,
}
