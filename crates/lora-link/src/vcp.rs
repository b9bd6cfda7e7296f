//! The downlink's text lines on Node 2's VCP (`docs/PROTOCOL.md`, "Downlink"): the `cmd`
//! line the gateway writes to Node 2, and the lines Node 2 writes back about it. One
//! definition for both ends: Node 2 parses [`parse_command`] and prints [`Report`]s; the
//! gateway writes [`write_command`] and reads [`Report::parse`]. No line holds `":` or a
//! brace, so the gateway's JSON decoder skips them as it skips any other log line.
//!
//! ```text
//! gateway -> Node 2:  cmd <address> <number> <kind> [<value>]
//!                     kind: interval | ping | identify | reboot; value: seconds (interval
//!                     1-86400, identify 1-300), none or 0 for ping and reboot
//! Node 2 -> gateway:  command queued to=<address> number=<n>
//!                     command refused reason=bad_line
//!                     command refused to=<address> number=<n> reason=<unknown_node|not_secure>
//!                     command sent to=<address> number=<n>
//!                     confirmed from=<address> number=<n>
//!                     info from=<address> version=<a.b.c> boots=<n> uptime=<s> reset=<r>
//! ```
//!
//! Lines end with `\n` (a `\r` before it is ignored); Node 2 ends its own with `\r\n`.

use core::fmt;

use crate::downlink::{Kind, NodeCommand, NodeInfo};
use crate::write::Cursor;
use crate::BufferTooSmall;

/// The longest `cmd` line Node 2 takes, without its line end.
pub const MAX_COMMAND_LINE: usize = 48;

/// A command kind's word in the `cmd` line and in Node 1's lines.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Interval(_) => "interval",
        Kind::Ping => "ping",
        Kind::Identify(_) => "identify",
        Kind::Reboot => "reboot",
    }
}

/// A command kind's value in the lines: seconds, 0 for `ping` and `reboot`.
pub fn kind_value(kind: Kind) -> u32 {
    match kind {
        Kind::Interval(s) | Kind::Identify(s) => s,
        Kind::Ping | Kind::Reboot => 0,
    }
}

/// Writes the `cmd` line of `command` for the node at `to` into `out`, without a line end;
/// returns its length.
pub fn write_command(
    to: u16,
    command: &NodeCommand,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut w = Cursor::new(out);
    w.fmt(format_args!(
        "cmd {to} {} {}",
        command.number,
        kind_name(command.kind)
    ))?;
    if let Kind::Interval(s) | Kind::Identify(s) = command.kind {
        w.fmt(format_args!(" {s}"))?;
    }
    Ok(w.len())
}

/// The node address and command of a `cmd` line (without its line end; a trailing `\r` is
/// ignored); `None` for anything else: another word, a field missing or too many, a number
/// out of range, an unknown kind, a value its kind does not take.
pub fn parse_command(line: &[u8]) -> Option<(u16, NodeCommand)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|b| *b == b' ');
    if fields.next()? != b"cmd" {
        return None;
    }
    let to = digits(fields.next()?).and_then(|n| u16::try_from(n).ok())?;
    let n = digits(fields.next()?).and_then(|n| u16::try_from(n).ok())?;
    let word = fields.next()?;
    let value = fields.next().map_or(Some(0), digits)?;
    if fields.next().is_some() {
        return None;
    }
    let range = |lo: u32, hi: u32| (lo..=hi).contains(&value).then_some(value);
    let kind = match word {
        b"interval" => Kind::Interval(range(1, 86_400)?),
        b"ping" if value == 0 => Kind::Ping,
        b"identify" => Kind::Identify(range(1, 300)?),
        b"reboot" if value == 0 => Kind::Reboot,
        _ => return None,
    };
    Some((to, NodeCommand { number: n, kind }))
}

/// A decimal number of 1 to 10 digits, no sign, that fits a `u32`.
fn digits(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    text.iter().try_fold(0u32, |n, b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u32::from(d))
    })
}

/// A decimal number without sign or leading `+`, in `T`'s range.
fn number<T: TryFrom<u32>>(text: &str) -> Option<T> {
    T::try_from(digits(text.as_bytes())?).ok()
}

/// Why Node 2 did not queue a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a `cmd` line it understands.
    BadLine,
    /// The address is not in its node table.
    UnknownNode,
    /// The node is legacy or has no key: its ACKs carry no command.
    NotSecure,
}

impl Refusal {
    /// The reason's word in the line.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadLine => "bad_line",
            Refusal::UnknownNode => "unknown_node",
            Refusal::NotSecure => "not_secure",
        }
    }

    fn from_word(word: &str) -> Option<Refusal> {
        [Refusal::BadLine, Refusal::UnknownNode, Refusal::NotSecure]
            .into_iter()
            .find(|r| r.as_str() == word)
    }
}

