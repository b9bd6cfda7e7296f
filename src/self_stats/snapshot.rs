//! [`Snapshot`]: the gateway's state at one instant, read on request (never per reading):
//! the counters of [`Stats`], each sink's status, and its backlog from the outbox (two index
//! lookups per sink, `outbox::backlog`). `/api/status`, `/healthz`/`/readyz` and `/metrics`
//! all render this one picture.

use std::sync::atomic::Ordering;

use super::counters::{RestartCause, Stats};
use crate::decode::ErrorClass;
use crate::outbox::{Backlog, OutboxReader, Seq};

/// The gateway's state at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Snapshot {
    /// Counters of the ingest stage.
    pub counts: Counts,
    /// `stdin`, `serial`, ...; `None` before the gateway set it.
    pub source_kind: Option<String>,
    /// The source task runs.
    pub source_running: bool,
    /// Why the source cannot deliver right now, if it says so.
    pub source_problem: Option<String>,
    /// Every enabled sink, by name.
    pub sinks: Vec<SinkSnapshot>,
    /// Radio frames accepted, `(node, security, frames)`.
    pub radio_accepted: Vec<(String, &'static str, u64)>,
    /// Radio frames refused, `(node, reason, frames)`.
    pub radio_rejected: Vec<(String, &'static str, u64)>,
    /// The nodes' starts the gateway heard of, `(node, reason, starts)`.
    pub node_resets: Vec<(String, &'static str, u64)>,
    /// Commands to the nodes by state, as stored (`None`: could not be read).
    pub commands: Option<Vec<(String, i64)>>,
}

/// The ingest stage's and the source's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub lines: u64,
    pub packets: u64,
    pub readings: u64,
    pub invalid_lines: u64,
    pub rejected_fields: u64,
    pub cut_lines: u64,
    pub dropped_readings: u64,
    pub shifted_packets: u64,
    pub latest_series_refused: u64,
    /// By [`ErrorClass`], in its index order.
    pub decode_errors: [u64; ErrorClass::ALL.len()],
    /// By [`RestartCause`], in its index order.
    pub source_restarts: [u64; RestartCause::ALL.len()],
}

/// One sink's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SinkSnapshot {
    pub name: &'static str,
    pub connected: bool,
    /// Highest delivered seq.
    pub cursor: Seq,
    /// Gateway events confirmed since start.
    pub delivered_events: u64,
    /// Failed attempts since start.
    pub failures: u64,
    /// Readings sent again since start.
    pub retried: u64,
    /// Far end reached again after a failure, since start.
    pub reconnects: u64,
    /// `None` when the outbox could not be read (`backlog_error` says why).
    pub backlog: Option<Backlog>,
    pub backlog_error: Option<String>,
    pub last_error: Option<String>,
    /// The far end connected to now (of a broker cluster: which node).
    pub endpoint: Option<String>,
    /// When the far end last confirmed readings (ns).
    pub last_success_ns: Option<i64>,
    pub delivered: u64,
}

impl SinkSnapshot {
    /// Age of the oldest undelivered reading at `now` (ns), in seconds.
    pub fn oldest_age_seconds(&self, now: i64) -> Option<f64> {
        let oldest = self.backlog?.oldest_ns?;
        Some(now.saturating_sub(oldest).max(0) as f64 / 1e9)
    }
}

/// Reads the state now (blocking: outbox queries).
pub(crate) fn snapshot(stats: &Stats, history: &OutboxReader) -> Snapshot {
    let sinks = stats
        .sinks
        .read()
        .map(|sinks| {
            sinks
                .iter()
                .map(|(name, st)| {
                    let (backlog, backlog_error) =
                        match history.backlog(Seq::new(st.cursor.load(Ordering::Relaxed))) {
                            Ok(b) => (Some(b), None),
                            Err(e) => (None, Some(e.to_string())),
                        };
                    let last_success = st.last_success_ns.load(Ordering::Relaxed);
                    SinkSnapshot {
                        name,
                        connected: st.connected.load(Ordering::Relaxed),
                        cursor: Seq::new(st.cursor.load(Ordering::Relaxed)),
                        delivered_events: st.delivered_events.load(Ordering::Relaxed),
                        failures: st.failures.load(Ordering::Relaxed),
                        retried: st.retried.load(Ordering::Relaxed),
                        reconnects: st.reconnects.load(Ordering::Relaxed),
                        backlog,
                        backlog_error,
                        last_error: st.last_error.lock().ok().and_then(|e| e.clone()),
                        endpoint: st.endpoint(),
                        last_success_ns: (last_success > 0).then_some(last_success),
                        delivered: st.delivered.load(Ordering::Relaxed),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (radio_accepted, radio_rejected) = stats.radio.counts();
    Snapshot {
        counts: Counts {
            lines: load(&stats.lines),
            packets: load(&stats.packets),
            readings: load(&stats.readings),
            invalid_lines: load(&stats.invalid_lines),
            rejected_fields: load(&stats.rejected_fields),
            cut_lines: load(&stats.cut_lines),
            dropped_readings: load(&stats.dropped_readings),
            shifted_packets: load(&stats.shifted_packets),
            latest_series_refused: load(&stats.latest_series_refused),
            decode_errors: std::array::from_fn(|i| load(&stats.decode_errors[i])),
            source_restarts: std::array::from_fn(|i| load(&stats.source_restarts[i])),
        },
        source_kind: stats.source_kind.get().cloned(),
        source_running: stats.source_running.load(Ordering::Relaxed),
        source_problem: stats.source_problem.lock().ok().and_then(|p| p.clone()),
        sinks,
        radio_accepted,
        radio_rejected,
        node_resets: stats.radio.resets(),
        commands: history.command_counts().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::reading::{Packet, Reading};

    #[test]
    fn a_snapshot_carries_the_counters_and_each_sinks_backlog_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&crate::outbox::test_storage(dir.path())).unwrap();
        let readings = (0..5)
            .map(|i| Reading {
                node: "node1".into(),
                metric: format!("m{i}").into(),
                unit: None,
                value: "1".into(),
            })
            .collect();
        outbox
            .append(&[Packet {
                received_ns: 1_000,
                origin: None,
                device_ts: None,
                link: None,
                readings,
            }])
            .unwrap();
        let stats = Stats::default();
        stats.lines.store(9, Ordering::Relaxed);
        stats.decode_error(ErrorClass::Fragment);
        stats.source_restarts[RestartCause::DeviceLost as usize].store(2, Ordering::Relaxed);
        let mqtt = stats.sink("mqtt");
        mqtt.cursor.store(2, Ordering::Relaxed);
        mqtt.delivered.store(2, Ordering::Relaxed);
        stats.sink("influxdb");

        let snap = snapshot(&stats, &outbox.reader().unwrap());
        assert_eq!(snap.counts.lines, 9);
        assert_eq!(snap.counts.decode_errors[ErrorClass::Fragment as usize], 1);
        assert_eq!(
            snap.counts.source_restarts[RestartCause::DeviceLost as usize],
            2
        );
        let names: Vec<_> = snap.sinks.iter().map(|s| s.name).collect();
        assert_eq!(names, ["influxdb", "mqtt"]);
        let mqtt = &snap.sinks[1];
        assert_eq!((mqtt.cursor, mqtt.delivered), (Seq::new(2), 2));
        assert_eq!(
            mqtt.backlog,
            Some(Backlog {
                readings: 3,
                oldest_ns: Some(1_000)
            })
        );
        assert_eq!(snap.sinks[0].backlog.unwrap().readings, 5);
        assert_eq!(mqtt.oldest_age_seconds(3_000_001_000), Some(3.0));
    }
}
