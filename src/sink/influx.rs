//! The InfluxDB sink: batches of line protocol over HTTP, gzip-compressed.
//!
//! Delivery semantics: the cursor moves only after a 2xx. Network errors, 5xx, 429 and 503
//! (honouring `Retry-After`), 401/403 and 404 are retried with exponential backoff and
//! jitter; the readings stay in the outbox meanwhile. A 400/413/422 means the server refused
//! the data itself: the batch is split in halves until the refused lines are alone, and
//! those go to the quarantine file with the server's message, so one bad point never blocks
//! the rest. Every resend is the same point (same measurement, tags and timestamp), so the
//! database never holds a duplicate.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::StatusCode;
use tracing::debug;

use super::lineproto::encode;
use super::{Cursor, LinkState, SinkContext, SinkError};
use crate::backoff::Backoff;
use crate::config::{InfluxApi, InfluxConfig};
use crate::reading::StoredReading;

/// Cursor key in the outbox.
pub const NAME: &str = "influxdb";
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a write did not succeed.
#[derive(Debug)]
enum WriteError {
    /// The server refused the data itself (400/413/422): split and quarantine.
    Rejected(String),
    /// Try again later; `retry_after` when the server said when.
    Retry {
        kind: &'static str,
        detail: String,
        retry_after: Option<Duration>,
    },
}

/// An HTTP client for one InfluxDB write endpoint.
pub struct Writer {
    http: reqwest::Client,
    cfg: InfluxConfig,
}

impl Writer {
    /// A writer for `cfg`.
    pub fn new(cfg: InfluxConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .build()
            .unwrap_or_default();
        Writer { http, cfg }
    }

