//! System-test harness: real servers from Debian packages on free loopback ports.
//!
//! Every server runs as a child process with all of its state (config, data, logs) in its own
//! temporary directory. `stop()` shuts it down gracefully (SIGTERM), `start_again()` restarts it
//! on the same port(s) with the same data, `kill()` simulates a crash (SIGKILL), and `Drop`
//! SIGKILLs and reaps it. The children also get `PR_SET_PDEATHSIG = SIGKILL`, so they die with
//! the test thread that started them even if the test binary itself is killed. Start servers from
//! the test's own thread (the `#[tokio::test]` body), not from `spawn_blocking`: the kernel sends
//! the death signal when the *thread* that spawned the child exits.
//!
//! When a test panics, dropping a server prints the tail of its logs to stderr (which libtest
//! shows for failing tests); start-up failures include the log tail in the panic message.
//!
//! Required packages: `apt-get install -y mosquitto victoria-metrics influxdb`. A missing binary
//! is a panic naming that command, never a silent skip.
//!
//! # Empirical notes (Debian bookworm: mosquitto 2.0.11, victoria-metrics 1.79.5, influxdb 1.6.7)
//!
//! VictoriaMetrics, InfluxDB line protocol:
//! * `temperature,node=node1,unit=celsius value=27.6 1764230400000000000` is stored as metric
//!   `temperature_value{node="node1",unit="celsius"}` = 27.6 at 1764230400000 ms: the name is
//!   `{measurement}_{field}` (`-influxMeasurementFieldSeparator`, default `_`), tags become
//!   labels, and every field of a line becomes its own series (`m a=1,b=2i,c=true` gives `m_a`,
//!   `m_b`, `m_c`; booleans become 1/0, string fields are stored as 0). Timestamps are truncated
//!   to milliseconds (`-influxTrimTimestamp=1ms`).
//! * `/write?db=telemetry` (v1) adds the label `db="telemetry"` (`-influxDBLabel`). The v2
//!   endpoint `/api/v2/write?org=..&bucket=..&precision=ns` ignores `org` and `bucket`: no
//!   label is added (only an explicit `db=` query arg would add one). [`Point::tags`] keeps the
//!   `db` label as VictoriaMetrics reports it.
//! * [`VictoriaMetrics::points`] splits the metric name at the LAST `_`, which is right as long
//!   as field names contain no `_` (the gateway's field is `value`; measurement names such as
//!   `battery_voltage` are fine).
//! * Duplicates are KEPT: two samples of one series with the identical millisecond timestamp
//!   (same or different value, same or separate requests, sub-ms differences that truncate to
//!   the same ms) are both returned by `/api/v1/export`, also after `/internal/force_merge` and
//!   after a restart. Deduplication happens only with `-dedup.minScrapeInterval`, which the
//!   harness does not set. Their order within the export is not the insertion order.
//! * Visibility: accepted rows sit in an in-memory buffer for ~1-2 s; an export right after
//!   the write saw 0/30 of them. After `GET /internal/force_flush` they were visible 30/30
//!   immediately. Separately, `/api/v1/export` with the default `end` (= now) missed a sample
//!   stamped "now" 19/20 times, `-search.latencyOffset=0s` does not change that; an explicit
//!   `end` in the future fixes it, so `export()` passes `start=0&end=now+2d`.
//! * Samples older than `-retentionPeriod` (default 1 month!) or more than 2 days in the future
//!   are silently dropped (`/write` still answers 204). The harness sets `-retentionPeriod=100y`
//!   so fixed historical timestamps such as 2025-11-27 are kept.
//!
//! InfluxDB 1.6:
//! * No `/api/v2/write` (404; it appeared in 1.8). `/write?db=` on a database that does not
//!   exist is 404 `database not found`, so call [`InfluxDb1::create_database`] first.
//! * A write to an existing series and timestamp OVERWRITES the point (last write wins), unlike
//!   VictoriaMetrics.
//! * A write is visible to queries as soon as `/write` returned 204 (no flush needed).
//! * `SELECT *` mixes tags and fields in `columns`; `GROUP BY *` moves the tags into each
//!   series' `tags` map, where an absent tag shows up as `""` ([`InfluxDb1::points`] drops it).
//!   Float fields with an integral value come back as JSON integers (`28`, not `28.0`).
//! * `SHOW MEASUREMENTS` on a database that does not exist returns no series and no error.
//! * Without `[monitor] store-enabled = false` it creates and writes an `_internal` database.
//!
//! Mosquitto 2.0:
//! * Started as root it drops privileges to user `mosquitto` and then cannot write into a
//!   root-owned temp dir; the harness writes `user root` into the config when running as root.
//! * The persistence file is written on SIGTERM (`stop()`) and every `autosave_interval`
//!   (30 min); after `kill()` sessions and queued messages since the last save are lost.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode};
use serde_json::Value;
use tempfile::TempDir;

/// How long a server may take to start (or to stop gracefully).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The command that installs every server binary the harness needs.
pub const INSTALL_HINT: &str = "apt-get install -y mosquitto victoria-metrics influxdb nats-server";

const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
const VICTORIA_METRICS_BIN: &str = "/usr/bin/victoria-metrics";
const INFLUXD_BIN: &str = "/usr/bin/influxd";
const NATS_SERVER_BIN: &str = "/usr/sbin/nats-server";

