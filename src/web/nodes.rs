//! Which nodes report and whether each is online, for `GET /api/nodes` and the live stream's
//! `nodes` events ([`nodes_json`]). The rule itself is [`crate::nodes::liveness`]'s, shared with the
//! log. Pure.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::downlink::NodeSummary;
use crate::nodes::liveness::{node_state, NodeState, OFFLINE_AFTER_INTERVALS};

const NS_PER_MS: i64 = 1_000_000;
use crate::outbox::StoredReading;

/// The metrics each node reports, from the newest readings.
pub(super) fn metrics_by_node(latest: &[StoredReading]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in latest {
        m.entry(r.node.to_string())
            .or_default()
            .push(r.metric.to_string());
    }
    m
}

/// The `nodes` array of `/api/nodes` (without the server time, so two of them compare equal
/// while nothing changed). `summary` gives a node's open commands and firmware version.
pub(super) fn nodes_json(
    states: &[NodeState],
    metrics: &BTreeMap<String, Vec<String>>,
    summary: &dyn Fn(&str) -> NodeSummary,
) -> Value {
    Value::Array(
        states
            .iter()
            .map(|s| {
                let NodeSummary { pending, firmware } = summary(&s.node);
                json!({
                    "node": s.node,
                    "online": s.online,
                    "last_seen": s.last_seen_ns,
                    "interval_ms": s.interval_ns / NS_PER_MS,
                    "interval_inferred": s.inferred,
                    "offline_after_ms": s.interval_ns.saturating_mul(OFFLINE_AFTER_INTERVALS) / NS_PER_MS,
                    "metrics": metrics.get(&s.node).cloned().unwrap_or_default(),
                    "pending_commands": pending,
                    "firmware": firmware,
                })
            })
            .collect(),
    )
}

/// Every node's state now, from the node times and newest readings kept by `LiveView`, and
/// the command queue's summary when there is one.
pub(super) fn current(
    latest: &crate::live_view::LiveView,
    downlink: Option<&crate::downlink::Downlink>,
    now_ns: i64,
) -> Value {
    let states: Vec<NodeState> = latest
        .node_times()
        .iter()
        .filter_map(|(node, times)| node_state(node, times, now_ns))
        .collect();
    let summary = |node: &str| downlink.map(|d| d.summary(node)).unwrap_or_default();
    nodes_json(&states, &metrics_by_node(&latest.snapshot()), &summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn nodes_json_lists_state_interval_and_metrics() {
        let states = [node_state("node1", &[0, 10 * S], 45 * S).unwrap()];
        let mut metrics = BTreeMap::new();
        metrics.insert("node1".to_string(), vec!["temperature".to_string()]);
        let summary = |node: &str| NodeSummary {
            pending: usize::from(node == "node1") * 2,
            firmware: Some("0.3.1".into()),
        };
        assert_eq!(
            nodes_json(&states, &metrics, &summary),
            json!([{
                "node": "node1", "online": false, "last_seen": 10 * S,
                "interval_ms": 10_000, "interval_inferred": true, "offline_after_ms": 30_000,
                "metrics": ["temperature"], "pending_commands": 2, "firmware": "0.3.1"
            }])
        );
    }
}
