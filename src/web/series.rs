//! History for the panels: the time ranges, the bucket width that keeps every range at most
//! [`MAX_BUCKETS`] points per series, and the two history endpoints.
//!
//! - `GET /api/series?measurement=M&node=N|*&range=R`: one measurement's series, downsampled
//!   in SQL (avg/min/max/count per bucket), one entry per node (`*`: every node reporting M).
//! - `GET /api/stat?panel=ID&range=R`: what a stat panel shows, computed here from the panel
//!   definition: the newest value of each node (`values`), or the packet error rate over
//!   the range from the raw counters ([`crate::dashboards::panels::packet_error_rate`], reboot-proof).
//!
//! Queries run on a blocking thread (SQLite), one `(node, metric)` index range each.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::dashboards::page::find_panel;
use crate::dashboards::panels::{self, Compute, Kind, Nodes, Panel};
use crate::outbox::history::Bucket;
use crate::outbox::StoredReading;
use crate::reading::now_ns;

/// The ranges the dashboard offers, shortest first.
pub(super) const RANGES: &[(&str, Duration)] = &[
    ("15m", Duration::from_secs(15 * 60)),
    ("1h", Duration::from_secs(3600)),
    ("6h", Duration::from_secs(6 * 3600)),
    ("24h", Duration::from_secs(24 * 3600)),
    ("7d", Duration::from_secs(7 * 24 * 3600)),
];

/// The range used when a request names none.
pub(super) const DEFAULT_RANGE: &str = "1h";

/// Most buckets (points) per series in one response.
pub(super) const MAX_BUCKETS: i64 = 500;

/// Bucket widths in seconds, from which the smallest that fits [`MAX_BUCKETS`] is taken, so
/// bucket edges fall on round clock times.
const NICE_BUCKETS_S: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400,
];

const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// The length of a named range in ns.
pub(super) fn parse_range(name: &str) -> Option<i64> {
    RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The bucket width for a range: the smallest round width that gives at most
/// [`MAX_BUCKETS`] buckets.
pub(super) fn bucket_ns(range_ns: i64) -> i64 {
    let per_bucket = range_ns.max(0) / MAX_BUCKETS;
    let wanted_s = ((per_bucket + NS_PER_S - 1) / NS_PER_S).max(1);
    let s = NICE_BUCKETS_S
        .iter()
        .copied()
        .find(|b| *b >= wanted_s)
        .unwrap_or(wanted_s);
    s * NS_PER_S
}

/// The half-open query window `[from, to)` ending now: `from` rounded up to a bucket edge so
/// the first bucket is whole and the count stays within [`MAX_BUCKETS`].
pub(super) fn window(now_ns: i64, range_ns: i64, bucket_ns: i64) -> (i64, i64) {
    let from = (now_ns - range_ns).div_euclid(bucket_ns) * bucket_ns;
    let from = if from < now_ns - range_ns {
        from + bucket_ns
    } else {
        from
    };
    (from, now_ns.saturating_add(1))
}

/// One node's downsampled series.
pub(super) struct NodeSeries {
    pub node: String,
    pub unit: Option<String>,
    pub buckets: Vec<Bucket>,
}

/// The body of `/api/series` (times in ms since the Unix epoch).
pub(super) fn series_json(
    measurement: &str,
    node: &str,
    range: &str,
    (from_ns, to_ns): (i64, i64),
    bucket_ns: i64,
    series: &[NodeSeries],
) -> Value {
    let series: Vec<Value> = series
        .iter()
        .map(|s| {
            let col = |f: fn(&Bucket) -> Value| s.buckets.iter().map(f).collect::<Vec<_>>();
            json!({
                "node": s.node,
                "unit": s.unit,
                "t": col(|b| json!(b.start_ns / NS_PER_MS)),
                "avg": col(|b| json!(b.avg)),
                "min": col(|b| json!(b.min)),
                "max": col(|b| json!(b.max)),
                "count": col(|b| json!(b.count)),
            })
        })
        .collect();
    json!({
        "measurement": measurement,
        "node": node,
        "range": range,
        "from_ms": from_ns / NS_PER_MS,
        "to_ms": to_ns / NS_PER_MS,
        "bucket_ms": bucket_ns / NS_PER_MS,
        "series": series,
    })
}

/// The nodes whose `metric` series a `node` parameter selects (`*`: every node that has
/// reported it), with the unit of its newest reading, ordered by node.
pub(super) fn select_nodes(
    latest: &[StoredReading],
    metric: &str,
    node: &str,
) -> Vec<(String, Option<String>)> {
    let known = latest
        .iter()
        .filter(|r| r.metric == metric && (node == "*" || r.node == node))
        .map(|r| (r.node.to_string(), r.unit.as_ref().map(ToString::to_string)));
    let mut found: Vec<_> = known.collect();
    if found.is_empty() && node != "*" {
        found.push((node.to_string(), None));
    }
    found
}

/// One value shown by a stat panel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatValue {
    pub node: String,
    pub value: f64,
    /// As it should be printed: the firmware's text for raw values.
    pub text: String,
    pub color: Option<&'static str>,
    /// Receive time of the value (raw values).
    pub ts_ns: Option<i64>,
}

