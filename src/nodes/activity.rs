//! What the log says while the gateway runs, so an operator can tell the board is sending:
//! the first packet from each node, a node going silent (by the rule of
//! [`crate::nodes::liveness`], the dashboard's) and coming back, and a periodic one-line summary of
//! what went through (skipped when nothing changed). The trackers are pure; the ingest thread
//! feeds packets, the narrator job ([`spawn_narrator`]) ticks and writes the log.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::nodes::liveness::{node_state, PACKET_TIMES_PER_NODE};
use crate::outbox::{OutboxReader, Seq};
use crate::quarantine::Quarantine;
use crate::reading::{now_ns, CompactString, Packet};
use crate::self_stats::Stats;

/// Something worth a log line about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The first packet from this node since the gateway started.
    First { node: CompactString },
    /// A packet after the node had gone silent.
    Back { node: CompactString, silent_ns: i64 },
    /// No packet for [`crate::nodes::liveness::OFFLINE_AFTER_INTERVALS`] of its intervals.
    Silent {
        node: CompactString,
        last_seen_ns: i64,
        interval_ns: i64,
    },
}

/// One node: its recent arrival times and whether it was noted silent. 40 bytes, no
/// allocation: the log follows every node, 10,000 of them in a plant.
#[derive(Debug, Default)]
struct Track {
    /// The newest arrival, ns.
    last: i64,
    /// The gaps before it, newest first, in ms (saturating): with `last`, the node's newest
    /// [`PACKET_TIMES_PER_NODE`] arrivals.
    gaps_ms: [u32; PACKET_TIMES_PER_NODE - 1],
    /// Arrivals held (0 before the first).
    held: u8,
    silent: bool,
}

const MS: i64 = 1_000_000;

impl Track {
    fn last(&self) -> Option<i64> {
        (self.held > 0).then_some(self.last)
    }

    /// Adds an arrival; one not after the newest (the same packet, or a clock set back) is
    /// not a new one.
    fn record(&mut self, ts: i64) {
        if self.held > 0 {
            if ts <= self.last {
                return;
            }
            let gap = u32::try_from((ts - self.last) / MS).unwrap_or(u32::MAX);
            self.gaps_ms.copy_within(..PACKET_TIMES_PER_NODE - 2, 1);
            self.gaps_ms[0] = gap;
        }
        self.last = ts;
        self.held = (self.held + 1).min(PACKET_TIMES_PER_NODE as u8);
    }

    /// The arrivals held, oldest first (gaps at ms precision).
    fn times(&self) -> ([i64; PACKET_TIMES_PER_NODE], usize) {
        let n = usize::from(self.held);
        let mut times = [0; PACKET_TIMES_PER_NODE];
        let mut t = self.last;
        for i in (0..n).rev() {
            times[i] = t;
            if i > 0 {
                t -= i64::from(self.gaps_ms[n - 1 - i]) * MS;
            }
        }
        (times, n)
    }
}

/// The nodes heard since start, and which of them went silent.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    nodes: BTreeMap<CompactString, Track>,
}

impl Activity {
    /// A packet committed at `arrived_ns` (the wall clock, not the packet's time: a replayed
    /// file keeps recorded times, which say nothing about silence now): notes for its nodes
    /// heard for the first time or again. `signal` and `stats` (the link's own readings) are
    /// not nodes.
    pub(crate) fn packet(&mut self, packet: &Packet, arrived_ns: i64) -> Vec<Note> {
        let mut notes = Vec::new();
        let ts = arrived_ns;
        for r in &packet.readings {
            if matches!(r.node.as_str(), "signal" | "stats") {
                continue;
            }
            let track = self.nodes.entry(r.node.clone()).or_default();
            match track.last() {
                // Another reading of this packet's node.
                Some(last) if last == ts => continue,
                None => notes.push(Note::First {
                    node: r.node.clone(),
                }),
                Some(last) if track.silent => notes.push(Note::Back {
                    node: r.node.clone(),
                    silent_ns: ts.saturating_sub(last),
                }),
                Some(_) => {}
            }
            track.silent = false;
            track.record(ts);
        }
        notes
    }

