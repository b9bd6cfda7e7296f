//! Configuration: the TOML file (or built-in defaults) and the environment, validated once
//! into the runtime types below before anything starts. Nothing else reads the file or the
//! environment.
//!
//! Rules (DESIGN.md section 5):
//! - No config file at all: simulator, embedded MQTT broker, SQLite store, dashboard.
//! - With a file: a sink runs when its section is there (`[mqtt]` without `broker_url`
//!   publishes to the embedded broker); `[source]` defaults to the simulator, or to probe-rs
//!   when the hardware project's `[gateway]` section names a probe.
//! - Secrets come from the file, a `*_file` key, or the environment (`MQTT_PASSWORD`,
//!   `INFLUXDB_TOKEN`, `INFLUXDB_PASSWORD`), the environment winning.
//! - Unknown keys and bad values are errors naming the key and the file.

mod raw;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use secret::Secret;

use crate::reading::Precision;
use crate::sink::mqtt::topic::validate_prefix;
use raw::RawConfig;

/// Built-in defaults, one place.
pub mod defaults {
    use std::time::Duration;

    /// Config file read when `--config` is not given and it exists.
    pub const CONFIG_FILE: &str = "config.toml";
    /// Lines buffered between a source and the outbox writer. Full -> the source waits.
    pub const CHANNEL_CAPACITY: usize = 1024;
    /// Longest line accepted from a source, in bytes.
    pub const MAX_LINE_LENGTH: usize = 64 * 1024;
    /// stdin/file: time to keep delivering after end of input.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Restart delays of a source process or serial port.
    pub const RESTART_INITIAL: Duration = Duration::from_secs(1);
    /// Longest restart delay.
    pub const RESTART_MAX: Duration = Duration::from_secs(60);
    /// Serial baud rate (the ST-Link VCP's, and the RYLR998's).
    pub const BAUD: u32 = 115_200;
    /// The RYLR998 on the gateway takes Node 2's address: Node 1 sends to 2.
    pub const MODEM_ADDRESS: u16 = 2;
    /// The hardware project's `AT+NETWORKID`.
    pub const NETWORK_ID: u8 = 18;
    /// The hardware project's `AT+BAND` (Hz).
    pub const BAND: u32 = 915_000_000;
    /// Time between the log's summary lines.
    pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(300);
    /// The hardware project's `AT+PARAMETER`.
    pub const RADIO_PARAMETERS: &str = "7,9,1,7";
    /// Simulator packet interval.
    pub const SIM_INTERVAL: Duration = Duration::from_secs(10);
    /// Embedded broker address.
    pub const EMBEDDED_LISTEN: &str = "127.0.0.1:1883";
    /// MQTT client id.
    pub const CLIENT_ID: &str = "iiot-gateway";
    /// MQTT topic prefix.
    pub const TOPIC_PREFIX: &str = "iiot";
    /// MQTT QoS.
    pub const QOS: u8 = 1;
    /// MQTT keep-alive.
    pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
    /// Publishes awaiting acknowledgement at once.
    pub const INFLIGHT: u16 = 100;
    /// First reconnect / retry delay.
    pub const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
    /// Longest reconnect / retry delay.
    pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
    /// Points per InfluxDB write.
    pub const BATCH_SIZE: usize = 5000;
    /// Longest wait for a batch to fill.
    pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    /// InfluxDB request timeout.
    pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
    /// Outbox directory.
    pub const STORAGE_DIR: &str = "iiot-data";
    /// History kept.
    pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Disk budget of the outbox.
    pub const MAX_BYTES: u64 = 1 << 30;
    /// Smallest disk budget accepted.
    pub const MIN_BYTES: u64 = 1 << 20;
    /// Dashboard address.
    pub const HTTP_LISTEN: &str = "127.0.0.1:8080";
    /// `/readyz`: oldest undelivered reading allowed.
    pub const READY_MAX_BACKLOG_AGE: Duration = Duration::from_secs(60);
}

/// A config problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The config file (or "built-in defaults" / "environment").
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a file path or "built-in defaults".
    pub origin: String,
    /// The source of telemetry lines.
    pub source: SourceConfig,
    /// Bounds between source and outbox.
    pub ingest: IngestConfig,
    /// MQTT sink, if on.
    pub mqtt: Option<MqttConfig>,
    /// InfluxDB sink, if on.
    pub influx: Option<InfluxConfig>,
    /// Outbox and history.
    pub storage: StorageConfig,
    /// HTTP server, if on.
    pub http: Option<HttpConfig>,
    /// Time between the log's summary lines; `None`: no summary.
    pub summary_interval: Option<Duration>,
}

/// Which source runs, with its settings.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A child process whose stdout carries telemetry (probe-rs or any command).
    Process(ProcessConfig),
    /// A serial port with bare JSON lines.
    Serial(SerialConfig),
    /// A REYAX RYLR998 LoRa modem on a serial port: the gateway receives the radio itself.
    Rylr998(Rylr998Config),
    /// Standard input.
    Stdin,
    /// A recorded log replayed.
    File(FileConfig),
    /// The built-in simulator.
    Simulator(SimulatorConfig),
}

impl SourceConfig {
    /// The `kind` name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Process(p) => p.kind,
            SourceConfig::Serial(_) => "serial",
            SourceConfig::Rylr998(_) => "rylr998",
            SourceConfig::Stdin => "stdin",
            SourceConfig::File(_) => "file",
            SourceConfig::Simulator(_) => "simulator",
        }
    }

    /// Whether the source ends by itself (end of input), so the gateway drains and exits.
    pub fn is_finite(&self) -> bool {
        matches!(self, SourceConfig::Stdin | SourceConfig::File(_))
    }
}

/// A supervised child process.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// `probe-rs` or `command`.
    pub kind: &'static str,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// First restart delay.
    pub restart_initial: Duration,
    /// Longest restart delay.
    pub restart_max: Duration,
}

/// A serial port.
#[derive(Debug, Clone)]
pub struct SerialConfig {
    /// Device path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// First reopen delay.
    pub restart_initial: Duration,
    /// Longest reopen delay.
    pub restart_max: Duration,
}