/// A `values` stat panel: the newest reading of each selected node, coloured by the panel's
/// thresholds.
pub(super) fn values_stat(panel: &Panel, latest: &[StoredReading]) -> Vec<StatValue> {
    let mut out = Vec::new();
    for q in panel.queries {
        for r in latest.iter().filter(|r| {
            r.metric == q.measurement
                && match q.nodes {
                    Nodes::One(n) => r.node == n,
                    Nodes::All => true,
                }
        }) {
            if let Ok(value) = r.value.parse::<f64>() {
                out.push(StatValue {
                    node: r.node.to_string(),
                    value,
                    text: r.value.to_string(),
                    color: panels::color(panel.steps, value),
                    ts_ns: Some(r.ts_ns),
                });
            }
        }
    }
    out
}

/// The nodes a packet-error-rate panel covers: those reporting both counters.
pub(super) fn per_nodes(panel: &Panel, latest: &[StoredReading]) -> Vec<String> {
    let [rx, err] = panel.queries else {
        return Vec::new();
    };
    let reports =
        |metric: &str, node: &str| latest.iter().any(|r| r.metric == metric && r.node == node);
    let mut nodes: Vec<String> = latest
        .iter()
        .filter(|r| r.metric == rx.measurement)
        .map(|r| r.node.to_string())
        .filter(|n| match rx.nodes {
            Nodes::One(one) => n == one,
            Nodes::All => true,
        })
        .filter(|n| reports(err.measurement, n))
        .collect();
    nodes.dedup();
    nodes
}

/// A packet-error-rate value of one node from its `(rx, err)` samples over the range.
pub(super) fn per_stat(panel: &Panel, node: &str, samples: &[(f64, f64)]) -> Option<StatValue> {
    let value = panels::packet_error_rate(samples)?;
    Some(StatValue {
        node: node.to_string(),
        value,
        text: format!("{value:.1}"),
        color: panels::color(panel.steps, value),
        ts_ns: None,
    })
}

/// The body of `/api/stat`.
pub(super) fn stat_json(panel: &Panel, range: &str, values: &[StatValue]) -> Value {
    json!({
        "panel": panel.id,
        "range": range,
        "values": values.iter().map(|v| json!({
            "node": v.node,
            "value": v.value,
            "text": v.text,
            "color": v.color,
            "ts": v.ts_ns,
        })).collect::<Vec<_>>(),
    })
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

fn server_error(message: String) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": message })),
    )
        .into_response()
}

/// The named range (default [`DEFAULT_RANGE`]) and its length, or the message for a 400.
fn range_or_error(range: Option<String>) -> Result<(String, i64), String> {
    let name = range.unwrap_or_else(|| DEFAULT_RANGE.to_string());
    match parse_range(&name) {
        Some(ns) => Ok((name, ns)),
        None => {
            let names: Vec<&str> = RANGES.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "range must be one of {} (got {name:?})",
                names.join(", ")
            ))
        }
    }
}