/// A line Node 2 writes about the downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A `cmd` line taken: the command rides in the ACK of the node's next new uplink,
    /// replacing any command still pending for that node.
    Queued {
        /// The node.
        to: u16,
        /// The command's number.
        number: u16,
    },
    /// A line not taken; the node and number when the line named them.
    Refused {
        /// The node and the number of the command, when the line was a `cmd` line.
        command: Option<(u16, u16)>,
        /// Why.
        reason: Refusal,
    },
    /// The command went out in the ACK of a new uplink of the node.
    Sent {
        /// The node.
        to: u16,
        /// The command's number.
        number: u16,
    },
    /// The node confirmed the command: it applied it (or had applied it before).
    Confirmed {
        /// The node.
        from: u16,
        /// The command's number.
        number: u16,
    },
    /// The node's info, from one of its uplinks.
    Info {
        /// The node.
        from: u16,
        /// What it said of itself.
        info: NodeInfo,
    },
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Queued { to, number } => write!(f, "command queued to={to} number={number}"),
            Report::Refused {
                command: None,
                reason,
            } => write!(f, "command refused reason={}", reason.as_str()),
            Report::Refused {
                command: Some((to, number)),
                reason,
            } => write!(
                f,
                "command refused to={to} number={number} reason={}",
                reason.as_str()
            ),
            Report::Sent { to, number } => write!(f, "command sent to={to} number={number}"),
            Report::Confirmed { from, number } => {
                write!(f, "confirmed from={from} number={number}")
            }
            Report::Info { from, info } => {
                let [major, minor, patch] = info.version;
                write!(
                    f,
                    "info from={from} version={major}.{minor}.{patch} boots={} uptime={} reset={}",
                    info.boots, info.uptime_s, info.reset
                )
            }
        }
    }
}

impl Report {
    /// The report a line of Node 2 is (without its line end; a trailing `\r` is ignored);
    /// `None` for any other line.
    pub fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end_matches('\r');
        let (head, rest) = match line.split_once(' ')? {
            ("command", rest) => rest.split_once(' ')?,
            (head, rest) => (head, rest),
        };
        let mut fields = Fields(rest.split(' '));
        let report = match head {
            "queued" => Report::Queued {
                to: fields.number("to")?,
                number: fields.number("number")?,
            },
            "sent" => Report::Sent {
                to: fields.number("to")?,
                number: fields.number("number")?,
            },
            "refused" if rest.starts_with("reason=") => Report::Refused {
                command: None,
                reason: Refusal::from_word(fields.word("reason")?)?,
            },
            "refused" => Report::Refused {
                command: Some((fields.number("to")?, fields.number("number")?)),
                reason: Refusal::from_word(fields.word("reason")?)?,
            },
            "confirmed" => Report::Confirmed {
                from: fields.number("from")?,
                number: fields.number("number")?,
            },
            "info" => Report::Info {
                from: fields.number("from")?,
                info: NodeInfo {
                    version: version(fields.word("version")?)?,
                    boots: fields.number("boots")?,
                    uptime_s: fields.number("uptime")?,
                    reset: fields.number("reset")?,
                },
            },
            _ => return None,
        };
        let whole = fields.0.next().is_none();
        // `command queued ...` and `confirmed ...`, never `command confirmed ...`.
        let prefixed = line.starts_with("command ");
        let right_prefix = prefixed == matches!(head, "queued" | "sent" | "refused");
        (whole && right_prefix).then_some(report)
    }
}

/// `name=value` fields in a fixed order.
struct Fields<'a>(core::str::Split<'a, char>);

impl<'a> Fields<'a> {
    fn word(&mut self, name: &str) -> Option<&'a str> {
        let (n, value) = self.0.next()?.split_once('=')?;
        (n == name).then_some(value)
    }

    fn number<T: TryFrom<u32>>(&mut self, name: &str) -> Option<T> {
        number(self.word(name)?)
    }
}

/// `a.b.c`, each 0-255.
fn version(text: &str) -> Option<[u8; 3]> {
    let mut parts = text.split('.');
    let v = [
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    ];
    parts.next().is_none().then_some(v)
}

/// What [`LineBuffer::push`] made of a byte.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<'a> {
    /// The line is not complete yet.
    More,
    /// A whole line, without its `\n` (and any `\r` before it).
    Line(&'a [u8]),
    /// A line longer than the buffer ended: its bytes are dropped.
    TooLong,
}

