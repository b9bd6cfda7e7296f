//! The `stdin` and `file` sources: finite inputs. At end of input they return
//! [`SourceEnd::EndOfInput`] and the gateway drains what it holds, then exits.
//!
//! A recorded file may carry the receive time of each line as an RFC 3339 UTC prefix
//! (`2026-11-27T09:34:47.123456789Z <line>`, as written by `ts`-style loggers): replay keeps
//! those times (invariant 3) and, with `speed > 0`, keeps their pace scaled by `speed`.
//! Lines without the prefix are stamped when read and go as fast as they are read.

use std::time::{Duration, UNIX_EPOCH};

use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lines::{forward, read_record, to_text, Ended};
use super::records::Splitter;
use super::{SourceEnd, SourceError};
use crate::config::FileConfig;
use crate::reading::{now_ns, Line};

/// Reads standard input until it ends.
pub async fn stdin(
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
) -> Result<SourceEnd, SourceError> {
    let mut reader = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut read = 0;
    let ended = tokio::select! {
        ended = forward(&mut reader, max_line, &tx, &mut read) => ended,
        () = token.cancelled() => Ended::Closed,
    };
    match ended {
        Ended::Eof => Ok(SourceEnd::EndOfInput),
        Ended::Closed => Ok(SourceEnd::Cancelled),
        Ended::Error(source) => Err(SourceError::Read {
            what: "standard input".into(),
            cause: source,
        }),
    }
}

/// Replays a recorded file.
pub async fn file(
    cfg: FileConfig,
    max_line: usize,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
) -> Result<SourceEnd, SourceError> {
    let what = cfg.path.display().to_string();
    let f = tokio::fs::File::open(&cfg.path)
        .await
        .map_err(|source| SourceError::Open {
            what: what.clone(),
            cause: source,
        })?;
    let mut reader = BufReader::with_capacity(64 * 1024, f);
    let mut buf = Vec::new();
    let mut splitter = Splitter::default();
    let start = tokio::time::Instant::now();
    let mut first_recorded: Option<i64> = None;
    loop {
        let (cut, eof) = tokio::select! {
            r = read_record(&mut reader, &mut splitter, &mut buf, max_line) => r.map_err(|source| SourceError::Read { what: what.clone(), cause: source })?,
            () = token.cancelled() => return Ok(SourceEnd::Cancelled),
        };
        if eof && buf.is_empty() {
            return Ok(SourceEnd::EndOfInput);
        }
        let text = to_text(&buf);
        let line = match split_recorded_time(&text) {
            Some((ns, rest)) => {
                let first = *first_recorded.get_or_insert(ns);
                if cfg.speed > 0.0 {
                    let offset = Duration::from_nanos(u64::try_from(ns - first).unwrap_or(0));
                    let due = start + offset.div_f64(cfg.speed);
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = token.cancelled() => return Ok(SourceEnd::Cancelled),
                    }
                }
                Line {
                    text: rest.to_string(),
                    received_ns: ns,
                    cut,
                    decoded: None,
                    forwarded: None,
                    handled: None,
                    link: None,
                }
            }
            None => Line {
                text,
                received_ns: now_ns(),
                cut,
                decoded: None,
                forwarded: None,
                handled: None,
                link: None,
            },
        };
        if tx.send(line).await.is_err() {
            return Ok(SourceEnd::Cancelled);
        }
        if eof {
            return Ok(SourceEnd::EndOfInput);
        }
    }
}

/// `2026-11-27T09:34:47.123Z rest` → (ns since epoch, `rest`).
fn split_recorded_time(line: &str) -> Option<(i64, &str)> {
    let (first, rest) = line.split_once([' ', '\t'])?;
    if !first.as_bytes().first()?.is_ascii_digit() || !first.contains('T') {
        return None;
    }
    let t = humantime::parse_rfc3339(first).ok()?;
    let ns = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    Some((ns, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_times_are_split_off() {
        let (ns, rest) = split_recorded_time("2025-11-27T08:00:00.5Z [INFO] x").unwrap();
        assert_eq!(ns, 1_764_230_400_500_000_000);
        assert_eq!(rest, "[INFO] x");
        assert!(split_recorded_time("[INFO] JSON sent via VCP: {}").is_none());
        assert!(split_recorded_time("{\"ts\":1}").is_none());
        assert!(split_recorded_time("2025-13-45Tgarbage rest").is_none());
    }
}