/// Query of `/api/series`.
#[derive(Debug, Deserialize)]
pub(super) struct SeriesQuery {
    measurement: String,
    node: Option<String>,
    range: Option<String>,
}

pub(super) async fn api_series(
    State(state): State<AppState>,
    Query(q): Query<SeriesQuery>,
) -> Response {
    let (range, range_ns) = match range_or_error(q.range) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let node = q.node.unwrap_or_else(|| "*".to_string());
    let nodes = select_nodes(&state.latest.snapshot(), &q.measurement, &node);
    let bucket = bucket_ns(range_ns);
    let win = window(now_ns(), range_ns, bucket);
    let history = state.history.clone();
    let measurement = q.measurement.clone();
    let queried = tokio::task::spawn_blocking(move || {
        nodes
            .into_iter()
            .map(|(node, unit)| {
                let buckets = history.series_buckets(&node, &measurement, win.0, win.1, bucket)?;
                Ok(NodeSeries {
                    node,
                    unit,
                    buckets,
                })
            })
            .collect::<Result<Vec<_>, crate::outbox::OutboxError>>()
    })
    .await;
    match queried {
        Ok(Ok(series)) => Json(series_json(
            &q.measurement,
            &node,
            &range,
            win,
            bucket,
            &series,
        ))
        .into_response(),
        Ok(Err(e)) => server_error(e.to_string()),
        Err(e) => server_error(e.to_string()),
    }
}

/// Query of `/api/stat`.
#[derive(Debug, Deserialize)]
pub(super) struct StatQuery {
    panel: u32,
    range: Option<String>,
}

