//! Sinks: each runs as one task, reads the outbox after its own cursor, delivers, and moves
//! its cursor only when the far end confirmed (invariant 2): MQTT PUBACK/PUBCOMP, HTTP 2xx.
//! Delivery is therefore at-least-once; InfluxDB turns resends into overwrites because a
//! reading always encodes to the same point (invariant 4). One module per sink, registered in
//! the one `match` of [`run`].

mod acks;
pub mod influx;
pub mod lineproto;
pub mod mqtt;
pub mod topic;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{InfluxConfig, MqttConfig};
use crate::outbox::{OutboxError, OutboxReader};
use crate::quarantine::Quarantine;
use crate::stats::SinkStatus;

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
}

/// A sink failure that stops the sink (the outbox itself failing).
pub type SinkError = OutboxError;

/// Runs the sink until finished or aborted.
pub async fn run(cfg: SinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
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
}

impl Cursor {
    fn load(sink: &'static str, ctx: &SinkContext) -> Result<Cursor, SinkError> {
        let value = ctx.outbox.init_cursor(sink)?;
        ctx.status.cursor.store(value, Ordering::Relaxed);
        Ok(Cursor {
            sink,
            value,
            persisted: value,
            last_write: Instant::now(),
        })
    }

    /// Everything up to `seq` was confirmed by the far end.
    fn advance(&mut self, seq: i64, ctx: &SinkContext) -> Result<(), SinkError> {
        if seq <= self.value {
            return Ok(());
        }
        ctx.status
            .delivered
            .fetch_add((seq - self.value) as u64, Ordering::Relaxed);
        ctx.status.cursor.store(seq, Ordering::Relaxed);
        self.value = seq;
        if self.last_write.elapsed() >= CURSOR_PERSIST_EVERY {
            self.persist(ctx)?;
        }
        Ok(())
    }

    fn persist(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        if self.persisted != self.value {
            ctx.outbox.set_cursor(self.sink, self.value)?;
            self.persisted = self.value;
        }
        self.last_write = Instant::now();
        Ok(())
    }
}

/// Logs a connection's state changes once each, not once per retry.
#[derive(Debug, Default)]
struct LinkState {
    /// `None` before the first outcome; `Some("")` when up; else the failure kind.
    state: Option<String>,
}

impl LinkState {
    fn up(&mut self, sink: &str, target: &str) {
        if self.state.as_deref() != Some("") {
            info!(sink, target, "sink connected");
            self.state = Some(String::new());
        }
    }

    /// Logs when the failure kind changed; `detail` is logged with it.
    fn down(&mut self, sink: &str, target: &str, kind: &str, detail: &str, retry_in: Duration) {
        if self.state.as_deref() != Some(kind) {
            warn!(sink, target, error = detail, retry_in = ?retry_in, "sink {kind}; retrying with backoff, readings stay buffered");
            self.state = Some(kind.to_string());
        }
    }
}
