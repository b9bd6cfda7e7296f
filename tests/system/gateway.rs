//! `TestGateway`: the `iiot-gateway` binary run with a config in a temp dir, its stderr
//! captured to a file, killed on drop. Plus the expected readings of a fixture line, computed
//! independently of the gateway's decoder (plain serde_json and the mapping table of docs/ARCHITECTURE.md, "Decoding").

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_iiot-gateway");

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `log` without ANSI colour codes (the gateway colours its log even into a file), so
/// fields can be matched as `key=value`.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The dashboard URL from the start-up checklist line `✓ dashboard  http://127.0.0.1:PORT`.
pub fn dashboard_url(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("✓ dashboard"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no dashboard line in:\n{log}"))
        .to_string()
}

pub struct TestGateway {
    child: Child,
    log: PathBuf,
}

impl TestGateway {
    /// Writes `config` to `dir/config.toml` and starts the gateway with it.
    pub fn start(dir: &Path, config: &str, stdin: Stdio) -> TestGateway {
        let cfg = dir.join("config.toml");
        fs::write(&cfg, config).expect("write config");
        Self::spawn(dir, &["--config", cfg.to_str().expect("utf-8 path")], stdin)
    }

    /// Starts the gateway in `dir` with raw arguments (`RUST_LOG` = `info`, or
    /// `IIOT_TEST_RUST_LOG` when set: more detail for a test being investigated).
    pub fn spawn(dir: &Path, args: &[&str], stdin: Stdio) -> TestGateway {
        let level = std::env::var("IIOT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        Self::spawn_logging(dir, args, stdin, &level)
    }

    /// Like [`TestGateway::spawn`] with `RUST_LOG` = `rust_log`.
    pub fn spawn_logging(dir: &Path, args: &[&str], stdin: Stdio, rust_log: &str) -> TestGateway {
        Self::spawn_with_env(dir, args, stdin, &[("RUST_LOG", rust_log)])
    }

    /// Writes `config` to `dir/config.toml` and starts the gateway with it and these
    /// environment variables (`RUST_LOG` = `info` unless given).
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> TestGateway {
        let cfg = dir.join("config.toml");
        fs::write(&cfg, config).expect("write config");
        let mut all = vec![("RUST_LOG", "info")];
        all.extend_from_slice(env);
        let args = ["--config", cfg.to_str().expect("utf-8 path")];
        Self::spawn_with_env(dir, &args, stdin, &all)
    }

    fn spawn_with_env(
        dir: &Path,
        args: &[&str],
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> TestGateway {
        let log = dir.join(format!("gateway-{}.log", unique()));
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start iiot-gateway");
        TestGateway { child, log }
    }

    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the exit; panics with the log when it takes longer than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `text`.
    pub async fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!(
                    "gateway log never showed {text:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.log());
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the gateway on `input` through stdin to its end; returns exit status and log.
pub fn run_stdin(
    dir: &Path,
    config: &str,
    input: &[u8],
    timeout: Duration,
) -> (ExitStatus, String) {
    let mut gw = TestGateway::start(dir, config, Stdio::piped());
    let mut stdin = gw.stdin();
    stdin.write_all(input).expect("feed stdin");
    drop(stdin);
    let status = gw.wait(timeout);
    (status, gw.log())
}

/// One expected reading: (node, metric, unit, value text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expected {
    pub node: String,
    pub metric: String,
    pub unit: Option<String>,
    pub value: String,
}

impl Expected {
    pub fn topic(&self, prefix: &str) -> String {
        format!("{prefix}/{}/{}", self.node, self.metric)
    }
}

/// A short key, its metric name and unit.
type KeyMap = (&'static str, &'static str, Option<&'static str>);

/// The readings a telemetry line must produce, per docs/ARCHITECTURE.md, "Decoding"; `None` for lines
/// that are not telemetry.
pub fn expected(line: &str) -> Option<Vec<Expected>> {
    let json = match line.find("JSON sent via VCP: ") {
        Some(at) => &line[at + "JSON sent via VCP: ".len()..],
        None if line.trim_start().starts_with('{') => line.trim(),
        None => return None,
    };
    let value: Value = serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    let mut out = Vec::new();
    for (key, obj) in value.as_object()? {
        let (node, table): (String, &[KeyMap]) = match key.as_str() {
            "sig" => (
                "signal".into(),
                &[("rssi", "rssi", Some("dbm")), ("snr", "snr", Some("db"))],
            ),
            "sts" => (
                "stats".into(),
                &[
                    ("rx", "packets_received", None),
                    ("err", "crc_errors", None),
                ],
            ),
            k if k.starts_with('n') => (
                format!("node{}", &k[1..]),
                &[
                    ("t", "temperature", Some("celsius")),
                    ("h", "humidity", Some("percent")),
                    ("g", "gas_resistance", Some("ohms")),
                    ("p", "pressure", Some("hpa")),
                ],
            ),
            _ => continue,
        };
        for (short, v) in obj.as_object()? {
            let (_, metric, unit) = table.iter().find(|(s, _, _)| s == short)?;
            out.push(Expected {
                node: node.clone(),
                metric: metric.to_string(),
                unit: unit.map(str::to_string),
                value: v.to_string(),
            });
        }
    }
    Some(out)
}

/// Expected readings of every telemetry line of `text`, one Vec per packet.
pub fn expected_packets(text: &str) -> Vec<Vec<Expected>> {
    text.lines().filter_map(expected).collect()
}

/// Counts of each item (for multiset comparisons with readable diffs).
pub fn counts<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Readings (topic, payload) `sub` received, without the gateway status topic.
pub fn readings_received(sub: &crate::support::Subscriber, prefix: &str) -> Vec<(String, String)> {
    let status = format!("{prefix}/gateway/status");
    sub.messages()
        .into_iter()
        .filter(|m| m.topic != status)
        .map(|m| (m.topic, m.payload))
        .collect()
}

/// Waits until `sub` received `expected.len()` readings, then asserts they are exactly the
/// expected topics and payloads (each once).
pub async fn assert_mqtt_exactly(
    sub: &crate::support::Subscriber,
    prefix: &str,
    expected: &[Expected],
) {
    let status = format!("{prefix}/gateway/status");
    let n = expected.len();
    sub.wait_for(
        |m| m.iter().filter(|m| m.topic != status).count() >= n,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        counts(readings_received(sub, prefix)),
        counts(expected.iter().map(|e| (e.topic(prefix), e.value.clone()))),
        "MQTT topics and payloads"
    );
}
