//! Wiring and ordered shutdown.
//!
//! Start: open the outbox and fix every sink's cursor *before* the source starts (so no
//! reading can slip past a new sink), start the embedded broker and the HTTP server when
//! configured, probe the servers for the start-up checklist, then start ingest, sinks and
//! source.
//!
//! Stop (end of input, SIGINT or SIGTERM): the source stops → the ingest thread commits what
//! it holds → the sinks deliver everything committed within the drain timeout (a second
//! signal cuts it short) → the MQTT sink publishes `offline` → the HTTP server closes. What
//! is not delivered stays in the outbox for the next start, and the report says how much.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::activity::Activity;
use crate::config::{BrokerTarget, Config, SourceConfig};
use crate::events::{EventKind, EventLog};
use crate::ingest::{self, IngestOutputs};
use crate::latest::Latest;
use crate::outbox::{Outbox, OutboxReader};
use crate::quarantine::Quarantine;
use crate::reading::Precision;
use crate::sink::{self, SinkConfig, SinkContext};
use crate::source::{self, SourceEnd};
use crate::telemetry::Stats;
use crate::web::WebServer;
use crate::{broker, checklist, reading};

/// How often old, delivered history is pruned.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
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
    eprintln!("iiot-gateway {}", env!("CARGO_PKG_VERSION"));
    check(true, "config", &cfg.origin);

    let outbox = Outbox::open(&cfg.storage).context("open the outbox")?;
    let reader = outbox.reader().context("open the outbox")?;
    let sinks: Vec<SinkConfig> = cfg
        .mqtt
        .iter()
        .cloned()
        .map(SinkConfig::Mqtt)
        .chain(cfg.influx.iter().cloned().map(SinkConfig::Influx))
        .collect();
    let mut buffered = 0;
    for s in &sinks {
        let cursor = reader.init_cursor(s.name()).context("read sink cursors")?;
        buffered = buffered.max(reader.count_after(cursor).context("read backlog")?);
    }
    check(
        true,
        "storage",
        format!("{} ({buffered} readings buffered)", outbox.path().display()),
    );
    let quarantine = Quarantine::new(&cfg.storage.dir);

    if let Some(m) = &cfg.mqtt {
        if let BrokerTarget::Embedded(addr) = &m.target {
            let login = m.username.clone().map(|user| {
                let password = m.password.as_ref().map(|p| p.expose().to_string());
                (user, password.unwrap_or_default())
            });
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
        }
    }
    let stats = Arc::new(Stats::default());
    let _ = stats.source_kind.set(source_kind(&cfg.source).to_string());
    // The newest values are for the dashboard: without it, none are kept.
    let latest = match cfg.http {
        Some(_) => {
            let latest = Latest::default();
            latest.update(&reader.latest().context("read latest values")?);
            Some(latest)
        }
        None => None,
    };
    let web_token = CancellationToken::new();
    let web_task = match (&cfg.http, &latest) {
        (Some(http), Some(latest)) => {
            let prefix = cfg.mqtt.as_ref().map(|m| m.topic_prefix.clone());
            let history = reader_for(&cfg)?;
            let server =
                WebServer::bind(http, latest.clone(), stats.clone(), prefix, history).await?;
            if http.token.is_none() && !http.listen.ip().is_loopback() {
                warn!(listen = %http.listen, "the dashboard and /api are reachable from the network without a token; set [http] token (or HTTP_TOKEN)");
            }
            let url = server
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default();
            check(true, "dashboard", &url);
            info!(url, "dashboard listening");
            Some(tokio::spawn(server.serve(web_token.clone())))
        }
        _ => None,
    };
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

    let (line_tx, line_rx) = mpsc::channel(cfg.ingest.channel_capacity);
    let (committed_tx, committed_rx) = watch::channel(reader.last_seq()?);
    let events = EventLog::new(
        Outbox::reopen(&cfg.storage).context("open the outbox")?,
        committed_tx.clone(),
    );
    let activity = Arc::new(std::sync::Mutex::new(Activity::default()));
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
            sinks: sinks.iter().map(SinkConfig::name).collect(),
        },
    };
    let precision = cfg.influx.as_ref().map_or(Precision::Ns, |i| i.precision);
    let newest_ts = reader.newest_packet_ts().context("read the outbox")?;
    let ingest_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest::run(line_rx, outbox, precision, newest_ts, outputs))
        .context("start the ingest thread")?;

    let finish = CancellationToken::new();
    let mut sink_tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    for s in &sinks {
        let name = s.name();
        let ctx = SinkContext {
            outbox: reader_for(&cfg)?,
            committed: committed_rx.clone(),
            finish: finish.clone(),
            abort: signals.abort.clone(),
            status: stats.sink(name),
            quarantine: quarantine.clone(),
            events: events.clone(),
        };
        let s = s.clone();
        sink_tasks.push((
            name,
            tokio::spawn(async move {
                // An outbox error (e.g. the database busy past its timeout) ends one run of
                // the sink; it starts again from its persisted cursor (at least once).
                while let Err(error) = sink::run(s.clone(), &ctx).await {
                    error!(sink = name, error = %error, "sink stopped by an outbox error; restarting it from its cursor");
                    tokio::select! {
                        () = tokio::time::sleep(SINK_RESTART) => {}
                        () = ctx.abort.cancelled() => return,
                    }
                }
            }),
        ));
    }
    let sink_names: Vec<&'static str> = sinks.iter().map(SinkConfig::name).collect();
    let retention = tokio::spawn(prune_loop(reader, cfg.storage.retention, sink_names));
    let narrator = tokio::spawn(narrate(
        activity,
        stats.clone(),
        quarantine.clone(),
        reader_for(&cfg)?,
        sinks.iter().map(SinkConfig::name).collect(),
        cfg.summary_interval,
    ));
    let trimmer = tokio::spawn(async {
        let mut every = tokio::time::interval(crate::malloc::TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            crate::malloc::trim();
        }
    });

    let source_token = signals.shutdown.child_token();
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
    let (ctx, first_setup) =
        source::SourceContext::new(events.clone(), stats.clone(), quarantine.clone());
    let mut source_task = tokio::spawn(source::run(
        cfg.source.clone(),
        cfg.ingest.clone(),
        line_tx,
        source_token.clone(),
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
    let source_result = tokio::select! {
        r = &mut source_task => r,
        () = signals.shutdown.cancelled() => {
            info!("shutdown requested; stopping the source");
            source_token.cancel();
            source_task.await
        }
    };
    stats.source_running.store(false, Ordering::Relaxed);
    let mut source_failed = false;
    let end = match source_result {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            error!(error = %e, "source failed");
            eprintln!("error: source failed: {e}");
            source_failed = true;
            SourceEnd::Cancelled
        }
        Err(e) => {
            error!(error = %e, "source task failed");
            SourceEnd::Cancelled
        }
    };
    if end == SourceEnd::EndOfInput {
        info!("end of input; delivering what is buffered");
    }
    // The source dropped its sender: the ingest thread commits the rest and ends.
    let ingest_done = tokio::task::spawn_blocking(move || ingest_thread.join());
    tokio::select! {
        _ = ingest_done => {}
        () = signals.abort.cancelled() => warn!("second signal: not waiting for the ingest stage to commit"),
    }
    info!(timeout = ?cfg.ingest.drain_timeout, "source stopped and input committed; sinks delivering what is buffered");
    events.emit(EventKind::GatewayStopped, "gateway", "gateway stopping");
    finish.cancel();
    let drain = cfg.ingest.drain_timeout;
    let all_sinks = futures_join(sink_tasks);
    tokio::pin!(all_sinks);
    // Sinks that deliver are done in milliseconds. Ones that are still at it soon after say
    // at once what the drain waits for, and how not to wait.
    let quick = tokio::select! {
        () = &mut all_sinks => true,
        () = tokio::time::sleep(DRAIN_NOTICE.min(drain)) => false,
        () = signals.abort.cancelled() => false,
    };
    if !quick && !signals.abort.is_cancelled() {
        tell_what_the_drain_waits_for(&cfg, &sinks);
    }
    if !quick {
        tokio::select! {
            () = &mut all_sinks => {}
            () = tokio::time::sleep(drain.saturating_sub(DRAIN_NOTICE)) => {
                warn!(timeout = ?drain, "drain timeout reached; stopping sinks");
                signals.abort.cancel();
                all_sinks.await;
            }
            () = signals.abort.cancelled() => all_sinks.await,
        }
    }
    retention.abort();
    trimmer.abort();
    narrator.abort();
    web_token.cancel();
    if let Some(task) = web_task {
        let _ = task.await;
    }

    let undelivered = undelivered(&cfg, &sinks)?;
    if undelivered > 0 {
        warn!(
            readings = undelivered,
            outbox = %cfg.storage.dir.join(crate::outbox::DB_FILE).display(),
            "readings stay buffered for the next start"
        );
        eprintln!(
            "{undelivered} readings stay buffered in {} for the next start",
            cfg.storage.dir.display()
        );
    }
    info!(
        packets = stats.packets.load(std::sync::atomic::Ordering::Relaxed),
        quarantined = quarantine.total(),
        dropped_at_disk_budget = stats
            .dropped_readings
            .load(std::sync::atomic::Ordering::Relaxed),
        packets_time_shifted = stats
            .shifted_packets
            .load(std::sync::atomic::Ordering::Relaxed),
        "gateway stopped"
    );
    Ok(match (end, undelivered) {
        _ if source_failed => Exit::SourceFailed,
        (SourceEnd::EndOfInput, n) if n > 0 => Exit::Undelivered(n),
        _ => Exit::Clean,
    })
}

