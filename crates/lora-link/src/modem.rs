//! An incremental parser of what the RYLR998 modem writes on its UART, fed arbitrary byte
//! chunks (one byte at a time, or many frames fused together), yielding one [`Event`] at a
//! time. A state machine over a fixed window, like rumqttc's `state.rs`: no I/O, no
//! allocation, no panic.
//!
//! What the modem writes, each ending in `\r\n`:
//! - `+RCV=<sender>,<len>,<data>,<rssi>,<snr>`: `data` is `len` raw bytes (1 to 240) and may
//!   hold any byte, `\n`, `\r` and `,` included, so a frame is cut by its length field, never
//!   by a delimiter;
//! - `+OK`, `+ERR=<code>`, `+READY` (after power-up or `AT+RESET`), and query answers such as
//!   `+ADDRESS=2` or `+PARAMETER=7,9,1,7`.
//!
//! Anything else is noise ([`Event::Garbage`]): bytes up to the next `\n`, or up to the next
//! `+` (every modem line starts with one). A line that starts like modem output but breaks
//! (a bad header, a frame whose bytes after the data are not `,<rssi>,<snr>\r\n`, an
//! oversized length, a line too long) is [`Event::Malformed`], and parsing resumes at the
//! byte after its `+`: the window still holds the bytes, so a frame that a truncated one
//! swallowed is found again. Blank lines are skipped.

use core::fmt;

/// Bytes the parser holds at most: a longest frame (`+RCV=65535,240,` + 240 bytes +
/// `,-32768,-32768\r\n`, 272 bytes) and room for what follows.
pub const WINDOW: usize = 512;
/// Most data bytes in one frame.
pub const MAX_DATA: usize = 240;
/// Longest reply line (`+OK`, `+ERR=..`, query answers) before it counts as malformed.
pub const MAX_REPLY: usize = 96;

const RCV: &[u8] = b"+RCV=";

/// One received radio frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The sender's `AT+ADDRESS`.
    pub sender: u16,
    /// The frame's bytes, exactly `len` of them.
    pub data: &'a [u8],
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// Signal-to-noise ratio, dB.
    pub snr: i16,
}

/// Why a line that looked like modem output was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// `+RCV=` not followed by `<sender>,<len>,` (digits, in range).
    BadHeader,
    /// The length field is 0 or over 240.
    BadLength,
    /// The bytes after the data are not `,<rssi>,<snr>\r\n`: the length was wrong or the
    /// frame was cut.
    BadTail,
    /// `+ERR=` without a number.
    BadError,
    /// A reply line longer than [`MAX_REPLY`], or one that is not printable text.
    BadReply,
    /// The input ended (or [`ModemParser::flush`] was called) inside a frame.
    Truncated,
}

impl Malformed {
    /// A short description.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadHeader => "bad +RCV header",
            Malformed::BadLength => "+RCV length not 1 to 240",
            Malformed::BadTail => "+RCV data not followed by ,<rssi>,<snr>",
            Malformed::BadError => "+ERR without a code",
            Malformed::BadReply => "reply line too long or not text",
            Malformed::Truncated => "frame cut off",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the modem said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A radio frame.
    Frame(Frame<'a>),
    /// `+OK`: the last command succeeded.
    Ok,
    /// `+ERR=<code>`: the last command failed (see [`error_meaning`]).
    Error(u16),
    /// `+READY`: the modem (re)started and lost its settings.
    Ready,
    /// A query answer `+<key>=<value>`, e.g. `ADDRESS` / `2`.
    Value {
        /// Upper-case name.
        key: &'a str,
        /// The text after `=`.
        value: &'a str,
    },
    /// Bytes that are not modem output (line noise, a wrong baud rate).
    Garbage(&'a [u8]),
    /// A line that started like modem output but broke; `bytes` are what was held of it.
    Malformed {
        /// What was wrong.
        reason: Malformed,
        /// The line as far as it was read (for a frame: from `+RCV=` on).
        bytes: &'a [u8],
    },
}

/// What `+ERR=<code>` means, from public summaries of the vendor's AT guide (unverified).
pub fn error_meaning(code: u16) -> &'static str {
    match code {
        1 => "no CRLF at the end of the command",
        2 => "the command does not start with AT",
        4 => "unknown command",
        5 => "data length does not match",
        10 => "transmit timeout",
        12 => "CRC error",
        13 => "data over 240 bytes",
        14 => "flash write failed",
        15 => "unknown error",
        17 => "last transmission not finished",
        18 => "preamble value not allowed",
        19 => "receive header error",
        _ => "not a documented code",
    }
}

/// The parser: feed bytes with [`ModemParser::feed`], take events with
/// [`ModemParser::next_event`] until it returns `None`, repeat.
#[derive(Clone)]
pub struct ModemParser {
    buf: [u8; WINDOW],
    start: usize,
    end: usize,
    /// Bytes to drop before the next event is parsed (the one just returned).
    taken: usize,
}

impl Default for ModemParser {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ModemParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModemParser")
            .field("held", &self.held())
            .finish()
    }
}

