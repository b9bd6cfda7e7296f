//! The radio link as the `rylr998` source sees it, without I/O: each frame the modem
//! received becomes readings, an ACK (or none), and link counters. Pure and unit-tested; the
//! wire format and the rule of what a frame is worth (`lora_link::secure::receive`:
//! `docs/PROTOCOL.md`, "What a receiver accepts") are the `lora-link` crate's.
//!
//! Per frame accepted (a keyed node's secure frame, or a legacy node's frame of the original
//! format), the same readings the JSON path gives for Node 2's line, with more precision:
//! `<node>/temperature` (celsius, from tenths: `27.3`), `<node>/humidity` (percent, from
//! hundredths: `58.87`, which Node 2 rounded to `58.9`), `<node>/gas_resistance` (ohms),
//! `signal/rssi` and `signal/snr` of the frame, and the link counters.
//!
//! Counters, since the source started:
//! - `packets_received`: frames accepted, duplicates included (they were received);
//! - `crc_errors`: a legacy node's frames that failed the CRC or decoding, and `+RCV` lines
//!   the modem cut; never a modem reply (the original Node 2 counted its own `+OK`s as errors);
//! - `packets_lost`: sequence numbers skipped, per sender, across the wrap at 65536; a
//!   sender that starts again (rebooted: its number goes back) lost the numbers before the
//!   first one heard since (none when that is 1);
//! - `duplicates`: a frame sent again (a retransmission after our ACK was lost): the highest
//!   counter again, at most [`MAX_REPEATS`] times, or for a legacy node one of its last
//!   [`RECENT`] sequence numbers. It is acknowledged again but not written a second time;
//! - `frames_rejected`: everything refused but a legacy node's CRC failures.
//!
//! Only a frame accepted as new writes readings: a refused frame or a duplicate is counted
//! and shows in the counters of the next one.

use std::collections::{BTreeMap, HashMap};

use lora_link::downlink::{Extras, NodeCommand};
use lora_link::packet::{AckPacket, SensorDataPacket, MAX_ACK_LEN};
use lora_link::secure::{self, Accepted, Rejection, Sender, MAX_ACK_FRAME_LEN};

use crate::config::{NodeAuth, RadioNode};
use crate::reading::{CompactString, LinkCounter, Reading};

/// Sequence numbers remembered per legacy sender, to recognize a repeated frame.
pub(crate) const RECENT: usize = 16;
/// Times a secure frame is taken again as a repeat and acknowledged: Node 1 sends a frame at
/// most `lora_link::node1::MAX_ATTEMPTS` times. More are someone playing the frame back, to
/// keep the gateway transmitting: refused as replays.
pub(crate) const MAX_REPEATS: u8 = lora_link::node1::MAX_ATTEMPTS - 1;

/// What one received frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A new packet: its readings, and its frame counter (secure frames) to store with them;
    /// acknowledge it once they are committed.
    Packet {
        readings: Vec<Reading>,
        ack: Ack,
        link: Option<LinkCounter>,
        /// A command's confirmation, the node's info (secure frames).
        extras: Extras,
    },
    /// A packet heard before: counted, not written; acknowledge it again.
    Duplicate { ack: Ack },
    /// Refused (a CRC or tag that fails, a replay, a sender without a key, ...): counted, not
    /// written, not acknowledged. `node` is the sender's name, or `unknown`.
    Rejected {
        rejection: Rejection,
        node: CompactString,
        reason: String,
    },
}

/// The ACK to send for a packet: the frame, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The packet's sequence number.
    pub seq: u16,
    /// The secure frame's counter; `None` for a legacy node's packet.
    pub counter: Option<u32>,
    /// The ACK frame's bytes (`AT+SEND`'s data).
    pub frame: Vec<u8>,
}

impl Ack {
    /// Whether this ACK answers the same frame as `other` (same counter, or for a legacy node
    /// the same sequence number).
    pub(crate) fn answers_same(&self, other: &Ack) -> bool {
        match (self.counter, other.counter) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.seq == other.seq,
            _ => false,
        }
    }
}