pub(super) async fn api_stat(
    State(state): State<AppState>,
    Query(q): Query<StatQuery>,
) -> Response {
    let (range, range_ns) = match range_or_error(q.range) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let Some(panel) = find_panel(q.panel).filter(|p| p.kind == Kind::Stat) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no stat panel {}", q.panel)})),
        )
            .into_response();
    };
    let latest = state.latest.snapshot();
    let values = match panel.compute {
        Compute::Values => values_stat(panel, &latest),
        Compute::PacketErrorRate => {
            let nodes = per_nodes(panel, &latest);
            let (from, to) = window(now_ns(), range_ns, 1);
            let history = state.history.clone();
            let queried = tokio::task::spawn_blocking(move || {
                let [rx, err] = panel.queries else {
                    return Ok(Vec::new());
                };
                let mut values = Vec::new();
                for node in nodes {
                    let samples =
                        history.counter_pairs(&node, rx.measurement, err.measurement, from, to)?;
                    values.extend(per_stat(panel, &node, &samples));
                }
                Ok::<_, crate::outbox::OutboxError>(values)
            })
            .await;
            match queried {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return server_error(e.to_string()),
                Err(e) => return server_error(e.to_string()),
            }
        }
    };
    Json(stat_json(panel, &range, &values)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboards::panels::{ENVIRONMENT, SIGNAL};

    fn r(node: &str, metric: &str, value: &str, ts: i64) -> StoredReading {
        StoredReading {
            seq: crate::outbox::Seq::START,
            ts_ns: ts,
            node: node.into(),
            metric: metric.into(),
            unit: Some("celsius".into()),
            value: value.into(),
            origin: None,
        }
    }

    #[test]
    fn every_range_gets_a_round_bucket_and_at_most_500_buckets() {
        let now = 1_764_230_400_123_456_789;
        let mut widths = Vec::new();
        for (name, _) in RANGES {
            let range = parse_range(name).unwrap();
            let b = bucket_ns(range);
            let (from, to) = window(now, range, b);
            assert_eq!(from % b, 0, "{name}: aligned");
            assert!(from >= now - range && from < now - range + b, "{name}");
            let buckets = (to - 1) / b - from / b + 1;
            assert!(buckets <= MAX_BUCKETS, "{name}: {buckets} buckets");
            assert!(
                buckets >= MAX_BUCKETS / 2,
                "{name}: {buckets} is too coarse"
            );
            widths.push(b / NS_PER_S);
        }
        assert_eq!(widths, [2, 10, 60, 300, 1800]);
        assert_eq!(parse_range("2h"), None);
        assert_eq!(bucket_ns(10 * NS_PER_S), NS_PER_S);
    }

    #[test]
    fn series_json_is_columnar_in_milliseconds() {
        let series = [NodeSeries {
            node: "node1".into(),
            unit: Some("celsius".into()),
            buckets: vec![
                Bucket {
                    start_ns: 10 * NS_PER_S,
                    avg: 20.5,
                    min: 20.0,
                    max: 21.0,
                    count: 2,
                },
                Bucket {
                    start_ns: 20 * NS_PER_S,
                    avg: 22.0,
                    min: 22.0,
                    max: 22.0,
                    count: 1,
                },
            ],
        }];
        let v = series_json(
            "temperature",
            "*",
            "15m",
            (10 * NS_PER_S, 30 * NS_PER_S),
            2 * NS_PER_S,
            &series,
        );
        assert_eq!(
            v,
            json!({
                "measurement": "temperature", "node": "*", "range": "15m",
                "from_ms": 10_000, "to_ms": 30_000, "bucket_ms": 2000,
                "series": [{
                    "node": "node1", "unit": "celsius",
                    "t": [10_000, 20_000], "avg": [20.5, 22.0], "min": [20.0, 22.0],
                    "max": [21.0, 22.0], "count": [2, 1]
                }]
            })
        );
    }

    #[test]
    fn a_star_selects_every_node_that_reports_the_measurement() {
        let latest = [
            r("node1", "temperature", "20", 1),
            r("node2", "humidity", "50", 1),
            r("node2", "temperature", "21", 1),
            r("node3", "temperature", "22", 1),
        ];
        let nodes: Vec<String> = select_nodes(&latest, "temperature", "*")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(nodes, ["node1", "node2", "node3"]);
        assert_eq!(select_nodes(&latest, "temperature", "node2").len(), 1);
        // A node not seen yet is still asked for (it may be in the history only).
        assert_eq!(
            select_nodes(&latest, "temperature", "node9"),
            [("node9".to_string(), None)]
        );
    }

    #[test]
    fn stat_values_take_the_newest_reading_of_the_panels_node_with_its_colour() {
        let latest = [
            r("node1", "temperature", "36.2", 7),
            r("node2", "temperature", "21.0", 8),
        ];
        let v = values_stat(&ENVIRONMENT.panels[0], &latest);
        assert_eq!(
            v,
            [StatValue {
                node: "node1".into(),
                value: 36.2,
                text: "36.2".into(),
                color: Some("red"),
                ts_ns: Some(7),
            }]
        );
        assert!(values_stat(&ENVIRONMENT.panels[1], &latest).is_empty());
    }

    #[test]
    fn packet_error_rate_stat_uses_the_reboot_proof_algorithm_per_node() {
        let per = &SIGNAL.panels[3];
        let latest = [
            r("stats", "packets_received", "7", 1),
            r("stats", "crc_errors", "1", 1),
            r("half", "packets_received", "7", 1),
        ];
        assert_eq!(per_nodes(per, &latest), ["stats"]);
        let samples = [
            (10.0, 1.0),
            (15.0, 2.0),
            (20.0, 3.0),
            (2.0, 1.0),
            (7.0, 1.0),
        ];
        let v = per_stat(per, "stats", &samples).unwrap();
        assert_eq!(
            (v.value, v.text.as_str(), v.color),
            (15.0, "15.0", Some("red"))
        );
        assert!(per_stat(per, "stats", &samples[..1]).is_none());
        let body = stat_json(per, "1h", &[v]);
        assert_eq!(body["values"][0]["color"], "red");
        assert_eq!(body["panel"], 14);
    }
}
