//! Whether a node is online: the one rule for the dashboard's node list and the log. A node
//! is offline when no packet came for [`OFFLINE_AFTER_INTERVALS`] of its intervals. The
//! interval is inferred from the node's recent receive times (the median gap, so one lost
//! packet does not double it), or [`DEFAULT_INTERVAL`] until two packets were seen. Pure.

use std::time::Duration;

/// Intervals without a packet after which a node shows offline.
pub(crate) const OFFLINE_AFTER_INTERVALS: i64 = 3;
/// The interval assumed before one could be inferred (the firmware's default rate).
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest interval inferred: a burst of lines (a replayed file, a pipe) must not make
/// a node look offline a few milliseconds after it reported.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The reporting interval of a node from its receive times (ascending): the median gap
/// between consecutive packets, at least [`MIN_INTERVAL`]; `None` with fewer than two.
pub(crate) fn infer_interval(times: &[i64]) -> Option<i64> {
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    Some(gaps[gaps.len() / 2].max(ns(MIN_INTERVAL)))
}

/// Receive times remembered per node, to infer how often it reports: the median of their 7
/// gaps, which a few lost packets do not change.
pub const PACKET_TIMES_PER_NODE: usize = 8;

/// A node's newest [`PACKET_TIMES_PER_NODE`] distinct receive times, ascending, held inline
/// (no allocation: the dashboard and the log each keep one per node, for 10,000 nodes).
#[derive(Debug, Default, Clone)]
pub(crate) struct PacketTimes {
    at: [i64; PACKET_TIMES_PER_NODE],
    len: u8,
}

impl PacketTimes {
    pub(crate) fn as_slice(&self) -> &[i64] {
        &self.at[..usize::from(self.len)]
    }

    pub(crate) fn last(&self) -> Option<i64> {
        self.as_slice().last().copied()
    }

    /// Adds `ts`; a known time changes nothing, and when full the oldest goes out (a time
    /// older than all kept is ignored).
    pub(crate) fn record(&mut self, ts: i64) {
        let len = usize::from(self.len);
        let Err(at) = self.as_slice().binary_search(&ts) else {
            return;
        };
        if len < PACKET_TIMES_PER_NODE {
            self.at.copy_within(at..len, at + 1);
            self.at[at] = ts;
            self.len += 1;
        } else if at > 0 {
            self.at.copy_within(1..at, 0);
            self.at[at - 1] = ts;
        }
    }
}

/// One node's state at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeState {
    pub node: String,
    pub last_seen_ns: i64,
    pub interval_ns: i64,
    /// The interval was inferred (false: [`DEFAULT_INTERVAL`]).
    pub inferred: bool,
    pub online: bool,
}

/// The state of a node with these receive times (ascending) at `now_ns`.
pub(crate) fn node_state(node: &str, times: &[i64], now_ns: i64) -> Option<NodeState> {
    let last = *times.last()?;
    let inferred = infer_interval(times);
    let interval = inferred.unwrap_or(ns(DEFAULT_INTERVAL));
    Some(NodeState {
        node: node.to_string(),
        last_seen_ns: last,
        interval_ns: interval,
        inferred: inferred.is_some(),
        online: now_ns.saturating_sub(last) <= interval.saturating_mul(OFFLINE_AFTER_INTERVALS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn the_interval_is_the_median_gap_so_a_lost_packet_does_not_change_it() {
        assert_eq!(
            infer_interval(&[0, 10 * S, 20 * S, 40 * S, 50 * S]),
            Some(10 * S)
        );
        assert_eq!(infer_interval(&[0, 5 * S]), Some(5 * S));
        assert_eq!(infer_interval(&[7]), None);
        assert_eq!(infer_interval(&[]), None);
        // A burst (a piped file) is held at the minimum.
        assert_eq!(infer_interval(&[0, 1000, 2000]), Some(S));
    }

    #[test]
    fn a_node_goes_offline_after_three_silent_intervals() {
        let times = [0, 10 * S, 20 * S];
        let at = |now| node_state("node1", &times, now).unwrap();
        assert!(at(20 * S).online);
        assert!(at(50 * S).online, "exactly three intervals later");
        assert!(!at(50 * S + 1).online);
        assert_eq!(at(0).interval_ns, 10 * S);
        assert!(at(0).inferred);
        // One packet only: the default interval of 10 s.
        let one = node_state("node3", &[100 * S], 125 * S).unwrap();
        assert_eq!(
            (one.interval_ns, one.inferred, one.online),
            (10 * S, false, true)
        );
        assert!(!node_state("node3", &[100 * S], 131 * S).unwrap().online);
        assert!(node_state("none", &[], 0).is_none());
    }
}
