//! Reading records of bounded length from any byte stream, one function for both kinds:
//! telemetry records as `records.rs` cuts them (newline bytes, literal `\n`, closed JSON
//! objects, `}{`), and plain lines for a child's stderr.
//!
//! Bytes past `max` in one record are discarded (the record is marked `cut`), so a device
//! that never sends a separator cannot grow memory. Invalid UTF-8 is replaced, never fatal.
//! A trailing `\r` is removed (CRLF devices).

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};
use tokio::sync::mpsc;

pub use super::records::Newlines;
use super::records::{Action, Separator, Splitter};
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

/// Reads records from `reader` until it ends, sending each (stamped now) to `tx`; `sent`
/// counts them.
pub async fn forward<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    tx: &mpsc::Sender<Line>,
    sent: &mut u64,
) -> Ended {
    let mut buf = Vec::with_capacity(256);
    let mut splitter = Splitter::default();
    loop {
        let (cut, eof) = match read_record(reader, &mut splitter, &mut buf, max).await {
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
            decoded: None,
            forwarded: None,
            handled: None,
            link: None,
        };
        if tx.send(line).await.is_err() {
            return Ended::Closed;
        }
        *sent += 1;
        if eof {
            return Ended::Eof;
        }
    }
}

/// Reads one record into `buf` (cleared first), keeping at most `max` bytes; `splitter`
/// (telemetry records: [`Splitter`]; plain lines: [`Newlines`]) carries the stream's state
/// from record to record. Returns (cut, eof): `eof` means the stream ended (buf may hold a
/// last unterminated record).
pub async fn read_record<R: AsyncBufRead + Unpin, S: Separator>(
    reader: &mut R,
    splitter: &mut S,
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
        let mut used = 0;
        let mut done = false;
        for &b in available {
            let action = splitter.step(b);
            if action != Action::EndBefore {
                used += 1;
            }
            match action {
                Action::Push | Action::PushEnd => {
                    if buf.len() < max {
                        buf.push(b);
                    } else if !cut {
                        cut = true;
                        splitter.cut();
                    }
                }
                Action::Drop => {}
                Action::End => {
                    // The `\` of a literal `\n` separator is not the record's.
                    if b == b'n' && buf.last() == Some(&b'\\') {
                        buf.pop();
                    }
                }
                Action::EndBefore => {}
            }
            if matches!(action, Action::PushEnd | Action::End | Action::EndBefore) {
                done = true;
                break;
            }
        }
        reader.consume(used);
        if done {
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
        let ended = forward(&mut reader, max, &tx, &mut 0).await;
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

    /// `tests/fixtures/vcp-node2-original.raw`: what a real Node 2 writes to its virtual COM
    /// port, JSON objects each followed by a literal backslash-n and no newline byte at all.
    #[tokio::test]
    async fn a_real_node2_stream_yields_every_record() {
        let raw = include_bytes!("../../tests/fixtures/vcp-node2-original.raw");
        assert!(!raw.contains(&b'\n'));
        for chunk in [1, 7, 4096] {
            let (tx, mut rx) = mpsc::channel(100);
            let mut reader = tokio::io::BufReader::with_capacity(chunk, &raw[..]);
            assert!(matches!(
                forward(&mut reader, 1024, &tx, &mut 0).await,
                Ended::Eof
            ));
            drop(tx);
            let mut got = Vec::new();
            while let Some(l) = rx.recv().await {
                got.push(l.text);
            }
            assert_eq!(got.len(), 10, "chunks of {chunk}: {got:?}");
            for (i, text) in got.iter().enumerate() {
                assert!(
                    text.starts_with("{\"ts\":") && text.ends_with("}}"),
                    "{i}: {text}"
                );
                assert!(text.contains(&format!("\"rx\":{}", i + 1)), "{i}: {text}");
            }
        }
    }

    #[tokio::test]
    async fn a_cut_record_does_not_hide_the_records_after_it() {
        let record = r#"{"ts":1,"n1":{"t":1.5}}"#;
        let mut input = format!("{{\"junk\":\"{}\"}}", "x".repeat(500));
        for _ in 0..3 {
            input.push_str(record);
        }
        let got = lines(input.as_bytes(), 64).await;
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].1, "the long record is cut");
        assert!(got[1..].iter().all(|(t, cut)| t == record && !cut));
    }

    #[tokio::test]
    async fn plain_lines_end_only_at_newlines_and_a_long_one_is_cut() {
        let input = b"{\"a\":1}{\"b\":2} \\n x\r\n0123456789\nlast";
        let mut reader = tokio::io::BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            let (cut, eof) = read_record(&mut reader, &mut Newlines, &mut buf, 8)
                .await
                .unwrap();
            got.push((to_text(&buf), cut));
            if eof {
                break;
            }
        }
        // `}{` and a literal `\n` do not end a plain line.
        let expected = [("{\"a\":1}{", true), ("01234567", true), ("last", false)];
        assert_eq!(got, expected.map(|(t, c)| (t.to_string(), c)));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let got = lines(b"\xff\xfe[x]\n", 100).await;
        assert_eq!(got[0].0, "\u{fffd}\u{fffd}[x]");
        // Noise right before an object is a record of its own.
        let got = lines(b"\xff\xfe{\"a\":1}\n", 100).await;
        assert_eq!(got[0].0, "\u{fffd}\u{fffd}");
        assert_eq!(got[1].0, "{\"a\":1}");
    }
}