/// Attempts with fresh ports when a server exits during its first start (port stolen between
/// `free_port()` and the server's bind).
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Generic helpers
// ---------------------------------------------------------------------------------------------

/// A currently free TCP port on 127.0.0.1 (bind to port 0, read the port, release it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `f` every 50 ms until it returns true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path of a required server binary: `default` if it exists, else `name` found in `$PATH`.
/// Panics with the install command when it is missing.
pub fn require_binary(name: &str, default: &str) -> PathBuf {
    let default = Path::new(default);
    if default.is_file() {
        return default.to_path_buf();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` not found (looked at {} and in $PATH). The system tests run real servers; \
         install them with: {INSTALL_HINT}",
        default.display()
    );
}

/// A shared HTTP client without connection pooling, so it works across tokio runtimes (one per
/// test) and across server restarts.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build reqwest client")
    })
}

/// The body of `GET url` (any status); panics naming the URL when the request fails.
pub async fn get_text(url: &str) -> String {
    let resp = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}

/// A unique-per-process suffix for client ids and the like.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn new_temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Percent-encodes a string for a URL query or form body.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A minimal blocking HTTP/1.0 request to 127.0.0.1:`port` (used for readiness probes and the
/// sync API, so no runtime is needed). Returns (status, head, body).
fn http_sync(
    port: u16,
    method: &str,
    target: &str,
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

/// The last `lines` lines of a file, or a note that it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Child process management
// ---------------------------------------------------------------------------------------------

enum NotReady {
    Exited(ExitStatus),
    Timeout,
}

/// One server process: how to (re)spawn it, where its logs are, and the running child.
struct Proc {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// stdout + stderr of the child, appended across restarts.
    stdio_log: PathBuf,
    /// Further log files written by the server itself.
    extra_logs: Vec<PathBuf>,
    child: Option<Child>,
    /// The log tail is already in a panic message; don't print it again on drop.
    tail_reported: bool,
}

impl Proc {
    fn new(name: &'static str, program: PathBuf, dir: &Path) -> Self {
        Proc {
            name,
            program,
            args: Vec::new(),
            stdio_log: dir.join(format!("{name}.stdio.log")),
            extra_logs: Vec::new(),
            child: None,
            tail_reported: false,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdio_log)
            .expect("open stdio log");
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn {} ({}): {e}; install with: {INSTALL_HINT}",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    /// Polls `ready` until it returns true, the child exits, or `STARTUP_TIMEOUT` passes.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("wait_ready without child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(NotReady::Exited(status));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit; SIGKILL and panic if it takes longer than the timeout.
    fn terminate(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain syscall on our own, not yet reaped child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                self.tail_reported = true;
                panic!(
                    "{} did not exit within {STARTUP_TIMEOUT:?} after SIGTERM; killed it\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP (`true`) or SIGCONT: the process freezes with its sockets open (the kernel
    /// still accepts and buffers), or runs on.
    fn freeze(&mut self, frozen: bool) {
        let child = self.child.as_ref().expect("freeze without child");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: plain syscall on our own, not yet reaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for path in std::iter::once(&self.stdio_log).chain(&self.extra_logs) {
            let _ = writeln!(
                out,
                "--- tail of {} ---\n{}",
                path.display(),
                tail(path, 40)
            );
        }
        out
    }

    /// Panic message for a failed start.
    fn not_ready_message(&mut self, what: NotReady, port: u16) -> String {
        self.tail_reported = true;
        match what {
            NotReady::Exited(status) => format!(
                "{} exited during start-up ({status}), port {port}\n{}",
                self.name,
                self.log_tail()
            ),
            NotReady::Timeout => format!(
                "{} not ready within {STARTUP_TIMEOUT:?} on port {port}\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// Spawns and waits until ready; panics (after killing the child) if it does not come up.
    fn spawn_ready(&mut self, port: u16, ready: impl FnMut() -> bool) {
        self.spawn();
        if let Err(e) = self.wait_ready(ready) {
            self.kill();
            panic!("{}", self.not_ready_message(e, port));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.tail_reported {
            eprintln!(
                "[harness] {} logs at test failure:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

/// First start of a server: up to `START_ATTEMPTS` tries, each with fresh ports from
/// `configure` (which rewrites the config / args and returns the main port), retrying only when
/// the process exits early (typically: port taken in the meantime).
fn first_start(
    proc: &mut Proc,
    mut configure: impl FnMut(&mut Proc) -> u16,
    ready: impl Fn(u16) -> bool,
) -> u16 {
    for attempt in 1..=START_ATTEMPTS {
        let port = configure(proc);
        proc.spawn();
        match proc.wait_ready(|| ready(port)) {
            Ok(()) => return port,
            Err(NotReady::Exited(status)) if attempt < START_ATTEMPTS => {
                eprintln!(
                    "[harness] {} exited during start-up ({status}) on port {port}, retrying \
                     with new ports\n{}",
                    proc.name,
                    proc.log_tail()
                );
            }
            Err(e) => {
                proc.kill();
                panic!("{}", proc.not_ready_message(e, port));
            }
        }
    }
    unreachable!()
}

/// True if an MQTT broker on `port` answers a CONNECT with a successful CONNACK (a bare TCP
/// connect would also succeed against some other process that grabbed the port).
/// A NATS node's `GET /healthz` answers 200 `{"status":"ok"}` (JetStream current).
fn nats_healthy(monitor: u16) -> bool {
    let get = || -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], monitor));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    get().is_ok_and(|a| {
        a.lines()
            .next()
            .is_some_and(|status| status.contains(" 200 "))
            && a.contains("\"ok\"")
    })
}

fn mqtt_accepts(port: u16) -> bool {
    let probe = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let id = b"harness-probe";
        // MQTT 3.1.1 CONNECT, clean session, keep-alive 10 s.
        let mut packet = vec![0x10, 12 + id.len() as u8];
        packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0]);
        packet.push(id.len() as u8);
        packet.extend_from_slice(id);
        stream.write_all(&packet)?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack)?;
        stream.write_all(&[0xE0, 0])?; // DISCONNECT
        Ok(connack == [0x20, 2, 0, 0])
    };
    probe().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------------------------

/// A mosquitto 2.0 broker with persistence, anonymous access, on 127.0.0.1:`port`.
pub struct Mosquitto {
    pub port: u16,
    proc: Proc,
    dir: TempDir,
    /// Successful starts so far (each logs one "listen socket" line).
    starts: usize,
}

impl Mosquitto {
    /// Starts a fresh broker and waits until it accepts an MQTT connection.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a broker whose listener gets the `listener_options` lines (TLS files, a
    /// password file, an ACL, `allow_anonymous false`, ...). With options, readiness is the
    /// broker's own log line for the listener (an anonymous plaintext probe may be refused).
    pub fn start_with(listener_options: &str) -> Self {
        let bin = require_binary("mosquitto", MOSQUITTO_BIN);
        let dir = new_temp_dir("harness-mosquitto-");
        let path = dir.path().to_path_buf();
        let mut proc = Proc::new("mosquitto", bin, &path);
        proc.extra_logs.push(path.join("mosquitto.log"));
        let conf = path.join("mosquitto.conf");
        let log = path.join("mosquitto.log");
        let port = first_start(
            &mut proc,
            |proc| {
                let port = free_port();
                write_mosquitto_conf(&conf, &path, port, listener_options);
                proc.args = vec!["-c".into(), conf.clone().into()];
                port
            },
            |port| {
                if listener_options.is_empty() {
                    mosquitto_ready(&log, port, 1)
                } else {
                    mosquitto_listening(&log, port, 1)
                }
            },
        );
        Mosquitto {
            port,
            proc,
            dir,
            starts: 1,
        }
    }

    /// Graceful shutdown (SIGTERM; mosquitto saves its persistence file), waits for the exit.
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Crash: SIGKILL, nothing saved since the last autosave.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&mut self) {
        self.proc.freeze(true);
    }

    /// Lets a frozen broker run on (SIGCONT).
    pub fn thaw(&mut self) {
        self.proc.freeze(false);
    }

    /// Starts the broker again on the same port with the same persistence directory.
    pub fn start_again(&mut self) {
        let port = self.port;
        self.starts += 1;
        let (log, starts) = (self.dir.path().join("mosquitto.log"), self.starts);
        self.proc
            .spawn_ready(port, || mosquitto_ready(&log, port, starts));
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// `mqtt://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A broker that lets in only `user` with `password` (a password file in `dir`).
    pub fn start_with_login(dir: &Path, user: &str, password: &str) -> Self {
        let passwd = dir.join("passwd");
        let out = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([user, password])
            .output()
            .unwrap_or_else(|e| panic!("mosquitto_passwd: {e}; install with: {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_with(&format!(
            "allow_anonymous false\npassword_file {}",
            passwd.display()
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's own log (connections, subscriptions, ...).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// Ready when OUR broker listens: its own log says it opened the port (`starts` times in
/// all) and it answers MQTT. Answering alone is not enough: when the port was grabbed by
/// another test's broker in the meantime, ours exits while the other one answers.
fn mosquitto_ready(log: &Path, port: u16, starts: usize) -> bool {
    mosquitto_listening(log, port, starts) && mqtt_accepts(port)
}

/// The broker's log shows its listener on `port` (`starts` times in all) and that it runs.
fn mosquitto_listening(log: &Path, port: u16, starts: usize) -> bool {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.matches(&format!("listen socket on port {port}."))
        .count()
        >= starts
        && text.matches(" running").count() >= starts
}

fn write_mosquitto_conf(conf: &Path, dir: &Path, port: u16, listener_options: &str) {
    let anonymous = if listener_options.contains("allow_anonymous") {
        ""
    } else {
        "allow_anonymous true\n"
    };
    let mut text = format!(
        "listener {port} 127.0.0.1\n\
         {listener_options}\n\
         {anonymous}\
         persistence true\n\
         persistence_location {dir}/\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type all\n\
         log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
         connection_messages true\n\
         max_queued_messages 100000\n",
        dir = dir.display()
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Otherwise mosquitto drops to user `mosquitto`, which cannot write to our temp dir.
        text.push_str("user root\n");
    }
    fs::write(conf, text).expect("write mosquitto.conf");
}

// ---------------------------------------------------------------------------------------------
// NATS: a three-node cluster with JetStream and its MQTT listener
// ---------------------------------------------------------------------------------------------

/// Three `nats-server` nodes clustered on loopback, each with JetStream and an MQTT listener
/// whose sessions and retained messages live in streams replicated to all three
/// (`stream_replicas: 3`): a persistent MQTT session outlives the node it was made on.
pub struct NatsCluster {
    nodes: Vec<Proc>,
    /// Each node's MQTT port.
    pub mqtt_ports: Vec<u16>,
    /// Each node's monitoring port (`/healthz`).
    monitor_ports: Vec<u16>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts the three nodes and waits until each accepts an MQTT connection (which needs
    /// the cluster formed and JetStream's assets made).
    pub fn start() -> Self {
        let bin = require_binary("nats-server", NATS_SERVER_BIN);
        let dir = new_temp_dir("harness-nats-");
        for attempt in 1..=START_ATTEMPTS {
            let ports: Vec<[u16; 4]> = (0..3)
                .map(|_| [free_port(), free_port(), free_port(), free_port()])
                .collect();
            let routes: Vec<String> = ports
                .iter()
                .map(|p| format!("nats://127.0.0.1:{}", p[1]))
                .collect();
            let mut nodes = Vec::new();
            for (i, [client, cluster, mqtt, monitor]) in ports.iter().enumerate() {
                let node = dir.path().join(format!("n{i}"));
                std::fs::create_dir_all(&node).expect("node dir");
                let conf = node.join("nats.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                         jetstream {{ store_dir: \"{}\" }}\n\
                         cluster {{ name: harness, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n\
                         mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3 }}\n",
                        node.join("js").display(),
                        routes.join(", ")
                    ),
                )
                .expect("write nats.conf");
                let mut proc = Proc::new("nats-server", bin.clone(), &node);
                proc.args = vec!["-c".into(), conf.into()];
                proc.spawn();
                nodes.push(proc);
            }
            let mqtt_ports: Vec<u16> = ports.iter().map(|p| p[2]).collect();
            let monitor_ports: Vec<u16> = ports.iter().map(|p| p[3]).collect();
            let deadline = Instant::now() + STARTUP_TIMEOUT * 2;
            let (mut exited, mut ready) = (false, false);
            while Instant::now() < deadline && !exited && !ready {
                std::thread::sleep(Duration::from_millis(200));
                exited = nodes.iter_mut().any(|n| !n.is_running());
                ready = !exited
                    && mqtt_ports.iter().all(|&p| mqtt_accepts(p))
                    && monitor_ports.iter().all(|&p| nats_healthy(p));
            }
            if ready {
                return NatsCluster {
                    nodes,
                    mqtt_ports,
                    monitor_ports,
                    dir,
                };
            }
            let logs: String = nodes.iter().map(Proc::log_tail).collect();
            for n in &mut nodes {
                n.tail_reported = true;
                n.kill();
            }
            if !exited || attempt == START_ATTEMPTS {
                panic!("the NATS cluster did not come up (MQTT ports {mqtt_ports:?}, a node exited: {exited})\n{logs}");
            }
            eprintln!(
                "[harness] a NATS node exited during start-up, retrying with new ports\n{logs}"
            );
        }
        unreachable!()
    }

    /// `mqtt://127.0.0.1:<port>` of node `i`.
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_ports[i])
    }

    /// Crash of node `i`: SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with its config and store, and waits until it accepts MQTT and
    /// then, as a rolling restart does before touching the next node, until its JetStream
    /// has caught up (`/healthz` ok: every stream and consumer it holds is current; until
    /// then the cluster's R3 streams rest on the other two nodes alone). Under load NATS 2.9
    /// may report a consumer "not current" for long: after `catch_up` the test goes on (and
    /// says so) with a cluster that is slower to confirm.
    pub fn start_again(&mut self, i: usize, catch_up: Duration) {
        let (port, monitor) = (self.mqtt_ports[i], self.monitor_ports[i]);
        self.nodes[i].spawn_ready(port, || mqtt_accepts(port));
        let deadline = Instant::now() + catch_up;
        while !nats_healthy(monitor) {
            if Instant::now() >= deadline {
                eprintln!("[harness] NATS node n{i} not current after {catch_up:?}; going on");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------------------------

/// One stored sample, from either database.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// InfluxDB measurement (for VictoriaMetrics: metric name up to the last `_`).
    pub measurement: String,
    /// Field name (for VictoriaMetrics: metric name after the last `_`).
    pub field: String,
    /// Tags / labels. VictoriaMetrics' `db` label (v1 `/write?db=`) is included as is;
    /// InfluxDB tags that are absent for this series are not.
    pub tags: BTreeMap<String, String>,
    /// Numeric value; InfluxDB integers and booleans (1/0) converted, strings parsed or NaN.
    pub value: f64,
    /// Timestamp, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Timestamp, ns since the Unix epoch (VictoriaMetrics: `ts_ms * 1_000_000`).
    pub ts_ns: i64,
}

impl Point {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

fn sort_points(points: &mut [Point]) {
    points.sort_by(|a, b| {
        (a.ts_ns, &a.measurement, &a.field, &a.tags)
            .cmp(&(b.ts_ns, &b.measurement, &b.field, &b.tags))
            .then(a.value.total_cmp(&b.value))
    });
}

/// A single-node VictoriaMetrics on 127.0.0.1:`port`.
pub struct VictoriaMetrics {
    pub port: u16,
    proc: Proc,
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts a fresh instance and waits until `/health` answers `OK`.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`VictoriaMetrics::start`], with extra command-line flags (kept across
    /// `start_again`), e.g. `-dedup.minScrapeInterval=1ms`: then VictoriaMetrics keeps one
    /// sample per series and millisecond (checked with 1.79.5: three writes of one point
    /// export as one sample, also before any merge), which makes it behave like InfluxDB for
    /// a resent point.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let bin = require_binary("victoria-metrics", VICTORIA_METRICS_BIN);
        let dir = new_temp_dir("harness-vm-");
        let path = dir.path().to_path_buf();
        let mut proc = Proc::new("victoria-metrics", bin, &path);
        let port = first_start(
            &mut proc,
            |proc| {
                let port = free_port();
                proc.args = [
                    format!("-storageDataPath={}", path.join("data").display()),
                    format!("-httpListenAddr=127.0.0.1:{port}"),
                    // Keep fixed historical test timestamps (default retention is 1 month).
                    "-retentionPeriod=100y".into(),
                    "-search.latencyOffset=0s".into(),
                    "-search.disableCache".into(),
                    "-loggerLevel=WARN".into(),
                    "-memory.allowedPercent=20".into(),
                ]
                .into_iter()
                .chain(extra.iter().map(|a| a.to_string()))
                .map(OsString::from)
                .collect();
                port
            },
            vm_healthy,
        );
        VictoriaMetrics { port, proc, dir }
    }

    /// Graceful shutdown (SIGTERM; buffered rows are flushed to disk), waits for the exit.
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Crash: SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same port with the same data.
    pub fn start_again(&mut self) {
        let port = self.port;
        self.proc.spawn_ready(port, || vm_healthy(port));
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes all accepted rows searchable (`/internal/force_flush`).
    pub async fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        let resp = http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    }

    /// Every stored sample of every series (flushes first), sorted by time.
    /// Every stored sample except the gateway's `events` annotations.
    pub async fn points(&self) -> Vec<Point> {
        let mut points = self.export(r#"{__name__=~".+"}"#).await;
        points.retain(|p| p.measurement != "events");
        points
    }

    /// Every stored sample of the series matching `selector` (flushes first), sorted by time.
    pub async fn export(&self, selector: &str) -> Vec<Point> {
        self.force_flush().await;
        let url = format!("{}/api/v1/export", self.url());
        // An explicit end: the default (now) misses samples stamped in the current moment.
        let end = (now_ms() / 1000 + 2 * 86_400).to_string();
        let resp = http()
            .get(&url)
            .query(&[("match[]", selector), ("start", "0"), ("end", end.as_str())])
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.expect("export body");
        assert!(
            status.is_success(),
            "GET {url} {selector}: {status}: {body}"
        );
        let mut points = parse_vm_export(&body);
        sort_points(&mut points);
        points
    }
}

fn vm_healthy(port: u16) -> bool {
    matches!(http_sync(port, "GET", "/health", ""), Ok((200, _, body)) if body.trim() == "OK")
}

/// Parses `/api/v1/export` JSON lines:
/// `{"metric":{"__name__":"m_f","k":"v"},"values":[1.5],"timestamps":[1764230400000]}`.
fn parse_vm_export(body: &str) -> Vec<Point> {
    let mut points = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad export line {line:?}: {e}"));
        let mut tags = BTreeMap::new();
        let mut name = String::new();
        for (k, val) in v["metric"].as_object().expect("metric object") {
            let val = val.as_str().unwrap_or_default().to_string();
            if k == "__name__" {
                name = val;
            } else {
                tags.insert(k.clone(), val);
            }
        }
        let (measurement, field) = match name.rsplit_once('_') {
            Some((m, f)) if !m.is_empty() && !f.is_empty() => (m.to_string(), f.to_string()),
            _ => (name.clone(), String::new()),
        };
        let values = v["values"].as_array().expect("values array");
        let timestamps = v["timestamps"].as_array().expect("timestamps array");
        assert_eq!(values.len(), timestamps.len(), "export line {line}");
        for (value, ts) in values.iter().zip(timestamps) {
            let ts_ms = ts.as_i64().expect("integer timestamp");
            points.push(Point {
                measurement: measurement.clone(),
                field: field.clone(),
                tags: tags.clone(),
                value: json_number(value),
                ts_ms,
                ts_ns: ts_ms * 1_000_000,
            });
        }
    }
    points
}

fn json_number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------------
// InfluxDB 1.6
// ---------------------------------------------------------------------------------------------

/// An InfluxDB 1.x (`influxd`) on 127.0.0.1:`port`, auth disabled unless
/// [`InfluxDb1::start_with`] enables it.
pub struct InfluxDb1 {
    pub port: u16,
    /// The RPC (backup/restore) port; unused by tests but must not collide.
    pub rpc_port: u16,
    proc: Proc,
    dir: TempDir,
    /// `https-enabled = true`: the API speaks only TLS.
    tls: bool,
    /// Login for the harness's own requests, once [`InfluxDb1::create_admin`] made one.
    credentials: Option<(String, String)>,
}

impl InfluxDb1 {
    /// Starts a fresh instance and waits until `/ping` answers 204.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Like [`InfluxDb1::start`], with `http_section_extra` (TOML lines such as
    /// `auth-enabled = true` or `https-enabled = true` plus `https-certificate` and
    /// `https-private-key`) added to the `[http]` section; a key given there replaces the
    /// harness's default for it. With `https-enabled = true` the readiness probe and the
    /// harness's own requests use https without verifying the certificate (the harness is
    /// not what is under test); [`InfluxDb1::url`] is then `https://`.
    pub fn start_with(http_section_extra: &str) -> Self {
        let tls = http_section_extra.lines().any(|l| {
            let l = l.split('#').next().unwrap_or_default().replace(' ', "");
            l == "https-enabled=true"
        });
        let bin = require_binary("influxd", INFLUXD_BIN);
        let dir = new_temp_dir("harness-influxdb-");
        let path = dir.path().to_path_buf();
        let mut proc = Proc::new("influxd", bin, &path);
        let conf = path.join("influxdb.conf");
        let mut rpc_port = 0;
        let port = first_start(
            &mut proc,
            |proc| {
                let port = free_port();
                rpc_port = loop {
                    let p = free_port();
                    if p != port {
                        break p;
                    }
                };
                write_influx_conf(&conf, &path, port, rpc_port, http_section_extra);
                proc.args = vec!["run".into(), "-config".into(), conf.clone().into()];
                port
            },
            |port| influx_ready(port, tls),
        );
        InfluxDb1 {
            port,
            rpc_port,
            proc,
            dir,
            tls,
            credentials: None,
        }
    }

    /// With `auth-enabled = true` and no users yet, InfluxDB accepts one unauthenticated
    /// `CREATE USER .. WITH ALL PRIVILEGES`; this runs it, and the harness's later requests
    /// log in as that user. Panics on any error.
    pub fn create_admin(&mut self, user: &str, password: &str) {
        let q = format!(
            "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
            influx_ident(user),
            influx_string(password)
        );
        self.query_sync(&q);
        self.credentials = Some((user.to_string(), password.to_string()));
    }

    /// The server's stdout and stderr so far (its HTTP access log with `log-enabled = true`).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.proc.stdio_log).unwrap_or_default()).into_owned()
    }

    /// A blocking `POST /query` of `q` (as the admin, when there is one); panics unless it
    /// succeeded without a statement error.
    fn query_sync(&self, q: &str) {
        let mut target = "/query".to_string();
        if let Some((u, p)) = &self.credentials {
            target = format!("/query?u={}&p={}", urlencode(u), urlencode(p));
        }
        let body = format!("q={}", urlencode(q));
        let sent = if self.tls {
            https_sync(self.port, "POST", &target, &body)
        } else {
            http_sync(self.port, "POST", &target, &body)
        };
        let (status, _, resp) = sent.unwrap_or_else(|e| panic!("POST /query {q}: {e}"));
        assert!(
            status == 200 && !resp.contains("\"error\""),
            "{q}: HTTP {status}: {resp}"
        );
    }

    /// Graceful shutdown (SIGTERM), waits for the exit.
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Crash: SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same ports with the same data.
    pub fn start_again(&mut self) {
        let port = self.port;
        let tls = self.tls;
        self.proc.spawn_ready(port, || influx_ready(port, tls));
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// `http://127.0.0.1:<port>`, or `https://` with `https-enabled = true`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `CREATE DATABASE "<db>"` (blocking; idempotent). Panics on any error.
    pub fn create_database(&self, db: &str) {
        self.query_sync(&format!("CREATE DATABASE {}", influx_ident(db)));
    }

    /// Runs InfluxQL `q` against `db` (POST /query, `epoch=ns`) and returns the raw JSON.
    /// Panics on transport errors and non-2xx statuses; statement errors stay in the JSON.
    pub async fn query(&self, db: &str, q: &str) -> Value {
        let url = format!("{}/query", self.url());
        let client = if self.tls { https_insecure() } else { http() };
        let mut req = client
            .post(&url)
            .form(&[("db", db), ("q", q), ("epoch", "ns")]);
        if let Some((u, p)) = &self.credentials {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url} {q}: {e}"));
        let status = resp.status();
        let body = resp.text().await.expect("query body");
        assert!(status.is_success(), "POST {url} {q}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON from {q}: {e}: {body}"))
    }

    /// Every point of every measurement of `db` (one `Point` per non-null field), sorted by
    /// time, except the gateway's `events` annotations. A database that does not exist yields
    /// no points.
    pub async fn points(&self, db: &str) -> Vec<Point> {
        let mut points = self.all_points(db).await;
        points.retain(|p| p.measurement != "events");
        points
    }

    /// Like [`InfluxDb1::points`], with the `events` annotations.
    pub async fn all_points(&self, db: &str) -> Vec<Point> {
        let shown = self.query(db, "SHOW MEASUREMENTS").await;
        check_influx_errors(&shown, "SHOW MEASUREMENTS");
        let mut names = Vec::new();
        for series in influx_series(&shown) {
            for row in series["values"].as_array().into_iter().flatten() {
                names.push(row[0].as_str().expect("measurement name").to_string());
            }
        }
        let mut points = Vec::new();
        for name in names {
            let q = format!("SELECT * FROM {} GROUP BY *", influx_ident(&name));
            let res = self.query(db, &q).await;
            check_influx_errors(&res, &q);
            for series in influx_series(&res) {
                points.extend(influx_series_points(series));
            }
        }
        sort_points(&mut points);
        points
    }
}

fn influx_ready(port: u16, tls: bool) -> bool {
    let answer = if tls {
        https_sync(port, "GET", "/ping", "")
    } else {
        http_sync(port, "GET", "/ping", "")
    };
    matches!(answer, Ok((204, head, _))
        if head.to_ascii_lowercase().contains("x-influxdb-version"))
}

/// Quotes an InfluxQL string literal.
fn influx_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An HTTPS client that accepts any certificate, for the harness's own requests to servers
/// whose TLS it configured itself. No connection pooling (see [`http`]).
fn https_insecure() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build reqwest client")
    })
}

/// [`http_sync`] over TLS (certificate not verified). Runs on its own thread with its own
/// runtime, so it works from sync code inside a test's runtime too.
fn https_sync(
    port: u16,
    method: &str,
    target: &str,
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let url = format!("https://127.0.0.1:{port}{target}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
    let body = body.to_string();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let resp = https_insecure()
                    .request(method, &url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(std::io::Error::other)?;
                let status = resp.status().as_u16();
                let mut head = format!("{:?} {}", resp.version(), resp.status());
                for (name, value) in resp.headers() {
                    let _ = write!(head, "\r\n{name}: {}", value.to_str().unwrap_or("?"));
                }
                let text = resp.text().await.map_err(std::io::Error::other)?;
                Ok((status, head, text))
            })
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("https request thread panicked")))
    })
}

