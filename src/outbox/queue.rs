//! How the rest of the gateway writes to the outbox without a connection of its own: a
//! [`WriteQueue`] carries [`Write`]s to the one writer (the ingest thread), which applies them
//! in order between its commits. Sending never blocks and never fails the sender: writes are
//! rare (a gateway event, a cursor a few times a second per sink, a prune every ten minutes).

use tokio::sync::mpsc;

use super::rows::{EventRow, Seq};
use super::{Outbox, Result};

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
    /// Nothing more will be sent: the writer applies what is queued and stops.
    Close,
}

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

/// The sending side: cheap to clone.
#[derive(Debug, Clone)]
pub struct WriteQueue(mpsc::UnboundedSender<Write>);

/// The receiving side, for the writer.
pub type Writes = mpsc::UnboundedReceiver<Write>;

impl WriteQueue {
    /// A queue and its receiving end.
    pub fn new() -> (WriteQueue, Writes) {
        let (tx, rx) = mpsc::unbounded_channel();
        (WriteQueue(tx), rx)
    }

    /// Queues `write`; false when the writer has stopped (the write is lost: only a sink
    /// cursor or an event after shutdown can be).
    pub fn send(&self, write: Write) -> bool {
        self.0.send(write).is_ok()
    }
}

impl Outbox {
    /// Applies one queued write.
    pub fn apply(&mut self, write: &Write) -> Result<Applied> {
        match write {
            Write::Event(event) => Ok(Applied::Committed(
                self.append_events(std::slice::from_ref(event))?,
            )),
            Write::Cursor { sink, seq } => self.set_cursor(sink, *seq).map(|()| Applied::Done),
            Write::Prune { before_ns } => self.prune(*before_ns).map(Applied::Pruned),
            Write::Close => Ok(Applied::Done),
        }
    }
}
