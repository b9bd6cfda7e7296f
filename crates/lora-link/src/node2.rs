//! Node 2's JSON line, as the original firmware formats it (`core::fmt`, `{:.1}` of `f32`),
//! written into a caller's buffer without its terminator:
//!
//! `{"ts":12000,"id":"N2","n1":{"t":27.3,"h":58.9,"g":355059},"n2":{"t":27.9,"h":48.3},"sig":{"rssi":-27,"snr":13},"sts":{"rx":1,"err":0}}`
//!
//! The original ended it with a literal backslash-n and no newline byte; a firmware that wants
//! a real line end appends `\r\n` itself.
//!
//! [`Receiver`] holds Node 2's rules for a received frame (which to accept, acknowledge and
//! print, what `sts.rx` and `sts.err` count), so the firmware only moves bytes. Each frame is
//! judged by [`secure::receive`] against the node table Node 2 was built with
//! (`scripts/firmware --keys`, one [`Node`] per address):
//! - a node with a key sends secure frames only: a frame whose tag holds and whose counter is
//!   above the highest accepted from that node is new: acknowledged with an ACK sealed for it
//!   ([`secure::seal_ack`]), counted in `rx` and printed; its counter becomes the node's
//!   highest;
//! - the same counter as the highest again is the node sending the same frame again (its ACK
//!   was lost): acknowledged again (the same sealed ACK), counted in `rx` (it was received, as
//!   the gateway's own `rylr998` source counts `packets_received`) but not printed: a lost ACK
//!   never duplicates a line. The next line's `rx` shows it;
//! - a node marked legacy (the original firmware) sends frames of the original format (CRC,
//!   no counter): a good one is acknowledged with the plain `AckPacket`, and one with the same
//!   seq as that node's last good one is a retransmission (acknowledged, not printed);
//! - everything else is refused with its [`Rejection`] (a bad tag, a replay, a frame of the
//!   original format from a node with a key, a node without a key, an address not in the
//!   table, a legacy frame whose CRC fails, a frame of no known format), counted in `err` and
//!   per reason, and never answered; so is a `+RCV` line that broke. Nothing else counts: the
//!   modem's `+OK`, `+READY` and other replies are not frames (the original counted them, see
//!   docs/PROTOCOL.md, "Defects of the original firmware fixed here").
//!
//! Commands to the nodes (`docs/PROTOCOL.md`, "Downlink"): [`Receiver::queue`] keeps the newest
//! command per node with a key; it rides in the sealed ACK of each new uplink of that node
//! until an uplink confirms its number, and a repeat of an uplink gets the very ACK bytes sent
//! for it (no other plaintext under that ACK's nonce). [`Outcome::New`] says which command
//! the ACK carries and what the uplink confirmed and told of the node, for Node 2's lines
//! ([`crate::vcp::Report`]).
//!
//! The highest counters live in RAM only. After a reset of Node 2 the first authentic frame
//! of each node is new whatever its counter: frames recorded before the reset and played back
//! (in rising counter order) before the node's next frame are accepted and printed once more.
//! The JSON line carries no counter, so a gateway reading the line cannot tell.

use crate::downlink::{Extras, NodeCommand, NodeInfo};
use crate::modem::{Event, Frame};
use crate::packet::{AckPacket, SensorDataPacket, MAX_ACK_LEN};
use crate::secure::{self, Accepted, Key, Rejection, Sender, MAX_ACK_FRAME_LEN};
use crate::vcp::Refusal;
use crate::write::Cursor;
use crate::BufferTooSmall;

/// Node 2's modem address (`AT+ADDRESS=2`).
pub const ADDRESS: u16 = 2;

/// One node of the table Node 2 is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its modem address (`AT+ADDRESS`).
    pub address: u16,
    /// What it may send.
    pub peer: Peer,
}

/// What a node of the table may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Secure frames under this key.
    Keyed(Key),
    /// Frames of the original format (the original firmware).
    Legacy,
    /// Nothing: in the table without a key (every frame refused, `no_key`).
    NoKey,
}

/// An ACK ready to send: a sealed one, or the original format's for a legacy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame {
    bytes: [u8; MAX_ACK_FRAME_LEN],
    len: usize,
}

