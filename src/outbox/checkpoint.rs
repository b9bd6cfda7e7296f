//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever
//! commit pushes the WAL past 1000 pages, and a checkpoint syncs the files to disk: the
//! ingest thread's commit then takes milliseconds instead of ~0.2 ms, which a packet
//! arriving at that moment pays as MQTT latency (measured, see BENCHMARKS.md). So every
//! connection turns the automatic checkpoint off ([`super::connect`]) and this thread,
//! started with the writer, checkpoints every [`EVERY`] on its own connection:
//!
//! - `PASSIVE` first: it never waits for, or blocks, readers and the writer. When the writer
//!   pauses between commits (any rate below flat out) that is enough: the WAL is then wholly
//!   copied and the next commit starts it over from the beginning.
//! - Under a continuous stream of commits a passive checkpoint never catches up with the end
//!   of the WAL, which would then grow without bound (gigabytes per minute at 1,000 packets/s,
//!   measured), and a blocking checkpoint from this thread would starve: the writer takes the
//!   lock back right after each commit. So once the WAL holds more than [`MAX_WAL_FRAMES`]
//!   pages this thread raises a flag, and the writer itself runs a `TRUNCATE` checkpoint after
//!   its next commit ([`Checkpointer::wal_too_long`]): only a writer that never pauses pays
//!   for it, as it would with SQLite's own automatic checkpoint. It never waits for readers
//!   ([`truncate`]): while a long read holds an old snapshot, the WAL grows instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Time between checkpoints.
const EVERY: Duration = Duration::from_millis(250);

/// WAL pages (4 KiB each) past which the checkpoint truncates the WAL (SQLite's own automatic
/// checkpoint starts at 1000).
const MAX_WAL_FRAMES: i64 = 1000;

/// The checkpoint thread; stops (and is joined) when dropped.
pub(super) struct Checkpointer {
    wal_too_long: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database behind `conn` (a connection of its own).
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let wal_too_long = Arc::new(AtomicBool::new(false));
        let flag = wal_too_long.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || {
                // Sender dropped: the writer is gone, stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    match passive(&conn) {
                        Ok(wal_pages) if wal_pages > MAX_WAL_FRAMES => {
                            flag.store(true, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(%error, "outbox checkpoint failed; retrying");
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            wal_too_long,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// One passive checkpoint; returns the pages in the WAL.
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    // Columns: busy, pages in the WAL, pages copied into the database.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// The truncating checkpoint the writer runs when [`Checkpointer::wal_too_long`] said so,
/// without waiting: a `TRUNCATE` checkpoint would wait (up to the busy timeout, holding the
/// write lock) for every reader of an older snapshot, such as a long history query of the
/// dashboard. With no busy timeout it does what it can without waiting and reports whether
/// the WAL was emptied; if not, the next flag tries again. Restores `busy_timeout` after.
pub(super) fn truncate(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<bool> {
    conn.busy_timeout(Duration::ZERO)?;
    // Columns: busy (1 when it could not finish), pages in the WAL, pages copied.
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    conn.busy_timeout(busy_timeout)?;
    Ok(result? == 0)
}

impl Checkpointer {
    /// Whether the WAL has outgrown what passive checkpoints can keep up with (the flag is
    /// cleared): then the writer should [`truncate`] it after its commit.
    pub(super) fn wal_too_long(&self) -> bool {
        self.wal_too_long.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
