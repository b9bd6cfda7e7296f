//! The start steps of [`super::Gateway::start`], one function each, in the order the stop
//! steps of [`super::Running`] undo them: open the storage, start the embedded broker and the
//! HTTP server, announce the servers, start the ingest thread (the outbox's one writer), the
//! sinks, the background jobs and the source. Each prints its line of the start-up checklist.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::{undelivered, Signals};
use crate::check::checklist;
use crate::config::{Config, SourceConfig};
use crate::events::{EventKind, EventLog};
use crate::ingest::{self, IngestOutputs, Inputs};
use crate::live_view::LiveView;
use crate::mqtt::{broker, BrokerTarget};
use crate::nodes::activity::{self, Activity, Narrator};
use crate::outbox::{self, Outbox, OutboxReader, Seq, WriteQueue};
use crate::quarantine::Quarantine;
use crate::reading::{Line, Precision};
use crate::self_stats::Stats;
use crate::sink::{self, SinkConfig, SinkContext};
use crate::source::{self, SourceEnd, SourceError};
use crate::web::WebServer;

/// Pause before a sink stopped by an outbox error runs again.
const SINK_RESTART: Duration = Duration::from_secs(1);

/// Longest wait for the source's first set-up result in the start-up checklist.
const SETUP_ANNOUNCE: Duration = Duration::from_secs(5);

/// Prints one start-up checklist item to stderr.
pub(super) fn announce(ok: bool, what: &'static str, detail: impl std::fmt::Display) {
    checklist::Item::new(ok, what, detail.to_string()).print_run();
}

/// What every part of a running gateway shares.
pub(super) struct Shared {
    /// The outbox's reports (the narrator's too: one connection, one page cache).
    pub(super) reader: Arc<OutboxReader>,
    /// The configured sinks, each with its cursor in the outbox.
    pub(super) sinks: Vec<SinkConfig>,
    pub(super) quarantine: Quarantine,
    pub(super) stats: Arc<Stats>,
    /// The command queue, once the outbox's writer runs (the HTTP server starts before).
    pub(super) downlink: Arc<std::sync::OnceLock<crate::downlink::Downlink>>,
}

/// The outbox and what is read from it before anything runs.
pub(super) struct Storage {
    pub(super) outbox: Outbox,
    /// The newest values, kept only for the dashboard.
    pub(super) latest: Option<LiveView>,
    pub(super) shared: Shared,
}

/// Opens the outbox and fixes every sink's cursor *before* the source starts (so no reading
/// can slip past a new sink); reads the newest values when the dashboard is on.
pub(super) fn open_storage(cfg: &Config) -> anyhow::Result<Storage> {
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
    let buffered = undelivered(&reader, &sinks).context("read backlog")?;
    announce(
        true,
        "storage",
        format!("{} ({buffered} readings buffered)", outbox.path().display()),
    );
    let stats = Arc::new(Stats::default());
    let _ = stats.source_kind.set(cfg.source.kind().to_string());
    // The newest values are for the dashboard: without it, none are kept.
    let latest = match cfg.http {
        Some(_) => {
            let latest = LiveView::default();
            let refused = latest.update(&reader.latest().context("read latest values")?);
            stats
                .latest_series_refused
                .fetch_add(refused, Ordering::Relaxed);
            Some(latest)
        }
        None => None,
    };
    Ok(Storage {
        outbox,
        latest,
        shared: Shared {
            reader,
            sinks,
            quarantine: Quarantine::new(&cfg.storage.dir),
            stats,
            downlink: Arc::default(),
        },
    })
}

/// Prints the start-up checklist's items for the configured servers (each probed).
pub(super) async fn announce_servers(cfg: &Config) {
    for item in checklist::servers(cfg).await {
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
}

/// The ingest thread (the outbox's one writer) and what the other parts reach it by.
pub(super) struct Ingest {
    pub(super) thread: std::thread::JoinHandle<()>,
    /// Where the source sends its lines.
    pub(super) lines: mpsc::Sender<Line>,
    /// Events, cursor moves and pruning for the writer.
    pub(super) writes: WriteQueue,
    /// The highest committed seq.
    pub(super) committed: watch::Receiver<Seq>,
    /// Told once the source stopped and every line it sent is committed.
    pub(super) input_committed: oneshot::Receiver<()>,
    pub(super) events: EventLog,
    pub(super) activity: Arc<Mutex<Activity>>,
}

/// Starts the ingest thread (the outbox moves into it). Returns it with one reader per sink,
/// in the sinks' order, each with its own view of the rows the writer just committed.
pub(super) fn start_ingest(
    cfg: &Config,
    outbox: Outbox,
    latest: Option<LiveView>,
    shared: &Shared,
    signals: &Signals,
) -> anyhow::Result<(Ingest, Vec<OutboxReader>)> {
    let Shared {
        reader,
        sinks,
        quarantine,
        stats,
        ..
    } = shared;
    let (lines, line_rx) = mpsc::channel(cfg.ingest.channel_capacity);
    let (writes, queued) = WriteQueue::new();
    let (committed_tx, committed) = watch::channel(reader.last_seq()?);
    let (told, input_committed) = oneshot::channel();
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
        lines: line_rx,
        writes: queued,
        input_committed: told,
    };
    // Each sink reads what it keeps up with from memory (its own reader of the feed).
    let mut sink_readers = Vec::new();
    for sink in sinks {
        let cursor = reader.cursor(sink.name())?.unwrap_or(Seq::START);
        sink_readers.push(sink_reader(cfg)?.with_feed(outbox.feed_reader(cursor)));
    }
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest::run(inputs, outbox, precision, newest_ts, outputs, runtime))
        .context("start the ingest thread")?;
    let ingest = Ingest {
        thread,
        lines,
        events: EventLog::new(writes.clone()),
        writes,
        committed,
        input_committed,
        activity,
    };
    Ok((ingest, sink_readers))
}

