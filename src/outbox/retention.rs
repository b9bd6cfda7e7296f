//! Retention: now and every [`EVERY`], the writer is asked to delete the readings older than
//! `[storage] retention` that every sink has delivered (undelivered data is never pruned by
//! age; see [`super::Outbox::prune`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Write, WriteQueue};
use crate::reading::now_ns;

/// How often old, delivered history is pruned.
pub const EVERY: Duration = Duration::from_secs(600);

/// Starts the retention job on `tasks`, until `stop`.
pub fn spawn(
    tasks: &TaskTracker,
    writes: WriteQueue,
    retention: Duration,
    stop: CancellationToken,
) {
    let age = i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
    tasks.spawn(async move {
        loop {
            let prune = Write::Prune {
                before_ns: now_ns().saturating_sub(age),
            };
            if let Err(error) = writes.send(prune) {
                tracing::debug!(%error, "history not pruned this time");
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}