/// Cuts Node 2's VCP input into lines of at most `N` bytes.
#[derive(Debug, Clone)]
pub struct LineBuffer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    /// Empty.
    pub const fn new() -> Self {
        LineBuffer {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Takes one byte; returns the line it ended, if it was `\n`.
    pub fn push(&mut self, byte: u8) -> Pushed<'_> {
        if byte != b'\n' {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
            return Pushed::More;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if overflow {
            return Pushed::TooLong;
        }
        let line = self.buf.get(..len).unwrap_or_default();
        Pushed::Line(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    fn cmd(number: u16, kind: Kind) -> NodeCommand {
        NodeCommand { number, kind }
    }

    #[test]
    fn command_lines_round_trip() {
        for (to, c, text) in [
            (1, cmd(7, Kind::Interval(5)), "cmd 1 7 interval 5"),
            (1, cmd(8, Kind::Ping), "cmd 1 8 ping"),
            (
                3,
                cmd(65_535, Kind::Identify(300)),
                "cmd 3 65535 identify 300",
            ),
            (65_535, cmd(0, Kind::Reboot), "cmd 65535 0 reboot"),
            (1, cmd(9, Kind::Interval(86_400)), "cmd 1 9 interval 86400"),
        ] {
            let mut buf = [0u8; MAX_COMMAND_LINE];
            let n = write_command(to, &c, &mut buf).unwrap();
            assert_eq!(&buf[..n], text.as_bytes());
            assert_eq!(parse_command(text.as_bytes()), Some((to, c)), "{text}");
        }
        // The value 0 may be written for ping and reboot; a `\r` before the line end is fine.
        assert_eq!(
            parse_command(b"cmd 1 8 ping 0"),
            Some((1, cmd(8, Kind::Ping)))
        );
        assert_eq!(
            parse_command(b"cmd 1 8 reboot\r"),
            Some((1, cmd(8, Kind::Reboot)))
        );
        assert_eq!(
            write_command(1, &cmd(1, Kind::Ping), &mut [0u8; 11]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn anything_else_is_no_command() {
        for bad in [
            "",
            "cmd",
            "cmd 1 7",
            "cmd 1 7 interval",
            "cmd 1 7 interval 0",
            "cmd 1 7 interval 86401",
            "cmd 1 7 identify 301",
            "cmd 1 7 ping 5",
            "cmd 1 7 reboot 1",
            "cmd 1 7 blink 5",
            "cmd 1 7 interval 5 6",
            "cmd 1 65536 ping",
            "cmd 70000 1 ping",
            "cmd -1 1 ping",
            "cmd +1 1 ping",
            "cmd 1 1 interval +5",
            "cmd  1 1 ping",
            "CMD 1 1 ping",
            "cmd 1 1 Ping",
            "cmd 1 1 ping ",
            "{\"cmd\":1}",
        ] {
            assert_eq!(parse_command(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_command(&[0x63, 0x6D, 0x64, 0x20, 0xFF]), None);
    }

    #[test]
    fn reports_round_trip_and_hold_no_json() {
        let info = NodeInfo {
            version: [0, 1, 0],
            boots: 3,
            uptime_s: 4_294_967_295,
            reset: 2,
        };
        for (report, text) in [
            (
                Report::Queued { to: 1, number: 7 },
                "command queued to=1 number=7",
            ),
            (
                Report::Refused {
                    command: None,
                    reason: Refusal::BadLine,
                },
                "command refused reason=bad_line",
            ),
            (
                Report::Refused {
                    command: Some((9, 4)),
                    reason: Refusal::UnknownNode,
                },
                "command refused to=9 number=4 reason=unknown_node",
            ),
            (
                Report::Refused {
                    command: Some((3, 4)),
                    reason: Refusal::NotSecure,
                },
                "command refused to=3 number=4 reason=not_secure",
            ),
            (
                Report::Sent { to: 1, number: 7 },
                "command sent to=1 number=7",
            ),
            (
                Report::Confirmed {
                    from: 1,
                    number: 65_535,
                },
                "confirmed from=1 number=65535",
            ),
            (
                Report::Info { from: 1, info },
                "info from=1 version=0.1.0 boots=3 uptime=4294967295 reset=2",
            ),
        ] {
            assert_eq!(report.to_string(), text);
            assert_eq!(Report::parse(text), Some(report), "{text}");
            assert_eq!(Report::parse(&std::format!("{text}\r")), Some(report));
            assert!(!text.contains("\":") && !text.contains(['{', '}']));
        }
        for other in [
            "confirmed from=1",
            "confirmed from=1 number=7 extra=1",
            "confirmed number=7 from=1",
            "command confirmed from=1 number=7",
            "queued to=1 number=7",
            "command refused reason=tired",
            "info from=1 version=0.1 boots=3 uptime=4 reset=2",
            "info from=1 version=0.1.256 boots=3 uptime=4 reset=2",
            "rejected from=1 reason=bad_tag count=1",
            "sent seq=1 try=1 counter=0",
            "{\"ts\":1}",
            "",
        ] {
            assert_eq!(Report::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn input_is_cut_into_lines_and_overlong_ones_are_dropped() {
        let mut lines = LineBuffer::<8>::new();
        let mut got = std::vec::Vec::new();
        for &b in b"cmd 1\r\n\n12345678\n123456789\nok\n" {
            match lines.push(b) {
                Pushed::More => {}
                Pushed::Line(l) => got.push(std::string::String::from_utf8_lossy(l).into_owned()),
                Pushed::TooLong => got.push("(too long)".into()),
            }
        }
        assert_eq!(got, ["cmd 1", "", "12345678", "(too long)", "ok"]);
    }
}
