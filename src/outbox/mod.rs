//! The outbox: every reading is committed here before any sink sees it (invariant 1), and
//! each sink's cursor moves only after its far end confirmed (invariant 2). The same SQLite
//! database is the embedded time-series history behind the dashboard and `/api`.
//!
//! Design:
//! - One file, `outbox.db` in the storage dir, SQLite in WAL mode. `synchronous = NORMAL`
//!   by default: a crash or SIGKILL of the gateway loses nothing committed; a power loss may
//!   lose the last transactions. `[storage] sync = "full"` closes that window too.
//! - `readings(seq INTEGER PRIMARY KEY AUTOINCREMENT, ts, node, metric, unit, value)`: `seq`
//!   orders everything and is never reused, even after every row was pruned, so a cursor can
//!   never skip a new reading. `ts` is the packet's receive time in ns.
//! - `cursors(sink, seq)`: the highest seq the sink has delivered; everything after it is
//!   resent after a restart (at-least-once). A sink seen for the first time starts at the
//!   current end (it delivers what arrives from then on, not the whole history).
//! - Appends come from one writer (the ingest thread), one transaction per batch of packets.
//!   Sinks and the web server read through their own connections ([`OutboxReader`]). No
//!   connection checkpoints the WAL by itself: a background thread does, so that a commit
//!   never pays for syncing the database file (`checkpoint.rs`).
//! - Retention deletes readings older than `[storage] retention` only when every configured
//!   sink has delivered them: undelivered data is never pruned by age.
//! - Disk budget (`[storage] max_bytes`): after each append the pages in use are compared with
//!   the budget. Over it, the oldest delivered history goes first; if that is not enough, the
//!   `drop_oldest` policy deletes the oldest undelivered readings (reported to the caller, who
//!   counts and logs them) and `block` leaves them, telling the caller to stop accepting.
//!   Freed pages are reused by SQLite, so the file stops growing at about the budget.
//! - A corrupt file is never deleted: opening fails with [`OutboxError::Corrupt`], or, when the
//!   user asked for it, the file is renamed aside and a new outbox starts.

mod backlog;
mod checkpoint;
mod lock;

pub use lock::LOCK_FILE;
pub(crate) mod history;

pub use backlog::Backlog;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use checkpoint::Checkpointer;

use crate::config::{StorageConfig, SyncMode};
use crate::reading::{Packet, StoredReading};

/// File name of the outbox database inside the storage dir.
pub const DB_FILE: &str = "outbox.db";

/// What can go wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Another gateway uses the storage dir.
    #[error("storage dir {dir} is in use by another iiot-gateway{}: stop it, or give this one its own [storage] dir (--storage-dir)", pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Locked {
        /// The dir.
        dir: PathBuf,
        /// The holder's PID, when its lock file says.
        pid: Option<u32>,
    },
    /// The storage dir cannot be created or written.
    #[error("cannot use storage dir {dir}: {cause} (check its permissions, or set [storage] dir)")]
    Dir {
        /// The dir.
        dir: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The storage dir or database file is not writable.
    #[error("cannot write the outbox {path}: {cause} (check that the user running the gateway can write there, or set [storage] dir)")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
    /// The database file is not a usable SQLite database.
    #[error("{path} is not a valid outbox database ({cause}); it was left untouched: restore it from a backup, or start with --move-corrupt-outbox to rename it aside and begin an empty outbox")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
    /// Any other SQLite failure.
    #[error("outbox database {path}: {cause}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
}

type Result<T> = std::result::Result<T, OutboxError>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     INTEGER NOT NULL,
    node   TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit   TEXT,
    value  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_series ON readings (node, metric, ts);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
";

