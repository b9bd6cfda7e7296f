//! [`Feed`]: the rows the writer just committed, handed to the sinks in memory. A sink that
//! keeps up reads what it delivers from here instead of from SQLite (one read transaction per
//! commit, measured as the largest part of the busy CPU); the outbox stays the source of
//! truth. What the feed cannot answer exactly, a sink reads from the database:
//!
//! - The feed holds every committed row after its `floor`, in seq order, and nothing else:
//!   a read after a seq below the floor (a restart, a sink that fell behind, a resend after
//!   a reconnect) gets `None`, and the sink asks SQLite.
//! - Rows every reader has taken are let go at once, and at most [`CAPACITY`] rows are kept:
//!   an idle or stalled sink costs no more than that.
//! - When rows that were never delivered leave the database (the disk budget's
//!   `drop_oldest`), the writer [`Feed::forget`]s everything: sinks then read the database,
//!   which no longer has them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::rows::{Seq, StoredReading};

/// Most rows kept (about 120 bytes each): a sink further behind reads SQLite.
pub(super) const CAPACITY: usize = 2048;

/// The writer's side: rows are published here right after their commit.
#[derive(Debug, Clone, Default)]
pub(super) struct Feed {
    shared: Arc<Mutex<Recent>>,
}

/// A sink's side (see [`Feed::reader`]); its position is forgotten when dropped.
#[derive(Debug)]
pub struct FeedReader {
    shared: Arc<Mutex<Recent>>,
    id: u64,
}

#[derive(Debug, Default)]
struct Recent {
    /// Every committed row after `floor`, ascending.
    rows: VecDeque<StoredReading>,
    /// The feed knows nothing at or before this seq.
    floor: Seq,
    /// Readers and the highest seq each has taken.
    readers: Vec<(u64, Seq)>,
    next_id: u64,
}

impl Feed {
    /// A feed that starts after `last`, the highest seq already committed.
    pub(super) fn after(last: Seq) -> Feed {
        let feed = Feed::default();
        feed.lock().floor = last;
        feed
    }

    fn lock(&self) -> MutexGuard<'_, Recent> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest rows of a commit (at most [`CAPACITY`]), in seq order. Rows that do not
    /// follow on from the newest known (something was committed that the feed did not see,
    /// or the commit was bigger) start the feed over after them.
    pub(super) fn publish(&self, rows: VecDeque<StoredReading>) {
        let mut recent = self.lock();
        let Some(first) = rows.front() else { return };
        if first.seq != recent.newest().plus(1) {
            recent.rows.clear();
            recent.floor = Seq::new(first.seq.get() - 1);
        }
        // Room first, so the queue never grows past the capacity (a burst's commits hold
        // thousands of rows, which no sink keeping up needs).
        while recent.rows.len() + rows.len() > CAPACITY {
            match recent.rows.pop_front() {
                Some(old) => recent.floor = old.seq,
                None => break,
            }
        }
        recent.rows.extend(rows);
        recent.let_go();
    }

    /// Forgets every row: the database changed behind the feed (undelivered rows dropped).
    pub(super) fn forget(&self) {
        let mut recent = self.lock();
        recent.floor = recent.newest();
        recent.rows.clear();
        recent.rows.shrink_to(0);
    }

    /// Whether any sink reads the feed (otherwise nothing needs to be published).
    pub(super) fn has_readers(&self) -> bool {
        !self.lock().readers.is_empty()
    }

    /// A new reader, whose position starts at `seq` (its cursor).
    pub(super) fn reader(&self, seq: Seq) -> FeedReader {
        let mut recent = self.lock();
        let id = recent.next_id;
        recent.next_id += 1;
        recent.readers.push((id, seq));
        FeedReader {
            shared: self.shared.clone(),
            id,
        }
    }
}

impl Recent {
    /// The highest seq the feed knows (its floor when it holds no rows).
    fn newest(&self) -> Seq {
        self.rows.back().map_or(self.floor, |r| r.seq)
    }

    /// Drops the rows every reader has taken, and the oldest past [`CAPACITY`].
    fn let_go(&mut self) {
        let taken = self.readers.iter().map(|(_, seq)| *seq).min();
        while let Some(front) = self.rows.front() {
            let everyone_took_it = taken.is_some_and(|seq| front.seq <= seq);
            if !everyone_took_it && self.rows.len() <= CAPACITY {
                break;
            }
            self.floor = front.seq;
            self.rows.pop_front();
        }
    }
}

