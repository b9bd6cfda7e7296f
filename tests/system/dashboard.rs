//! The built-in dashboard in a real headless Chromium, driven through chromedriver's WebDriver
//! HTTP API: both pages render every panel of `iiot_gateway::dashboards::panels::DASHBOARDS` from the
//! history the gateway stored, every node shows with its online/offline state, a line
//! written to the gateway's stdin shows on the open page within 2 s (Server-Sent Events, no
//! reload), and a PNG screenshot of each page lands in `target/screenshots/`.
//!
//! Requires the Debian packages `chromium chromium-driver` (a missing one fails the test with
//! the install command; it is never skipped).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use iiot_gateway::dashboards::panels::{self, PER_STEPS, TEMPERATURE_STEPS};
use serde_json::{json, Value};

use crate::gateway::TestGateway;
use crate::support::{free_port, http, wait_until};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";
/// How long a pushed value may take to show on the open page.
const LIVE_WITHIN: Duration = Duration::from_secs(2);
/// Page loads, chart draws.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
const WINDOW_WIDTH: u64 = 1440;

/// A binary from a Debian package: its usual path or `$PATH`; a panic with the install
/// command when missing.
fn require(name: &str, usual: &str) -> PathBuf {
    if Path::new(usual).is_file() {
        return PathBuf::from(usual);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: the dashboard test runs a real headless Chromium; install it with: {INSTALL}")
        })
}