    /// Checks that the server answers (`/health` for v2, `/ping` for v1).
    pub async fn probe(&self) -> Result<(), String> {
        let path = match self.cfg.api {
            InfluxApi::V2 { .. } => "/health",
            InfluxApi::V1 { .. } => "/ping",
        };
        let url = format!("{}{path}", self.cfg.url);
        match self.http.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("{url} answered {}", resp.status())),
            Err(e) => Err(format!("{url}: {}", error_chain(&e))),
        }
    }

    async fn write(&self, body: &str) -> Result<(), WriteError> {
        let mut req = match &self.cfg.api {
            InfluxApi::V2 { org, bucket, token } => {
                let req = self
                    .http
                    .post(format!("{}/api/v2/write", self.cfg.url))
                    .query(&[
                        ("org", org.as_str()),
                        ("bucket", bucket.as_str()),
                        ("precision", "ns"),
                    ]);
                match token {
                    Some(token) => req.header("Authorization", format!("Token {}", token.expose())),
                    None => req,
                }
            }
            InfluxApi::V1 {
                database,
                username,
                password,
            } => {
                let req = self
                    .http
                    .post(format!("{}/write", self.cfg.url))
                    .query(&[("db", database.as_str()), ("precision", "ns")]);
                match username {
                    Some(user) => req.basic_auth(user, password.as_ref().map(|p| p.expose())),
                    None => req,
                }
            }
        };
        req = req.header("Content-Type", "text/plain; charset=utf-8");
        req = if self.cfg.gzip {
            let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = gz.write_all(body.as_bytes());
            req.header("Content-Encoding", "gzip")
                .body(gz.finish().unwrap_or_default())
        } else {
            req.body(body.to_string())
        };
        let resp = req.send().await.map_err(|e| WriteError::Retry {
            kind: if error_chain(&e).contains("dns error") {
                "name resolution failed"
            } else if e.is_connect() {
                "unreachable"
            } else {
                "request failed"
            },
            detail: error_chain(&e),
            retry_after: None,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = resp.text().await.unwrap_or_default();
        let message = format!("{status}: {}", text.trim());
        Err(match status {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY => WriteError::Rejected(message),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => WriteError::Retry {
                kind: "authentication failed",
                detail: format!("{message} (check [influxdb] token / username / password)"),
                retry_after,
            },
            StatusCode::NOT_FOUND => WriteError::Retry {
                kind: "database or bucket not found",
                detail: format!("{message} (create it, or fix [influxdb] bucket / database / org)"),
                retry_after,
            },
            _ => WriteError::Retry {
                kind: "server error",
                detail: message,
                retry_after,
            },
        })
    }
}

/// Runs the sink until finished or aborted.
pub async fn run(cfg: InfluxConfig, ctx: SinkContext) -> Result<(), SinkError> {
    let mut cursor = Cursor::load(NAME, &ctx)?;
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
    let mut link = LinkState::new(ctx.events.clone());
    let target = cfg.url.clone();
    let batch_size = cfg.batch_size;
    let flush_interval = cfg.flush_interval;
    let writer = Writer::new(cfg);
    // A known state before the first write (for `/readyz`): the server answers or not.
    tokio::select! {
        probe = writer.probe() => ctx.status.set_error(probe.err().map(|e| format!("unreachable: {e}"))),
        () = ctx.abort.cancelled() => return Ok(()),
    }
    let mut committed = ctx.committed.clone();
    loop {
        committed.borrow_and_update();
        let finishing = ctx.finish.is_cancelled();
        let mut batch = ctx.outbox.read_after(cursor.value, batch_size)?;
        if batch.is_empty() {
            cursor.persist(&ctx)?;
            if finishing {
                return Ok(());
            }
            tokio::select! {
                () = ctx.abort.cancelled() => return Ok(()),
                () = ctx.finish.cancelled() => continue,
                changed = committed.changed() => {
                    if changed.is_err() {
                        // The ingest stage ended; `finish` follows.
                        ctx.finish.cancelled().await;
                    }
                    continue;
                }
            }
        }
        if batch.len() < batch_size && !finishing {
            // Let the batch fill for up to one flush interval.
            tokio::select! {
                () = tokio::time::sleep(flush_interval) => {}
                () = ctx.finish.cancelled() => {}
                () = ctx.abort.cancelled() => return Ok(()),
            }
            batch = ctx.outbox.read_after(cursor.value, batch_size)?;
        }
        loop {
            for r in &batch {
                cursor.sending(r, &ctx);
            }
            match deliver(&writer, &batch, &ctx).await {
                Ok(()) => {
                    backoff.reset();
                    link.up(NAME, &target);
                    ctx.status.set_error(None);
                    if let Some(last) = batch.last() {
                        cursor.advance(last.seq, &ctx)?;
                        cursor.persist(&ctx)?;
                    }
                    break;
                }
                Err((kind, detail, retry_after)) => {
                    let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
                    ctx.status.set_error(Some(format!("{kind}: {detail}")));
                    link.down(NAME, &target, kind, &detail, delay);
                    debug!(attempt = backoff.attempts(), retry_in = ?delay, "influxdb retry scheduled");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = ctx.abort.cancelled() => return Ok(()),
                    }
                    // Read the batch again: during the outage the disk budget may have
                    // dropped some of it (on_full = "drop_oldest", counted as dropped), and
                    // those readings must not reach the database after all.
                    batch = ctx.outbox.read_after(cursor.value, batch_size)?;
                    if batch.is_empty() {
                        break;
                    }
                }
            }
        }
    }
}

/// Writes `batch`, splitting refused batches down to the refused lines (quarantined).
async fn deliver(
    writer: &Writer,
    batch: &[StoredReading],
    ctx: &SinkContext,
) -> Result<(), (&'static str, String, Option<Duration>)> {
    let mut pending = vec![batch];
    while let Some(part) = pending.pop() {
        let mut body = String::with_capacity(part.len() * 64);
        for r in part {
            encode(r, &mut body);
        }
        match writer.write(&body).await {
            Ok(()) => {}
            Err(WriteError::Rejected(message)) if part.len() == 1 => {
                ctx.quarantine.add("influxdb", &message, body.trim_end());
            }
            Err(WriteError::Rejected(_)) => {
                let (left, right) = part.split_at(part.len() / 2);
                pending.push(right);
                pending.push(left);
            }
            Err(WriteError::Retry {
                kind,
                detail,
                retry_after,
            }) => return Err((kind, detail, retry_after)),
        }
    }
    Ok(())
}

/// An error and its causes, `a: b: c`, without secrets (URLs here carry none).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
