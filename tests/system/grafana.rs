//! The Grafana provisioning under deploy/grafana/. Grafana itself cannot run here, so:
//! - the committed dashboards must be exactly what `iiot-gateway dashboards` writes;
//! - every InfluxQL query (panels, annotations, alert rules) runs against a real InfluxDB 1.x
//!   that the gateway filled from the probe-rs fixture, with Grafana's macros expanded, and
//!   must return the series and values the fixture implies;
//! - every Flux query (InfluxDB 2 cannot run here) is tokenized and may name only the
//!   measurements, tags and fields the gateway wrote in that same run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iiot_gateway::dashboards::grafana::{self, Flavor};
use iiot_gateway::dashboards::panels::{self, Compute, Nodes, Panel, DASHBOARDS};
use serde_json::Value;

use crate::deploy::{deploy, yaml};
use crate::gateway::{expected_packets, fixture, Expected, TestGateway, BIN};
use crate::support::{http, InfluxDb1};

const DB: &str = "telemetry";

/// What a developer runs after changing src/dashboards/panels.rs or src/dashboards/grafana.rs.
const REGENERATE: &str = "cargo run -- dashboards --flavor flux --out deploy/grafana/provisioning/dashboards/flux \
     && cargo run -- dashboards --flavor influxql --out deploy/grafana/provisioning/dashboards/influxql";

/// Grafana's macros as the dashboards' default use would expand them (last hour, 10 s).
fn expand(query: &str) -> String {
    let q = query
        .replace("$timeFilter", "time >= now() - 1h")
        .replace("$__interval", "10s")
        .replace("$interval", "10s");
    assert!(!q.contains('$'), "unexpanded macro in {q}");
    q
}

fn provisioning() -> PathBuf {
    deploy().join("grafana/provisioning")
}

/// A committed dashboard of `flavor`.
fn dashboard(flavor: Flavor, d: &panels::Dashboard) -> Value {
    let path = provisioning()
        .join("dashboards")
        .join(flavor.name())
        .join(grafana::file_name(d));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with: {REGENERATE}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn panel_json<'a>(dashboard: &'a Value, panel: &Panel) -> &'a Value {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["id"] == panel.id)
        .unwrap_or_else(|| panic!("panel {} ({}) missing", panel.id, panel.title))
}

fn is_expression(target: &Value) -> bool {
    target["datasource"]["type"] == "__expr__"
}

// ---------------------------------------------------------------------------------------------
// InfluxDB 1.x filled by the gateway from the fixture
// ---------------------------------------------------------------------------------------------

struct Filled {
    influx: InfluxDb1,
    /// Readings of each telemetry line, in order.
    packets: Vec<Vec<Expected>>,
    _dir: tempfile::TempDir,
}

fn now_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

/// Starts InfluxDB 1.x and replays the probe-rs fixture into it through the gateway (file
/// source, recorded times, api v1). The lines are 10 s apart, the first 20 minutes ago, on
/// 10 s boundaries: inside `$timeFilter` (last hour), one packet per `$__interval` bucket.
async fn fill() -> Filled {
    let influx = InfluxDb1::start();
    influx.create_database(DB);
    let dir = tempfile::tempdir().unwrap();
    let text = fixture("probe-rs-session.log");
    let step = 10_000_000_000_i64;
    let start = (now_ns() - 20 * 60 * 1_000_000_000).div_euclid(step) * step;
    let mut recording = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = UNIX_EPOCH + Duration::from_nanos((start + i as i64 * step) as u64);
        recording.push_str(&format!("{} {line}\n", humantime::format_rfc3339_nanos(t)));
    }
    let path = dir.path().join("session.log");
    std::fs::write(&path, recording).unwrap();
    let config = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\nspeed = 0\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{DB}\"\nflush_interval = \"50ms\"\n",
        path.display(),
        dir.path().join("data").display(),
        influx.url()
    );
    let mut gw = TestGateway::start(dir.path(), &config, Stdio::null());
    let status = gw.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", gw.log());
    let packets = expected_packets(&text);
    assert_eq!(packets.len(), 40, "fixture packets");
    Filled {
        influx,
        packets,
        _dir: dir,
    }
}

