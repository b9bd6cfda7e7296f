//! History queries behind the dashboard: downsampled series, counter samples and each node's
//! recent packet times, read from the `readings` table through a reader's own connection.
//!
//! Every query names one `(node, metric)` series and a time range, so it is one range scan
//! of the `readings_series (node, metric, ts)` index. That index is kept only while the
//! dashboard is on ([`Outbox::keep_history_index`]): every commit writes a page of it per
//! series (10 of a packet's 14 WAL pages, 40 KiB, measured), which a gateway without the
//! dashboard would pay for nothing. Downsampling happens in SQL
//! (`GROUP BY ts / bucket`), so a 7-day view returns at most a few hundred rows per series
//! whatever the packet rate. Read-only: nothing here writes or moves a cursor.

use rusqlite::params;

use super::{Outbox, OutboxReader, Result};

/// The index behind every query here.
const INDEX: &str = "CREATE INDEX IF NOT EXISTS readings_series ON readings (node, metric, ts)";

impl Outbox {
    /// Builds the history index when `keep` (the dashboard is on), drops it otherwise; the
    /// first start with the dashboard on an outbox kept without it builds it once.
    pub fn keep_history_index(&mut self, keep: bool) -> Result<()> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master
                 WHERE type = 'index' AND name = 'readings_series')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let change = match (keep, exists) {
            (true, false) => {
                tracing::info!("building the dashboard's history index of the outbox");
                INDEX
            }
            (false, true) => "DROP INDEX readings_series",
            _ => return Ok(()),
        };
        self.conn.execute_batch(change).map_err(|e| self.err(e))
    }
}

/// One time bucket of one series: the aggregate of the readings received in
/// `[start_ns, start_ns + bucket_ns)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Bucket start, ns since the Unix epoch (a multiple of the bucket width).
    pub start_ns: i64,
    /// Mean value.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Readings in the bucket.
    pub count: u32,
}