/// A headless Chromium behind chromedriver, one WebDriver session. Dropping it ends the
/// session and kills chromedriver's process group (Chromium included).
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = require("chromium", "/usr/bin/chromium");
        let chromedriver = require("chromedriver", "/usr/bin/chromedriver");
        let port = free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl in the child before exec; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} ({INSTALL})", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let status = format!("{base}/status");
        wait_until("chromedriver ready", Duration::from_secs(20), || async {
            let Ok(resp) = http().get(&status).send().await else {
                return false;
            };
            let body = resp.text().await.unwrap_or_default();
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                    format!("--window-size={WINDOW_WIDTH},1000"),
                ],
            },
        }}});
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`, panics on a WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => http().get(&url),
            "DELETE" => http().delete(&url),
            _ => http()
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let ok = resp.status().is_success();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {text}"));
        assert!(ok, "WebDriver {method} {path} failed: {text}");
        v["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls [`PAGE_STATE`] until `done` accepts it; panics with the last state after `timeout`.
    async fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.eval(PAGE_STATE).await;
            if done(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; page state:\n{state:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resizes the window to the page's content and saves a PNG of it.
    async fn screenshot(&self, path: &Path) {
        let size = self
            .eval(
                "const grid = document.getElementById('grid').getBoundingClientRect();
                 const footer = document.querySelector('footer').getBoundingClientRect();
                 return [Math.ceil(grid.bottom + window.scrollY + footer.height + 8),
                         window.outerHeight - window.innerHeight]",
            )
            .await;
        let content = size[0].as_u64().unwrap_or(1000);
        let chrome = size[1].as_u64().unwrap_or(0);
        self.call(
            "POST",
            &self.at("/window/rect"),
            Some(json!({"width": WINDOW_WIDTH, "height": content + chrome})),
        )
        .await;
        // Let the charts follow the resize.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let png = base64_decode(
            self.call("GET", &self.at("/screenshot"), None)
                .await
                .as_str()
                .expect("screenshot is base64"),
        );
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("screenshot dir");
        std::fs::write(path, &png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium quits), without a runtime: a plain HTTP request.
        if !self.session.is_empty() {
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        // SAFETY: kill(2) on the process group this test created for chromedriver.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// Everything the assertions read from the page, in one round trip: the data attributes of
/// the body and of each panel, the nodes shown, and per chart the pixels of each series'
/// colour on its canvas (proof that the lines were drawn, not just that data arrived).
const PAGE_STATE: &str = r#"
const panels = [...document.querySelectorAll('.panel')].map((p) => {
  const d = { ...p.dataset, text: p.innerText };
  const canvas = p.querySelector('canvas');
  if (canvas) {
    d.canvas = [canvas.width, canvas.height];
    const colors = Object.entries(JSON.parse(p.dataset.colors || '{}'))
      .map(([label, hex]) => [label, [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16))]);
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const counts = Object.fromEntries(colors.map(([l]) => [l, 0]));
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] < 200) continue;
      for (const [l, [r, g, b]] of colors) {
        if (Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b) < 40) counts[l] += 1;
      }
    }
    d.pixels = counts;
  }
  return d;
});
return {
  ready: document.body.dataset.ready,
  live: document.body.dataset.live,
  dashboard: document.body.dataset.dashboard || null,
  events: Number(document.body.dataset.events || 0),
  error: document.getElementById('error').textContent,
  title: document.title,
  nodes: [...document.querySelectorAll('.node')].map((n) => ({ node: n.dataset.node, online: n.dataset.online, text: n.innerText })),
  panels,
  marker: window.__testMarker || null,
};
"#;

/// Standard base64 (the WebDriver screenshot), padding and whitespace ignored.
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// One firmware line (the JSON the Node 2 firmware writes).
#[derive(Clone)]
struct Packet {
    n1: (String, String, u32),
    n2: (String, String),
    n3: Option<(String, String)>,
    n4: Option<(String, String)>,
    rssi: i32,
    snr: i32,
    rx: u32,
    err: u32,
}

impl Packet {
    fn line(&self, ts_ms: u32) -> String {
        let mut s = format!(
            r#"{{"ts":{ts_ms},"id":"N2","n1":{{"t":{},"h":{},"g":{}}},"n2":{{"t":{},"h":{}}}"#,
            self.n1.0, self.n1.1, self.n1.2, self.n2.0, self.n2.1
        );
        if let Some((t, h)) = &self.n3 {
            let _ = write!(s, r#","n3":{{"t":{t},"h":{h}}}"#);
        }
        if let Some((t, h)) = &self.n4 {
            let _ = write!(s, r#","n4":{{"t":{t},"h":{h}}}"#);
        }
        let _ = write!(
            s,
            r#","sig":{{"rssi":{},"snr":{}}},"sts":{{"rx":{},"err":{}}}}}"#,
            self.rssi, self.snr, self.rx, self.err
        );
        s
    }
}

/// Packets of the recorded history (10 s apart): node3 joins at packet 20, node4 reports only
/// in the first five (it is offline by now), and Node 2 reboots at packet 18, so its
/// counters start again from zero.
fn history() -> Vec<Packet> {
    (0..30u32)
        .map(|i| {
            let f = f64::from(i);
            let (rx, err) = if i < 18 {
                (1000 + 9 * i, 40 + i)
            } else {
                (9 * (i - 17), (i - 17) / 2)
            };
            Packet {
                n1: (
                    format!("{:.1}", 24.0 + f * 0.1),
                    format!("{:.1}", 50.0 + f64::from(i % 5)),
                    80_000 + 100 * i,
                ),
                n2: (
                    format!("{:.1}", 21.0 + f64::from(i % 3) * 0.5),
                    format!("{:.1}", 60.0 - f * 0.2),
                ),
                n3: (i >= 20).then(|| (format!("{:.1}", 18.0 + (f - 20.0) * 0.2), "65.0".into())),
                n4: (i < 5).then(|| ("30.0".into(), "40.0".into())),
                rssi: -60 + (i % 7) as i32,
                snr: 7 + (i % 4) as i32,
                rx,
                err,
            }
        })
        .collect()
}

fn panel(state: &Value, id: u32) -> &Value {
    state["panels"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["panelId"].as_str().and_then(|s| s.parse().ok()) == Some(id))
        })
        .unwrap_or_else(|| panic!("panel {id} not on the page: {state:#}"))
}

fn json_attr(p: &Value, key: &str) -> Value {
    serde_json::from_str(p[key].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
}

/// Every chart has a canvas, its series named `labels`, and each series' colour drawn.
fn assert_chart(state: &Value, id: u32, labels: &[&str]) {
    let p = panel(state, id);
    let series: Vec<&str> = p["series"].as_str().unwrap_or("").split(',').collect();
    assert_eq!(series, labels, "panel {id} series: {p:#}");
    assert!(
        p["canvas"][0].as_u64().unwrap_or(0) > 200 && p["canvas"][1].as_u64().unwrap_or(0) > 100,
        "panel {id} has a chart canvas: {p:#}"
    );
    assert!(p["drawn"].as_str().is_some(), "panel {id} was drawn: {p:#}");
    // Every y label fits its axis: none is cut at the left (a cut `-47.5 dBm` reads `47.5`).
    assert_eq!(
        p["yFits"].as_str(),
        Some("true"),
        "panel {id}'s y labels are cut: {p:#}"
    );
    for label in labels {
        let pixels = p["pixels"][label].as_u64().unwrap_or(0);
        assert!(
            pixels >= 30,
            "panel {id}: series {label} has {pixels} pixels of its colour on the canvas: {p:#}"
        );
    }
}

fn assert_stat(state: &Value, id: u32, text: &str, color: &str) {
    let p = panel(state, id);
    assert_eq!(
        (p["value"].as_str(), p["color"].as_str()),
        (Some(text), Some(color)),
        "stat panel {id}: {p:#}"
    );
    assert!(p["text"].as_str().unwrap_or("").contains(text), "{p:#}");
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

fn write_line(stdin: &mut std::process::ChildStdin, line: &str) {
    writeln!(stdin, "{line}").expect("write to the gateway's stdin");
    stdin.flush().expect("flush stdin");
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_pages_render_every_panel_in_chromium_and_follow_new_lines_live() {
    let started = Instant::now();
    // Fail first, and clearly, when the browser is missing.
    require("chromium", "/usr/bin/chromium");
    require("chromedriver", "/usr/bin/chromedriver");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // 1. A recorded history, replayed with its recorded times (the last packet 12 s ago).
    let now = SystemTime::now();
    let packets = history();
    let mut recording = String::new();
    for (i, p) in packets.iter().enumerate() {
        let age = Duration::from_secs(12 + 10 * (packets.len() - 1 - i) as u64);
        let stamp = humantime::format_rfc3339_nanos(now - age);
        let _ = writeln!(recording, "{stamp} {}", p.line(500 * i as u32));
    }
    let recorded = dir.path().join("history.log");
    std::fs::write(&recorded, recording).unwrap();
    let replay = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\nspeed = 0\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n",
        recorded.display(),
        data.display()
    );
    let mut gw = TestGateway::start(dir.path(), &replay, Stdio::null());
    assert!(gw.wait(Duration::from_secs(30)).success(), "{}", gw.log());
    drop(gw);

    // 2. The gateway live on stdin, the dashboard on a free port.
    let live = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        data.display()
    );
    let mut gw = TestGateway::start(dir.path(), &live, Stdio::piped());
    gw.wait_log("✓ dashboard", Duration::from_secs(20)).await;
    let url = gw
        .log()
        .lines()
        .find(|l| l.contains("✓ dashboard"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no dashboard URL in the checklist:\n{}", gw.log()));
    let mut stdin = gw.stdin();
    let last = packets.last().unwrap().clone();
    let mut a = Packet {
        n1: ("31.4".into(), "45.2".into(), 81_234),
        n2: ("22.8".into(), "78.5".into()),
        n3: Some(("19.5".into(), "60.1".into())),
        n4: None,
        rssi: -48,
        snr: 12,
        rx: last.rx + 9,
        err: last.err + 1,
    };
    write_line(&mut stdin, &a.line(20_000));
    let latest_url = format!("{url}/api/latest");
    wait_until("line A committed", Duration::from_secs(10), || async {
        let body = http()
            .get(&latest_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.contains("\"31.4\"")
    })
    .await;

    let browser = Browser::start().await;

    // 3. Environmental sensors: 7 panels from the definitions, values, colours, charts, nodes.
    browser.goto(&format!("{url}/?range=15m")).await;
    let state = browser
        .wait_state("the environment page", PAGE_TIMEOUT, |s| {
            s["ready"] == "true"
                && s["live"] == "live"
                && s["panels"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .all(|p| p["kind"] == "stat" || p["drawn"].is_string())
                })
        })
        .await;
    assert_eq!(state["error"], "", "{state:#}");
    assert_eq!(state["dashboard"], "iiot-environment");
    let ids: Vec<u32> = panels::ENVIRONMENT.panels.iter().map(|p| p.id).collect();
    let shown: Vec<u32> = state["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["panelId"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(shown, ids, "every panel of the definition, in order");
    assert_stat(&state, 1, "31.4", "yellow");
    assert_stat(&state, 2, "45.2", "green");
    assert_stat(&state, 3, "22.8", "green");
    assert_stat(&state, 4, "78.5", "yellow");
    assert_chart(&state, 5, &["node1", "node2", "node3", "node4"]);
    assert_chart(&state, 6, &["node1", "node2", "node3", "node4"]);
    assert_chart(&state, 7, &["node1"]);
    let temps = json_attr(panel(&state, 5), "last");
    assert_eq!(temps["node1"], 31.4, "{temps}");
    assert_eq!(temps["node3"], 19.5, "{temps}");
    assert_eq!(temps["node4"], 30.0, "{temps}");
    assert!(
        panel(&state, 5)["points"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 30 + 30 + 11 + 5,
        "the history is drawn, not just the newest values: {:#}",
        panel(&state, 5)
    );
    let nodes: Vec<(String, String)> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let online = n["online"].as_str().unwrap().to_string();
            let text = n["text"].as_str().unwrap().to_lowercase();
            let word = if online == "true" {
                "online"
            } else {
                "offline"
            };
            assert!(text.contains(word), "the state is written on the page: {n}");
            (n["node"].as_str().unwrap().to_string(), online)
        })
        .collect();
    let expect_nodes: Vec<(String, String)> = [
        ("node1", "true"),
        ("node2", "true"),
        ("node3", "true"),
        ("node4", "false"),
        ("signal", "true"),
        ("stats", "true"),
    ]
    .iter()
    .map(|(n, o)| (n.to_string(), o.to_string()))
    .collect();
    assert_eq!(
        nodes, expect_nodes,
        "every node that reports, with its state"
    );

    // 4. A new line shows within 2 s, pushed to the open page (no reload: the marker stays).
    browser
        .eval("window.__testMarker = 'kept'; return true")
        .await;
    let events_before = state["events"].as_u64().unwrap_or(0);
    let b = Packet {
        n1: ("36.2".into(), "45.9".into(), 81_300),
        rssi: -47,
        rx: a.rx + 9,
        ..a.clone()
    };
    let sent = Instant::now();
    write_line(&mut stdin, &b.line(30_000));
    let state = browser
        .wait_state("36.2 on the open page", LIVE_WITHIN, |s| {
            panel(s, 1)["value"] == "36.2"
        })
        .await;
    let latency = sent.elapsed();
    println!("live update shown {latency:?} after the line was written");
    assert_eq!(state["marker"], "kept", "the page was not reloaded");
    assert!(state["events"].as_u64().unwrap_or(0) > events_before);
    assert_eq!(
        panels::color(TEMPERATURE_STEPS, 36.2),
        Some("red"),
        "the test's own expectation"
    );
    assert_stat(&state, 1, "36.2", "red");
    let state = browser
        .wait_state("the chart follows", LIVE_WITHIN, |s| {
            json_attr(panel(s, 5), "last")["node1"] == 36.2
        })
        .await;
    browser
        .screenshot(&screenshots_dir().join("dashboard-environment.png"))
        .await;
    drop(state);

    // 5. Signal quality & statistics: 4 panels; the packet error rate over the range is
    // computed across the reboot.
    browser
        .goto(&format!("{url}/d/iiot-signal?range=15m"))
        .await;
    let state = browser
        .wait_state("the signal page", PAGE_TIMEOUT, |s| {
            s["ready"] == "true"
                && s["live"] == "live"
                && s["dashboard"] == "iiot-signal"
                && s["panels"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .all(|p| p["kind"] == "stat" || p["drawn"].is_string())
                })
        })
        .await;
    assert_eq!(state["error"], "", "{state:#}");
    let ids: Vec<u32> = panels::SIGNAL.panels.iter().map(|p| p.id).collect();
    let shown: Vec<u32> = state["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["panelId"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(shown, ids);
    assert_chart(&state, 11, &["signal"]);
    assert_chart(&state, 12, &["signal"]);
    assert_chart(&state, 13, &["stats packets_received", "stats crc_errors"]);
    // Lines A and B may share one 2 s bucket of the 15 m history: its mean, or B alone.
    let rssi = json_attr(panel(&state, 11), "last")["signal"]
        .as_f64()
        .unwrap();
    assert!((-48.0..=-47.0).contains(&rssi), "{rssi}");
    // The RSSI axis shows negative numbers, whole.
    let labels = json_attr(panel(&state, 11), "yLabels");
    assert!(
        labels.as_array().is_some_and(|l| l.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.starts_with('-') && l.ends_with("dBm")))),
        "{labels}"
    );
    let mut counters: Vec<(f64, f64)> = packets
        .iter()
        .chain([&a, &b])
        .map(|p| (f64::from(p.rx), f64::from(p.err)))
        .collect();
    let per_text = |c: &[(f64, f64)]| {
        let per = panels::packet_error_rate(c).expect("counters moved");
        (format!("{per:.1}"), panels::color(PER_STEPS, per).unwrap())
    };
    let (text, color) = per_text(&counters);
    let naive = {
        let (first, last) = (counters[0], counters[counters.len() - 1]);
        let (rx, err) = (last.0 - first.0, last.1 - first.1);
        format!("{:.1}", err / (rx + err) * 100.0)
    };
    assert_ne!(
        text, naive,
        "the history must contain a reboot for this check"
    );
    assert_stat(&state, 14, &text, color);

    // 6. Live on this page too: the RSSI chart and the packet error rate follow a new line.
    a = Packet {
        rssi: -41,
        rx: b.rx + 9,
        err: b.err + 2,
        ..b.clone()
    };
    counters.push((f64::from(a.rx), f64::from(a.err)));
    let (text, color) = per_text(&counters);
    write_line(&mut stdin, &a.line(40_000));
    browser
        .wait_state("RSSI -41 on the open page", LIVE_WITHIN, |s| {
            json_attr(panel(s, 11), "last")["signal"] == -41
        })
        .await;
    let state = browser
        .wait_state("the packet error rate follows", LIVE_WITHIN * 2, |s| {
            panel(s, 14)["value"] == text.as_str()
        })
        .await;
    assert_stat(&state, 14, &text, color);
    assert_eq!(
        state["marker"],
        Value::Null,
        "a new page was loaded for this dashboard"
    );
    browser
        .screenshot(&screenshots_dir().join("dashboard-signal.png"))
        .await;

    // The API the page used answers on its own too.
    let series = http()
        .get(format!(
            "{url}/api/series?measurement=temperature&node=*&range=15m"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Value = serde_json::from_str(&series).unwrap();
    assert_eq!(series["bucket_ms"], 2000);
    assert_eq!(series["series"].as_array().unwrap().len(), 4, "{series}");

    drop(browser);
    drop(stdin);
    assert!(gw.wait(Duration::from_secs(20)).success(), "{}", gw.log());
    println!("dashboard test took {:?}", started.elapsed());
}