/// Writes line protocol into the database (HTTP 204 expected).
async fn write_lines(influx: &InfluxDb1, lines: &str) {
    let url = format!("{}/write?db={DB}&precision=ns", influx.url());
    let resp = http()
        .post(&url)
        .body(lines.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{lines}");
}

/// One returned series: measurement, `node` tag, rows (time ns, value or null).
#[derive(Debug)]
struct Series {
    name: String,
    node: Option<String>,
    rows: Vec<(i64, Option<f64>)>,
}

impl Series {
    fn last_value(&self) -> Option<f64> {
        self.rows.iter().rev().find_map(|r| r.1)
    }
}

/// Runs `q`, fails on any error, returns the series of its one statement.
async fn run(influx: &InfluxDb1, q: &str) -> Vec<Series> {
    let res = influx.query(DB, q).await;
    assert!(res.get("error").is_none(), "{q}: {res}");
    let results = res["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{q}");
    assert!(results[0].get("error").is_none(), "{q}: {res}");
    results[0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Series {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            node: s["tags"]["node"].as_str().map(str::to_string),
            rows: s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|r| (r[0].as_i64().expect("epoch=ns"), r[1].as_f64()))
                .collect(),
        })
        .collect()
}

/// Values of `metric` per node, in packet order, from the fixture.
fn fixture_values(packets: &[Vec<Expected>], metric: &str) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in packets.iter().flatten().filter(|e| e.metric == metric) {
        out.entry(e.node.clone())
            .or_default()
            .push(e.value.parse().expect("numeric"));
    }
    out
}

/// The packet error rate per node the panel must show: `panels::packet_error_rate` over the
/// fixture's (rx, err) samples.
fn expected_error_rates(packets: &[Vec<Expected>]) -> BTreeMap<String, f64> {
    let rx = fixture_values(packets, "packets_received");
    let err = fixture_values(packets, "crc_errors");
    rx.iter()
        .map(|(node, rx)| {
            let samples: Vec<(f64, f64)> = rx.iter().copied().zip(err[node].clone()).collect();
            let rate = panels::packet_error_rate(&samples).expect("frames in the fixture");
            (node.clone(), rate)
        })
        .collect()
}