/// What a sequence number says about the packets before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sequence {
    /// The first packet heard from this sender.
    First,
    /// The next one.
    Next,
    /// `n` packets were skipped.
    Gap(u16),
    /// One heard recently again.
    Duplicate,
    /// Went back: the sender restarted, and lost the numbers before this one since.
    Restart { lost: u16 },
}

/// The sequence verdict of `seq` after `last`, with `recent` the sender's last numbers
/// (pure).
pub(crate) fn sequence(last: Option<u16>, recent: &[u16], seq: u16) -> Sequence {
    let Some(last) = last else {
        return Sequence::First;
    };
    let step = seq.wrapping_sub(last);
    // A node starts at 1: 1 out of turn is a restart, even if an earlier 1 is still recent.
    if seq == 1 && step > 1 {
        return Sequence::Restart { lost: 0 };
    }
    if recent.contains(&seq) {
        return Sequence::Duplicate;
    }
    match step {
        0 => Sequence::Duplicate,
        1 => Sequence::Next,
        step if step < 0x8000 => Sequence::Gap(step - 1),
        _ => Sequence::Restart {
            lost: seq.saturating_sub(1),
        },
    }
}

/// One sender's state: its recent sequence numbers (newest last) and its frame counters.
#[derive(Debug, Default)]
struct Heard {
    recent: std::collections::VecDeque<u16>,
    /// The highest counter committed (stored in the outbox with its packet).
    committed: Option<u32>,
    /// Counters of packets handed over whose commit is awaited.
    awaited: Vec<u32>,
    /// The frame with the highest counter, as received (a repeat must be the same bytes).
    last_frame: Vec<u8>,
    /// Repeats of it taken so far.
    repeats: u8,
    /// The ACK sent for it (with the command it carried): a repeat gets the same bytes, as
    /// no other plaintext may be sealed under that ACK's nonce.
    last_ack: Option<Ack>,
}

impl Heard {
    fn last(&self) -> Option<u16> {
        self.recent.back().copied()
    }

    fn push(&mut self, seq: u16) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(seq);
    }

    /// The highest counter accepted: committed, or awaiting its commit.
    fn highest(&self) -> Option<u32> {
        self.awaited.iter().copied().max().max(self.committed)
    }

    /// Counts the packets lost before `seq` into `lost`, and remembers it.
    fn sequence(&mut self, seq: u16, lost: &mut u64) {
        let recent: Vec<u16> = self.recent.iter().copied().collect();
        match sequence(self.last(), &recent, seq) {
            Sequence::Gap(n) => *lost += u64::from(n),
            Sequence::Restart { lost: n } => {
                *lost += u64::from(n);
                self.recent.clear();
            }
            Sequence::First | Sequence::Next | Sequence::Duplicate => {}
        }
        self.push(seq);
    }
}

/// Link state: the node table, what was heard per sender, counters.
#[derive(Debug)]
pub(crate) struct RadioLink {
    nodes: BTreeMap<u16, RadioNode>,
    heard: HashMap<u16, Heard>,
    received: u64,
    crc_errors: u64,
    lost: u64,
    duplicates: u64,
    rejected: u64,
}

impl RadioLink {
    /// `nodes` is the node table; `stored` the highest frame counter committed per sender
    /// (from the outbox), below which every frame is a replay: kept for the nodes whose key is
    /// still the one it was stored under (a new key starts a new counter).
    pub(crate) fn new(nodes: &BTreeMap<u16, RadioNode>, stored: &[LinkCounter]) -> Self {
        let heard = stored
            .iter()
            .filter(|s| {
                let key = nodes.get(&s.node).map(|n| &n.auth);
                matches!(key, Some(NodeAuth::Key(k)) if k.check_value() == s.key_check)
            })
            .map(|s| {
                let heard = Heard {
                    committed: Some(s.counter),
                    ..Heard::default()
                };
                (s.node, heard)
            })
            .collect();
        RadioLink {
            nodes: nodes.clone(),
            heard,
            received: 0,
            crc_errors: 0,
            lost: 0,
            duplicates: 0,
            rejected: 0,
        }
    }

