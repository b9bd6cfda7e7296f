//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever
//! commit pushes the WAL past 1000 pages, and a checkpoint syncs the files to disk: the
//! ingest thread's commit then takes milliseconds instead of ~0.2 ms, which a packet
//! arriving at that moment pays as MQTT latency (measured, see BENCHMARKS.md). So every
//! connection turns the automatic checkpoint off ([`super::connect`]) and this thread,
//! started with the writer, checkpoints once per [`EVERY`] on its own connection in
//! `PASSIVE` mode, which never waits for, or blocks, readers and the writer.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Time between checkpoints.
const EVERY: Duration = Duration::from_secs(1);

/// The checkpoint thread; stops (and is joined) when dropped.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database behind `conn` (a connection of its own).
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || {
                // Sender dropped: the writer is gone, stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(%error, "outbox checkpoint failed; retrying");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
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
