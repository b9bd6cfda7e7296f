//! [`OutboxReader`]: a connection that reads the outbox (sinks, the web server, reports). In
//! WAL mode reads never wait for the writer, and the writer never waits for them.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::cursors::LAST_SEQ;
use super::feed::FeedReader;
use super::rows::{Seq, StoredReading, EVENT_UNIT};
use super::schema::{self, BUSY_TIMEOUT};
use super::{OutboxError, Result, DB_FILE};
use crate::config::{StorageConfig, SyncMode};
use crate::reading::Origin;

/// A read connection, one per sink or server: it cannot change the data (`query_only`).
pub struct OutboxReader {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The writer's newest rows in memory, for a sink ([`OutboxReader::with_feed`]).
    feed: Option<FeedReader>,
}

impl std::fmt::Debug for OutboxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxReader")
            .field("path", &self.path)
            .finish()
    }
}

impl OutboxReader {
    /// A reader of the outbox at `path`, which a writer of this process opened.
    pub(super) fn open(path: &Path, sync: SyncMode) -> Result<OutboxReader> {
        Ok(OutboxReader {
            conn: Mutex::new(schema::connect_reader(path, sync)?),
            path: path.to_path_buf(),
            feed: None,
        })
    }

    /// A reader of the outbox in `storage.dir`, which a writer of this process opened (and
    /// checked).
    pub fn of(storage: &StorageConfig) -> Result<OutboxReader> {
        OutboxReader::open(&storage.dir.join(DB_FILE), storage.sync)
    }