    /// A `+RCV` frame from `sender` with `data`, received at `rssi`/`snr`.
    pub(crate) fn frame(&mut self, sender: u16, data: &[u8], rssi: i16, snr: i16) -> Outcome {
        let node = self.nodes.get(&sender);
        let who = match node.map(|n| &n.auth) {
            Some(NodeAuth::Key(key)) => Sender::Keyed(key),
            Some(NodeAuth::Legacy) => Sender::Legacy,
            Some(NodeAuth::Missing) => Sender::NoKey,
            None => Sender::Unknown,
        };
        let highest = self.heard.get(&sender).and_then(Heard::highest);
        let accepted = match secure::receive(who, sender, highest, data) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                if rejection == Rejection::Crc {
                    self.crc_errors += 1;
                } else {
                    self.rejected += 1;
                }
                let name = node.map_or(CompactString::const_new("unknown"), |n| {
                    CompactString::new(&n.name)
                });
                return Outcome::Rejected {
                    rejection,
                    reason: rejection_reason(rejection, sender, node),
                    node: name,
                };
            }
        };
        self.received += 1;
        // Only accepted senders (nodes of the table) get state: a stranger cannot grow it.
        let heard = self.heard.entry(sender).or_default();
        let (packet, counter) = match accepted {
            Accepted::Secure {
                counter,
                repeat,
                packet,
                extras,
            } => {
                // `receive` opens secure frames with a key only; never otherwise.
                let Sender::Keyed(key) = who else {
                    self.received -= 1;
                    self.rejected += 1;
                    return Outcome::Rejected {
                        rejection: Rejection::BadFormat,
                        node: CompactString::default(),
                        reason: format!("frame from address {sender}: secure, but no key"),
                    };
                };
                let ack = match &heard.last_ack {
                    Some(sent) if sent.counter == Some(counter) => sent.clone(),
                    _ => secure_ack(key, sender, counter, packet.seq_num, None),
                };
                if repeat {
                    if let Some(refused) = refused_repeat(heard, data) {
                        self.received -= 1;
                        self.rejected += 1;
                        let name =
                            node.map_or(CompactString::default(), |n| CompactString::new(&n.name));
                        return Outcome::Rejected {
                            rejection: Rejection::Replay,
                            reason: format!(
                                "frame from {name} (address {sender}): replay: {refused}"
                            ),
                            node: name,
                        };
                    }
                    heard.repeats += 1;
                    self.duplicates += 1;
                    return Outcome::Duplicate { ack };
                }
                heard.awaited.push(counter);
                heard.last_frame = data.to_vec();
                heard.repeats = 0;
                heard.sequence(packet.seq_num, &mut self.lost);
                let link = LinkCounter {
                    node: sender,
                    counter,
                    key_check: key.check_value(),
                };
                (packet, Some((link, ack, extras)))
            }
            Accepted::Legacy { packet } => {
                let recent: Vec<u16> = heard.recent.iter().copied().collect();
                if sequence(heard.last(), &recent, packet.seq_num) == Sequence::Duplicate {
                    self.duplicates += 1;
                    return Outcome::Duplicate {
                        ack: plain_ack(packet.seq_num),
                    };
                }
                heard.sequence(packet.seq_num, &mut self.lost);
                (packet, None)
            }
        };
        let name = node.map_or_else(
            || compact_str::format_compact!("node{sender}"),
            |n| CompactString::new(&n.name),
        );
        let mut readings = sensor(&name, &packet);
        readings.extend(signal(rssi, snr));
        readings.extend(self.counters());
        match counter {
            Some((link, ack, extras)) => Outcome::Packet {
                readings,
                ack,
                link: Some(link),
                extras,
            },
            None => Outcome::Packet {
                readings,
                ack: plain_ack(packet.seq_num),
                link: None,
                extras: Extras::NONE,
            },
        }
    }

    /// The packet that `ack` answers, from `sender`, was committed: its counter is the
    /// highest stored (it is in the outbox with the packet).
    pub(crate) fn committed(&mut self, sender: u16, ack: &Ack) {
        let Some(counter) = ack.counter else { return };
        if let Some(heard) = self.heard.get_mut(&sender) {
            heard.awaited.retain(|c| *c != counter);
            heard.committed = heard.committed.max(Some(counter));
        }
    }

    /// The ACK to send for the frame `ack` answers, from `sender`, with `command` in it (a
    /// legacy node's ACK carries none); kept as that frame's one ACK, so a repeat of the
    /// frame gets the same bytes.
    pub(crate) fn ack_with(&mut self, sender: u16, ack: &Ack, command: Option<NodeCommand>) -> Ack {
        let (Some(counter), Some(NodeAuth::Key(key))) =
            (ack.counter, self.nodes.get(&sender).map(|n| &n.auth))
        else {
            return ack.clone();
        };
        let sealed = secure_ack(key, sender, counter, ack.seq, command.as_ref());
        if let Some(heard) = self.heard.get_mut(&sender) {
            heard.last_ack = Some(sealed.clone());
        }
        sealed
    }

    /// The name of the node at `sender`, when it is in the table.
    pub(crate) fn name(&self, sender: u16) -> Option<&str> {
        self.nodes.get(&sender).map(|n| n.name.as_str())
    }

    /// The packet that `ack` answers, from `sender`, could not be committed (and was not
    /// acknowledged): its number and counter are forgotten, so the node's resend is a new
    /// packet and stored, not a duplicate.
    pub(crate) fn forget(&mut self, sender: u16, ack: &Ack) {
        if let Some(heard) = self.heard.get_mut(&sender) {
            match ack.counter {
                Some(counter) => heard.awaited.retain(|c| *c != counter),
                None => heard.recent.retain(|s| *s != ack.seq),
            }
        }
    }

    /// A `+RCV` line the modem cut or garbled: a failed frame (counted; shows in the next
    /// good frame's counters).
    pub(crate) fn malformed(&mut self) {
        self.crc_errors += 1;
    }

    fn counters(&self) -> Vec<Reading> {
        let stats = CompactString::const_new("stats");
        [
            ("packets_received", self.received),
            ("crc_errors", self.crc_errors),
            ("packets_lost", self.lost),
            ("duplicates", self.duplicates),
            ("frames_rejected", self.rejected),
        ]
        .into_iter()
        .map(|(metric, n)| Reading {
            node: stats.clone(),
            metric: CompactString::const_new(metric),
            unit: None,
            value: compact_str::format_compact!("{n}"),
        })
        .collect()
    }
}

