//! Where one telemetry record ends in a byte stream: pure, one byte at a time, no I/O.
//!
//! A real Node 2 does not end its records with a newline byte: it writes each JSON object
//! followed by a literal backslash-n (two characters), so a reader waiting for `\n` never
//! sees a record. Other streams end records with `\r\n` or `\n`, or put objects back to back
//! (`}{`). A record ends at:
//!
//! - a newline byte (always; a trailing `\r` is the reader's to strip);
//! - for a record that starts with `{` (bare JSON, as on the virtual COM port): the `}` that
//!   closes it. What follows until the next record (`\r`, `\n`, spaces, a literal `\n`) is
//!   skipped. The record is complete the moment it closes: no waiting for the next one;
//! - a literal `\n` outside a JSON string: in a defmt line (`[INFO] JSON sent via VCP: {..}\n
//!   (src/main.rs:573)`) the rest of the line is its location suffix and is skipped up to the
//!   newline byte, unless a `{` starts a record there first;
//! - a `{` right after a `}`, which no JSON object holds outside a string (`}{`), even in a
//!   string: telemetry strings are short names, and this rule must hold when a lost quote
//!   put the string tracking out of step. For the same reason a literal `\n` right after a
//!   `}` always ends a record.
//!
//! Corruption cannot hold records hostage: a JSON string longer than [`MAX_STRING`] bytes
//! means a quote was lost, and string tracking stops for that record; a record cut at the
//! reader's length limit ([`Splitter::cut`]) skips ahead to the next `}{`, literal `\n` or
//! newline, whatever it is inside.

/// A JSON string longer than this is taken for a lost quote (telemetry strings are short).
pub const MAX_STRING: usize = 256;

/// What to do with the byte just stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Append it to the record.
    Push,
    /// Drop it.
    Drop,
    /// Append it; the record is complete.
    PushEnd,
    /// Drop it; the record is complete without it. A `\` just before it (the first half of a
    /// literal `\n`) is not part of the record either.
    End,
    /// The record is complete without this byte, which starts the next one: step it again.
    EndBefore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte of a record yet (leading blanks are kept: the record's kind is not known).
    Start,
    /// A record that started with `{`.
    Bare,
    /// Any other record (defmt lines, probe-rs output, noise).
    Line,
    /// After a bare record closed: separators are skipped.
    Between,
    /// After a literal `\n` in a line: the rest of the line is skipped.
    Tail,
    /// After the record was cut: skipping to the next separator.
    Discard,
}

/// Where records end in a stream: fed every byte of it, in order.
pub trait Separator {
    /// What to do with `b`, the next byte of the stream.
    fn step(&mut self, b: u8) -> Action;

    /// The reader cut the current record at its length limit.
    fn cut(&mut self) {}
}

/// Plain lines: a record ends at each newline byte (a child's stderr).
#[derive(Debug, Default, Clone, Copy)]
pub struct Newlines;

impl Separator for Newlines {
    fn step(&mut self, b: u8) -> Action {
        match b {
            b'\n' => Action::End,
            _ => Action::Push,
        }
    }
}

impl Separator for Splitter {
    fn step(&mut self, b: u8) -> Action {
        Splitter::step(self, b)
    }

    fn cut(&mut self) {
        Splitter::cut(self);
    }
}

/// The telemetry record splitter. Feed every byte of the stream to [`Splitter::step`] in
/// order.
#[derive(Debug, Clone)]
pub struct Splitter {
    state: State,
    /// `{`/`[` nesting of the record's JSON, once its first `{` was seen.
    depth: u32,
    /// A `{` was seen in this record.
    json: bool,
    in_string: bool,
    /// Inside a string: the previous byte was an escaping `\`.
    escaped: bool,
    /// Bytes of the current string so far.
    string_len: usize,
    /// A string ran past [`MAX_STRING`]: strings are no longer tracked in this record.
    strings_broken: bool,
    /// The previous byte, and the one before it.
    prev: u8,
    prev2: u8,
    /// A bare record was read from this stream (a virtual COM port): a `{` after noise then
    /// starts a record of its own instead of hiding in the noise's.
    bare_stream: bool,
    /// The current record holds a space (a log line, not noise).
    spaced: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            state: State::Start,
            depth: 0,
            json: false,
            in_string: false,
            escaped: false,
            string_len: 0,
            strings_broken: false,
            prev: 0,
            prev2: 0,
            bare_stream: false,
            spaced: false,
        }
    }
}

