//! Sources: where telemetry lines come from. Each source stamps every line with its
//! receive time and sends it to the ingest stage through a bounded channel (a full channel
//! makes the source wait: backpressure, never loss). One module per kind, registered in the
//! one `match` of [`run`].

mod lines;
mod process;
mod records;
mod replay;
mod serial;
pub mod simulator;
mod simulator_model;
mod spawner;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, SourceConfig};
use crate::events::{EventKind, EventLog};
use crate::reading::Line;
use crate::stats::{RestartCause, Stats};

/// Where a supervised source (a process, a device) reports its restarts: counted by cause in
/// `/metrics` and recorded as a `source_restarted` gateway event.
#[derive(Clone, Debug)]
pub(crate) struct Restarts {
    /// Restart events.
    pub events: EventLog,
    /// Restart counters.
    pub stats: Arc<Stats>,
}

impl Restarts {
    /// Counts one restart of `cause` and records `text` as an event about `node`.
    fn record(&self, cause: RestartCause, node: &str, text: &str) {
        self.stats.source_restarts[cause as usize].fetch_add(1, Ordering::Relaxed);
        self.events.emit(EventKind::SourceRestarted, node, text);
    }
}

/// Why a source stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEnd {
    /// The input ended (stdin or file): the gateway drains and exits.
    EndOfInput,
    /// Shutdown was requested.
    Cancelled,
}

/// A source that cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or device could not be opened.
    #[error("cannot open {what}: {cause}")]
    Open {
        /// What was opened.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// Reading failed.
    #[error("reading {what}: {cause}")]
    Read {
        /// What was read.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
}

/// Runs the configured source until its input ends or `token` is cancelled; restarts of a
/// process or device are reported to `restarts`.
pub(crate) async fn run(
    cfg: SourceConfig,
    ingest: IngestConfig,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    restarts: Restarts,
) -> Result<SourceEnd, SourceError> {
    let max = ingest.max_line_length;
    match cfg {
        SourceConfig::Process(c) => Ok(process::run(c, max, tx, token, restarts).await),
        SourceConfig::Serial(c) => Ok(serial::run(c, max, tx, token, restarts).await),
        SourceConfig::Stdin => replay::stdin(max, tx, token).await,
        SourceConfig::File(c) => replay::file(c, max, tx, token).await,
        SourceConfig::Simulator(c) => Ok(simulator::run(c, tx, token).await),
    }
}
