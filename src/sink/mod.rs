//! Sinks: each runs as one task, reads the outbox after its own cursor, delivers, and moves
//! its cursor only when the far end confirmed (invariant 2): MQTT PUBACK/PUBCOMP, HTTP 2xx.
//! Delivery is therefore at-least-once; InfluxDB turns resends into overwrites because a
//! reading always encodes to the same point (invariant 4). One module per sink, registered in
//! the one `match` of [`run`].

pub mod influx;
pub mod mqtt;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{InfluxConfig, MqttConfig};
use crate::events::{EventKind, EventLog};
use crate::failure::Failure;

use crate::outbox::{OutboxError, OutboxReader, Seq, Write, WriteQueue};
use crate::quarantine::Quarantine;
use crate::self_stats::SinkStatus;

/// Cursor writes are coalesced to at most one per this interval while delivering (a crash
/// in between only means a few readings are sent again).
const CURSOR_PERSIST_EVERY: Duration = Duration::from_millis(200);

/// A configured sink.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// MQTT broker (boxed: by far the larger of the two).
    Mqtt(Box<MqttConfig>),
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
    /// Its own outbox connection, to read.
    pub outbox: OutboxReader,
    /// Where its cursor moves go (the outbox's one writer).
    pub writes: WriteQueue,
    /// Highest committed seq; changes wake the sink.
    pub committed: watch::Receiver<Seq>,
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
        SinkConfig::Mqtt(c) => mqtt::run(*c, ctx).await,
        SinkConfig::Influx(c) => influx::run(c, ctx).await,
    }
}

/// A sink's cursor: in memory at once, persisted at most every [`CURSOR_PERSIST_EVERY`].
#[derive(Debug)]
struct Cursor {
    sink: &'static str,
    value: Seq,
    persisted: Seq,
    last_write: Instant,
    /// Sent, not yet confirmed: for the delivery latency and the retry count.
    in_flight: InFlight,
}

impl Cursor {
    fn load(sink: &'static str, ctx: &SinkContext) -> Result<Cursor, SinkError> {
        // Every configured sink got a cursor before the sinks started.
        let value = ctx.outbox.cursor(sink)?.unwrap_or(Seq::START);
        ctx.status.cursor.store(value.get(), Ordering::Relaxed);
        Ok(Cursor {
            sink,
            value,
            persisted: value,
            last_write: Instant::now(),
            in_flight: InFlight::new(value),
        })
    }

    /// The row at `seq`, received at `ts_ns` (a gateway event when `event`), goes to the far
    /// end now (again, after a failure: counted as retried).
    fn sending(&mut self, seq: Seq, ts_ns: i64, event: bool, ctx: &SinkContext) {
        if self.in_flight.on_send(seq, ts_ns, event) {
            ctx.status.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything up to `seq` was confirmed by the far end.
    fn advance(&mut self, seq: Seq, ctx: &SinkContext) {
        if seq <= self.value {
            return;
        }
        ctx.status.cursor.store(seq.get(), Ordering::Relaxed);
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
            self.in_flight.release_spare();
        }
        if self.last_write.elapsed() >= CURSOR_PERSIST_EVERY {
            self.persist(ctx);
        }
    }

    /// How long until the cursor is due to be stored again.
    fn persist_due(&self) -> Duration {
        CURSOR_PERSIST_EVERY.saturating_sub(self.last_write.elapsed())
    }

    /// Whether the cursor moved since it was last handed to the writer.
    fn unpersisted(&self) -> bool {
        self.persisted != self.value
    }

    /// Hands the cursor to the outbox's writer when it moved. Never waits: a cursor the writer
    /// has not stored when the gateway dies only means a few readings are sent again, and one
    /// the queue refused is handed over again next time.
    fn persist(&mut self, ctx: &SinkContext) {
        if self.unpersisted() {
            let write = Write::Cursor {
                sink: self.sink,
                seq: self.value,
            };
            match ctx.writes.send(write) {
                Ok(()) => self.persisted = self.value,
                Err(error) => debug!(sink = self.sink, %error, "cursor not stored yet"),
            }
        }
        self.last_write = Instant::now();
    }
}

/// Rows sent and not yet confirmed, in seq order, with their receive times; no I/O.
/// Bounded by what a sink has in flight (MQTT's window, one InfluxDB batch).
#[derive(Debug)]
struct InFlight {
    /// Ascending seq.
    sent: VecDeque<Sent>,
    /// Highest seq sent since start (the cursor at start: what came before is not ours).
    highest_sent: Seq,
}

impl InFlight {
    fn new(cursor: Seq) -> Self {
        InFlight {
            sent: VecDeque::new(),
            highest_sent: cursor,
        }
    }

