//! Acknowledgement tracking for the MQTT sink: pure, no I/O.
//!
//! `AsyncClient::publish` returning `Ok` only means "queued inside rumqttc", never
//! "delivered". The event loop later reports `Outgoing::Publish(pkid)` for each queued
//! publish, in queue order, and the broker answers with PUBACK (QoS 1) or PUBCOMP (QoS 2) for
//! that pkid. This tracker maps pkids back to outbox seqs and says how far the cursor may
//! move: up to just below the oldest seq not yet confirmed (a seq counts from the moment its
//! publishes are made, [`AckTracker::expect`], not only once the client took them). QoS 0 has no acknowledgement; a
//! publish written to the socket counts as delivered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::outbox::Seq;

/// Tracks publishes from queueing to confirmation.
#[derive(Debug)]
pub struct AckTracker {
    qos0: bool,
    /// Queued in rumqttc, not yet written: `None` for messages that are not readings.
    queued: VecDeque<Option<Seq>>,
    /// Written, awaiting the broker's acknowledgement.
    inflight: HashMap<u16, Option<Seq>>,
    /// Seqs with publishes not yet confirmed, and how many (a packet's first reading and its
    /// packet event share the seq).
    unconfirmed: BTreeMap<Seq, u32>,
    highest_queued: Seq,
    safe: Seq,
    /// Publishes confirmed so far (acknowledged, or written with QoS 0).
    confirmations: u64,
}

impl AckTracker {
    /// A tracker whose cursor starts at `cursor`; `qos0` when readings go out with QoS 0.
    pub fn new(cursor: Seq, qos0: bool) -> Self {
        Self {
            qos0,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            unconfirmed: BTreeMap::new(),
            highest_queued: cursor,
            safe: cursor,
            confirmations: 0,
        }
    }

    /// A publish for `seq` is made and will be handed to the client: until it is confirmed,
    /// the cursor stays below `seq`. Every publish of a row is expected before the first of
    /// them is handed over, so a row with several (a packet event and a reading) is never
    /// taken for confirmed while one of them still waits to be handed over.
    pub fn expect(&mut self, seq: Seq) {
        *self.unconfirmed.entry(seq).or_default() += 1;
        self.highest_queued = self.highest_queued.max(seq);
    }

    /// A publish was handed to the client (`seq`, expected before; `None` for messages that
    /// are not a row's: status, discovery).
    pub fn on_queued(&mut self, seq: Option<Seq>) {
        self.queued.push_back(seq);
    }

    /// `seq` needs no publish (a gateway event): done at once, in order with the rest.
    /// Returns the new safe cursor when it moved.
    pub fn on_skipped(&mut self, seq: Seq) -> Option<Seq> {
        self.highest_queued = self.highest_queued.max(seq);
        *self.unconfirmed.entry(seq).or_default() += 1;
        self.confirm(seq)
    }

    /// The event loop wrote the oldest queued publish with `pkid`.
    /// Returns the new safe cursor when it moved (QoS 0 readings are done once written).
    pub fn on_sent(&mut self, pkid: u16) -> Option<Seq> {
        let seq = self.queued.pop_front()?;
        if self.qos0 || pkid == 0 {
            self.confirmations += 1;
            return seq.and_then(|s| self.confirm(s));
        }
        self.inflight.insert(pkid, seq);
        None
    }

    /// The broker acknowledged `pkid` (PUBACK or PUBCOMP).
    /// Returns the new safe cursor when it moved.
    pub fn on_ack(&mut self, pkid: u16) -> Option<Seq> {
        let seq = self.inflight.remove(&pkid)?;
        self.confirmations += 1;
        seq.and_then(|s| self.confirm(s))
    }

    fn confirm(&mut self, seq: Seq) -> Option<Seq> {
        if let Some(left) = self.unconfirmed.get_mut(&seq) {
            *left -= 1;
            if *left == 0 {
                self.unconfirmed.remove(&seq);
            }
        }
        let safe = match self.unconfirmed.first_key_value() {
            Some((oldest, _)) => oldest.plus(-1),
            None => self.highest_queued,
        };
        (safe > self.safe).then(|| {
            self.safe = safe;
            safe
        })
    }

    /// Publishes queued or awaiting acknowledgement.
    pub fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// Publishes confirmed so far: moves whenever the broker acknowledges one.
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }
}

/// Notices a broker that keeps the connection open but confirms nothing: publishes wait and
/// no acknowledgement arrives for `timeout` (a cluster node not yet in sync, a frozen
/// process). Pure: the caller passes the time.
#[derive(Debug)]
pub struct AckWatch {
    timeout: Duration,
    /// The confirmation count at the last check, and since when it has not moved while
    /// publishes waited (`None`: nothing waited since the last `rest`).
    seen: u64,
    since: Option<Instant>,
}

