//! Packet times: every packet carries its line's receive time, cut to the database's
//! precision (`[influxdb] precision`, ns by default) and made strictly increasing in it: a
//! packet stamped at or before the previous one gets the previous time + 1 unit (counted in
//! `iiot_packets_time_shifted_total`). So two packets can never collapse into one point, even
//! in a database that keeps milliseconds. Pure, no clock of its own.

use crate::reading::Precision;

/// Packet times: receive times cut to a precision, strictly increasing in it. Pure.
#[derive(Debug)]
pub(super) struct PacketClock {
    unit: i64,
    /// The last packet's time (ns, a multiple of `unit`), if any.
    last: Option<i64>,
}

impl PacketClock {
    pub(super) fn new(precision: Precision) -> Self {
        PacketClock {
            unit: precision.unit_ns(),
            last: None,
        }
    }

    /// `received_ns` cut to the precision (a forwarded packet's time, never moved).
    pub(super) fn cut(&self, received_ns: i64) -> i64 {
        received_ns - received_ns.rem_euclid(self.unit)
    }

    /// The time a packet received at `received_ns` would get, and whether it had to be moved
    /// past the previous packet's. Nothing changes until [`PacketClock::commit`].
    pub(super) fn propose(&self, received_ns: i64) -> (i64, bool) {
        let ts = self.cut(received_ns);
        match self.last {
            Some(last) if ts <= last => (last.saturating_add(self.unit), true),
            _ => (ts, false),
        }
    }

    /// Takes `ts` (from [`PacketClock::propose`]) as the last packet's time.
    pub(super) fn commit(&mut self, ts: i64) {
        self.last = Some(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_times_are_cut_to_the_precision_and_strictly_increasing_in_it() {
        let mut clock = PacketClock::new(Precision::Ms);
        let mut stamp = |received: i64| {
            let (ts, shifted) = clock.propose(received);
            clock.commit(ts);
            (ts, shifted)
        };
        let ms = 1_000_000;
        assert_eq!(stamp(5 * ms + 999_999), (5 * ms, false));
        // Same millisecond: the next one.
        assert_eq!(stamp(5 * ms + 1), (6 * ms, true));
        // Received after, but still at or before the last time given out.
        assert_eq!(stamp(6 * ms + 10), (7 * ms, true));
        // The clock went back: still after the last.
        assert_eq!(stamp(ms), (8 * ms, true));
        // Time moved on: its own millisecond again.
        assert_eq!(stamp(20 * ms + 3), (20 * ms, false));
    }

    #[test]
    fn a_proposed_time_is_taken_only_when_committed() {
        let mut clock = PacketClock::new(Precision::S);
        let s = 1_000_000_000;
        assert_eq!(clock.propose(10 * s + 5), (10 * s, false));
        // Not committed (the line was not a packet): the next packet in that second is not
        // shifted.
        assert_eq!(clock.propose(10 * s + 7), (10 * s, false));
        clock.commit(10 * s);
        assert_eq!(clock.propose(10 * s + 9), (11 * s, true));
    }

    #[test]
    fn nanosecond_precision_keeps_receive_times_and_breaks_ties_by_one_ns() {
        let mut clock = PacketClock::new(Precision::Ns);
        for (received, want) in [(100, (100, false)), (100, (101, true)), (102, (102, false))] {
            let (ts, shifted) = clock.propose(received);
            clock.commit(ts);
            assert_eq!((ts, shifted), want);
        }
        // Before the epoch rounds down too.
        let clock = PacketClock::new(Precision::Ms);
        assert_eq!(clock.propose(-1).0, -1_000_000);
    }
}
