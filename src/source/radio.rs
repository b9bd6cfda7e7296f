//! The radio link as the `rylr998` source sees it, without I/O: each frame the modem
//! received becomes readings, an ACK (or none), and link counters. Pure and unit-tested; the
//! wire format itself is the `lora-link` crate's.
//!
//! Per good frame (CRC and postcard both fine), the same readings the JSON path gives for
//! Node 2's line, with more precision: `<node>/temperature` (celsius, from tenths: `27.3`),
//! `<node>/humidity` (percent, from hundredths: `58.87`, which Node 2 rounded to `58.9`),
//! `<node>/gas_resistance` (ohms), `signal/rssi` and `signal/snr` of the frame, and the link
//! counters `stats/packets_received`, `stats/crc_errors`, `stats/packets_lost`,
//! `stats/duplicates`.
//!
//! Counters, since the source started:
//! - `packets_received`: good frames, duplicates included (they were received);
//! - `crc_errors`: frames that failed the CRC or decoding, and `+RCV` lines the modem cut;
//!   never a modem reply (the original Node 2 counted its own `+OK`s as errors);
//! - `packets_lost`: sequence numbers skipped, per sender, across the wrap at 65536; a
//!   sender that starts again (rebooted: its number goes back) lost the numbers before the
//!   first one heard since (none when that is 1);
//! - `duplicates`: a frame repeating one of the sender's last [`RECENT`] sequence numbers (a
//!   retransmission after our ACK was lost, or the radio delivering a frame twice). It is
//!   acknowledged again but its readings are not written a second time.
//!
//! As on Node 2, only a good new frame writes readings: a bad frame or a duplicate is counted
//! and shows in the counters of the next good frame.

use std::collections::{BTreeMap, HashMap};

use lora_link::packet::{AckPacket, SensorDataPacket};

use crate::reading::{CompactString, Reading};

/// Sequence numbers remembered per sender, to recognize a repeated frame.
pub(crate) const RECENT: usize = 16;

/// What one received frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A new packet: its readings; acknowledge it.
    Packet {
        readings: Vec<Reading>,
        ack: AckPacket,
    },
    /// A packet heard before: counted, not written; acknowledge it again.
    Duplicate { ack: AckPacket },
    /// CRC or decoding failed: counted, not written, not acknowledged.
    Bad { reason: String },
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

/// One sender's recent sequence numbers, newest last.
#[derive(Debug, Default)]
struct Heard {
    recent: std::collections::VecDeque<u16>,
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
}

/// Link state: node names, last sequence per sender, counters.
#[derive(Debug)]
pub(crate) struct RadioLink {
    nodes: BTreeMap<u16, CompactString>,
    heard: HashMap<u16, Heard>,
    received: u64,
    crc_errors: u64,
    lost: u64,
    duplicates: u64,
}

impl RadioLink {
    /// `nodes` names senders by address; others are `node<address>`.
    pub(crate) fn new(nodes: &BTreeMap<u16, String>) -> Self {
        RadioLink {
            nodes: nodes
                .iter()
                .map(|(a, n)| (*a, CompactString::new(n)))
                .collect(),
            heard: HashMap::new(),
            received: 0,
            crc_errors: 0,
            lost: 0,
            duplicates: 0,
        }
    }

    /// A `+RCV` frame from `sender` with `data`, received at `rssi`/`snr`.
    pub(crate) fn frame(&mut self, sender: u16, data: &[u8], rssi: i16, snr: i16) -> Outcome {
        let packet = match SensorDataPacket::decode_frame(data) {
            Ok(packet) => packet,
            Err(e) => {
                self.crc_errors += 1;
                return Outcome::Bad {
                    reason: format!("frame from address {sender}: {e}"),
                };
            }
        };
        self.received += 1;
        let ack = AckPacket::ack(packet.seq_num);
        let heard = self.heard.entry(sender).or_default();
        let recent: Vec<u16> = heard.recent.iter().copied().collect();
        match sequence(heard.last(), &recent, packet.seq_num) {
            Sequence::Duplicate => {
                self.duplicates += 1;
                return Outcome::Duplicate { ack };
            }
            Sequence::Gap(n) => self.lost += u64::from(n),
            Sequence::Restart { lost } => {
                self.lost += u64::from(lost);
                heard.recent.clear();
            }
            Sequence::First | Sequence::Next => {}
        }
        heard.push(packet.seq_num);
        let node = self.node_name(sender);
        let mut readings = sensor(&node, &packet);
        readings.extend(signal(rssi, snr));
        readings.extend(self.counters());
        Outcome::Packet { readings, ack }
    }

