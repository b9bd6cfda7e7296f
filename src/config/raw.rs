//! The TOML file as written: serde structs with `deny_unknown_fields`, every key optional
//! so that defaults live in one place ([`super::defaults`]). Validation into runtime types
//! happens in `super::validate`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{FullPolicy, SyncMode};
use crate::reading::Precision;
use crate::secret::Secret;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where telemetry lines come from: read as its kind by [`RawSource::from_table`].
    pub source: Option<toml::Table>,
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
    /// Commands to the nodes.
    pub downlink: Option<RawDownlink>,
}

/// `[downlink]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownlink {
    /// A command not confirmed by then ends `expired`.
    #[serde(default, with = "humantime_serde")]
    pub expire_after: Option<Duration>,
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

/// `[source]`: one struct per kind, each refusing keys it does not use. The table's `kind`
/// picks which ([`RawSource::from_table`]), so an option of another kind cannot be accepted
/// and ignored.
#[derive(Debug)]
pub enum RawSource {
    /// `kind = "simulator"`.
    Simulator(RawSimulator),
    /// `kind = "probe-rs"`.
    ProbeRs(RawProbeRs),
    /// `kind = "command"`.
    Command(RawCommand),
    /// `kind = "serial"`.
    Serial(RawSerial),
    /// `kind = "rylr998"`.
    Rylr998(RawRylr998),
    /// `kind = "mqtt"`.
    Mqtt(RawMqttSource),
    /// `kind = "stdin"`.
    Stdin(RawStdin),
    /// `kind = "file"`.
    File(RawFile),
}

/// Every source kind, as `kind` names it.
pub const SOURCE_KINDS: [&str; 7] = [
    "simulator",
    "probe-rs",
    "command",
    "serial",
    "rylr998",
    "stdin",
    "file",
];

/// Why `[source]` could not be read as its kind.
#[derive(Debug)]
pub enum SourceTableError {
    /// `kind` names no kind.
    UnknownKind(String),
    /// A key this kind does not use.
    NotAKey {
        /// The kind.
        kind: String,
        /// The key.
        key: String,
        /// The keys the kind uses.
        keys: Vec<String>,
    },
    /// Any other problem (a value of the wrong type), as serde says it.
    Other(String),
}