    /// Records a send; true when `seq` was sent before (a resend after a failure). A resend
    /// keeps the first entry, so its latency still counts from the receive time.
    fn on_send(&mut self, seq: Seq, received_ns: i64, event: bool) -> bool {
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

    /// Gives back what a burst or an outage left unused (a default InfluxDB batch grows the
    /// queue to 8,192 entries, 196 KiB), keeping room for the usual window.
    fn release_spare(&mut self) {
        const KEEP: usize = 1024;
        if self.sent.capacity() > KEEP && self.sent.len() * 4 < self.sent.capacity() {
            self.sent.shrink_to(self.sent.len().max(KEEP));
        }
    }

    /// How many of the oldest entries the far end confirmed with everything up to `seq`.
    fn confirmed_upto(&self, seq: Seq) -> usize {
        self.sent.partition_point(|sent| sent.seq <= seq)
    }
}

/// One row in flight.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: Seq,
    received_ns: i64,
    /// A gateway event, not a reading.
    event: bool,
}

/// A sink's connection as far as the log and the gateway events are concerned: each change is
/// logged once, not once per retry, and outages are recorded as gateway events.
#[derive(Debug)]
struct Link {
    state: LinkState,
    events: EventLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Before the first outcome.
    Unknown,
    Up,
    Down(Failure),
}

impl Link {
    fn new(events: EventLog) -> Self {
        Link {
            state: LinkState::Unknown,
            events,
        }
    }

    fn up(&mut self, sink: &str, target: &str) {
        if self.state != LinkState::Up {
            info!(sink, target, "sink connected");
            if let LinkState::Down(_) = self.state {
                let text = format!("{sink} reached {target} again");
                self.events.emit(EventKind::SinkOutageEnded, sink, &text);
            }
            self.state = LinkState::Up;
        }
    }

    /// Logs when the failure changed; `detail` is logged with it.
    fn down(&mut self, sink: &str, target: &str, kind: Failure, detail: &str, retry_in: Duration) {
        if self.state != LinkState::Down(kind) {
            warn!(sink, target, error = detail, retry_in = ?retry_in, "sink {kind}; retrying with backoff, readings stay buffered");
            // From up, or from the first outcome: an outage begins (not on a change of failure).
            if !matches!(self.state, LinkState::Down(_)) {
                let text = format!("{sink}: {target} {kind}");
                self.events.emit(EventKind::SinkOutageBegun, sink, &text);
            }
            self.state = LinkState::Down(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_resends_and_confirms_in_seq_order() {
        let mut f = InFlight::new(Seq::new(10));
        // What came before the cursor at start is not a resend of ours.
        assert!(!f.on_send(Seq::new(11), 1_000, false));
        assert!(!f.on_send(Seq::new(12), 2_000, true));
        assert!(!f.on_send(Seq::new(13), 3_000, false));
        // A reconnect sends everything after the cursor again.
        assert!(f.on_send(Seq::new(11), 1_000, false));
        assert!(f.on_send(Seq::new(12), 2_000, true));
        assert_eq!(f.sent.len(), 3, "a resend keeps the first entry");
        assert_eq!(f.confirmed_upto(Seq::new(12)), 2);
        let sent: Vec<(i64, bool)> = f
            .sent
            .drain(..2)
            .map(|s| (s.received_ns, s.event))
            .collect();
        assert_eq!(sent, [(1_000, false), (2_000, true)]);
        assert_eq!(f.confirmed_upto(Seq::new(12)), 0);
        assert!(!f.on_send(Seq::new(14), 4_000, false));
        assert_eq!(f.confirmed_upto(Seq::new(100)), 2);
    }
}
