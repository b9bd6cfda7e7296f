//! What a sink still has to deliver, read on request by `/readyz` and `/metrics` (never per
//! reading): how many readings lie after its cursor and when the oldest of them was received.
//!
//! Cheap whatever the backlog: two lookups in the `seq` primary key. The readings after any
//! cursor form one contiguous seq range (appends only add at the end; retention deletes only
//! below every cursor; the disk budget deletes only the oldest), so the count is a
//! difference, not a scan.

use rusqlite::OptionalExtension;

use super::{OutboxReader, Result, Seq};

/// A sink's undelivered readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Readings after the cursor.
    pub readings: i64,
    /// Receive time (ns) of the oldest of them; `None` when there are none.
    pub oldest_ns: Option<i64>,
}

impl OutboxReader {
    /// The readings after `cursor`.
    pub fn backlog(&self, cursor: Seq) -> Result<Backlog> {
        let conn = self.conn();
        let first: Option<(Seq, i64)> = conn
            .prepare_cached("SELECT seq, ts FROM readings WHERE seq > ?1 ORDER BY seq LIMIT 1")
            .and_then(|mut s| {
                s.query_row([cursor], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((first_seq, oldest_ns)) = first else {
            return Ok(Backlog::default());
        };
        let last_seq: Seq = conn
            .query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(Backlog {
            readings: last_seq.get() - first_seq.get() + 1,
            oldest_ns: Some(oldest_ns),
        })
    }

    /// Bytes of database pages in use (what `[storage] max_bytes` limits).
    pub fn used_bytes(&self) -> Result<u64> {
        let conn = self.conn();
        let q = |pragma: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        };
        let used = (|| {
            Ok::<_, rusqlite::Error>((q("page_count")? - q("freelist_count")?) * q("page_size")?)
        })()
        .map_err(|e| self.err(e))?;
        Ok(u64::try_from(used).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use crate::outbox::Outbox;
    use crate::reading::{Packet, Reading};

    use super::*;

    fn packet(ts: i64, n: usize) -> Packet {
        Packet {
            received_ns: ts,
            origin: None,
            device_ts: None,
            link: None,
            readings: (0..n)
                .map(|i| Reading {
                    node: "node1".into(),
                    metric: format!("m{i}").into(),
                    unit: None,
                    value: "1".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn backlog_counts_after_the_cursor_and_dates_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&crate::outbox::test_storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        assert_eq!(r.backlog(Seq::new(0)).unwrap(), Backlog::default());
        ob.append(&[packet(100, 3), packet(200, 2)]).unwrap();
        assert_eq!(
            r.backlog(Seq::new(0)).unwrap(),
            Backlog {
                readings: 5,
                oldest_ns: Some(100)
            }
        );
        assert_eq!(
            r.backlog(Seq::new(3)).unwrap(),
            Backlog {
                readings: 2,
                oldest_ns: Some(200)
            }
        );
        assert_eq!(r.backlog(Seq::new(5)).unwrap(), Backlog::default());
        // Pruned below the cursor: the count is still right.
        ob.track_sinks(&["s"]).unwrap();
        ob.set_cursor("s", Seq::new(3)).unwrap();
        ob.prune(i64::MAX).unwrap();
        assert_eq!(r.backlog(Seq::new(1)).unwrap().readings, 2);
        assert!(r.used_bytes().unwrap() > 0);
    }
}
