//! Wiring and ordered shutdown: [`Gateway::start`] builds and starts every part and returns
//! them [`Running`]; [`Running::run`] waits for the end and stops them in order.
//!
//! Start: open the outbox and fix every sink's cursor *before* the source starts (so no
//! reading can slip past a new sink), start the embedded broker and the HTTP server when
//! configured, probe the servers for the start-up checklist, then start the ingest thread
//! (the outbox's one writer), sinks, background jobs and source.
//!
//! Stop (end of input, SIGINT or SIGTERM), one step per function of [`Running`]:
//! 1. the source stops, and the ingest thread commits what it holds;
//! 2. the sinks deliver everything committed within the drain timeout (a second signal cuts
//!    it short), the MQTT sink publishes `offline`;
//! 3. the background jobs and the HTTP server stop;
//! 4. the writer applies the last queued writes (the sinks' final cursors) and closes.
//!
//! What is not delivered stays in the outbox for the next start, and the report says how much.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::events::{EventKind, EventLog};
use crate::outbox::{self, OutboxReader, Seq, Write, WriteQueue};
use crate::sink::SinkConfig;
use crate::source::{SourceEnd, SourceError};

mod start;

use start::{
    announce, announce_servers, open_storage, start_broker, start_ingest, start_jobs, start_sinks,
    start_source, start_web, Shared, Storage,
};

/// Sinks still delivering this long after the stop began are told about (what is left, and
/// that a second signal stops now).
const DRAIN_NOTICE: Duration = Duration::from_millis(500);

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything was delivered, or shutdown was requested by a signal.
    Clean,
    /// The input ended but this many readings could not be delivered in time; they stay
    /// buffered for the next start.
    Undelivered(i64),
    /// The source could not run (a missing file, a read error); what it had sent was
    /// delivered or stays buffered.
    SourceFailed,
}

/// Signals from the outside world.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Stop the source and drain (first SIGINT/SIGTERM).
    pub shutdown: CancellationToken,
    /// Stop now (second signal).
    pub abort: CancellationToken,
}

/// Runs the gateway until its input ends or a signal arrives.
pub async fn run(cfg: Config, signals: Signals) -> anyhow::Result<Exit> {
    Gateway::start(cfg, signals).await?.run().await
}

/// The gateway, before it runs.
pub struct Gateway;

/// Every part of a started gateway, and what stops each.
pub struct Running {
    cfg: Config,
    signals: Signals,
    /// The outbox's reader, the sinks, the quarantine and the counters.
    shared: Shared,
    events: EventLog,
    source: JoinHandle<Result<SourceEnd, SourceError>>,
    /// Stops the source (a child of `signals.shutdown`).
    source_stop: CancellationToken,
    /// The outbox's one writer (taken when it is closed).
    ingest: Option<std::thread::JoinHandle<()>>,
    input_committed: oneshot::Receiver<()>,
    writes: WriteQueue,
    sink_tasks: TaskTracker,
    /// The source is done: sinks deliver what is committed, then return.
    finish: CancellationToken,
    /// Background jobs and the HTTP server.
    jobs: TaskTracker,
    jobs_stop: CancellationToken,
}

impl Gateway {
    /// Starts every part in the order the stop steps undo: opens the storage, starts the
    /// embedded broker and the HTTP server and probes the servers (the start-up checklist),
    /// then starts the ingest thread (the outbox's one writer), the sinks, the background jobs
    /// and the source.
    pub async fn start(cfg: Config, signals: Signals) -> anyhow::Result<Running> {
        eprintln!("iiot-gateway {}", env!("CARGO_PKG_VERSION"));
        announce(true, "config", &cfg.origin);
        let storage = open_storage(&cfg)?;
        start_broker(&cfg)?;
        let jobs = TaskTracker::new();
        let jobs_stop = CancellationToken::new();
        start_web(&cfg, &storage, &jobs, &jobs_stop).await?;
        announce_servers(&cfg).await;
        let Storage {
            outbox,
            latest,
            shared,
        } = storage;
        let (ingest, sink_readers) = start_ingest(&cfg, outbox, latest, &shared, &signals)?;
        let finish = CancellationToken::new();
        let sink_tasks = start_sinks(&shared, sink_readers, &ingest, &finish, &signals);
        start_jobs(&cfg, &ingest, &shared, &jobs, &jobs_stop);
        let source_stop = signals.shutdown.child_token();
        let source = start_source(&cfg, ingest.lines, &source_stop, &ingest.events, &shared).await;
        Ok(Running {
            cfg,
            signals,
            shared,
            events: ingest.events,
            source,
            source_stop,
            ingest: Some(ingest.thread),
            input_committed: ingest.input_committed,
            writes: ingest.writes,
            sink_tasks,
            finish,
            jobs,
            jobs_stop,
        })
    }
}

impl Running {
    /// Waits until the input ends or a signal arrives, then stops everything in order.
    pub async fn run(mut self) -> anyhow::Result<Exit> {
        let (end, source_failed) = self.stop_source().await;
        self.drain_sinks().await;
        self.jobs_stop.cancel();
        self.jobs.close();
        self.jobs.wait().await;
        self.close_writer().await;

        let undelivered = undelivered(&self.shared.reader, &self.shared.sinks)?;
        if undelivered > 0 {
            warn!(
                readings = undelivered,
                outbox = %self.cfg.storage.dir.join(outbox::DB_FILE).display(),
                "readings stay buffered for the next start"
            );
            eprintln!(
                "{undelivered} readings stay buffered in {} for the next start",
                self.cfg.storage.dir.display()
            );
        }
        let stats = &self.shared.stats;
        info!(
            packets = stats.packets.load(Ordering::Relaxed),
            quarantined = self.shared.quarantine.total(),
            dropped_at_disk_budget = stats.dropped_readings.load(Ordering::Relaxed),
            packets_time_shifted = stats.shifted_packets.load(Ordering::Relaxed),
            "gateway stopped"
        );
        Ok(match (end, undelivered) {
            _ if source_failed => Exit::SourceFailed,
            (SourceEnd::EndOfInput, n) if n > 0 => Exit::Undelivered(n),
            _ => Exit::Clean,
        })
    }