impl OutboxReader {
    /// The readings of `node`/`metric` received in `[from_ns, to_ns)`, grouped into buckets of
    /// `bucket_ns` aligned to the epoch, in time order. Empty buckets are left out.
    pub fn series_buckets(
        &self,
        node: &str,
        metric: &str,
        from_ns: i64,
        to_ns: i64,
        bucket_ns: i64,
    ) -> Result<Vec<Bucket>> {
        let bucket_ns = bucket_ns.max(1);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT (ts / ?5) * ?5 AS b, AVG(CAST(value AS REAL)), MIN(CAST(value AS REAL)),
                        MAX(CAST(value AS REAL)), COUNT(*)
                 FROM readings
                 WHERE node = ?1 AND metric = ?2 AND ts >= ?3 AND ts < ?4
                 GROUP BY b ORDER BY b",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![node, metric, from_ns, to_ns, bucket_ns], |r| {
                Ok(Bucket {
                    start_ns: r.get(0)?,
                    avg: r.get(1)?,
                    min: r.get(2)?,
                    max: r.get(3)?,
                    count: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// `(rx, err)` counter pairs of one node in time order: the `rx_metric` and `err_metric`
    /// readings of the same packet (same timestamp) received in `[from_ns, to_ns)`. Packets
    /// that lack either counter, or carry a value that is not a number, are left out.
    pub fn counter_pairs(
        &self,
        node: &str,
        rx_metric: &str,
        err_metric: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<(f64, f64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT a.value, b.value
                 FROM readings a
                 JOIN readings b ON b.node = a.node AND b.metric = ?3 AND b.ts = a.ts
                 WHERE a.node = ?1 AND a.metric = ?2 AND a.ts >= ?4 AND a.ts < ?5
                 ORDER BY a.ts, a.seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![node, rx_metric, err_metric, from_ns, to_ns], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut pairs = Vec::new();
        for row in rows {
            let (rx, err) = row.map_err(|e| self.err(e))?;
            if let (Ok(rx), Ok(err)) = (rx.parse::<f64>(), err.parse::<f64>()) {
                pairs.push((rx, err));
            }
        }
        Ok(pairs)
    }

    /// The receive times of the newest `limit` readings of `node`/`metric`, oldest first.
    pub fn recent_times(&self, node: &str, metric: &str, limit: usize) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT ts FROM readings WHERE node = ?1 AND metric = ?2
                 ORDER BY ts DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![node, metric, limit], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?;
        let mut times = rows
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        times.reverse();
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::outbox::Outbox;
    use crate::reading::{Packet, Reading};

    fn open(dir: &Path) -> Outbox {
        let mut outbox = Outbox::open(&crate::outbox::test_storage(dir)).unwrap();
        outbox.keep_history_index(true).unwrap();
        outbox
    }

    fn packet(ts: i64, readings: &[(&str, &str, &str)]) -> Packet {
        Packet {
            received_ns: ts,
            origin: None,
            device_ts: None,
            link: None,
            readings: readings
                .iter()
                .map(|(node, metric, value)| Reading {
                    node: (*node).into(),
                    metric: (*metric).into(),
                    unit: None,
                    value: (*value).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn buckets_aggregate_one_series_in_sql_aligned_to_the_bucket_width() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(dir.path());
        let packets: Vec<Packet> = [(100, "1"), (150, "3"), (210, "10"), (390, "-2.5")]
            .iter()
            .map(|(ts, v)| {
                packet(
                    *ts,
                    &[("node1", "temperature", v), ("node2", "temperature", "99")],
                )
            })
            .collect();
        ob.append(&packets).unwrap();
        let r = ob.reader().unwrap();
        let b = r
            .series_buckets("node1", "temperature", 0, 1000, 100)
            .unwrap();
        let got: Vec<_> = b
            .iter()
            .map(|b| (b.start_ns, b.avg, b.min, b.max, b.count))
            .collect();
        assert_eq!(
            got,
            [
                (100, 2.0, 1.0, 3.0, 2),
                (200, 10.0, 10.0, 10.0, 1),
                (300, -2.5, -2.5, -2.5, 1)
            ]
        );
        // The range is half-open and other series never leak in.
        let b = r
            .series_buckets("node1", "temperature", 150, 390, 1000)
            .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].start_ns, b[0].count, b[0].avg), (0, 2, 6.5));
        assert!(r
            .series_buckets("node3", "temperature", 0, 1000, 100)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_history_index_is_kept_only_with_the_dashboard_and_answers_stay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&crate::outbox::test_storage(dir.path())).unwrap();
        let packets: Vec<Packet> = (0..50)
            .map(|i| {
                packet(
                    i * 10,
                    &[("node1", "t", &i.to_string()), ("node2", "t", "1")],
                )
            })
            .collect();
        ob.append(&packets).unwrap();
        let plan = |ob: &Outbox| -> String {
            let r = ob.reader().unwrap();
            let conn = r.conn();
            let mut stmt = conn
                .prepare(
                    "EXPLAIN QUERY PLAN SELECT ts FROM readings
                     WHERE node = 'node1' AND metric = 't' AND ts >= 0 AND ts < 100",
                )
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let buckets = |ob: &Outbox| {
            ob.reader()
                .unwrap()
                .series_buckets("node1", "t", 0, 500, 100)
        };
        assert!(!plan(&ob).contains("readings_series"), "{}", plan(&ob));
        let without = buckets(&ob).unwrap();
        ob.keep_history_index(true).unwrap();
        assert!(plan(&ob).contains("INDEX readings_series"), "{}", plan(&ob));
        assert_eq!(buckets(&ob).unwrap(), without);
        assert_eq!(without.len(), 5);
        // Again: nothing to do. Then off: gone.
        ob.keep_history_index(true).unwrap();
        ob.keep_history_index(false).unwrap();
        assert!(!plan(&ob).contains("readings_series"), "{}", plan(&ob));
        assert_eq!(buckets(&ob).unwrap(), without);
    }

    #[test]
    fn counter_pairs_join_the_two_counters_of_each_packet_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(dir.path());
        ob.append(&[
            packet(
                10,
                &[
                    ("stats", "packets_received", "10"),
                    ("stats", "crc_errors", "1"),
                ],
            ),
            packet(20, &[("stats", "packets_received", "15")]),
            packet(
                30,
                &[
                    ("stats", "crc_errors", "3"),
                    ("stats", "packets_received", "2"),
                ],
            ),
            packet(
                40,
                &[
                    ("other", "packets_received", "7"),
                    ("other", "crc_errors", "7"),
                ],
            ),
        ])
        .unwrap();
        let r = ob.reader().unwrap();
        let pairs = r
            .counter_pairs("stats", "packets_received", "crc_errors", 0, 100)
            .unwrap();
        assert_eq!(pairs, [(10.0, 1.0), (2.0, 3.0)]);
        let pairs = r
            .counter_pairs("stats", "packets_received", "crc_errors", 11, 100)
            .unwrap();
        assert_eq!(pairs, [(2.0, 3.0)]);
    }

    #[test]
    fn recent_times_are_the_newest_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(dir.path());
        let packets: Vec<Packet> = (1..=5)
            .map(|i| packet(i * 10, &[("node1", "temperature", "1")]))
            .collect();
        ob.append(&packets).unwrap();
        let r = ob.reader().unwrap();
        assert_eq!(
            r.recent_times("node1", "temperature", 3).unwrap(),
            [30, 40, 50]
        );
        assert!(r.recent_times("node1", "humidity", 3).unwrap().is_empty());
    }
}