impl RawSource {
    /// `table` as the source `kind` says (`kind` itself may be absent: `default_kind` then).
    pub fn from_table(
        mut table: toml::Table,
        default_kind: &str,
    ) -> Result<(String, RawSource), SourceTableError> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(SourceTableError::Other(format!(
                    "kind must be a string like \"serial\", not {other}"
                )))
            }
            None => default_kind.to_string(),
        };
        let value = toml::Value::Table(table);
        let parsed = match kind.as_str() {
            "simulator" => parse(value).map(RawSource::Simulator),
            "probe-rs" => parse(value).map(RawSource::ProbeRs),
            "command" => parse(value).map(RawSource::Command),
            "serial" => parse(value).map(RawSource::Serial),
            "rylr998" => parse(value).map(RawSource::Rylr998),
            "mqtt" => parse(value).map(RawSource::Mqtt),
            "stdin" => parse(value).map(RawSource::Stdin),
            "file" => parse(value).map(RawSource::File),
            _ => return Err(SourceTableError::UnknownKind(kind)),
        };
        match parsed {
            Ok(source) => Ok((kind, source)),
            Err(SourceTableError::NotAKey { key, keys, .. }) => {
                Err(SourceTableError::NotAKey { kind, key, keys })
            }
            Err(other) => Err(other),
        }
    }

    /// `max_line_length` and `drain_timeout`, the keys the ingest stage reads.
    pub fn common(&self) -> (Option<usize>, Option<Duration>) {
        match self {
            RawSource::Simulator(s) => (None, s.drain_timeout),
            RawSource::ProbeRs(s) => (s.max_line_length, s.drain_timeout),
            RawSource::Command(s) => (s.max_line_length, s.drain_timeout),
            RawSource::Serial(s) => (s.max_line_length, s.drain_timeout),
            RawSource::Rylr998(s) => (None, s.drain_timeout),
            RawSource::Mqtt(s) => (None, s.drain_timeout),
            RawSource::Stdin(s) => (s.max_line_length, s.drain_timeout),
            RawSource::File(s) => (s.max_line_length, s.drain_timeout),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, SourceTableError> {
    value.try_into().map_err(|e: toml::de::Error| {
        // toml says which key as a last line: "invalid type: ..., expected u32\nin `baud`".
        let full = e.to_string();
        let (message, key) = match full.trim().rsplit_once("\nin `") {
            Some((message, key)) => (message.trim().to_string(), Some(key.trim_end_matches('`'))),
            None => (full.trim().to_string(), None),
        };
        // serde: "unknown field `path`, expected one of `interval`, `seed`"
        match message.strip_prefix("unknown field `") {
            Some(rest) => {
                let key = rest.split('`').next().unwrap_or_default().to_string();
                let keys = rest
                    .split('`')
                    .skip(1)
                    .filter(|k| !k.is_empty() && !k.contains(' ') && !k.contains(','))
                    .map(str::to_string)
                    .collect();
                SourceTableError::NotAKey {
                    kind: String::new(),
                    key,
                    keys,
                }
            }
            None => SourceTableError::Other(match key {
                Some(key) => format!("{key}: {message}"),
                None => message,
            }),
        }
    })
}

/// `kind = "simulator"`: the built-in model of the field nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimulator {
    /// Time between packets.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Number of remote nodes.
    pub remote_nodes: Option<u32>,
    /// PRNG seed (same seed, same data).
    pub seed: Option<u64>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "probe-rs"`: `probe-rs run` prints Node 2's defmt log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbeRs {
    /// The probe selector (`VID:PID[:serial]`); unset: the only probe attached.
    pub probe_id: Option<String>,
    /// The target chip.
    pub chip: Option<String>,
    /// The firmware ELF.
    pub firmware_path: Option<String>,
    /// The executable to run (default `probe-rs` on PATH).
    pub probe_rs: Option<String>,
    /// First restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_initial: Option<Duration>,
    /// Longest restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_max: Option<Duration>,
    /// Longest record accepted; longer ones are cut, counted and quarantined.
    pub max_line_length: Option<usize>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "command"`: any program whose stdout carries telemetry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    /// argv of the process.
    pub command: Option<Vec<String>>,
    /// First restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_initial: Option<Duration>,
    /// Longest restart delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_max: Option<Duration>,
    /// Longest record accepted.
    pub max_line_length: Option<usize>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "serial"`: the ST-Link virtual COM port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    /// Device path.
    pub path: Option<PathBuf>,
    /// Baud rate.
    pub baud: Option<u32>,
    /// First reopen delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_initial: Option<Duration>,
    /// Longest reopen delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_max: Option<Duration>,
    /// Longest record accepted.
    pub max_line_length: Option<usize>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "rylr998"`: a REYAX RYLR998 LoRa modem on a serial port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRylr998 {
    /// Device path.
    pub path: Option<PathBuf>,
    /// Baud rate.
    pub baud: Option<u32>,
    /// The modem's own address (`AT+ADDRESS`).
    pub address: Option<u16>,
    /// Network id (`AT+NETWORKID`), 3 to 15 or 18.
    pub network_id: Option<u8>,
    /// The radio region (`us915`, `eu868`): band, parameters and power, as the nodes' firmware
    /// was built (`scripts/firmware --region`).
    pub region: Option<String>,
    /// Radio frequency in Hz (`AT+BAND`).
    pub band: Option<u32>,
    /// RF output power in dBm (`AT+CRFOP`), 0 to 22.
    pub power: Option<u8>,
    /// `"<spreading factor>,<bandwidth>,<coding rate>,<preamble>"` (`AT+PARAMETER`).
    pub parameter: Option<String>,
    /// Acknowledge every good frame (`AT+SEND` of an ACK packet).
    pub ack: Option<bool>,
    /// The nodes by sender address: `[source.nodes.<address>]` tables (`name`, and `key`,
    /// `key_file` or `legacy`), or the older names-only form `{ 1 = "node1" }`. Read by the
    /// validator (`validate/nodes.rs`), which names what is wrong in an entry.
    pub nodes: Option<std::collections::BTreeMap<String, toml::Value>>,
    /// First reopen delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_initial: Option<Duration>,
    /// Longest reopen delay.
    #[serde(default, with = "humantime_serde")]
    pub restart_max: Option<Duration>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "mqtt"`: packet events of edge gateways, from a broker (central ingest).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttSource {
    /// `mqtt://host:port`, or the nodes of a cluster.
    pub url: Option<Urls>,
    /// Topic filter (default `<[mqtt] topic_prefix or iiot>/gateway/+/packets`).
    pub topic: Option<String>,
    /// Subscribe as `$share/<group>/<topic>`: the broker spreads the events over the group.
    pub share_group: Option<String>,
    /// Client id (fixed: the broker keeps the persistent session under it).
    pub client_id: Option<String>,
    /// Login.
    pub username: Option<String>,
    /// Password (`MQTT_SOURCE_PASSWORD` or `password_file` override it).
    pub password: Option<Secret>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// PEM CA for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// Its private key.
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    /// First reconnect delay.
    #[serde(default, with = "humantime_serde")]
    pub reconnect_initial: Option<Duration>,
    /// Longest reconnect delay.
    #[serde(default, with = "humantime_serde")]
    pub reconnect_max: Option<Duration>,
    /// How long to keep delivering at shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "stdin"`: standard input.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdin {
    /// Longest record accepted.
    pub max_line_length: Option<usize>,
    /// How long to keep delivering after the input ended.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// `kind = "file"`: a recorded log replayed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// The recording.
    pub path: Option<PathBuf>,
    /// Replay speed (1 = recorded pace, 0 = as fast as possible).
    pub speed: Option<f64>,
    /// Longest record accepted.
    pub max_line_length: Option<usize>,
    /// How long to keep delivering after the input ended.
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
    /// This gateway's id in its packet events (default: the MQTT client id).
    pub id: Option<String>,
    /// Where this gateway is, in its packet events.
    pub site: Option<String>,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `false`: no MQTT sink, whatever else the section says (an ingest tier usually only
    /// writes the database).
    pub enabled: Option<bool>,
    /// `mqtt://host:port`, or an array of them (a cluster's nodes, tried in turn); unset =
    /// publish to the embedded broker.
    pub broker_url: Option<Urls>,
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
    /// One JSON message per packet on `<prefix>/gateway/<id>/packets`, besides the
    /// per-metric topics.
    pub packet_events: Option<bool>,
    /// MQTT keep-alive.
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    /// Publishes awaiting PUBACK at once.
    pub inflight: Option<u16>,
    /// Longest wait for an acknowledgement while publishes await one.
    #[serde(default, with = "humantime_serde")]
    pub ack_timeout: Option<Duration>,
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
    pub api: Option<RawApi>,
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
    pub precision: Option<Precision>,
    /// Points per write request at most.
    pub batch_size: Option<usize>,
    /// Minimum batching delay (default none).
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

/// `[influxdb] api`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawApi {
    /// `/api/v2/write`: org, bucket, token.
    #[default]
    V2,
    /// `/write`: database, username, password.
    V1,
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
    pub sync: Option<SyncMode>,
    /// Disk budget of the outbox: bytes, or a string like "512MiB", "2GB".
    pub max_bytes: Option<ByteSize>,
    /// What happens at the budget: `drop_oldest` or `block`.
    pub on_full: Option<FullPolicy>,
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

/// One URL or an array of them: `"mqtt://a"` or `["mqtt://a", "mqtt://b"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls(pub Vec<String>);

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Urls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL or an array of URLs")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Urls, E> {
                Ok(Urls(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Urls, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(Urls(urls))
            }
        }
        d.deserialize_any(Visitor)
    }
}