impl Splitter {
    /// What to do with `b`, the next byte of the stream.
    pub fn step(&mut self, b: u8) -> Action {
        match self.state {
            State::Start => self.start(b),
            State::Bare | State::Line => self.record(b),
            State::Between => match b {
                b'\r' | b'\n' | b' ' | b'\t' => self.skip(b),
                b'\\' => self.skip(b),
                b'n' if self.prev == b'\\' => self.skip(b),
                _ => {
                    self.reset(State::Start);
                    self.start(b)
                }
            },
            State::Tail => match b {
                b'\n' => {
                    self.reset(State::Start);
                    Action::Drop
                }
                b'{' => {
                    self.reset(State::Start);
                    self.start(b)
                }
                _ => Action::Drop,
            },
            State::Discard => {
                let prev = std::mem::replace(&mut self.prev, b);
                // The cut record ends at the separator.
                match (prev, b) {
                    (_, b'\n') => {
                        self.reset(State::Start);
                        Action::End
                    }
                    (b'\\', b'n') => {
                        self.reset(State::Tail);
                        Action::End
                    }
                    (b'}', b'{') => {
                        self.reset(State::Start);
                        Action::EndBefore
                    }
                    _ => Action::Drop,
                }
            }
        }
    }

    /// The reader cut the current record at its length limit: skip to the next separator.
    pub fn cut(&mut self) {
        if matches!(self.state, State::Bare | State::Line | State::Start) {
            let prev = self.prev;
            self.reset(State::Discard);
            self.prev = prev;
        }
    }

    fn skip(&mut self, b: u8) -> Action {
        self.prev = b;
        Action::Drop
    }

    fn reset(&mut self, state: State) {
        *self = Splitter {
            state,
            bare_stream: self.bare_stream,
            ..Splitter::default()
        };
    }

    fn start(&mut self, b: u8) -> Action {
        match b {
            // A blank line is an empty record, as it always was.
            b'\n' => {
                self.reset(State::Start);
                Action::End
            }
            b' ' | b'\t' | b'\r' => Action::Push,
            b'{' => {
                self.state = State::Bare;
                self.record(b)
            }
            _ => {
                self.state = State::Line;
                self.record(b)
            }
        }
    }

