//! The live view of the data, [`LiveView`]: the newest value of every (node, metric) series,
//! each node's recent packet times, and the bounded live feed of committed readings; what the
//! dashboard shows without a query. The ingest thread updates it after each commit; the web
//! layer reads it. (The outbox's own in-memory hand-off to the sinks is `outbox/feed.rs`.)
//!
//! Memory is the point here: a plant of 10,000 nodes has 30,000 series, all held here
//! (measured, see BENCHMARKS.md). Each node is one map entry holding its packet times inline
//! and its series in one exact-size allocation, sorted by metric. A series is 48 bytes: its
//! (metric, unit) pair is an index into a table that holds each distinct pair once, and its
//! value a [`CompactString`] (inline up to 24 bytes). Updating a series that already exists
//! writes its value in place: the ingest thread allocates nothing per reading. The live feed
//! is a `broadcast` channel: the ingest thread's send never waits; a lagging subscriber loses
//! the oldest batches and is told so.
//!
//! Bounded: at most [`MAX_SERIES`] series are kept. A firmware that invents keys cannot grow
//! memory without limit: series first seen after that are refused here (their readings are
//! still committed and delivered), counted (`iiot_latest_series_refused_total`), and the log
//! says so once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;
use tracing::warn;

use crate::outbox::{Seq, StoredReading};
use crate::reading::{CompactString, Packet};

/// Batches of committed readings buffered for each live (SSE) subscriber. A subscriber that
/// falls further behind loses its oldest batches (it is told so and re-reads the history);
/// it never slows the ingest thread, whose send does not wait.
pub const LIVE_CHANNEL_CAPACITY: usize = 256;

/// A committed batch with more readings than this (a replayed file, a line of thousands of
/// nodes) is not copied for the live feed: subscribers are told to re-read instead.
pub const LIVE_MAX_READINGS: usize = 2000;

/// Series whose newest value is kept at most (about 5 MB; a plant of 10,000 nodes has
/// 30,000). The Home Assistant discovery of the MQTT sink announces at most this many too.
pub const MAX_SERIES: usize = 100_000;

use crate::nodes::liveness::PacketTimes;
pub use crate::nodes::liveness::PACKET_TIMES_PER_NODE;

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
pub struct LiveView {
    inner: Arc<RwLock<Table>>,
    live: broadcast::Sender<LiveBatch>,
}

/// The nodes, and the (metric, unit) pairs their series refer to.
#[derive(Debug)]
struct Table {
    nodes: BTreeMap<CompactString, Node>,
    keys: Keys,
    /// Series held, over all nodes.
    series: usize,
    /// Series held at most.
    max_series: usize,
    /// The refusal was logged.
    warned: bool,
}

impl Table {
    fn new(max_series: usize) -> Self {
        Table {
            nodes: BTreeMap::new(),
            keys: Keys::default(),
            series: 0,
            max_series,
            warned: false,
        }
    }

    /// Records one reading; false when it is of a new series and the table is full.
    fn record(&mut self, r: &View) -> bool {
        let full = self.series >= self.max_series;
        let Table {
            nodes,
            keys,
            series,
            ..
        } = self;
        let node = match nodes.get_mut(r.node) {
            Some(node) => node,
            None if full => return false,
            None => nodes.entry(r.node.into()).or_default(),
        };
        match node.record(r, keys, full) {
            Recorded::Updated => true,
            Recorded::Added => {
                *series += 1;
                true
            }
            Recorded::Refused => false,
        }
    }
}

/// Each distinct (metric, unit) pair once, numbered in order of appearance.
#[derive(Debug, Default)]
struct Keys {
    pairs: Vec<Key>,
    ids: HashMap<Key, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    metric: CompactString,
    unit: Option<CompactString>,
}

impl Keys {
    fn get(&self, id: u32) -> &Key {
        &self.pairs[id as usize]
    }

    fn metric(&self, id: u32) -> &str {
        &self.get(id).metric
    }

    /// The id of (metric, unit), added when new; `None` only past 4 billion distinct pairs.
    fn intern(&mut self, metric: &str, unit: Option<&str>) -> Option<u32> {
        let key = Key {
            metric: metric.into(),
            unit: unit.map(CompactString::from),
        };
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let id = u32::try_from(self.pairs.len()).ok()?;
        self.pairs.push(key.clone());
        self.ids.insert(key, id);
        Some(id)
    }
}

/// One node: its series sorted by metric, and its distinct packet times (ascending).
#[derive(Debug, Default)]
struct Node {
    series: Box<[Newest]>,
    times: PacketTimes,
}

/// The newest reading of one series.
#[derive(Debug)]
struct Newest {
    /// Its (metric, unit) in [`Keys`].
    key: u32,
    seq: Seq,
    ts_ns: i64,
    value: CompactString,
}