impl AckWatch {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            seen: 0,
            since: None,
        }
    }

    /// Nothing awaits an acknowledgement: the next wait starts a new clock.
    pub fn rest(&mut self) {
        self.since = None;
    }

    /// A check while publishes wait, given the tracker's [`AckTracker::confirmations`]:
    /// how long nothing was confirmed, once that is `timeout` or more.
    pub fn stalled(&mut self, confirmations: u64, now: Instant) -> Option<Duration> {
        match self.since {
            Some(since) if confirmations == self.seen => {
                let quiet = now.saturating_duration_since(since);
                (quiet >= self.timeout).then_some(quiet)
            }
            _ => {
                self.seen = confirmations;
                self.since = Some(now);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: i64) -> Seq {
        Seq::new(n)
    }

    /// A publish for `seq` made and handed to the client.
    fn queue(t: &mut AckTracker, seq: Seq) {
        t.expect(seq);
        t.on_queued(Some(seq));
    }

    #[test]
    fn cursor_moves_only_over_a_contiguous_run_of_acks() {
        let mut t = AckTracker::new(s(10), false);
        for seq in 11..=13 {
            queue(&mut t, s(seq));
        }
        assert_eq!(t.on_sent(1), None);
        assert_eq!(t.on_sent(2), None);
        assert_eq!(t.on_sent(3), None);
        assert_eq!(t.on_ack(2), None, "11 is not confirmed yet");
        assert_eq!(t.on_ack(1), Some(s(12)));
        assert_eq!(t.outstanding(), 1);
        assert_eq!(t.on_ack(3), Some(s(13)));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn a_seq_published_twice_is_confirmed_by_both_acks() {
        // A packet event and the packet's first reading share seq 11.
        let mut t = AckTracker::new(s(10), false);
        queue(&mut t, s(11));
        queue(&mut t, s(11));
        queue(&mut t, s(12));
        for pkid in 1..=3 {
            assert_eq!(t.on_sent(pkid), None);
        }
        assert_eq!(
            t.on_ack(1),
            None,
            "the second publish of 11 is not confirmed"
        );
        assert_eq!(t.on_ack(3), None);
        assert_eq!(t.on_ack(2), Some(s(12)));
    }

    #[test]
    fn skipped_seqs_move_the_cursor_only_past_confirmed_ones() {
        let mut t = AckTracker::new(s(0), false);
        queue(&mut t, s(1));
        t.on_sent(1);
        assert_eq!(t.on_skipped(s(2)), None, "1 is still unconfirmed");
        assert_eq!(t.on_ack(1), Some(s(2)));
        assert_eq!(t.on_skipped(s(3)), Some(s(3)));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn an_expected_publish_not_yet_handed_over_holds_the_cursor() {
        // Seq 5 has two publishes (a packet event and a reading); the client took the event
        // and refused the reading for now.
        let mut t = AckTracker::new(s(4), false);
        t.expect(s(5));
        t.expect(s(5));
        t.on_queued(Some(s(5)));
        assert_eq!(t.on_sent(1), None);
        assert_eq!(
            t.on_ack(1),
            None,
            "the reading of 5 is not even handed over"
        );
        t.on_queued(Some(s(5)));
        assert_eq!(t.on_sent(2), None);
        assert_eq!(t.on_ack(2), Some(s(5)));
    }

    #[test]
    fn queued_is_not_delivered() {
        let mut t = AckTracker::new(s(0), false);
        queue(&mut t, s(1));
        assert_eq!(t.on_sent(1), None);
        assert_eq!(t.outstanding(), 1);
    }

    #[test]
    fn status_messages_do_not_move_the_cursor() {
        let mut t = AckTracker::new(s(0), false);
        t.on_queued(None);
        queue(&mut t, s(1));
        t.on_sent(1);
        t.on_sent(2);
        assert_eq!(t.on_ack(1), None);
        assert_eq!(t.on_ack(2), Some(s(1)));
    }

    #[test]
    fn qos0_counts_a_written_publish_as_delivered() {
        let mut t = AckTracker::new(s(0), true);
        queue(&mut t, s(1));
        queue(&mut t, s(2));
        assert_eq!(t.on_sent(0), Some(s(1)));
        assert_eq!(t.on_sent(0), Some(s(2)));
    }

    #[test]
    fn a_broker_that_confirms_nothing_for_the_timeout_is_stalled() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = AckWatch::new(Duration::from_secs(2));
        // The first check starts the clock; acknowledgements restart it.
        assert_eq!(w.stalled(0, at(0)), None);
        assert_eq!(w.stalled(0, at(1_500)), None);
        assert_eq!(w.stalled(3, at(1_900)), None, "an ack restarts the clock");
        assert_eq!(w.stalled(3, at(3_800)), None);
        assert_eq!(
            w.stalled(3, at(3_900)),
            Some(Duration::from_secs(2)),
            "2 s without a confirmation"
        );
        // A rest (nothing waiting) forgets the quiet time before it, however long.
        w.rest();
        assert_eq!(w.stalled(3, at(60_000)), None);
        assert_eq!(w.stalled(3, at(61_000)), None);
        assert_eq!(w.stalled(3, at(62_000)), Some(Duration::from_secs(2)));
    }

    #[test]
    fn confirmations_count_acks_of_publishes_in_flight_and_qos0_writes() {
        let mut t = AckTracker::new(s(0), false);
        t.on_queued(None);
        queue(&mut t, s(1));
        t.on_sent(1);
        t.on_sent(2);
        assert_eq!(t.confirmations(), 0, "written is not confirmed");
        t.on_ack(2);
        t.on_ack(2);
        t.on_ack(7);
        assert_eq!(t.confirmations(), 1, "a repeated or unknown ack is none");
        t.on_ack(1);
        assert_eq!(t.confirmations(), 2);
        let mut q0 = AckTracker::new(s(0), true);
        queue(&mut q0, s(1));
        q0.on_sent(0);
        assert_eq!(q0.confirmations(), 1);
    }

    #[test]
    fn unknown_or_repeated_acks_are_ignored() {
        let mut t = AckTracker::new(s(0), false);
        assert_eq!(t.on_ack(9), None);
        assert_eq!(t.on_sent(1), None);
        queue(&mut t, s(1));
        t.on_sent(5);
        assert_eq!(t.on_ack(5), Some(s(1)));
        assert_eq!(t.on_ack(5), None);
    }
}
