//! Sinks: each runs as one task, reads the outbox after its own cursor, delivers, and moves
//! its cursor only when the far end confirmed (invariant 2): MQTT PUBACK/PUBCOMP, HTTP 2xx.
//! Delivery is therefore at-least-once; InfluxDB turns resends into overwrites because a
//! reading always encodes to the same point (invariant 4). One module per sink, registered in
//! the one `match` of [`run`].

mod acks;
mod homeassistant;
pub mod influx;
pub mod lineproto;
pub mod mqtt;
pub mod topic;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{InfluxConfig, MqttConfig};
use crate::events::{EventKind, EventLog};
use crate::outbox::{may_wait, OutboxError, OutboxReader};
use crate::quarantine::Quarantine;
use crate::reading::StoredReading;
use crate::telemetry::SinkStatus;

/// Cursor writes are coalesced to at most one per this interval while delivering (a crash
/// in between only means a few readings are sent again).
const CURSOR_PERSIST_EVERY: Duration = Duration::from_millis(200);

/// A configured sink.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// MQTT broker.
    Mqtt(MqttConfig),
    /// InfluxDB (or compatible) over HTTP.
    Influx(InfluxConfig),
}

impl SinkConfig {
    /// The sink's name: its cursor key in the outbox.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Mqtt(_) => mqtt::NAME,
            SinkConfig::Influx(_) => influx::NAME,
        }
    }
}

/// Everything a sink task is handed.
pub struct SinkContext {
    /// Its own outbox connection.
    pub outbox: OutboxReader,
    /// Highest committed seq; changes wake the sink.
    pub committed: watch::Receiver<i64>,
    /// The source is done: deliver everything committed, then return.
    pub finish: CancellationToken,
    /// Stop now: what is not confirmed stays in the outbox for the next start.
    pub abort: CancellationToken,
    /// Where the sink reports its state.
    pub status: Arc<SinkStatus>,
    /// Where refused points go.
    pub quarantine: Quarantine,
    /// Where outages are recorded.
    pub events: EventLog,
}

/// A sink failure that stops the sink (the outbox itself failing).
pub type SinkError = OutboxError;

/// Runs the sink until finished or aborted.
pub async fn run(cfg: SinkConfig, ctx: &SinkContext) -> Result<(), SinkError> {
    match cfg {
        SinkConfig::Mqtt(c) => mqtt::run(c, ctx).await,
        SinkConfig::Influx(c) => influx::run(c, ctx).await,
    }
}

/// A sink's cursor: in memory at once, persisted at most every [`CURSOR_PERSIST_EVERY`].
#[derive(Debug)]
struct Cursor {
    sink: &'static str,
    value: i64,
    persisted: i64,
    last_write: Instant,
    /// Sent, not yet confirmed: for the delivery latency and the retry count.
    in_flight: InFlight,
}

impl Cursor {
    fn load(sink: &'static str, ctx: &SinkContext) -> Result<Cursor, SinkError> {
        let value = may_wait(|| ctx.outbox.init_cursor(sink))?;
        ctx.status.cursor.store(value, Ordering::Relaxed);
        Ok(Cursor {
            sink,
            value,
            persisted: value,
            last_write: Instant::now(),
            in_flight: InFlight::new(value),
        })
    }

