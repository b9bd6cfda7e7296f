//! Counters of what went through the gateway and each sink's status, incremented where things
//! happen (ingest thread, sources, sinks) with relaxed atomic adds. (The newest value of every
//! series is [`crate::live_view`].)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::registry::{Latency, Metrics};
use crate::decode::ErrorClass;
use crate::reading::now_ns;

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
    /// Readings of new series the dashboard's newest-value map had no room for
    /// (`latest::MAX_SERIES`).
    pub latest_series_refused: AtomicU64,
    /// Unusable telemetry lines by reason class, indexed by [`ErrorClass`].
    pub decode_errors: [AtomicU64; ErrorClass::ALL.len()],
    /// Packets whose receive time was moved forward to keep packet times strictly increasing
    /// at the configured precision (`[influxdb] precision`).
    pub shifted_packets: AtomicU64,
    /// Restarts of the source process or reopenings of its device, indexed by
    /// [`RestartCause`].
    pub source_restarts: [AtomicU64; RestartCause::ALL.len()],
    /// Why the source cannot deliver right now (a modem that does not answer), for
    /// `/readyz`; `None` while it is fine.
    pub source_problem: Mutex<Option<String>>,
    /// The source task runs (set by `src/app/` around it).
    pub source_running: AtomicBool,
    /// The source's kind (`stdin`, `serial`, `probe-rs`, ...), set once at start.
    pub source_kind: OnceLock<String>,
    /// Per-sink status, by sink name.
    pub sinks: RwLock<BTreeMap<&'static str, Arc<SinkStatus>>>,
    /// The Prometheus registry behind `/metrics` (off until the HTTP server enables it).
    pub metrics: Metrics,
    /// Radio frames accepted and refused, by node (`rylr998` source).
    pub radio: RadioFrames,
}

/// `(node, label, frames)`.
pub type FrameCount = (String, &'static str, u64);

/// Radio frames by node: accepted (by security, `secure` or `legacy`) and refused (by reason).
/// A node not in the table is `unknown`, so an attacker cannot add series at will.
#[derive(Debug, Default)]
pub struct RadioFrames {
    accepted: Mutex<BTreeMap<(String, &'static str), u64>>,
    rejected: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The nodes' starts the gateway heard of (their info after a boot), by reason.
    resets: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl RadioFrames {
    /// Counts one frame accepted from `node`; `legacy`: the original, unauthenticated format.
    pub fn accepted(&self, node: &str, legacy: bool) {
        let security = if legacy { "legacy" } else { "secure" };
        count(&self.accepted, node, security);
    }

    /// Counts one frame from `node` refused for `reason`.
    pub fn rejected(&self, node: &str, reason: &'static str) {
        count(&self.rejected, node, reason);
    }

    /// Counts one start of `node` it reported (`power_on`, `software`, `watchdog`, `panic`,
    /// `unknown`): only nodes that sent a valid info, so the labels stay bounded.
    pub fn reset(&self, node: &str, reason: &'static str) {
        count(&self.resets, node, reason);
    }

    /// `(node, reason, starts)`.
    pub fn resets(&self) -> Vec<FrameCount> {
        self.resets
            .lock()
            .map(|m| m.iter().map(|((n, l), c)| (n.clone(), *l, *c)).collect())
            .unwrap_or_default()
    }

    /// Makes `node`'s accepted counter show (at 0) before its first frame.
    pub fn expect(&self, node: &str, legacy: bool) {
        let security = if legacy { "legacy" } else { "secure" };
        if let Ok(mut map) = self.accepted.lock() {
            map.entry((node.to_string(), security)).or_insert(0);
        }
    }

    /// `(node, security, frames)` accepted and `(node, reason, frames)` refused.
    pub fn counts(&self) -> (Vec<FrameCount>, Vec<FrameCount>) {
        let list = |map: &Mutex<BTreeMap<(String, &'static str), u64>>| {
            map.lock()
                .map(|m| m.iter().map(|((n, l), c)| (n.clone(), *l, *c)).collect())
                .unwrap_or_default()
        };
        (list(&self.accepted), list(&self.rejected))
    }
}

fn count(map: &Mutex<BTreeMap<(String, &'static str), u64>>, node: &str, label: &'static str) {
    if let Ok(mut map) = map.lock() {
        *map.entry((node.to_string(), label)).or_insert(0) += 1;
    }
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

    /// Sets or clears the source's problem.
    pub fn set_source_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.source_problem.lock() {
            *p = problem;
        }
    }

    /// Counts one unusable telemetry line of class `class`.
    pub fn decode_error(&self, class: ErrorClass) {
        self.decode_errors[class as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the source was restarted: the `cause` label of `iiot_source_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    /// The process exited with a status of its own (or could not be waited for).
    Exited = 0,
    /// The process crashed (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE): its own fault.
    Crashed = 1,
    /// The process was killed by a signal it did not raise (SIGTERM, SIGKILL, ...): never
    /// the gateway while it runs, so worth an error.
    Killed = 2,
    /// The serial device closed or failed and was reopened.
    DeviceLost = 3,
}

impl RestartCause {
    /// Every cause, in index order.
    pub const ALL: [RestartCause; 4] = [
        RestartCause::Exited,
        RestartCause::Crashed,
        RestartCause::Killed,
        RestartCause::DeviceLost,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RestartCause::Exited => "exited",
            RestartCause::Crashed => "crashed",
            RestartCause::Killed => "killed",
            RestartCause::DeviceLost => "device_lost",
        }
    }
}

/// What a sink reports about itself.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Connected / last request succeeded.
    pub connected: AtomicBool,
    /// Readings confirmed by the far end since start (gateway events not included).
    pub delivered: AtomicU64,
    /// Gateway events confirmed by the far end since start.
    pub delivered_events: AtomicU64,
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
    /// The far end it is connected to now (of a broker cluster: which node).
    endpoint: Mutex<Option<String>>,
}

impl SinkStatus {
    /// Records which far end the sink is connected to (`None`: none now).
    pub fn set_endpoint(&self, endpoint: Option<String>) {
        if let Ok(mut e) = self.endpoint.lock() {
            *e = endpoint;
        }
    }

    /// The far end the sink is connected to now.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.lock().ok().and_then(|e| e.clone())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
