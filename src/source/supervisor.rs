//! The restart-with-backoff loop every long-lived source shares: a child process
//! (`process.rs`), a serial port (`serial.rs`), a radio modem (`rylr998/`). Start it, let it
//! deliver until it ends, tell why and when it starts again, wait, start it again: until the
//! source is stopped. Each source says what one run is ([`Supervised::run_once`]) and how an
//! end is told ([`Supervised::restarting`]); the backoff policy lives here, once.
//!
//! Policy: the delay grows exponentially between runs that fail at once, and starts over
//! after a run that delivered anything or lasted [`HEALTHY_RUN`]: a board that resets every
//! few seconds but delivers each time is working and is reopened quickly every time.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SourceEnd;
use crate::backoff::Backoff;

/// A run at least this long before it ended resets the backoff.
pub(super) const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// A source that runs until it ends and is started again.
pub(super) trait Supervised {
    /// How one run ended (or why it could not start).
    type End;

    /// Starts the source and runs it until it ends; `None` when `stop` was cancelled (the
    /// source has stopped cleanly, nothing left behind).
    async fn run_once(&mut self, stop: &CancellationToken) -> Option<Self::End>;

    /// Whether the run delivered anything (a working device).
    fn delivered(end: &Self::End) -> bool;

    /// Says that the run ended as `end` and the next start is in `delay` (log, status,
    /// restart counters and events).
    fn restarting(&mut self, end: Self::End, delay: Duration);
}

/// The backoff policy between runs: pure, no clock.
#[derive(Debug)]
struct Restarts {
    backoff: Backoff,
}

impl Restarts {
    /// The wait before the next start, after a run that `delivered` or not and lasted `ran`.
    fn after(&mut self, delivered: bool, ran: Duration) -> Duration {
        if delivered || ran >= HEALTHY_RUN {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }
}

/// Runs `source` again and again with `backoff` between runs, until `stop`.
pub(super) async fn supervise<S: Supervised>(
    mut source: S,
    backoff: Backoff,
    stop: &CancellationToken,
) -> SourceEnd {
    let mut restarts = Restarts { backoff };
    loop {
        let started = Instant::now();
        let Some(end) = source.run_once(stop).await else {
            return SourceEnd::Cancelled;
        };
        let delay = restarts.after(S::delivered(&end), started.elapsed());
        source.restarting(end, delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return SourceEnd::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_until_a_run_delivers_or_lasts() {
        let mut restarts = Restarts {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        };
        let quick = Duration::from_millis(5);
        let runs = [
            (false, quick),
            (false, quick),
            (false, quick),
            (true, quick),
            (false, quick),
            (false, HEALTHY_RUN),
        ];
        // Ceilings 1, 2, 4 s (jitter takes half to all of it); then a delivering run and a
        // healthy one start over at 1 s.
        for ((delivered, ran), ceiling) in runs.into_iter().zip([1, 2, 4, 1, 2, 1]) {
            let delay = restarts.after(delivered, ran);
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for a ceiling of {ceiling:?}"
            );
        }
    }
}
