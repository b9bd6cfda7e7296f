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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::check::checklist;
use crate::config::{Config, SourceConfig};
use crate::events::{EventKind, EventLog};
use crate::ingest::{self, IngestOutputs, Inputs};
use crate::latest::Latest;
use crate::mqtt::{broker, BrokerTarget};
use crate::nodes::activity::{self, Activity, Narrator};
use crate::outbox::{self, Outbox, OutboxReader, Seq, Write, WriteQueue};
use crate::quarantine::Quarantine;
use crate::reading::Precision;
use crate::sink::{self, SinkConfig, SinkContext};
use crate::source::{self, SourceEnd, SourceError};
use crate::telemetry::Stats;
use crate::web::WebServer;

/// Pause before a sink stopped by an outbox error runs again.
const SINK_RESTART: Duration = Duration::from_secs(1);
/// Sinks still delivering this long after the stop began are told about (what is left, and
/// that a second signal stops now).
const DRAIN_NOTICE: Duration = Duration::from_millis(500);
/// Longest wait for the source's first set-up result in the start-up checklist.
const SETUP_ANNOUNCE: Duration = Duration::from_secs(5);

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

/// Prints one start-up checklist item to stderr.
fn check(ok: bool, what: &'static str, detail: impl std::fmt::Display) {
    checklist::Item::new(ok, what, detail.to_string()).print_run();
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
    sinks: Vec<SinkConfig>,
    stats: Arc<Stats>,
    quarantine: Quarantine,
    events: EventLog,
    /// The outbox's reports (the narrator's too: one connection, one page cache).
    reader: Arc<OutboxReader>,
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
    /// Opens the outbox, starts the broker, the HTTP server, the ingest thread, the sinks,
    /// the background jobs and the source, and prints the start-up checklist.
    pub async fn start(cfg: Config, signals: Signals) -> anyhow::Result<Running> {
        eprintln!("iiot-gateway {}", env!("CARGO_PKG_VERSION"));
        check(true, "config", &cfg.origin);

        let mut outbox = Outbox::open(&cfg.storage).context("open the outbox")?;
        outbox
            .keep_history_index(cfg.http.is_some())
            .context("index the outbox")?;
        let sinks: Vec<SinkConfig> = cfg
            .mqtt
            .iter()
            .cloned()
            .map(|m| SinkConfig::Mqtt(Box::new(m)))
            .chain(cfg.influx.iter().cloned().map(SinkConfig::Influx))
            .collect();
        let names: Vec<&'static str> = sinks.iter().map(SinkConfig::name).collect();
        outbox.track_sinks(&names).context("read sink cursors")?;
        let reader = Arc::new(
            outbox
                .reader()
                .and_then(|r| r.with_cache_kib(RARE_READER_CACHE_KIB))
                .context("open the outbox")?,
        );
        let mut buffered = 0;
        for name in &names {
            let cursor = reader.cursor(name)?.unwrap_or(Seq::START);
            buffered = buffered.max(reader.count_after(cursor).context("read backlog")?);
        }
        check(
            true,
            "storage",
            format!("{} ({buffered} readings buffered)", outbox.path().display()),
        );
        let quarantine = Quarantine::new(&cfg.storage.dir);
        start_broker(&cfg)?;
        let stats = Arc::new(Stats::default());
        let _ = stats.source_kind.set(cfg.source.kind().to_string());
        // The newest values are for the dashboard: without it, none are kept.
        let latest = match cfg.http {
            Some(_) => {
                let latest = Latest::default();
                let refused = latest.update(&reader.latest().context("read latest values")?);
                stats
                    .latest_series_refused
                    .fetch_add(refused, Ordering::Relaxed);
                Some(latest)
            }
            None => None,
        };
        let jobs = TaskTracker::new();
        let jobs_stop = CancellationToken::new();
        if let (Some(_), Some(latest)) = (&cfg.http, &latest) {
            let history = outbox
                .reader()
                .and_then(|r| r.with_cache_kib(RARE_READER_CACHE_KIB))
                .context("open the outbox")?;
            start_web(&cfg, latest, &stats, history, &jobs, &jobs_stop).await?;
        }
        for item in checklist::servers(&cfg).await {
            let item = if item.ok {
                item
            } else {
                checklist::Item::new(
                    false,
                    item.what,
                    format!("{}; buffering until it is back", item.detail),
                )
            };
            item.print_run();
        }

        // The ingest thread: the outbox's one writer.
        let (line_tx, lines) = mpsc::channel(cfg.ingest.channel_capacity);
        let (writes, queued) = WriteQueue::new();
        let (committed_tx, committed) = watch::channel(reader.last_seq()?);
        let (told, input_committed) = oneshot::channel();
        let events = EventLog::new(writes.clone());
        let activity = Arc::new(Mutex::new(Activity::default()));
        let outputs = IngestOutputs {
            committed: committed_tx,
            stats: stats.clone(),
            latest,
            quarantine: quarantine.clone(),
            abort: signals.abort.clone(),
            activity: activity.clone(),
            budget: ingest::Budget {
                max_bytes: cfg.storage.max_bytes,
                policy: cfg.storage.on_full,
            },
        };
        let precision = cfg.influx.as_ref().map_or(Precision::Ns, |i| i.precision);
        let newest_ts = reader.newest_packet_ts().context("read the outbox")?;
        let inputs = Inputs {
            lines,
            writes: queued,
            input_committed: told,
        };
        // Each sink reads what it keeps up with from memory (its own reader of the feed).
        let mut sink_readers = Vec::new();
        for name in &names {
            let cursor = reader.cursor(name)?.unwrap_or(Seq::START);
            sink_readers.push(sink_reader(&cfg)?.with_feed(outbox.feed_reader(cursor)));
        }
        let runtime = tokio::runtime::Handle::current();
        let ingest = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || ingest::run(inputs, outbox, precision, newest_ts, outputs, runtime))
            .context("start the ingest thread")?;

        let finish = CancellationToken::new();
        let sink_tasks = TaskTracker::new();
        for (s, outbox) in sinks.iter().zip(sink_readers) {
            let ctx = SinkContext {
                outbox,
                writes: writes.clone(),
                committed: committed.clone(),
                finish: finish.clone(),
                abort: signals.abort.clone(),
                status: stats.sink(s.name()),
                quarantine: quarantine.clone(),
                events: events.clone(),
            };
            sink_tasks.spawn(run_sink(s.clone(), ctx));
        }
        sink_tasks.close();

        outbox::retention::spawn(
            &jobs,
            writes.clone(),
            cfg.storage.retention,
            jobs_stop.clone(),
        );
        crate::malloc::spawn(&jobs, committed.clone(), jobs_stop.clone());
        let narrator = Narrator {
            activity,
            stats: stats.clone(),
            quarantine: quarantine.clone(),
            reader: reader.clone(),
            sinks: names,
            summary_every: cfg.summary_interval,
        };
        activity::spawn_narrator(&jobs, narrator, jobs_stop.clone());

        let source_stop = signals.shutdown.child_token();
        let source = start_source(&cfg, line_tx, &source_stop, &events, &stats, &quarantine).await;
        Ok(Running {
            cfg,
            signals,
            sinks,
            stats,
            quarantine,
            events,
            reader,
            source,
            source_stop,
            ingest: Some(ingest),
            input_committed,
            writes,
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

        let undelivered = undelivered(&self.reader, &self.sinks)?;
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
        let stats = &self.stats;
        info!(
            packets = stats.packets.load(Ordering::Relaxed),
            quarantined = self.quarantine.total(),
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
        self.stats.source_running.store(false, Ordering::Relaxed);
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
            tell_what_the_drain_waits_for(&self.cfg, &self.reader, &self.sinks);
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

/// Starts the embedded MQTT broker when the config asks for one.
fn start_broker(cfg: &Config) -> anyhow::Result<()> {
    let Some(m) = &cfg.mqtt else { return Ok(()) };
    let BrokerTarget::Embedded(addr) = &m.connection.target else {
        return Ok(());
    };
    let login = m.connection.login();
    let auth = if login.is_some() {
        ", password required"
    } else {
        ""
    };
    let tls = if m.embedded_tls.is_some() {
        ", TLS"
    } else {
        ""
    };
    broker::start(*addr, login, m.embedded_tls.clone())?;
    check(
        true,
        "broker",
        format!("embedded MQTT broker on {addr}{tls}{auth}"),
    );
    Ok(())
}

/// Binds the HTTP server and serves on `jobs` until `stop`.
async fn start_web(
    cfg: &Config,
    latest: &Latest,
    stats: &Arc<Stats>,
    history: OutboxReader,
    jobs: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(http) = &cfg.http else { return Ok(()) };
    let prefix = cfg.mqtt.as_ref().map(|m| m.topic_prefix.clone());
    let server = WebServer::bind(http, latest.clone(), stats.clone(), prefix, history).await?;
    if http.token.is_none() && !http.listen.ip().is_loopback() {
        warn!(listen = %http.listen, "the dashboard and /api are reachable from the network without a token; set [http] token (or HTTP_TOKEN)");
    }
    let url = server
        .local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    check(true, "dashboard", &url);
    info!(url, "dashboard listening");
    jobs.spawn(server.serve(stop.clone()));
    Ok(())
}

/// Runs one sink until it is finished or aborted. An outbox error (e.g. the database busy
/// past its timeout) ends one run of the sink; it starts again from its cursor (at least
/// once).
async fn run_sink(cfg: SinkConfig, ctx: SinkContext) {
    while let Err(error) = sink::run(cfg.clone(), &ctx).await {
        error!(sink = cfg.name(), error = %error, "sink stopped by an outbox error; restarting it from its cursor");
        tokio::select! {
            () = tokio::time::sleep(SINK_RESTART) => {}
            () = ctx.abort.cancelled() => return,
        }
    }
}

/// Records the start, checks what the source needs, starts it and says in the checklist how
/// its start went.
async fn start_source(
    cfg: &Config,
    lines: mpsc::Sender<crate::reading::Line>,
    stop: &CancellationToken,
    events: &EventLog,
    stats: &Arc<Stats>,
    quarantine: &Quarantine,
) -> JoinHandle<Result<SourceEnd, SourceError>> {
    let described = describe_source(&cfg.source);
    events.emit(
        EventKind::GatewayStarted,
        "gateway",
        &format!(
            "iiot-gateway {} started; source {described}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    // What the source needs before it runs, checked as `check` does (the modem's set-up is
    // the running source's own, below: it must not be done twice).
    let preflight = match &cfg.source {
        SourceConfig::Rylr998(_) => None,
        other => Some(checklist::source(other).await),
    };
    stats.source_running.store(true, Ordering::Relaxed);
    // Not ready until the source's own first start says otherwise: a /readyz before that
    // start ran must not answer 200 for a source the checks already found unable to run.
    if let Some(item) = preflight.as_ref().filter(|i| !i.ok) {
        stats.set_source_problem(Some(item.detail.clone()));
    }
    let (ctx, first_setup) =
        source::SourceContext::new(events.clone(), stats.clone(), quarantine.clone());
    let task = tokio::spawn(source::run(
        cfg.source.clone(),
        cfg.ingest.clone(),
        lines,
        stop.clone(),
        ctx,
    ));
    // A source that starts a process or opens a device says how its first start went.
    if let Some(item) = preflight.as_ref().filter(|i| !i.ok) {
        let retrying = matches!(
            cfg.source,
            SourceConfig::Process(_) | SourceConfig::Serial(_)
        );
        let then = if retrying {
            "; retrying with backoff"
        } else {
            ""
        };
        check(false, "source", format!("{}{then}", item.detail));
    } else if source::announces_setup(&cfg.source) {
        match tokio::time::timeout(SETUP_ANNOUNCE, first_setup).await {
            Ok(Ok(Ok(answer))) => check(true, "source", answer),
            Ok(Ok(Err(problem))) => {
                check(false, "source", format!("{problem}; retrying with backoff"));
            }
            _ => check(
                false,
                "source",
                format!("{described}: not set up within {SETUP_ANNOUNCE:?}; still trying"),
            ),
        }
    } else {
        check(true, "source", described);
    }
    task
}

/// Page cache of the readers that look rarely (reports, the dashboard's history), KiB:
/// the 10,000 look-ups of the dashboard's start-up would otherwise keep 512 KiB each
/// (BENCHMARKS.md, "Memory").
const RARE_READER_CACHE_KIB: u32 = 64;

/// Page cache of a sink's reader, KiB. A reader's cache outlives its read transaction only
/// while nothing was committed in between (WAL), and the ingest thread commits all the time:
/// the cache serves one read, whose rows lie on consecutive leaf pages.
const SINK_READER_CACHE_KIB: u32 = 64;

fn sink_reader(cfg: &Config) -> anyhow::Result<OutboxReader> {
    OutboxReader::of(&cfg.storage)
        .and_then(|r| r.with_cache_kib(SINK_READER_CACHE_KIB))
        .context("open the outbox")
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

fn describe_source(source: &SourceConfig) -> String {
    match source {
        SourceConfig::Process(p) => format!("{}: {}", p.kind.as_str(), p.argv.join(" ")),
        SourceConfig::Serial(s) => format!("serial: {} at {} baud", s.path.display(), s.baud),
        SourceConfig::Rylr998(r) => format!(
            "rylr998: LoRa modem on {} at {} baud",
            r.path.display(),
            r.baud
        ),
        SourceConfig::Mqtt(m) => format!(
            "mqtt: {} from {}",
            m.subscription,
            m.connection.broker_urls()
        ),
        SourceConfig::Stdin => "stdin".into(),
        SourceConfig::File(f) => format!("file: {} (speed {})", f.path.display(), f.speed),
        SourceConfig::Simulator(s) => format!(
            "simulator: {} remote node(s), every {}",
            s.remote_nodes,
            humantime::format_duration(s.interval)
        ),
    }
}
