//! The `probe-rs` and `command` sources: a supervised child process whose stdout carries
//! telemetry. Its stderr goes to the log. When it exits (board unplugged, RTT lost) it is
//! restarted with exponential backoff, and the restart is logged and counted by cause. On
//! shutdown the child gets SIGTERM, then SIGKILL after a grace period; on Linux it also gets
//! SIGTERM if the gateway itself dies (`spawner.rs`), so no child is ever left behind.
//!
//! While the gateway runs, it never signals the child: a child killed by a signal it did not
//! raise itself (SIGTERM, SIGKILL, ...) is logged at error level with the signal and counted
//! apart from one that exited or crashed on its own, since restarting `probe-rs` resets the
//! board.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::lines::{forward, read_record, to_text, Ended, Newlines};
use super::supervisor::{self, Supervised};
use super::{spawner, SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::ProcessConfig;
use crate::reading::Line;
use crate::self_stats::RestartCause;

/// Time between SIGTERM and SIGKILL at shutdown.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Runs and restarts the child until `token` is cancelled.
pub async fn run(
    cfg: ProcessConfig,
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> SourceEnd {
    let backoff = Backoff::new(cfg.restart_initial, cfg.restart_max);
    let program = cfg.argv[0].clone();
    let child = Supervisor {
        cfg: &cfg,
        program,
        max_line,
        tx: &tx,
        ctx: &ctx,
    };
    supervisor::supervise(child, backoff, &token).await
}

/// The child process as the supervisor sees it.
struct Supervisor<'a> {
    cfg: &'a ProcessConfig,
    /// `argv[0]`, for the log.
    program: String,
    max_line: usize,
    tx: &'a mpsc::Sender<Line>,
    ctx: &'a SourceContext,
}

/// How one run of the child ended.
enum RunEnd {
    /// It could not be started.
    NotStarted(std::io::Error),
    /// It ran and ended by itself, after delivering `read` lines.
    Exited {
        status: std::io::Result<ExitStatus>,
        read: u64,
    },
}

impl Supervised for Supervisor<'_> {
    type End = RunEnd;

    async fn run_once(&mut self, stop: &CancellationToken) -> Option<RunEnd> {
        let (cfg, program) = (self.cfg, &self.program);
        let mut child = match spawn(&cfg.argv).await {
            Ok(child) => child,
            Err(error) => return Some(RunEnd::NotStarted(error)),
        };
        info!(
            program,
            pid = child.id(),
            kind = cfg.kind.as_str(),
            "source process started"
        );
        self.ctx.set_up(Ok(format!(
            "{}: {} (pid {})",
            cfg.kind,
            cfg.argv.join(" "),
            child.id().unwrap_or(0)
        )));
        let mut read = 0;
        let ended = pump(&mut child, self.max_line, self.tx, stop, &mut read).await;
        if stop.is_cancelled() || matches!(ended, Ended::Closed) {
            terminate(&mut child).await;
            return None;
        }
        let status = child.wait().await;
        Some(RunEnd::Exited { status, read })
    }

    fn delivered(end: &RunEnd) -> bool {
        matches!(end, RunEnd::Exited { read, .. } if *read > 0)
    }

    fn restarting(&mut self, end: RunEnd, delay: Duration) {
        let (ctx, program, kind) = (self.ctx, &self.program, self.cfg.kind.as_str());
        let status = match end {
            RunEnd::NotStarted(error) => {
                let hint = if error.kind() == std::io::ErrorKind::NotFound {
                    "; is it installed and on PATH? (set [source] probe_rs or command)"
                } else {
                    ""
                };
                warn!(program, %error, restart_in = ?delay, "cannot start source process{hint}");
                ctx.set_up(Err(format!("cannot start {program}: {error}{hint}")));
                return;
            }
            RunEnd::Exited { status, .. } => status,
        };
        let why = match &status {
            Ok(status) => format!("{status}"),
            Err(error) => error.to_string(),
        };
        ctx.set_up(Err(format!(
            "{program} exited ({why}); restarting in {}",
            humantime::format_duration(round_ms(delay))
        )));
        match status {
            Ok(status) => {
                let cause = cause_of(status);
                if cause == RestartCause::Killed {
                    let signal = signal_name(status);
                    error!(program, signal, restart_in = ?delay, "source process killed by a signal it did not raise; restarting (the gateway never signals it while running: if nobody else sent it, this is a gateway bug)");
                } else {
                    warn!(program, %status, restart_in = ?delay, "source process exited; restarting");
                }
                let text = format!("{program} exited ({status}); restarting");
                ctx.restarted(cause, kind, &text);
            }
            Err(error) => {
                warn!(program, %error, restart_in = ?delay, "source process lost; restarting");
                let text = format!("{program} lost ({error}); restarting");
                ctx.restarted(RestartCause::Exited, kind, &text);
            }
        }
    }
}

