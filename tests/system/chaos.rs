//! Fault injection ("chaos"): telemetry streams into the real gateway at a steady rate while
//! the broker, the database, the gateway process or its storage fail, and afterwards the
//! counts must be exact:
//! - the database holds exactly one point per reading the gateway accepted (every value, no
//!   duplicate, nothing missing), and
//! - a persistent-session (clean session off) QoS 1 subscriber received every reading at
//!   least once; the duplicates are counted and printed, not limited.
//!
//! Every packet the feeder writes carries unique values (`n1.g` = 100000 + i, `sts.rx` = i),
//! so a missing or repeated reading shows up in the multiset comparison. Each test prints one
//! line `FAULT <name>: sent=N db=N mqtt_received=N mqtt_duplicates=N` (readings, not packets)
//! for `cargo test --test system chaos -- --nocapture`.
//!
//! VictoriaMetrics keeps a second sample of a point (see `support`): a duplicate there is a
//! real resend. It can only come from a batch the database wrote but whose 2xx the gateway
//! never saw. A graceful stop (SIGTERM) cannot cause that: the server finishes and answers
//! every request it has started reading, and a request sent on a connection it closes as
//! idle was never read. A SIGKILLed gateway can: the test that kills it starts
//! VictoriaMetrics with `-dedup.minScrapeInterval=1ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gateway::{counts, expected, plain, Expected, TestGateway};
use crate::support::{http, InfluxDb1, Mosquitto, Point, Subscriber, VictoriaMetrics};

/// Packets per second the feeder writes: tens per second, 25 ms apart (on a busy machine
/// some arrive in bursts; the gateway keeps them distinct at the database's precision).
const RATE: u32 = 40;
/// Readings in every fed packet (n1: t, h, g; sig: rssi, snr; sts: rx, err).
const PER_PACKET: usize = 7;
/// How long a server stays down in the outage tests: longer than `reconnect_max` = 1 s.
const OUTAGE: Duration = Duration::from_secs(3);
/// Longest wait for a gateway to exit after its input ended.
pub(crate) const EXIT: Duration = Duration::from_secs(30);
/// `n1.g` of packet 0.
const GAS_BASE: u64 = 100_000;

// ---------------------------------------------------------------------------------------------
// Feeding
// ---------------------------------------------------------------------------------------------

/// Firmware line `i` (a bare JSON line, as on the virtual COM port).
pub(crate) fn line(i: u64) -> String {
    format!(
        "{{\"ts\":{},\"id\":\"N2\",\"n1\":{{\"t\":20.{},\"h\":45.{},\"g\":{}}},\"sig\":{{\"rssi\":-40,\"snr\":10}},\"sts\":{{\"rx\":{i},\"err\":0}}}}\n",
        i * 500,
        i % 10,
        i % 7,
        GAS_BASE + i
    )
}

/// The readings of packets `packets`, per docs/ARCHITECTURE.md, "Decoding" (computed by `gateway::expected`).
pub(crate) fn readings_of(packets: impl IntoIterator<Item = u64>) -> Vec<Expected> {
    packets
        .into_iter()
        .flat_map(|i| expected(&line(i)).expect("telemetry line"))
        .collect()
}

/// A thread writing lines `first, first+1, ...` into the gateway's stdin at `rate` per
/// second. A line shorter than PIPE_BUF is written atomically, so "written" means the whole
/// line is in the pipe (not that the gateway accepted it).
pub(crate) struct Feeder {
    first: u64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<Option<ChildStdin>>>,
}

