//! The `serial` source: the ST-Link virtual COM port carrying the firmware's bare JSON
//! lines. When the device disappears (unplugged, reset) the port is reopened with backoff.

use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lines::{forward, Ended};
use super::{SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::SerialConfig;
use crate::reading::Line;
use crate::telemetry::RestartCause;

/// A port that stayed open this long before failing resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Reads the port, reopening it, until `token` is cancelled.
pub async fn run(
    cfg: SerialConfig,
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> SourceEnd {
    let mut backoff = Backoff::new(cfg.restart_initial, cfg.restart_max);
    let path = cfg.path.display().to_string();
    // Whether the current outage was already logged: one warning per state change.
    let mut down_logged = false;
    loop {
        let opened = Instant::now();
        let mut was_open = false;
        let problem = match tokio_serial::new(&path, cfg.baud).open_native_async() {
            Ok(port) => {
                info!(path, baud = cfg.baud, "serial port opened");
                ctx.set_up(Ok(format!("serial: {path} open at {} baud", cfg.baud)));
                was_open = true;
                down_logged = false;
                let mut reader = BufReader::new(port);
                let mut read = 0;
                let ended = tokio::select! {
                    ended = forward(&mut reader, max_line, &tx, &mut read) => ended,
                    () = token.cancelled() => Ended::Closed,
                };
                // A device that delivered is a working device: the next reopen starts
                // quickly again, however short its run was.
                if read > 0 {
                    backoff.reset();
                }
                match ended {
                    Ended::Closed => return SourceEnd::Cancelled,
                    Ended::Eof => "device closed the port".to_string(),
                    Ended::Error(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if opened.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        ctx.set_up(Err(format!(
            "serial: {path}: {problem}; reopening with backoff (is the board plugged in? check [source] path)"
        )));
        if !down_logged {
            warn!(path, error = problem, reopen_in = ?delay, "serial port unavailable; reopening with backoff");
            down_logged = true;
        } else {
            debug!(path, error = problem, reopen_in = ?delay, "serial port still unavailable");
        }
        if was_open {
            ctx.restarted(
                RestartCause::DeviceLost,
                "serial",
                &format!("{path} lost ({problem}); reopening"),
            );
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = token.cancelled() => return SourceEnd::Cancelled,
        }
    }
}