    /// Nodes that went silent by `now_ns` (each noted once, until it is back).
    pub(crate) fn check(&mut self, now_ns: i64) -> Vec<Note> {
        let mut notes = Vec::new();
        for (node, track) in &mut self.nodes {
            if track.silent {
                continue;
            }
            let (times, n) = track.times();
            let Some(state) = node_state(node, &times[..n], now_ns) else {
                continue;
            };
            if !state.online {
                track.silent = true;
                notes.push(Note::Silent {
                    node: node.clone(),
                    last_seen_ns: state.last_seen_ns,
                    interval_ns: state.interval_ns,
                });
            }
        }
        notes
    }
}

/// What the periodic summary compares: totals at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub packets: u64,
    pub readings: u64,
    pub quarantined: u64,
    /// Per sink: (name, delivered, backlog).
    pub sinks: Vec<(&'static str, u64, i64)>,
}

/// The summary line's text for the change from `before` to `now`; `None` when nothing changed
/// (no packet, nothing delivered, no backlog moved).
pub(crate) fn summary(before: &Totals, now: &Totals) -> Option<String> {
    if before == now {
        return None;
    }
    let delivered_before =
        |name: &str| before.sinks.iter().find(|s| s.0 == name).map_or(0, |s| s.1);
    let sinks: Vec<String> = now
        .sinks
        .iter()
        .map(|(name, delivered, backlog)| {
            format!(
                "{name} +{} delivered, {backlog} waiting",
                delivered.saturating_sub(delivered_before(name))
            )
        })
        .collect();
    let mut text = format!(
        "+{} packets, +{} readings",
        now.packets.saturating_sub(before.packets),
        now.readings.saturating_sub(before.readings)
    );
    if !sinks.is_empty() {
        text.push_str("; ");
        text.push_str(&sinks.join("; "));
    }
    text.push_str(&format!(
        "; +{} quarantined",
        now.quarantined.saturating_sub(before.quarantined)
    ));
    Some(text)
}

/// How often nodes are checked for silence.
const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// What the narrator reads.
pub(crate) struct Narrator {
    /// Fed by the ingest thread.
    pub activity: Arc<Mutex<Activity>>,
    pub stats: Arc<Stats>,
    pub quarantine: Quarantine,
    /// For the sinks' backlogs (shared with the gateway's shutdown reports).
    pub reader: Arc<OutboxReader>,
    /// The configured sinks.
    pub sinks: Vec<&'static str>,
    /// `[log] summary_interval`; `None`: no summaries.
    pub summary_every: Option<Duration>,
}

/// Starts the narrator on `tasks`, until `stop`: it logs nodes that went silent, and every
/// `summary_every` a one-line summary of what went through since the last (none when
/// nothing changed).
pub(crate) fn spawn_narrator(tasks: &TaskTracker, n: Narrator, stop: CancellationToken) {
    tasks.spawn(async move {
        tokio::select! {
            () = narrate(n) => {}
            () = stop.cancelled() => {}
        }
    });
}