    /// The packet `seq` of `sender` could not be committed (and was not acknowledged): its
    /// number is forgotten, so the node's resend is a new packet and stored, not a duplicate.
    pub(crate) fn forget(&mut self, sender: u16, seq: u16) {
        if let Some(heard) = self.heard.get_mut(&sender) {
            heard.recent.retain(|s| *s != seq);
        }
    }

    /// A `+RCV` line the modem cut or garbled: a failed frame (counted; shows in the next
    /// good frame's counters).
    pub(crate) fn malformed(&mut self) {
        self.crc_errors += 1;
    }

    fn node_name(&self, sender: u16) -> CompactString {
        match self.nodes.get(&sender) {
            Some(name) => name.clone(),
            None => compact_str::format_compact!("node{sender}"),
        }
    }

    fn counters(&self) -> Vec<Reading> {
        let stats = CompactString::const_new("stats");
        [
            ("packets_received", self.received),
            ("crc_errors", self.crc_errors),
            ("packets_lost", self.lost),
            ("duplicates", self.duplicates),
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

fn sensor(node: &CompactString, p: &SensorDataPacket) -> Vec<Reading> {
    let reading = |metric: &'static str, unit: &'static str, value: CompactString| Reading {
        node: node.clone(),
        metric: CompactString::const_new(metric),
        unit: Some(unit),
        value,
    };
    vec![
        reading("temperature", "celsius", fixed(i64::from(p.temperature), 1)),
        reading("humidity", "percent", fixed(i64::from(p.humidity), 2)),
        reading(
            "gas_resistance",
            "ohms",
            compact_str::format_compact!("{}", p.gas_resistance),
        ),
    ]
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
        let mut link = RadioLink::new(&BTreeMap::new());
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Packet { .. }
        ));
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Duplicate { .. }
        ));
        link.forget(1, 5);
        assert!(
            matches!(
                link.frame(1, &frame(packet(5)), -40, 9),
                Outcome::Packet { .. }
            ),
            "the resend of a packet that was not committed is stored"
        );
        // Forgetting another sender's number, or one never heard, changes nothing.
        link.forget(2, 5);
        link.forget(1, 9);
        assert!(matches!(
            link.frame(1, &frame(packet(5)), -40, 9),
            Outcome::Duplicate { .. }
        ));
        assert!(matches!(
            link.frame(1, &frame(packet(6)), -40, 9),
            Outcome::Packet { .. }
        ));
    }

    /// docs/PROTOCOL.md, test vectors: packet 1 (RSSI -27, SNR 13), its readings and ACK `01 01`.
    #[test]
    fn a_good_frame_is_its_readings_and_an_ack() {
        let mut link = RadioLink::new(&BTreeMap::from([(1, "node1".to_string())]));
        let Outcome::Packet { readings, ack } = link.frame(1, &frame(packet(1)), -27, 13) else {
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
            ]
        );
        assert_eq!(ack, AckPacket::ack(1));
    }

    #[test]
    fn unnamed_senders_are_node_and_their_address() {
        let mut link = RadioLink::new(&BTreeMap::new());
        let Outcome::Packet { readings, .. } = link.frame(7, &frame(packet(1)), 0, 0) else {
            panic!()
        };
        assert_eq!(readings[0].node, "node7");
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
        let mut link = RadioLink::new(&BTreeMap::new());
        let mut bad = frame(packet(1));
        bad[0] ^= 1;
        let Outcome::Bad { reason } = link.frame(1, &bad, -90, -3) else {
            panic!()
        };
        assert!(reason.contains("CRC mismatch"), "{reason}");
        link.malformed();
        assert_eq!(
            counters_after(&mut link, 1),
            [
                "stats/packets_received=1",
                "stats/crc_errors=2",
                "stats/packets_lost=0",
                "stats/duplicates=0",
            ]
        );
    }

    #[test]
    fn duplicates_are_acked_and_counted_but_not_written_again() {
        let mut link = RadioLink::new(&BTreeMap::new());
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
                    ack: AckPacket::ack(seq)
                }
            );
        }
        // 7 follows 6: nothing lost, and it is new.
        assert!(matches!(
            link.frame(1, &frame(packet(7)), 0, 0),
            Outcome::Packet { .. }
        ));
        let c = counters_after(&mut RadioLink::new(&BTreeMap::new()), 1);
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

        let mut link = RadioLink::new(&BTreeMap::new());
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
}
