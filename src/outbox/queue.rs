//! How the rest of the gateway writes to the outbox without a connection of its own: a
//! [`WriteQueue`] carries [`Write`]s to the one writer (the ingest thread), which applies them
//! in order between its commits. Writes are rare (a gateway event, a cursor a few times a
//! second per sink, a prune every ten minutes), so the queue is small and sending never
//! waits: a full queue (the writer stuck retrying a failing disk for minutes) refuses the
//! write and the sender says so or tries again later.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::commands::{CommandChange, CommandRow};
use super::rows::{EventRow, Seq};
use super::Outbox;

/// A change to the outbox, for its writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Commit a gateway event.
    Event(EventRow),
    /// Move a sink's cursor: everything up to `seq` is delivered.
    Cursor {
        /// The sink.
        sink: &'static str,
        /// Its new cursor.
        seq: Seq,
    },
    /// Delete delivered readings received before `before_ns` (retention).
    Prune {
        /// The horizon, ns since the Unix epoch.
        before_ns: i64,
    },
    /// Change the nodes' commands; the rows the change left (or why it failed) go to
    /// `reply` once committed.
    Command {
        /// The change.
        change: CommandChange,
        /// Where the outcome goes.
        reply: Reply,
    },
    /// Nothing more will be sent: the writer applies what is queued and stops.
    Close,
}

/// What a [`Write::Command`] left: the rows, or why it failed.
pub type CommandOutcome = Result<Vec<CommandRow>, String>;

/// Where the outcome of a [`Write::Command`] goes (once). Equal to any other: a write is
/// compared by what it changes.
#[derive(Debug, Clone, Default)]
pub struct Reply(Arc<Mutex<Option<oneshot::Sender<CommandOutcome>>>>);

impl Reply {
    /// A reply and where it arrives.
    pub fn channel() -> (Reply, oneshot::Receiver<CommandOutcome>) {
        let (tx, rx) = oneshot::channel();
        (Reply(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    fn send(&self, outcome: CommandOutcome) {
        let taken = self.0.lock().ok().and_then(|mut tx| tx.take());
        if let Some(tx) = taken {
            let _ = tx.send(outcome);
        }
    }
}

impl PartialEq for Reply {
    fn eq(&self, _: &Reply) -> bool {
        true
    }
}

impl Eq for Reply {}

/// What applying a [`Write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An event was committed with this seq (wake the sinks).
    Committed(Seq),
    /// Rows pruned.
    Pruned(usize),
    /// Nothing to report.
    Done,
}

/// Writes queued for the outbox's writer at most. At the usual rates (two sinks moving
/// their cursors five times a second) that is minutes of a writer that cannot commit.
pub const WRITE_QUEUE_CAPACITY: usize = 1024;

/// The sending side: cheap to clone.
#[derive(Debug, Clone)]
pub struct WriteQueue(mpsc::Sender<Write>);

/// The receiving side, for the writer.
pub type Writes = mpsc::Receiver<Write>;

/// Why a write was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotQueued {
    /// [`WRITE_QUEUE_CAPACITY`] writes wait already: the writer is stuck.
    #[error("the outbox writer is behind ({WRITE_QUEUE_CAPACITY} writes waiting)")]
    Full,
    /// The writer has stopped (shutdown).
    #[error("the outbox writer has stopped")]
    Closed,
}

impl WriteQueue {
    /// A queue and its receiving end.
    pub fn new() -> (WriteQueue, Writes) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        (WriteQueue(tx), rx)
    }

    /// Queues `write` without waiting.
    pub fn send(&self, write: Write) -> Result<(), NotQueued> {
        self.0.try_send(write).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotQueued::Full,
            mpsc::error::TrySendError::Closed(_) => NotQueued::Closed,
        })
    }
}

impl Outbox {
    /// Applies one queued write.
    pub fn apply(&mut self, write: &Write) -> super::Result<Applied> {
        match write {
            Write::Event(event) => Ok(Applied::Committed(
                self.append_events(std::slice::from_ref(event))?,
            )),
            Write::Cursor { sink, seq } => self.set_cursor(sink, *seq).map(|()| Applied::Done),
            Write::Prune { before_ns } => self.prune(*before_ns).map(Applied::Pruned),
            Write::Command { change, reply } => {
                let applied = self.apply_command(change);
                reply.send(
                    applied
                        .as_ref()
                        .map(Clone::clone)
                        .map_err(ToString::to_string),
                );
                applied.map(|_| Applied::Done)
            }
            Write::Close => Ok(Applied::Done),
        }
    }
}
