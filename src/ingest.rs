//! The ingest stage: lines from the source are decoded, stamped and committed to the outbox
//! on one dedicated thread, many packets per transaction. Only after the commit are the
//! sinks woken (invariant 1).
//!
//! Timestamps: every packet carries its line's receive time, made strictly increasing here
//! (a packet received in the same nanosecond as the previous one gets +1 ns), so two packets
//! can never collapse into one InfluxDB point.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::error;

use crate::decode::{decode, Decoded, MARKER};
use crate::outbox::Outbox;
use crate::quarantine::Quarantine;
use crate::reading::{Line, Packet, StoredReading};
use crate::stats::{Latest, Stats};

/// Most lines taken into one outbox transaction.
const MAX_BATCH_LINES: usize = 4096;
/// Wait between attempts when the outbox cannot commit (disk full, I/O error).
const COMMIT_RETRY: Duration = Duration::from_secs(1);

/// Where the ingest stage reports.
pub struct IngestOutputs {
    /// Highest committed seq, for the sinks.
    pub committed: watch::Sender<i64>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Newest values, for the dashboard.
    pub latest: Latest,
    /// Bad lines.
    pub quarantine: Quarantine,
}

/// Runs until every sender of `rx` is gone and everything received is committed.
pub fn run(mut rx: mpsc::Receiver<Line>, mut outbox: Outbox, out: IngestOutputs) {
    let mut last_ts = i64::MIN;
    let mut lines = Vec::with_capacity(MAX_BATCH_LINES);
    while let Some(first) = rx.blocking_recv() {
        lines.push(first);
        while lines.len() < MAX_BATCH_LINES {
            match rx.try_recv() {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        out.stats
            .lines
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        let packets: Vec<Packet> = lines
            .drain(..)
            .filter_map(|line| accept(line, &mut last_ts, &out))
            .collect();
        if packets.is_empty() {
            continue;
        }
        let last_seq = loop {
            match outbox.append(&packets) {
                Ok(seq) => break seq,
                Err(err) => {
                    error!(error = %err, packets = packets.len(), "outbox commit failed; retrying (the source waits)");
                    std::thread::sleep(COMMIT_RETRY);
                }
            }
        };
        let count: usize = packets.iter().map(|p| p.readings.len()).sum();
        out.stats
            .packets
            .fetch_add(packets.len() as u64, Ordering::Relaxed);
        out.stats
            .readings
            .fetch_add(count as u64, Ordering::Relaxed);
        let first_seq = last_seq - count as i64 + 1;
        out.latest.update(stored(&packets, first_seq));
        out.committed.send_replace(last_seq);
    }
}

/// Decodes one line; quarantines what is unusable; returns the packet to commit.
fn accept(line: Line, last_ts: &mut i64, out: &IngestOutputs) -> Option<Packet> {
    if line.cut {
        out.stats.cut_lines.fetch_add(1, Ordering::Relaxed);
        if line.text.contains(MARKER) || line.text.trim_start().starts_with('{') {
            out.stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
            out.quarantine.add(
                "decode",
                "line longer than [source] max_line_length; cut",
                &line.text,
            );
        }
        return None;
    }
    let ts = line.received_ns.max(last_ts.saturating_add(1));
    match decode(&line.text, ts) {
        Decoded::Skip => None,
        Decoded::Invalid(reason) => {
            out.stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
            out.quarantine.add("decode", &reason, &line.text);
            None
        }
        Decoded::Packet { packet, rejected } => {
            if !rejected.is_empty() {
                out.stats
                    .rejected_fields
                    .fetch_add(rejected.len() as u64, Ordering::Relaxed);
                out.quarantine
                    .add("decode", &rejected.join("; "), &line.text);
            }
            *last_ts = ts;
            Some(packet)
        }
    }
}

fn stored(packets: &[Packet], first_seq: i64) -> impl Iterator<Item = StoredReading> + '_ {
    packets
        .iter()
        .flat_map(|p| p.readings.iter().map(move |r| (p.received_ns, r)))
        .zip(first_seq..)
        .map(|((ts_ns, r), seq)| StoredReading {
            seq,
            ts_ns,
            node: r.node.clone(),
            metric: r.metric.clone(),
            unit: r.unit.map(str::to_string),
            value: r.value.clone(),
        })
}