/// What parsing the window's front found.
enum Step {
    /// Not enough bytes yet.
    More,
    /// Drop this many bytes silently (blank lines).
    Skip(usize),
    /// An event; then drop `consume` bytes (for a malformed frame only its `+`, so parsing
    /// resumes inside it).
    Event { consume: usize, kind: Kind },
}

#[derive(Clone, Copy)]
enum Kind {
    Frame {
        sender: u16,
        data_at: usize,
        data_len: usize,
        rssi: i16,
        snr: i16,
    },
    Ok,
    Error(u16),
    Ready,
    Value {
        key_len: usize,
        value_at: usize,
        value_len: usize,
    },
    Garbage {
        len: usize,
    },
    Malformed {
        reason: Malformed,
        len: usize,
    },
}

impl ModemParser {
    /// An empty parser.
    pub const fn new() -> Self {
        ModemParser {
            buf: [0; WINDOW],
            start: 0,
            end: 0,
            taken: 0,
        }
    }

    /// Bytes held that no returned event has consumed yet.
    pub fn held(&self) -> usize {
        (self.end - self.start).saturating_sub(self.taken)
    }

    /// Takes as many bytes of `input` as fit; returns how many. Takes none only while the
    /// window is full, and [`ModemParser::next_event`] always frees room then.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        self.consume_taken();
        if self.start > 0 && self.end + input.len() > WINDOW {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = input.len().min(WINDOW - self.end);
        match (self.buf.get_mut(self.end..self.end + n), input.get(..n)) {
            (Some(dst), Some(src)) => {
                dst.copy_from_slice(src);
                self.end += n;
                n
            }
            _ => 0,
        }
    }

    /// The next complete event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        let kind = self.next_kind()?;
        Some(self.event(kind))
    }

    /// Ends whatever is held, one event per call: the next complete event if there is one,
    /// else a partial line starting with `+` becomes [`Malformed::Truncated`] (dropping only its
    /// `+`, so a frame it swallowed is found on the next call) and other bytes up to the next
    /// `+` [`Event::Garbage`]. Call at end of input or when the line went quiet, until it
    /// returns `None`.
    pub fn flush(&mut self) -> Option<Event<'_>> {
        if let Some(kind) = self.next_kind() {
            return Some(self.event(kind));
        }
        let window = self.buf.get(self.start..self.end).unwrap_or(&[]);
        if window.is_empty() {
            return None;
        }
        let (kind, consume) = if window.first() == Some(&b'+') {
            let len = window.len();
            (
                Kind::Malformed {
                    reason: Malformed::Truncated,
                    len,
                },
                1,
            )
        } else {
            let len = window
                .iter()
                .position(|b| *b == b'+')
                .unwrap_or(window.len());
            (Kind::Garbage { len }, len)
        };
        self.taken = consume;
        Some(self.event(kind))
    }

    /// Parses the next event, marking its bytes as taken.
    fn next_kind(&mut self) -> Option<Kind> {
        self.consume_taken();
        loop {
            let window = self.buf.get(self.start..self.end).unwrap_or(&[]);
            let full = window.len() >= WINDOW;
            match parse(window, full) {
                Step::More => return None,
                Step::Skip(n) => self.start += n,
                Step::Event { consume, kind } => {
                    self.taken = consume.max(1);
                    return Some(kind);
                }
            }
        }
    }

    fn consume_taken(&mut self) {
        self.start = (self.start + self.taken).min(self.end);
        self.taken = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn event(&self, kind: Kind) -> Event<'_> {
        let w = self.buf.get(self.start..self.end).unwrap_or(&[]);
        let slice = |at: usize, len: usize| w.get(at..at + len).unwrap_or(&[]);
        let text = |at: usize, len: usize| core::str::from_utf8(slice(at, len)).unwrap_or("");
        match kind {
            Kind::Frame {
                sender,
                data_at,
                data_len,
                rssi,
                snr,
            } => Event::Frame(Frame {
                sender,
                data: slice(data_at, data_len),
                rssi,
                snr,
            }),
            Kind::Ok => Event::Ok,
            Kind::Error(code) => Event::Error(code),
            Kind::Ready => Event::Ready,
            Kind::Value {
                key_len,
                value_at,
                value_len,
            } => Event::Value {
                key: text(1, key_len),
                value: text(value_at, value_len),
            },
            Kind::Garbage { len } => Event::Garbage(slice(0, len)),
            Kind::Malformed { reason, len } => Event::Malformed {
                reason,
                bytes: slice(0, len),
            },
        }
    }
}