impl AckFrame {
    /// No ACK yet.
    const NONE: AckFrame = AckFrame {
        bytes: [0; MAX_ACK_FRAME_LEN],
        len: 0,
    };

    /// The ACK's bytes (empty only if it could not be built, which the buffer sizes rule out).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn sealed(
        key: &Key,
        node: u16,
        counter: u32,
        ack: &AckPacket,
        command: Option<&NodeCommand>,
    ) -> AckFrame {
        let mut bytes = [0u8; MAX_ACK_FRAME_LEN];
        let len = secure::seal_ack_with(key, node, counter, ack, command, &mut bytes).unwrap_or(0);
        AckFrame { bytes, len }
    }

    fn plain(ack: &AckPacket) -> AckFrame {
        let mut bytes = [0u8; MAX_ACK_FRAME_LEN];
        let len = bytes
            .get_mut(..MAX_ACK_LEN)
            .and_then(|b| ack.encode(b).ok())
            .unwrap_or(0);
        AckFrame { bytes, len }
    }
}

/// What to do about one modem event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new packet: send `ack` to `to`, then print the line (and the downlink's reports).
    New {
        /// The node's packet.
        packet: SensorDataPacket,
        /// The answer.
        ack: AckFrame,
        /// The sender's address, where the ACK goes.
        to: u16,
        /// The frame's RSSI, dBm.
        rssi: i16,
        /// The frame's SNR, dB.
        snr: i16,
        /// The number of the command the ACK carries.
        command: Option<u16>,
        /// A command the node confirmed, to report (once: see [`Receiver`]).
        confirmed: Option<u16>,
        /// The node's info, to report.
        info: Option<NodeInfo>,
    },
    /// The same frame again: send `ack` to `to` again, print nothing.
    Duplicate {
        /// The answer.
        ack: AckFrame,
        /// The sender's address.
        to: u16,
        /// The packet's seq.
        seq: u16,
    },
    /// A frame refused (counted in `err` and per reason): no answer.
    Rejected {
        /// The sender's address, as the modem reports it.
        from: u16,
        /// Why.
        reason: Rejection,
    },
    /// A `+RCV` line that broke (bad header or tail, cut off; counted in `err`): no answer.
    Broken,
    /// Not a frame (modem replies, noise): nothing to do, nothing counted.
    NotAFrame,
}

/// What Node 2 remembers of a node of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing accepted since boot.
    Nothing,
    /// The highest counter accepted (a node with a key).
    Counter(u32),
    /// The seq of the last good frame (a legacy node).
    Seq(u16),
}

/// Node 2's receive state for a table of `N` nodes: the counters of the line and, per node,
/// what was accepted last.
#[derive(Debug, Clone)]
pub struct Receiver<'t, const N: usize> {
    nodes: &'t [Node; N],
    last: [Last; N],
    rx: u32,
    err: u32,
    duplicates: u32,
    rejected: [u32; Rejection::ALL.len()],
    broken: u32,
    /// Per node: the command for the ACK of its next new uplink, until it confirms it.
    commands: [Option<NodeCommand>; N],
    /// Per node: the ACK sealed for its highest counter, sent again for a repeat.
    acks: [AckFrame; N],
    /// Per node: the confirmation reported last.
    reported: [Option<u16>; N],
}

impl<'t, const N: usize> Receiver<'t, N> {
    /// Nothing received yet, from the nodes of `nodes`.
    pub const fn new(nodes: &'t [Node; N]) -> Self {
        Receiver {
            nodes,
            last: [Last::Nothing; N],
            rx: 0,
            err: 0,
            duplicates: 0,
            rejected: [0; Rejection::ALL.len()],
            broken: 0,
            commands: [None; N],
            acks: [AckFrame::NONE; N],
            reported: [None; N],
        }
    }

