//! Sources: where telemetry lines come from. Each source stamps every line with its
//! receive time and sends it to the ingest stage through a bounded channel (a full channel
//! makes the source wait: backpressure, never loss). One module per kind, registered in the
//! one `match` of [`run`].

mod lines;
mod mqtt;
mod process;
mod radio;
mod records;
mod relay;
mod replay;
mod rylr998;
mod serial;
pub mod simulator;
mod simulator_model;
mod spawner;
mod supervisor;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, SourceConfig};
use crate::events::{EventKind, EventLog};
use crate::quarantine::Quarantine;
use crate::reading::Line;
use crate::self_stats::{RestartCause, Stats};

/// What a source reports to: restarts (counted by cause in `/metrics` and recorded as a
/// `source_restarted` gateway event), its problem (for `/readyz`), data it refused
/// (quarantine).
#[derive(Clone, Debug)]
pub(crate) struct SourceContext {
    /// Gateway events.
    pub events: EventLog,
    /// Counters and the source's problem.
    pub stats: Arc<Stats>,
    /// Where refused input goes.
    pub quarantine: Quarantine,
    /// Where the first set-up's outcome goes (taken once).
    first_setup: Arc<std::sync::Mutex<Option<SetupReport>>>,
    /// The highest secure radio frame counter stored per node (from the outbox), for the
    /// `rylr998` source.
    pub link_counters: Vec<crate::reading::LinkCounter>,
    /// The command queue, for the sources that send commands.
    pub downlink: Option<crate::downlink::Downlink>,
}

/// The outcome of a source's first device set-up: what answered, or what is wrong.
type SetupReport = tokio::sync::oneshot::Sender<Result<String, String>>;

impl SourceContext {
    /// A context, and where its source's first set-up outcome arrives (see
    /// [`announces_setup`]).
    pub(crate) fn new(
        events: EventLog,
        stats: Arc<Stats>,
        quarantine: Quarantine,
    ) -> (Self, tokio::sync::oneshot::Receiver<Result<String, String>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ctx = SourceContext {
            events,
            stats,
            quarantine,
            first_setup: Arc::new(std::sync::Mutex::new(Some(tx))),
            link_counters: Vec::new(),
            downlink: None,
        };
        (ctx, rx)
    }

    /// Reports a set-up outcome (a process started or exited, a device opened or lost, a
    /// modem set up or not): the source's problem for `/readyz` and `/metrics`, and the first
    /// one to the start-up checklist.
    fn set_up(&self, outcome: Result<String, String>) {
        self.stats
            .set_source_problem(outcome.as_ref().err().cloned());
        let first = self.first_setup.lock().ok().and_then(|mut s| s.take());
        if let Some(first) = first {
            let _ = first.send(outcome);
        }
    }

    /// Counts one restart of `cause` and records `text` as an event about `node`.
    fn restarted(&self, cause: RestartCause, node: &str, text: &str) {
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
/// process or device are reported to `ctx`.
pub(crate) async fn run(
    cfg: SourceConfig,
    ingest: IngestConfig,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> Result<SourceEnd, SourceError> {
    let max = ingest.max_line_length;
    match cfg {
        SourceConfig::Process(c) => Ok(process::run(c, max, tx, token, ctx).await),
        SourceConfig::Serial(c) => Ok(serial::run(c, max, tx, token, ctx).await),
        SourceConfig::Rylr998(c) => Ok(rylr998::run(c, tx, token, ctx).await),
        SourceConfig::Mqtt(c) => Ok(mqtt::run(*c, tx, token, ctx).await),
        SourceConfig::Stdin => replay::stdin(max, tx, token).await,
        SourceConfig::File(c) => replay::file(c, max, tx, token).await,
        SourceConfig::Simulator(c) => Ok(simulator::run(c, tx, token).await),
    }
}

/// Whether the source reports its first set-up through [`SourceContext::new`]'s receiver.
pub(crate) fn announces_setup(cfg: &SourceConfig) -> bool {
    matches!(
        cfg,
        SourceConfig::Process(_)
            | SourceConfig::Serial(_)
            | SourceConfig::Rylr998(_)
            | SourceConfig::Mqtt(_)
    )
}

/// Checks that the source can start, for `check`: `None` when there is nothing to check
/// before it runs, else what answered or what is wrong. The same set-up the running source
/// does.
pub(crate) async fn probe(cfg: &SourceConfig) -> Option<Result<String, String>> {
    match cfg {
        SourceConfig::Rylr998(c) => Some(rylr998::probe(c).await.map_err(|e| e.to_string())),
        SourceConfig::Mqtt(c) => Some(mqtt::probe(c).await),
        _ => None,
    }
}