async fn narrate(n: Narrator) {
    let Narrator {
        activity,
        stats,
        quarantine,
        reader,
        sinks,
        summary_every,
    } = n;
    let totals = |reader: &OutboxReader| {
        let delivered = |name: &str| {
            stats
                .sinks
                .read()
                .ok()
                .and_then(|s| {
                    s.get(name).map(|st| {
                        (
                            st.delivered.load(Ordering::Relaxed),
                            st.cursor.load(Ordering::Relaxed),
                        )
                    })
                })
                .unwrap_or((0, 0))
        };
        Totals {
            packets: stats.packets.load(Ordering::Relaxed),
            readings: stats.readings.load(Ordering::Relaxed),
            quarantined: quarantine.total(),
            sinks: sinks
                .iter()
                .map(|name| {
                    let (delivered, cursor) = delivered(name);
                    let backlog = reader.count_after(Seq::new(cursor)).unwrap_or(-1);
                    (*name, delivered, backlog)
                })
                .collect(),
        }
    };
    let mut last = totals(&reader);
    let mut next_summary = summary_every.map(|d| tokio::time::Instant::now() + d);
    let mut next_check = tokio::time::Instant::now() + SILENCE_CHECK;
    loop {
        tokio::time::sleep_until(next_summary.map_or(next_check, |s| s.min(next_check))).await;
        if tokio::time::Instant::now() >= next_check {
            next_check += SILENCE_CHECK;
        }
        let notes = activity
            .lock()
            .map(|mut a| a.check(now_ns()))
            .unwrap_or_default();
        for note in notes {
            if let Note::Silent {
                node,
                last_seen_ns,
                interval_ns,
            } = note
            {
                let secs =
                    |ns: i64| Duration::from_secs(u64::try_from(ns / 1_000_000_000).unwrap_or(0));
                let silent = secs(now_ns().saturating_sub(last_seen_ns));
                warn!(
                    node = %node,
                    silent = %humantime::format_duration(silent),
                    interval = %humantime::format_duration(secs(interval_ns)),
                    "node went silent: no packet for 3 of its intervals"
                );
            }
        }
        if let (Some(due), Some(d)) = (next_summary, summary_every) {
            if tokio::time::Instant::now() >= due {
                next_summary = Some(tokio::time::Instant::now() + d);
                let now = totals(&reader);
                if let Some(text) = summary(&last, &now) {
                    info!(
                        summary = %text,
                        every = %humantime::format_duration(d),
                        "what went through since the last summary"
                    );
                }
                last = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Reading;

    const S: i64 = 1_000_000_000;

    fn packet(ts: i64, nodes: &[&str]) -> Packet {
        Packet {
            // A recorded time far from now: only the arrival time counts.
            received_ns: ts - 1_000_000 * S,
            origin: None,
            device_ts: None,
            link: None,
            readings: nodes
                .iter()
                .chain(["signal", "stats"].iter())
                .flat_map(|n| {
                    ["temperature", "humidity"].map(|m| Reading {
                        node: (*n).into(),
                        metric: m.into(),
                        unit: None,
                        value: "1".into(),
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn a_track_holds_the_newest_arrivals_at_ms_precision_without_repeats() {
        let mut t = Track::default();
        assert_eq!(t.last(), None);
        assert_eq!(t.times().1, 0);
        t.record(5 * S);
        t.record(5 * S); // the same packet's next node reading
        t.record(6 * S + 1_500_000); // 1.5 ms later than 6 s
        t.record(6 * S); // a clock set back: not an arrival
        let (times, n) = t.times();
        assert_eq!(n, 2);
        assert_eq!(times[1], 6 * S + 1_500_000, "the newest exactly");
        assert!(
            (times[0] - 5 * S).abs() < MS,
            "the others to the ms: {times:?}"
        );
        for k in 7..20 {
            t.record(k * S);
        }
        let (times, n) = t.times();
        assert_eq!(n, PACKET_TIMES_PER_NODE);
        assert_eq!(
            &times[..n],
            &(12..20).map(|k| k * S).collect::<Vec<_>>()[..]
        );
        assert_eq!(t.last(), Some(19 * S));
    }

    #[test]
    fn first_packets_silence_and_return_are_noted_once_each() {
        let mut a = Activity::default();
        assert_eq!(
            a.packet(&packet(0, &["node1", "node2"]), 0),
            [
                Note::First {
                    node: "node1".into()
                },
                Note::First {
                    node: "node2".into()
                }
            ]
        );
        assert!(a.packet(&packet(S, &["node1", "node2"]), S).is_empty());
        assert!(a.packet(&packet(2 * S, &["node1"]), 2 * S).is_empty());
        // Interval 1 s: silent after 3 s without a packet. node2 last at 1 s.
        assert_eq!(
            a.check(4 * S + 1),
            [Note::Silent {
                node: "node2".into(),
                last_seen_ns: S,
                interval_ns: S
            }]
        );
        assert!(a.check(4 * S + 2).is_empty(), "once");
        assert_eq!(
            a.check(5 * S + 1),
            [Note::Silent {
                node: "node1".into(),
                last_seen_ns: 2 * S,
                interval_ns: S
            }]
        );
        assert_eq!(
            a.packet(&packet(9 * S, &["node2"]), 9 * S),
            [Note::Back {
                node: "node2".into(),
                silent_ns: 8 * S
            }]
        );
    }

    #[test]
    fn the_summary_says_what_changed_and_nothing_when_nothing_did() {
        let before = Totals {
            packets: 10,
            readings: 90,
            quarantined: 1,
            sinks: vec![("mqtt", 90, 0)],
        };
        assert_eq!(summary(&before, &before), None);
        let now = Totals {
            packets: 13,
            readings: 117,
            quarantined: 1,
            sinks: vec![("mqtt", 110, 7)],
        };
        assert_eq!(
            summary(&before, &now).unwrap(),
            "+3 packets, +27 readings; mqtt +20 delivered, 7 waiting; +0 quarantined"
        );
    }
}