impl Feeder {
    pub(crate) fn start(mut stdin: ChildStdin, first: u64, rate: u32) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let period = Duration::from_secs(1) / rate;
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if stdin.write_all(line(first + n).as_bytes()).is_err() {
                        return None; // the gateway is gone (EPIPE)
                    }
                    n += 1;
                    written.store(n, Ordering::SeqCst);
                    let due = start + period * u32::try_from(n).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                Some(stdin)
            })
        };
        Feeder {
            first,
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Lines written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Stops writing; returns the indices written and stdin if the pipe is still open.
    pub(crate) fn stop(mut self) -> (std::ops::Range<u64>, Option<ChildStdin>) {
        self.stop.store(true, Ordering::SeqCst);
        let stdin = self
            .thread
            .take()
            .expect("feeder thread")
            .join()
            .expect("feeder thread panicked");
        (self.first..self.first + self.written(), stdin)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and config
// ---------------------------------------------------------------------------------------------

/// The database behind the InfluxDB sink.
pub(crate) enum Db {
    /// VictoriaMetrics through the v2 API.
    Vm(VictoriaMetrics),
    /// InfluxDB 1.x through the v1 API, database `telemetry`.
    Influx(InfluxDb1),
}

impl Db {
    pub(crate) fn vm() -> Db {
        Db::Vm(VictoriaMetrics::start())
    }

    pub(crate) fn influx() -> Db {
        let influx = InfluxDb1::start();
        influx.create_database("telemetry");
        Db::Influx(influx)
    }

    /// The `[influxdb]` section, with short batching and retry settings.
    pub(crate) fn section(&self) -> String {
        let api = match self {
            // VictoriaMetrics keeps milliseconds: so does the gateway's packet clock.
            Db::Vm(vm) => format!(
                "url = \"{}\"\napi = \"v2\"\norg = \"iiot\"\nbucket = \"telemetry\"\ntoken = \"t\"\nprecision = \"ms\"",
                vm.url()
            ),
            Db::Influx(i) => format!(
                "url = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"",
                i.url()
            ),
        };
        format!(
            "[influxdb]\n{api}\nflush_interval = \"100ms\"\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n"
        )
    }

    fn stop(&mut self) {
        match self {
            Db::Vm(vm) => vm.stop(),
            Db::Influx(i) => i.stop(),
        }
    }

    fn start_again(&mut self) {
        match self {
            Db::Vm(vm) => vm.start_again(),
            Db::Influx(i) => i.start_again(),
        }
    }

    /// Every stored `value` sample.
    pub(crate) async fn points(&self) -> Vec<Point> {
        match self {
            Db::Vm(vm) => vm
                .points()
                .await
                .into_iter()
                .filter(|p| p.field == "value")
                .collect(),
            Db::Influx(i) => i.points("telemetry").await,
        }
    }
}

/// Gateway options that differ between tests.
struct Opts<'a> {
    drain: &'a str,
    storage: &'a str,
    http: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            drain: "20s",
            storage: "",
            http: false,
        }
    }
}

/// A stdin gateway publishing to `mosquitto` and writing to `db`, with short backoffs.
fn config(dir: &Path, mosquitto: &Mosquitto, db: &Db, opts: &Opts<'_>) -> String {
    let http = if opts.http {
        "listen = \"127.0.0.1:0\""
    } else {
        "enabled = false"
    };
    format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"{}\"\n\n\
         [storage]\ndir = \"{}\"\n{}\n\n\
         [http]\n{http}\n\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"chaos-gateway\"\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\n{}",
        opts.drain,
        data_dir(dir).display(),
        opts.storage,
        mosquitto.url(),
        db.section()
    )
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// A persistent-session QoS 1 subscriber to every reading.
async fn watcher(mosquitto: &Mosquitto) -> Subscriber {
    Subscriber::connect(mosquitto.port, "chaos-watcher", "iiot/#", false).await
}

/// Starts the gateway and waits for its start-up checklist to reach the source, so the
/// feeder's lines are read as they come (not in a burst stamped within one millisecond).
pub(crate) async fn start_gateway(dir: &Path, config: &str) -> TestGateway {
    let gw = TestGateway::start(dir, config, Stdio::piped());
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    gw
}

/// Closes stdin and waits for a successful exit.
pub(crate) fn finish(gw: &mut TestGateway, stdin: Option<ChildStdin>) {
    drop(stdin);
    let status = gw.wait(EXIT);
    assert!(
        status.success(),
        "gateway exit {status}; log:\n{}",
        gw.log()
    );
}

