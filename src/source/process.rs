//! The `probe-rs` and `command` sources: a supervised child process whose stdout carries
//! telemetry. Its stderr goes to the log. When it exits (board unplugged, RTT lost) it is
//! restarted with exponential backoff, and the restart is logged. On shutdown the child gets
//! SIGTERM, then SIGKILL after a grace period; on Linux it also gets SIGTERM if the gateway
//! itself dies (PR_SET_PDEATHSIG), so no child is ever left behind.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lines::{forward, read_line, to_text, Ended};
use super::SourceEnd;
use crate::backoff::Backoff;
use crate::config::ProcessConfig;
use crate::events::{EventKind, EventLog};
use crate::reading::Line;

/// A child that ran at least this long before exiting resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Time between SIGTERM and SIGKILL at shutdown.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Runs and restarts the child until `token` is cancelled.
pub async fn run(
    cfg: ProcessConfig,
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    events: EventLog,
) -> SourceEnd {
    let mut backoff = Backoff::new(cfg.restart_initial, cfg.restart_max);
    let program = cfg.argv[0].clone();
    loop {
        let started = Instant::now();
        match spawn(&cfg.argv) {
            Ok(mut child) => {
                info!(
                    program,
                    pid = child.id(),
                    kind = cfg.kind,
                    "source process started"
                );
                let ended = supervise(&mut child, max_line, &tx, &token).await;
                if token.is_cancelled() || matches!(ended, Ended::Closed) {
                    terminate(&mut child).await;
                    return SourceEnd::Cancelled;
                }
                let status = child.wait().await;
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                let text = match status {
                    Ok(status) => {
                        warn!(program, %status, restart_in = ?delay, "source process exited; restarting");
                        format!("{program} exited ({status}); restarting")
                    }
                    Err(error) => {
                        warn!(program, %error, restart_in = ?delay, "source process lost; restarting");
                        format!("{program} lost ({error}); restarting")
                    }
                };
                events.emit(EventKind::SourceRestarted, cfg.kind, &text);
                if sleep_or_cancel(delay, &token).await {
                    return SourceEnd::Cancelled;
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                let hint = if error.kind() == std::io::ErrorKind::NotFound {
                    "; is it installed and on PATH? (set [source] probe_rs or command)"
                } else {
                    ""
                };
                warn!(program, %error, restart_in = ?delay, "cannot start source process{hint}");
                if sleep_or_cancel(delay, &token).await {
                    return SourceEnd::Cancelled;
                }
            }
        }
    }
}

fn spawn(argv: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Forwards stdout lines and logs stderr lines until stdout ends or shutdown.
async fn supervise(
    child: &mut Child,
    max_line: usize,
    tx: &mpsc::Sender<Line>,
    token: &CancellationToken,
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
            while let Ok((_, eof)) = read_line(&mut reader, &mut buf, max_line).await {
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
        ended = forward(&mut reader, max_line, tx) => ended,
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

/// Sleeps `d`; true when cancelled first.
async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = token.cancelled() => true,
    }
}
