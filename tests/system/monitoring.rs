//! Monitoring: `/metrics`, `/healthz` and `/readyz` of the real gateway binary, against a real
//! Mosquitto, checked by the real Prometheus tools (Debian package `prometheus`):
//! - `promtool check metrics` accepts the exposition and the counters match the fixture;
//! - a Prometheus server started here scrapes the gateway and PromQL sees the same counts;
//! - `/readyz` turns 503 naming the MQTT sink while the broker is down, and 200 again after.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gateway::{dashboard_url, expected_packets, fixture, TestGateway};
use crate::support::{free_port, http, unique_suffix, wait_until, Mosquitto};

/// What installs `promtool` and `prometheus`.
const PROMETHEUS_HINT: &str = "apt-get install -y prometheus";
/// Longest wait for the gateway to deliver the fixture, Prometheus to start or scrape, or a
/// readiness change.
const WAIT: Duration = Duration::from_secs(30);
/// Cut lines longer than this (so a test line can be "too long").
const MAX_LINE: usize = 4096;

/// Lines of each unusable kind, appended to the fixture; their expected decode error reason.
fn bad_lines() -> Vec<(String, &'static str)> {
    vec![
        (
            "JSON sent via VCP: {\"n1\":{\"t\":2".to_string(),
            "invalid_json",
        ),
        ("JSON sent via VCP: [1,2,3]".to_string(), "not_object"),
        ("{\"id\":\"N2\",\"ts\":5}".to_string(), "no_readings"),
        ("{\"n1\":{\"t\":\"hot\"}}".to_string(), "field_rejected"),
        (
            format!(
                "{{\"n1\":{{\"t\":1,\"pad\":\"{}\"}}}}",
                "x".repeat(MAX_LINE)
            ),
            "line_too_long",
        ),
    ]
}

/// A gateway reading stdin (kept open: the source keeps running), publishing to `mosquitto`,
/// serving HTTP on a free port.
struct Running {
    gw: TestGateway,
    stdin: Option<ChildStdin>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(mosquitto: &Mosquitto, ready_max_backlog_age: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[source]\nkind = \"stdin\"\nmax_line_length = {MAX_LINE}\ndrain_timeout = \"10s\"\n\n\
             [storage]\ndir = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\nready_max_backlog_age = \"{ready_max_backlog_age}\"\n\n\
             [mqtt]\nbroker_url = \"{}\"\nclient_id = \"monitoring-{}\"\n\
             reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n",
            dir.path().join("data").display(),
            mosquitto.url(),
            unique_suffix(),
        );
        let mut gw = TestGateway::start(dir.path(), &config, Stdio::piped());
        gw.wait_log("✓ source", WAIT).await;
        let url = dashboard_url(&gw.log());
        let stdin = Some(gw.stdin());
        Running {
            gw,
            stdin,
            url,
            _dir: dir,
        }
    }

    fn feed(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("feed stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes stdin and expects a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.gw.wait(WAIT);
        assert!(status.success(), "exit {status}; log:\n{}", self.gw.log());
    }

    async fn metrics(&self) -> String {
        let resp = http()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        resp.text().await.expect("metrics body")
    }

    /// (status, JSON) of `path`.
    async fn json(&self, path: &str) -> (u16, Value) {
        let resp = http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, json)
    }
}

/// The value of the sample `name_and_labels` (exactly as exposed, e.g.
/// `iiot_sink_readings_delivered_total{sink="mqtt"}`), if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name_and_labels).then(|| value.parse().ok())?
    })
}

fn require(text: &str, name_and_labels: &str) -> f64 {
    sample(text, name_and_labels)
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
}