/// One reading, borrowed from wherever it comes from.
struct View<'a> {
    seq: Seq,
    ts_ns: i64,
    node: &'a str,
    metric: &'a str,
    unit: Option<&'a str>,
    value: &'a str,
}

/// What [`Node::record`] did.
enum Recorded {
    Updated,
    Added,
    /// A new series, and there is no room.
    Refused,
}

impl Node {
    /// Records `r`; a new series only when not `full`.
    fn record(&mut self, r: &View, keys: &mut Keys, full: bool) -> Recorded {
        self.times.record(r.ts_ns);
        match self
            .series
            .binary_search_by(|s| keys.metric(s.key).cmp(r.metric))
        {
            Ok(at) => {
                let s = &mut self.series[at];
                s.seq = r.seq;
                s.ts_ns = r.ts_ns;
                s.value.clear();
                s.value.push_str(r.value);
                if keys.get(s.key).unit.as_deref() != r.unit {
                    if let Some(key) = keys.intern(r.metric, r.unit) {
                        s.key = key;
                    }
                }
                Recorded::Updated
            }
            Err(_) if full => Recorded::Refused,
            Err(at) => {
                let Some(key) = keys.intern(r.metric, r.unit) else {
                    return Recorded::Refused;
                };
                // One exact-size allocation per node: a new series is rare.
                let mut series = std::mem::take(&mut self.series).into_vec();
                series.reserve_exact(1);
                series.insert(
                    at,
                    Newest {
                        key,
                        seq: r.seq,
                        ts_ns: r.ts_ns,
                        value: r.value.into(),
                    },
                );
                self.series = series.into_boxed_slice();
                Recorded::Added
            }
        }
    }
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView::with_max_series(MAX_SERIES)
    }
}

impl LiveView {
    /// A map that keeps at most `max_series` series.
    pub fn with_max_series(max_series: usize) -> Self {
        LiveView {
            inner: Arc::new(RwLock::new(Table::new(max_series))),
            live: broadcast::channel(LIVE_CHANNEL_CAPACITY).0,
        }
    }

    /// Records the readings of `packets`, just committed with seqs from `first_seq` on
    /// (called by the ingest thread right after each commit), and sends them to the live
    /// subscribers, if any. Never waits. Returns how many readings of new series were refused
    /// because the map is full.
    pub fn update_committed(&self, packets: &[Packet], first_seq: Seq) -> u64 {
        let views = packets
            .iter()
            .flat_map(|p| p.readings.iter().map(move |r| (p.received_ns, r)))
            .zip((first_seq.get()..).map(Seq::new))
            .map(|((ts_ns, r), seq)| View {
                seq,
                ts_ns,
                node: &r.node,
                metric: &r.metric,
                unit: r.unit,
                value: &r.value,
            });
        self.record(views)
    }

    /// Records readings read back from the outbox (start-up), newer replacing older, and
    /// sends them to the live subscribers, if any. Returns how many were refused (see
    /// [`LiveView::update_committed`]).
    pub fn update(&self, readings: &[StoredReading]) -> u64 {
        self.record(readings.iter().map(|r| View {
            seq: r.seq,
            ts_ns: r.ts_ns,
            node: &r.node,
            metric: &r.metric,
            unit: r.unit.as_deref(),
            value: &r.value,
        }))
    }

