//! Grafana dashboards generated from [`crate::dashboards::panels`], the one description of the panels, in
//! two flavours: Flux (InfluxDB 2.x) and InfluxQL (InfluxDB 1.x, or 2.x through its DBRP
//! mapping). `iiot-gateway dashboards --flavor flux|influxql --out DIR` writes them; the files
//! under `deploy/grafana/provisioning/dashboards/` are that command's output, and a system test
//! fails when they drift from it. Pure functions, except [`write`].
//!
//! What a generated dashboard holds: the panels of the definition (ids, titles, kinds, units,
//! thresholds as Grafana threshold steps with the definition's colours), a 10 s refresh, the
//! datasource referenced by a fixed uid ([`Flavor::datasource_uid`], the uid the provisioned
//! datasource carries, so no `${DS_...}` input has to be chosen on import), and the gateway
//! events as annotations. A query covers one node (`Nodes::One`) or groups by the `node` tag
//! so every node that reports is its own series (`Nodes::All`).
//!
//! The packet error rate (`Compute::PacketErrorRate`) is Δerr / (Δrx + Δerr) × 100 over the
//! time range, where a counter going back (a node reboot) counts its new value as the increase:
//! - Flux: `difference(nonNegative: false)` per counter, then a negative step is replaced by
//!   the new value (kept aside with `duplicate` before the difference), summed, then both
//!   counters pivoted into one row per node. Exact.
//! - InfluxQL has no conditional, so the increase of a step with difference `d` and new value
//!   `x` is written arithmetically: `(d + |d|) / 2 + x · (|d| − d) / (2|d|)`, which is `d` for
//!   `d ≥ 0` and `x` for `d < 0` (InfluxQL division by zero yields 0, so `d = 0` adds 0). The
//!   steps are taken between [`PER_BUCKET`] buckets (`difference(last(value))` with
//!   `fill(none)`); that is exact as long as no two packets arrive within one bucket (the
//!   firmware sends one every ~10 s). A Grafana math expression divides the two sums.
//!
//! # The `events` measurement (annotations)
//!
//! Both flavours show annotations from the measurement [`EVENTS_MEASUREMENT`], which the
//! gateway writes next to the readings, through the same sink:
//!
//! ```text
//! events,kind=gateway_started,node=gateway text="iiot-gateway 0.1.0 started; source stdin" 1764230400000000000
//! ```
//!
//! (written by `crate::events` through the outbox and the InfluxDB sink)
//!
//! - measurement `events`;
//! - tag `node`: what the event is about (`gateway`, the sink name, `stats` for the reporting
//!   node's reboot, the source kind);
//! - tag `kind`, one of [`EVENT_KINDS`]: `gateway_started`, `gateway_stopped`,
//!   `source_restarted`, `node_reboot`, `sink_outage_begun`, `sink_outage_ended`,
//!   `firmware_changed`;
//! - field `text` (string): one human-readable line, shown as the annotation text;
//! - timestamp: when it happened, nanoseconds (UTC).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

use crate::dashboards::panels::{Compute, Dashboard, Kind, Nodes, Panel, Query, Step, DASHBOARDS};

/// Dashboard JSON model version written (Grafana 12.x and later read it without migration).
pub const SCHEMA_VERSION: u32 = 42;
/// Auto-refresh of every dashboard.
pub const REFRESH: &str = "10s";
/// uid of the provisioned Flux datasource.
pub const FLUX_DATASOURCE_UID: &str = "iiot-influxdb-flux";
/// uid of the provisioned InfluxQL datasource.
pub const INFLUXQL_DATASOURCE_UID: &str = "iiot-influxdb-influxql";
/// The field every reading is written to.
pub const VALUE_FIELD: &str = "value";
/// The tag naming the node of a reading.
pub const NODE_TAG: &str = "node";
/// The measurement of gateway events (see the module documentation).
pub const EVENTS_MEASUREMENT: &str = "events";
/// The tag of an event saying what happened.
pub const EVENT_KIND_TAG: &str = "kind";
/// The string field of an event: its text.
pub const EVENT_TEXT_FIELD: &str = "text";
/// Every value of the `kind` tag.
pub const EVENT_KINDS: &[&str] = &[
    "gateway_started",
    "gateway_stopped",
    "source_restarted",
    "node_reboot",
    "sink_outage_begun",
    "sink_outage_ended",
    "firmware_changed",
];
/// Bucket of the InfluxQL counter differences: finer than the time between two packets.
pub const PER_BUCKET: &str = "1s";