/// A RYLR998 modem and how to set it up.
#[derive(Debug, Clone)]
pub struct Rylr998Config {
    /// Device path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// The modem's address (`AT+ADDRESS`).
    pub address: u16,
    /// `AT+NETWORKID`.
    pub network_id: u8,
    /// `AT+BAND`, Hz.
    pub band: u32,
    /// `AT+PARAMETER`.
    pub parameter: lora_link::at::RadioParameters,
    /// Acknowledge good frames.
    pub ack: bool,
    /// Node names by sender address.
    pub nodes: std::collections::BTreeMap<u16, String>,
    /// First reopen delay.
    pub restart_initial: Duration,
    /// Longest reopen delay.
    pub restart_max: Duration,
}

/// A recorded log to replay.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The file.
    pub path: PathBuf,
    /// 1 = recorded pace, 0 = as fast as possible.
    pub speed: f64,
}

/// The simulator.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Time between packets.
    pub interval: Duration,
    /// Remote nodes.
    pub remote_nodes: u32,
    /// Seed; `None` picks one from the clock.
    pub seed: Option<u64>,
}

/// Bounds between the source and the outbox.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Lines buffered between source and outbox writer.
    pub channel_capacity: usize,
    /// Longest line accepted.
    pub max_line_length: usize,
    /// stdin/file: delivery time after end of input.
    pub drain_timeout: Duration,
}

/// Where the MQTT sink publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerTarget {
    /// A broker the user runs.
    External {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// The broker inside the gateway, listening here.
    Embedded(SocketAddr),
}

/// The MQTT sink.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker to publish to.
    pub target: BrokerTarget,
    /// `client_id` was not set: [`default_client_id`] of the storage dir.
    pub client_id_is_default: bool,
    /// Fixed client id (persistent session).
    pub client_id: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retain reading messages.
    pub retain: bool,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Publishes awaiting acknowledgement.
    pub inflight: u16,
    /// First reconnect delay.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// TLS (`mqtts://`); never a plaintext fallback.
    pub tls: Option<MqttTls>,
    /// The embedded broker's TLS certificate and key files, when it listens with TLS.
    pub embedded_tls: Option<(PathBuf, PathBuf)>,
    /// Home Assistant discovery, when enabled.
    pub homeassistant: Option<HomeAssistantConfig>,
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantConfig {
    /// Discovery prefix (`homeassistant`).
    pub discovery_prefix: String,
    /// This gateway's id in unique ids and topics (`iiot_gateway`).
    pub gateway_id: String,
}

/// TLS settings of the MQTT connection, files already read.
#[derive(Clone)]
pub struct MqttTls {
    /// PEM CA certificate(s); `None` = the system's trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key for mutual TLS.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// Which InfluxDB write API.
#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// `/api/v2/write?org=&bucket=`, token auth.
    V2 {
        /// Organisation.
        org: String,
        /// Bucket.
        bucket: String,
        /// Token.
        token: Option<Secret>,
    },
    /// `/write?db=`, optional user/password.
    V1 {
        /// Database.
        database: String,
        /// User.
        username: Option<String>,
        /// Password.
        password: Option<Secret>,
    },
}

/// The InfluxDB sink.
#[derive(Debug, Clone)]
pub struct InfluxConfig {
    /// Base URL without trailing slash.
    pub url: String,
    /// Write API and its credentials.
    pub api: InfluxApi,
    /// TLS (`https://` URLs); never a plaintext fallback.
    pub tls: Option<InfluxTls>,
    /// Timestamp precision of the points written (and of packet times).
    pub precision: Precision,
    /// Points per request.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub flush_interval: Duration,
    /// Gzip bodies.
    pub gzip: bool,
    /// Request timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

/// TLS settings of an `https://` InfluxDB URL, files already read.
#[derive(Clone)]
pub struct InfluxTls {
    /// PEM CA certificate(s) from `ca_file`, the only roots trusted then; `None` = the
    /// Mozilla roots built into the gateway (reqwest's `rustls-tls`, webpki-roots).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for InfluxTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .finish()
    }
}

/// How hard the outbox syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// WAL + synchronous=NORMAL: a gateway crash loses nothing committed.
    #[default]
    Normal,
    /// synchronous=FULL: a power loss loses nothing committed either.
    Full,
}

/// What the outbox does when it reaches its disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Drop the oldest undelivered readings (counted, warned about every minute).
    #[default]
    DropOldest,
    /// Stop accepting lines until the sinks caught up (the source waits).
    Block,
}

/// Outbox and history.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory.
    pub dir: PathBuf,
    /// History kept.
    pub retention: Duration,
    /// Sync mode.
    pub sync: SyncMode,
    /// Disk budget in bytes.
    pub max_bytes: u64,
    /// Policy at the budget.
    pub on_full: FullPolicy,
    /// Move a corrupt database aside instead of refusing to start (`--move-corrupt-outbox`).
    pub move_corrupt_aside: bool,
}

/// The HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// `/readyz` answers 503 while a sink's oldest undelivered reading is older than this.
    pub ready_max_backlog_age: Duration,
    /// Bearer token for the dashboard and `/api`; `None` = open.
    pub token: Option<Secret>,
    /// Whether `/metrics` needs the token too (`/healthz` and `/readyz` never do).
    pub protect_metrics: bool,
}

/// Reads the environment variable `name` (a seam so tests need not touch the process env).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Loads `path`, or `./config.toml` when it exists, or the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        match path {
            Some(path) => Self::from_file(path, &env),
            None if Path::new(defaults::CONFIG_FILE).exists() => {
                Self::from_file(Path::new(defaults::CONFIG_FILE), &env)
            }
            None => Self::built_in(&env),
        }
    }

    /// Loads and validates one file.
    pub fn from_file(path: &Path, env: EnvLookup) -> Result<Config, ConfigError> {
        let file = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let config = Self::from_toml(&text, &file, env)?;
        if let Some(key) = inline_secret(&text) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file,
                    key,
                    mode = format!("{:o}", mode & 0o777),
                    "config file holds a secret and other users can read it: chmod 600 it, or move the secret to the environment or a *_file key"
                );
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str, env: EnvLookup) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Validator { file, env }.validate(raw, true)
    }

    /// The embedded defaults: simulator, embedded broker, SQLite store, dashboard.
    pub fn built_in(env: EnvLookup) -> Result<Config, ConfigError> {
        Validator {
            file: "built-in defaults",
            env,
        }
        .validate(RawConfig::default(), false)
    }
}

