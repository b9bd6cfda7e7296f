//! Sink cursors: `cursors(sink, seq)`, the highest seq each sink has delivered. Everything
//! after it is sent again after a restart (at least once). Only the writer moves them; anyone
//! may read them.

use rusqlite::{params, OptionalExtension};

use super::rows::Seq;
use super::{Outbox, OutboxReader, Result};

/// The highest seq ever assigned (0 when none): `sqlite_sequence` remembers it even after
/// every row was pruned.
pub(super) const LAST_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'readings'), 0)";

const CURSOR: &str = "SELECT seq FROM cursors WHERE sink = ?1";

impl Outbox {
    /// Makes `sinks` the configured sinks (retention and the disk budget keep what any of them
    /// has not delivered). A sink seen for the first time starts at the current end: it
    /// delivers what arrives from now on, not the whole history.
    pub fn track_sinks(&mut self, sinks: &[&'static str]) -> Result<()> {
        let end: Seq = self
            .conn
            .query_row(LAST_SEQ, [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        for sink in sinks {
            self.conn
                .execute(
                    "INSERT INTO cursors (sink, seq) VALUES (?1, ?2) ON CONFLICT (sink) DO NOTHING",
                    params![sink, end],
                )
                .map_err(|e| self.err(e))?;
        }
        self.sinks = sinks.to_vec();
        Ok(())
    }

    /// Moves `sink`'s cursor: everything up to `seq` is delivered.
    pub fn set_cursor(&mut self, sink: &str, seq: Seq) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO cursors (sink, seq) VALUES (?1, ?2)
                 ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq",
            )
            .and_then(|mut s| s.execute(params![sink, seq]))
            .map_err(|e| self.err(e))?;
        self.after_commit();
        Ok(())
    }

    /// The highest seq every tracked sink has delivered (all of them without sinks).
    pub(super) fn delivered(&self) -> Result<Seq> {
        let mut delivered = Seq::new(i64::MAX);
        for sink in &self.sinks {
            let cursor: Option<Seq> = self
                .conn
                .query_row(CURSOR, [sink], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            delivered = delivered.min(cursor.unwrap_or(Seq::START));
        }
        Ok(delivered)
    }
}

impl OutboxReader {
    /// `sink`'s cursor, if it has one.
    pub fn cursor(&self, sink: &str) -> Result<Option<Seq>> {
        self.conn()
            .query_row(CURSOR, [sink], |row| row.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }
}