/// The writer side of the outbox.
pub struct Outbox {
    /// Declared first: stops before the writer's connection closes.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    path: PathBuf,
    sync: SyncMode,
    /// The storage dir is ours while the writer lives (`None` for [`Outbox::reopen`]'s extra
    /// connections).
    _lock: Option<lock::DirLock>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `cfg.dir`, which becomes this process's: a
    /// second writer, in this process or another, gets [`OutboxError::Locked`].
    pub fn open(cfg: &StorageConfig) -> Result<Outbox> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| OutboxError::Dir {
            dir: cfg.dir.clone(),
            cause: source,
        })?;
        let lock = lock::DirLock::acquire(&cfg.dir).map_err(|e| match e {
            lock::LockError::Held(pid) => OutboxError::Locked {
                dir: cfg.dir.clone(),
                pid,
            },
            lock::LockError::Io(cause) => OutboxError::Dir {
                dir: cfg.dir.clone(),
                cause,
            },
        })?;
        let path = cfg.dir.join(DB_FILE);
        let opened = match Self::open_file(&path, cfg.sync) {
            Err(OutboxError::Corrupt { .. }) if cfg.move_corrupt_aside => {
                let aside = move_aside(&path).map_err(|cause| OutboxError::Dir {
                    dir: cfg.dir.clone(),
                    cause,
                })?;
                tracing::warn!(moved_to = %aside.display(), "corrupt outbox moved aside; starting an empty one");
                Self::open_file(&path, cfg.sync)
            }
            other => other,
        };
        let mut outbox = opened?;
        outbox._lock = Some(lock);
        Ok(outbox)
    }

    /// Who holds `dir` (a running gateway's PID), if anyone: for `check`.
    pub fn holder(dir: &Path) -> Option<u32> {
        lock::holder(dir)
    }

    /// Another connection to an outbox this process already opened with [`Outbox::open`]
    /// (which checked the file): no second integrity scan of the whole database.
    pub fn reopen(cfg: &StorageConfig) -> Result<Outbox> {
        let path = cfg.dir.join(DB_FILE);
        Ok(Outbox {
            checkpointer: None,
            conn: connect(&path, cfg.sync)?,
            path,
            sync: cfg.sync,
            _lock: None,
        })
    }

    fn open_file(path: &Path, sync: SyncMode) -> Result<Outbox> {
        if path.is_file() {
            check_intact(path)?;
        }
        let conn = connect(path, sync)?;
        conn.execute_batch(SCHEMA)
            .map_err(|source| classify(path, source))?;
        let checkpointer = match Checkpointer::start(connect(path, sync)?) {
            Ok(checkpointer) => Some(checkpointer),
            Err(error) => {
                tracing::warn!(%error, "cannot start the outbox checkpoint thread; commits checkpoint themselves");
                conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;")
                    .map_err(|source| classify(path, source))?;
                None
            }
        };
        Ok(Outbox {
            checkpointer,
            conn,
            path: path.to_path_buf(),
            sync,
            _lock: None,
        })
    }

    /// Bytes of database pages in use (free pages are reused before the file grows).
    pub fn used_bytes(&self) -> Result<u64> {
        let q = |pragma: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        };
        let used = (|| {
            Ok::<_, rusqlite::Error>((q("page_count")? - q("freelist_count")?) * q("page_size")?)
        })()
        .map_err(|cause| OutboxError::Sqlite {
            path: self.path.clone(),
            cause,
        })?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Brings the outbox under `max_bytes`: oldest delivered history first, then, when
    /// `drop_undelivered`, the oldest undelivered readings. `sinks` are the configured sinks.
    pub fn enforce_budget(
        &mut self,
        max_bytes: u64,
        sinks: &[&str],
        drop_undelivered: bool,
    ) -> Result<BudgetReport> {
        let mut report = BudgetReport::default();
        let used = self.used_bytes()?;
        if used <= max_bytes {
            return Ok(report);
        }
        let path = self.path.clone();
        let err = |cause| OutboxError::Sqlite {
            path: path.clone(),
            cause,
        };
        let (min_seq, max_seq): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT MIN(seq), MAX(seq) FROM readings", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err)?;
        let (Some(min_seq), Some(max_seq)) = (min_seq, max_seq) else {
            report.over = true;
            return Ok(report);
        };
        // Rows form one contiguous seq range (only the oldest are ever deleted).
        let rows = (max_seq - min_seq + 1).max(1) as u64;
        let per_row = (used / rows).max(1);
        let target = max_bytes / 10 * 9;
        let excess = (used - target).div_ceil(per_row) as i64;
        let cut = min_seq + excess - 1; // delete seq <= cut
        let mut delivered = max_seq;
        for sink in sinks {
            let cursor: Option<i64> = self
                .conn
                .query_row("SELECT seq FROM cursors WHERE sink = ?1", [sink], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(err)?;
            delivered = delivered.min(cursor.unwrap_or(0));
        }
        let history_cut = cut.min(delivered);
        if history_cut >= min_seq {
            report.history_pruned = self
                .conn
                .execute("DELETE FROM readings WHERE seq <= ?1", [history_cut])
                .map_err(err)? as u64;
        }
        if cut > delivered {
            if drop_undelivered {
                // Counted: the readings (not gateway events) that no sink will ever deliver.
                let readings: i64 = self
                    .conn
                    .query_row(
                        "SELECT COUNT(*) FROM readings WHERE seq <= ?1 AND unit IS NOT 'event'",
                        [cut],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                self.conn
                    .execute("DELETE FROM readings WHERE seq <= ?1", [cut])
                    .map_err(err)?;
                report.undelivered_dropped = readings as u64;
            } else {
                report.over = true;
            }
        }
        Ok(report)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits every reading of `packets` in one transaction; returns the last seq.
    pub fn append(&mut self, packets: &[Packet]) -> Result<i64> {
        self.insert_rows(packets.iter().flat_map(|p| {
            p.readings.iter().map(move |r| {
                (
                    p.received_ns,
                    r.node.as_str(),
                    r.metric.as_str(),
                    r.unit,
                    r.value.as_str(),
                )
            })
        }))
    }

    /// Commits gateway events `(ts_ns, node, kind, text)` in one transaction (see
    /// [`crate::reading::EVENT_UNIT`]); returns the last seq.
    pub fn append_events(&mut self, events: &[(i64, &str, &str, &str)]) -> Result<i64> {
        self.insert_rows(events.iter().map(|&(ts, node, kind, text)| {
            (ts, node, kind, Some(crate::reading::EVENT_UNIT), text)
        }))
    }

    /// Inserts `(ts, node, metric, unit, value)` rows in one transaction; the seqs they get
    /// are consecutive. Returns the last seq.
    fn insert_rows<'a>(
        &mut self,
        rows: impl Iterator<Item = (i64, &'a str, &'a str, Option<&'a str>, &'a str)>,
    ) -> Result<i64> {
        let path = &self.path;
        let err = |source| OutboxError::Sqlite {
            path: path.clone(),
            cause: source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO readings (ts, node, metric, unit, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for (ts, node, metric, unit, value) in rows {
                insert
                    .execute(params![ts, node, metric, unit, value])
                    .map_err(err)?;
            }
        }
        let last = tx.last_insert_rowid();
        tx.commit().map_err(err)?;
        if self
            .checkpointer
            .as_ref()
            .is_some_and(Checkpointer::wal_too_long)
        {
            match checkpoint::truncate(&self.conn, BUSY_TIMEOUT) {
                Ok(true) => {}
                Ok(false) => tracing::debug!("outbox WAL in use by a reader; truncating later"),
                Err(error) => {
                    tracing::debug!(%error, "outbox WAL truncation failed; retrying later");
                }
            }
        }
        Ok(last)
    }

    /// A new read connection to the same database.
    pub fn reader(&self) -> Result<OutboxReader> {
        Ok(OutboxReader {
            conn: Mutex::new(connect(&self.path, self.sync)?),
            path: self.path.clone(),
        })
    }
}

/// What [`Outbox::enforce_budget`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetReport {
    /// Delivered readings deleted from the history.
    pub history_pruned: u64,
    /// Undelivered readings dropped (`drop_oldest`).
    pub undelivered_dropped: u64,
    /// Still over budget with undelivered readings kept (`block`): accept nothing more.
    pub over: bool,
}

/// Renames `path` (and its -wal/-shm files) to `<name>.corrupt-<unix time>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let mut side_aside = aside.as_os_str().to_owned();
        side_aside.push(suffix);
        let _ = std::fs::rename(PathBuf::from(side), PathBuf::from(side_aside));
    }
    Ok(aside)
}

