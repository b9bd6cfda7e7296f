//! Shared runtime state read by the HTTP server and the shutdown report: counters of what
//! went through the gateway, each sink's status, the newest value of every series, each
//! node's recent packet times, and the bounded live feed of committed readings (a
//! `broadcast` channel: the ingest thread's send never waits; a lagging subscriber loses
//! the oldest batches and is told so).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::broadcast;

use crate::reading::{now_ns, StoredReading};
use crate::web::metrics::{Latency, Metrics};

/// Counters of the ingest stage.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines received from the source.
    pub lines: AtomicU64,
    /// Telemetry packets decoded and committed.
    pub packets: AtomicU64,
    /// Readings committed to the outbox.
    pub readings: AtomicU64,
    /// Lines that carried telemetry but were unusable (quarantined).
    pub invalid_lines: AtomicU64,
    /// Fields dropped from otherwise good packets (quarantined).
    pub rejected_fields: AtomicU64,
    /// Lines longer than the maximum, cut.
    pub cut_lines: AtomicU64,
    /// Undelivered readings dropped at the outbox's disk budget.
    pub dropped_readings: AtomicU64,
    /// Unusable telemetry lines by reason class, indexed by [`DecodeError`].
    pub decode_errors: [AtomicU64; DecodeError::ALL.len()],
    /// The source task runs (set by `app.rs` around it).
    pub source_running: AtomicBool,
    /// The source's kind (`stdin`, `serial`, `probe-rs`, ...), set once at start.
    pub source_kind: OnceLock<String>,
    /// Per-sink status, by sink name.
    pub sinks: RwLock<BTreeMap<&'static str, Arc<SinkStatus>>>,
    /// The Prometheus registry behind `/metrics` (off until the HTTP server enables it).
    pub metrics: Metrics,
}

impl Stats {
    /// Registers a sink and returns its status handle.
    pub fn sink(&self, name: &'static str) -> Arc<SinkStatus> {
        let status = Arc::new(SinkStatus {
            latency: self.metrics.latency(name),
            ..SinkStatus::default()
        });
        if let Ok(mut sinks) = self.sinks.write() {
            sinks.insert(name, status.clone());
        }
        status
    }

    /// Counts one unusable telemetry line of class `class`.
    pub fn decode_error(&self, class: DecodeError) {
        self.decode_errors[class as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a telemetry line (or part of it) could not be used: the `reason` label of
/// `iiot_decode_errors_total`. Every line counted in [`Stats::invalid_lines`] has exactly one
/// class other than `FieldRejected`; `FieldRejected` also counts the lines whose packet was
/// committed without some of its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not parseable as JSON.
    InvalidJson = 0,
    /// JSON, but not an object.
    NotObject = 1,
    /// An object without any reading.
    NoReadings = 2,
    /// Fields refused (non-numeric, out of range, bad names, duplicates).
    FieldRejected = 3,
    /// Longer than `[source] max_line_length`.
    LineTooLong = 4,
}

impl DecodeError {
    /// Every class, in index order.
    pub const ALL: [DecodeError; 5] = [
        DecodeError::InvalidJson,
        DecodeError::NotObject,
        DecodeError::NoReadings,
        DecodeError::FieldRejected,
        DecodeError::LineTooLong,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DecodeError::InvalidJson => "invalid_json",
            DecodeError::NotObject => "not_object",
            DecodeError::NoReadings => "no_readings",
            DecodeError::FieldRejected => "field_rejected",
            DecodeError::LineTooLong => "line_too_long",
        }
    }
}

/// What a sink reports about itself.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Connected / last request succeeded.
    pub connected: AtomicBool,
    /// Readings confirmed by the far end since start.
    pub delivered: AtomicU64,
    /// The sink's cursor (highest delivered seq).
    pub cursor: AtomicI64,
    /// Last error, if the sink is failing.
    pub last_error: Mutex<Option<String>>,
    /// When the far end last confirmed readings, ns since the epoch (0: not yet).
    pub last_success_ns: AtomicI64,
    /// Failed attempts: connections lost or refused, writes that failed.
    pub failures: AtomicU64,
    /// Readings sent again after a failure (at-least-once resends).
    pub retried: AtomicU64,
    /// Times the far end was reached again after a failure.
    pub reconnects: AtomicU64,
    /// Receive → confirmed time of each delivered reading.
    pub latency: Latency,
    /// Reached the far end at least once since start.
    ever_connected: AtomicBool,
}

