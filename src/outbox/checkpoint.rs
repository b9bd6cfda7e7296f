//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever
//! commit pushes the WAL past 1000 pages, and a checkpoint syncs the files to disk: the
//! ingest thread's commit then takes milliseconds instead of ~0.2 ms, which a packet
//! arriving at that moment pays as MQTT latency (measured, see BENCHMARKS.md). So every
//! connection turns the automatic checkpoint off ([`super::connect`]), the writer learns the
//! WAL's length from every commit ([`watch`]), and this thread, started with the writer,
//! checkpoints on its own connection when the WAL has grown past [`CHECKPOINT_AT`] pages
//! ([`Checkpointer::wal_grew`]), at most once per [`EVERY`]. A gateway that receives little
//! checkpoints rarely (every few minutes at 1 packet/s), and one that receives nothing never:
//! a checkpoint costs two `fsync`s, and the first commit after one that emptied the WAL syncs
//! its header, which at one checkpoint per packet was most of the idle gateway's wake-ups.
//!
//! - `PASSIVE` first: it never waits for, or blocks, readers and the writer. When the writer
//!   pauses between commits (any rate below flat out) that is enough: the WAL is then wholly
//!   copied and the next commit starts it over from the beginning.
//! - Under a continuous stream of commits a passive checkpoint never catches up with the end
//!   of the WAL, which would then grow without bound (gigabytes per minute at 1,000 packets/s,
//!   measured), and a blocking checkpoint from this thread would starve: the writer takes the
//!   lock back right after each commit. So once the WAL holds more than [`MAX_WAL_FRAMES`]
//!   pages the writer itself runs a `TRUNCATE` checkpoint after its commit ([`truncate`]):
//!   only a writer that never pauses pays for it, as it would with SQLite's own automatic
//!   checkpoint. It never waits for readers: while a long read holds an old snapshot, the WAL
//!   grows instead.

use std::cell::Cell;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Least time between checkpoints.
const EVERY: Duration = Duration::from_millis(250);

/// WAL pages (4 KiB each) from which the thread checkpoints.
pub(super) const CHECKPOINT_AT: i64 = 256;

/// WAL pages past which the writer truncates the WAL (SQLite's own automatic checkpoint
/// starts at 1000).
pub(super) const MAX_WAL_FRAMES: i64 = 1000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread ([`watch`]).
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// Makes every commit on `conn` note the WAL's length for [`wal_pages`] (replaces SQLite's
/// automatic checkpoint, which is off anyway).
pub(super) fn watch(conn: &Connection) {
    fn note(_: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
        WAL_PAGES.set(pages);
        Ok(())
    }
    conn.wal_hook(Some(note));
}

/// Pages in the WAL after the last commit on this thread (0 when nothing was committed since
/// the last call).
pub(super) fn wal_pages() -> i64 {
    i64::from(WAL_PAGES.take())
}

/// The checkpoint thread; stops (and is joined) when dropped.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer tells the thread.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Checkpoints run so far.
    runs: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The WAL grew past [`CHECKPOINT_AT`] since the last checkpoint began.
    grew: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Checkpointer {
    /// Starts checkpointing the database behind `conn` (a connection of its own).
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || run(&conn, &thread_shared))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// The WAL holds at least [`CHECKPOINT_AT`] pages: the thread checkpoints it (now, or
    /// when [`EVERY`] has passed since its last checkpoint). Wakes the thread only when it
    /// has nothing to do yet.
    pub(super) fn wal_grew(&self) {
        let mut state = self.shared.lock();
        if !state.grew {
            state.grew = true;
            self.shared.changed.notify_one();
        }
    }

    /// Checkpoints run so far.
    #[cfg(test)]
    pub(super) fn runs(&self) -> u64 {
        self.shared.runs.load(Ordering::Relaxed)
    }
}

/// The thread: waits for the WAL to grow, checkpoints, rests [`EVERY`]; until stopped.
fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut state = shared
                .changed
                .wait_while(shared.lock(), |s| !s.grew && !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
            if state.stop {
                return;
            }
            state.grew = false;
        }
        shared.runs.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = passive(conn) {
            tracing::debug!(%error, "outbox checkpoint failed; retrying");
        }
        // What grows meanwhile waits for the next checkpoint.
        let (state, _) = shared
            .changed
            .wait_timeout_while(shared.lock(), EVERY, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if state.stop {
            return;
        }
    }
}

/// One passive checkpoint; returns the pages in the WAL.
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    // Columns: busy, pages in the WAL, pages copied into the database.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// The truncating checkpoint the writer runs when the WAL is past [`MAX_WAL_FRAMES`],
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

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