struct Validator<'a> {
    file: &'a str,
    env: EnvLookup<'a>,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            message: format!("{key}: {message}"),
        }
    }

    fn validate(&self, raw: RawConfig, from_file: bool) -> Result<Config, ConfigError> {
        let legacy = raw.gateway.unwrap_or_default();
        // Without `kind`: the hardware project's [gateway] probe keys mean probe-rs.
        let default_kind = if legacy.probe_id.is_some() || legacy.firmware_path.is_some() {
            "probe-rs"
        } else {
            "simulator"
        };
        let (kind, source_raw) =
            raw::RawSource::from_table(raw.source.unwrap_or_default(), default_kind)
                .map_err(|e| self.source_table_error(e))?;
        let (max_line_length, drain_timeout) = source_raw.common();
        let ingest = IngestConfig {
            channel_capacity: positive(
                legacy
                    .channel_capacity
                    .unwrap_or(defaults::CHANNEL_CAPACITY),
            )
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| {
                self.err(
                    "[gateway] channel_capacity",
                    "must be between 1 and 1000000",
                )
            })?,
            max_line_length: max_line_length
                .unwrap_or(defaults::MAX_LINE_LENGTH)
                .max(256),
            drain_timeout: drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT),
        };
        self.gateway_keys(&kind, &source_raw, &legacy)?;
        let source = self.source(source_raw, legacy)?;
        let mqtt = match raw.mqtt {
            Some(m) => Some(self.mqtt(m)?),
            None if !from_file => Some(self.mqtt(Default::default())?),
            None => None,
        };
        let mut mqtt = mqtt;
        if let Some(ha) = raw.homeassistant {
            if ha.enabled.unwrap_or(false) {
                let Some(m) = mqtt.as_mut() else {
                    return Err(self.err(
                        "[homeassistant] enabled",
                        "needs an [mqtt] section: discovery is published to the MQTT broker",
                    ));
                };
                let gateway_id = ha.gateway_id.unwrap_or_else(|| "iiot_gateway".to_string());
                let valid = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                };
                if !valid(&gateway_id) {
                    return Err(self.err(
                        "[homeassistant] gateway_id",
                        "use letters, digits, _ and - only",
                    ));
                }
                let discovery_prefix = ha
                    .discovery_prefix
                    .unwrap_or_else(|| "homeassistant".to_string());
                validate_prefix(&discovery_prefix)
                    .map_err(|e| self.err("[homeassistant] discovery_prefix", e))?;
                m.homeassistant = Some(HomeAssistantConfig {
                    discovery_prefix,
                    gateway_id,
                });
            }
        }
        let influx = raw.influxdb.map(|i| self.influx(i)).transpose()?;
        let storage = self.storage(raw.storage.unwrap_or_default())?;
        if let Some(m) = mqtt.as_mut() {
            if m.client_id_is_default {
                m.client_id = default_client_id(&storage.dir);
            }
        }
        let http_raw = raw.http.unwrap_or_default();
        let http = if http_raw.enabled.unwrap_or(true) {
            let listen = http_raw
                .listen
                .unwrap_or_else(|| defaults::HTTP_LISTEN.to_string());
            let ready_max_backlog_age = http_raw
                .ready_max_backlog_age
                .unwrap_or(defaults::READY_MAX_BACKLOG_AGE);
            if ready_max_backlog_age.is_zero() {
                return Err(self.err("[http] ready_max_backlog_age", "must be more than 0s"));
            }
            let token = self.secret(
                http_raw.token,
                http_raw.token_file,
                "HTTP_TOKEN",
                "[http] token_file",
            )?;
            if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
                return Err(self.err("[http] token", "must be at least 16 characters"));
            }
            Some(HttpConfig {
                listen: self.socket_addr("[http] listen", &listen)?,
                ready_max_backlog_age,
                token,
                protect_metrics: http_raw.protect_metrics.unwrap_or(false),
            })
        } else {
            None
        };
        let summary_interval = raw
            .log
            .and_then(|l| l.summary_interval)
            .unwrap_or(defaults::SUMMARY_INTERVAL);
        Ok(Config {
            origin: self.file.to_string(),
            source,
            ingest,
            mqtt,
            influx,
            storage,
            http,
            summary_interval: (!summary_interval.is_zero()).then_some(summary_interval),
        })
    }

    /// `[source]` that could not be read as its kind, named.
    fn source_table_error(&self, e: raw::SourceTableError) -> ConfigError {
        match e {
            raw::SourceTableError::UnknownKind(kind) => self.err(
                "[source] kind",
                format!("unknown kind {kind:?}: use one of {}", raw::SOURCE_KINDS.join(", ")),
            ),
            raw::SourceTableError::NotAKey { kind, key, keys } => self.err(
                &format!("[source] {key}"),
                format!(
                    "not a key of kind = {kind:?}, which uses {}: remove it, or set the kind it belongs to",
                    keys.join(", ")
                ),
            ),
            raw::SourceTableError::Other(message) => ConfigError {
                file: self.file.to_string(),
                message: format!("[source] {message}"),
            },
        }
    }

    /// `[gateway]`'s probe keys act only for the probe-rs source, and not twice.
    fn gateway_keys(
        &self,
        kind: &str,
        source: &raw::RawSource,
        legacy: &raw::RawGateway,
    ) -> Result<(), ConfigError> {
        let set = [
            ("probe_id", legacy.probe_id.is_some()),
            ("chip", legacy.chip.is_some()),
            ("firmware_path", legacy.firmware_path.is_some()),
        ];
        for (key, is_set) in set {
            if !is_set {
                continue;
            }
            let key_name = format!("[gateway] {key}");
            let raw::RawSource::ProbeRs(p) = source else {
                let why = if kind == "simulator"
                    && legacy.probe_id.is_none()
                    && legacy.firmware_path.is_none()
                {
                    "selects the probe-rs source only with firmware_path (or probe_id): add firmware_path, or remove it".to_string()
                } else {
                    format!("only the probe-rs source uses it, and [source] kind is {kind:?}: remove it")
                };
                return Err(self.err(&key_name, why));
            };
            let twice = match key {
                "probe_id" => p.probe_id.is_some(),
                "chip" => p.chip.is_some(),
                _ => p.firmware_path.is_some(),
            };
            if twice {
                return Err(self.err(
                    &key_name,
                    "also set in [source], which wins: keep one of the two",
                ));
            }
        }
        Ok(())
    }

    fn source(
        &self,
        source: raw::RawSource,
        legacy: raw::RawGateway,
    ) -> Result<SourceConfig, ConfigError> {
        let restart = |initial: Option<Duration>, max: Option<Duration>| {
            (
                initial.unwrap_or(defaults::RESTART_INITIAL),
                max.unwrap_or(defaults::RESTART_MAX),
            )
        };
        Ok(match source {
            raw::RawSource::ProbeRs(s) => {
                let need = |value: Option<String>, fallback: Option<String>, key: &str| {
                    value.or(fallback).ok_or_else(|| {
                        self.err(
                            &format!("[source] {key}"),
                            "required for kind = \"probe-rs\" (or set it in [gateway])",
                        )
                    })
                };
                // probe-rs picks the only attached probe by itself: the selector is optional.
                let probe = s.probe_id.or(legacy.probe_id);
                let chip = need(s.chip, legacy.chip, "chip")?;
                let firmware = absolute_text(&need(
                    s.firmware_path,
                    legacy.firmware_path,
                    "firmware_path",
                )?);
                let program = s.probe_rs.unwrap_or_else(|| "probe-rs".to_string());
                // A program named by a path is run from that path, whatever the working
                // directory; a bare name is looked up on PATH.
                let program = if program.contains('/') {
                    absolute_text(&program)
                } else {
                    program
                };
                let mut argv = vec![program, "run".into()];
                if let Some(probe) = probe {
                    argv.extend(["--probe".into(), probe]);
                }
                argv.extend(["--chip".into(), chip, firmware]);
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Process(ProcessConfig {
                    kind: "probe-rs",
                    argv,
                    restart_initial,
                    restart_max,
                })
            }
            raw::RawSource::Command(s) => {
                let argv = s.command.unwrap_or_default();
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(self.err(
                        "[source] command",
                        "required for kind = \"command\": a list like [\"program\", \"arg\"]",
                    ));
                }
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Process(ProcessConfig {
                    kind: "command",
                    argv,
                    restart_initial,
                    restart_max,
                })
            }
            raw::RawSource::Serial(s) => {
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Serial(SerialConfig {
                    path: absolute(s.path.ok_or_else(|| {
                        self.err(
                            "[source] path",
                            "required for kind = \"serial\", e.g. \"/dev/ttyACM0\"",
                        )
                    })?),
                    baud: s.baud.unwrap_or(defaults::BAUD),
                    restart_initial,
                    restart_max,
                })
            }
            raw::RawSource::Rylr998(s) => {
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Rylr998(self.rylr998(s, restart_initial, restart_max)?)
            }
            raw::RawSource::Stdin(_) => SourceConfig::Stdin,
            raw::RawSource::File(s) => {
                let speed = s.speed.unwrap_or(1.0);
                if !(speed == 0.0 || (0.001..=1_000_000.0).contains(&speed)) {
                    return Err(self.err(
                        "[source] speed",
                        format!("must be 0 (as fast as possible) or between 0.001 and 1000000 (got {speed})"),
                    ));
                }
                SourceConfig::File(FileConfig {
                    path: absolute(s.path.ok_or_else(|| {
                        self.err("[source] path", "required for kind = \"file\"")
                    })?),
                    speed,
                })
            }
            raw::RawSource::Simulator(s) => {
                let interval = s.interval.unwrap_or(defaults::SIM_INTERVAL);
                if interval < Duration::from_millis(1) {
                    return Err(self.err("[source] interval", "must be at least 1ms"));
                }
                let remote_nodes = s.remote_nodes.unwrap_or(1);
                if remote_nodes == 0 {
                    return Err(self.err("[source] remote_nodes", "must be at least 1"));
                }
                SourceConfig::Simulator(SimulatorConfig {
                    interval,
                    remote_nodes,
                    seed: s.seed,
                })
            }
        })
    }

    fn mqtt(&self, m: raw::RawMqtt) -> Result<MqttConfig, ConfigError> {
        let mut tls_wanted = false;
        let target = match m.broker_url {
            Some(url) => {
                let (host, port, tls) =
                    parse_broker_url(&url).map_err(|e| self.err("[mqtt] broker_url", e))?;
                tls_wanted = tls;
                BrokerTarget::External { host, port }
            }
            None => {
                let listen = m
                    .embedded_listen
                    .unwrap_or_else(|| defaults::EMBEDDED_LISTEN.to_string());
                BrokerTarget::Embedded(self.socket_addr("[mqtt] embedded_listen", &listen)?)
            }
        };
        let embedded_tls = match (m.embedded_cert_file, m.embedded_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                if !matches!(target, BrokerTarget::Embedded(_)) {
                    return Err(self.err(
                        "[mqtt] embedded_cert_file",
                        "is for the embedded broker, but broker_url names another broker",
                    ));
                }
                for (path, key_name) in [(&cert, "embedded_cert_file"), (&key, "embedded_key_file")]
                {
                    if !path.is_file() {
                        return Err(self.err(
                            &format!("[mqtt] {key_name}"),
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                // The gateway's own sink connects over TLS too, trusting `ca_file` or, by
                // default, the broker's (self-signed) certificate itself.
                tls_wanted = true;
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(self.err(
                    "[mqtt] embedded_key_file",
                    "required with embedded_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "[mqtt] embedded_cert_file",
                    "required with embedded_key_file",
                ))
            }
        };
        let qos = m.qos.unwrap_or(defaults::QOS);
        if qos > 2 {
            return Err(self.err("[mqtt] qos", format!("must be 0, 1 or 2 (got {qos})")));
        }
        let topic_prefix = m
            .topic_prefix
            .unwrap_or_else(|| defaults::TOPIC_PREFIX.to_string());
        validate_prefix(&topic_prefix).map_err(|e| self.err("[mqtt] topic_prefix", e))?;
        // The default is made per install once the storage dir is known (see `validate`).
        let client_id_is_default = m.client_id.is_none();
        let client_id = m
            .client_id
            .unwrap_or_else(|| defaults::CLIENT_ID.to_string());
        if client_id.is_empty() {
            return Err(self.err(
                "[mqtt] client_id",
                "must not be empty (the persistent session is kept under it)",
            ));
        }
        let inflight = m.inflight.unwrap_or(defaults::INFLIGHT);
        if inflight == 0 {
            return Err(self.err("[mqtt] inflight", "must be at least 1"));
        }
        let password = self.secret(
            m.password,
            m.password_file,
            "MQTT_PASSWORD",
            "[mqtt] password_file",
        )?;
        let ca_file = m
            .ca_file
            .or_else(|| embedded_tls.as_ref().map(|(cert, _)| cert.clone()));
        let tls = self.mqtt_tls(tls_wanted, ca_file, m.client_cert_file, m.client_key_file)?;
        Ok(MqttConfig {
            target,
            client_id,
            client_id_is_default,
            topic_prefix,
            qos,
            retain: m.retain.unwrap_or(false),
            keep_alive: m
                .keep_alive
                .unwrap_or(defaults::KEEP_ALIVE)
                .max(Duration::from_secs(1)),
            inflight,
            reconnect_initial: m.reconnect_initial.unwrap_or(defaults::RECONNECT_INITIAL),
            reconnect_max: m.reconnect_max.unwrap_or(defaults::RECONNECT_MAX),
            username: m.username,
            password,
            tls,
            embedded_tls,
            homeassistant: None,
        })
    }

    fn mqtt_tls(
        &self,
        wanted: bool,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<MqttTls>, ConfigError> {
        if !wanted {
            if let Some((key, _)) = [
                ("ca_file", &ca),
                ("client_cert_file", &cert),
                ("client_key_file", &key),
            ]
            .into_iter()
            .find(|(_, v)| v.is_some())
            {
                return Err(self.err(
                    &format!("[mqtt] {key}"),
                    "is set but broker_url is not mqtts://; use mqtts://host:8883 (there is no plaintext fallback)",
                ));
            }
            return Ok(None);
        }
        let read = |path: &PathBuf, key: &str| {
            std::fs::read(path).map_err(|e| {
                self.err(
                    &format!("[mqtt] {key}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        let ca_pem = ca.as_ref().map(|p| read(p, "ca_file")).transpose()?;
        if let Some(pem) = &ca_pem {
            if pem_certificates(pem) == 0 {
                return Err(self.err("[mqtt] ca_file", "holds no PEM certificate"));
            }
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => {
                let key_pem = read(&key, "client_key_file")?;
                let key_pem = String::from_utf8(key_pem)
                    .map_err(|_| self.err("[mqtt] client_key_file", "is not a PEM text file"))?;
                let cert_pem = read(&cert, "client_cert_file")?;
                if pem_certificates(&cert_pem) == 0 {
                    return Err(self.err("[mqtt] client_cert_file", "holds no PEM certificate"));
                }
                if !pem_has_private_key(key_pem.as_bytes()) {
                    return Err(self.err("[mqtt] client_key_file", "holds no PEM private key"));
                }
                Some((cert_pem, Secret::new(key_pem)))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err("[mqtt] client_key_file", "required with client_cert_file"))
            }
            (None, Some(_)) => {
                return Err(self.err("[mqtt] client_cert_file", "required with client_key_file"))
            }
        };
        Ok(Some(MqttTls { ca_pem, client }))
    }

    fn rylr998(
        &self,
        s: raw::RawRylr998,
        restart_initial: Duration,
        restart_max: Duration,
    ) -> Result<Rylr998Config, ConfigError> {
        let path = absolute(s.path.ok_or_else(|| {
            self.err(
                "[source] path",
                "required for kind = \"rylr998\": the modem's serial device, e.g. \"/dev/ttyUSB0\" or \"/dev/serial0\"",
            )
        })?);
        let network_id = s.network_id.unwrap_or(defaults::NETWORK_ID);
        if !((3..=15).contains(&network_id) || network_id == 18) {
            return Err(self.err(
                "[source] network_id",
                format!("the RYLR998 takes 3 to 15 or 18 (got {network_id}); every node of the link needs the same"),
            ));
        }
        let band = s.band.unwrap_or(defaults::BAND);
        if !(820_000_000..=960_000_000).contains(&band) {
            return Err(self.err(
                "[source] band",
                format!("the RYLR998 tunes 820000000 to 960000000 Hz (got {band}): 915000000 in the Americas, 868000000 in Europe"),
            ));
        }
        let parameter = parse_radio_parameters(
            s.parameter.as_deref().unwrap_or(defaults::RADIO_PARAMETERS),
            network_id,
        )
        .map_err(|e| self.err("[source] parameter", e))?;
        let mut nodes = std::collections::BTreeMap::new();
        match s.nodes {
            None => {
                nodes.insert(1, "node1".to_string());
            }
            Some(table) => {
                for (address, name) in table {
                    let key = format!("[source.nodes] {address}");
                    let address: u16 = address
                        .parse()
                        .map_err(|_| self.err(&key, "the key is a sender address, 0 to 65535"))?;
                    validate_node_name(&name).map_err(|e| self.err(&key, e))?;
                    nodes.insert(address, name);
                }
            }
        }
        Ok(Rylr998Config {
            path,
            baud: s.baud.unwrap_or(defaults::BAUD),
            address: s.address.unwrap_or(defaults::MODEM_ADDRESS),
            network_id,
            band,
            parameter,
            ack: s.ack.unwrap_or(true),
            nodes,
            restart_initial,
            restart_max,
        })
    }

    fn influx(&self, i: raw::RawInflux) -> Result<InfluxConfig, ConfigError> {
        let url = i.url.ok_or_else(|| {
            self.err("[influxdb] url", "required, e.g. \"http://127.0.0.1:8086\"")
        })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(self.err(
                "[influxdb] url",
                format!("must start with http:// or https:// (got {url:?})"),
            ));
        }
        if url
            .split("://")
            .nth(1)
            .is_some_and(|rest| rest.split('/').next().is_some_and(|a| a.contains('@')))
        {
            return Err(self.err(
                "[influxdb] url",
                "credentials in the URL would be printed with it: use username/password (v1) or token (v2) instead",
            ));
        }
        let url = url.trim_end_matches('/').to_string();
        let tls = self.influx_tls(url.starts_with("https://"), i.ca_file)?;
        let api = match i.api.unwrap_or_default() {
            raw::RawApi::V2 => InfluxApi::V2 {
                org: i.org.unwrap_or_default(),
                bucket: i
                    .bucket
                    .ok_or_else(|| self.err("[influxdb] bucket", "required for api = \"v2\""))?,
                token: self.secret(
                    i.token,
                    i.token_file,
                    "INFLUXDB_TOKEN",
                    "[influxdb] token_file",
                )?,
            },
            raw::RawApi::V1 => InfluxApi::V1 {
                database: i
                    .database
                    .ok_or_else(|| self.err("[influxdb] database", "required for api = \"v1\""))?,
                username: i.username,
                password: self.secret(
                    i.password,
                    i.password_file,
                    "INFLUXDB_PASSWORD",
                    "[influxdb] password_file",
                )?,
            },
        };
        let precision = i.precision.unwrap_or_default();
        let batch_size = positive(i.batch_size.unwrap_or(defaults::BATCH_SIZE))
            .filter(|n| *n <= 100_000)
            .ok_or_else(|| self.err("[influxdb] batch_size", "must be between 1 and 100000"))?;
        Ok(InfluxConfig {
            url,
            api,
            tls,
            precision,
            batch_size,
            flush_interval: i.flush_interval.unwrap_or(defaults::FLUSH_INTERVAL),
            gzip: i.gzip.unwrap_or(true),
            timeout: i
                .timeout
                .unwrap_or(defaults::HTTP_TIMEOUT)
                .max(Duration::from_millis(100)),
            retry_initial: i.retry_initial.unwrap_or(defaults::RECONNECT_INITIAL),
            retry_max: i.retry_max.unwrap_or(defaults::RECONNECT_MAX),
        })
    }

    /// `https://` URLs get TLS (with `ca_file`'s CA when set); `ca_file` with `http://` is an
    /// error rather than a silent plaintext connection.
    fn influx_tls(
        &self,
        https: bool,
        ca_file: Option<PathBuf>,
    ) -> Result<Option<InfluxTls>, ConfigError> {
        if !https {
            if ca_file.is_some() {
                return Err(self.err(
                    "[influxdb] ca_file",
                    "is set but url is not https://; use https://host:8086 (there is no plaintext fallback)",
                ));
            }
            return Ok(None);
        }
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    self.err(
                        "[influxdb] ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if pem_certificates(&pem) == 0 {
                    return Err(self.err("[influxdb] ca_file", "holds no PEM certificate"));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Some(InfluxTls { ca_pem }))
    }

    fn storage(&self, s: raw::RawStorage) -> Result<StorageConfig, ConfigError> {
        let sync = s.sync.unwrap_or_default();
        let max_bytes = s.max_bytes.map_or(defaults::MAX_BYTES, |b| b.0);
        if max_bytes < defaults::MIN_BYTES {
            return Err(self.err(
                "[storage] max_bytes",
                format!("must be at least 1MiB (got {max_bytes} bytes)"),
            ));
        }
        let on_full = s.on_full.unwrap_or_default();
        // Relative to the working directory, made absolute once so every message names the
        // same place.
        let dir = s
            .dir
            .unwrap_or_else(|| PathBuf::from(defaults::STORAGE_DIR));
        Ok(StorageConfig {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            retention: s.retention.unwrap_or(defaults::RETENTION),
            sync,
            max_bytes,
            on_full,
            move_corrupt_aside: false,
        })
    }

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
}

/// The client id of an install that did not set one: `iiot-` + up to 8 characters of the
/// host name (to read) + `-` + a hash of the whole host name, the machine id
/// (`/etc/machine-id`) and the storage dir (to be unique): at most 22 characters, within the
/// 23 every MQTT 3.1.1 broker accepts. Stable across restarts, since the broker keeps the
/// persistent session under it (a new host name or machine id gives a new id: the new
/// session starts from the gateway's own cursor, nothing is lost); different for two
/// gateways on one host (they cannot share a storage dir) or on two hosts.
pub fn default_client_id(storage_dir: &Path) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut host = read("/proc/sys/kernel/hostname");
    if host.is_empty() {
        host = read("/etc/hostname");
    }
    let machine = read("/etc/machine-id");
    let readable: String = host
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let readable = if readable.is_empty() {
        "host".to_string()
    } else {
        readable
    };
    let hash = fnv1a(
        [host.as_bytes(), b"\0", machine.as_bytes(), b"\0"]
            .concat()
            .iter()
            .chain(storage_dir.as_os_str().as_encoded_bytes()),
    );
    format!("iiot-{readable}-{hash:08x}")
}

/// `path` made absolute against the working directory, once, so every message and every
/// process the gateway starts sees the same place.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn absolute_text(path: &str) -> String {
    absolute(PathBuf::from(path)).display().to_string()
}

/// FNV-1a, 32 bits: small, and stable across versions and platforms.
pub(crate) fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `"7,9,1,7"`: spreading factor 5-11, bandwidth 7-9, coding rate 1-4, preamble 4-24 (12 when
/// the network id is not 18, per the vendor's guide).
fn parse_radio_parameters(
    text: &str,
    network_id: u8,
) -> Result<lora_link::at::RadioParameters, String> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let [sf, bw, cr, preamble] = fields[..] else {
        return Err(format!(
            "expected four numbers \"<spreading factor>,<bandwidth>,<coding rate>,<preamble>\" like \"7,9,1,7\" (got {text:?})"
        ));
    };
    let number = |what: &str, v: &str, range: std::ops::RangeInclusive<u8>| {
        v.parse::<u8>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                format!(
                    "{what} must be {} to {} (got {v:?} in {text:?})",
                    range.start(),
                    range.end()
                )
            })
    };
    let p = lora_link::at::RadioParameters {
        spreading_factor: number("the spreading factor", sf, 5..=11)?,
        bandwidth: number(
            "the bandwidth (7 = 125 kHz, 8 = 250 kHz, 9 = 500 kHz)",
            bw,
            7..=9,
        )?,
        coding_rate: number("the coding rate (1 = 4/5 ... 4 = 4/8)", cr, 1..=4)?,
        preamble: number("the preamble", preamble, 4..=24)?,
    };
    if network_id != 18 && p.preamble != 12 {
        return Err(format!(
            "the preamble must be 12 unless network_id is 18 (got {})",
            p.preamble
        ));
    }
    Ok(p)
}

/// A node name from `[source.nodes]`: what the decoder would keep unchanged, and not one of
/// the names the link's own readings use.
fn validate_node_name(name: &str) -> Result<(), String> {
    let safe = (1..=crate::decode::MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !safe {
        return Err(format!(
            "node names use 1 to {} letters, digits, _ and - (got {name:?})",
            crate::decode::MAX_NAME_LEN
        ));
    }
    if matches!(name, "signal" | "stats" | "gateway") {
        return Err(format!(
            "{name:?} is taken by the link's own readings; choose another name"
        ));
    }
    Ok(())
}

/// The first secret written inline in a config file (`[mqtt] password`, `[influxdb] token`
/// or `[influxdb] password`), if any.
fn inline_secret(text: &str) -> Option<&'static str> {
    let raw: RawConfig = toml::from_str(text).ok()?;
    let mqtt = raw.mqtt.as_ref();
    let influx = raw.influxdb.as_ref();
    if mqtt.is_some_and(|m| m.password.is_some()) {
        Some("[mqtt] password")
    } else if influx.is_some_and(|i| i.token.is_some()) {
        Some("[influxdb] token")
    } else if influx.is_some_and(|i| i.password.is_some()) {
        Some("[influxdb] password")
    } else {
        None
    }
}

/// Number of certificates in a PEM file.
fn pem_certificates(pem: &[u8]) -> usize {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter(Result::is_ok)
        .count()
}

/// Whether a PEM file holds a private key (PKCS#1, PKCS#8 or SEC1).
fn pem_has_private_key(pem: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).is_ok()
}

fn positive(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

/// `mqtt://host:port`, `mqtts://host:port`, `tcp://host:port`, `host:port` or `host` →
/// (host, port, tls). Default port 1883, or 8883 for `mqtts://`.
fn parse_broker_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(format!(
            "unsupported scheme {scheme:?} in {url:?}; use mqtt://host:port or mqtts://host:port"
        ))
        }
        None => (url, false),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err("credentials in the URL would be printed with it: use [mqtt] username and password (or MQTT_PASSWORD) instead".to_string());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("bad port {port:?} in {url:?}"))?;
            (host, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in {url:?}; use mqtt://host:port"));
    }
    Ok((host.to_string(), port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", &no_env)
    }

    #[test]
    fn built_in_defaults_run_everything_embedded() {
        let c = Config::built_in(&no_env).expect("defaults");
        assert!(matches!(c.source, SourceConfig::Simulator(_)));
        let mqtt = c.mqtt.expect("mqtt on");
        assert_eq!(
            mqtt.target,
            BrokerTarget::Embedded("127.0.0.1:1883".parse().unwrap())
        );
        assert_eq!(mqtt.topic_prefix, "iiot");
        assert_eq!(mqtt.qos, 1);
        assert!(c.influx.is_none());
        let http = c.http.expect("http");
        assert_eq!(http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(http.ready_max_backlog_age, Duration::from_secs(60));
        assert_eq!(c.storage.retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let e = load("[mqtt]\nbrokr_url = \"mqtt://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:"), "{e}");
        assert!(e.contains("brokr_url"), "{e}");
        let e = load("[sauce]\n").unwrap_err().to_string();
        assert!(e.contains("sauce"), "{e}");
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
                "on_full = \"panic\"\n  |           ^^^^^^^\nunknown variant `panic`, expected `drop_oldest` or `block`",
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
                "[source.nodes] one: the key is a sender address",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnodes = { 1 = \"a/b\" }\n",
                "[source.nodes] 1: node names use 1 to 64 letters",
            ),
            (
                "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnodes = { 1 = \"stats\" }\n",
                "\"stats\" is taken by the link's own readings",
            ),
        ];
        for (text, expected) in cases {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn hardware_project_config_means_probe_rs() {
        let c = load(
            r#"
[mqtt]
broker_url = "mqtt://localhost:1883"
client_id = "wk7-gateway"
topic_prefix = "iiot"
qos = 1

[influxdb]
url = "http://localhost:8086"
org = "my-org"
bucket = "sensors"
token = "my-super-secret-token"

[gateway]
probe_id = "0483:374b:066DFF555185754867143848"
chip = "STM32F446RETx"
firmware_path = "../wk5-gateway-firmware/target/thumbv7em-none-eabihf/release/wk5-gateway-firmware"
channel_capacity = 100
"#,
        )
        .expect("seed config loads");
        let SourceConfig::Process(p) = &c.source else {
            panic!("expected probe-rs, got {:?}", c.source)
        };
        assert_eq!(p.kind, "probe-rs");
        assert_eq!(
            p.argv[..6],
            [
                "probe-rs",
                "run",
                "--probe",
                "0483:374b:066DFF555185754867143848",
                "--chip",
                "STM32F446RETx"
            ]
        );
        assert_eq!(c.ingest.channel_capacity, 100);
        let m = c.mqtt.expect("mqtt");
        assert_eq!(
            m.target,
            BrokerTarget::External {
                host: "localhost".into(),
                port: 1883
            }
        );
        let i = c.influx.expect("influx");
        assert!(matches!(i.api, InfluxApi::V2 { ref bucket, .. } if bucket == "sensors"));
        assert!(!format!("{i:?}").contains("my-super-secret-token"));
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
    fn influx_ca_file_is_checked_and_needs_https() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not-a-cert.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let with = |url: &str, ca: &Path| {
            load(&format!(
                "[influxdb]\nurl = \"{url}\"\nbucket = \"b\"\nca_file = {:?}\n",
                ca.display().to_string()
            ))
        };
        let e = with("https://db:8086", &not_pem).unwrap_err().to_string();
        assert!(
            e.contains("[influxdb] ca_file: holds no PEM certificate"),
            "{e}"
        );
        let e = with("https://db:8086", &dir.path().join("missing.crt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[influxdb] ca_file: cannot read"), "{e}");
        let e = with("http://db:8086", &not_pem).unwrap_err().to_string();
        assert!(
            e.contains("[influxdb] ca_file: is set but url is not https://"),
            "{e}"
        );
        // https:// without ca_file: TLS with the built-in roots; http://: no TLS at all.
        let tls = |url: &str| {
            load(&format!("[influxdb]\nurl = \"{url}\"\nbucket = \"b\"\n"))
                .unwrap()
                .influx
                .unwrap()
                .tls
        };
        assert!(tls("https://db:8086").is_some_and(|t| t.ca_pem.is_none()));
        assert!(tls("http://db:8086").is_none());
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
        assert_eq!(c.mqtt.unwrap().password.unwrap().expose(), "s3cret");
    }

    #[test]
    fn the_default_client_id_is_stable_per_install_and_short() {
        let a = default_client_id(Path::new("/var/lib/iiot-gateway"));
        assert_eq!(a, default_client_id(Path::new("/var/lib/iiot-gateway")));
        assert_ne!(a, default_client_id(Path::new("/srv/other")));
        assert!(a.starts_with("iiot-") && a.len() <= 22, "{a}");
        assert!(
            a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{a}"
        );
        let c = load("[mqtt]\nbroker_url = \"mqtt://h:1883\"\n[storage]\ndir = \"/var/lib/x\"\n")
            .unwrap();
        assert_eq!(
            c.mqtt.unwrap().client_id,
            default_client_id(Path::new("/var/lib/x"))
        );
        let c = load("[mqtt]\nbroker_url = \"mqtt://h:1883\"\nclient_id = \"mine\"\n").unwrap();
        assert_eq!(c.mqtt.unwrap().client_id, "mine");
    }

    #[test]
    fn probe_rs_without_a_probe_id_lets_probe_rs_pick_the_probe() {
        let c = load(
            "[source]\nkind = \"probe-rs\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"/fw.elf\"\n",
        )
        .unwrap();
        let SourceConfig::Process(p) = c.source else {
            panic!()
        };
        assert_eq!(
            p.argv,
            ["probe-rs", "run", "--chip", "STM32F446RETx", "/fw.elf"]
        );
    }

    #[test]
    fn rylr998_defaults_are_the_hardware_projects() {
        let c = load("[source]\nkind = \"rylr998\"\npath = \"/dev/ttyUSB0\"\n").unwrap();
        let SourceConfig::Rylr998(r) = c.source else {
            panic!("not rylr998: {:?}", c.source)
        };
        assert_eq!(r.baud, 115_200);
        assert_eq!(r.address, 2);
        assert_eq!(r.network_id, 18);
        assert_eq!(r.band, 915_000_000);
        assert_eq!(r.parameter, lora_link::at::RadioParameters::PROJECT);
        assert!(r.ack);
        assert_eq!(
            r.nodes,
            std::collections::BTreeMap::from([(1, "node1".into())])
        );
        let c = load(
            "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnetwork_id = 5\nparameter = \"9, 7, 4, 12\"\nack = false\n[source.nodes]\n1 = \"greenhouse\"\n7 = \"barn\"\n",
        )
        .unwrap();
        let SourceConfig::Rylr998(r) = c.source else {
            panic!()
        };
        assert_eq!(
            (r.parameter.spreading_factor, r.parameter.preamble, r.ack),
            (9, 12, false)
        );
        assert_eq!(r.nodes.get(&7).map(String::as_str), Some("barn"));
    }

    #[test]
    fn example_config_loads_and_documents_every_key() {
        let example = include_str!("../../config.example.toml");
        let c = load(example).expect("config.example.toml must load");
        assert!(matches!(c.source, SourceConfig::Simulator(_)));
        for line in include_str!("raw.rs").lines() {
            let Some(field) = line.trim().strip_prefix("pub ") else {
                continue;
            };
            let Some((name, _)) = field.split_once(':') else {
                continue;
            };
            if name.contains(' ') {
                continue;
            }
            let documented = example.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{name} ="))
            });
            let section = example.contains(&format!("[{name}]"));
            assert!(
                documented || section,
                "{name} is not documented in config.example.toml"
            );
        }
    }

    #[test]
    fn sizes_take_units() {
        let c = load("[storage]\nmax_bytes = \"512MiB\"\non_full = \"block\"\n").unwrap();
        assert_eq!(c.storage.max_bytes, 512 << 20);
        assert_eq!(c.storage.on_full, FullPolicy::Block);
        assert_eq!(
            load("[storage]\nmax_bytes = 2000000\n")
                .unwrap()
                .storage
                .max_bytes,
            2_000_000
        );
        assert_eq!(raw::parse_size("2GB").unwrap(), 2_000_000_000);
    }

    #[test]
    fn inline_secrets_are_found_for_the_permission_warning() {
        assert_eq!(
            inline_secret("[mqtt]\npassword = \"x\"\n"),
            Some("[mqtt] password")
        );
        assert_eq!(
            inline_secret("[influxdb]\nurl = \"http://x\"\ntoken = \"t\"\n"),
            Some("[influxdb] token")
        );
        assert_eq!(inline_secret("[mqtt]\npassword_file = \"/run/pw\"\n"), None);
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://h:1884").unwrap(),
            ("h".into(), 1884, false)
        );
        assert_eq!(
            parse_broker_url("tcp://h").unwrap(),
            ("h".into(), 1883, false)
        );
        assert_eq!(
            parse_broker_url("mqtts://h").unwrap(),
            ("h".into(), 8883, true)
        );
        assert_eq!(parse_broker_url("h:1").unwrap(), ("h".into(), 1, false));
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883, false)
        );
        assert!(parse_broker_url("http://h").is_err());
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(parse_broker_url("mqtt://").is_err());
    }
}