/// Why a repeat of the highest counter is refused, if it is: not the same bytes as the frame
/// first taken with it (a node whose counter went back: acknowledging it would seal another
/// ACK under a nonce already used), or repeated more often than a node ever sends a frame.
fn refused_repeat(heard: &Heard, data: &[u8]) -> Option<&'static str> {
    if !heard.last_frame.is_empty() && heard.last_frame != data {
        return Some("its counter was used before for another frame (a node whose counter store was lost needs a new key)");
    }
    (heard.repeats >= MAX_REPEATS)
        .then_some("the same frame more often than a node sends it (played back to keep the gateway transmitting)")
}

/// What a refusal means, for the log and the quarantine (never a key).
fn rejection_reason(rejection: Rejection, sender: u16, node: Option<&RadioNode>) -> String {
    let who = match node {
        Some(n) => format!("{} (address {sender})", n.name),
        None => format!("address {sender}"),
    };
    let what = match rejection {
        Rejection::UnknownNode => "not in [source.nodes]: add it with its key (iiot-gateway keys new <name> --address <n>)",
        Rejection::NoKey => "the node has no key in [source.nodes] (key, key_file, or legacy = true for the original firmware)",
        Rejection::LegacyFormat => "an unauthenticated frame of the original format from a node that has a key",
        Rejection::BadTag => "bad tag: a wrong key, a forged or changed frame, or one corrupted on the air",
        Rejection::Replay => "replay: its frame counter is below the highest accepted",
        Rejection::BadFormat => "not a secure frame (length or version)",
        Rejection::Crc => "CRC or decoding failed",
    };
    format!("frame from {who}: {}: {what}", rejection.as_str())
}

/// The original format's ACK of `seq`.
fn plain_ack(seq: u16) -> Ack {
    let mut buf = [0u8; MAX_ACK_LEN];
    let n = AckPacket::ack(seq).encode(&mut buf).unwrap_or(0);
    Ack {
        seq,
        counter: None,
        frame: buf.get(..n).unwrap_or_default().to_vec(),
    }
}