/// A Prometheus tool's path, or a panic naming the package.
fn prometheus_tool(name: &str) -> PathBuf {
    let default = Path::new("/usr/bin").join(name);
    if default.is_file() {
        return default;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` not found; the monitoring tests need it: {PROMETHEUS_HINT}")
        })
}

/// The fixture with one line of each unusable kind; the readings it must commit.
fn input() -> (String, usize, usize) {
    let text = fixture("probe-rs-session.log");
    let packets = expected_packets(&text);
    let readings = packets.iter().map(Vec::len).sum();
    let mut input = text.clone();
    if !input.ends_with('\n') {
        input.push('\n');
    }
    for (line, _) in bad_lines() {
        input.push_str(&line);
        input.push('\n');
    }
    (input, packets.len(), readings)
}

/// Feeds the fixture and waits until MQTT confirmed every reading; returns the exposition.
async fn run_fixture(gw: &mut Running) -> (String, usize, usize) {
    let (input, packets, readings) = input();
    gw.feed(&input);
    let deadline = Instant::now() + WAIT;
    loop {
        let text = gw.metrics().await;
        let committed = sample(&text, "iiot_readings_committed_total").unwrap_or(0.0);
        let confirmed = sample(
            &text,
            "iiot_sink_delivery_latency_seconds_count{sink=\"mqtt\"}",
        )
        .unwrap_or(0.0);
        if committed as usize >= readings && confirmed as usize >= readings {
            return (text, packets, readings);
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not commit and deliver {readings} readings within {WAIT:?}:\n{text}\nlog:\n{}",
            gw.gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_the_fixture_exactly() {
    let promtool = prometheus_tool("promtool");
    let mosquitto = Mosquitto::start();
    let mut gw = Running::start(&mosquitto, "60s").await;
    let (text, packets, readings) = run_fixture(&mut gw).await;

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = bad_lines();
    let lines = input().0.lines().count();
    assert_eq!(require(&text, "iiot_lines_read_total") as usize, lines);
    assert_eq!(
        require(&text, "iiot_packets_decoded_total") as usize,
        packets
    );
    assert_eq!(
        require(&text, "iiot_readings_committed_total") as usize,
        readings
    );
    for (_, reason) in &bad {
        assert_eq!(
            require(
                &text,
                &format!("iiot_decode_errors_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(require(&text, "iiot_lines_cut_total"), 1.0);
    // The field_rejected line had no usable field at all: not a packet with dropped fields.
    assert_eq!(require(&text, "iiot_decode_rejected_fields_total"), 0.0);
    assert_eq!(require(&text, "iiot_readings_dropped_total"), 0.0);
    // Every reading was published once and confirmed once; nothing failed or went again.
    let mqtt = "{sink=\"mqtt\"}";
    assert_eq!(
        require(
            &text,
            &format!("iiot_sink_delivery_latency_seconds_count{mqtt}")
        ) as usize,
        readings
    );
    // Readings only: the gateway's own events (MQTT does not carry them) are not readings.
    assert_eq!(
        require(&text, &format!("iiot_sink_readings_delivered_total{mqtt}")) as usize,
        readings
    );
    let (_, status) = gw.json("/api/status").await;
    assert_eq!(
        status["sinks"]["mqtt"]["delivered"], readings as u64,
        "{status}"
    );
    assert_eq!(status["sinks"]["mqtt"]["delivered_events"], 0, "{status}");
    assert_eq!(
        require(&text, &format!("iiot_sink_delivery_failures_total{mqtt}")),
        0.0
    );
    assert_eq!(
        require(&text, &format!("iiot_sink_readings_retried_total{mqtt}")),
        0.0
    );
    assert_eq!(
        require(&text, &format!("iiot_sink_reconnects_total{mqtt}")),
        0.0
    );
    assert_eq!(require(&text, &format!("iiot_sink_connected{mqtt}")), 1.0);
    assert_eq!(
        require(&text, &format!("iiot_outbox_backlog_readings{mqtt}")),
        0.0
    );
    assert_eq!(require(&text, "iiot_source_running{kind=\"stdin\"}"), 1.0);
    assert!(require(&text, "iiot_outbox_bytes") > 0.0);
    // Process figures of the gateway itself.
    assert!(require(&text, "process_resident_memory_bytes") > 1e6);
    assert!(require(&text, "process_open_fds") > 3.0);
    let started = require(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - started).abs() < 120.0, "start {started}, now {now}");
    gw.finish();
}

/// A Prometheus server on a free port, scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = prometheus_tool("prometheus");
        let mut dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: iiot\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        for attempt in 1..=3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; the server dies with the test thread.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start prometheus: {e}; {PROMETHEUS_HINT}"));
            let mut p = Prometheus { child, port, dir };
            match p.wait_ready() {
                Ok(()) => return p,
                Err(why) if attempt < 3 => {
                    eprintln!("[monitoring] prometheus on port {port}: {why}; retrying");
                    dir = p.take_dir();
                }
                Err(why) => panic!("prometheus did not start: {why}\n{}", p.log()),
            }
        }
        unreachable!()
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited: {status}"));
            }
            if ready_probe(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the instant PromQL query `q`, when it returned exactly one sample.
    async fn query(&self, q: &str) -> Option<f64> {
        let resp = http()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let json: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        let result = json["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}

/// A blocking `GET /-/ready` of the Prometheus on `port` (no runtime needed while starting).
fn ready_probe(port: u16) -> bool {
    use std::io::Read as _;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_gateway_and_promql_sees_the_fixture_counts() {
    let mosquitto = Mosquitto::start();
    let mut gw = Running::start(&mosquitto, "60s").await;
    let target = gw.url.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target);
    let (_, packets, readings) = run_fixture(&mut gw).await;

    let want = [
        ("up{job=\"iiot\"}".to_string(), 1.0),
        (
            "iiot_readings_committed_total{job=\"iiot\"}".to_string(),
            readings as f64,
        ),
        (
            "iiot_packets_decoded_total{job=\"iiot\"}".to_string(),
            packets as f64,
        ),
        (
            "sum(iiot_decode_errors_total{job=\"iiot\"})".to_string(),
            bad_lines().len() as f64,
        ),
        (
            "iiot_sink_delivery_latency_seconds_count{job=\"iiot\",sink=\"mqtt\"}".to_string(),
            readings as f64,
        ),
    ];
    for (q, value) in &want {
        let (q, value) = (q.clone(), *value);
        wait_until(&format!("PromQL {q} == {value}"), WAIT, || {
            let q = q.clone();
            let p = &prometheus;
            async move { p.query(&q).await == Some(value) }
        })
        .await;
    }
    // The histogram is usable as one: a quantile over it is a number of seconds.
    let p99 = prometheus
        .query("histogram_quantile(0.99, sum by (le) (iiot_sink_delivery_latency_seconds_bucket{job=\"iiot\"}))")
        .await
        .expect("a p99 latency");
    assert!(p99.is_finite() && p99 > 0.0 && p99 <= 60.0, "p99 {p99}");
    gw.finish();
}

/// Polls `/readyz` until it answers `want`; returns its JSON.
async fn wait_readyz(gw: &Running, want: u16, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, json) = gw.json("/readyz").await;
        if status == want {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not {want} ({what}) within {WAIT:?}; last {status} {json:#}\nlog:\n{}",
            gw.gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_naming_the_mqtt_sink_while_the_broker_is_down_and_recovers() {
    let mut mosquitto = Mosquitto::start();
    let mut gw = Running::start(&mosquitto, "2s").await;
    gw.feed(&fixture("vcp-serial.jsonl"));

    let up = wait_readyz(&gw, 200, "broker up").await;
    assert_eq!(up["ready"], true, "{up:#}");
    assert_eq!(up["source"]["kind"], "stdin");
    assert_eq!(up["source"]["running"], true);
    assert_eq!(up["sinks"]["mqtt"]["connected"], true, "{up:#}");
    assert_eq!(up["failing"], serde_json::json!([]));

    mosquitto.stop();
    let down = wait_readyz(&gw, 503, "broker stopped").await;
    assert_eq!(down["ready"], false);
    assert_eq!(down["failing"], serde_json::json!(["mqtt"]), "{down:#}");
    assert_eq!(down["sinks"]["mqtt"]["connected"], false);
    assert!(
        down["sinks"]["mqtt"]["last_error"].is_string(),
        "the error is shown: {down:#}"
    );
    // Liveness is not readiness: the process still answers 200.
    let (status, alive) = gw.json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(alive["status"], "ok");
    assert_eq!(alive["sinks"]["mqtt"]["connected"], false);

    // Readings wait in the outbox; past `ready_max_backlog_age` (2 s) that is a problem too.
    gw.feed(&fixture("vcp-serial.jsonl"));
    wait_until("the backlog age to be reported", WAIT, || async {
        let (_, json) = gw.json("/readyz").await;
        json["problems"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.starts_with("mqtt: oldest undelivered reading"))
            })
        })
    })
    .await;
    let (_, json) = gw.json("/readyz").await;
    assert!(
        json["sinks"]["mqtt"]["backlog_readings"]
            .as_i64()
            .unwrap_or(0)
            > 0,
        "{json:#}"
    );
    assert!(
        json["sinks"]["mqtt"]["oldest_undelivered_age_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            >= 2.0,
        "{json:#}"
    );

    mosquitto.start_again();
    let back = wait_readyz(&gw, 200, "broker back").await;
    assert_eq!(back["sinks"]["mqtt"]["connected"], true, "{back:#}");
    assert_eq!(back["sinks"]["mqtt"]["backlog_readings"], 0, "{back:#}");
    let metrics = gw.metrics().await;
    assert!(require(&metrics, "iiot_sink_reconnects_total{sink=\"mqtt\"}") >= 1.0);
    assert!(require(&metrics, "iiot_sink_delivery_failures_total{sink=\"mqtt\"}") >= 1.0);
    gw.finish();
}