/// Parses the front of `w`. `full`: no more bytes can come before this is decided.
fn parse(w: &[u8], full: bool) -> Step {
    let Some(&first) = w.first() else {
        return Step::More;
    };
    if first == b'\r' || first == b'\n' {
        let n = w
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        return Step::Skip(n);
    }
    if first != b'+' {
        // Noise: up to and with the next `\n`, or up to the next `+`.
        return match w.iter().position(|b| *b == b'\n' || *b == b'+') {
            Some(i) => {
                let len = if w.get(i) == Some(&b'\n') { i + 1 } else { i };
                garbage(len)
            }
            None if full => garbage(w.len()),
            None => Step::More,
        };
    }
    if w.len() < RCV.len() && RCV.starts_with(w) && !full {
        return Step::More;
    }
    if w.starts_with(RCV) {
        return frame(w, full);
    }
    reply(w, full)
}

fn garbage(len: usize) -> Step {
    Step::Event {
        consume: len,
        kind: Kind::Garbage { len },
    }
}

/// A line that broke: shows `len` bytes, drops `consume`.
fn malformed(reason: Malformed, len: usize, consume: usize) -> Step {
    Step::Event {
        consume,
        kind: Kind::Malformed { reason, len },
    }
}

/// How a number field ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Comma,
    /// `\r\n` or a bare `\n`.
    Eol,
}

/// Result of reading one number field.
enum Field {
    /// The number and the index just past its terminator.
    Done(i32, usize),
    More,
    /// The index of the byte that broke the field.
    Bad(usize),
}

/// Reads a decimal of 1 to 5 digits (with a leading `-` when `signed`) at `at`, ended by
/// `end`.
fn number(w: &[u8], at: usize, end: End, signed: bool) -> Field {
    let mut i = at;
    let negative = signed && w.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_at = i;
    let mut value: i32 = 0;
    loop {
        let Some(&b) = w.get(i) else {
            return Field::More;
        };
        if b.is_ascii_digit() {
            if i - digits_at >= 5 {
                return Field::Bad(i);
            }
            value = value * 10 + i32::from(b - b'0');
            i += 1;
            continue;
        }
        if i == digits_at {
            return Field::Bad(i);
        }
        let value = if negative { -value } else { value };
        return match (end, b) {
            (End::Comma, b',') | (End::Eol, b'\n') => Field::Done(value, i + 1),
            (End::Eol, b'\r') => match w.get(i + 1) {
                Some(b'\n') => Field::Done(value, i + 2),
                Some(_) => Field::Bad(i + 1),
                None => Field::More,
            },
            _ => Field::Bad(i),
        };
    }
}