    /// A byte inside a record.
    fn record(&mut self, b: u8) -> Action {
        if b == b'\n' {
            self.reset(State::Start);
            return Action::End;
        }
        let (p1, p2) = (self.prev, self.prev2);
        self.prev2 = p1;
        self.prev = b;
        // `}{` never occurs in JSON outside a string, and `}` + literal `\n` ends every
        // record of a real Node 2: both end a record even where a lost quote makes the
        // string tracking wrong.
        if b == b'{' && p1 == b'}' && self.json {
            self.reset(State::Start);
            return Action::EndBefore;
        }
        if b == b' ' {
            self.spaced = true;
        }
        if b == b'{' && !self.json && self.state == State::Line {
            // Noise before an object (bytes of a glitch): it ends here, and the object is a
            // record of its own. A log line (it has spaces) keeps its JSON, unless the stream
            // carries bare records; never after `: `, which ends a marker (`JSON sent via
            // VCP: `) or a log line's label, nor after `":`, a member of a record whose start
            // was cut off (it stays one piece, quarantined as a fragment).
            let noise = self.bare_stream || !self.spaced;
            let label = p1 == b' ' && p2 == b':';
            let member = p1 == b':' && p2 == b'"';
            if noise && !label && !member {
                self.reset(State::Start);
                return Action::EndBefore;
            }
        }
        let literal_newline = b == b'n' && p1 == b'\\';
        if literal_newline && (p2 == b'}' || !self.in_string) {
            let bare = self.state == State::Bare;
            self.reset(if bare { State::Between } else { State::Tail });
            self.prev = b'n';
            return Action::End;
        }
        if self.in_string {
            self.string(b);
            return Action::Push;
        }
        match b {
            b'{' => {
                self.json = true;
                self.depth += 1;
            }
            b'[' if self.json => self.depth += 1,
            b'}' | b']' if self.json => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 && self.state == State::Bare && b == b'}' {
                    self.bare_stream = true;
                    self.reset(State::Between);
                    self.prev = b'}';
                    return Action::PushEnd;
                }
            }
            b'"' if self.json && !self.strings_broken => {
                self.in_string = true;
                self.string_len = 0;
            }
            _ => {}
        }
        Action::Push
    }

    /// A byte inside a JSON string.
    fn string(&mut self, b: u8) {
        self.string_len += 1;
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
        }
        if self.string_len > MAX_STRING {
            self.in_string = false;
            self.escaped = false;
            self.strings_broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of `input` (as `forward` would cut them, without a length limit).
    fn records(input: &[u8]) -> Vec<String> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match s.step(b) {
                Action::Push => buf.push(b),
                Action::Drop => {}
                Action::PushEnd => {
                    buf.push(b);
                    out.push(String::from_utf8_lossy(&buf).into_owned());
                    buf.clear();
                }
                Action::End => {
                    if buf.last() == Some(&b'\\') && b == b'n' {
                        buf.pop();
                    }
                    out.push(String::from_utf8_lossy(&buf).into_owned());
                    buf.clear();
                }
                Action::EndBefore => {
                    out.push(String::from_utf8_lossy(&buf).into_owned());
                    buf.clear();
                    continue;
                }
            }
            i += 1;
        }
        if !buf.is_empty() {
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
        out
    }

    const A: &str = r#"{"ts":1,"n1":{"t":1.5}}"#;
    const B: &str = r#"{"ts":2,"id":"N\"2\\","n1":{"t":2.5}}"#;

    #[test]
    fn every_separator_between_bare_records() {
        for sep in ["\\n", "\r\n", "\n", "", "\\n\r\n", " "] {
            let input = format!("{A}{sep}{B}{sep}");
            assert_eq!(records(input.as_bytes()), [A, B], "separator {sep:?}");
        }
    }

    #[test]
    fn noise_before_the_first_record_does_not_hide_it() {
        let input = format!("\x00\x01{A}\\n{B}\\n");
        assert_eq!(records(input.as_bytes()), ["\x00\x01", A, B]);
        // Opened mid-record: the fragment ends at its own `}`+`\n`, the next record is whole.
        let input = format!("\"h\":53.1}}}}\\n{A}\\n");
        assert_eq!(records(input.as_bytes()), ["\"h\":53.1}}", A]);
        // A defmt line with JSON after a label stays one record.
        let line = format!("[DEBUG] got {A} from the radio\n");
        assert_eq!(records(line.as_bytes()), [&line[..line.len() - 1]]);
    }

    #[test]
    fn noise_between_bare_records_does_not_hide_the_next_one() {
        let input = format!("{A}\\nXYZ{B}\\n\x00{A}");
        assert_eq!(records(input.as_bytes()), [A, "XYZ", B, "\x00", A]);
        // The marker stays with its JSON, in a defmt stream and after bare records alike.
        let line = format!("[INFO] JSON sent via VCP: {A}\n");
        assert_eq!(records(line.as_bytes()), [&line[..line.len() - 1]]);
        let mixed = format!("{A}\r\n{line}");
        assert_eq!(records(mixed.as_bytes()), [A, &line[..line.len() - 1]]);
    }

    #[test]
    fn a_bare_record_is_complete_when_it_closes() {
        let mut s = Splitter::default();
        let actions: Vec<Action> = A.bytes().map(|b| s.step(b)).collect();
        assert_eq!(actions.last(), Some(&Action::PushEnd));
        assert!(actions[..actions.len() - 1]
            .iter()
            .all(|a| *a == Action::Push));
    }

    #[test]
    fn a_defmt_line_keeps_its_json_and_drops_its_location_suffix() {
        let line = format!("[INFO] JSON sent via VCP: {A}\\n (fw src/main.rs:573)\n[INFO] other\n");
        assert_eq!(
            records(line.as_bytes()),
            [
                format!("[INFO] JSON sent via VCP: {A}"),
                "[INFO] other".into()
            ]
        );
    }

    #[test]
    fn escapes_inside_strings_are_not_separators() {
        let r = r#"{"id":"a\nb{c}","n1":{"t":1}}"#;
        assert_eq!(records(format!("{r}\\n{A}").as_bytes()), [r, A]);
    }

    #[test]
    fn a_lost_quote_costs_at_most_a_long_string() {
        // The first record loses its closing quote: string tracking gives up after
        // MAX_STRING bytes, and the records after it are found.
        let broken = r#"{"id":"N2,"n1":{"t":1}}"#;
        let mut input = broken.to_string();
        for _ in 0..20 {
            input.push_str(A);
            input.push_str("\\n");
        }
        let got = records(input.as_bytes());
        let found = got.iter().filter(|r| *r == A).count();
        assert!(found >= 20 - MAX_STRING / A.len() - 1, "{found}: {got:?}");
        assert_eq!(got.last().unwrap(), A);
    }

    #[test]
    fn a_cut_record_skips_to_the_next_separator() {
        let mut s = Splitter::default();
        assert_eq!(s.step(b'{'), Action::Push);
        s.cut();
        // Everything up to `}{` is dropped, whatever it holds; the cut record ends before the
        // `{`, which is the next record's.
        for b in br#""x":"a\"}"#.iter() {
            assert_eq!(s.step(*b), Action::Drop, "{}", *b as char);
        }
        assert_eq!(s.step(b'{'), Action::EndBefore);
        let actions: Vec<Action> = A.bytes().map(|b| s.step(b)).collect();
        assert_eq!(actions.last(), Some(&Action::PushEnd));
        // A literal `\n` or a newline byte end a cut record too.
        for sep in [&b"\\n"[..], b"\n"] {
            let mut s = Splitter::default();
            s.step(b'[');
            s.cut();
            let last = sep.iter().map(|b| s.step(*b)).last();
            assert_eq!(last, Some(Action::End));
        }
    }

    #[test]
    fn plain_lines_and_blank_lines_stay_lines() {
        assert_eq!(
            records(b"a\r\nbb\n\nlast"),
            ["a\r", "bb", "", "last"].map(String::from)
        );
    }
}