    /// Step 1: waits for the source to end (or stops it on the first signal), then for the
    /// ingest thread to commit every line it sent. Returns how it ended and whether it failed.
    async fn stop_source(&mut self) -> (SourceEnd, bool) {
        let result = tokio::select! {
            r = &mut self.source => r,
            () = self.signals.shutdown.cancelled() => {
                info!("shutdown requested; stopping the source");
                self.source_stop.cancel();
                (&mut self.source).await
            }
        };
        self.shared
            .stats
            .source_running
            .store(false, Ordering::Relaxed);
        let (end, failed) = match result {
            Ok(Ok(end)) => (end, false),
            Ok(Err(e)) => {
                error!(error = %e, "source failed");
                eprintln!("error: source failed: {e}");
                (SourceEnd::Cancelled, true)
            }
            Err(e) => {
                error!(error = %e, "source task failed");
                (SourceEnd::Cancelled, false)
            }
        };
        if end == SourceEnd::EndOfInput {
            info!("end of input; delivering what is buffered");
        }
        // The source dropped its sender: the ingest thread commits the rest and says so.
        tokio::select! {
            _ = &mut self.input_committed => {}
            () = self.signals.abort.cancelled() => warn!("second signal: not waiting for the ingest stage to commit"),
        }
        (end, failed)
    }

    /// Step 2: the sinks deliver what is committed, within the drain timeout.
    async fn drain_sinks(&self) {
        let drain = self.cfg.ingest.drain_timeout;
        info!(timeout = ?drain, "source stopped and input committed; sinks delivering what is buffered");
        self.events
            .emit(EventKind::GatewayStopped, "gateway", "gateway stopping");
        self.finish.cancel();
        let all_sinks = self.sink_tasks.wait();
        tokio::pin!(all_sinks);
        let abort = &self.signals.abort;
        // Sinks that deliver are done in milliseconds. Ones that are still at it soon after
        // say at once what the drain waits for, and how not to wait.
        let quick = tokio::select! {
            () = &mut all_sinks => true,
            () = tokio::time::sleep(DRAIN_NOTICE.min(drain)) => false,
            () = abort.cancelled() => false,
        };
        if quick {
            return;
        }
        if !abort.is_cancelled() {
            tell_what_the_drain_waits_for(&self.cfg, &self.shared.reader, &self.shared.sinks);
        }
        tokio::select! {
            () = &mut all_sinks => {}
            () = tokio::time::sleep(drain.saturating_sub(DRAIN_NOTICE)) => {
                warn!(timeout = ?drain, "drain timeout reached; stopping sinks");
                abort.cancel();
                all_sinks.await;
            }
            () = abort.cancelled() => all_sinks.await,
        }
    }

    /// Step 4: the writer applies what is queued (the sinks' last cursors) and closes the
    /// outbox.
    async fn close_writer(&mut self) {
        if let Err(error) = self.writes.send(Write::Close) {
            // Full: the writer still stops once every sender is gone.
            debug!(%error, "closing the outbox writer");
        }
        let Some(ingest) = self.ingest.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || ingest.join()).await {
            Ok(Ok(())) => {}
            _ => error!("the ingest thread failed"),
        }
    }
}

/// The largest backlog over all sinks.
fn undelivered(reader: &OutboxReader, sinks: &[SinkConfig]) -> anyhow::Result<i64> {
    let mut most = 0;
    for s in sinks {
        let cursor = reader.cursor(s.name())?.unwrap_or(Seq::START);
        most = most.max(reader.count_after(cursor)?);
    }
    Ok(most)
}

/// Logs and prints, per sink still delivering, what it has left and that a second signal
/// stops now.
fn tell_what_the_drain_waits_for(cfg: &Config, reader: &OutboxReader, sinks: &[SinkConfig]) {
    let drain = humantime::format_duration(cfg.ingest.drain_timeout);
    for (sink, readings, gateway_events) in backlogs(reader, sinks).unwrap_or_default() {
        if readings + gateway_events > 0 {
            info!(sink, readings, gateway_events, "still delivering what is buffered before exiting; a second Ctrl-C (SIGINT/SIGTERM) stops now");
            eprintln!(
                "stopping: the {sink} sink still has {readings} readings and {gateway_events} gateway events to deliver; waiting up to {drain} ([source] drain_timeout). Press Ctrl-C again to stop now: what is not delivered is kept for the next start."
            );
        }
    }
}

/// Per sink: (name, readings, gateway events) not delivered yet.
fn backlogs(
    reader: &OutboxReader,
    sinks: &[SinkConfig],
) -> anyhow::Result<Vec<(&'static str, i64, i64)>> {
    let mut out = Vec::new();
    for s in sinks {
        let cursor = reader.cursor(s.name())?.unwrap_or(Seq::START);
        let readings = reader.count_after(cursor)?;
        // The MQTT sink does not carry gateway events.
        let events = match s {
            SinkConfig::Influx(_) => reader.count_events_after(cursor)?,
            _ => 0,
        };
        out.push((s.name(), readings, events));
    }
    Ok(out)
}
