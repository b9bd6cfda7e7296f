//! The database underneath: its schema, how every connection is opened and tuned, and how
//! a broken file is told apart and set aside. No queries on the data live here.

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::{OutboxError, Result};
use crate::config::SyncMode;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     INTEGER NOT NULL,
    node   TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit   TEXT,
    value  TEXT NOT NULL,
    gateway TEXT,
    site   TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS link_counters (
    node      INTEGER PRIMARY KEY,
    counter   INTEGER NOT NULL,
    key_check BLOB NOT NULL
);
";

/// Renames `path` (and its -wal/-shm files) to `<name>.corrupt-<unix time>`.
pub(super) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
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
pub(super) fn check_intact(path: &Path) -> Result<()> {
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

/// How long a connection waits for a lock before its call fails.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Page cache per connection, KiB (SQLite's default is 2000). Every connection works near the
/// end of the table (appends, sinks reading what was just committed), and there are five or
/// six of them: a small cache each keeps the gateway small (measured, see BENCHMARKS.md).
const CACHE_KIB: u32 = 512;

/// A connection in WAL mode with the configured sync and a [`CACHE_KIB`] page cache, that
/// never checkpoints by itself (the [`Checkpointer`] does, off the write path).
pub(super) fn connect(path: &Path, sync: SyncMode) -> Result<Connection> {
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
pub(super) fn classify(path: &Path, cause: rusqlite::Error) -> OutboxError {
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

/// A connection for reading only: SQLite refuses any write through it (`query_only`), so the
/// writer's connection is the only one that changes the data.
pub(super) fn connect_reader(path: &Path, sync: SyncMode) -> Result<Connection> {
    let conn = connect(path, sync)?;
    conn.execute_batch("PRAGMA query_only = 1;")
        .map_err(|s| classify(path, s))?;
    Ok(conn)
}

/// Adds what later versions keep per row to an outbox made by an earlier one: the edge
/// gateway and site of forwarded packets (`gateway`, `site`, NULL for the gateway's own).
pub(super) fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_origin: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('readings') WHERE name = 'gateway'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_origin {
        conn.execute_batch(
            "ALTER TABLE readings ADD COLUMN gateway TEXT; ALTER TABLE readings ADD COLUMN site TEXT;",
        )?;
    }
    Ok(())
}
