//! The ingest stage: lines from the source are decoded, stamped and committed to the outbox
//! on one dedicated thread, many packets per transaction. Only after the commit are the
//! sinks woken (invariant 1). The thread is the outbox's one writer: gateway events, sink
//! cursors and pruning reach it as queued writes, applied between commits.
//!
//! Timestamps: see [`clock`].

mod clock;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::FullPolicy;
use crate::decode::{decode, Decoded, ErrorClass};
use crate::events::{event_row, EventKind, RebootDetector};
use crate::live_view::LiveView;
use crate::outbox::{Applied, Outbox, Seq, Write, Writes};
use crate::quarantine::Quarantine;
use crate::reading::{Line, Packet, Precision};
use crate::self_stats::Stats;
use clock::PacketClock;

/// Most lines taken into one outbox transaction: where the commit rate levels off
/// (`cargo bench --bench outbox`: 1024 lines commit as many readings per second as 4096, in a
/// quarter of the time a burst waits for its commit; see BENCHMARKS.md).
const MAX_BATCH_LINES: usize = 1024;
/// Wait between attempts when the outbox cannot commit (disk full, I/O error), and between
/// budget checks while the `block` policy holds the source back.
const COMMIT_RETRY: Duration = Duration::from_secs(1);
/// At most one warning about readings dropped by the disk budget per this interval.
const DROP_WARN_EVERY: Duration = Duration::from_secs(60);

/// The outbox's disk budget and what to do at it (the configured sinks' cursors tell
/// delivered rows from undelivered ones: `Outbox::track_sinks`).
pub struct Budget {
    /// Bytes of database pages in use at most.
    pub max_bytes: u64,
    /// Drop oldest undelivered, or block.
    pub policy: FullPolicy,
}

/// What the ingest thread receives.
pub struct Inputs {
    /// Lines from the source; closed when the source stops.
    pub lines: mpsc::Receiver<Line>,
    /// Everything else the outbox is to store: gateway events, cursor moves, pruning.
    pub writes: Writes,
    /// Told once the source stopped and every line it sent is committed.
    pub input_committed: oneshot::Sender<()>,
}

/// Where the ingest stage reports.
pub struct IngestOutputs {
    /// Highest committed seq, for the sinks.
    pub committed: watch::Sender<Seq>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Newest values, for the dashboard (`None` without one).
    pub latest: Option<LiveView>,
    /// Bad lines.
    pub quarantine: Quarantine,
    /// Disk budget.
    pub budget: Budget,
    /// Stop retrying a failing commit (second signal).
    pub abort: tokio_util::sync::CancellationToken,
    /// Nodes heard, for the log (first packet, back after silence).
    pub activity: Arc<std::sync::Mutex<crate::nodes::activity::Activity>>,
}

/// What the thread waits for next.
enum Next {
    Line(Option<Line>),
    Write(Option<Write>),
    /// Time to look at the disk budget again (`block` holds the source back).
    Recheck,
}

/// Runs the outbox's one writer until the source has stopped and [`Write::Close`] came (or
/// every sender of writes is gone), everything received committed. Packet times are kept
/// strictly increasing at `precision`, after `newest_ts` (the newest packet already in the
/// outbox: a restart must not give a packet the time of one before it). `runtime` drives the
/// waits; this thread is not one of its workers.
pub fn run(
    inputs: Inputs,
    mut outbox: Outbox,
    precision: Precision,
    newest_ts: Option<i64>,
    out: IngestOutputs,
    runtime: tokio::runtime::Handle,
) {
    let Inputs {
        mut lines,
        mut writes,
        input_committed,
    } = inputs;
    let mut input_committed = Some(input_committed);
    let mut clock = PacketClock::new(precision);
    if let Some(ts) = newest_ts {
        clock.commit(ts - ts.rem_euclid(precision.unit_ns()));
    }
    let mut batch = Vec::with_capacity(MAX_BATCH_LINES);
    let mut drops = DropWarnings::default();
    let mut reboots = RebootDetector::default();
    let (mut lines_open, mut writes_open) = (true, true);
    // Over budget under `block`: accept no lines until the sinks caught up, unless the source
    // has stopped (then its last lines, at most a channel's worth, go in).
    let mut blocked = enforce_budget(&mut outbox, &out, &mut drops);
    while lines_open || writes_open {
        let next = runtime.block_on(async {
            tokio::select! {
                biased;
                write = writes.recv(), if writes_open => Next::Write(write),
                line = lines.recv(), if lines_open && !blocked => Next::Line(line),
                () = tokio::time::sleep(COMMIT_RETRY), if blocked => Next::Recheck,
                else => Next::Recheck,
            }
        });
        match next {
            Next::Line(None) => {
                lines_open = false;
                drops.flush();
                if let Some(tell) = input_committed.take() {
                    let _ = tell.send(());
                }
            }
            Next::Line(Some(first)) => {
                batch.push(first);
                while batch.len() < MAX_BATCH_LINES {
                    match lines.try_recv() {
                        Ok(line) => batch.push(line),
                        Err(_) => break,
                    }
                }
                let mut handled = Vec::new();
                let packets = accept_batch(&mut batch, &mut clock, &out, &mut handled);
                if !packets.is_empty() && !commit(&mut outbox, &packets, &mut reboots, &out) {
                    break;
                }
                // Committed (or quarantined): the source may acknowledge these now.
                for tell in handled {
                    let _ = tell.send(());
                }
                blocked = enforce_budget(&mut outbox, &out, &mut drops) && !lines.is_closed();
            }
            Next::Write(None) => writes_open = false,
            Next::Write(Some(Write::Close)) => {
                // Take what was queued before, then stop.
                writes.close();
            }
            Next::Write(Some(write)) => {
                let cursor_moved = matches!(write, Write::Cursor { .. });
                apply(&mut outbox, &write, &out);
                if blocked && cursor_moved {
                    blocked = enforce_budget(&mut outbox, &out, &mut drops) && !lines.is_closed();
                }
            }
            Next::Recheck => {
                blocked = enforce_budget(&mut outbox, &out, &mut drops) && !lines.is_closed();
            }
        }
    }
    drops.flush();
}