/// A quick structural check of an existing file, through a read-only connection and before
/// anything writes to it (switching a file to WAL mode rewrites its header, closing a
/// connection checkpoints the WAL into it): a file with a valid header but damaged pages is
/// found now, not in the middle of a delivery, and is left exactly as it was.
fn check_intact(path: &Path) -> Result<()> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|s| classify(path, s))?;
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|source| classify(path, source))?;
    if check != "ok" {
        return Err(OutboxError::Corrupt {
            path: path.to_path_buf(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            ),
        });
    }
    Ok(())
}

/// A read (and cursor-write) connection, one per sink or server.
pub struct OutboxReader {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for OutboxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxReader")
            .field("path", &self.path)
            .finish()
    }
}

impl OutboxReader {
    /// A read-only look at an existing outbox file, changing nothing (for `check`).
    pub fn open_existing(path: &Path) -> Result<OutboxReader> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|s| classify(path, s))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|s| classify(path, s))?;
        Ok(OutboxReader {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The connection (a mutex makes the reader shareable across await points).
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, cause: rusqlite::Error) -> OutboxError {
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
                "SELECT ts FROM readings WHERE unit IS NOT 'event' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The highest seq ever assigned (0 when none).
    pub fn last_seq(&self) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'readings'), 0)",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The sink's cursor; a sink seen for the first time starts at the current end.
    pub fn init_cursor(&self, sink: &str) -> Result<i64> {
        if let Some(seq) = self.cursor(sink)? {
            return Ok(seq);
        }
        let end = self.last_seq()?;
        self.set_cursor(sink, end)?;
        Ok(end)
    }

    /// The sink's cursor, if it has one.
    pub fn cursor(&self, sink: &str) -> Result<Option<i64>> {
        self.conn()
            .query_row("SELECT seq FROM cursors WHERE sink = ?1", [sink], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Moves the sink's cursor: everything up to `seq` is delivered.
    pub fn set_cursor(&self, sink: &str, seq: i64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO cursors (sink, seq) VALUES (?1, ?2)
                 ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq",
            )
            .and_then(|mut s| s.execute(params![sink, seq]))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` readings after `seq`, in order.
    pub fn read_after(&self, seq: i64, limit: usize) -> Result<Vec<StoredReading>> {
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
    pub fn count_after(&self, seq: i64) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE seq > ?1 AND unit IS NOT 'event'",
                [seq],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Gateway events after `seq` (the rows [`OutboxReader::count_after`] leaves out).
    pub fn count_events_after(&self, seq: i64) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE seq > ?1 AND unit IS 'event'",
                [seq],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The newest reading of every (node, metric) series.
    pub fn latest(&self) -> Result<Vec<StoredReading>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, ts, node, metric, unit, value FROM readings
                 WHERE seq IN (SELECT MAX(seq) FROM readings GROUP BY node, metric)
                   AND unit IS NOT 'event'
                 ORDER BY node, metric",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], row_to_reading)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Deletes readings received before `before_ns` that every sink in `sinks` delivered.
    pub fn prune(&self, before_ns: i64, sinks: &[&str]) -> Result<usize> {
        let mut delivered = i64::MAX;
        for sink in sinks {
            delivered = delivered.min(self.cursor(sink)?.unwrap_or(0));
        }
        self.conn()
            .execute(
                "DELETE FROM readings WHERE seq <= ?1 AND ts < ?2",
                params![delivered, before_ns],
            )
            .map_err(|e| self.err(e))
    }
}

/// The query behind [`OutboxReader::read_after`].
const READ_AFTER: &str = "SELECT seq, ts, node, metric, unit, value FROM readings
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
    })
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

/// Runs `write`, a call that may wait for the outbox's write lock (up to the 10 s busy
/// timeout, e.g. while the ingest thread deletes readings at the disk budget), without holding
/// up the other tasks of the async runtime worker it is called from: on a multi-threaded
/// runtime the worker hands its tasks over first (`block_in_place`). Anywhere else it just
/// runs `write`. Reads need none of this: in WAL mode they never wait for the writer.
pub(crate) fn may_wait<T>(write: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

/// How long a connection waits for a lock before its call fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Page cache per connection, KiB (SQLite's default is 2000). Every connection works near the
/// end of the table (appends, sinks reading what was just committed), and there are five or
/// six of them: a small cache each keeps the gateway small (measured, see BENCHMARKS.md).
const CACHE_KIB: u32 = 512;

/// A connection in WAL mode with the configured sync and a [`CACHE_KIB`] page cache, that
/// never checkpoints by itself (the [`Checkpointer`] does, off the write path).
fn connect(path: &Path, sync: SyncMode) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|s| classify(path, s))?;
    let sync = match sync {
        SyncMode::Normal => "NORMAL",
        SyncMode::Full => "FULL",
    };
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|s| classify(path, s))?;
    // SQLite plans with the value bound to a `LIMIT ?` and so marks the statement to be
    // prepared again whenever that value is rebound: the sinks' `read_after` was parsed and
    // planned on every call (a fifth of the gateway's CPU at 1,000 packets/s, perf). With the
    // query planner stability guarantee bound values never change a plan (none here would:
    // every query with parameters scans a rowid range or `readings_series`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|s| classify(path, s))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -{CACHE_KIB};"
    ))
    .map_err(|s| classify(path, s))?;
    Ok(conn)
}

/// Tells a corrupt or foreign file apart from other SQLite errors.
fn classify(path: &Path, cause: rusqlite::Error) -> OutboxError {
    use rusqlite::ffi::ErrorCode;
    match cause.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OutboxError::Corrupt {
            path: path.to_path_buf(),
            cause,
        },
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            OutboxError::Unwritable {
                path: path.to_path_buf(),
                cause,
            }
        }
        _ => OutboxError::Sqlite {
            path: path.to_path_buf(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Reading;

    fn storage(dir: &Path) -> StorageConfig {
        StorageConfig {
            dir: dir.to_path_buf(),
            retention: std::time::Duration::from_secs(3600),
            sync: SyncMode::Normal,
            max_bytes: 1 << 30,
            on_full: crate::config::FullPolicy::DropOldest,
            move_corrupt_aside: false,
        }
    }

    fn packet(ts: i64, values: &[&str]) -> Packet {
        Packet {
            received_ns: ts,
            device_ts: None,
            readings: values
                .iter()
                .map(|v| Reading {
                    node: "node1".into(),
                    metric: "temperature".into(),
                    unit: Some("celsius"),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn commits_leave_checkpoints_to_the_background_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let size = || std::fs::metadata(&db).unwrap().len();
        let mut with = Outbox::open(&storage(dir.path())).unwrap();
        let before = size();
        for i in 0..400 {
            with.append(&[packet(i, &["1.0"; 50])]).unwrap();
        }
        // 20,000 rows are in the WAL, and the database file gets them only from a checkpoint:
        // the thread does it within a second or two.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(size() > before, "no checkpoint within 10 s");
        drop(with);

        // Commits back to back: a passive checkpoint alone never catches up, and without a
        // truncating checkpoint the WAL file only ever grows (a restarted WAL reuses the file
        // from its start but keeps its size). So it must shrink at some point. A watcher
        // samples its size; the writer goes on until it saw a shrink, or gives up after 30 s
        // (a loaded machine may starve the checkpoint thread for a while, never for that long).
        let busy = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(busy.path())).unwrap();
        let wal = busy.path().join(format!("{DB_FILE}-wal"));
        let shrank = std::sync::atomic::AtomicBool::new(false);
        let writing = std::sync::atomic::AtomicBool::new(true);
        let mut commits = 0u64;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = 0;
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    if now < last {
                        shrank.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    last = now;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            let start = std::time::Instant::now();
            while !shrank.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < std::time::Duration::from_secs(30)
            {
                ob.append(&[packet(commits as i64, &["1.0"; 9])]).unwrap();
                commits += 1;
            }
            writing.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(
            shrank.into_inner(),
            "WAL never truncated in 30 s of back-to-back commits ({commits} commits)"
        );

        // A reader holding an old snapshot (a long history query) keeps the WAL from being
        // truncated, and the writer must not wait for it.
        let reader = ob.reader().unwrap();
        let held = std::sync::Barrier::new(2);
        let slow_commits = std::thread::scope(|scope| {
            scope.spawn(|| {
                let conn = reader.conn();
                conn.execute_batch("BEGIN; SELECT count(*) FROM readings;")
                    .unwrap();
                held.wait();
                std::thread::sleep(std::time::Duration::from_secs(3));
                conn.execute_batch("COMMIT").unwrap();
            });
            held.wait();
            let start = std::time::Instant::now();
            let mut slow = 0;
            while start.elapsed() < std::time::Duration::from_secs(2) {
                let t0 = std::time::Instant::now();
                ob.append(&[packet(commits as i64, &["1.0"; 9])]).unwrap();
                commits += 1;
                // A commit that waited would wait until the reader ends: over a second.
                if t0.elapsed() > std::time::Duration::from_millis(1000) {
                    slow += 1;
                }
            }
            slow
        });
        assert_eq!(slow_commits, 0, "a commit waited for the reader");

        // Without the thread, no commit checkpoints: the database file stays as it was.
        let other = tempfile::tempdir().unwrap();
        let mut without = Outbox::reopen(&storage(other.path())).unwrap();
        without.conn.execute_batch(SCHEMA).unwrap();
        let db = other.path().join(DB_FILE);
        let before = std::fs::metadata(&db).unwrap().len();
        for i in 0..400 {
            without.append(&[packet(i, &["1.0"; 50])]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(std::fs::metadata(&db).unwrap().len(), before);
    }

    #[test]
    fn a_sinks_read_is_planned_once_whatever_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let reader = ob.reader().unwrap();
        for i in 0..20 {
            ob.append(&[packet(i, &["1.0"; 9])]).unwrap();
            let rows = reader.read_after(i * 3, 1 + i as usize).unwrap();
            assert_eq!(rows.len(), 1 + i as usize);
        }
        let reprepared = reader
            .conn()
            .prepare_cached(READ_AFTER)
            .unwrap()
            .get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(reprepared, 0, "read_after was parsed again on new bounds");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_waiting_write_leaves_the_runtime_worker_to_other_tasks() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&storage(dir.path())).unwrap();
        let reader = ob.reader().unwrap();
        // Another connection holds the write lock for 500 ms, as a long delete would.
        let holder = ob.reader().unwrap();
        holder.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            holder.conn().execute_batch("COMMIT").unwrap();
        });
        let ticks = std::sync::Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let writer = tokio::spawn(async move {
            let waited = std::time::Instant::now();
            may_wait(|| reader.set_cursor("mqtt", 7)).unwrap();
            (waited.elapsed(), reader.cursor("mqtt").unwrap())
        });
        let before = ticks.load(Ordering::Relaxed);
        let (waited, cursor) = writer.await.unwrap();
        let during = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        release.join().unwrap();
        assert_eq!(cursor, Some(7));
        assert!(
            waited >= std::time::Duration::from_millis(300),
            "{waited:?}"
        );
        // The one worker kept running the ticker while the write waited (~50 ticks).
        assert!(during >= 10, "only {during} ticks in {waited:?}");
    }

    #[test]
    fn appended_readings_come_back_in_order_with_their_packet_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let last = ob
            .append(&[packet(10, &["1.0", "2.0"]), packet(20, &["3.0"])])
            .unwrap();
        assert_eq!(last, 3);
        let r = ob.reader().unwrap();
        let all = r.read_after(0, 10).unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|x| (x.seq, x.ts_ns, x.value.as_str()))
            .collect();
        assert_eq!(got, [(1, 10, "1.0"), (2, 10, "2.0"), (3, 20, "3.0")]);
        assert_eq!(r.read_after(2, 10).unwrap().len(), 1);
        assert_eq!(r.read_after(0, 2).unwrap().len(), 2);
        assert_eq!(all[0].unit.as_deref(), Some("celsius"));
    }

    #[test]
    fn cursors_survive_reopening_and_new_sinks_start_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ob = Outbox::open(&storage(dir.path())).unwrap();
            let r = ob.reader().unwrap();
            assert_eq!(r.init_cursor("mqtt").unwrap(), 0);
            ob.append(&[packet(1, &["1", "2", "3"])]).unwrap();
            r.set_cursor("mqtt", 2).unwrap();
        }
        let ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        assert_eq!(r.init_cursor("mqtt").unwrap(), 2);
        assert_eq!(r.count_after(2).unwrap(), 1);
        assert_eq!(r.init_cursor("influx").unwrap(), 3);
    }

    #[test]
    fn seqs_are_never_reused_after_pruning_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        r.init_cursor("a").unwrap();
        ob.append(&[packet(1, &["1", "2"])]).unwrap();
        r.set_cursor("a", 2).unwrap();
        assert_eq!(r.prune(100, &["a"]).unwrap(), 2);
        assert_eq!(ob.append(&[packet(2, &["3"])]).unwrap(), 3);
        assert_eq!(r.last_seq().unwrap(), 3);
    }

    #[test]
    fn pruning_keeps_what_any_sink_has_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        r.init_cursor("mqtt").unwrap();
        r.init_cursor("influx").unwrap();
        ob.append(&[packet(1, &["1"]), packet(2, &["2"]), packet(3, &["3"])])
            .unwrap();
        r.set_cursor("mqtt", 3).unwrap();
        r.set_cursor("influx", 1).unwrap();
        assert_eq!(r.prune(100, &["mqtt", "influx"]).unwrap(), 1);
        assert_eq!(r.read_after(0, 10).unwrap()[0].seq, 2);
        // Newer than the retention horizon: kept even when delivered.
        r.set_cursor("influx", 3).unwrap();
        assert_eq!(r.prune(3, &["mqtt", "influx"]).unwrap(), 1);
        assert_eq!(r.read_after(0, 10).unwrap()[0].seq, 3);
    }

    #[test]
    fn latest_gives_the_newest_value_per_series_and_no_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.append(&[packet(1, &["1"]), packet(2, &["2"])]).unwrap();
        let seq = ob
            .append_events(&[(3, "gateway", "gateway_started", "gateway started")])
            .unwrap();
        let event = &ob.reader().unwrap().read_after(seq - 1, 1).unwrap()[0];
        assert!(event.is_event());
        assert_eq!(
            (event.node.as_str(), event.metric.as_str()),
            ("gateway", "gateway_started")
        );
        let latest = ob.reader().unwrap().latest().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].value, "2");
    }

    fn fill(ob: &mut Outbox, packets: usize) {
        let value = "1".repeat(40);
        let values = [value.as_str(); 9];
        let batch: Vec<Packet> = (0..packets).map(|i| packet(i as i64, &values)).collect();
        ob.append(&batch).unwrap();
    }

    #[test]
    fn over_budget_delivered_history_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        r.init_cursor("mqtt").unwrap();
        fill(&mut ob, 5000);
        let last = r.last_seq().unwrap();
        r.set_cursor("mqtt", last).unwrap();
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, &["mqtt"], true).unwrap();
        assert!(report.history_pruned > 0);
        assert_eq!(report.undelivered_dropped, 0);
        assert!(
            ob.used_bytes().unwrap() <= used / 2,
            "under budget afterwards"
        );
        // Nothing to do when under budget.
        assert_eq!(
            ob.enforce_budget(used, &["mqtt"], true).unwrap(),
            BudgetReport::default()
        );
    }

    #[test]
    fn over_budget_drop_oldest_drops_and_counts_undelivered_readings() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        r.init_cursor("influxdb").unwrap();
        fill(&mut ob, 5000);
        let total = r.count_after(0).unwrap() as u64;
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, &["influxdb"], true).unwrap();
        assert_eq!(report.history_pruned, 0);
        assert!(
            report.undelivered_dropped > total / 3,
            "{report:?} of {total}"
        );
        assert_eq!(
            r.count_after(0).unwrap() as u64,
            total - report.undelivered_dropped
        );
        // The newest readings are the ones kept, and the sink reads on from its cursor.
        assert_eq!(
            r.read_after(0, 1).unwrap()[0].seq as u64,
            report.undelivered_dropped + 1
        );
        assert!(ob.used_bytes().unwrap() <= used / 2);
    }

    #[test]
    fn over_budget_block_keeps_undelivered_readings_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        r.init_cursor("influxdb").unwrap();
        fill(&mut ob, 2000);
        let total = r.count_after(0).unwrap();
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, &["influxdb"], false).unwrap();
        assert!(report.over);
        assert_eq!(report.undelivered_dropped, 0);
        assert_eq!(r.count_after(0).unwrap(), total);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, b"garbage".repeat(1000)).unwrap();
        let mut cfg = storage(dir.path());
        assert!(Outbox::open(&cfg).is_err());
        cfg.move_corrupt_aside = true;
        let ob = Outbox::open(&cfg).unwrap();
        assert_eq!(ob.reader().unwrap().last_seq().unwrap(), 0);
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("outbox.db.corrupt-")
            })
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            std::fs::read(kept[0].path()).unwrap(),
            b"garbage".repeat(1000)
        );
    }

    #[test]
    fn an_unwritable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        // A file where the database should go makes the path unusable even for root.
        std::fs::create_dir(ro.join(DB_FILE)).unwrap();
        let err = Outbox::open(&storage(&ro)).unwrap_err();
        assert!(err.to_string().contains("[storage] dir"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(
            &path,
            b"this is not sqlite, but it is someone's data".repeat(200),
        )
        .unwrap();
        let err = Outbox::open(&storage(dir.path())).unwrap_err();
        assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("--move-corrupt-outbox"), "{err}");
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is not sqlite"));
    }

    #[test]
    fn a_database_with_damaged_pages_is_reported_and_left_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            // Rollback-journal mode, as a restored backup would be: opening it in WAL mode
            // would rewrite its header.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let value = "1".repeat(100);
            for i in 0..2000 {
                conn.execute(
                    "INSERT INTO readings (ts, node, metric, value) VALUES (?1, 'n', 'm', ?2)",
                    params![i, value],
                )
                .unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 * 4096..24 * 4096].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        let err = Outbox::open(&storage(dir.path())).unwrap_err();
        assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
