//! The newest value of every (node, metric) series, each node's recent packet times, and the
//! bounded live feed of committed readings: what the dashboard shows without a query.
//!
//! Memory is the point here: a plant of 10,000 nodes has 30,000 series, all held here. Each
//! node is one map entry; its series are a short vector sorted by metric whose texts are
//! [`CompactString`]s (inline up to 24 bytes); its packet times are a fixed ring. Updating a
//! series that already exists writes its value in place: the ingest thread allocates nothing
//! per reading (measured, see BENCHMARKS.md). The live feed is a `broadcast` channel: the
//! ingest thread's send never waits; a lagging subscriber loses the oldest batches and is
//! told so.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;

use crate::reading::{CompactString, Packet, StoredReading};

/// Batches of committed readings buffered for each live (SSE) subscriber. A subscriber that
/// falls further behind loses its oldest batches (it is told so and re-reads the history);
/// it never slows the ingest thread, whose send does not wait.
pub const LIVE_CHANNEL_CAPACITY: usize = 256;

/// A committed batch with more readings than this (a replayed file, a line of thousands of
/// nodes) is not copied for the live feed: subscribers are told to re-read instead.
pub const LIVE_MAX_READINGS: usize = 2000;

/// Receive times remembered per node, to infer how often it reports.
pub const PACKET_TIMES_PER_NODE: usize = 16;

/// What the live subscribers receive after each commit.
#[derive(Debug, Clone)]
pub enum LiveBatch {
    /// The committed readings, in seq order.
    Readings(Arc<[StoredReading]>),
    /// A batch of this many readings, too large to send one by one.
    TooLarge(usize),
}

/// The newest reading of every series, each node's recent packet times, and the live feed.
/// (A panic while the map is locked cannot leave it half-updated in a way that matters: each
/// reading is one in-place write, so a poisoned lock is used as it is.)
#[derive(Debug, Clone)]
pub struct Latest {
    inner: Arc<RwLock<BTreeMap<CompactString, Node>>>,
    live: broadcast::Sender<LiveBatch>,
}

/// One node: its series sorted by metric, and its distinct packet times (ascending).
#[derive(Debug, Default)]
struct Node {
    series: Vec<Newest>,
    times: VecDeque<i64>,
}

/// The newest reading of one series.
#[derive(Debug)]
struct Newest {
    metric: CompactString,
    unit: Option<CompactString>,
    seq: i64,
    ts_ns: i64,
    value: CompactString,
}

/// One reading, borrowed from wherever it comes from.
struct View<'a> {
    seq: i64,
    ts_ns: i64,
    node: &'a str,
    metric: &'a str,
    unit: Option<&'a str>,
    value: &'a str,
}

impl Node {
    fn record_time(&mut self, ts: i64) {
        if self.times.back() == Some(&ts) {
            return;
        }
        if let Err(at) = self.times.binary_search(&ts) {
            if self.times.len() == PACKET_TIMES_PER_NODE {
                if at == 0 {
                    return; // older than everything kept
                }
                self.times.pop_front();
                self.times.insert(at - 1, ts);
            } else {
                if self.times.capacity() == 0 {
                    self.times.reserve_exact(PACKET_TIMES_PER_NODE);
                }
                self.times.insert(at, ts);
            }
        }
    }

    fn record(&mut self, r: &View) {
        self.record_time(r.ts_ns);
        match self
            .series
            .binary_search_by(|s| s.metric.as_str().cmp(r.metric))
        {
            Ok(at) => {
                let s = &mut self.series[at];
                s.seq = r.seq;
                s.ts_ns = r.ts_ns;
                s.value.clear();
                s.value.push_str(r.value);
                if s.unit.as_deref() != r.unit {
                    s.unit = r.unit.map(CompactString::from);
                }
            }
            Err(at) => self.series.insert(
                at,
                Newest {
                    metric: r.metric.into(),
                    unit: r.unit.map(CompactString::from),
                    seq: r.seq,
                    ts_ns: r.ts_ns,
                    value: r.value.into(),
                },
            ),
        }
    }
}