    /// `r` goes to the far end now (again, after a failure: counted as retried).
    fn sending(&mut self, r: &StoredReading, ctx: &SinkContext) {
        if self.in_flight.on_send(r.seq, r.ts_ns, r.is_event()) {
            ctx.status.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything up to `seq` was confirmed by the far end.
    fn advance(&mut self, seq: i64, ctx: &SinkContext) -> Result<(), SinkError> {
        if seq <= self.value {
            return Ok(());
        }
        ctx.status.cursor.store(seq, Ordering::Relaxed);
        self.value = seq;
        let confirmed = self.in_flight.confirmed_upto(seq);
        if confirmed > 0 {
            // Readings and gateway events are counted apart (a sink that skips events never
            // sends them, so they are not counted at all).
            let (events, readings): (Vec<_>, Vec<_>) = self
                .in_flight
                .sent
                .drain(..confirmed)
                .partition(|sent| sent.event);
            ctx.status
                .delivered
                .fetch_add(readings.len() as u64, Ordering::Relaxed);
            ctx.status
                .delivered_events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            ctx.status
                .confirmed(readings.iter().map(|sent| sent.received_ns));
        }
        if self.last_write.elapsed() >= CURSOR_PERSIST_EVERY {
            self.persist(ctx)?;
        }
        Ok(())
    }

    fn persist(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        if self.persisted != self.value {
            may_wait(|| ctx.outbox.set_cursor(self.sink, self.value))?;
            self.persisted = self.value;
        }
        self.last_write = Instant::now();
        Ok(())
    }
}

/// Rows sent and not yet confirmed, in seq order, with their receive times; no I/O.
/// Bounded by what a sink has in flight (MQTT's window, one InfluxDB batch).
#[derive(Debug)]
struct InFlight {
    /// Ascending seq.
    sent: VecDeque<Sent>,
    /// Highest seq sent since start (the cursor at start: what came before is not ours).
    highest_sent: i64,
}

impl InFlight {
    fn new(cursor: i64) -> Self {
        InFlight {
            sent: VecDeque::new(),
            highest_sent: cursor,
        }
    }

    /// Records a send; true when `seq` was sent before (a resend after a failure). A resend
    /// keeps the first entry, so its latency still counts from the receive time.
    fn on_send(&mut self, seq: i64, received_ns: i64, event: bool) -> bool {
        if self.sent.back().is_none_or(|last| last.seq < seq) {
            self.sent.push_back(Sent {
                seq,
                received_ns,
                event,
            });
        }
        if seq <= self.highest_sent {
            return true;
        }
        self.highest_sent = seq;
        false
    }

    /// How many of the oldest entries the far end confirmed with everything up to `seq`.
    fn confirmed_upto(&self, seq: i64) -> usize {
        self.sent.partition_point(|sent| sent.seq <= seq)
    }
}

/// One row in flight.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: i64,
    received_ns: i64,
    /// A gateway event, not a reading.
    event: bool,
}

/// Logs a connection's state changes once each, not once per retry, and records the
/// outages as gateway events.
#[derive(Debug)]
struct LinkState {
    /// `None` before the first outcome; `Some("")` when up; else the failure kind.
    state: Option<String>,
    events: EventLog,
}

impl LinkState {
    fn new(events: EventLog) -> Self {
        LinkState {
            state: None,
            events,
        }
    }

    fn up(&mut self, sink: &str, target: &str) {
        if self.state.as_deref() != Some("") {
            info!(sink, target, "sink connected");
            if self.state.is_some() {
                let text = format!("{sink} reached {target} again");
                self.events.emit(EventKind::SinkOutageEnded, sink, &text);
            }
            self.state = Some(String::new());
        }
    }

    /// Logs when the failure kind changed; `detail` is logged with it.
    fn down(&mut self, sink: &str, target: &str, kind: &str, detail: &str, retry_in: Duration) {
        if self.state.as_deref() != Some(kind) {
            warn!(sink, target, error = detail, retry_in = ?retry_in, "sink {kind}; retrying with backoff, readings stay buffered");
            // From up, or from the first outcome: an outage begins (not on a change of failure).
            if self.state.as_deref().is_none_or(str::is_empty) {
                let text = format!("{sink}: {target} {kind}");
                self.events.emit(EventKind::SinkOutageBegun, sink, &text);
            }
            self.state = Some(kind.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_resends_and_confirms_in_seq_order() {
        let mut f = InFlight::new(10);
        // What came before the cursor at start is not a resend of ours.
        assert!(!f.on_send(11, 1_000, false));
        assert!(!f.on_send(12, 2_000, true));
        assert!(!f.on_send(13, 3_000, false));
        // A reconnect sends everything after the cursor again.
        assert!(f.on_send(11, 1_000, false));
        assert!(f.on_send(12, 2_000, true));
        assert_eq!(f.sent.len(), 3, "a resend keeps the first entry");
        assert_eq!(f.confirmed_upto(12), 2);
        let sent: Vec<(i64, bool)> = f
            .sent
            .drain(..2)
            .map(|s| (s.received_ns, s.event))
            .collect();
        assert_eq!(sent, [(1_000, false), (2_000, true)]);
        assert_eq!(f.confirmed_upto(12), 0);
        assert!(!f.on_send(14, 4_000, false));
        assert_eq!(f.confirmed_upto(100), 2);
    }
}