/// Grafana's grid is 24 columns wide.
const GRID_WIDTH: u32 = 24;

/// The query language of the dashboards' datasource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// Flux, for InfluxDB 2.x.
    Flux,
    /// InfluxQL, for InfluxDB 1.x (and 2.x through its DBRP mapping).
    #[value(name = "influxql")]
    InfluxQl,
}

impl Flavor {
    /// Both flavours.
    pub const ALL: [Flavor; 2] = [Flavor::Flux, Flavor::InfluxQl];

    /// `flux` or `influxql`: the folder name under `provisioning/dashboards/`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Flux => "flux",
            Flavor::InfluxQl => "influxql",
        }
    }

    /// uid of the provisioned datasource the dashboards use.
    pub fn datasource_uid(self) -> &'static str {
        match self {
            Flavor::Flux => FLUX_DATASOURCE_UID,
            Flavor::InfluxQl => INFLUXQL_DATASOURCE_UID,
        }
    }

    fn datasource(self) -> Value {
        json!({ "type": "influxdb", "uid": self.datasource_uid() })
    }
}

/// The dashboard's uid in `flavor`: both flavours can be provisioned side by side.
pub fn uid(dashboard: &Dashboard, flavor: Flavor) -> String {
    format!("{}-{}", dashboard.uid, flavor.name())
}

/// File name of a dashboard inside a flavour's folder.
pub fn file_name(dashboard: &Dashboard) -> String {
    format!("{}.json", dashboard.uid)
}

/// The dashboard JSON text (keys sorted, two-space indent, final newline).
pub fn render(dashboard: &Dashboard, flavor: Flavor) -> String {
    let value = dashboard_json(dashboard, flavor);
    let mut text = serde_json::to_string_pretty(&Sorted(&value))
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    text
}

/// Writes every dashboard of [`DASHBOARDS`] in `flavor` into `dir` (created when missing);
/// returns the files written.
pub fn write(flavor: Flavor, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for dashboard in DASHBOARDS {
        let path = dir.join(file_name(dashboard));
        std::fs::write(&path, render(dashboard, flavor))?;
        written.push(path);
    }
    Ok(written)
}