impl Default for Latest {
    fn default() -> Self {
        Latest {
            inner: Arc::default(),
            live: broadcast::channel(LIVE_CHANNEL_CAPACITY).0,
        }
    }
}

impl Latest {
    /// Records the readings of `packets`, just committed with seqs from `first_seq` on
    /// (called by the ingest thread right after each commit), and sends them to the live
    /// subscribers, if any. Never waits.
    pub fn update_committed(&self, packets: &[Packet], first_seq: i64) {
        let views = packets
            .iter()
            .flat_map(|p| p.readings.iter().map(move |r| (p.received_ns, r)))
            .zip(first_seq..)
            .map(|((ts_ns, r), seq)| View {
                seq,
                ts_ns,
                node: &r.node,
                metric: &r.metric,
                unit: r.unit,
                value: &r.value,
            });
        self.record(views);
    }

    /// Records readings read back from the outbox (start-up), newer replacing older, and
    /// sends them to the live subscribers, if any.
    pub fn update(&self, readings: &[StoredReading]) {
        self.record(readings.iter().map(|r| View {
            seq: r.seq,
            ts_ns: r.ts_ns,
            node: &r.node,
            metric: &r.metric,
            unit: r.unit.as_deref(),
            value: &r.value,
        }));
    }

    fn record<'a>(&self, views: impl Iterator<Item = View<'a>>) {
        let live = self.live.receiver_count() > 0;
        let mut batch = Vec::new();
        let mut count = 0;
        {
            let mut nodes = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            for r in views {
                count += 1;
                if live && count <= LIVE_MAX_READINGS {
                    batch.push(stored(&r));
                }
                if !nodes.contains_key(r.node) {
                    nodes.insert(r.node.into(), Node::default());
                }
                if let Some(node) = nodes.get_mut(r.node) {
                    node.record(&r);
                }
            }
        }
        if !live || count == 0 {
            return;
        }
        // Err only when every subscriber left meanwhile; lagging ones lose the oldest.
        let _ = self.live.send(if count > LIVE_MAX_READINGS {
            LiveBatch::TooLarge(count)
        } else {
            LiveBatch::Readings(batch.into())
        });
    }

    /// Adds known receive times of `node` (history read at start-up).
    pub fn seed_times(&self, node: &str, times: &[i64]) {
        let mut nodes = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let node = nodes.entry(node.into()).or_default();
        for ts in times {
            node.record_time(*ts);
        }
    }

    /// A copy of every series' newest reading, ordered by node and metric.
    pub fn snapshot(&self) -> Vec<StoredReading> {
        let nodes = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .flat_map(|(node, n)| {
                n.series.iter().map(move |s| StoredReading {
                    seq: s.seq,
                    ts_ns: s.ts_ns,
                    node: node.to_string(),
                    metric: s.metric.to_string(),
                    unit: s.unit.as_ref().map(ToString::to_string),
                    value: s.value.to_string(),
                })
            })
            .collect()
    }

    /// Every node with its recent receive times (ascending), ordered by node.
    pub fn node_times(&self) -> Vec<(String, Vec<i64>)> {
        let nodes = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .filter(|(_, n)| !n.times.is_empty())
            .map(|(node, n)| (node.to_string(), n.times.iter().copied().collect()))
            .collect()
    }

    /// Live subscribers now.
    #[cfg(test)]
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }

    /// A new live subscriber: every batch committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveBatch> {
        self.live.subscribe()
    }
}