/// `+RCV=<sender>,<len>,<data>,<rssi>,<snr>\r\n`.
fn frame(w: &[u8], full: bool) -> Step {
    // A broken frame shows its bytes up to the one that broke it (the same however the
    // input was cut) and drops only its `+`.
    let bad = |reason, upto: usize| malformed(reason, (upto + 1).min(w.len()), 1);
    let more = || {
        if full {
            malformed(Malformed::Truncated, w.len(), 1)
        } else {
            Step::More
        }
    };
    let field = |at, end, signed| match number(w, at, end, signed) {
        Field::Done(n, next) => Ok((n, next)),
        Field::More => Err(None),
        Field::Bad(i) => Err(Some(i)),
    };
    let (sender, at) = match field(RCV.len(), End::Comma, false) {
        Ok((n, at)) => match u16::try_from(n) {
            Ok(n) => (n, at),
            Err(_) => return bad(Malformed::BadHeader, at - 1),
        },
        Err(None) => return more(),
        Err(Some(i)) => return bad(Malformed::BadHeader, i),
    };
    let (len, data_at) = match field(at, End::Comma, false) {
        Ok(found) => found,
        Err(None) => return more(),
        Err(Some(i)) => return bad(Malformed::BadHeader, i),
    };
    let data_len = match usize::try_from(len) {
        Ok(n) if (1..=MAX_DATA).contains(&n) => n,
        _ => return bad(Malformed::BadLength, data_at - 1),
    };
    let tail = data_at + data_len;
    match w.get(tail) {
        None => return more(),
        Some(b',') => {}
        Some(_) => return bad(Malformed::BadTail, tail),
    }
    let (rssi, at) = match field(tail + 1, End::Comma, true) {
        Ok(found) => found,
        Err(None) => return more(),
        Err(Some(i)) => return bad(Malformed::BadTail, i),
    };
    let (snr, end) = match field(at, End::Eol, true) {
        Ok(found) => found,
        Err(None) => return more(),
        Err(Some(i)) => return bad(Malformed::BadTail, i),
    };
    match (i16::try_from(rssi), i16::try_from(snr)) {
        (Ok(rssi), Ok(snr)) => Step::Event {
            consume: end,
            kind: Kind::Frame {
                sender,
                data_at,
                data_len,
                rssi,
                snr,
            },
        },
        _ => bad(Malformed::BadTail, end - 1),
    }
}

/// `+OK`, `+READY`, `+ERR=<code>`, `+<KEY>=<value>`.
fn reply(w: &[u8], full: bool) -> Step {
    // A reply ends at `\n`; a `+` before it starts the next line (this one's end was lost).
    // Only the first MAX_REPLY + 2 bytes are looked at, so the outcome does not depend on how
    // much more the window happens to hold.
    let head = w.get(..w.len().min(MAX_REPLY + 2)).unwrap_or(w);
    let (line_len, consumed) = match head.iter().skip(1).position(|b| *b == b'\n' || *b == b'+') {
        Some(i) if head.get(i + 1) == Some(&b'\n') => (i + 1, i + 2),
        Some(i) => return malformed(Malformed::BadReply, i + 1, i + 1),
        None if head.len() >= MAX_REPLY + 2 || full => {
            let len = head.len().min(MAX_REPLY + 1);
            return malformed(Malformed::BadReply, len, len);
        }
        None => return Step::More,
    };
    let raw = w.get(..line_len).unwrap_or(&[]);
    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
    let event = |kind| Step::Event {
        consume: consumed,
        kind,
    };
    if line.len() > MAX_REPLY || !line.iter().all(|b| (0x20..0x7F).contains(b)) {
        return malformed(Malformed::BadReply, consumed, consumed);
    }
    match line {
        b"+OK" => return event(Kind::Ok),
        b"+READY" => return event(Kind::Ready),
        _ => {}
    }
    if let Some(code) = line.strip_prefix(b"+ERR=") {
        return match decimal_u16(code) {
            Some(code) => event(Kind::Error(code)),
            None => malformed(Malformed::BadError, consumed, consumed),
        };
    }
    let body = line.get(1..).unwrap_or(&[]);
    let key_len = body
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
        .count();
    match body.get(key_len) {
        Some(b'=') if key_len > 0 => event(Kind::Value {
            key_len,
            value_at: key_len + 2,
            value_len: body.len() - key_len - 1,
        }),
        None if key_len > 0 => event(Kind::Value {
            key_len,
            value_at: key_len + 1,
            value_len: 0,
        }),
        _ => event(Kind::Garbage { len: consumed }),
    }
}

/// 1 to 5 ASCII digits as a u16.
fn decimal_u16(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}
