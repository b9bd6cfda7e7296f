//! Shared runtime state read by the HTTP server and the shutdown report: counters of what
//! went through the gateway, each sink's status, and the newest value of every series.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::reading::StoredReading;

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
    /// Per-sink status, by sink name.
    pub sinks: RwLock<BTreeMap<&'static str, Arc<SinkStatus>>>,
}

impl Stats {
    /// Registers a sink and returns its status handle.
    pub fn sink(&self, name: &'static str) -> Arc<SinkStatus> {
        let status = Arc::new(SinkStatus::default());
        if let Ok(mut sinks) = self.sinks.write() {
            sinks.insert(name, status.clone());
        }
        status
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
}

impl SinkStatus {
    /// Records a state: `None` = healthy.
    pub fn set_error(&self, error: Option<String>) {
        self.connected.store(error.is_none(), Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
    }
}

/// The newest reading of every (node, metric) series.
#[derive(Debug, Default, Clone)]
pub struct Latest {
    inner: Arc<RwLock<BTreeMap<(String, String), StoredReading>>>,
}

impl Latest {
    /// Records readings (in seq order); newer replaces older.
    pub fn update(&self, readings: impl IntoIterator<Item = StoredReading>) {
        if let Ok(mut map) = self.inner.write() {
            for r in readings {
                map.insert((r.node.clone(), r.metric.clone()), r);
            }
        }
    }

    /// A copy of every series' newest reading, ordered by node and metric.
    pub fn snapshot(&self) -> Vec<StoredReading> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