/// `[http]` keys the harness sets; `extra` lines replace or add to them.
fn influx_http_section(port: u16, extra: &str) -> String {
    let key = |line: &str| {
        line.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let extra_keys: Vec<String> = extra.lines().map(key).filter(|k| !k.is_empty()).collect();
    let defaults = [
        "enabled = true".to_string(),
        format!("bind-address = \"127.0.0.1:{port}\""),
        "auth-enabled = false".to_string(),
        "log-enabled = false".to_string(),
        "pprof-enabled = false".to_string(),
    ];
    let mut out = String::new();
    for line in defaults
        .iter()
        .map(String::as_str)
        .filter(|l| !extra_keys.contains(&key(l)))
        .chain(extra.lines().map(str::trim).filter(|l| !l.is_empty()))
    {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn write_influx_conf(conf: &Path, dir: &Path, port: u16, rpc_port: u16, http_extra: &str) {
    let d = dir.display();
    let http_section = influx_http_section(port, http_extra);
    let text = format!(
        r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
{http_section}
[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[retention]
  enabled = false
"#
    );
    fs::write(conf, text).expect("write influxdb.conf");
}

/// Quotes an InfluxQL identifier.
fn influx_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn check_influx_errors(v: &Value, q: &str) {
    if let Some(e) = v.get("error") {
        panic!("InfluxDB error for {q}: {e}");
    }
    for r in v["results"].as_array().into_iter().flatten() {
        if let Some(e) = r.get("error") {
            panic!("InfluxDB error for {q}: {e}");
        }
    }
}

fn influx_series(v: &Value) -> impl Iterator<Item = &Value> {
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
}

fn influx_series_points(series: &Value) -> Vec<Point> {
    let measurement = series["name"].as_str().unwrap_or_default().to_string();
    let mut tags = BTreeMap::new();
    for (k, v) in series["tags"].as_object().into_iter().flatten() {
        let v = v.as_str().unwrap_or_default();
        if !v.is_empty() {
            tags.insert(k.clone(), v.to_string());
        }
    }
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c.as_str().unwrap_or_default())
        .collect();
    let mut points = Vec::new();
    for row in series["values"].as_array().into_iter().flatten() {
        let row = row.as_array().expect("row array");
        let ts_ns = row[0].as_i64().expect("epoch=ns timestamp");
        for (col, value) in columns.iter().zip(row).skip(1) {
            if value.is_null() {
                continue;
            }
            points.push(Point {
                measurement: measurement.clone(),
                field: (*col).to_string(),
                tags: tags.clone(),
                value: json_number(value),
                ts_ms: ts_ns.div_euclid(1_000_000),
                ts_ns,
            });
        }
    }
    points
}

// ---------------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------------

/// One received publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    /// Payload, lossily decoded as UTF-8.
    pub payload: String,
    pub retain: bool,
}

#[derive(Default)]
struct SubShared {
    msgs: Vec<Msg>,
    /// `session_present` of every CONNACK, in order.
    connacks: Vec<bool>,
    subacks: usize,
    suback_failure: bool,
    last_error: Option<String>,
}

/// An MQTT subscriber (QoS 1) whose event loop runs in a spawned task, reconnecting after
/// errors (e.g. broker restarts) every 200 ms, recording every publish it receives.
pub struct Subscriber {
    /// The rumqttc client, e.g. for extra subscriptions or a clean `disconnect()`.
    pub client: AsyncClient,
    pub client_id: String,
    pub filter: String,
    shared: Arc<Mutex<SubShared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port` as `client_id`, subscribes to `filter` at QoS 1 and returns
    /// once the SUBACK has arrived. After a reconnect it subscribes again unless the broker
    /// reports `session_present` (a resumed persistent session keeps its subscription).
    pub async fn connect(port: u16, client_id: &str, filter: &str, clean_session: bool) -> Self {
        Self::connect_as(port, client_id, filter, clean_session, None).await
    }

    /// Like [`Subscriber::connect`], logging in with `(username, password)`.
    pub async fn connect_as(
        port: u16,
        client_id: &str,
        filter: &str,
        clean_session: bool,
        login: Option<(&str, &str)>,
    ) -> Self {
        Self::connect_to(&[port], client_id, filter, clean_session, login).await
    }

    /// Like [`Subscriber::connect`], to the nodes of a broker cluster: after a connection
    /// error it tries the next port (a persistent session resumes on any node).
    pub async fn connect_cluster(ports: &[u16], client_id: &str, filter: &str) -> Self {
        Self::connect_to(ports, client_id, filter, false, None).await
    }

    async fn connect_to(
        ports: &[u16],
        client_id: &str,
        filter: &str,
        clean_session: bool,
        login: Option<(&str, &str)>,
    ) -> Self {
        let port = ports[0];
        let options = {
            let (client_id, login) = (
                client_id.to_string(),
                login.map(|(u, p)| (u.to_string(), p.to_string())),
            );
            move |port: u16| {
                let mut opts = MqttOptions::new(client_id.clone(), "127.0.0.1", port);
                opts.set_clean_session(clean_session);
                if let Some((user, password)) = &login {
                    opts.set_credentials(user.clone(), password.clone());
                }
                opts.set_keep_alive(Duration::from_secs(5));
                opts.set_max_packet_size(1 << 20, 1 << 20);
                opts
            }
        };
        let (client, mut eventloop) = AsyncClient::new(options(port), 64);
        let ports = ports.to_vec();
        let shared = Arc::new(Mutex::new(SubShared::default()));

        let task = {
            let shared = Arc::clone(&shared);
            let client = client.clone();
            let filter = filter.to_string();
            tokio::spawn(async move {
                let mut subscribed_once = false;
                let mut at = 0;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            shared.lock().unwrap().connacks.push(ack.session_present);
                            if !subscribed_once || !ack.session_present {
                                subscribed_once = true;
                                if let Err(e) = client.try_subscribe(&filter, QoS::AtLeastOnce) {
                                    shared.lock().unwrap().last_error =
                                        Some(format!("subscribe: {e}"));
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            let mut s = shared.lock().unwrap();
                            s.subacks += 1;
                            if ack
                                .return_codes
                                .iter()
                                .any(|c| matches!(c, SubscribeReasonCode::Failure))
                            {
                                s.suback_failure = true;
                            }
                        }
                        // Our own DISCONNECT went out (`Subscriber::disconnect`): stop here
                        // instead of reconnecting.
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            shared.lock().unwrap().msgs.push(Msg {
                                topic: p.topic.clone(),
                                payload: String::from_utf8_lossy(&p.payload).into_owned(),
                                retain: p.retain,
                            });
                        }
                        Ok(_) => {}
                        Err(e) => {
                            shared.lock().unwrap().last_error = Some(e.to_string());
                            if ports.len() > 1 {
                                at = (at + 1) % ports.len();
                                eventloop.mqtt_options = options(ports[at]);
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        };

        let sub = Subscriber {
            client,
            client_id: client_id.to_string(),
            filter: filter.to_string(),
            shared,
            task,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            {
                let s = sub.shared.lock().unwrap();
                assert!(
                    !s.suback_failure,
                    "broker refused subscription {filter} of {client_id}"
                );
                if s.subacks > 0 {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let err = sub.shared.lock().unwrap().last_error.clone();
                panic!(
                    "subscriber {client_id} got no SUBACK for {filter} from 127.0.0.1:{port} \
                     within {STARTUP_TIMEOUT:?}; last error: {err:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sub
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Msg> {
        self.shared.lock().unwrap().msgs.clone()
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        self.shared.lock().unwrap().msgs.clear();
    }

    /// `session_present` of every CONNACK so far (first connect first).
    pub fn connacks(&self) -> Vec<bool> {
        self.shared.lock().unwrap().connacks.clone()
    }

    /// The last connection error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().unwrap().last_error.clone()
    }

    /// Waits until `pred(messages)` holds and returns the messages; panics after `timeout`
    /// with the message count and the last messages.
    pub async fn wait_for(&self, pred: impl Fn(&[Msg]) -> bool, timeout: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.messages();
            if pred(&msgs) {
                return msgs;
            }
            if Instant::now() >= deadline {
                let last: Vec<&Msg> = msgs.iter().rev().take(10).rev().collect();
                panic!(
                    "subscriber {} ({}): condition not met within {timeout:?}; {} messages \
                     received, last {}: {last:#?}; connacks(session_present): {:?}; last error: \
                     {:?}",
                    self.client_id,
                    self.filter,
                    msgs.len(),
                    last.len(),
                    self.connacks(),
                    self.last_error()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends DISCONNECT (a persistent session stays on the broker) and stops the event loop.
    pub async fn disconnect(mut self) {
        if self.client.disconnect().await.is_ok() {
            // The event loop ends right after sending it.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one message at QoS 1 to 127.0.0.1:`port` with a fresh clean-session client and
/// returns after the PUBACK (then disconnects). Panics after 20 s.
pub async fn mqtt_publish(port: u16, topic: &str, payload: &str, retain: bool) {
    let id = format!("harness-pub-{}", unique_suffix());
    let mut opts = MqttOptions::new(&id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
        .await
        .expect("queue publish");
    let run = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publish {topic} to 127.0.0.1:{port}: {e}"),
            }
        }
        client.disconnect().await.expect("queue disconnect");
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(STARTUP_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("publish {topic} to 127.0.0.1:{port} timed out"));
}
