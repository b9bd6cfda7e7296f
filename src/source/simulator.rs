//! The `simulator` source (the default): the model of `simulator_model` driven by a clock.
//! Its lines are exactly the firmware's JSON and go through the same decoder as a real
//! device's. Also used by `iiot-gateway simulate` to print lines for piping and demos, and
//! by `simulate --radio` to print what a RYLR998 modem would write ([`RadioFrames`]).

use std::time::Duration;

use lora_link::secure::Key;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::simulator_model::{SimConfig, SimModel};
use super::SourceEnd;
use crate::config::SimulatorConfig;
use crate::reading::{now_ns, Line};

/// The model for `cfg`, with a seed from the clock when none is configured.
pub(crate) fn model(cfg: &SimulatorConfig) -> (SimModel, u64) {
    let seed = cfg
        .seed
        .unwrap_or_else(|| now_ns().unsigned_abs() ^ u64::from(std::process::id()));
    let interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX);
    let model = SimModel::new(SimConfig {
        seed,
        remote_nodes: cfg.remote_nodes,
        interval_ms: interval_ms.max(500),
        ..SimConfig::default()
    });
    (model, seed)
}

/// Emits one simulated packet per interval (the first at once) until cancelled.
pub async fn run(
    cfg: SimulatorConfig,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
) -> SourceEnd {
    let (mut model, seed) = model(&cfg);
    info!(seed, remote_nodes = cfg.remote_nodes, interval = ?cfg.interval, "simulator started");
    let mut ticker = tokio::time::interval(cfg.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = token.cancelled() => return SourceEnd::Cancelled,
        }
        let Some(text) = model.step() else { continue };
        let line = Line {
            text,
            received_ns: now_ns(),
            cut: false,
            decoded: None,
            forwarded: None,
            handled: None,
            link: None,
        };
        if tx.send(line).await.is_err() {
            return SourceEnd::Cancelled;
        }
    }
}

/// Turns the model's lines into the bytes a RYLR998 modem writes when the simulated nodes
/// transmit: one `+RCV=<address>,<len>,<frame>,<rssi>,<snr>\r\n` per node in the line, each
/// frame a `SensorDataPacket` with its own sequence number. The line's K-th remote node is
/// the K-th node of the table given ([`RadioFrames::with_nodes`]): a node with a key sends secure
/// frames (`docs/PROTOCOL.md`, "Secure frames"), a legacy one the original format; without a
/// table, `nK` sends the original format from address K. A CRC failure the model counted
/// becomes a frame with a flipped bit first. The [`Attack`]s asked for follow each node's
/// frame. Pure but for the counters' start (the clock).
#[derive(Debug, Default)]
pub(crate) struct RadioFrames {
    /// The simulated nodes in model order: address, and key (`None`: the original format).
    nodes: Vec<(u16, Option<Key>)>,
    /// Next sequence number per address.
    seq: std::collections::BTreeMap<u16, u16>,
    /// Next frame counter per address.
    counter: std::collections::BTreeMap<u16, u32>,
    /// Where counters start: tenths of a second since 2025, so that a restarted simulator
    /// is not taken for a replay (as long as it sent fewer than 10 frames per second).
    counter_start: u32,
    /// The previous genuine frame per address, for replays.
    previous: std::collections::BTreeMap<u16, Vec<u8>>,
    /// `sts.err` of the previous line.
    errors: u64,
    attacks: Vec<Attack>,
}

/// A frame an attacker sends after each genuine one (`simulate --radio --attack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// The node's address, a wrong key: refused as `bad_tag`.
    Forged,
    /// The node's previous frame played back: refused as `replay`.
    Replayed,
    /// The frame just sent with one bit changed: refused as `bad_tag`.
    Tampered,
    /// The original, unauthenticated format from a node with a key: refused as
    /// `legacy_format`.
    Legacy,
    /// A frame from an address not in the table: refused as `unknown_node`.
    Unknown,
}

/// An address no simulated table uses, for [`Attack::Unknown`].
const STRANGER: u16 = 65_000;

