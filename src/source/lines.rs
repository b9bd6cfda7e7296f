//! Reading newline-terminated lines of bounded length from any byte stream.
//!
//! Bytes past `max` in one line are discarded (the line is marked `cut`), so a device that
//! never sends a newline cannot grow memory. Invalid UTF-8 is replaced, never fatal. A
//! trailing `\r` is removed (CRLF devices).

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};
use tokio::sync::mpsc;

use crate::reading::{now_ns, Line};

/// What ended a read loop.
#[derive(Debug)]
pub enum Ended {
    /// End of stream.
    Eof,
    /// The ingest stage is gone (shutdown).
    Closed,
    /// An I/O error.
    Error(std::io::Error),
}

/// Reads lines from `reader` until it ends, sending each (stamped now) to `tx`.
pub async fn forward<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    tx: &mpsc::Sender<Line>,
) -> Ended {
    let mut buf = Vec::with_capacity(256);
    loop {
        let (cut, eof) = match read_line(reader, &mut buf, max).await {
            Ok(r) => r,
            Err(e) => return Ended::Error(e),
        };
        if eof && buf.is_empty() {
            return Ended::Eof;
        }
        let line = Line {
            text: to_text(&buf),
            received_ns: now_ns(),
            cut,
        };
        if tx.send(line).await.is_err() {
            return Ended::Closed;
        }
        if eof {
            return Ended::Eof;
        }
    }
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes.
/// Returns (cut, eof): `eof` means the stream ended (buf may hold a last unterminated line).
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(bool, bool)> {
    buf.clear();
    let mut cut = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((cut, true));
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok((cut, false));
        }
    }
}

/// Bytes to text: lossy UTF-8, trailing `\r` removed.
pub fn to_text(buf: &[u8]) -> String {
    let buf = buf.strip_suffix(b"\r").unwrap_or(buf);
    String::from_utf8_lossy(buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let (tx, mut rx) = mpsc::channel(100);
        let mut reader = tokio::io::BufReader::with_capacity(7, input);
        let ended = forward(&mut reader, max, &tx).await;
        assert!(matches!(ended, Ended::Eof));
        drop(tx);
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push((l.text, l.cut));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_strips_crlf() {
        let got = lines(b"a\r\nbb\n\nlast", 100).await;
        let expected = [("a", false), ("bb", false), ("", false), ("last", false)];
        assert_eq!(got, expected.map(|(s, c)| (s.to_string(), c)));
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked_and_the_next_line_is_intact() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input, 16).await;
        assert_eq!(got, [("x".repeat(16), true), ("ok".to_string(), false)]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let got = lines(b"\xff\xfe{\"a\":1}\n", 100).await;
        assert_eq!(got[0].0, "\u{fffd}\u{fffd}{\"a\":1}");
    }
}