/// The secure ACK of `seq`, bound to the uplink with `counter`, with `command` in it.
fn secure_ack(
    key: &secure::Key,
    sender: u16,
    counter: u32,
    seq: u16,
    command: Option<&NodeCommand>,
) -> Ack {
    let mut buf = [0u8; MAX_ACK_FRAME_LEN];
    let ack = AckPacket::ack(seq);
    let n = secure::seal_ack_with(key, sender, counter, &ack, command, &mut buf).unwrap_or(0);
    Ack {
        seq,
        counter: Some(counter),
        frame: buf.get(..n).unwrap_or_default().to_vec(),
    }
}

fn sensor(node: &CompactString, p: &SensorDataPacket) -> Vec<Reading> {
    let reading = |metric: &'static str, unit: &'static str, value: CompactString| Reading {
        node: node.clone(),
        metric: CompactString::const_new(metric),
        unit: Some(unit),
        value,
    };
    let mut readings = vec![
        reading("temperature", "celsius", fixed(i64::from(p.temperature), 1)),
        reading("humidity", "percent", fixed(i64::from(p.humidity), 2)),
    ];
    // A packet without a gas reading (`packet::NO_GAS`) gives none: nothing made up.
    if let Some(g) = p.gas() {
        readings.push(reading(
            "gas_resistance",
            "ohms",
            compact_str::format_compact!("{g}"),
        ));
    }
    readings
}

fn signal(rssi: i16, snr: i16) -> Vec<Reading> {
    let node = CompactString::const_new("signal");
    [("rssi", "dbm", rssi), ("snr", "db", snr)]
        .into_iter()
        .map(|(metric, unit, v)| Reading {
            node: node.clone(),
            metric: CompactString::const_new(metric),
            unit: Some(unit),
            value: compact_str::format_compact!("{v}"),
        })
        .collect()
}