impl RadioFrames {
    /// Frames for the nodes of a table, in model order (`n1` is the first).
    pub(crate) fn with_nodes(nodes: Vec<(u16, Option<Key>)>, attacks: Vec<Attack>) -> Self {
        const EPOCH_2025: u64 = 1_735_689_600;
        let tenths = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() / 100)
            .saturating_sub(u128::from(EPOCH_2025) * 10);
        RadioFrames {
            nodes,
            counter_start: u32::try_from(tenths).unwrap_or(u32::MAX / 2),
            attacks,
            ..RadioFrames::default()
        }
    }

    /// The modem bytes for one model line (empty for a line without nodes).
    pub(crate) fn frames(&mut self, line: &str) -> Vec<u8> {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else {
            return Vec::new();
        };
        let number = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_f64);
        let sig = obj.get("sig");
        let rssi = number(sig.and_then(|s| s.get("rssi"))).unwrap_or(-40.0) as i16;
        let snr = number(sig.and_then(|s| s.get("snr"))).unwrap_or(10.0) as i16;
        let errors = obj
            .get("sts")
            .and_then(|s| s.get("err"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(self.errors);
        let mut corrupt = errors.saturating_sub(self.errors);
        self.errors = errors;
        let mut out = Vec::new();
        // The i-th remote node of the line is the i-th of the table.
        let mut remote = 0usize;
        for (key, node) in &obj {
            let Some(k) = key.strip_prefix('n').and_then(|k| k.parse::<u16>().ok()) else {
                continue;
            };
            // n2 is Node 2's own sensor, not a radio node.
            let (Some(t), Some(h), Some(g)) = (
                number(node.get("t")),
                number(node.get("h")),
                number(node.get("g")),
            ) else {
                continue;
            };
            remote += 1;
            let (address, key) = match self.nodes.is_empty() {
                true => (k, None),
                false => match self.nodes.get(remote - 1) {
                    Some((address, key)) => (*address, key.clone()),
                    None => continue,
                },
            };
            let seq = self.seq.entry(address).or_insert(1);
            let packet = lora_link::packet::SensorDataPacket {
                seq_num: *seq,
                temperature: (t * 10.0) as i16,
                humidity: (h * 100.0).round() as u16,
                gas_resistance: g as u32,
            };
            *seq = seq.wrapping_add(1);
            let Some(frame) = self.frame(address, key.as_ref(), &packet) else {
                continue;
            };
            if corrupt > 0 {
                corrupt -= 1;
                // The last byte: a CRC or a tag that fails.
                let mut bad = frame.clone();
                if let Some(last) = bad.last_mut() {
                    *last ^= 0x01;
                }
                rcv(address, &bad, rssi - 10, snr - 5, &mut out);
            }
            rcv(address, &frame, rssi, snr, &mut out);
            for attack in self.attacks.clone() {
                if let Some((from, bytes)) = self.attack(attack, address, &frame, &packet) {
                    rcv(from, &bytes, rssi - 3, snr, &mut out);
                }
            }
            self.previous.insert(address, frame);
        }
        out
    }

    /// The frame of `packet` from `address`: secure under `key`, else the original format.
    fn frame(
        &mut self,
        address: u16,
        key: Option<&Key>,
        packet: &lora_link::packet::SensorDataPacket,
    ) -> Option<Vec<u8>> {
        let mut buf = [0u8; lora_link::secure::MAX_UPLINK_LEN];
        let n = match key {
            Some(key) => {
                let counter = self.counter.entry(address).or_insert(self.counter_start);
                let n = lora_link::secure::seal_uplink(key, address, *counter, packet, &mut buf);
                *counter = counter.saturating_add(1);
                n.ok()?
            }
            None => packet.encode_frame(&mut buf).ok()?,
        };
        Some(buf.get(..n)?.to_vec())
    }

    /// The attacker's frame after `frame` (from `address`), and who it claims to be from.
    fn attack(
        &mut self,
        attack: Attack,
        address: u16,
        frame: &[u8],
        packet: &lora_link::packet::SensorDataPacket,
    ) -> Option<(u16, Vec<u8>)> {
        let mut buf = [0u8; lora_link::secure::MAX_UPLINK_LEN];
        match attack {
            Attack::Forged => {
                // Not the node's key (derived from nothing secret): the tag cannot match.
                let wrong = Key::new([0xA5; 16]);
                let n =
                    lora_link::secure::seal_uplink(&wrong, address, u32::MAX - 1, packet, &mut buf);
                Some((address, buf.get(..n.ok()?)?.to_vec()))
            }
            Attack::Replayed => Some((address, self.previous.get(&address)?.clone())),
            Attack::Tampered => {
                let mut bytes = frame.to_vec();
                let last = bytes.len().checked_sub(1)?;
                bytes[last.min(6)] ^= 0x20;
                Some((address, bytes))
            }
            Attack::Legacy => {
                let n = packet.encode_frame(&mut buf).ok()?;
                Some((address, buf.get(..n)?.to_vec()))
            }
            Attack::Unknown => self.frame(STRANGER, None, packet).map(|f| (STRANGER, f)),
        }
    }
}

fn rcv(address: u16, data: &[u8], rssi: i16, snr: i16, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("+RCV={address},{},", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(format!(",{rssi},{snr}\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lines_become_modem_frames_the_parser_reads_back() {
        let mut radio = RadioFrames::default();
        let line = r#"{"ts":10500,"id":"N2","n1":{"t":27.5,"h":53.8,"g":84461},"n2":{"t":26.5},"n3":{"t":20.1,"h":40.25,"g":1},"sig":{"rssi":-34,"snr":13},"sts":{"rx":2,"err":1}}"#;
        let bytes = radio.frames(line);
        let mut parser = lora_link::modem::ModemParser::new();
        assert_eq!(parser.feed(&bytes), bytes.len());
        let mut frames = Vec::new();
        while let Some(event) = parser.next_event() {
            let lora_link::modem::Event::Frame(f) = event else {
                panic!("{event:?}")
            };
            frames.push((
                f.sender,
                lora_link::packet::SensorDataPacket::decode_frame(f.data),
                f.rssi,
            ));
        }
        // The counted CRC error comes first, as a broken frame.
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(frames[0].1.is_err());
        let p1 = frames[1].1.unwrap();
        assert_eq!(
            (
                frames[1].0,
                p1.seq_num,
                p1.temperature,
                p1.humidity,
                p1.gas_resistance
            ),
            (1, 1, 275, 5380, 84461)
        );
        assert_eq!(frames[1].2, -34);
        let p3 = frames[2].1.unwrap();
        assert_eq!((frames[2].0, p3.seq_num, p3.humidity), (3, 1, 4025));
        // The next line's frames carry the next sequence numbers, and no error.
        let again = radio.frames(line);
        let mut parser = lora_link::modem::ModemParser::new();
        parser.feed(&again);
        let mut seqs = Vec::new();
        while let Some(lora_link::modem::Event::Frame(f)) = parser.next_event() {
            seqs.push(
                lora_link::packet::SensorDataPacket::decode_frame(f.data)
                    .unwrap()
                    .seq_num,
            );
        }
        assert_eq!(seqs, [2, 2]);
    }
}