impl FeedReader {
    /// Up to `limit` rows after `seq`, in order, when the feed holds all of them (possibly
    /// none yet); `None` when rows after `seq` are only in the database.
    pub fn read_after(&self, seq: Seq, limit: usize) -> Option<Vec<StoredReading>> {
        let mut recent = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if seq < recent.floor {
            return None;
        }
        let start = recent.rows.partition_point(|r| r.seq <= seq);
        let rows: Vec<StoredReading> = recent.rows.range(start..).take(limit).cloned().collect();
        let taken = rows.last().map_or(seq, |r| r.seq);
        if let Some(position) = recent.readers.iter_mut().find(|(id, _)| *id == self.id) {
            position.1 = taken;
        }
        recent.let_go();
        Some(rows)
    }
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        let mut recent = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        recent.readers.retain(|(id, _)| *id != self.id);
        recent.let_go();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> StoredReading {
        StoredReading {
            seq: Seq::new(seq),
            ts_ns: seq * 10,
            node: "n".into(),
            metric: "m".into(),
            unit: None,
            value: seq.to_string().into(),
            origin: None,
        }
    }

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> VecDeque<StoredReading> {
        seqs.map(row).collect()
    }

    fn seqs(rows: Option<Vec<StoredReading>>) -> Option<Vec<i64>> {
        rows.map(|r| r.iter().map(|r| r.seq.get()).collect())
    }

    #[test]
    fn a_reader_at_the_end_gets_what_is_committed_next_and_nothing_from_before() {
        let feed = Feed::after(Seq::new(10));
        let r = feed.reader(Seq::new(10));
        assert_eq!(seqs(r.read_after(Seq::new(10), 100)), Some(vec![]));
        feed.publish(rows(11..=13));
        assert_eq!(seqs(r.read_after(Seq::new(10), 2)), Some(vec![11, 12]));
        assert_eq!(seqs(r.read_after(Seq::new(12), 100)), Some(vec![13]));
        // Before the floor: only the database has it.
        assert_eq!(seqs(r.read_after(Seq::new(9), 100)), None);
    }

    #[test]
    fn rows_every_reader_took_are_let_go_and_then_come_from_the_database() {
        let feed = Feed::after(Seq::START);
        let (a, b) = (feed.reader(Seq::START), feed.reader(Seq::START));
        feed.publish(rows(1..=4));
        assert_eq!(seqs(a.read_after(Seq::START, 100)), Some(vec![1, 2, 3, 4]));
        // `b` has taken nothing: a resend from `a`'s cursor still comes from memory.
        assert_eq!(seqs(a.read_after(Seq::new(2), 100)), Some(vec![3, 4]));
        assert_eq!(seqs(b.read_after(Seq::START, 2)), Some(vec![1, 2]));
        // Now both took 1 and 2 (a's position is 4 again after its read, b's 2).
        assert_eq!(seqs(a.read_after(Seq::new(1), 100)), None);
        assert_eq!(seqs(b.read_after(Seq::new(2), 100)), Some(vec![3, 4]));
        assert!(feed.lock().rows.is_empty());
        // A reader that goes away no longer holds rows back.
        drop(b);
        feed.publish(rows(5..=6));
        assert_eq!(seqs(a.read_after(Seq::new(4), 100)), Some(vec![5, 6]));
        assert!(feed.lock().rows.is_empty());
    }

    #[test]
    fn a_stalled_reader_holds_at_most_the_capacity() {
        let feed = Feed::after(Seq::START);
        let stalled = feed.reader(Seq::START);
        let total = CAPACITY as i64 + 100;
        for n in 0..total / 50 {
            feed.publish(rows(n * 50 + 1..=n * 50 + 50));
        }
        assert_eq!(feed.lock().rows.len(), CAPACITY);
        assert_eq!(stalled.read_after(Seq::START, 10), None);
        let floor = feed.lock().floor.get();
        assert_eq!(
            seqs(stalled.read_after(Seq::new(floor), 1)),
            Some(vec![floor + 1])
        );
    }

    #[test]
    fn a_gap_or_a_drop_starts_the_feed_over() {
        let feed = Feed::after(Seq::START);
        let r = feed.reader(Seq::START);
        feed.publish(rows(1..=3));
        // 4 was committed without the feed seeing it.
        feed.publish(rows(5..=6));
        assert_eq!(seqs(r.read_after(Seq::START, 100)), None);
        assert_eq!(seqs(r.read_after(Seq::new(3), 100)), None);
        assert_eq!(seqs(r.read_after(Seq::new(4), 100)), Some(vec![5, 6]));
        // Undelivered rows dropped from the database: nothing in memory answers for them.
        feed.publish(rows(7..=8));
        feed.forget();
        assert_eq!(seqs(r.read_after(Seq::new(6), 100)), None);
        assert_eq!(seqs(r.read_after(Seq::new(8), 100)), Some(vec![]));
        feed.publish(rows(9..=9));
        assert_eq!(seqs(r.read_after(Seq::new(8), 100)), Some(vec![9]));
    }
}
