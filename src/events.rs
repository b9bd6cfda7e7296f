//! Gateway events: gateway started/stopped, source restarted, node reboot detected, sink
//! outage begun/ended. They go through the outbox like readings (committed first, delivered
//! at least once, same cursors) as rows marked with [`crate::reading::EVENT_UNIT`]; the
//! InfluxDB sink writes them as the `events` measurement (tag `kind`, tag `node`, field
//! `text`) that the Grafana dashboards show as annotations. The MQTT sink skips them.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::outbox::Outbox;
use crate::reading::now_ns;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The gateway started.
    GatewayStarted,
    /// The gateway is stopping.
    GatewayStopped,
    /// The source process or device was restarted or reopened.
    SourceRestarted,
    /// The reporting node's `ts` went back: it rebooted.
    NodeReboot,
    /// A sink lost its far end.
    SinkOutageBegun,
    /// A sink's far end is back.
    SinkOutageEnded,
}

impl EventKind {
    /// The `kind` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::GatewayStarted => "gateway_started",
            EventKind::GatewayStopped => "gateway_stopped",
            EventKind::SourceRestarted => "source_restarted",
            EventKind::NodeReboot => "node_reboot",
            EventKind::SinkOutageBegun => "sink_outage_begun",
            EventKind::SinkOutageEnded => "sink_outage_ended",
        }
    }
}

/// A handle to record events; cheap to clone. Recording never fails the caller: a failed
/// commit is logged.
#[derive(Clone)]
pub struct EventLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    outbox: Mutex<Outbox>,
    committed: watch::Sender<i64>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl EventLog {
    /// Events committed to `outbox` (its own writer connection); `committed` wakes the sinks.
    pub fn new(outbox: Outbox, committed: watch::Sender<i64>) -> Self {
        EventLog {
            inner: Some(Arc::new(Inner {
                outbox: Mutex::new(outbox),
                committed,
            })),
        }
    }

    /// A log that records nothing (for code run without an outbox).
    pub fn disabled() -> Self {
        EventLog { inner: None }
    }

    /// Records `kind` about `node` with a human-readable `text`, stamped now.
    pub fn emit(&self, kind: EventKind, node: &str, text: &str) {
        self.emit_at(now_ns(), kind, node, text);
    }

    /// Records an event at `ts_ns` (e.g. a packet's receive time).
    pub fn emit_at(&self, ts_ns: i64, kind: EventKind, node: &str, text: &str) {
        let Some(inner) = &self.inner else { return };
        let result = match inner.outbox.lock() {
            Ok(mut outbox) => crate::outbox::may_wait(|| {
                outbox.append_events(&[(ts_ns, node, kind.as_str(), text)])
            }),
            Err(_) => return,
        };
        match result {
            Ok(seq) => {
                inner.committed.send_modify(|last| *last = (*last).max(seq));
            }
            Err(error) => {
                tracing::error!(%error, kind = kind.as_str(), "cannot record gateway event");
            }
        }
    }
}

/// Detects reboots of the reporting node from its `ts` (ms since boot) going back.
#[derive(Debug, Default)]
pub struct RebootDetector {
    last_ts: Option<u64>,
}

impl RebootDetector {
    /// Feeds one packet's `ts`; returns the previous `ts` when this one went back.
    pub fn observe(&mut self, ts: Option<u64>) -> Option<u64> {
        let ts = ts?;
        let previous = self.last_ts.replace(ts)?;
        (ts < previous).then_some(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ts_going_back_is_a_reboot() {
        let mut d = RebootDetector::default();
        assert_eq!(d.observe(Some(10_500)), None);
        assert_eq!(d.observe(None), None);
        assert_eq!(d.observe(Some(20_500)), None);
        assert_eq!(d.observe(Some(10_500)), Some(20_500));
        assert_eq!(d.observe(Some(20_500)), None);
    }

    #[test]
    fn events_are_committed_as_event_rows_and_wake_the_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::config::StorageConfig {
            dir: dir.path().to_path_buf(),
            retention: std::time::Duration::from_secs(3600),
            sync: crate::config::SyncMode::Normal,
            max_bytes: 1 << 30,
            on_full: crate::config::FullPolicy::DropOldest,
            move_corrupt_aside: false,
        };
        let outbox = Outbox::open(&storage).unwrap();
        let reader = outbox.reader().unwrap();
        let (tx, rx) = watch::channel(0);
        let log = EventLog::new(outbox, tx);
        log.emit(EventKind::GatewayStarted, "gateway", "gateway started");
        assert_eq!(*rx.borrow(), 1);
        let row = &reader.read_after(0, 10).unwrap()[0];
        assert!(row.is_event());
        assert_eq!(row.metric, "gateway_started");
        EventLog::disabled().emit(EventKind::GatewayStopped, "gateway", "nothing happens");
    }
}