pub(crate) async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The packets committed to the outbox in `data` (by their unique `n1.g`), in seq order;
/// checks that each is complete. Read-only: after a SIGKILL the WAL stays as the gateway
/// left it (a read-write connection would checkpoint it on close), so the next start meets
/// the same files a real restart does.
fn committed_packets(data: &Path) -> Vec<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open outbox");
    let mut stmt = conn
        .prepare(
            "SELECT value FROM readings WHERE node = 'node1' AND metric = 'gas_resistance' \
             ORDER BY seq",
        )
        .unwrap();
    let packets: Vec<u64> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|v| v.unwrap().parse::<u64>().unwrap() - GAS_BASE)
        .collect();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM readings WHERE unit IS NOT 'event'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rows as usize,
        packets.len() * PER_PACKET,
        "every committed packet is complete"
    );
    packets
}

/// The gateway's `/api/status` URL, from the start-up checklist line
/// `✓ dashboard  http://127.0.0.1:PORT`.
pub(crate) fn status_url(log: &str) -> String {
    let url = log
        .lines()
        .find(|l| l.contains("✓ dashboard"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no dashboard line in:\n{log}"));
    format!("{url}/api/status")
}

pub(crate) async fn api_status(url: &str) -> Value {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .map(|body| serde_json::from_str(&body).expect("status JSON"))
        .expect("status body")
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// (measurement, node, unit, value) of a stored point or an expected reading.
type Key = (String, String, Option<String>, String);

fn point_key(p: &Point) -> Key {
    (
        p.measurement.clone(),
        p.tag("node").unwrap_or_default().to_string(),
        p.tag("unit").map(str::to_string),
        format!("{}", p.value),
    )
}

fn expected_key(e: &Expected) -> Key {
    let value: f64 = e.value.parse().expect("numeric value");
    (
        e.metric.clone(),
        e.node.clone(),
        e.unit.clone(),
        format!("{value}"),
    )
}

/// Panics with a short diff unless the two multisets are equal.
fn assert_same<K: Ord + std::fmt::Debug>(
    got: &BTreeMap<K, usize>,
    want: &BTreeMap<K, usize>,
    what: &str,
) {
    if got == want {
        return;
    }
    let keys: BTreeSet<&K> = got.keys().chain(want.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| {
            format!(
                "{k:?}: got {}, want {}",
                got.get(k).unwrap_or(&0),
                want.get(k).unwrap_or(&0)
            )
        })
        .collect();
    let (g, w): (usize, usize) = (got.values().sum(), want.values().sum());
    panic!(
        "{what}: got {g}, want {w}; {} keys differ, first: {:#?}",
        diff.len(),
        &diff[..diff.len().min(20)]
    );
}

/// The database holds exactly `want`: each reading once. Returns the number of points.
pub(crate) async fn assert_db_exactly(db: &Db, want: &[Expected]) -> usize {
    let points = db.points().await;
    assert_same(
        &counts(points.iter().map(point_key)),
        &counts(want.iter().map(expected_key)),
        "points in the database",
    );
    points.len()
}

/// The subscriber received every reading of `want` at least once, and nothing else.
/// Returns (readings received, duplicates).
pub(crate) async fn assert_mqtt_at_least_once(
    sub: &Subscriber,
    want: &[Expected],
) -> (usize, usize) {
    let want = counts(want.iter().map(|e| (e.topic("iiot"), e.value.clone())));
    let readings = |msgs: &[crate::support::Msg]| -> BTreeMap<(String, String), usize> {
        counts(
            msgs.iter()
                .filter(|m| m.topic != "iiot/gateway/status")
                .map(|m| (m.topic.clone(), m.payload.clone())),
        )
    };
    let msgs = sub
        .wait_for(
            |m| {
                let got = readings(m);
                want.iter()
                    .all(|(k, n)| got.get(k).copied().unwrap_or(0) >= *n)
            },
            // Returns as soon as everything is there; the bound only matters when it is not
            // (a broker cluster re-electing its stream leaders after a node death can take
            // many seconds to hand a resumed session its queued messages).
            Duration::from_secs(60),
        )
        .await;
    let got = readings(&msgs);
    let unexpected: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(unexpected.is_empty(), "unexpected messages: {unexpected:?}");
    let received: usize = got.values().sum();
    let wanted: usize = want.values().sum();
    (received, received - wanted)
}

/// The two end checks of every test, and the `FAULT` line.
async fn assert_exact(name: &str, db: &Db, sub: &Subscriber, sent: &[Expected]) {
    let in_db = assert_db_exactly(db, sent).await;
    let (received, duplicates) = assert_mqtt_at_least_once(sub, sent).await;
    eprintln!(
        "FAULT {name}: sent={} db={in_db} mqtt_received={received} mqtt_duplicates={duplicates}",
        sent.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The broker goes away
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_down_longer_than_the_backoff_cap_loses_nothing() {
    let mut mosquitto = Mosquitto::start();
    let db = Db::vm();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_gateway(
        dir.path(),
        &config(dir.path(), &mosquitto, &db, &Opts::default()),
    )
    .await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(1500)).await;

    // Graceful stop: the persistent sessions are saved and come back with the broker.
    mosquitto.stop();
    sleep(OUTAGE).await;
    mosquitto.start_again();
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let log = gw.log();
    assert_eq!(
        log.matches("sink connection refused").count(),
        1,
        "one warning per state change, not per retry:\n{log}"
    );
    assert!(log.matches("sink connected").count() >= 2, "{log}");
    assert_exact("mosquitto_outage", &db, &sub, &readings_of(sent)).await;
}

// ---------------------------------------------------------------------------------------------
// 2. The database goes away
// ---------------------------------------------------------------------------------------------

/// Streams, stops the database for [`OUTAGE`], starts it again, streams on; checks exact
/// counts and prints the gateway's RSS at the start and end of the outage.
async fn database_outage(name: &str, mut db: Db) {
    let mosquitto = Mosquitto::start();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_gateway(
        dir.path(),
        &config(dir.path(), &mosquitto, &db, &Opts::default()),
    )
    .await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(1500)).await;

    db.stop();
    let rss_start = rss_kib(gw.pid());
    sleep(OUTAGE).await;
    let rss_end = rss_kib(gw.pid());
    db.start_again();
    eprintln!(
        "RSS {name}: outage start {rss_start} KiB, outage end {rss_end} KiB ({:+} KiB)",
        rss_end as i64 - rss_start as i64
    );
    assert!(
        rss_end < rss_start + 20 * 1024,
        "memory stays flat while the database is down: {rss_start} -> {rss_end} KiB"
    );
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let log = gw.log();
    assert_eq!(
        log.matches("sink unreachable").count(),
        1,
        "one warning per state change, not per retry:\n{log}"
    );
    assert_exact(name, &db, &sub, &readings_of(sent)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn victoriametrics_v2_down_and_back_holds_every_reading_once() {
    database_outage("victoriametrics_outage", Db::vm()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_v1_down_and_back_holds_every_reading_once() {
    database_outage("influxdb1_outage", Db::influx()).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Everything down, even at start
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn gateway_started_while_broker_and_database_are_down_delivers_when_they_return() {
    let mut mosquitto = Mosquitto::start();
    let mut db = Db::vm();
    // The persistent session exists before the broker goes down.
    let sub = watcher(&mosquitto).await;
    mosquitto.stop();
    db.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_gateway(
        dir.path(),
        &config(dir.path(), &mosquitto, &db, &Opts::default()),
    )
    .await;
    let log = gw.log();
    assert!(
        log.contains("✗ mqtt") && log.contains("✗ influxdb"),
        "the checklist says both are down:\n{log}"
    );
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(OUTAGE).await;
    mosquitto.start_again();
    db.start_again();
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let log = gw.log();
    for warning in ["sink connection refused", "sink unreachable"] {
        assert_eq!(log.matches(warning).count(), 1, "{warning}:\n{log}");
    }
    assert_exact("both_down_at_start", &db, &sub, &readings_of(sent)).await;
}

// ---------------------------------------------------------------------------------------------
// 4. The gateway is killed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_delivers_every_committed_reading() {
    let mosquitto = Mosquitto::start();
    // A batch VictoriaMetrics wrote may lose its 2xx to the SIGKILL and be sent again after
    // the restart: with 1 ms deduplication the resent point is one sample, as in InfluxDB.
    // Distinct packets never share a millisecond: the gateway writes at precision "ms" and
    // moves a packet stamped in the previous one's millisecond to the next.
    let db = Db::Vm(VictoriaMetrics::start_with_args(&[
        "-dedup.minScrapeInterval=1ms",
    ]));
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &mosquitto, &db, &Opts::default());

    let mut gw = start_gateway(dir.path(), &cfg).await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(2000)).await;
    gw.signal(libc::SIGKILL);
    let status = gw.wait(Duration::from_secs(5));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let (first_run, _) = feeder.stop();

    // Accepted = committed to the outbox; lines still in the pipe died with the process.
    let accepted = committed_packets(&data_dir(dir.path()));
    let k = accepted.len() as u64;
    assert_eq!(
        accepted,
        (0..k).collect::<Vec<_>>(),
        "the outbox holds a prefix of what was written"
    );
    assert!(
        k > 0 && k <= first_run.end,
        "{k} of {} lines",
        first_run.end
    );
    eprintln!(
        "SIGKILL: {} lines written, {k} committed, {} lost in the pipe",
        first_run.end,
        first_run.end - k
    );

    let mut gw = start_gateway(dir.path(), &cfg).await;
    let feeder = Feeder::start(gw.stdin(), first_run.end, RATE);
    sleep(Duration::from_millis(1500)).await;
    let (second_run, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let sent = readings_of((0..k).chain(second_run));
    assert_exact("gateway_sigkill", &db, &sub, &sent).await;
}

// ---------------------------------------------------------------------------------------------
// 5. SIGTERM with a backlog
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_backlog_exits_cleanly_and_the_next_start_delivers_the_rest_once() {
    let mosquitto = Mosquitto::start();
    let mut db = Db::influx();
    db.stop();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let drain = Duration::from_secs(2);
    let opts = Opts {
        drain: "2s",
        ..Opts::default()
    };
    let cfg = config(dir.path(), &mosquitto, &db, &opts);

    let mut gw = start_gateway(dir.path(), &cfg).await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(2000)).await;
    let term = Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw.wait(drain + Duration::from_secs(10));
    let took = term.elapsed();
    let (first_run, _) = feeder.stop();
    let log = gw.log();
    assert!(status.success(), "SIGTERM is a clean stop: {status}\n{log}");
    assert!(
        took < drain + Duration::from_secs(3),
        "exit within the drain timeout: {took:?}\n{log}"
    );
    let accepted = committed_packets(&data_dir(dir.path()));
    let k = accepted.len() as u64;
    assert_eq!(accepted, (0..k).collect::<Vec<_>>());
    assert!(k > 0 && k <= first_run.end);
    let backlog = k as usize * PER_PACKET;
    assert!(
        log.contains(&format!("{backlog} readings stay buffered")),
        "the database got nothing, so all {backlog} stay buffered:\n{log}"
    );
    eprintln!(
        "SIGTERM: exited 0 after {took:?} (drain timeout {drain:?}) with {backlog} readings buffered"
    );

    db.start_again();
    let mut gw = start_gateway(dir.path(), &cfg).await;
    assert!(
        gw.log().contains(&format!("({backlog} readings buffered)")),
        "{}",
        gw.log()
    );
    let feeder = Feeder::start(gw.stdin(), first_run.end, RATE);
    sleep(Duration::from_millis(1500)).await;
    let (second_run, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let sent = readings_of((0..k).chain(second_run));
    assert_exact("gateway_sigterm_backlog", &db, &sub, &sent).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The disk budget
// ---------------------------------------------------------------------------------------------

/// Packets per second while filling the 1 MiB budget (about 80 bytes per reading, 13,000
/// readings): fast enough to reach it in seconds, still a steady stream.
const FILL_RATE: u32 = 250;

#[tokio::test(flavor = "multi_thread")]
async fn outbox_full_drops_the_oldest_undelivered_readings_and_counts_them() {
    let mosquitto = Mosquitto::start();
    let mut db = Db::vm();
    db.stop();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        storage: "max_bytes = \"1MiB\"\non_full = \"drop_oldest\"",
        http: true,
        ..Opts::default()
    };
    let mut gw = start_gateway(dir.path(), &config(dir.path(), &mosquitto, &db, &opts)).await;
    let status = status_url(&gw.log());
    let feeder = Feeder::start(gw.stdin(), 0, FILL_RATE);
    let warning = "outbox full: dropped the oldest undelivered readings";
    gw.wait_log(warning, Duration::from_secs(25)).await;
    // Over the budget more than once: the warning still comes once (at most once a minute).
    sleep(Duration::from_secs(3)).await;
    let (sent, stdin) = feeder.stop();
    sleep(Duration::from_millis(500)).await;
    // The gateway keeps running (it answers) and counts what it dropped.
    let running = api_status(&status).await;
    let dropped = running["dropped_readings"]
        .as_u64()
        .expect("dropped_readings");
    let log = plain(&gw.log());
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    let first_drop: u64 = log
        .lines()
        .find(|l| l.contains(warning))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("dropped=N in the warning:\n{log}"));
    assert!(
        dropped > first_drop && first_drop > 0,
        "several drops ({first_drop} at the warning, {dropped} in all), one warning: {running}"
    );

    db.start_again();
    finish(&mut gw, stdin);
    let log = plain(&gw.log());
    assert!(
        log.contains(&format!("dropped_at_disk_budget={dropped}")),
        "no more drops once the database is back:\n{log}"
    );

    // The database holds exactly what was not dropped: the newest readings, each once.
    let packets = sent.end;
    let all = readings_of(sent.clone());
    let points = db.points().await;
    assert_eq!(
        all.len(),
        points.len() + dropped as usize,
        "sent = db + dropped"
    );
    let got = counts(points.iter().map(point_key));
    let gas: BTreeSet<u64> = points
        .iter()
        .filter(|p| p.measurement == "gas_resistance")
        .map(|p| p.value as u64 - GAS_BASE)
        .collect();
    let oldest = *gas.first().expect("some points kept");
    assert_eq!(
        gas,
        (oldest..packets).collect(),
        "the kept packets are the newest"
    );
    // Packets after `oldest` are complete; the rest (one cut packet) belongs to the two at
    // the cut.
    let full = counts(readings_of(oldest + 1..packets).iter().map(expected_key));
    let mut rest = got.clone();
    for (k, n) in &full {
        let have = rest.get_mut(k).unwrap_or_else(|| panic!("{k:?} missing"));
        assert!(*have >= *n, "{k:?}: {have} < {n}");
        *have -= n;
    }
    let edge = counts(
        readings_of(oldest.saturating_sub(1)..=oldest)
            .iter()
            .map(expected_key),
    );
    for (k, n) in rest.iter().filter(|(_, n)| **n > 0) {
        assert!(
            edge.get(k).copied().unwrap_or(0) >= *n,
            "{k:?} x{n} is neither in a newest packet nor at the cut"
        );
    }
    let (received, duplicates) = assert_mqtt_at_least_once(&sub, &all).await;
    eprintln!(
        "FAULT outbox_full_drop_oldest: sent={} db={} mqtt_received={received} mqtt_duplicates={duplicates} dropped={dropped}",
        all.len(),
        points.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_full_with_on_full_block_holds_the_source_back_and_drops_nothing() {
    let mosquitto = Mosquitto::start();
    let mut db = Db::vm();
    db.stop();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        storage: "max_bytes = \"1MiB\"\non_full = \"block\"",
        http: true,
        ..Opts::default()
    };
    let mut gw = start_gateway(dir.path(), &config(dir.path(), &mosquitto, &db, &opts)).await;
    let status = status_url(&gw.log());
    let feeder = Feeder::start(gw.stdin(), 0, FILL_RATE);
    gw.wait_log("accepting no more lines", Duration::from_secs(25))
        .await;
    // Held back: the gateway commits no more packets; once the source channel and the pipe
    // are full, the feeder's writes wait.
    let stalled = Instant::now();
    let written = loop {
        let before = feeder.written();
        sleep(Duration::from_millis(500)).await;
        if feeder.written() == before {
            break before;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(20),
            "the feeder was never held back:\n{}",
            gw.log()
        );
    };
    let held = api_status(&status).await["packets"].as_u64().unwrap();
    sleep(Duration::from_millis(1500)).await;
    let still = api_status(&status).await;
    assert_eq!(still["packets"].as_u64(), Some(held), "{still}");
    assert_eq!(feeder.written(), written, "the source is held back");
    assert_eq!(still["dropped_readings"].as_u64(), Some(0), "{still}");
    assert!(gw.log().matches("accepting no more lines").count() == 1);

    db.start_again();
    // The sinks catch up, the gateway accepts lines again and the feeder moves on.
    let moved = Instant::now();
    while feeder.written() <= written + RATE as u64 {
        assert!(
            moved.elapsed() < Duration::from_secs(20),
            "the source never resumed:\n{}",
            gw.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);
    let log = plain(&gw.log());
    assert!(log.contains("dropped_at_disk_budget=0"), "{log}");
    eprintln!("BLOCK: held at {held} packets while the database was down");
    assert_exact("outbox_full_block", &db, &sub, &readings_of(sent)).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Storage that cannot be used
// ---------------------------------------------------------------------------------------------

/// Runs the gateway once with `[storage] dir = storage` and no sinks; returns (exit code, log).
fn run_once(dir: &Path, storage: &Path, args: &[&str]) -> (Option<i32>, String) {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"stdin\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n",
            storage.display()
        ),
    )
    .unwrap();
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut gw = TestGateway::spawn(dir, &all, Stdio::null());
    let status = gw.wait(Duration::from_secs(20));
    (status.code(), gw.log())
}

/// A real outbox with rows, whose pages past the schema are overwritten with garbage.
fn damaged_outbox(storage: &Path) -> Vec<u8> {
    std::fs::create_dir_all(storage).unwrap();
    let path = storage.join("outbox.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,
               node TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT, value TEXT NOT NULL);
             CREATE INDEX readings_series ON readings (node, metric, ts);
             CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..5000 {
            tx.execute(
                "INSERT INTO readings (ts, node, metric, unit, value) VALUES (?1, 'node1', 'temperature', 'celsius', ?2)",
                rusqlite::params![i, format!("{i}.5")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 40 * 4096, "{}", bytes.len());
    for b in &mut bytes[8 * 4096..24 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_storage_is_a_clear_error_and_the_file_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();

    // The storage dir below a regular file (chmod does not stop root; this does).
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"someone's file").unwrap();
    let (code, log) = run_once(dir.path(), &file.join("data"), &[]);
    assert!(code.is_some_and(|c| c != 0), "{code:?}\n{log}");
    assert!(
        log.contains("cannot use storage dir") && log.contains("[storage] dir"),
        "{log}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"someone's file");

    // The database path is a directory.
    let storage = dir.path().join("dir-db");
    std::fs::create_dir_all(storage.join("outbox.db")).unwrap();
    let (code, log) = run_once(dir.path(), &storage, &[]);
    assert!(code.is_some_and(|c| c != 0), "{code:?}\n{log}");
    assert!(
        log.contains("cannot write the outbox") && log.contains("[storage] dir"),
        "{log}"
    );
    assert!(storage.join("outbox.db").is_dir());

    // Not a database at all, and a real one with damaged pages: both reported, untouched.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    let junk = b"this is not sqlite, but it is someone's data\n".repeat(500);
    std::fs::write(garbage.join("outbox.db"), &junk).unwrap();
    let damaged = dir.path().join("damaged");
    let damaged_bytes = damaged_outbox(&damaged);
    for (storage, bytes) in [(&garbage, &junk), (&damaged, &damaged_bytes)] {
        let (code, log) = run_once(dir.path(), storage, &[]);
        assert!(code.is_some_and(|c| c != 0), "{code:?}\n{log}");
        assert!(
            log.contains("is not a valid outbox database")
                && log.contains("left untouched")
                && log.contains("--move-corrupt-outbox"),
            "{log}"
        );
        assert_eq!(
            &std::fs::read(storage.join("outbox.db")).unwrap(),
            bytes,
            "{}: the file is untouched",
            storage.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn move_corrupt_outbox_renames_the_file_aside_and_the_gateway_runs() {
    let mosquitto = Mosquitto::start();
    let db = Db::vm();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let bytes = damaged_outbox(&data);
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        config(dir.path(), &mosquitto, &db, &Opts::default()),
    )
    .unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut gw = TestGateway::spawn(
        dir.path(),
        &[
            "--config",
            cfg_path.to_str().unwrap(),
            "--move-corrupt-outbox",
        ],
        Stdio::piped(),
    );
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let aside: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("outbox.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
    let stamp: u64 = name["outbox.db.corrupt-".len()..]
        .parse()
        .unwrap_or_else(|_| panic!("unix time suffix: {name}"));
    assert!(stamp >= before && stamp <= before + 60, "{name}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bytes,
        "kept byte for byte"
    );
    assert!(
        gw.log().contains("corrupt outbox moved aside"),
        "{}",
        gw.log()
    );
    assert_exact("corrupt_outbox_moved_aside", &db, &sub, &readings_of(sent)).await;
}

// ---------------------------------------------------------------------------------------------
// Connection behaviour while both servers are dead
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_while_both_servers_are_dead_follow_the_backoff_and_warn_once() {
    let mut mosquitto = Mosquitto::start();
    let mut db = Db::vm();
    let sub = watcher(&mosquitto).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        config(dir.path(), &mosquitto, &db, &Opts::default()),
    )
    .unwrap();
    let mut gw = TestGateway::spawn_logging(
        dir.path(),
        &["--config", cfg_path.to_str().unwrap()],
        Stdio::piped(),
        "warn,iiot_gateway=debug",
    );
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_millis(1500)).await;

    mosquitto.stop();
    db.stop();
    let window = Duration::from_secs(6);
    let attempts = |log: &str| {
        (
            log.matches("mqtt reconnect scheduled").count(),
            log.matches("influxdb retry scheduled").count(),
        )
    };
    let (mqtt_0, influx_0) = attempts(&gw.log());
    sleep(window).await;
    let (mqtt_1, influx_1) = attempts(&gw.log());
    mosquitto.start_again();
    db.start_again();
    let (mqtt, influx) = (mqtt_1 - mqtt_0, influx_1 - influx_0);
    eprintln!(
        "RECONNECTS in {window:?} dead (reconnect/retry 100ms..1s): mqtt={mqtt} influxdb={influx}"
    );
    // Delays are drawn from [d/2, d] with d doubling from 100 ms to the 1 s cap: in 6 s that
    // is at least 6 attempts and at most about 15.
    for (sink, n) in [("mqtt", mqtt), ("influxdb", influx)] {
        assert!(
            (4..20).contains(&n),
            "{sink}: {n} attempts in {window:?}\n{}",
            gw.log()
        );
    }
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let log = gw.log();
    for warning in ["sink connection refused", "sink unreachable"] {
        assert_eq!(
            log.matches(warning).count(),
            1,
            "one warning per state change ({warning}):\n{log}"
        );
    }
    // Per sink, the warnings of one outage are its state changes (e.g. connection lost, then
    // refused), never a repeat of the same state.
    let log = plain(&log);
    for sink in ["sink=\"mqtt\"", "sink=\"influxdb\""] {
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("retrying with backoff") && l.contains(sink))
            .filter_map(|l| l.split(';').next()?.split(" WARN ").nth(1))
            .collect();
        assert!(
            (1..=2).contains(&warnings.len()) && warnings.windows(2).all(|w| w[0] != w[1]),
            "{sink}: {warnings:#?}"
        );
    }
    assert_exact("both_dead_window", &db, &sub, &readings_of(sent)).await;
}
