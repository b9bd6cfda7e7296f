//! `GET /api/dashboards`: the panel definitions of [`crate::dashboards::panels::DASHBOARDS`] as JSON, so
//! the page builds every panel from them and none is written into the HTML or the script.

use serde_json::{json, Value};

use crate::dashboards::panels::{Compute, Dashboard, Kind, Nodes, Panel, Step, DASHBOARDS};

/// The JSON node value of a query: the node's name, or `"*"` for every node that reports.
pub(crate) fn node_param(nodes: Nodes) -> &'static str {
    match nodes {
        Nodes::One(node) => node,
        Nodes::All => "*",
    }
}

fn step_json(s: &Step) -> Value {
    json!({"from": s.from, "color": s.color})
}

fn panel_json(p: &Panel) -> Value {
    json!({
        "id": p.id,
        "title": p.title,
        "kind": match p.kind {
            Kind::Stat => "stat",
            Kind::TimeSeries => "timeseries",
        },
        "compute": match p.compute {
            Compute::Values => "values",
            Compute::PacketErrorRate => "packet_error_rate",
        },
        "unit": p.unit,
        "queries": p.queries.iter().map(|q| json!({
            "measurement": q.measurement,
            "node": node_param(q.nodes),
        })).collect::<Vec<_>>(),
        "steps": p.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn dashboard_json(d: &Dashboard) -> Value {
    json!({
        "uid": d.uid,
        "title": d.title,
        "panels": d.panels.iter().map(panel_json).collect::<Vec<_>>(),
    })
}

/// Every dashboard, in menu order.
pub(crate) fn dashboards_json() -> Value {
    Value::Array(DASHBOARDS.iter().map(dashboard_json).collect())
}

/// The panel with this id, on any dashboard.
pub(crate) fn find_panel(id: u32) -> Option<&'static Panel> {
    DASHBOARDS
        .iter()
        .flat_map(|d| d.panels.iter())
        .find(|p| p.id == id)
}

/// Whether `uid` names a dashboard.
pub(crate) fn is_dashboard(uid: &str) -> bool {
    DASHBOARDS.iter().any(|d| d.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboards_json_carries_all_eleven_panels_with_queries_units_and_steps() {
        let v = dashboards_json();
        let dashboards = v.as_array().unwrap();
        assert_eq!(dashboards.len(), 2);
        assert_eq!(dashboards[0]["uid"], "iiot-environment");
        assert_eq!(dashboards[1]["title"], "Signal quality & statistics");
        let panels: Vec<&Value> = dashboards
            .iter()
            .flat_map(|d| d["panels"].as_array().unwrap())
            .collect();
        assert_eq!(panels.len(), 11);
        let first = panels[0];
        assert_eq!(first["kind"], "stat");
        assert_eq!(first["unit"], "celsius");
        assert_eq!(
            first["queries"],
            json!([{"measurement": "temperature", "node": "node1"}])
        );
        assert_eq!(
            first["steps"],
            json!([
                {"from": null, "color": "green"},
                {"from": 30.0, "color": "yellow"},
                {"from": 35.0, "color": "red"}
            ])
        );
        let per = panels.iter().find(|p| p["id"] == 14).unwrap();
        assert_eq!(per["compute"], "packet_error_rate");
        assert_eq!(per["queries"][1]["node"], "*");
        assert_eq!(panels.iter().filter(|p| p["kind"] == "stat").count(), 5);
    }

    #[test]
    fn panels_and_dashboards_are_found_by_id_and_uid() {
        assert_eq!(find_panel(12).map(|p| p.title), Some("SNR"));
        assert!(find_panel(99).is_none());
        assert!(is_dashboard("iiot-signal"));
        assert!(!is_dashboard("../etc"));
    }
}
