//! The `simulator` source (the default): the model of `simulator_model` driven by a clock.
//! Its lines are exactly the firmware's JSON and go through the same decoder as a real
//! device's. Also used by `iiot-gateway simulate` to print lines for piping and demos, and
//! by `simulate --radio` to print what a RYLR998 modem would write ([`RadioFrames`]).

use std::time::Duration;

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
        };
        if tx.send(line).await.is_err() {
            return SourceEnd::Cancelled;
        }
    }
}

/// Turns the model's lines into the bytes a RYLR998 modem writes when the simulated nodes
/// transmit: one `+RCV=<address>,<len>,<frame>,<rssi>,<snr>\r\n` per node in the line (node
/// `nK` sends from address K), each frame a `SensorDataPacket` with its own sequence number;
/// a CRC failure the model counted becomes a frame with a flipped bit first. Pure.
#[derive(Debug, Default)]
pub(crate) struct RadioFrames {
    /// Next sequence number per address.
    seq: std::collections::BTreeMap<u16, u16>,
    /// `sts.err` of the previous line.
    errors: u64,
}

impl RadioFrames {
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
        for (key, node) in &obj {
            let Some(address) = key.strip_prefix('n').and_then(|k| k.parse::<u16>().ok()) else {
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
            let seq = self.seq.entry(address).or_insert(1);
            let packet = lora_link::packet::SensorDataPacket {
                seq_num: *seq,
                temperature: (t * 10.0) as i16,
                humidity: (h * 100.0).round() as u16,
                gas_resistance: g as u32,
            };
            *seq = seq.wrapping_add(1);
            let mut frame = [0u8; lora_link::packet::MAX_FRAME_LEN];
            let Ok(n) = packet.encode_frame(&mut frame) else {
                continue;
            };
            if corrupt > 0 {
                corrupt -= 1;
                let mut bad = frame;
                bad[0] ^= 0x01;
                rcv(address, &bad[..n], rssi - 10, snr - 5, &mut out);
            }
            rcv(address, &frame[..n], rssi, snr, &mut out);
        }
        out
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
