//! The runtime configuration: what the validator ([`super::validate`]) makes of the file,
//! the environment and the command line, and what every component is given. Every value here
//! is checked and complete (defaults filled in, paths absolute, secret files read); nothing
//! downstream reads the file or the environment again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::Connection;
use crate::reading::Precision;
use crate::secret::Secret;

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
    /// Commands to the nodes.
    pub downlink: DownlinkConfig,
}

/// `[downlink]`: commands to the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownlinkConfig {
    /// A command not confirmed this long after it arrived ends `expired`.
    pub expire_after: Duration,
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
    /// Packet events of edge gateways from an MQTT broker (central ingest).
    Mqtt(Box<MqttSourceConfig>),
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
            SourceConfig::Process(p) => p.kind.as_str(),
            SourceConfig::Serial(_) => "serial",
            SourceConfig::Rylr998(_) => "rylr998",
            SourceConfig::Mqtt(_) => "mqtt",
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
    pub kind: ProcessKind,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// First restart delay.
    pub restart_initial: Duration,
    /// Longest restart delay.
    pub restart_max: Duration,
}

/// Which process source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// `probe-rs run`, flashing and reading the board's defmt log.
    ProbeRs,
    /// Any command whose stdout carries telemetry.
    Command,
}

impl std::fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProcessKind {
    /// Its `[source] kind` name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::ProbeRs => "probe-rs",
            ProcessKind::Command => "command",
        }
    }
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

/// `kind = "mqtt"`: where the packet events come from.
#[derive(Debug, Clone)]
pub struct MqttSourceConfig {
    /// The broker connection (brokers, client id, login, TLS, keep-alive, reconnect delays).
    pub connection: Connection,
    /// The filter subscribed to, `$share/<group>/` included when shared.
    pub subscription: String,
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
    /// The radio region its band, parameters and power default from.
    pub region: lora_link::at::Region,
    /// `AT+BAND`, Hz.
    pub band: u32,
    /// `AT+CRFOP`, dBm.
    pub power: u8,
    /// `AT+PARAMETER`.
    pub parameter: lora_link::at::RadioParameters,
    /// Acknowledge good frames.
    pub ack: bool,
    /// The radio nodes by sender address: name and key (`[source.nodes.<address>]`).
    pub nodes: std::collections::BTreeMap<u16, RadioNode>,
    /// First reopen delay.
    pub restart_initial: Duration,
    /// Longest reopen delay.
    pub restart_max: Duration,
}

/// A radio node of `[source.nodes.<address>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioNode {
    /// Its name in readings and topics.
    pub name: String,
    /// How its frames are checked.
    pub auth: NodeAuth,
}

/// How a radio node's frames are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAuth {
    /// Secure frames under this key (its `Debug` never shows it).
    Key(lora_link::secure::Key),
    /// `legacy = true`: the original firmware's frames, unauthenticated.
    Legacy,
    /// Neither a key nor `legacy`: every frame refused (the old `nodes = { 1 = "name" }`
    /// form, or a table without a key).
    Missing,
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

/// The MQTT sink.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The broker(s) to publish to and how to log in; its client id is [`default_client_id`]
    /// of the storage dir when the file sets none (a fixed id: the persistent session).
    ///
    /// [`default_client_id`]: super::default_client_id
    pub connection: Connection,
    /// Topic prefix.
    pub topic_prefix: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retain reading messages.
    pub retain: bool,
    /// Publishes awaiting acknowledgement.
    pub inflight: u16,
    /// Longest wait for an acknowledgement while publishes await one: then the connection
    /// counts as failed and the next broker of the list is tried.
    pub ack_timeout: Duration,
    /// The embedded broker's TLS certificate and key files, when it listens with TLS.
    pub embedded_tls: Option<(PathBuf, PathBuf)>,
    /// Home Assistant discovery, when enabled.
    pub homeassistant: Option<HomeAssistantConfig>,
    /// One JSON message per packet, when enabled (`[mqtt] packet_events`).
    pub packet_events: Option<PacketEvents>,
}

/// `[mqtt] packet_events`: one JSON message per packet (docs/API.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketEvents {
    /// `<prefix>/gateway/<gateway_id>/packets`.
    pub topic: String,
    /// `[gateway] id`; by default the MQTT client id.
    pub gateway_id: String,
    /// `[gateway] site`.
    pub site: Option<String>,
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantConfig {
    /// Discovery prefix (`homeassistant`).
    pub discovery_prefix: String,
    /// This gateway's id in unique ids and topics (`iiot_gateway`).
    pub gateway_id: String,
    /// The nodes the source can send commands to, which get an interval `number` and ping
    /// and identify `button`s (`None`: any node but `exclude`'s; the Node 2 path).
    pub command_nodes: CommandNodes,
}

/// Which nodes can take commands (for Home Assistant's controls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CommandNodes {
    /// None: the source cannot send commands.
    #[default]
    None,
    /// These (the `rylr998` source's `[source.nodes]`).
    Only(std::collections::BTreeSet<String>),
    /// Any radio node behind Node 2: every node but these (Node 2's own and the link's).
    AllBut(std::collections::BTreeSet<String>),
}

impl CommandNodes {
    /// Whether `node` can take commands.
    pub fn contains(&self, node: &str) -> bool {
        match self {
            CommandNodes::None => false,
            CommandNodes::Only(nodes) => nodes.contains(node),
            CommandNodes::AllBut(nodes) => !nodes.contains(node),
        }
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
    /// Minimum batching delay (zero: send as soon as no request is in flight).
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