fn reader_for(cfg: &Config) -> anyhow::Result<OutboxReader> {
    Outbox::reopen(&cfg.storage)
        .and_then(|o| o.reader())
        .context("open the outbox")
}

/// The largest backlog over all sinks.
fn undelivered(cfg: &Config, sinks: &[SinkConfig]) -> anyhow::Result<i64> {
    let reader = reader_for(cfg)?;
    let mut most = 0;
    for s in sinks {
        let cursor = reader.cursor(s.name())?.unwrap_or(0);
        most = most.max(reader.count_after(cursor)?);
    }
    Ok(most)
}

/// Logs and prints, per sink still delivering, what it has left and that a second signal
/// stops now.
fn tell_what_the_drain_waits_for(cfg: &Config, sinks: &[SinkConfig]) {
    let drain = humantime::format_duration(cfg.ingest.drain_timeout);
    for (sink, readings, gateway_events) in backlogs(cfg, sinks).unwrap_or_default() {
        if readings + gateway_events > 0 {
            info!(sink, readings, gateway_events, "still delivering what is buffered before exiting; a second Ctrl-C (SIGINT/SIGTERM) stops now");
            eprintln!(
                "stopping: the {sink} sink still has {readings} readings and {gateway_events} gateway events to deliver; waiting up to {drain} ([source] drain_timeout). Press Ctrl-C again to stop now: what is not delivered is kept for the next start."
            );
        }
    }
}