/// `iiot-gateway dashboards`: writes the files and names them, one per line.
pub(crate) fn command(flavor: Flavor, out: &Path) -> ExitCode {
    match write(flavor, out) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write dashboards to {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// The dashboard as Grafana's dashboard JSON model.
pub fn dashboard_json(dashboard: &Dashboard, flavor: Flavor) -> Value {
    let panels: Vec<Value> = layout(dashboard.panels)
        .into_iter()
        .map(|(panel, grid)| panel_json(panel, grid, flavor))
        .collect();
    json!({
        "annotations": { "list": [builtin_annotation(), events_annotation(flavor)] },
        "description": format!(
            "Generated by `iiot-gateway dashboards --flavor {}` from src/dashboards/panels.rs; do not edit.",
            flavor.name()
        ),
        "editable": true,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": null,
        "links": [],
        "panels": panels,
        "refresh": REFRESH,
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["iiot", flavor.name()],
        "templating": { "list": [] },
        "time": { "from": "now-6h", "to": "now" },
        "timepicker": { "refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"] },
        "timezone": "browser",
        "title": dashboard.title,
        "uid": uid(dashboard, flavor),
        "version": 1,
        "weekStart": "",
    })
}

/// Grid position: x, y, w, h.
type Grid = (u32, u32, u32, u32);

/// Packs panels left to right in rows of 24 columns (stat 6 wide, time series 12); the last
/// panel of a row takes what is left, and a row is as high as its highest panel.
fn layout(panels: &[Panel]) -> Vec<(&Panel, Grid)> {
    let mut rows: Vec<Vec<&Panel>> = Vec::new();
    let mut used = GRID_WIDTH;
    for panel in panels {
        let (w, _) = size(panel.kind);
        if used + w > GRID_WIDTH {
            rows.push(Vec::new());
            used = 0;
        }
        rows.last_mut().expect("a row was pushed").push(panel);
        used += w;
    }
    let mut out = Vec::new();
    let mut y = 0;
    for row in rows {
        let h = row.iter().map(|p| size(p.kind).1).max().unwrap_or(0);
        let mut x = 0;
        let last = row.len().saturating_sub(1);
        for (i, panel) in row.into_iter().enumerate() {
            let w = if i == last {
                GRID_WIDTH - x
            } else {
                size(panel.kind).0
            };
            out.push((panel, (x, y, w, h)));
            x += w;
        }
        y += h;
    }
    out
}

fn size(kind: Kind) -> (u32, u32) {
    match kind {
        Kind::Stat => (6, 5),
        Kind::TimeSeries => (12, 9),
    }
}

fn panel_json(panel: &Panel, (x, y, w, h): Grid, flavor: Flavor) -> Value {
    let mut defaults = json!({
        "unit": panel.unit,
        "thresholds": { "mode": "absolute", "steps": threshold_steps(panel.steps) },
    });
    if flavor == Flavor::Flux && panel.compute == Compute::Values {
        // Flux series carry the group key as labels; name them like the InfluxQL aliases.
        let name = if panel.queries.len() > 1 {
            "${__field.labels._measurement} ${__field.labels.node}"
        } else {
            "${__field.labels.node}"
        };
        defaults["displayName"] = json!(name);
    }
    let (kind, options) = match panel.kind {
        Kind::Stat => {
            defaults["color"] = json!({ "mode": "thresholds" });
            (
                "stat",
                json!({
                    "colorMode": "background",
                    "graphMode": "area",
                    "justifyMode": "auto",
                    "orientation": "auto",
                    "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
                    "textMode": "auto",
                }),
            )
        }
        Kind::TimeSeries => {
            let style = if panel.steps.is_empty() {
                "off"
            } else {
                "dashed"
            };
            defaults["color"] = json!({ "mode": "palette-classic" });
            defaults["custom"] = json!({
                "drawStyle": "line",
                "lineWidth": 2,
                "fillOpacity": 10,
                "showPoints": "never",
                "spanNulls": true,
                "thresholdsStyle": { "mode": style },
            });
            (
                "timeseries",
                json!({
                    "legend": { "calcs": ["lastNotNull"], "displayMode": "list", "placement": "bottom", "showLegend": true },
                    "tooltip": { "mode": "multi", "sort": "none" },
                }),
            )
        }
    };
    json!({
        "datasource": flavor.datasource(),
        "fieldConfig": { "defaults": defaults, "overrides": [] },
        "gridPos": { "x": x, "y": y, "w": w, "h": h },
        "id": panel.id,
        "options": options,
        "targets": targets(panel, flavor),
        "title": panel.title,
        "type": kind,
    })
}

/// Grafana threshold steps; the base step has `value: null`. A panel without thresholds gets
/// a green base step (Grafana wants one).
fn threshold_steps(steps: &[Step]) -> Vec<Value> {
    if steps.is_empty() {
        return vec![json!({ "color": "green", "value": null })];
    }
    steps
        .iter()
        .map(|s| json!({ "color": s.color, "value": s.from }))
        .collect()
}

fn ref_id(i: usize) -> String {
    char::from(b'A' + u8::try_from(i % 26).expect("i % 26 < 26")).to_string()
}

fn targets(panel: &Panel, flavor: Flavor) -> Vec<Value> {
    match (panel.compute, panel.queries, flavor) {
        (Compute::PacketErrorRate, [rx, err], Flavor::Flux) => vec![json!({
            "datasource": flavor.datasource(),
            "query": flux_error_rate(rx, err),
            "refId": "A",
        })],
        (Compute::PacketErrorRate, [rx, err], Flavor::InfluxQl) => vec![
            influxql_target("A", &influxql_increase(rx), "$tag_node", true),
            influxql_target("B", &influxql_increase(err), "$tag_node", true),
            json!({
                "datasource": { "type": "__expr__", "uid": "__expr__" },
                "expression": "$B / ($A + $B) * 100",
                "refId": "C",
                "type": "math",
            }),
        ],
        _ => {
            let several = panel.queries.len() > 1;
            panel
                .queries
                .iter()
                .enumerate()
                .map(|(i, q)| match flavor {
                    Flavor::Flux => json!({
                        "datasource": flavor.datasource(),
                        "query": flux_values(q, several),
                        "refId": ref_id(i),
                    }),
                    Flavor::InfluxQl => {
                        let alias = match (q.nodes, several) {
                            (_, true) => "$measurement $tag_node",
                            (Nodes::One(node), false) => node,
                            (Nodes::All, false) => "$tag_node",
                        };
                        influxql_target(&ref_id(i), &influxql_values(q), alias, false)
                    }
                })
                .collect()
        }
    }
}

fn influxql_target(ref_id: &str, query: &str, alias: &str, hide: bool) -> Value {
    json!({
        "alias": alias,
        "datasource": Flavor::InfluxQl.datasource(),
        "hide": hide,
        "query": query,
        "rawQuery": true,
        "refId": ref_id,
        "resultFormat": "time_series",
    })
}

/// An InfluxQL identifier in double quotes.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL string literal in single quotes.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A Flux string literal.
fn flux_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn influxql_node_filter(q: &Query) -> String {
    match q.nodes {
        Nodes::One(node) => format!("({} = {}) AND ", ident(NODE_TAG), literal(node)),
        Nodes::All => String::new(),
    }
}

/// Mean per `$__interval`, one series per node.
pub fn influxql_values(q: &Query) -> String {
    format!(
        "SELECT mean({value}) FROM {m} WHERE {filter}$timeFilter GROUP BY time($__interval), {node} fill(null)",
        value = ident(VALUE_FIELD),
        m = ident(q.measurement),
        filter = influxql_node_filter(q),
        node = ident(NODE_TAG),
    )
}

/// Sum of a counter's increases over `$timeFilter` per node, a reset counting its new value
/// (see the module documentation for the arithmetic).
pub fn influxql_increase(q: &Query) -> String {
    format!(
        "SELECT sum(\"increase\") FROM (\
         SELECT (\"d\" + abs(\"d\")) / 2 + \"x\" * (abs(\"d\") - \"d\") / (2 * abs(\"d\")) AS \"increase\" FROM (\
         SELECT difference(last({value})) AS \"d\", last({value}) AS \"x\" FROM {m} \
         WHERE {filter}$timeFilter GROUP BY time({bucket}), {node} fill(none))) \
         WHERE $timeFilter GROUP BY {node}",
        value = ident(VALUE_FIELD),
        m = ident(q.measurement),
        filter = influxql_node_filter(q),
        bucket = PER_BUCKET,
        node = ident(NODE_TAG),
    )
}

fn flux_from(q: &Query) -> String {
    let node = match q.nodes {
        Nodes::One(node) => format!(" and r.{NODE_TAG} == {}", flux_string(node)),
        Nodes::All => String::new(),
    };
    format!(
        "from(bucket: v.defaultBucket)\n  \
         |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n  \
         |> filter(fn: (r) => r._measurement == {m} and r._field == {f}{node})",
        m = flux_string(q.measurement),
        f = flux_string(VALUE_FIELD),
    )
}

/// Mean per `v.windowPeriod`; each node is its own table (series).
pub fn flux_values(q: &Query, keep_measurement: bool) -> String {
    let measurement = if keep_measurement {
        ", \"_measurement\""
    } else {
        ""
    };
    format!(
        "{from}\n  \
         |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n  \
         |> keep(columns: [\"_time\", \"_value\"{measurement}, \"{NODE_TAG}\"])",
        from = flux_from(q),
    )
}

/// Packet error rate in % per node, a counter reset counting its new value (exact).
pub fn flux_error_rate(rx: &Query, err: &Query) -> String {
    let increase = |q: &Query| {
        format!(
            "{from}\n  \
             |> group(columns: [\"_measurement\", \"{NODE_TAG}\"])\n  \
             |> sort(columns: [\"_time\"])\n  \
             |> duplicate(column: \"_value\", as: \"reading\")\n  \
             |> difference(nonNegative: false)\n  \
             |> map(fn: (r) => ({{r with _value: if r._value < 0.0 then r.reading else r._value}}))\n  \
             |> sum()",
            from = flux_from(q),
        )
    };
    let (rxm, errm) = (flux_string(rx.measurement), flux_string(err.measurement));
    format!(
        "rx = {rx}\n\
         err = {err}\n\
         union(tables: [rx, err])\n  \
         |> group()\n  \
         |> pivot(rowKey: [\"{NODE_TAG}\"], columnKey: [\"_measurement\"], valueColumn: \"_value\")\n  \
         |> map(fn: (r) => ({{{NODE_TAG}: r.{NODE_TAG}, _value: if r[{rxm}] + r[{errm}] > 0.0 then 100.0 * r[{errm}] / (r[{rxm}] + r[{errm}]) else 0.0}}))\n  \
         |> group(columns: [\"{NODE_TAG}\"])",
        rx = increase(rx),
        err = increase(err),
    )
}

/// InfluxQL annotation query of the events.
pub fn influxql_events() -> String {
    format!(
        "SELECT {text}, {kind} FROM {m} WHERE $timeFilter",
        text = ident(EVENT_TEXT_FIELD),
        kind = ident(EVENT_KIND_TAG),
        m = ident(EVENTS_MEASUREMENT),
    )
}

/// Flux annotation query of the events.
pub fn flux_events() -> String {
    format!(
        "from(bucket: v.defaultBucket)\n  \
         |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n  \
         |> filter(fn: (r) => r._measurement == {m} and r._field == {f})\n  \
         |> keep(columns: [\"_time\", \"_value\", \"{EVENT_KIND_TAG}\"])",
        m = flux_string(EVENTS_MEASUREMENT),
        f = flux_string(EVENT_TEXT_FIELD),
    )
}

fn builtin_annotation() -> Value {
    json!({
        "builtIn": 1,
        "datasource": { "type": "grafana", "uid": "-- Grafana --" },
        "enable": true,
        "hide": true,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    })
}

fn events_annotation(flavor: Flavor) -> Value {
    let common = json!({
        "datasource": flavor.datasource(),
        "enable": true,
        "hide": false,
        "iconColor": "orange",
        "name": "Gateway events",
    });
    let mut anno = common;
    match flavor {
        Flavor::InfluxQl => {
            let query = influxql_events();
            anno["query"] = json!(query);
            anno["textColumn"] = json!(EVENT_TEXT_FIELD);
            anno["tagsColumn"] = json!(EVENT_KIND_TAG);
            anno["target"] = json!({
                "fromAnnotations": true,
                "query": query,
                "rawQuery": true,
                "refId": "Anno",
                "resultFormat": "table",
                "tagsColumn": EVENT_KIND_TAG,
                "textColumn": EVENT_TEXT_FIELD,
                "textEditor": true,
            });
        }
        Flavor::Flux => {
            anno["target"] = json!({ "query": flux_events(), "refId": "Anno" });
            anno["mappings"] = json!({
                "tags": { "source": "field", "value": EVENT_KIND_TAG },
                "text": { "source": "field", "value": "_value" },
            });
        }
    }
    anno
}

/// Serializes a JSON value with object keys sorted, whatever map type serde_json was built
/// with (its `preserve_order` feature may be switched on by another crate).
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Sorted(v))?;
                }
                out.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Sorted)),
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboards::panels::{ENVIRONMENT, SIGNAL};

    fn panels_of(d: &Dashboard, flavor: Flavor) -> Vec<Value> {
        dashboard_json(d, flavor)["panels"]
            .as_array()
            .expect("panels")
            .clone()
    }

    #[test]
    fn every_panel_of_the_definition_is_generated_with_its_unit_and_thresholds() {
        for flavor in Flavor::ALL {
            for d in DASHBOARDS {
                let json = dashboard_json(d, flavor);
                assert_eq!(json["title"], d.title);
                assert_eq!(json["refresh"], "10s");
                assert!(json["schemaVersion"].as_u64().unwrap() >= 39);
                let panels = panels_of(d, flavor);
                assert_eq!(panels.len(), d.panels.len());
                for (p, j) in d.panels.iter().zip(&panels) {
                    assert_eq!(j["id"], p.id);
                    assert_eq!(j["title"], p.title);
                    let kind = match p.kind {
                        Kind::Stat => "stat",
                        Kind::TimeSeries => "timeseries",
                    };
                    assert_eq!(j["type"], kind);
                    let defaults = &j["fieldConfig"]["defaults"];
                    assert_eq!(defaults["unit"], p.unit);
                    let steps = defaults["thresholds"]["steps"].as_array().unwrap();
                    if !p.steps.is_empty() {
                        assert_eq!(steps.len(), p.steps.len(), "{}", p.title);
                        for (s, js) in p.steps.iter().zip(steps) {
                            assert_eq!(js["color"], s.color);
                            assert_eq!(js["value"].as_f64(), s.from);
                        }
                    }
                    assert_eq!(j["datasource"]["uid"], flavor.datasource_uid());
                }
            }
        }
    }

    #[test]
    fn layout_fills_rows_of_24_without_overlap() {
        for d in [ENVIRONMENT, SIGNAL] {
            let grid = layout(d.panels);
            let mut rows: std::collections::BTreeMap<u32, u32> = Default::default();
            for (_, (x, y, w, _)) in &grid {
                let used = rows.entry(*y).or_default();
                assert_eq!(*used, *x, "panels of a row are adjacent");
                *used += w;
            }
            assert!(rows.values().all(|w| *w == GRID_WIDTH), "{rows:?}");
        }
        // Environment: the four stats share the first row.
        let env = layout(ENVIRONMENT.panels);
        assert!(env[..4].iter().all(|(_, g)| g.1 == 0 && g.2 == 6));
    }

    #[test]
    fn all_nodes_group_by_node_and_one_node_filters_it() {
        let all = influxql_values(&Query {
            measurement: "temperature",
            nodes: Nodes::All,
        });
        assert_eq!(
            all,
            "SELECT mean(\"value\") FROM \"temperature\" WHERE $timeFilter GROUP BY time($__interval), \"node\" fill(null)"
        );
        let one = influxql_values(&Query {
            measurement: "temperature",
            nodes: Nodes::One("node1"),
        });
        assert!(
            one.contains("WHERE (\"node\" = 'node1') AND $timeFilter"),
            "{one}"
        );
        let flux = flux_values(
            &Query {
                measurement: "temperature",
                nodes: Nodes::One("node1"),
            },
            false,
        );
        assert!(flux.contains(
            "r._measurement == \"temperature\" and r._field == \"value\" and r.node == \"node1\""
        ));
        assert!(flux.contains("aggregateWindow(every: v.windowPeriod, fn: mean"));
    }

    #[test]
    fn packet_error_rate_is_two_hidden_increases_and_a_math_expression_in_influxql() {
        let per = SIGNAL
            .panels
            .iter()
            .find(|p| p.compute == Compute::PacketErrorRate)
            .expect("PER panel");
        let t = targets(per, Flavor::InfluxQl);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0]["hide"], true);
        assert!(t[0]["query"]
            .as_str()
            .unwrap()
            .contains("FROM \"packets_received\""));
        assert!(t[1]["query"]
            .as_str()
            .unwrap()
            .contains("FROM \"crc_errors\""));
        assert_eq!(t[2]["type"], "math");
        assert_eq!(t[2]["expression"], "$B / ($A + $B) * 100");
        let flux = targets(per, Flavor::Flux);
        assert_eq!(flux.len(), 1);
        let q = flux[0]["query"].as_str().unwrap();
        assert!(q.contains("difference(nonNegative: false)"), "{q}");
        assert!(q.contains("if r._value < 0.0 then r.reading"), "{q}");
    }

    #[test]
    fn rendering_is_stable_and_ds_input_free() {
        for flavor in Flavor::ALL {
            for d in DASHBOARDS {
                let a = render(d, flavor);
                assert_eq!(a, render(d, flavor));
                assert!(!a.contains("${DS"), "no import inputs");
                assert!(a.ends_with("}\n"));
                let back: Value = serde_json::from_str(&a).unwrap();
                assert_eq!(back, dashboard_json(d, flavor));
            }
        }
    }

    #[test]
    fn both_flavours_carry_the_events_annotation() {
        let ql = events_annotation(Flavor::InfluxQl);
        assert_eq!(
            ql["query"],
            "SELECT \"text\", \"kind\" FROM \"events\" WHERE $timeFilter"
        );
        let flux = events_annotation(Flavor::Flux);
        assert!(flux["target"]["query"]
            .as_str()
            .unwrap()
            .contains("r._measurement == \"events\" and r._field == \"text\""));
        assert_eq!(EVENT_KINDS.len(), 7);
    }
}