fn stored(r: &View) -> StoredReading {
    StoredReading {
        seq: r.seq,
        ts_ns: r.ts_ns,
        node: r.node.to_string(),
        metric: r.metric.to_string(),
        unit: r.unit.map(str::to_string),
        value: r.value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Reading;

    fn reading(seq: i64, ts_ns: i64, node: &str, metric: &str, value: &str) -> StoredReading {
        StoredReading {
            seq,
            ts_ns,
            node: node.into(),
            metric: metric.into(),
            unit: None,
            value: value.into(),
        }
    }

    #[test]
    fn latest_keeps_the_newest_value_and_each_nodes_distinct_packet_times() {
        let latest = Latest::default();
        latest.update(&[
            reading(1, 10, "node1", "temperature", "20"),
            reading(2, 10, "node1", "humidity", "50"),
            reading(3, 20, "node1", "temperature", "21"),
        ]);
        latest.seed_times("node1", &[5, 10, 15]);
        let snap = latest.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(
            (snap[1].metric.as_str(), snap[1].value.as_str()),
            ("temperature", "21")
        );
        assert_eq!(
            latest.node_times(),
            [("node1".to_string(), vec![5, 10, 15, 20])]
        );
        let many: Vec<_> = (0..40)
            .map(|i| reading(i, 100 + i, "n", "m", "1"))
            .collect();
        latest.update(&many);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(times.first(), Some(&124));
        assert_eq!(times.last(), Some(&139));
        // A newer time pushes the oldest out; one older than all kept is ignored.
        latest.seed_times("n", &[200, 1]);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(times, &sorted);
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(times.first(), Some(&125));
        assert_eq!(times.last(), Some(&200));
        // One between two kept times lands in order, the oldest going out.
        latest.seed_times("n", &[150]);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(&times[13..], &[139, 150, 200]);
        assert_eq!(times.first(), Some(&126));
    }

    #[test]
    fn committed_packets_update_in_place_with_their_seqs_and_units() {
        let latest = Latest::default();
        let packet = |ts, t: &str, unit| Packet {
            received_ns: ts,
            device_ts: None,
            readings: vec![
                Reading {
                    node: "node1".into(),
                    metric: "temperature".into(),
                    unit,
                    value: t.into(),
                },
                Reading {
                    node: "signal".into(),
                    metric: "rssi".into(),
                    unit: Some("dbm"),
                    value: "-40".into(),
                },
            ],
        };
        latest.update_committed(&[packet(10, "20.5", Some("celsius"))], 1);
        latest.update_committed(&[packet(20, "21.25", None), packet(30, "22", None)], 3);
        let snap = latest.snapshot();
        let got: Vec<_> = snap
            .iter()
            .map(|r| {
                (
                    r.seq,
                    r.ts_ns,
                    r.node.as_str(),
                    r.unit.as_deref(),
                    r.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (5, 30, "node1", None, "22"),
                (6, 30, "signal", Some("dbm"), "-40"),
            ]
        );
        assert_eq!(
            latest.node_times()[0],
            ("node1".to_string(), vec![10, 20, 30])
        );
    }

    #[test]
    fn live_subscribers_get_batches_and_only_a_count_of_huge_ones() {
        let latest = Latest::default();
        let mut feed = latest.subscribe();
        latest.update(&[reading(1, 10, "n", "m", "1")]);
        let many: Vec<_> = (0..=LIVE_MAX_READINGS as i64)
            .map(|i| reading(2 + i, 20, "n", &format!("m{i}"), "1"))
            .collect();
        latest.update(&many);
        match feed.try_recv().unwrap() {
            LiveBatch::Readings(b) => assert_eq!(b[0].value, "1"),
            other => panic!("{other:?}"),
        }
        match feed.try_recv().unwrap() {
            LiveBatch::TooLarge(n) => assert_eq!(n, LIVE_MAX_READINGS + 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(latest.snapshot().len(), LIVE_MAX_READINGS + 2);
    }

    #[test]
    fn live_subscribers_get_each_batch_and_a_lagging_one_never_blocks_the_writer() {
        let latest = Latest::default();
        latest.update(&[reading(1, 1, "node1", "temperature", "20")]);
        let mut rx = latest.subscribe();
        latest.update(&[reading(2, 2, "node1", "temperature", "21")]);
        let LiveBatch::Readings(batch) = rx.try_recv().unwrap() else {
            panic!("expected readings");
        };
        assert_eq!(batch[0].value, "21");
        // Nobody reads: the writer goes on and the subscriber is told what it missed.
        for i in 0..(LIVE_CHANNEL_CAPACITY as i64 + 10) {
            latest.update(&[reading(3 + i, 3 + i, "node1", "temperature", "1")]);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}