/// Per sink: (name, readings, gateway events) not delivered yet.
fn backlogs(cfg: &Config, sinks: &[SinkConfig]) -> anyhow::Result<Vec<(&'static str, i64, i64)>> {
    let reader = reader_for(cfg)?;
    let mut out = Vec::new();
    for s in sinks {
        let cursor = reader.cursor(s.name())?.unwrap_or(0);
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

async fn futures_join(tasks: Vec<(&'static str, JoinHandle<()>)>) {
    for (name, task) in tasks {
        if let Err(error) = task.await {
            error!(sink = name, %error, "sink task failed");
        }
    }
}

/// The source's kind, as `/healthz` names it.
fn source_kind(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Process(p) => p.kind,
        SourceConfig::Serial(_) => "serial",
        SourceConfig::Rylr998(_) => "rylr998",
        SourceConfig::Stdin => "stdin",
        SourceConfig::File(_) => "file",
        SourceConfig::Simulator(_) => "simulator",
    }
}

fn describe_source(source: &SourceConfig) -> String {
    match source {
        SourceConfig::Process(p) => format!("{}: {}", p.kind, p.argv.join(" ")),
        SourceConfig::Serial(s) => format!("serial: {} at {} baud", s.path.display(), s.baud),
        SourceConfig::Rylr998(r) => format!(
            "rylr998: LoRa modem on {} at {} baud",
            r.path.display(),
            r.baud
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

/// How often nodes are checked for silence.
const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// Logs nodes that went silent, and every `summary_every` a one-line summary of what went
/// through since the last (none when nothing changed).
async fn narrate(
    activity: Arc<std::sync::Mutex<Activity>>,
    stats: Arc<Stats>,
    quarantine: Quarantine,
    reader: OutboxReader,
    sinks: Vec<&'static str>,
    summary_every: Option<Duration>,
) {
    use crate::activity::{summary, Note, Totals};
    let totals = |reader: &OutboxReader| {
        let delivered = |name: &str| {
            stats
                .sinks
                .read()
                .ok()
                .and_then(|s| {
                    s.get(name).map(|st| {
                        (
                            st.delivered.load(Ordering::Relaxed),
                            st.cursor.load(Ordering::Relaxed),
                        )
                    })
                })
                .unwrap_or((0, 0))
        };
        Totals {
            packets: stats.packets.load(Ordering::Relaxed),
            readings: stats.readings.load(Ordering::Relaxed),
            quarantined: quarantine.total(),
            sinks: sinks
                .iter()
                .map(|name| {
                    let (delivered, cursor) = delivered(name);
                    let backlog = reader.count_after(cursor).unwrap_or(-1);
                    (*name, delivered, backlog)
                })
                .collect(),
        }
    };
    let mut last = totals(&reader);
    let mut next_summary = summary_every.map(|d| tokio::time::Instant::now() + d);
    let mut next_check = tokio::time::Instant::now() + SILENCE_CHECK;
    loop {
        tokio::time::sleep_until(next_summary.map_or(next_check, |s| s.min(next_check))).await;
        if tokio::time::Instant::now() >= next_check {
            next_check += SILENCE_CHECK;
        }
        let notes = activity
            .lock()
            .map(|mut a| a.check(reading::now_ns()))
            .unwrap_or_default();
        for note in notes {
            if let Note::Silent {
                node,
                last_seen_ns,
                interval_ns,
            } = note
            {
                let secs =
                    |ns: i64| Duration::from_secs(u64::try_from(ns / 1_000_000_000).unwrap_or(0));
                let silent = secs(reading::now_ns().saturating_sub(last_seen_ns));
                warn!(
                    node = %node,
                    silent = %humantime::format_duration(silent),
                    interval = %humantime::format_duration(secs(interval_ns)),
                    "node went silent: no packet for 3 of its intervals"
                );
            }
        }
        if let (Some(due), Some(d)) = (next_summary, summary_every) {
            if tokio::time::Instant::now() >= due {
                next_summary = Some(tokio::time::Instant::now() + d);
                let now = totals(&reader);
                if let Some(text) = summary(&last, &now) {
                    info!(
                        summary = %text,
                        every = %humantime::format_duration(d),
                        "what went through since the last summary"
                    );
                }
                last = now;
            }
        }
    }
}

/// Deletes delivered readings older than the retention, now and every [`RETENTION_EVERY`].
async fn prune_loop(reader: OutboxReader, retention: Duration, sinks: Vec<&'static str>) {
    let mut reader = Some(reader);
    loop {
        let Some(r) = reader.take() else { return };
        let sinks = sinks.clone();
        let horizon = reading::now_ns()
            .saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
        let joined = tokio::task::spawn_blocking(move || {
            let result = r.prune(horizon, &sinks);
            (r, result)
        })
        .await;
        match joined {
            Ok((r, result)) => {
                match result {
                    Ok(0) => {}
                    Ok(n) => info!(readings = n, "pruned history past retention"),
                    Err(error) => warn!(%error, "pruning history failed"),
                }
                reader = Some(r);
            }
            Err(_) => return,
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}