    /// Queues `command` for the node at `to` (a `cmd` line, [`crate::vcp`]): it rides in the
    /// ACK of that node's next new uplink, and of every new one after, until the node
    /// confirms its number. It replaces a command still pending for that node. Only a node
    /// with a key can take one (a legacy node's ACK has no room for it).
    pub fn queue(&mut self, to: u16, command: NodeCommand) -> Result<(), Refusal> {
        let slot = self
            .nodes
            .iter()
            .position(|n| n.address == to)
            .ok_or(Refusal::UnknownNode)?;
        match (
            self.nodes.get(slot).map(|n| &n.peer),
            self.commands.get_mut(slot),
        ) {
            (Some(Peer::Keyed(_)), Some(pending)) => {
                *pending = Some(command);
                Ok(())
            }
            _ => Err(Refusal::NotSecure),
        }
    }

    /// Frames accepted since boot, retransmissions included.
    pub fn rx(&self) -> u32 {
        self.rx
    }

    /// Frames refused and `+RCV` lines broken since boot.
    pub fn err(&self) -> u32 {
        self.err
    }

    /// Retransmissions acknowledged again and not printed (counted in `rx` too).
    pub fn duplicates(&self) -> u32 {
        self.duplicates
    }

    /// Frames refused for `reason` since boot.
    pub fn rejected(&self, reason: Rejection) -> u32 {
        Rejection::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.rejected.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// `+RCV` lines that broke since boot (counted in `err` too).
    pub fn broken(&self) -> u32 {
        self.broken
    }

    /// Applies Node 2's rules to one modem event.
    pub fn on_event(&mut self, event: &Event<'_>) -> Outcome {
        match event {
            Event::Frame(frame) => self.on_frame(frame),
            Event::Malformed { bytes, .. } if bytes.starts_with(b"+RCV=") => {
                self.err = self.err.wrapping_add(1);
                self.broken = self.broken.wrapping_add(1);
                Outcome::Broken
            }
            _ => Outcome::NotAFrame,
        }
    }

    /// Applies Node 2's rules to one received frame.
    pub fn on_frame(&mut self, frame: &Frame<'_>) -> Outcome {
        let slot = self.nodes.iter().position(|n| n.address == frame.sender);
        let node = slot.and_then(|i| self.nodes.get(i));
        let last = slot.and_then(|i| self.last.get(i)).copied();
        let sender = match node.map(|n| &n.peer) {
            Some(Peer::Keyed(key)) => Sender::Keyed(key),
            Some(Peer::Legacy) => Sender::Legacy,
            Some(Peer::NoKey) => Sender::NoKey,
            None => Sender::Unknown,
        };
        let highest = match last {
            Some(Last::Counter(c)) => Some(c),
            _ => None,
        };
        let accepted = match secure::receive(sender, frame.sender, highest, frame.data) {
            Err(reason) => return self.refuse(frame.sender, reason),
            Ok(accepted) => accepted,
        };
        self.rx = self.rx.wrapping_add(1);
        let (packet, repeat, now, extras) = match accepted {
            Accepted::Secure {
                counter,
                repeat,
                packet,
                extras,
            } => (packet, repeat, Last::Counter(counter), extras),
            Accepted::Legacy { packet } => {
                let now = Last::Seq(packet.seq_num);
                (packet, last == Some(now), now, Extras::NONE)
            }
        };
        let seq = packet.seq_num;
        // Secure frames come from a node with a key only, and carry their counter.
        let secure = match (sender, now, slot) {
            (Sender::Keyed(key), Last::Counter(counter), Some(i)) => Some((key, counter, i)),
            _ => None,
        };
        if repeat {
            self.duplicates = self.duplicates.wrapping_add(1);
            // The very bytes sent for that frame: no other plaintext under its ACK's nonce.
            let ack = match secure {
                Some((_, _, i)) => self.acks.get(i).copied().unwrap_or(AckFrame::NONE),
                None => AckFrame::plain(&AckPacket::ack(seq)),
            };
            return Outcome::Duplicate {
                ack,
                to: frame.sender,
                seq,
            };
        }
        if let Some(l) = slot.and_then(|i| self.last.get_mut(i)) {
            *l = now;
        }
        let (ack, command, confirmed) = match secure {
            Some((key, counter, i)) => {
                let confirmed = self.confirmation(i, extras.confirm);
                let command = self.commands.get(i).copied().flatten();
                let ack = AckPacket::ack(seq);
                let ack = AckFrame::sealed(key, frame.sender, counter, &ack, command.as_ref());
                if let Some(sent) = self.acks.get_mut(i) {
                    *sent = ack;
                }
                (ack, command.map(|c| c.number), confirmed)
            }
            None => (AckFrame::plain(&AckPacket::ack(seq)), None, None),
        };
        Outcome::New {
            packet,
            ack,
            to: frame.sender,
            rssi: frame.rssi,
            snr: frame.snr,
            command,
            confirmed,
            info: extras.info,
        }
    }

    /// The node at `slot` confirmed `number` in a new uplink: its pending command is done if
    /// it is that one. Reported when it was pending (the gateway may have sent it again after
    /// missing the report) or when it is not the confirmation reported last (the node
    /// repeats a confirmation in every uplink until one carrying it is acknowledged).
    fn confirmation(&mut self, slot: usize, number: Option<u16>) -> Option<u16> {
        let number = number?;
        let pending = self.commands.get_mut(slot)?;
        let was_pending = pending.is_some_and(|c| c.number == number);
        if was_pending {
            *pending = None;
        }
        let reported = self.reported.get_mut(slot)?;
        let report = was_pending || *reported != Some(number);
        *reported = Some(number);
        report.then_some(number)
    }

    fn refuse(&mut self, from: u16, reason: Rejection) -> Outcome {
        self.err = self.err.wrapping_add(1);
        if let Some(n) = Rejection::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.rejected.get_mut(i))
        {
            *n = n.wrapping_add(1);
        }
        Outcome::Rejected { from, reason }
    }
}