/// `d` to whole milliseconds, for messages.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the child from the spawner thread (see `spawner.rs` for why), with the gateway's
/// environment less its secrets.
async fn spawn(argv: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if is_secret(&name) {
            cmd.env_remove(name);
        }
    }
    spawner::spawn(cmd).await
}

/// The environment variables that carry the gateway's secrets (`--help`, "Environment"): a
/// program the source starts (probe-rs, a `command`) gets none of them.
fn is_secret(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|name| {
        matches!(
            name,
            "INFLUXDB_TOKEN"
                | "INFLUXDB_PASSWORD"
                | "MQTT_PASSWORD"
                | "MQTT_SOURCE_PASSWORD"
                | "HTTP_TOKEN"
        ) || name.starts_with("IIOT_NODE_KEY_")
    })
}

/// Why a child that ended by itself is restarted, from its exit status. A child that caught
/// SIGTERM, SIGINT or SIGHUP and exited with 128 + the signal, as shells and `probe-rs` do, was
/// killed just the same.
fn cause_of(status: ExitStatus) -> RestartCause {
    use std::os::unix::process::ExitStatusExt as _;
    const CAUGHT: [i32; 3] = [128 + libc::SIGTERM, 128 + libc::SIGINT, 128 + libc::SIGHUP];
    match status.signal() {
        None if status.code().is_some_and(|c| CAUGHT.contains(&c)) => RestartCause::Killed,
        None => RestartCause::Exited,
        Some(libc::SIGSEGV | libc::SIGABRT | libc::SIGBUS | libc::SIGILL | libc::SIGFPE) => {
            RestartCause::Crashed
        }
        Some(_) => RestartCause::Killed,
    }
}

