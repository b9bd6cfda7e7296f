//! Gateway events: gateway started/stopped, source restarted, node reboot detected, sink
//! outage begun/ended. They go through the outbox like readings (committed first, delivered
//! at least once, same cursors) as rows marked with [`crate::outbox::EVENT_UNIT`]; the
//! InfluxDB sink writes them as the `events` measurement (tag `kind`, tag `node`, field
//! `text`) that the Grafana dashboards show as annotations. The MQTT sink skips them.

use crate::outbox::{EventRow, NotQueued, Write, WriteQueue};
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
    /// A node reported another firmware version than the one it had.
    FirmwareChanged,
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
            EventKind::FirmwareChanged => "firmware_changed",
        }
    }
}

/// A handle to record events; cheap to clone. Recording never fails or waits: the event is
/// queued for the outbox's writer, which commits it and wakes the sinks.
#[derive(Debug, Clone)]
pub struct EventLog {
    queue: Option<WriteQueue>,
}

impl EventLog {
    /// Events queued for the outbox's writer.
    pub fn new(queue: WriteQueue) -> Self {
        EventLog { queue: Some(queue) }
    }

    /// A log that records nothing (for code run without an outbox).
    pub fn disabled() -> Self {
        EventLog { queue: None }
    }

    /// Records `kind` about `node` with a human-readable `text`, stamped now.
    pub fn emit(&self, kind: EventKind, node: &str, text: &str) {
        self.emit_at(now_ns(), kind, node, text);
    }

    /// Records an event at `ts_ns` (e.g. a packet's receive time).
    pub fn emit_at(&self, ts_ns: i64, kind: EventKind, node: &str, text: &str) {
        let Some(queue) = &self.queue else { return };
        match queue.send(Write::Event(event_row(ts_ns, kind, node, text))) {
            Ok(()) => {}
            Err(NotQueued::Closed) => {
                tracing::debug!(
                    kind = kind.as_str(),
                    "gateway event not recorded: the outbox writer has stopped"
                );
            }
            Err(error @ NotQueued::Full) => {
                tracing::warn!(%error, kind = kind.as_str(), text, "gateway event not recorded");
            }
        }
    }
}

/// The outbox row of an event.
pub fn event_row(ts_ns: i64, kind: EventKind, node: &str, text: &str) -> EventRow {
    EventRow {
        ts_ns,
        node: node.to_string(),
        kind: kind.as_str(),
        text: text.to_string(),
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
    fn events_are_queued_as_event_rows_for_the_writer() {
        let (queue, mut writes) = WriteQueue::new();
        let log = EventLog::new(queue);
        log.emit_at(7, EventKind::GatewayStarted, "gateway", "gateway started");
        assert_eq!(
            writes.try_recv().unwrap(),
            Write::Event(EventRow {
                ts_ns: 7,
                node: "gateway".into(),
                kind: "gateway_started",
                text: "gateway started".into(),
            })
        );
        drop(writes);
        // The writer gone: nothing to record to, and nothing fails.
        log.emit(EventKind::GatewayStopped, "gateway", "gateway stopping");
        EventLog::disabled().emit(EventKind::GatewayStopped, "gateway", "nothing happens");
    }
}