/// Longest line [`write_line`] can produce (every number at its widest).
pub const MAX_LINE: usize = 256;

/// What one line reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node2Line {
    /// Milliseconds since Node 2 booted.
    pub ts: u32,
    /// Node 1's packet.
    pub n1: SensorDataPacket,
    /// Node 2's own SHT3x temperature, °C, when read.
    pub n2_temperature: Option<f32>,
    /// Node 2's own SHT3x humidity, %RH, when read.
    pub n2_humidity: Option<f32>,
    /// The frame's RSSI, dBm.
    pub rssi: i16,
    /// The frame's SNR, dB.
    pub snr: i16,
    /// Good frames received since boot (retransmissions included).
    pub rx: u32,
    /// Frames refused (any reason) and `+RCV` lines broken since boot.
    pub err: u32,
}

/// Writes `line` into `buf`; returns its length.
pub fn write_line(line: &Node2Line, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let n1 = &line.n1;
    let t = f32::from(n1.temperature) / 10.0;
    let h = f32::from(n1.humidity) / 100.0;
    let mut w = Cursor::new(buf);
    w.fmt(format_args!(
        "{{\"ts\":{},\"id\":\"N2\",\"n1\":{{\"t\":{t:.1},\"h\":{h:.1}",
        line.ts
    ))?;
    // Without a gas reading (`packet::NO_GAS`) the line has no `g`: nothing made up.
    if let Some(g) = n1.gas() {
        w.fmt(format_args!(",\"g\":{g}"))?;
    }
    w.fmt(format_args!("}},\"n2\":{{"))?;
    match (line.n2_temperature, line.n2_humidity) {
        (Some(t), Some(h)) => w.fmt(format_args!("\"t\":{t:.1},\"h\":{h:.1}"))?,
        (Some(t), None) => w.fmt(format_args!("\"t\":{t:.1}"))?,
        (None, Some(h)) => w.fmt(format_args!("\"h\":{h:.1}"))?,
        (None, None) => {}
    }
    w.fmt(format_args!(
        "}},\"sig\":{{\"rssi\":{},\"snr\":{}}},\"sts\":{{\"rx\":{},\"err\":{}}}}}",
        line.rssi, line.snr, line.rx, line.err
    ))?;
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n2_temperature: Option<f32>, n2_humidity: Option<f32>) -> Node2Line {
        Node2Line {
            ts: 12000,
            n1: SensorDataPacket {
                seq_num: 1,
                temperature: 273,
                humidity: 5887,
                gas_resistance: 355_059,
            },
            n2_temperature,
            n2_humidity,
            rssi: -27,
            snr: 13,
            rx: 1,
            err: 0,
        }
    }

    fn written(l: &Node2Line) -> ([u8; MAX_LINE], usize) {
        let mut buf = [0u8; MAX_LINE];
        let n = write_line(l, &mut buf).unwrap();
        (buf, n)
    }

    /// docs/PROTOCOL.md, test vectors: packet 1 end to end (own SHT3x 27.88 °C / 48.26 %).
    #[test]
    fn the_vector_line_is_byte_identical() {
        let (buf, n) = written(&line(Some(27.88), Some(48.26)));
        assert_eq!(
            core::str::from_utf8(&buf[..n]).unwrap(),
            r#"{"ts":12000,"id":"N2","n1":{"t":27.3,"h":58.9,"g":355059},"n2":{"t":27.9,"h":48.3},"sig":{"rssi":-27,"snr":13},"sts":{"rx":1,"err":0}}"#
        );
    }

    #[test]
    fn a_packet_without_gas_has_no_g() {
        let mut l = line(Some(27.88), Some(48.26));
        l.n1.gas_resistance = crate::packet::NO_GAS;
        let (buf, n) = written(&l);
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.contains(r#""n1":{"t":27.3,"h":58.9},"n2":{"t":27.9"#),
            "{text}"
        );
        l.n1.gas_resistance = crate::packet::NO_GAS - 1;
        let (buf, n) = written(&l);
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains(r#""g":4294967294}"#), "{text}");
    }

    #[test]
    fn n2_is_empty_until_the_sensor_was_read() {
        let (buf, n) = written(&line(None, None));
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains(r#""n2":{},"sig""#), "{text}");
        let (buf, n) = written(&line(Some(26.5), None));
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains(r#""n2":{"t":26.5},"sig""#), "{text}");
    }

    /// Packet 1's frame (docs/PROTOCOL.md, test vectors): `01 A2 04 FF 2D F3 D5 15 93 83`.
    const FRAME_1: [u8; 10] = [0x01, 0xA2, 0x04, 0xFF, 0x2D, 0xF3, 0xD5, 0x15, 0x93, 0x83];
    /// docs/PROTOCOL.md, secure-frame vectors: packet 1 from node 1 with counter 7, and its ACK.
    const SECURE_1: [u8; 21] = [
        0x01, 0x00, 0x00, 0x00, 0x07, 0x78, 0xBE, 0x47, 0x0C, 0xCF, 0xBA, 0xBB, 0x1F, 0x7F, 0x19,
        0x90, 0x5C, 0xBE, 0x38, 0x52, 0x78,
    ];
    const SECURE_ACK_1: [u8; 11] = [
        0x01, 0x48, 0x95, 0x75, 0x8A, 0x10, 0x6E, 0x10, 0x5B, 0x41, 0xAD,
    ];
    /// The key of those vectors: published, for tests only.
    const TEST_KEY: Key = Key::new([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);

    /// Node 1 with the test key, node 3 legacy, node 4 in the table without a key.
    const NODES: [Node; 3] = [
        Node {
            address: 1,
            peer: Peer::Keyed(TEST_KEY),
        },
        Node {
            address: 3,
            peer: Peer::Legacy,
        },
        Node {
            address: 4,
            peer: Peer::NoKey,
        },
    ];

    fn frame(sender: u16, data: &[u8]) -> Event<'_> {
        Event::Frame(Frame {
            sender,
            data,
            rssi: -27,
            snr: 13,
        })
    }

    fn sealed(counter: u32, seq: u16) -> ([u8; secure::MAX_UPLINK_LEN], usize) {
        let mut out = [0u8; secure::MAX_UPLINK_LEN];
        let packet = SensorDataPacket {
            seq_num: seq,
            temperature: 200,
            humidity: 4000,
            gas_resistance: 100_000,
        };
        let n = secure::seal_uplink(&TEST_KEY, 1, counter, &packet, &mut out).unwrap();
        (out, n)
    }

    fn rejected(from: u16, reason: Rejection) -> Outcome {
        Outcome::Rejected { from, reason }
    }

    #[test]
    fn a_secure_frame_is_acked_with_its_sealed_ack_counted_and_printed() {
        let mut r = Receiver::new(&NODES);
        let Outcome::New {
            packet, ack, to, ..
        } = r.on_event(&frame(1, &SECURE_1))
        else {
            panic!("not new");
        };
        assert_eq!(packet.seq_num, 1);
        assert_eq!(to, 1);
        assert_eq!(ack.as_bytes(), &SECURE_ACK_1[..]);
        assert_eq!((r.rx(), r.err()), (1, 0));
    }

    /// An uplink from node 1 with `counter`, packet `seq`, carrying `extras`.
    fn uplink(counter: u32, seq: u16, extras: Extras) -> ([u8; secure::MAX_UPLINK_LEN], usize) {
        let mut out = [0u8; secure::MAX_UPLINK_LEN];
        let packet = SensorDataPacket {
            seq_num: seq,
            temperature: 200,
            humidity: 4000,
            gas_resistance: 100_000,
        };
        let n =
            secure::seal_uplink_with(&TEST_KEY, 1, counter, &packet, &extras, &mut out).unwrap();
        (out, n)
    }

    /// What Node 2 did with a new uplink: the command its ACK carries (opened as Node 1
    /// would), the confirmation and info it reports; and the ACK's bytes.
    fn new_uplink(
        r: &mut Receiver<'_, 3>,
        counter: u32,
        extras: Extras,
    ) -> (Option<NodeCommand>, Option<u16>, Option<NodeInfo>, AckFrame) {
        let (f, n) = uplink(counter, counter as u16, extras);
        let Outcome::New {
            ack,
            command,
            confirmed,
            info,
            ..
        } = r.on_event(&frame(1, &f[..n]))
        else {
            panic!("not new");
        };
        let (_, carried) = secure::open_ack_with(&TEST_KEY, 1, counter, ack.as_bytes()).unwrap();
        assert_eq!(carried.map(|c| c.number), command);
        (carried, confirmed, info, ack)
    }

    fn confirm(number: u16) -> Extras {
        Extras {
            confirm: Some(number),
            info: None,
        }
    }

    /// docs/PROTOCOL.md, "Downlink": with command 1 (interval 5 s) queued for node 1, Node 2
    /// answers packet 1 (counter 7) with the ACK vector.
    #[test]
    fn a_queued_command_rides_in_the_ack_of_the_next_uplink_as_the_vector() {
        use crate::downlink::Kind;
        let mut r = Receiver::new(&NODES);
        let interval = NodeCommand {
            number: 1,
            kind: Kind::Interval(5),
        };
        assert_eq!(r.queue(1, interval), Ok(()));
        let Outcome::New { ack, command, .. } = r.on_event(&frame(1, &SECURE_1)) else {
            panic!("not new");
        };
        assert_eq!(command, Some(1));
        assert_eq!(
            ack.as_bytes(),
            &[
                0x01, 0x48, 0x95, 0xC6, 0xE5, 0x4C, 0xAB, 0xF1, 0xD1, 0x86, 0x00, 0xA4, 0x03, 0x22,
                0xDB, 0x6C, 0xBE, 0xC8, 0x9E,
            ][..]
        );
        // Only nodes with a key take commands.
        assert_eq!(r.queue(3, interval), Err(Refusal::NotSecure));
        assert_eq!(r.queue(4, interval), Err(Refusal::NotSecure));
        assert_eq!(r.queue(9, interval), Err(Refusal::UnknownNode));
    }

    #[test]
    fn a_command_rides_until_confirmed_and_a_repeat_gets_the_same_bytes() {
        use crate::downlink::Kind;
        let mut r = Receiver::new(&NODES);
        let ping = NodeCommand {
            number: 7,
            kind: Kind::Ping,
        };
        let identify = NodeCommand {
            number: 8,
            kind: Kind::Identify(3),
        };
        // Nothing queued: no command.
        assert_eq!(new_uplink(&mut r, 10, Extras::NONE).0, None);
        r.queue(1, ping).unwrap();
        let (carried, _, _, ack) = new_uplink(&mut r, 11, Extras::NONE);
        assert_eq!(carried, Some(ping));
        // A newer command replaces it; the repeat of uplink 11 still gets the bytes it got.
        r.queue(1, identify).unwrap();
        let (f, n) = uplink(11, 11, Extras::NONE);
        let Outcome::Duplicate { ack: again, .. } = r.on_event(&frame(1, &f[..n])) else {
            panic!("not a repeat");
        };
        assert_eq!(again.as_bytes(), ack.as_bytes());
        // The node never got ping; its next uplinks get identify until it confirms it.
        assert_eq!(new_uplink(&mut r, 12, Extras::NONE).0, Some(identify));
        let info = NodeInfo {
            version: [0, 1, 0],
            boots: 1,
            uptime_s: 9,
            reset: 0,
        };
        let with_info = Extras {
            confirm: Some(8),
            info: Some(info),
        };
        // Confirmed: reported with the info; its ACK carries nothing.
        let (carried, confirmed, reported, _) = new_uplink(&mut r, 13, with_info);
        assert_eq!((carried, confirmed, reported), (None, Some(8), Some(info)));
        // Its ACK was lost: the node confirms 8 again; not reported twice.
        assert_eq!(new_uplink(&mut r, 14, confirm(8)).1, None);
        // The gateway missed the report and sends 8 again: the node confirms, Node 2
        // reports it again.
        r.queue(1, identify).unwrap();
        let (carried, confirmed, _, _) = new_uplink(&mut r, 15, confirm(8));
        assert_eq!((carried, confirmed), (None, Some(8)));
        // A confirmation of a command Node 2 no longer holds (replaced) is reported too.
        assert_eq!(new_uplink(&mut r, 16, confirm(7)).1, Some(7));
    }

    #[test]
    fn a_repeat_is_acked_again_a_replay_refused_and_a_new_counter_printed() {
        let mut r = Receiver::new(&NODES);
        let (f5, n5) = sealed(5, 10);
        let (f6, n6) = sealed(6, 11);
        assert!(matches!(
            r.on_event(&frame(1, &f5[..n5])),
            Outcome::New { .. }
        ));
        assert!(matches!(
            r.on_event(&frame(1, &f6[..n6])),
            Outcome::New { .. }
        ));
        let Outcome::Duplicate {
            ack,
            to: 1,
            seq: 11,
        } = r.on_event(&frame(1, &f6[..n6]))
        else {
            panic!("not a duplicate");
        };
        let mut want = [0u8; MAX_ACK_FRAME_LEN];
        let m = secure::seal_ack(&TEST_KEY, 1, 6, &AckPacket::ack(11), &mut want).unwrap();
        assert_eq!(ack.as_bytes(), &want[..m]);
        assert_eq!(
            r.on_event(&frame(1, &f5[..n5])),
            rejected(1, Rejection::Replay)
        );
        // A node restarted with its seq at 1 again: its counter is new, so it is printed
        // (the original last-seq rule would have dropped it as a duplicate).
        let (f7, n7) = sealed(7, 11);
        assert!(matches!(
            r.on_event(&frame(1, &f7[..n7])),
            Outcome::New { .. }
        ));
        assert_eq!((r.rx(), r.err(), r.duplicates()), (4, 1, 1));
        assert_eq!(r.rejected(Rejection::Replay), 1);
    }

    #[test]
    fn frames_the_table_does_not_allow_are_refused_and_counted_by_reason() {
        let mut r = Receiver::new(&NODES);
        let mut flipped = SECURE_1;
        flipped[12] ^= 0x04;
        let mut forged = [0u8; secure::MAX_UPLINK_LEN];
        let packet = SensorDataPacket {
            seq_num: 1,
            temperature: 999,
            humidity: 1,
            gas_resistance: 1,
        };
        let n = secure::seal_uplink(&Key::new([7; 16]), 1, 99, &packet, &mut forged).unwrap();
        let cases: [(u16, &[u8], Rejection); 7] = [
            (1, &flipped, Rejection::BadTag),
            (1, &forged[..n], Rejection::BadTag),
            (1, &FRAME_1, Rejection::LegacyFormat),
            (1, &[0xFF; 3], Rejection::BadFormat),
            (9, &SECURE_1, Rejection::UnknownNode),
            (4, &SECURE_1, Rejection::NoKey),
            (3, &SECURE_1, Rejection::Crc),
        ];
        for (from, data, reason) in cases {
            assert_eq!(r.on_event(&frame(from, data)), rejected(from, reason));
        }
        assert_eq!((r.rx(), r.err()), (0, 7));
        assert_eq!(r.rejected(Rejection::BadTag), 2);
        assert_eq!(r.rejected(Rejection::Replay), 0);
        // None of them touched node 1's state: its genuine frame is new.
        assert!(matches!(
            r.on_event(&frame(1, &SECURE_1)),
            Outcome::New { .. }
        ));
    }

    /// docs/PROTOCOL.md, test vectors, packet 1 end to end: the original format, from node 1
    /// marked legacy in the table (the original firmware).
    #[test]
    fn a_good_frame_is_acked_counted_and_printed() {
        let legacy = [Node {
            address: 1,
            peer: Peer::Legacy,
        }];
        let mut r = Receiver::new(&legacy);
        let Outcome::New {
            packet, ack, to, ..
        } = r.on_event(&frame(1, &FRAME_1))
        else {
            panic!("not new");
        };
        assert_eq!(packet.seq_num, 1);
        assert_eq!(to, 1);
        assert_eq!(ack.as_bytes(), &[0x01, 0x01]);
        assert_eq!((r.rx(), r.err()), (1, 0));
    }

    #[test]
    fn a_legacy_node_speaks_the_original_format_with_the_last_seq_rule() {
        let mut r = Receiver::new(&NODES);
        let Outcome::New { ack, to: 3, .. } = r.on_event(&frame(3, &FRAME_1)) else {
            panic!("not new");
        };
        assert_eq!(ack.as_bytes(), &[0x01, 0x01]);
        let Outcome::Duplicate { ack, to: 3, seq: 1 } = r.on_event(&frame(3, &FRAME_1)) else {
            panic!("not a duplicate");
        };
        assert_eq!(ack.as_bytes(), &[0x01, 0x01]);
        let mut bad = FRAME_1;
        bad[9] ^= 0x01;
        assert_eq!(r.on_event(&frame(3, &bad)), rejected(3, Rejection::Crc));
        // Node 1's state is its own.
        assert!(matches!(
            r.on_event(&frame(1, &SECURE_1)),
            Outcome::New { .. }
        ));
        assert_eq!((r.rx(), r.err(), r.duplicates()), (3, 1, 1));
    }

    #[test]
    fn only_frames_count_and_broken_lines_are_errors() {
        let mut r = Receiver::new(&NODES);
        let broken = Event::Malformed {
            reason: crate::modem::Malformed::BadTail,
            bytes: b"+RCV=1,10,",
        };
        assert_eq!(r.on_event(&broken), Outcome::Broken);
        let not_frames = [
            Event::Ok,
            Event::Ready,
            Event::Error(10),
            Event::Garbage(b"xyz"),
            Event::Malformed {
                reason: crate::modem::Malformed::BadReply,
                bytes: b"+OK+",
            },
        ];
        for e in &not_frames {
            assert_eq!(r.on_event(e), Outcome::NotAFrame, "{e:?}");
        }
        assert_eq!((r.rx(), r.err(), r.broken()), (0, 1, 1));
    }

    #[test]
    fn the_widest_line_fits_and_small_buffers_are_errors() {
        let widest = Node2Line {
            ts: u32::MAX,
            n1: SensorDataPacket {
                seq_num: u16::MAX,
                temperature: i16::MIN,
                humidity: u16::MAX,
                gas_resistance: u32::MAX - 1,
            },
            n2_temperature: Some(-f32::MAX),
            n2_humidity: Some(-f32::MAX),
            rssi: i16::MIN,
            snr: i16::MIN,
            rx: u32::MAX,
            err: u32::MAX,
        };
        let (_, n) = written(&widest);
        assert!(n > 200, "{n}");
        let mut buf = [0u8; MAX_LINE];
        for size in [0, 10, 100, n - 1] {
            assert_eq!(write_line(&widest, &mut buf[..size]), Err(BufferTooSmall));
        }
    }
}