    fn record<'a>(&self, views: impl Iterator<Item = View<'a>>) -> u64 {
        let live = self.live.receiver_count() > 0;
        let mut batch = Vec::new();
        let mut count = 0;
        let mut refused = 0;
        {
            let mut table = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            for r in views {
                count += 1;
                if live && count <= LIVE_MAX_READINGS {
                    batch.push(stored(&r));
                }
                if !table.record(&r) {
                    refused += 1;
                }
            }
            if refused > 0 && !table.warned {
                table.warned = true;
                warn!(
                    max_series = table.max_series,
                    "the dashboard keeps the newest value of this many series at most; new series are no longer added to it (their readings are still stored and delivered): does the firmware invent keys?"
                );
            }
        }
        if !live || count == 0 {
            return refused;
        }
        // Err only when every subscriber left meanwhile; lagging ones lose the oldest.
        let _ = self.live.send(if count > LIVE_MAX_READINGS {
            LiveBatch::TooLarge(count)
        } else {
            LiveBatch::Readings(batch.into())
        });
        refused
    }

    /// Adds known receive times of `node` (history read at start-up).
    pub fn seed_times(&self, node: &str, times: &[i64]) {
        let mut table = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let node = table.nodes.entry(node.into()).or_default();
        for ts in times {
            node.times.record(*ts);
        }
    }

    /// A copy of every series' newest reading, ordered by node and metric.
    pub fn snapshot(&self) -> Vec<StoredReading> {
        let table = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let keys = &table.keys;
        table
            .nodes
            .iter()
            .flat_map(|(node, n)| {
                n.series.iter().map(move |s| {
                    let key = keys.get(s.key);
                    StoredReading {
                        seq: s.seq,
                        ts_ns: s.ts_ns,
                        node: node.clone(),
                        metric: key.metric.clone(),
                        unit: key.unit.clone(),
                        value: s.value.clone(),
                        origin: None,
                    }
                })
            })
            .collect()
    }

    /// Every node with its recent receive times (ascending), ordered by node.
    pub fn node_times(&self) -> Vec<(String, Vec<i64>)> {
        let table = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        table
            .nodes
            .iter()
            .filter(|(_, n)| n.times.last().is_some())
            .map(|(node, n)| (node.to_string(), n.times.as_slice().to_vec()))
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
        node: r.node.into(),
        metric: r.metric.into(),
        unit: r.unit.map(Into::into),
        value: r.value.into(),
        origin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Reading;

    fn reading(seq: i64, ts_ns: i64, node: &str, metric: &str, value: &str) -> StoredReading {
        StoredReading {
            seq: Seq::new(seq),
            ts_ns,
            node: node.into(),
            metric: metric.into(),
            unit: None,
            value: value.into(),
            origin: None,
        }
    }

    #[test]
    fn a_full_map_refuses_new_series_and_keeps_updating_the_ones_it_has() {
        let latest = LiveView::with_max_series(3);
        let refused = latest.update(&[
            reading(1, 10, "node1", "temperature", "20"),
            reading(2, 10, "node1", "humidity", "50"),
            reading(3, 10, "node2", "temperature", "19"),
            // Full: a new metric of a known node, and a new node, are refused.
            reading(4, 10, "node1", "invented_1", "1"),
            reading(5, 10, "node9", "temperature", "1"),
        ]);
        assert_eq!(refused, 2);
        let packet = Packet {
            received_ns: 20,
            origin: None,
            device_ts: None,
            link: None,
            readings: vec![
                Reading {
                    node: "node1".into(),
                    metric: "temperature".into(),
                    unit: None,
                    value: "21".into(),
                },
                Reading {
                    node: "node1".into(),
                    metric: "invented_2".into(),
                    unit: None,
                    value: "2".into(),
                },
            ],
        };
        assert_eq!(latest.update_committed(&[packet], Seq::new(6)), 1);
        let kept: Vec<_> = latest
            .snapshot()
            .into_iter()
            .map(|r| format!("{}.{}={}", r.node, r.metric, r.value))
            .collect();
        assert_eq!(
            kept,
            [
                "node1.humidity=50",
                "node1.temperature=21",
                "node2.temperature=19"
            ]
        );
        assert_eq!(
            latest.node_times().len(),
            2,
            "no node kept for a refused series"
        );
    }

    #[test]
    fn latest_keeps_the_newest_value_and_each_nodes_distinct_packet_times() {
        let latest = LiveView::default();
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
        // The newest N of 100..=139 are kept.
        let n = PACKET_TIMES_PER_NODE as i64;
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(times.first(), Some(&(140 - n)));
        assert_eq!(times.last(), Some(&139));
        // A newer time pushes the oldest out; one older than all kept is ignored.
        latest.seed_times("n", &[200, 1]);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(times, &sorted);
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(times.first(), Some(&(141 - n)));
        assert_eq!(times.last(), Some(&200));
        // One between two kept times lands in order, the oldest going out.
        latest.seed_times("n", &[150]);
        let all = latest.node_times();
        let times = &all.iter().find(|(n, _)| n == "n").unwrap().1;
        assert_eq!(times.len(), PACKET_TIMES_PER_NODE);
        assert_eq!(&times[PACKET_TIMES_PER_NODE - 3..], &[139, 150, 200]);
        assert_eq!(times.first(), Some(&(142 - n)));
    }

    #[test]
    fn committed_packets_update_in_place_with_their_seqs_and_units() {
        let latest = LiveView::default();
        let packet = |ts, t: &str, unit| Packet {
            received_ns: ts,
            origin: None,
            device_ts: None,
            link: None,
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
        latest.update_committed(&[packet(10, "20.5", Some("celsius"))], Seq::new(1));
        latest.update_committed(
            &[packet(20, "21.25", None), packet(30, "22", None)],
            Seq::new(3),
        );
        let snap = latest.snapshot();
        let got: Vec<_> = snap
            .iter()
            .map(|r| {
                (
                    r.seq.get(),
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
        let latest = LiveView::default();
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
        let latest = LiveView::default();
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