/// `sum("increase")` per node from the two queries of a packet error rate → rate per node.
fn rates(rx: &[Series], err: &[Series]) -> BTreeMap<String, f64> {
    let err: BTreeMap<_, _> = err
        .iter()
        .map(|s| (s.node.clone().unwrap(), s.last_value().unwrap()))
        .collect();
    rx.iter()
        .map(|s| {
            let node = s.node.clone().expect("grouped by node");
            let a = s.last_value().expect("a sum");
            let b = err[&node];
            (node, b / (a + b) * 100.0)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn committed_dashboards_are_what_the_generator_writes() {
    let out = tempfile::tempdir().unwrap();
    for flavor in Flavor::ALL {
        let dir = out.path().join(flavor.name());
        let run = Command::new(BIN)
            .args(["dashboards", "--flavor", flavor.name(), "--out"])
            .arg(&dir)
            .output()
            .expect("run iiot-gateway dashboards");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let committed = provisioning().join("dashboards").join(flavor.name());
        let names = |d: &std::path::Path| -> BTreeSet<String> {
            std::fs::read_dir(d)
                .map(|rd| {
                    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            names(&committed),
            names(&dir),
            "dashboard files in {}; regenerate with: {REGENERATE}",
            committed.display()
        );
        for name in names(&dir) {
            let want = std::fs::read_to_string(dir.join(&name)).unwrap();
            let got = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
            assert!(
                got == want,
                "{}/{name} differs from what `iiot-gateway dashboards --flavor {}` generates \
                 (edited by hand, or src/dashboards/panels.rs / src/dashboards/grafana.rs changed). Regenerate with: \
                 {REGENERATE}",
                committed.display(),
                flavor.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_influxql_panel_query_returns_the_fixture_series_from_influxdb_1x() {
    let filled = fill().await;
    let influx = &filled.influx;
    let mut checked = 0;
    for d in DASHBOARDS {
        let json = dashboard(Flavor::InfluxQl, d);
        assert_eq!(json["schemaVersion"], grafana::SCHEMA_VERSION);
        for panel in d.panels {
            let pj = panel_json(&json, panel);
            let targets = pj["targets"].as_array().expect("targets");
            let queries: Vec<&Value> = targets.iter().filter(|t| !is_expression(t)).collect();
            assert_eq!(queries.len(), panel.queries.len(), "{}", panel.title);
            let mut results = Vec::new();
            for (t, q) in queries.iter().zip(panel.queries) {
                assert_eq!(t["datasource"]["uid"], grafana::INFLUXQL_DATASOURCE_UID);
                let text = expand(t["query"].as_str().expect("query"));
                let series = run(influx, &text).await;
                // The right measurement, one series per node that reports it.
                let want_nodes: BTreeSet<String> = match q.nodes {
                    Nodes::One(node) => BTreeSet::from([node.to_string()]),
                    Nodes::All => fixture_values(&filled.packets, q.measurement)
                        .into_keys()
                        .collect(),
                };
                let got_nodes: BTreeSet<String> =
                    series.iter().filter_map(|s| s.node.clone()).collect();
                assert_eq!(got_nodes, want_nodes, "{}: {text}", panel.title);
                assert_eq!(series.len(), want_nodes.len(), "{}: {text}", panel.title);
                for s in &series {
                    assert_eq!(s.name, q.measurement, "{text}");
                }
                results.push(series);
            }
            match panel.compute {
                Compute::Values => {
                    for (series, q) in results.iter().zip(panel.queries) {
                        let fixture = fixture_values(&filled.packets, q.measurement);
                        for s in series {
                            let node = s.node.as_deref().unwrap();
                            let want = *fixture[node].last().unwrap();
                            let got = s.last_value().expect("a value");
                            assert!(
                                close(got, want),
                                "{}: last {} of {node} is {got}, the fixture's is {want}",
                                panel.title,
                                q.measurement
                            );
                        }
                    }
                }
                Compute::PacketErrorRate => {
                    let expr = targets
                        .iter()
                        .find(|t| is_expression(t))
                        .expect("math expression");
                    assert_eq!(expr["expression"], "$B / ($A + $B) * 100");
                    assert_eq!(queries[0]["refId"], "A");
                    assert_eq!(queries[1]["refId"], "B");
                    let got = rates(&results[0], &results[1]);
                    let want = expected_error_rates(&filled.packets);
                    assert_eq!(
                        got.keys().collect::<Vec<_>>(),
                        want.keys().collect::<Vec<_>>()
                    );
                    for (node, rate) in &want {
                        assert!(
                            close(got[node], *rate),
                            "packet error rate of {node}: {} from InfluxDB, {rate} expected \
                             (reboot in the fixture counts its new values)",
                            got[node]
                        );
                    }
                    // The fixture's node reboot matters: a plain non-negative difference
                    // would give another number.
                    assert!(want.values().all(|r| *r > 0.0));
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11, "every panel of both dashboards");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_annotation_query_returns_the_events_written_as_line_protocol() {
    let influx = InfluxDb1::start();
    influx.create_database(DB);
    let now = now_ns();
    let events = [
        ("gateway_started", "gateway 0.1.0 started (source: file)"),
        ("node_reboot", "node2 rebooted: ts went back to 10500"),
    ];
    let mut lines = String::new();
    for (i, (kind, text)) in events.iter().enumerate() {
        assert!(grafana::EVENT_KINDS.contains(kind));
        lines.push_str(&format!(
            "{},{}={kind} {}=\"{text}\" {}\n",
            grafana::EVENTS_MEASUREMENT,
            grafana::EVENT_KIND_TAG,
            grafana::EVENT_TEXT_FIELD,
            now - (60 - i as i64) * 1_000_000_000
        ));
    }
    write_lines(&influx, &lines).await;
    for d in DASHBOARDS {
        let json = dashboard(Flavor::InfluxQl, d);
        let anno = json["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["datasource"]["uid"] == grafana::INFLUXQL_DATASOURCE_UID)
            .expect("events annotation");
        assert_eq!(anno["enable"], true);
        let q = expand(anno["query"].as_str().expect("query"));
        assert_eq!(anno["target"]["query"], anno["query"]);
        let res = influx.query(DB, &q).await;
        let series = &res["results"][0]["series"];
        assert_eq!(series.as_array().map(Vec::len), Some(1), "{q}: {res}");
        let columns: Vec<&str> = series[0]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let text_col = columns
            .iter()
            .position(|c| *c == anno["textColumn"])
            .expect("text column");
        let tags_col = columns
            .iter()
            .position(|c| *c == anno["tagsColumn"])
            .expect("tags column");
        let rows: Vec<(String, String)> = series[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[tags_col].as_str().unwrap().to_string(),
                    r[text_col].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = events
            .iter()
            .map(|(k, t)| (k.to_string(), t.to_string()))
            .collect();
        assert_eq!(rows, want, "{q}");
    }
}

/// The rules of rules.yaml, each as JSON.
fn alert_rules() -> Vec<Value> {
    let doc = yaml(&provisioning().join("alerting/rules.yaml"));
    assert_eq!(doc["apiVersion"], 1);
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn alert_rules_are_complete_and_reference_provisioned_datasources() {
    let doc = yaml(&provisioning().join("alerting/rules.yaml"));
    assert_eq!(doc["apiVersion"], 1);
    let sources = yaml(&provisioning().join("datasources/influxdb.yaml"));
    let uids: BTreeSet<&str> = sources["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().expect("datasource uid"))
        .collect();
    for g in doc["groups"].as_array().expect("groups") {
        for key in ["name", "folder", "interval"] {
            assert!(g[key].is_string(), "group needs {key}: {g}");
        }
    }
    let rules = alert_rules();
    let mut seen = BTreeSet::new();
    for rule in &rules {
        let uid = rule["uid"].as_str().expect("uid");
        assert!(seen.insert(uid), "duplicate uid {uid}");
        for key in ["title", "condition", "for"] {
            assert!(rule[key].is_string(), "{uid}: needs {key}");
        }
        assert!(
            rule["labels"].as_object().is_some_and(|l| !l.is_empty()),
            "{uid}: needs labels"
        );
        let data = rule["data"].as_array().expect("data");
        let refs: BTreeSet<&str> = data.iter().map(|d| d["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), data.len(), "{uid}: refIds unique");
        assert!(
            refs.contains(rule["condition"].as_str().unwrap()),
            "{uid}: condition names a refId"
        );
        let mut queries = 0;
        for d in data {
            let ds = d["datasourceUid"].as_str().expect("datasourceUid");
            assert_eq!(d["model"]["refId"], d["refId"], "{uid}");
            if ds == "__expr__" {
                let expr = d["model"]["expression"].as_str().expect("expression");
                assert!(
                    refs.iter().any(|r| expr.contains(r)),
                    "{uid}: {expr} refers to no refId"
                );
            } else {
                assert!(
                    uids.contains(ds),
                    "{uid}: datasource {ds} is not provisioned"
                );
                assert!(d["model"]["query"].is_string(), "{uid}: query");
                assert!(d["relativeTimeRange"]["from"].as_u64() > Some(0), "{uid}");
                queries += 1;
            }
        }
        assert!(queries > 0, "{uid}: no datasource query");
    }
    // The four rules of the issue, with their thresholds and durations.
    let rule = |uid: &str| {
        rules
            .iter()
            .find(|r| r["uid"] == uid)
            .unwrap_or_else(|| panic!("rule {uid} missing"))
    };
    let threshold = |uid: &str| {
        let r = rule(uid);
        let cond = r["condition"].as_str().unwrap();
        let d = r["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["refId"] == cond)
            .unwrap();
        assert_eq!(d["model"]["type"], "threshold");
        d["model"]["conditions"][0]["evaluator"].clone()
    };
    assert_eq!(rule("iiot-temperature-high")["for"], "5m");
    assert_eq!(threshold("iiot-temperature-high")["type"], "gt");
    assert_eq!(threshold("iiot-temperature-high")["params"][0], 35);
    assert_eq!(rule("iiot-humidity-out-of-range")["for"], "10m");
    assert_eq!(
        threshold("iiot-humidity-out-of-range"),
        serde_json::json!({ "type": "outside_range", "params": [30, 70] })
    );
    assert!(rule("iiot-node-silent")["data"][0]["model"]["query"]
        .as_str()
        .unwrap()
        .contains("now() - 30s"));
    assert_eq!(threshold("iiot-node-silent")["type"], "lt");
    assert_eq!(threshold("iiot-packet-error-rate-high")["type"], "gt");
    assert_eq!(threshold("iiot-packet-error-rate-high")["params"][0], 15);
}

/// Runs the datasource queries of a rule (macros expanded); refId → series.
async fn rule_results(influx: &InfluxDb1, rule: &Value) -> BTreeMap<String, Vec<Series>> {
    let mut out = BTreeMap::new();
    for d in rule["data"].as_array().unwrap() {
        if d["datasourceUid"] == grafana::INFLUXQL_DATASOURCE_UID {
            let q = expand(d["model"]["query"].as_str().unwrap());
            out.insert(
                d["refId"].as_str().unwrap().to_string(),
                run(influx, &q).await,
            );
        }
    }
    out
}

/// Grafana's threshold evaluator on one reduced value.
fn fires(evaluator: &Value, v: f64) -> bool {
    let p = |i: usize| evaluator["params"][i].as_f64().unwrap();
    match evaluator["type"].as_str().unwrap() {
        "gt" => v > p(0),
        "lt" => v < p(0),
        "outside_range" => v < p(0) || v > p(1),
        "within_range" => v > p(0) && v < p(1),
        other => panic!("evaluator {other}"),
    }
}

/// Nodes for which a single-query rule (A → reduce last → threshold) fires.
async fn firing(influx: &InfluxDb1, rule: &Value) -> BTreeSet<String> {
    let results = rule_results(influx, rule).await;
    let series = &results["A"];
    assert!(!series.is_empty(), "{}: no series", rule["uid"]);
    let cond = rule["condition"].as_str().unwrap();
    let evaluator = rule["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["refId"] == cond)
        .unwrap()["model"]["conditions"][0]["evaluator"]
        .clone();
    series
        .iter()
        .filter(|s| fires(&evaluator, s.last_value().expect("a value")))
        .map(|s| s.node.clone().expect("per node"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rule_queries_run_on_influxdb_1x_and_only_silent_nodes_fire() {
    let filled = fill().await;
    let influx = &filled.influx;
    let rules = alert_rules();
    let rule = |uid: &str| rules.iter().find(|r| r["uid"] == uid).unwrap();
    let none = BTreeSet::new();
    let nodes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // The fixture is ~27 °C and 48–54 %: nothing fires.
    assert_eq!(firing(influx, rule("iiot-temperature-high")).await, none);
    assert_eq!(
        firing(influx, rule("iiot-humidity-out-of-range")).await,
        none
    );

    // The fixture ended minutes ago: both sensor nodes are silent. A reading of node1 now
    // silences its alert, node2 stays silent.
    let silent = rule("iiot-node-silent");
    assert_eq!(firing(influx, silent).await, nodes(&["node1", "node2"]));
    write_lines(
        influx,
        &format!(
            "temperature,node=node1,unit=celsius value=27.5 {}\n",
            now_ns()
        ),
    )
    .await;
    assert_eq!(firing(influx, silent).await, nodes(&["node2"]));

    // Packet error rate: the same queries as the panel, the same (reboot-aware) rate.
    let per = rule("iiot-packet-error-rate-high");
    let panel = DASHBOARDS
        .iter()
        .flat_map(|d| d.panels)
        .find(|p| p.compute == Compute::PacketErrorRate)
        .unwrap();
    let data = per["data"].as_array().unwrap();
    assert_eq!(
        data[0]["model"]["query"],
        grafana::influxql_increase(&panel.queries[0]),
        "rule and panel share the rx query"
    );
    assert_eq!(
        data[1]["model"]["query"],
        grafana::influxql_increase(&panel.queries[1]),
        "rule and panel share the err query"
    );
    let results = rule_results(influx, per).await;
    let got = rates(&results["A"], &results["B"]);
    let want = expected_error_rates(&filled.packets);
    for (node, rate) in &want {
        assert!(close(got[node], *rate), "{node}: {} vs {rate}", got[node]);
        assert!(*rate < 15.0, "the fixture's rate is low: no alert");
    }
}

// ---------------------------------------------------------------------------------------------
// Flux
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(&'static str),
}

/// Flux tokens; panics on a character Flux has no use for or an unterminated string.
fn tokenize(src: &str) -> Vec<Tok> {
    const OPS: [&str; 22] = [
        "|>", "=>", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", "[", "]",
        "{", "}", ",", ":", ".",
    ];
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => panic!("unterminated string in {src}"),
                    Some('"') => break,
                    Some('\\') => {
                        s.push(*chars.get(i + 1).expect("escape"));
                        i += 2;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c == '=' && chars.get(i + 1) != Some(&'=') && chars.get(i + 1) != Some(&'>') {
            out.push(Tok::Op("="));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .unwrap_or_else(|| panic!("unexpected {c:?} in {src}"));
            out.push(Tok::Op(op));
            i += op.len();
        }
    }
    out
}

/// What the gateway wrote: measurements, tag keys, field keys.
struct Schema {
    measurements: BTreeSet<String>,
    tags: BTreeSet<String>,
    fields: BTreeSet<String>,
}

/// Checks one Flux query's structure and names against `schema`; returns the measurements it
/// filters on.
fn check_flux(query: &str, schema: &Schema) -> BTreeSet<String> {
    const FUNCTIONS: [&str; 14] = [
        "from",
        "range",
        "filter",
        "aggregateWindow",
        "keep",
        "group",
        "sort",
        "duplicate",
        "difference",
        "map",
        "sum",
        "pivot",
        "union",
        "mean",
    ];
    const V_FIELDS: [&str; 5] = [
        "timeRangeStart",
        "timeRangeStop",
        "windowPeriod",
        "defaultBucket",
        "organization",
    ];
    let toks = tokenize(query);
    // Balanced brackets.
    let mut stack = Vec::new();
    for t in &toks {
        match t {
            Tok::Op(o @ ("(" | "[" | "{")) => stack.push(*o),
            Tok::Op(c @ (")" | "]" | "}")) => {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("unbalanced {c}: {query}"));
                assert!(
                    matches!((open, *c), ("(", ")") | ("[", "]") | ("{", "}")),
                    "mismatched {open}{c}: {query}"
                );
            }
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}: {query}");
    assert!(
        query.contains("range(start: v.timeRangeStart, stop: v.timeRangeStop)"),
        "every query honours the dashboard's time range: {query}"
    );
    // Columns a query may name: the data model's, the gateway's tags, columns it creates
    // (`as:`), and measurement names once pivoted into columns.
    let mut columns: BTreeSet<String> = [
        "_measurement",
        "_field",
        "_value",
        "_time",
        "_start",
        "_stop",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(schema.tags.iter().cloned())
    .collect();
    for w in toks.windows(3) {
        if let [Tok::Ident(a), Tok::Op(":"), Tok::Str(s)] = w {
            if a == "as" {
                columns.insert(s.clone());
            }
        }
    }
    if query.contains("columnKey: [\"_measurement\"]") {
        columns.extend(schema.measurements.iter().cloned());
    }
    let column = |name: &str| {
        assert!(
            columns.contains(name),
            "{name:?} is no column the gateway writes: {query}"
        )
    };
    let mut measurements = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i..] {
            [Tok::Op("|>"), next, ..] => {
                let Tok::Ident(f) = next else {
                    panic!("|> must be followed by a function: {query}")
                };
                assert!(
                    FUNCTIONS.contains(&f.as_str()),
                    "unknown function {f}: {query}"
                );
                assert_eq!(toks.get(i + 2), Some(&Tok::Op("(")), "{query}");
            }
            [Tok::Ident(v), Tok::Op("."), Tok::Ident(f), ..] if v == "v" => {
                assert!(V_FIELDS.contains(&f.as_str()), "v.{f}: {query}");
                i += 2;
            }
            [Tok::Ident(r), Tok::Op("."), Tok::Ident(c), rest @ ..] if r == "r" => {
                column(c);
                if let [Tok::Op("=="), Tok::Str(value), ..] = rest {
                    match c.as_str() {
                        "_measurement" => {
                            assert!(
                                schema.measurements.contains(value),
                                "measurement {value:?} is not written by the gateway: {query}"
                            );
                            measurements.insert(value.clone());
                        }
                        "_field" => assert!(
                            schema.fields.contains(value),
                            "field {value:?} is not written by the gateway: {query}"
                        ),
                        tag => assert!(schema.tags.contains(tag), "tag {tag}: {query}"),
                    }
                }
                i += 2;
            }
            [Tok::Ident(r), Tok::Op("["), Tok::Str(c), Tok::Op("]"), ..] if r == "r" => {
                column(c);
                i += 3;
            }
            [Tok::Ident(k), Tok::Op(":"), Tok::Op("["), ..]
                if matches!(k.as_str(), "columns" | "rowKey" | "columnKey") =>
            {
                let mut j = i + 3;
                while let Some(Tok::Str(c)) = toks.get(j) {
                    column(c);
                    j += 1;
                    if toks.get(j) == Some(&Tok::Op(",")) {
                        j += 1;
                    }
                }
                assert_eq!(toks.get(j), Some(&Tok::Op("]")), "{query}");
                i = j;
            }
            [Tok::Ident(k), Tok::Op(":"), Tok::Str(c), ..]
                if matches!(k.as_str(), "column" | "valueColumn") =>
            {
                column(c);
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    assert!(
        !measurements.is_empty(),
        "filters on no measurement: {query}"
    );
    measurements
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_queries_name_only_measurements_tags_and_fields_the_gateway_writes() {
    let filled = fill().await;
    // The events the dashboards annotate come from the gateway's own run (gateway started
    // and stopped), in the documented schema.
    let points = filled.influx.all_points(DB).await;
    assert!(
        points
            .iter()
            .any(|p| p.measurement == grafana::EVENTS_MEASUREMENT),
        "the gateway wrote no events"
    );
    let mut measurements: BTreeSet<String> = points.iter().map(|p| p.measurement.clone()).collect();
    // Written only by the rylr998 source (its link counters), not by the Node 2 lines filled
    // here: tests/system/radio.rs finds it in InfluxDB with the other radio readings.
    measurements.insert("frames_rejected".into());
    let schema = Schema {
        measurements,
        tags: points.iter().flat_map(|p| p.tags.keys().cloned()).collect(),
        fields: points.iter().map(|p| p.field.clone()).collect(),
    };
    assert!(schema.tags.contains(grafana::NODE_TAG), "{:?}", schema.tags);

    let mut named = BTreeSet::new();
    for d in DASHBOARDS {
        let json = dashboard(Flavor::Flux, d);
        for panel in d.panels {
            let pj = panel_json(&json, panel);
            let mut in_panel = BTreeSet::new();
            for t in pj["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], grafana::FLUX_DATASOURCE_UID);
                in_panel.extend(check_flux(t["query"].as_str().expect("query"), &schema));
            }
            let want: BTreeSet<String> = panel
                .queries
                .iter()
                .map(|q| q.measurement.to_string())
                .collect();
            assert_eq!(in_panel, want, "{}", panel.title);
            named.extend(in_panel);
        }
        let anno = json["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["datasource"]["uid"] == grafana::FLUX_DATASOURCE_UID)
            .expect("events annotation");
        let events = check_flux(anno["target"]["query"].as_str().unwrap(), &schema);
        assert_eq!(
            events,
            BTreeSet::from([grafana::EVENTS_MEASUREMENT.to_string()])
        );
    }
    let every: BTreeSet<String> = DASHBOARDS
        .iter()
        .flat_map(|d| d.panels)
        .flat_map(|p| p.queries)
        .map(|q| q.measurement.to_string())
        .collect();
    assert_eq!(named, every, "every panel measurement is queried");

    // The checker itself rejects what the gateway does not write.
    let bad = std::panic::catch_unwind(|| {
        check_flux(
            "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n  |> filter(fn: (r) => r._measurement == \"temperature\" and r._field == \"val\")",
            &schema,
        )
    });
    assert!(bad.is_err(), "a misspelt field must be caught");
}