/// Decodes a batch of lines (emptying it) into the packets to commit; the notices their
/// sources wait for before acknowledging them go to `handled`, to be given after the commit.
fn accept_batch(
    batch: &mut Vec<Line>,
    clock: &mut PacketClock,
    out: &IngestOutputs,
    handled: &mut Vec<oneshot::Sender<()>>,
) -> Vec<Packet> {
    out.stats
        .lines
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    batch
        .drain(..)
        .filter_map(|mut line| {
            if let Some(tell) = line.handled.take() {
                handled.push(tell);
            }
            accept(line, clock, out)
        })
        .collect()
}

/// Commits `packets` (retrying while the outbox fails, until the second signal), then tells
/// the dashboard, the log and the sinks. False when they could not be committed at shutdown.
fn commit(
    outbox: &mut Outbox,
    packets: &[Packet],
    reboots: &mut RebootDetector,
    out: &IngestOutputs,
) -> bool {
    let last_seq = loop {
        match outbox.append(packets) {
            Ok(seq) => break seq,
            Err(err) if out.abort.is_cancelled() => {
                error!(error = %err, packets = packets.len(), "outbox commit failed at shutdown; these packets were not accepted");
                return false;
            }
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
    let first_seq = last_seq.plus(1 - count as i64);
    log_nodes(&out.activity, packets);
    if let Some(latest) = &out.latest {
        let refused = latest.update_committed(packets, first_seq);
        out.stats
            .latest_series_refused
            .fetch_add(refused, Ordering::Relaxed);
    }
    let mut last_seq = last_seq;
    for p in packets {
        if let Some(before) = reboots.observe(p.device_ts) {
            let text = format!(
                "reporting node rebooted: ts went back from {before} to {} ms",
                p.device_ts.unwrap_or(0)
            );
            let event = event_row(p.received_ns, EventKind::NodeReboot, "stats", &text);
            match outbox.append_events(&[event]) {
                Ok(seq) => last_seq = seq,
                Err(error) => error!(%error, "cannot record the node reboot event"),
            }
        }
    }
    out.committed.send_modify(|seq| *seq = (*seq).max(last_seq));
    true
}

/// Applies one queued write; a failure is logged (a cursor not stored means resends, an event
/// not recorded is said in the log).
fn apply(outbox: &mut Outbox, write: &Write, out: &IngestOutputs) {
    match outbox.apply(write) {
        Ok(Applied::Committed(seq)) => out.committed.send_modify(|last| *last = (*last).max(seq)),
        Ok(Applied::Pruned(0) | Applied::Done) => {}
        Ok(Applied::Pruned(n)) => info!(readings = n, "pruned history past retention"),
        Err(error) => match write {
            Write::Event(e) => error!(%error, kind = e.kind, "cannot record gateway event"),
            Write::Cursor { sink, .. } => {
                warn!(%error, sink, "cannot store the sink's cursor; retrying with its next move");
            }
            Write::Prune { .. } => warn!(%error, "pruning history failed"),
            Write::Command { .. } => warn!(%error, "cannot store a change to the nodes' commands"),
            Write::Close => {}
        },
    }
}

/// Logs the first packet of each node, and nodes back after silence.
fn log_nodes(activity: &std::sync::Mutex<crate::nodes::activity::Activity>, packets: &[Packet]) {
    use crate::nodes::activity::Note;
    let Ok(mut activity) = activity.lock() else {
        return;
    };
    let now = crate::reading::now_ns();
    for p in packets {
        for note in activity.packet(p, now) {
            match note {
                Note::First { node } => info!(node = %node, "first packet from node"),
                Note::Back { node, silent_ns } => {
                    let silent =
                        Duration::from_secs(u64::try_from(silent_ns / 1_000_000_000).unwrap_or(0));
                    info!(node = %node, silent = %humantime::format_duration(silent), "node is back");
                }
                Note::Silent { .. } => {}
            }
        }
    }
}

/// Applies the disk budget after a commit; true while `block` must hold the source back.
fn enforce_budget(outbox: &mut Outbox, out: &IngestOutputs, drops: &mut DropWarnings) -> bool {
    let b = &out.budget;
    let drop_undelivered = b.policy == FullPolicy::DropOldest;
    match outbox.enforce_budget(b.max_bytes, drop_undelivered) {
        Ok(report) => {
            if report.undelivered_dropped > 0 {
                out.stats
                    .dropped_readings
                    .fetch_add(report.undelivered_dropped, Ordering::Relaxed);
                drops.add(report.undelivered_dropped, b.max_bytes);
            }
            if report.over && !drops.blocking {
                warn!(max_bytes = b.max_bytes, "outbox at its disk budget: accepting no more lines until the sinks catch up (on_full = \"block\")");
            }
            drops.blocking = report.over;
            report.over
        }
        Err(err) => {
            error!(error = %err, "checking the outbox disk budget failed");
            false
        }
    }
}

/// Rate-limits the warning about readings dropped at the disk budget.
#[derive(Default)]
struct DropWarnings {
    pending: u64,
    last: Option<Instant>,
    blocking: bool,
}

impl DropWarnings {
    /// Logs drops not yet reported (at the end, so no count is ever left unsaid).
    fn flush(&mut self) {
        if self.pending > 0 {
            warn!(
                dropped = self.pending,
                "outbox full: dropped the oldest undelivered readings (raise [storage] max_bytes or fix the sink)"
            );
            self.pending = 0;
        }
    }

    fn add(&mut self, dropped: u64, max_bytes: u64) {
        self.pending += dropped;
        if self.last.is_none_or(|t| t.elapsed() >= DROP_WARN_EVERY) {
            warn!(
                dropped = self.pending,
                max_bytes,
                "outbox full: dropped the oldest undelivered readings (raise [storage] max_bytes or fix the sink)"
            );
            self.pending = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// Decodes one line; quarantines what is unusable; returns the packet to commit.
fn accept(line: Line, clock: &mut PacketClock, out: &IngestOutputs) -> Option<Packet> {
    if line.cut {
        out.stats.cut_lines.fetch_add(1, Ordering::Relaxed);
        if line.text.contains('{') {
            let why = "line longer than [source] max_line_length; cut";
            unusable(out, ErrorClass::LineTooLong, why, &line.text);
        }
        return None;
    }
    let origin = line.forwarded.map(|f| f.origin);
    let (ts, shifted) = match origin {
        // Another gateway's receive time, kept (cut to the precision, as it would be there):
        // delivered twice, the packet is the same points.
        Some(_) => (clock.cut(line.received_ns), false),
        None => clock.propose(line.received_ns),
    };
    let decoded = match line.decoded {
        // A source that decoded its own input (radio frames, packet events).
        Some(readings) if !readings.is_empty() => Decoded::Packet {
            packet: Packet {
                received_ns: ts,
                origin: origin.clone(),
                device_ts: None,
                readings,
                link: line.link,
            },
            rejected: Vec::new(),
        },
        Some(_) => Decoded::Skip,
        None => decode(&line.text, ts),
    };
    match decoded {
        Decoded::Skip if is_fragment(&line.text) => {
            let why = "a piece of a telemetry record, not a whole one (the stream was cut or joined mid-record)";
            unusable(out, ErrorClass::Fragment, why, &line.text);
            None
        }
        Decoded::Skip => None,
        Decoded::Invalid(reason) => {
            unusable(out, reason.class(), &reason.to_string(), &line.text);
            None
        }
        Decoded::Packet { packet, rejected } => {
            if !rejected.is_empty() {
                out.stats
                    .rejected_fields
                    .fetch_add(rejected.len() as u64, Ordering::Relaxed);
                out.stats.decode_error(ErrorClass::FieldRejected);
                out.quarantine
                    .add("decode", &rejected.join("; "), &line.text);
            }
            if origin.is_none() {
                clock.commit(ts);
            }
            if shifted {
                out.stats.shifted_packets.fetch_add(1, Ordering::Relaxed);
            }
            Some(packet)
        }
    }
}

/// Counts an unusable telemetry line of `class` and quarantines it with `why`.
fn unusable(out: &IngestOutputs, class: ErrorClass, why: &str, text: &str) {
    out.stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
    out.stats.decode_error(class);
    out.quarantine.add("decode", why, text);
}

/// Whether a line the decoder skipped still held JSON members (`"key":` and a brace): a
/// record cut at its start, e.g. when a serial port was opened in the middle of one.
fn is_fragment(text: &str) -> bool {
    text.contains("\":") && (text.contains('{') || text.contains('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_records_are_fragments_and_log_lines_are_not() {
        assert!(is_fragment(r#""h":53.1,"g":84461},"sts":{"rx":1}}"#));
        assert!(is_fragment(r#"xx"ts":1,"n1":{"t":2"#));
        assert!(!is_fragment("[INFO] probe-rs: flashing done"));
        assert!(!is_fragment(" (wk5_gateway_firmware src/main.rs:573)"));
        assert!(!is_fragment("[DEBUG] Packet { seq: 1 }"));
    }
}