impl SinkStatus {
    /// Records a state: `None` = healthy. Counts each error as a failed attempt, and the
    /// first success after a failure (not the first one ever) as a reconnect.
    pub fn set_error(&self, error: Option<String>) {
        let ok = error.is_none();
        let was_connected = self.connected.swap(ok, Ordering::Relaxed);
        if ok {
            if !was_connected && self.ever_connected.swap(true, Ordering::Relaxed) {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
    }

    /// The far end confirmed readings received at `received_ns` (one entry each).
    pub fn confirmed(&self, received_ns: impl IntoIterator<Item = i64>) {
        let now = now_ns();
        self.last_success_ns.store(now, Ordering::Relaxed);
        for ts in received_ns {
            self.latency.record_ns(now.saturating_sub(ts));
        }
    }
}

/// Batches of committed readings buffered for each live (SSE) subscriber. A subscriber that
/// falls further behind loses its oldest batches (it is told so and re-reads the history);
/// it never slows the ingest thread, whose send does not wait.
pub const LIVE_CHANNEL_CAPACITY: usize = 256;

/// Receive times remembered per node, to infer how often it reports.
pub const PACKET_TIMES_PER_NODE: usize = 16;

/// One committed batch of readings, in seq order, as the live subscribers receive it.
pub type LiveBatch = Arc<[StoredReading]>;

/// The newest reading of every (node, metric) series, each node's recent packet times, and
/// the live feed of committed readings for the dashboard.
#[derive(Debug, Clone)]
pub struct Latest {
    inner: Arc<RwLock<Series>>,
    live: broadcast::Sender<LiveBatch>,
}

#[derive(Debug, Default)]
struct Series {
    newest: BTreeMap<(String, String), StoredReading>,
    /// Distinct receive times per node, ascending, at most [`PACKET_TIMES_PER_NODE`].
    times: BTreeMap<String, VecDeque<i64>>,
}

impl Series {
    fn record_time(&mut self, node: &str, ts: i64) {
        let times = match self.times.get_mut(node) {
            Some(t) => t,
            None => self.times.entry(node.to_string()).or_default(),
        };
        if times.back().is_some_and(|last| *last == ts) {
            return;
        }
        if let Err(at) = times.binary_search(&ts) {
            times.insert(at, ts);
            while times.len() > PACKET_TIMES_PER_NODE {
                times.pop_front();
            }
        }
    }
}

impl Default for Latest {
    fn default() -> Self {
        Latest {
            inner: Arc::default(),
            live: broadcast::channel(LIVE_CHANNEL_CAPACITY).0,
        }
    }
}

impl Latest {
    /// Records readings (in seq order; called by the ingest thread right after each commit):
    /// newer replaces older, and the batch goes to the live subscribers, if any. Never waits.
    pub fn update(&self, readings: impl IntoIterator<Item = StoredReading>) {
        let live = self.live.receiver_count() > 0;
        let mut batch = Vec::new();
        if let Ok(mut s) = self.inner.write() {
            for r in readings {
                s.record_time(&r.node, r.ts_ns);
                if live {
                    batch.push(r.clone());
                }
                s.newest.insert((r.node.clone(), r.metric.clone()), r);
            }
        }
        if !batch.is_empty() {
            // Err only when every subscriber left meanwhile; lagging ones lose the oldest.
            let _ = self.live.send(batch.into());
        }
    }

    /// Adds known receive times of `node` (history read at start-up).
    pub fn seed_times(&self, node: &str, times: &[i64]) {
        if let Ok(mut s) = self.inner.write() {
            for ts in times {
                s.record_time(node, *ts);
            }
        }
    }

    /// A copy of every series' newest reading, ordered by node and metric.
    pub fn snapshot(&self) -> Vec<StoredReading> {
        self.inner
            .read()
            .map(|s| s.newest.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every node with its recent receive times (ascending), ordered by node.
    pub fn node_times(&self) -> Vec<(String, Vec<i64>)> {
        self.inner
            .read()
            .map(|s| {
                s.times
                    .iter()
                    .map(|(node, t)| (node.clone(), t.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live subscribers now.
    #[cfg(test)]
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }

    /// A new live subscriber: every batch committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveBatch> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: i64, ts_ns: i64, node: &str, metric: &str, value: &str) -> StoredReading {
        StoredReading {
            seq,
            ts_ns,
            node: node.into(),
            metric: metric.into(),
            unit: None,
            value: value.into(),
        }
    }

    #[test]
    fn latest_keeps_the_newest_value_and_each_nodes_distinct_packet_times() {
        let latest = Latest::default();
        latest.update([
            reading(1, 10, "node1", "temperature", "20"),
            reading(2, 10, "node1", "humidity", "50"),
            reading(3, 20, "node1", "temperature", "21"),
        ]);
        latest.seed_times("node1", &[5, 10, 15]);
        let snap = latest.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[1].value, "21");
        assert_eq!(
            latest.node_times(),
            [("node1".to_string(), vec![5, 10, 15, 20])]
        );
        let many: Vec<_> = (0..40)
            .map(|i| reading(i, 100 + i, "n", "m", "1"))
            .collect();
        latest.update(many);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(times.last(), Some(&139));
    }

    #[test]
    fn sink_status_counts_failures_and_reconnects_but_not_the_first_connect() {
        let st = SinkStatus::default();
        st.set_error(Some("connection refused".into()));
        st.set_error(None);
        st.set_error(None);
        assert_eq!(st.reconnects.load(Ordering::Relaxed), 0, "first connect");
        st.set_error(Some("connection lost".into()));
        st.set_error(Some("connection refused".into()));
        st.set_error(None);
        assert_eq!(st.failures.load(Ordering::Relaxed), 3);
        assert_eq!(st.reconnects.load(Ordering::Relaxed), 1);
        assert!(st.connected.load(Ordering::Relaxed));
        assert_eq!(st.last_success_ns.load(Ordering::Relaxed), 0);
        st.confirmed([now_ns()]);
        assert!(st.last_success_ns.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn live_subscribers_get_each_batch_and_a_lagging_one_never_blocks_the_writer() {
        let latest = Latest::default();
        latest.update([reading(1, 1, "node1", "temperature", "20")]);
        let mut rx = latest.subscribe();
        latest.update([reading(2, 2, "node1", "temperature", "21")]);
        let batch = rx.try_recv().unwrap();
        assert_eq!(batch[0].value, "21");
        // Nobody reads: the writer goes on and the subscriber is told what it missed.
        for i in 0..(LIVE_CHANNEL_CAPACITY as i64 + 10) {
            latest.update([reading(3 + i, 3 + i, "node1", "temperature", "1")]);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}
