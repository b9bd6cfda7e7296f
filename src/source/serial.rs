//! The `serial` source: the ST-Link virtual COM port carrying the firmware's bare JSON
//! lines. When the device disappears (unplugged, reset) the port is reopened with backoff.
//! Commands to the nodes go the other way on the same port (`relay.rs`): the `cmd` lines
//! written to Node 2, and Node 2's lines about them read among the JSON lines.

use std::time::Duration;

use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lines::{forward, Ended};
use super::supervisor::{self, Supervised};
use super::{SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::SerialConfig;
use crate::reading::Line;
use crate::self_stats::RestartCause;

/// Reads the port, reopening it, until `token` is cancelled.
pub async fn run(
    cfg: SerialConfig,
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> SourceEnd {
    let backoff = Backoff::new(cfg.restart_initial, cfg.restart_max);
    let port = Port {
        path: cfg.path.display().to_string(),
        baud: cfg.baud,
        max_line,
        tx: &tx,
        ctx: &ctx,
        down_logged: false,
    };
    supervisor::supervise(port, backoff, &token).await
}

/// The serial port as the supervisor sees it.
struct Port<'a> {
    path: String,
    baud: u32,
    max_line: usize,
    tx: &'a mpsc::Sender<Line>,
    ctx: &'a SourceContext,
    /// Whether the current outage was already logged: one warning per state change.
    down_logged: bool,
}

/// How one run of the port ended.
struct RunEnd {
    /// Why it is unavailable now.
    problem: String,
    /// It had been open (a device lost, not one that never came).
    was_open: bool,
    /// Lines delivered while it was open.
    read: u64,
}

impl Supervised for Port<'_> {
    type End = RunEnd;

    async fn run_once(&mut self, stop: &CancellationToken) -> Option<RunEnd> {
        let path = &self.path;
        let port = match tokio_serial::new(path, self.baud).open_native_async() {
            Ok(port) => port,
            Err(e) => {
                return Some(RunEnd {
                    problem: e.to_string(),
                    was_open: false,
                    read: 0,
                })
            }
        };
        info!(path, baud = self.baud, "serial port opened");
        self.ctx
            .set_up(Ok(format!("serial: {path} open at {} baud", self.baud)));
        self.down_logged = false;
        let (read_half, mut write_half) = tokio::io::split(port);
        let mut reader = BufReader::new(read_half);
        let mut read = 0;
        let downlink = self.ctx.downlink.as_ref();
        // Every line goes to the ingest stage; Node 2's lines about commands to the queue too.
        let (lines, mut seen) = mpsc::channel::<Line>(64);
        let forwarding = async {
            let ended = forward(&mut reader, self.max_line, &lines, &mut read).await;
            drop(lines);
            ended
        };
        let tx = self.tx;
        let relaying = async {
            while let Some(line) = seen.recv().await {
                if let Some(downlink) = downlink {
                    super::relay::report(downlink, &line.text).await;
                }
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        };
        let writing = async {
            match downlink {
                Some(downlink) => super::relay::write_commands(&mut write_half, downlink).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            (ended, ()) = async { tokio::join!(forwarding, relaying) } => ended,
            why = writing => Ended::Error(std::io::Error::other(why)),
            () = stop.cancelled() => Ended::Closed,
        };
        let problem = match ended {
            Ended::Closed => return None,
            Ended::Eof => "device closed the port".to_string(),
            Ended::Error(e) => e.to_string(),
        };
        Some(RunEnd {
            problem,
            was_open: true,
            read,
        })
    }

    fn delivered(end: &RunEnd) -> bool {
        end.read > 0
    }

    fn restarting(&mut self, end: RunEnd, delay: Duration) {
        let (path, problem) = (&self.path, &end.problem);
        self.ctx.set_up(Err(format!(
            "serial: {path}: {problem}; reopening with backoff (is the board plugged in? check [source] path)"
        )));
        if !self.down_logged {
            warn!(path, error = problem, reopen_in = ?delay, "serial port unavailable; reopening with backoff");
            self.down_logged = true;
        } else {
            debug!(path, error = problem, reopen_in = ?delay, "serial port still unavailable");
        }
        if end.was_open {
            self.ctx.restarted(
                RestartCause::DeviceLost,
                "serial",
                &format!("{path} lost ({problem}); reopening"),
            );
        }
    }
}