/// `value / 10^decimals` as exact decimal text: `fixed(273, 1)` = `27.3`, `fixed(-5, 1)` =
/// `-0.5`, `fixed(5887, 2)` = `58.87`. No float in between.
pub(crate) fn fixed(value: i64, decimals: u32) -> CompactString {
    let scale = 10i64.pow(decimals);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let scale = scale.unsigned_abs();
    compact_str::format_compact!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = decimals as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: SensorDataPacket) -> Vec<u8> {
        let mut buf = [0u8; lora_link::packet::MAX_FRAME_LEN];
        let n = p.encode_frame(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    /// Nodes 1, 2, 7 and 9, on the original firmware.
    fn legacy() -> BTreeMap<u16, RadioNode> {
        [1, 2, 7, 9]
            .into_iter()
            .map(|a| {
                let node = RadioNode {
                    name: format!("node{a}"),
                    auth: NodeAuth::Legacy,
                };
                (a, node)
            })
            .collect()
    }

    fn packet(seq_num: u16) -> SensorDataPacket {
        SensorDataPacket {
            seq_num,
            temperature: 273,
            humidity: 5887,
            gas_resistance: 355_059,
        }
    }

    fn values(readings: &[Reading]) -> Vec<String> {
        readings
            .iter()
            .map(|r| {
                format!(
                    "{}/{}={}{}",
                    r.node,
                    r.metric,
                    r.value,
                    r.unit.map(|u| format!(" {u}")).unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn decimals_are_exact() {
        for (v, d, text) in [
            (273, 1, "27.3"),
            (-53, 1, "-5.3"),
            (-5, 1, "-0.5"),
            (0, 1, "0.0"),
            (i64::from(i16::MIN), 1, "-3276.8"),
            (5887, 2, "58.87"),
            (8123, 2, "81.23"),
            (5, 2, "0.05"),
            (6000, 2, "60.00"),
        ] {
            assert_eq!(fixed(v, d), text);
        }
    }

    #[test]
    fn a_packet_forgotten_after_a_failed_commit_is_new_when_sent_again() {
        let mut link = RadioLink::new(&legacy(), &[]);
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Packet { .. }
        ));
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Duplicate { .. }
        ));
        link.forget(1, &plain_ack(5));
        assert!(
            matches!(
                link.frame(1, &frame(packet(5)), -40, 9),
                Outcome::Packet { .. }
            ),
            "the resend of a packet that was not committed is stored"
        );
        // Forgetting another sender's number, or one never heard, changes nothing.
        link.forget(2, &plain_ack(5));
        link.forget(1, &plain_ack(9));
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Duplicate { .. }
        ));
        assert!(matches!(
            link.frame(1, &frame(packet(6)), -40, 9),
            Outcome::Packet { .. }
        ));
    }

    #[test]
    fn a_packet_without_gas_is_its_temperature_and_humidity() {
        let p = SensorDataPacket {
            gas_resistance: lora_link::packet::NO_GAS,
            ..packet(1)
        };
        assert_eq!(
            values(&sensor(&CompactString::const_new("node1"), &p)),
            [
                "node1/temperature=27.3 celsius",
                "node1/humidity=58.87 percent"
            ]
        );
    }

    /// docs/PROTOCOL.md, test vectors: packet 1 (RSSI -27, SNR 13), its readings and ACK `01 01`.
    #[test]
    fn a_good_frame_is_its_readings_and_an_ack() {
        let mut link = RadioLink::new(&legacy(), &[]);
        let Outcome::Packet { readings, ack, .. } = link.frame(1, &frame(packet(1)), -27, 13)
        else {
            panic!("not a packet");
        };
        assert_eq!(
            values(&readings),
            [
                "node1/temperature=27.3 celsius",
                "node1/humidity=58.87 percent",
                "node1/gas_resistance=355059 ohms",
                "signal/rssi=-27 dbm",
                "signal/snr=13 db",
                "stats/packets_received=1",
                "stats/crc_errors=0",
                "stats/packets_lost=0",
                "stats/duplicates=0",
                "stats/frames_rejected=0",
            ]
        );
        assert_eq!(ack.frame, [0x01, 0x01]);
    }

    #[test]
    fn senders_not_in_the_table_or_without_a_key_are_refused() {
        let mut nodes = legacy();
        nodes.insert(
            3,
            RadioNode {
                name: "keyless".into(),
                auth: NodeAuth::Missing,
            },
        );
        let mut link = RadioLink::new(&nodes, &[]);
        let Outcome::Rejected {
            rejection,
            node,
            reason,
        } = link.frame(5, &frame(packet(1)), 0, 0)
        else {
            panic!("a frame from an address not in the table was taken")
        };
        assert_eq!(
            (rejection, node.as_str()),
            (Rejection::UnknownNode, "unknown")
        );
        assert!(reason.contains("address 5"), "{reason}");
        let Outcome::Rejected {
            rejection, node, ..
        } = link.frame(3, &frame(packet(1)), 0, 0)
        else {
            panic!("a frame from a node without a key was taken")
        };
        assert_eq!((rejection, node.as_str()), (Rejection::NoKey, "keyless"));
        assert_eq!(link.rejected, 2);
        assert_eq!(link.received, 0);
        // Strangers leave no state behind, whatever addresses they use.
        for address in 100..1100 {
            link.frame(address, &frame(packet(1)), 0, 0);
        }
        assert!(link.heard.is_empty(), "{} senders kept", link.heard.len());
    }

    fn counters_after(link: &mut RadioLink, seq: u16) -> Vec<String> {
        let Outcome::Packet { readings, .. } = link.frame(9, &frame(packet(seq)), 0, 0) else {
            panic!("not a packet")
        };
        values(&readings)
            .into_iter()
            .filter(|v| v.starts_with("stats/"))
            .collect()
    }

    #[test]
    fn bad_frames_are_counted_not_written_nor_acked() {
        let mut link = RadioLink::new(&legacy(), &[]);
        let mut bad = frame(packet(1));
        bad[0] ^= 1;
        let Outcome::Rejected {
            rejection, reason, ..
        } = link.frame(1, &bad, -90, -3)
        else {
            panic!()
        };
        assert_eq!(rejection, Rejection::Crc);
        assert!(reason.contains("CRC"), "{reason}");
        link.malformed();
        assert_eq!(
            counters_after(&mut link, 1),
            [
                "stats/packets_received=1",
                "stats/crc_errors=2",
                "stats/packets_lost=0",
                "stats/duplicates=0",
                "stats/frames_rejected=0",
            ]
        );
    }

    #[test]
    fn duplicates_are_acked_and_counted_but_not_written_again() {
        let mut link = RadioLink::new(&legacy(), &[]);
        for seq in [5, 6] {
            assert!(matches!(
                link.frame(1, &frame(packet(seq)), 0, 0),
                Outcome::Packet { .. }
            ));
        }
        // The last one again, and an older one (delivered twice, late).
        for seq in [6, 5] {
            assert_eq!(
                link.frame(1, &frame(packet(seq)), 0, 0),
                Outcome::Duplicate {
                    ack: plain_ack(seq)
                }
            );
        }
        // 7 follows 6: nothing lost, and it is new.
        assert!(matches!(
            link.frame(1, &frame(packet(7)), 0, 0),
            Outcome::Packet { .. }
        ));
        let c = counters_after(&mut RadioLink::new(&legacy(), &[]), 1);
        assert_eq!(c[3], "stats/duplicates=0");
        assert_eq!(link.duplicates, 2);
        assert_eq!(link.lost, 0);
    }

    #[test]
    fn gaps_count_lost_packets_across_the_wrap_and_restarts_count_what_came_before() {
        assert_eq!(sequence(None, &[], 9), Sequence::First);
        assert_eq!(sequence(Some(9), &[9], 10), Sequence::Next);
        assert_eq!(sequence(Some(9), &[9], 12), Sequence::Gap(2));
        assert_eq!(sequence(Some(65535), &[65535], 0), Sequence::Next);
        assert_eq!(
            sequence(Some(65534), &[65534], 1),
            Sequence::Restart { lost: 0 }
        );
        assert_eq!(sequence(Some(65533), &[65533], 2), Sequence::Gap(4));
        assert_eq!(sequence(Some(0), &[0], 1), Sequence::Next);
        assert_eq!(
            sequence(Some(300), &[300], 1),
            Sequence::Restart { lost: 0 }
        );
        // Restarted, and its first frames were lost: 2 is the first heard.
        assert_eq!(
            sequence(Some(300), &[300], 2),
            Sequence::Restart { lost: 1 }
        );
        assert_eq!(sequence(Some(300), &[299, 300], 300), Sequence::Duplicate);
        assert_eq!(sequence(Some(300), &[299, 300], 299), Sequence::Duplicate);

        let mut link = RadioLink::new(&legacy(), &[]);
        for seq in [1, 2, 5, 1, 3] {
            link.frame(1, &frame(packet(seq)), 0, 0);
        }
        // 3 and 4 lost before 5; the restart at 1 loses nothing; 2 lost before 3.
        assert_eq!(link.lost, 3);
        // Senders are tracked apart.
        link.frame(2, &frame(packet(100)), 0, 0);
        link.frame(2, &frame(packet(101)), 0, 0);
        assert_eq!(link.lost, 3);
    }

    const KEY: secure::Key = secure::Key::new([
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ]);

    fn keyed() -> BTreeMap<u16, RadioNode> {
        let node = RadioNode {
            name: "greenhouse".into(),
            auth: NodeAuth::Key(KEY),
        };
        BTreeMap::from([(1, node)])
    }

    fn sealed(counter: u32, seq: u16) -> Vec<u8> {
        let mut buf = [0u8; secure::MAX_UPLINK_LEN];
        let n = secure::seal_uplink(&KEY, 1, counter, &packet(seq), &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn secure_frames_are_new_once_repeated_as_duplicates_and_replays_are_refused() {
        let mut link = RadioLink::new(&keyed(), &[]);
        let Outcome::Packet {
            readings,
            ack,
            link: stored,
            ..
        } = link.frame(1, &sealed(10, 1), -30, 9)
        else {
            panic!("a genuine frame was refused")
        };
        assert_eq!(readings[0].node, "greenhouse");
        assert_eq!(
            stored,
            Some(LinkCounter {
                node: 1,
                counter: 10,
                key_check: KEY.check_value()
            })
        );
        // The ACK is the secure one, bound to counter 10.
        assert_eq!(
            secure::open_ack(&KEY, 1, 10, &ack.frame),
            Ok(AckPacket::ack(1))
        );
        assert!(secure::open_ack(&KEY, 1, 11, &ack.frame).is_err());
        // Sent again (its ACK lost): a duplicate, acknowledged with the same ACK.
        assert_eq!(
            link.frame(1, &sealed(10, 1), -30, 9),
            Outcome::Duplicate { ack: ack.clone() }
        );
        link.committed(1, &ack);
        assert!(matches!(
            link.frame(1, &sealed(11, 2), 0, 0),
            Outcome::Packet { .. }
        ));
        // An older frame played back.
        let Outcome::Rejected { rejection, .. } = link.frame(1, &sealed(10, 1), 0, 0) else {
            panic!("a replay was taken")
        };
        assert_eq!(rejection, Rejection::Replay);
        // The original format from a node with a key, a wrong key, a changed frame.
        for (bytes, expected) in [
            (frame(packet(3)), Rejection::LegacyFormat),
            (
                {
                    let mut b = sealed(12, 3);
                    b[7] ^= 1;
                    b
                },
                Rejection::BadTag,
            ),
        ] {
            let Outcome::Rejected { rejection, .. } = link.frame(1, &bytes, 0, 0) else {
                panic!("{expected:?} taken")
            };
            assert_eq!(rejection, expected);
        }
        assert_eq!((link.received, link.duplicates, link.rejected), (3, 1, 3));
    }

    #[test]
    fn counters_from_the_outbox_refuse_replays_after_a_restart_and_a_failed_commit_is_forgotten() {
        let stored = |counter, key_check| LinkCounter {
            node: 1,
            counter,
            key_check,
        };
        // Stored under another key: the node was given a new one, its counter starts afresh.
        let mut link = RadioLink::new(&keyed(), &[stored(20, [9; 8])]);
        assert!(matches!(
            link.frame(1, &sealed(5, 1), 0, 0),
            Outcome::Packet { .. }
        ));
        let mut link = RadioLink::new(&keyed(), &[stored(20, KEY.check_value())]);
        for counter in [5, 20] {
            assert!(
                matches!(
                    link.frame(1, &sealed(counter, 1), 0, 0),
                    Outcome::Rejected {
                        rejection: Rejection::Replay,
                        ..
                    }
                ) || counter == 20
            );
        }
        // 20 itself is the highest stored: a repeat of the last packet, acknowledged again.
        assert!(matches!(
            link.frame(1, &sealed(20, 1), 0, 0),
            Outcome::Duplicate { .. }
        ));
        let Outcome::Packet { ack, .. } = link.frame(1, &sealed(21, 2), 0, 0) else {
            panic!()
        };
        // Not committed: the resend of 21 is new again, and stored.
        link.forget(1, &ack);
        assert!(matches!(
            link.frame(1, &sealed(21, 2), 0, 0),
            Outcome::Packet { .. }
        ));
    }

    #[test]
    fn a_frame_played_back_more_often_than_a_node_sends_it_or_a_reused_counter_is_refused() {
        let mut link = RadioLink::new(&keyed(), &[]);
        assert!(matches!(
            link.frame(1, &sealed(3, 1), 0, 0),
            Outcome::Packet { .. }
        ));
        for _ in 0..MAX_REPEATS {
            assert!(matches!(
                link.frame(1, &sealed(3, 1), 0, 0),
                Outcome::Duplicate { .. }
            ));
        }
        let Outcome::Rejected {
            rejection, reason, ..
        } = link.frame(1, &sealed(3, 1), 0, 0)
        else {
            panic!("an endless repeat was acknowledged")
        };
        assert_eq!(rejection, Rejection::Replay);
        assert!(
            reason.contains("more often than a node sends it"),
            "{reason}"
        );
        // The same counter with another packet: a node whose counter went back.
        let Outcome::Rejected { reason, .. } = link.frame(1, &sealed(3, 2), 0, 0) else {
            panic!("a reused counter was taken")
        };
        assert!(reason.contains("used before for another frame"), "{reason}");
        assert!(matches!(
            link.frame(1, &sealed(4, 2), 0, 0),
            Outcome::Packet { .. }
        ));
        assert_eq!((link.duplicates, link.rejected), (3, 2));
    }
}