/// The name of the signal that ended a child (`SIGTERM`; for an exit code of 128 + n, the
/// signal n it caught), or its number.
fn signal_name(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    let Some(signal) = status
        .signal()
        .or_else(|| status.code().filter(|c| *c > 128).map(|c| c - 128))
    else {
        return "none".to_string();
    };
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// Forwards stdout lines (counted in `read`) and logs stderr lines until stdout ends or
/// shutdown.
async fn pump(
    child: &mut Child,
    max_line: usize,
    tx: &mpsc::Sender<Line>,
    token: &CancellationToken,
    read: &mut u64,
) -> Ended {
    let Some(stdout) = child.stdout.take() else {
        return Ended::Eof;
    };
    if let Some(stderr) = child.stderr.take() {
        let pid = child.id();
        tokio::spawn(async move {
            // Bounded like stdout: a child writing without newlines cannot grow memory.
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            while let Ok((_, eof)) =
                read_record(&mut reader, &mut Newlines, &mut buf, max_line).await
            {
                if !buf.is_empty() {
                    info!(pid, line = to_text(&buf).trim_end(), "source stderr");
                }
                if eof {
                    break;
                }
            }
        });
    }
    let mut reader = BufReader::new(stdout);
    tokio::select! {
        ended = forward(&mut reader, max_line, tx, read) => ended,
        () = token.cancelled() => Ended::Closed,
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaps the child.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: plain kill(2) on our own child's pid, which is not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
            info!(pid, "source process stopped");
            return;
        }
    }
    let _ = child.kill().await;
    info!("source process killed");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::events::EventLog;
    use crate::self_stats::Stats;

    #[test]
    fn the_secret_variables_are_the_ones_the_config_reads_and_no_others() {
        for name in [
            "INFLUXDB_TOKEN",
            "INFLUXDB_PASSWORD",
            "MQTT_PASSWORD",
            "MQTT_SOURCE_PASSWORD",
            "HTTP_TOKEN",
            "IIOT_NODE_KEY_1",
            "IIOT_NODE_KEY_254",
        ] {
            assert!(is_secret(std::ffi::OsStr::new(name)), "{name}");
        }
        for name in ["PATH", "HOME", "RUST_LOG", "IIOT_NODE_KEY", "MY_HTTP_TOKEN"] {
            assert!(!is_secret(std::ffi::OsStr::new(name)), "{name}");
        }
    }

    fn restarts() -> (SourceContext, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let dir = std::env::temp_dir().join(format!("iiot-process-test-{}", std::process::id()));
        let (ctx, _) = SourceContext::new(
            EventLog::disabled(),
            stats.clone(),
            crate::quarantine::Quarantine::new(&dir),
        );
        (ctx, stats)
    }

    fn command(script: String) -> ProcessConfig {
        ProcessConfig {
            kind: crate::config::ProcessKind::Command,
            argv: vec!["sh".into(), "-c".into(), script],
            restart_initial: Duration::from_millis(50),
            restart_max: Duration::from_millis(100),
        }
    }

    fn restart_count(stats: &Stats) -> Vec<(&'static str, u64)> {
        RestartCause::ALL
            .iter()
            .map(|c| {
                let n = stats.source_restarts[*c as usize].load(Ordering::Relaxed);
                (c.label(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The bug this guards against: the parent-death signal is bound to the thread that
    /// forked, and runtime worker threads come and go (`block_in_place` hands a worker's role
    /// to a new thread; the old one exits after the pool's keep-alive). A healthy child was
    /// SIGTERMed and restarted while the gateway ran.
    #[test]
    fn the_child_lives_on_while_runtime_worker_threads_come_and_go() {
        let keep_alive = Duration::from_millis(100);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(keep_alive)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let signalled = dir.path().join("signalled");
        let script = format!(
            "trap 'echo TERM > {}; exit 143' TERM; while :; do echo \"$$\"; sleep 0.05; done",
            signalled.display()
        );
        let (restarts, stats) = restarts();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(1024);
            let token = CancellationToken::new();
            let source = tokio::spawn(run(command(script), 256, tx, token.clone(), restarts));
            let first = rx.recv().await.expect("a first line").text;
            // Ten rounds, each longer than the keep-alive: every round's block_in_place moves
            // the worker to a new thread, and the thread it left exits before the next.
            for _ in 0..10 {
                tokio::spawn(async {
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(30)));
                })
                .await
                .unwrap();
                tokio::time::sleep(keep_alive * 3).await;
                while let Ok(line) = rx.try_recv() {
                    assert_eq!(line.text, first, "the child was restarted");
                }
            }
            assert!(!signalled.exists(), "the running child was sent SIGTERM");
            assert!(
                restart_count(&stats).is_empty(),
                "{:?}",
                restart_count(&stats)
            );
            token.cancel();
            assert_eq!(source.await.unwrap(), SourceEnd::Cancelled);
        });
    }

    /// A board that resets every few seconds but delivers each time is working: its restarts
    /// stay at the first delay instead of growing toward the cap.
    #[tokio::test]
    async fn a_child_that_delivered_restarts_after_the_first_delay_again() {
        let (ctx, stats) = restarts();
        let mut cfg = command("echo line".into());
        cfg.restart_initial = Duration::from_millis(100);
        cfg.restart_max = Duration::from_secs(10);
        let (tx, mut rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        let source = tokio::spawn(run(cfg, 256, tx, token.clone(), ctx));
        rx.recv().await.unwrap();
        let first = std::time::Instant::now();
        for _ in 0..5 {
            rx.recv().await.unwrap();
        }
        // Five restarts at 50-100 ms each; growing they would take at least
        // 50 + 100 + 200 + 400 + 800 ms.
        let took = first.elapsed();
        assert!(
            took < Duration::from_millis(1400),
            "5 restarts took {took:?}"
        );
        // The sixth child may have exited already.
        let counted = restart_count(&stats);
        assert!(
            matches!(counted[..], [("exited", n)] if n >= 5),
            "{counted:?}"
        );
        token.cancel();
        source.await.unwrap();
    }

    #[tokio::test]
    async fn restarts_are_counted_by_cause() {
        let (restarts, stats) = restarts();
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        // First run exits 3, second is killed by SIGKILL, third crashes (SIGSEGV), fourth
        // catches SIGTERM and exits 143, then it stays.
        let script = format!(
            "echo x >> {runs}; n=$(wc -l < {runs}); echo \"run $n\"; \
             case $n in 1) exit 3;; 2) kill -KILL $$;; 3) kill -SEGV $$;; 4) exit 143;; esac; exec sleep 30",
            runs = runs.display()
        );
        let (tx, mut rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        let source = tokio::spawn(run(command(script), 256, tx, token.clone(), restarts));
        for n in 1..=5 {
            assert_eq!(rx.recv().await.unwrap().text, format!("run {n}"));
        }
        assert_eq!(
            restart_count(&stats),
            [("exited", 1), ("crashed", 1), ("killed", 2)]
        );
        token.cancel();
        source.await.unwrap();
    }
}