/// Starts one task per sink, each reading with its own reader; `finish` tells them the source
/// is done.
pub(super) fn start_sinks(
    shared: &Shared,
    readers: Vec<OutboxReader>,
    ingest: &Ingest,
    finish: &CancellationToken,
    signals: &Signals,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    for (sink, outbox) in shared.sinks.iter().zip(readers) {
        let ctx = SinkContext {
            outbox,
            writes: ingest.writes.clone(),
            committed: ingest.committed.clone(),
            finish: finish.clone(),
            abort: signals.abort.clone(),
            status: shared.stats.sink(sink.name()),
            quarantine: shared.quarantine.clone(),
            events: ingest.events.clone(),
        };
        tasks.spawn(run_sink(sink.clone(), ctx));
    }
    tasks.close();
    tasks
}

/// Starts the background jobs: pruning, giving freed memory back, the narrator.
pub(super) fn start_jobs(
    cfg: &Config,
    ingest: &Ingest,
    shared: &Shared,
    jobs: &TaskTracker,
    stop: &CancellationToken,
) {
    let narrator = Narrator {
        activity: ingest.activity.clone(),
        stats: shared.stats.clone(),
        quarantine: shared.quarantine.clone(),
        reader: shared.reader.clone(),
        sinks: shared.sinks.iter().map(SinkConfig::name).collect(),
        summary_every: cfg.summary_interval,
    };
    outbox::retention::spawn(
        jobs,
        ingest.writes.clone(),
        cfg.storage.retention,
        stop.clone(),
    );
    crate::malloc::spawn(jobs, ingest.committed.clone(), stop.clone());
    let downlink = crate::downlink::Downlink::new(
        ingest.writes.clone(),
        shared.reader.clone(),
        cfg.downlink.clone(),
        crate::downlink::Reach::of(&cfg.source),
        ingest.events.clone(),
        shared.stats.clone(),
    );
    jobs.spawn(crate::downlink::expire_job(downlink.clone(), stop.clone()));
    // Commands over MQTT, with the sink's broker, when the source can send them.
    if let (Some(m), true) = (&cfg.mqtt, downlink.reaches_any()) {
        jobs.spawn(crate::downlink::mqtt::run(
            m.connection.clone(),
            m.topic_prefix.clone(),
            downlink.clone(),
            stop.clone(),
        ));
    }
    let _ = shared.downlink.set(downlink);
    activity::spawn_narrator(jobs, narrator, stop.clone());
}

/// Starts the embedded MQTT broker when the config asks for one.
pub(super) fn start_broker(cfg: &Config) -> anyhow::Result<()> {
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
    announce(
        true,
        "broker",
        format!("embedded MQTT broker on {addr}{tls}{auth}"),
    );
    Ok(())
}

/// Binds the HTTP server (when configured) and serves on `jobs` until `stop`.
pub(super) async fn start_web(
    cfg: &Config,
    storage: &Storage,
    jobs: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (Some(http), Some(latest)) = (&cfg.http, &storage.latest) else {
        return Ok(());
    };
    let history = storage
        .outbox
        .reader()
        .and_then(|r| r.with_cache_kib(RARE_READER_CACHE_KIB))
        .context("open the outbox")?;
    let prefix = cfg.mqtt.as_ref().map(|m| m.topic_prefix.clone());
    let server = WebServer::bind(
        http,
        latest.clone(),
        storage.shared.stats.clone(),
        prefix,
        history,
        storage.shared.downlink.clone(),
    )
    .await?;
    if http.token.is_none() && !http.listen.ip().is_loopback() {
        warn!(listen = %http.listen, "the dashboard and /api are reachable from the network without a token; set [http] token (or HTTP_TOKEN)");
    }
    let url = server
        .local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    announce(true, "dashboard", &url);
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
pub(super) async fn start_source(
    cfg: &Config,
    lines: mpsc::Sender<Line>,
    stop: &CancellationToken,
    events: &EventLog,
    shared: &Shared,
) -> JoinHandle<Result<SourceEnd, SourceError>> {
    let Shared {
        stats, quarantine, ..
    } = shared;
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
    let (mut ctx, first_setup) =
        source::SourceContext::new(events.clone(), stats.clone(), quarantine.clone());
    ctx.downlink = shared.downlink.get().cloned();
    if let SourceConfig::Rylr998(r) = &cfg.source {
        checklist::radio_nodes(r).print_run();
        match shared.reader.link_counters() {
            Ok(counters) => ctx.link_counters = counters,
            // Started without them, every frame counter is new until one is committed:
            // said loudly, as replays could be taken meanwhile.
            Err(error) => {
                error!(%error, "cannot read the radio frame counters from the outbox; replays of frames older than the gateway's start are not recognized")
            }
        }
    }
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
        announce(false, "source", format!("{}{then}", item.detail));
    } else if source::announces_setup(&cfg.source) {
        match tokio::time::timeout(SETUP_ANNOUNCE, first_setup).await {
            Ok(Ok(Ok(answer))) => announce(true, "source", answer),
            Ok(Ok(Err(problem))) => {
                announce(false, "source", format!("{problem}; retrying with backoff"));
            }
            _ => announce(
                false,
                "source",
                format!("{described}: not set up within {SETUP_ANNOUNCE:?}; still trying"),
            ),
        }
    } else {
        announce(true, "source", described);
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
