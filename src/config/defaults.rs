//! Built-in defaults and the bounds the validator enforces, one place. Every key of the
//! config file that is left out takes its value from a constant here; a value outside a
//! bound below is refused naming its key, never silently raised or lowered. The one default
//! that is computed, the MQTT client id, is [`default_client_id`] of the storage dir.

use std::path::Path;
use std::time::Duration;

use super::raw::RawApi;
use super::types::{FullPolicy, SyncMode};
use crate::mqtt::fnv1a;
use crate::reading::Precision;

/// Config file read when `--config` is not given and it exists.
pub const CONFIG_FILE: &str = "config.toml";

// ---- [source] and [gateway] ----

/// `[source] kind` when neither `kind` nor a `[gateway]` probe key is set.
pub const SOURCE_KIND: &str = "simulator";
/// `[source] kind` when `kind` is unset and `[gateway]` names a probe (`probe_id` or
/// `firmware_path`): the hardware project's config means probe-rs.
pub const GATEWAY_SOURCE_KIND: &str = "probe-rs";
/// Lines buffered between a source and the outbox writer. Full -> the source waits.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Largest `[gateway] channel_capacity` accepted.
pub const MAX_CHANNEL_CAPACITY: usize = 1_000_000;
/// Longest line accepted from a source, in bytes.
pub const MAX_LINE_LENGTH: usize = 64 * 1024;
/// Smallest `[source] max_line_length` accepted, in bytes (a firmware record is longer).
pub const MIN_LINE_LENGTH: usize = 256;
/// stdin/file: time to keep delivering after end of input.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Restart delays of a source process or serial port.
pub const RESTART_INITIAL: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const RESTART_MAX: Duration = Duration::from_secs(60);
/// probe-rs: the executable, looked up on `PATH`.
pub const PROBE_RS_PROGRAM: &str = "probe-rs";
/// Serial baud rate (the ST-Link VCP's, and the RYLR998's).
pub const BAUD: u32 = 115_200;
/// The RYLR998 on the gateway takes Node 2's address: Node 1 sends to 2.
pub const MODEM_ADDRESS: u16 = 2;
/// The hardware project's `AT+NETWORKID`.
pub const NETWORK_ID: u8 = 18;
/// rylr998: acknowledge every good frame, as Node 2 does.
pub const RYLR998_ACK: bool = true;
/// rylr998: node names by sender address when `[source.nodes]` is unset.
pub const RYLR998_NODES: &[(u16, &str)] = &[(1, "node1")];
/// file: replay speed (1 = the recorded pace).
pub const REPLAY_SPEED: f64 = 1.0;
/// file: slowest replay speed accepted other than 0 (as fast as possible).
pub const MIN_REPLAY_SPEED: f64 = 0.001;
/// file: fastest replay speed accepted.
pub const MAX_REPLAY_SPEED: f64 = 1_000_000.0;
/// Simulator packet interval.
pub const SIM_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest simulator packet interval accepted.
pub const MIN_SIM_INTERVAL: Duration = Duration::from_millis(1);
/// Simulator: remote nodes per packet.
pub const SIM_REMOTE_NODES: u32 = 1;

// ---- [downlink] ----

/// A command not confirmed within an hour ends `expired`. A node that reports every 10 s
/// (the firmware's default) has 360 uplinks to take it in that time, each one a chance even
/// with 20 % lost; a command much older than that (an interval change, a ping) is likely not
/// what its sender wants any more, and a node that is away for longer should not act on it
/// when it comes back.
pub const COMMAND_EXPIRE_AFTER: Duration = Duration::from_secs(3600);
/// Shortest `[downlink] expire_after` accepted: one uplink window at the fastest interval.
pub const MIN_COMMAND_EXPIRE_AFTER: Duration = Duration::from_secs(1);

// ---- [mqtt] and [homeassistant] ----

/// `[mqtt] broker_url` port when the URL names none (`mqtt://`, `tcp://`, or no scheme).
pub const MQTT_PORT: u16 = 1883;
/// `[mqtt] broker_url` port when an `mqtts://` URL names none.
pub const MQTTS_PORT: u16 = 8883;
/// Embedded broker address.
pub const EMBEDDED_LISTEN: &str = "127.0.0.1:1883";
/// First part of the default MQTT client id ([`default_client_id`]).
pub const CLIENT_ID_PREFIX: &str = "iiot-";
/// MQTT topic prefix.
pub const TOPIC_PREFIX: &str = "iiot";
/// MQTT QoS.
pub const QOS: u8 = 1;
/// Retain reading messages (the status topic is always retained).
pub const RETAIN: bool = false;
/// MQTT keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Shortest MQTT keep-alive accepted (the MQTT client counts it in whole seconds).
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Publishes awaiting acknowledgement at once.
pub const INFLIGHT: u16 = 100;
/// Longest wait for an MQTT acknowledgement while publishes await one.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest `ack_timeout` accepted.
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// First reconnect / retry delay.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
/// Longest reconnect / retry delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Home Assistant discovery is off unless `[homeassistant] enabled = true`.
pub const HOMEASSISTANT_ENABLED: bool = false;
/// Home Assistant's own discovery prefix.
pub const HOMEASSISTANT_DISCOVERY_PREFIX: &str = "homeassistant";
/// This gateway's id in Home Assistant unique ids and discovery topics.
pub const HOMEASSISTANT_GATEWAY_ID: &str = "iiot_gateway";

// ---- [influxdb] ----

/// Write API when `api` is unset.
pub(super) const INFLUX_API: RawApi = RawApi::V2;
/// v2 organisation when `org` is unset: empty.
pub const INFLUX_ORG: &str = "";
/// Timestamp precision of the points written.
pub const PRECISION: Precision = Precision::Ns;
/// Points per InfluxDB write.
pub const BATCH_SIZE: usize = 5000;
/// Largest `[influxdb] batch_size` accepted.
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Minimum batching delay of the InfluxDB sink: none (a batch goes out as soon as no request
/// is in flight; what arrives meanwhile makes the next, bigger batch).
pub const FLUSH_INTERVAL: Duration = Duration::ZERO;
/// Gzip InfluxDB request bodies.
pub const GZIP: bool = true;
/// InfluxDB request timeout.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest InfluxDB request timeout accepted.
pub const MIN_HTTP_TIMEOUT: Duration = Duration::from_millis(100);

// ---- [storage] ----

/// Outbox directory.
pub const STORAGE_DIR: &str = "iiot-data";
/// History kept.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How hard the outbox syncs.
pub const SYNC: SyncMode = SyncMode::Normal;
/// Disk budget of the outbox.
pub const MAX_BYTES: u64 = 1 << 30;
/// Smallest disk budget accepted.
pub const MIN_BYTES: u64 = 1 << 20;
/// What the outbox does at its disk budget.
pub const ON_FULL: FullPolicy = FullPolicy::DropOldest;

// ---- [http] and [log] ----

/// The HTTP server runs unless `[http] enabled = false`.
pub const HTTP_ENABLED: bool = true;
/// Dashboard address.
pub const HTTP_LISTEN: &str = "127.0.0.1:8080";
/// `/readyz`: oldest undelivered reading allowed.
pub const READY_MAX_BACKLOG_AGE: Duration = Duration::from_secs(60);
/// Shortest `[http] token` accepted, in characters.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;
/// `/metrics` is open (like `/healthz` and `/readyz`) unless `protect_metrics = true`.
pub const PROTECT_METRICS: bool = false;
/// Time between the log's summary lines.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(300);

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
    format!("{CLIENT_ID_PREFIX}{readable}-{hash:08x}")
}
