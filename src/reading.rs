//! The data that flows through the gateway: a `Packet` of `Reading`s decoded from one device
//! line, all stamped with the one receive time of that line (invariant 3).

pub use compact_str::CompactString;

/// Longest node or metric name kept; longer names are cut (by the decoder; the config
/// refuses longer node names).
pub const MAX_NAME_LEN: usize = 64;

/// One metric value of one node, as the firmware wrote it.
///
/// The three texts are [`CompactString`]s: up to 24 bytes live inline and the known metric
/// names are static, so decoding a reading allocates nothing (measured, see BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Node name after mapping and sanitizing (`node1`, `signal`, `stats`, ...).
    pub node: CompactString,
    /// Metric name after mapping and sanitizing (`temperature`, `rssi`, ...).
    pub metric: CompactString,
    /// Unit tag (`celsius`, `dbm`, ...), `None` for unknown keys and counters.
    pub unit: Option<&'static str>,
    /// The number exactly as the firmware wrote it (`27.6`, never `27.600000381469727`).
    pub value: CompactString,
}

/// All readings of one telemetry line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Receive time of the line, nanoseconds since the Unix epoch (UTC).
    pub received_ns: i64,
    /// Where another gateway received it (central ingest); `None` for our own source's.
    pub origin: Option<Origin>,
    /// The firmware's `ts` (ms since Node 2 boot), when present and valid.
    pub device_ts: Option<u64>,
    /// The readings, in the order the firmware wrote them.
    pub readings: Vec<Reading>,
    /// A secure radio frame's counter, stored with the readings.
    pub link: Option<LinkCounter>,
}

/// The frame counter of a secure radio frame and its node's address: stored in the outbox in
/// the same transaction as the packet's readings, so the counter a node is known to have
/// passed survives a restart and a replay is refused after it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounter {
    /// The node's address.
    pub node: u16,
    /// The frame's counter.
    pub counter: u32,
    /// The node key's check value (`lora_link::secure::Key::check_value`): a counter stored
    /// under another key does not hold for a new one.
    pub key_check: [u8; 8],
}

/// A line read by a source, stamped with the time it was received; or a packet a source
/// decoded itself (radio frames: `decoded` holds its readings and `text` describes the
/// frame).
#[derive(Debug)]
pub struct Line {
    /// The raw text, without the trailing newline. May contain anything.
    pub text: String,
    /// Receive time, ns since the Unix epoch.
    pub received_ns: i64,
    /// The line was longer than `max_line_length`; `text` holds only its beginning.
    pub cut: bool,
    /// Readings the source decoded itself; `None` for text to decode.
    pub decoded: Option<Vec<Reading>>,
    /// A packet another gateway received (central ingest): its time and tags are kept.
    pub forwarded: Option<Forwarded>,
    /// Told once the line is committed (or quarantined): only then may its source acknowledge
    /// it (to the broker, to the radio node). Dropped unsent when it could not be committed.
    pub handled: Option<tokio::sync::oneshot::Sender<()>>,
    /// A secure radio frame's counter, to commit with its readings.
    pub link: Option<LinkCounter>,
}

/// A packet forwarded by an edge gateway (a packet event): `received_ns` of the line is the
/// edge's receive time, kept as is (never moved by the packet clock), so a packet delivered
/// twice becomes the same points.
#[derive(Debug)]
pub struct Forwarded {
    /// The edge gateway's id and site: tags of every reading.
    pub origin: Origin,
}

/// Where a forwarded packet was received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The edge gateway's id.
    pub gateway: Option<CompactString>,
    /// Its site.
    pub site: Option<CompactString>,
}

/// The timestamp precision of the database's points (`[influxdb] precision`): the
/// InfluxDB sink writes times in this unit, and the ingest stage keeps packet times
/// strictly increasing in it, so two packets never become one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (InfluxDB's own precision; the default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds (what VictoriaMetrics stores).
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Every precision, finest first.
    pub const ALL: [Precision; 4] = [Precision::Ns, Precision::Us, Precision::Ms, Precision::S];

    /// The name in the config and in the write URL's `precision` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// One unit, in nanoseconds.
    pub fn unit_ns(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// `ts_ns` in this unit, rounded down.
    pub fn from_ns(self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.unit_ns())
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