    /// A read-only look at an existing outbox file, changing nothing (for `check`).
    pub fn open_existing(path: &Path) -> Result<OutboxReader> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|s| schema::classify(path, s))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|s| schema::classify(path, s))?;
        Ok(OutboxReader {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            feed: None,
        })
    }

    /// Keeps at most `kib` of this connection's page cache: for readers that look rarely (the
    /// dashboard's history, reports), which would otherwise hold a full cache of pages they
    /// read once (the kernel caches the file either way).
    pub fn with_cache_kib(self, kib: u32) -> Result<OutboxReader> {
        self.conn()
            .execute_batch(&format!("PRAGMA cache_size = -{kib};"))
            .map_err(|e| self.err(e))?;
        Ok(self)
    }

    /// Reads what the writer just committed from memory when it can
    /// ([`OutboxReader::read_after`]); for a sink, which reads every row once, in order.
    pub fn with_feed(mut self, feed: FeedReader) -> OutboxReader {
        self.feed = Some(feed);
        self
    }

    /// The connection (a mutex makes the reader shareable across await points).
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn err(&self, cause: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite {
            path: self.path.clone(),
            cause,
        }
    }

    /// The time of the newest packet in the outbox (not a gateway event), if any: packet times
    /// after a restart continue after it.
    pub fn newest_packet_ts(&self) -> Result<Option<i64>> {
        self.conn()
            .query_row(
                "SELECT ts FROM readings WHERE unit IS NOT ?1 ORDER BY seq DESC LIMIT 1",
                [EVENT_UNIT],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The highest seq ever assigned (0 when none).
    pub fn last_seq(&self) -> Result<Seq> {
        self.conn()
            .query_row(LAST_SEQ, [], |row| row.get(0))
            .map_err(|e| self.err(e))
    }

    /// `node`'s commands, oldest first (the newest `limit`).
    pub fn commands_of(&self, node: &str, limit: usize) -> Result<Vec<super::CommandRow>> {
        super::commands::of_node(&self.conn(), node, limit).map_err(|e| self.err(e))
    }

    /// `node`'s oldest command not in a final state: the one to send next.
    pub fn next_command(&self, node: &str) -> Result<Option<super::CommandRow>> {
        super::commands::next_for(&self.conn(), node).map_err(|e| self.err(e))
    }

    /// What every node last said of itself.
    pub fn node_infos(&self) -> Result<Vec<super::NodeInfoRow>> {
        super::commands::infos(&self.conn()).map_err(|e| self.err(e))
    }

    /// What `node` last said of itself.
    pub fn node_info(&self, node: &str) -> Result<Option<super::NodeInfoRow>> {
        super::commands::info(&self.conn(), node).map_err(|e| self.err(e))
    }

    /// Every command not in a final state, oldest first.
    pub fn pending_commands(&self) -> Result<Vec<super::CommandRow>> {
        super::commands::pending(&self.conn()).map_err(|e| self.err(e))
    }

    /// How many commands are in each state.
    pub fn command_counts(&self) -> Result<Vec<(String, i64)>> {
        super::commands::counts(&self.conn()).map_err(|e| self.err(e))
    }

    /// The highest secure radio frame counter stored per node address, with the check value
    /// of the key it was stored under (`Outbox::append`).
    pub fn link_counters(&self) -> Result<Vec<crate::reading::LinkCounter>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT node, counter, key_check FROM link_counters")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let check: Vec<u8> = r.get(2)?;
                Ok(crate::reading::LinkCounter {
                    node: r.get(0)?,
                    counter: r.get(1)?,
                    key_check: check.try_into().unwrap_or([0; 8]),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The receive time of row `seq`, if it is still there.
    pub fn ts_at(&self, seq: Seq) -> Result<Option<i64>> {
        self.conn()
            .prepare_cached("SELECT ts FROM readings WHERE seq = ?1")
            .and_then(|mut s| s.query_row([seq], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` readings after `seq`, in order: from the feed when it holds them,
    /// otherwise from the database.
    pub fn read_after(&self, seq: Seq, limit: usize) -> Result<Vec<StoredReading>> {
        if let Some(rows) = self.feed.as_ref().and_then(|f| f.read_after(seq, limit)) {
            return Ok(rows);
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(READ_AFTER).map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![seq, limit], row_to_reading)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Readings (not events) after `seq`: a sink's backlog, as reported to users.
    pub fn count_after(&self, seq: Seq) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE seq > ?1 AND unit IS NOT ?2",
                params![seq, EVENT_UNIT],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Gateway events after `seq` (the rows [`OutboxReader::count_after`] leaves out).
    pub fn count_events_after(&self, seq: Seq) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE seq > ?1 AND unit IS ?2",
                params![seq, EVENT_UNIT],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The newest reading of every (node, metric) series.
    pub fn latest(&self) -> Result<Vec<StoredReading>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, ts, node, metric, unit, value, gateway, site FROM readings
                 WHERE seq IN (SELECT MAX(seq) FROM readings GROUP BY node, metric)
                   AND unit IS NOT ?1
                 ORDER BY node, metric",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([EVENT_UNIT], row_to_reading)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}

/// The query behind [`OutboxReader::read_after`].
pub(super) const READ_AFTER: &str =
    "SELECT seq, ts, node, metric, unit, value, gateway, site FROM readings
                          WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/// A row of `readings`; its texts are copied without a heap allocation when short (the sinks
/// read every row, so this is on the hot path).
fn row_to_reading(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReading> {
    Ok(StoredReading {
        seq: row.get(0)?,
        ts_ns: row.get(1)?,
        node: text(row, 2)?.into(),
        metric: text(row, 3)?.into(),
        unit: {
            let unit = row.get_ref(4)?;
            unit.as_str_or_null()
                .map_err(|e| not_text(4, unit, e))?
                .map(Into::into)
        },
        value: text(row, 5)?.into(),
        origin: {
            let (gateway, site) = (optional_text(row, 6)?, optional_text(row, 7)?);
            (gateway.is_some() || site.is_some()).then(|| {
                Box::new(Origin {
                    gateway: gateway.map(Into::into),
                    site: site.map(Into::into),
                })
            })
        },
    })
}

fn optional_text<'r>(
    row: &'r rusqlite::Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<&'r str>> {
    let value = row.get_ref(column)?;
    value
        .as_str_or_null()
        .map_err(|e| not_text(column, value, e))
}

fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize) -> rusqlite::Result<&'r str> {
    let value = row.get_ref(column)?;
    value.as_str().map_err(|e| not_text(column, value, e))
}

/// The error for a value that should be text: it names the column and the type found.
fn not_text(
    column: usize,
    value: rusqlite::types::ValueRef<'_>,
    e: rusqlite::types::FromSqlError,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, value.data_type(), Box::new(e))
}
