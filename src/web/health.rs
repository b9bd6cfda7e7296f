//! `GET /healthz` and `GET /readyz`: the gateway's state per component, as JSON for people
//! and scripts (load balancers, systemd watchdogs, Kubernetes probes).
//!
//! - `/healthz` is liveness: 200 whenever the process answers, with the same document.
//! - `/readyz` is readiness: 200 only while the source runs and every enabled sink is
//!   connected with a backlog whose oldest undelivered reading is younger than
//!   `[http] ready_max_backlog_age`; otherwise 503, and `failing` names the components that
//!   fail and `problems` says why.
//!
//! The state is read on request, never per reading: the counters of [`Stats`], and each
//! sink's backlog from the outbox (two index lookups per sink, `outbox::backlog`). The
//! decision itself is the pure function [`readiness`]. Nothing here holds a secret: sink
//! errors are the messages the sinks log, which never contain one.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::reading::now_ns;
use crate::self_stats::{snapshot, Snapshot};

/// Why one component is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// `source` or the sink's name.
    pub component: String,
    pub reason: String,
}

/// The readiness decision: empty when ready. `now` in ns.
pub(super) fn readiness(s: &Snapshot, max_backlog_age: Duration, now: i64) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut fail = |component: &str, reason: String| {
        problems.push(Problem {
            component: component.to_string(),
            reason,
        });
    };
    if !s.source_running {
        fail("source", "the source is not running".into());
    } else if let Some(problem) = &s.source_problem {
        fail("source", problem.clone());
    }
    let max_age = max_backlog_age.as_secs_f64();
    for sink in &s.sinks {
        if !sink.connected {
            let why = sink.last_error.as_deref().unwrap_or("not connected yet");
            fail(sink.name, format!("not connected: {why}"));
        }
        if let Some(error) = &sink.backlog_error {
            fail(sink.name, format!("cannot read its backlog: {error}"));
        }
        if let Some(age) = sink.oldest_age_seconds(now) {
            if age >= max_age {
                let readings = sink.backlog.map_or(0, |b| b.readings);
                fail(
                    sink.name,
                    format!(
                        "oldest undelivered reading is {age:.0}s old (limit {max_age:.0}s, {readings} readings waiting)"
                    ),
                );
            }
        }
    }
    problems
}

/// The JSON document of both endpoints.
fn document(
    status: &str,
    s: &Snapshot,
    problems: &[Problem],
    max_backlog_age: Duration,
    now: i64,
) -> Value {
    let mut failing: Vec<&str> = problems.iter().map(|p| p.component.as_str()).collect();
    failing.dedup();
    let sinks: Map<String, Value> = s
        .sinks
        .iter()
        .map(|k| {
            (
                k.name.to_string(),
                json!({
                    "connected": k.connected,
                    "endpoint": k.endpoint,
                    "backlog_readings": k.backlog.map(|b| b.readings),
                    "oldest_undelivered_age_seconds": k.oldest_age_seconds(now),
                    "last_error": k.last_error.as_ref().or(k.backlog_error.as_ref()),
                    "last_success": k.last_success_ns,
                    "delivered": k.delivered,
                }),
            )
        })
        .collect();
    json!({
        "status": status,
        "ready": problems.is_empty(),
        "failing": failing,
        "problems": problems
            .iter()
            .map(|p| format!("{}: {}", p.component, p.reason))
            .collect::<Vec<_>>(),
        "now": now,
        "ready_max_backlog_age_seconds": max_backlog_age.as_secs_f64(),
        // Running means able to deliver: a source that reports a problem does not run.
        "source": {
            "kind": s.source_kind,
            "running": s.source_running && s.source_problem.is_none(),
            "problem": s.source_problem,
        },
        "sinks": sinks,
    })
}

/// Snapshot, decision and document, off the async threads.
async fn evaluate(state: &AppState) -> Result<(Vec<Problem>, Value, Value), Response> {
    let stats = state.stats.clone();
    let history = state.history.clone();
    let max_age = state.ready_max_backlog_age;
    tokio::task::spawn_blocking(move || {
        let now = now_ns();
        let snap = snapshot(&stats, &history);
        let problems = readiness(&snap, max_age, now);
        let ready = if problems.is_empty() {
            "ready"
        } else {
            "not ready"
        };
        (
            problems.clone(),
            document(ready, &snap, &problems, max_age, now),
            document("ok", &snap, &problems, max_age, now),
        )
    })
    .await
    .map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("reading the state failed: {e}")})),
        )
            .into_response()
    })
}

/// `GET /healthz`: 200 while the process answers.
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    match evaluate(&state).await {
        Ok((_, _, alive)) => Json(alive).into_response(),
        // Still alive: the process answered.
        Err(_) => Json(json!({"status": "ok"})).into_response(),
    }
}

/// `GET /readyz`: 200 when ready, else 503 naming what fails.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match evaluate(&state).await {
        Ok((problems, ready, _)) if problems.is_empty() => Json(ready).into_response(),
        Ok((_, not_ready, _)) => (StatusCode::SERVICE_UNAVAILABLE, Json(not_ready)).into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Backlog;
    use crate::self_stats::SinkSnapshot;

    const NOW: i64 = 1_764_230_400_000_000_000;
    const SECOND: i64 = 1_000_000_000;

    fn sink(name: &'static str) -> SinkSnapshot {
        SinkSnapshot {
            name,
            connected: true,
            backlog: Some(Backlog::default()),
            backlog_error: None,
            last_error: None,
            endpoint: None,
            last_success_ns: Some(NOW - SECOND),
            delivered: 10,
            ..SinkSnapshot::default()
        }
    }

    fn healthy() -> Snapshot {
        Snapshot {
            source_kind: Some("stdin".into()),
            source_running: true,
            source_problem: None,
            sinks: vec![sink("influxdb"), sink("mqtt")],
            ..Snapshot::default()
        }
    }

    fn components(s: &Snapshot) -> Vec<String> {
        readiness(s, Duration::from_secs(60), NOW)
            .into_iter()
            .map(|p| p.component)
            .collect()
    }

    #[test]
    fn ready_when_the_source_runs_and_every_sink_is_connected_and_current() {
        let mut s = healthy();
        assert!(components(&s).is_empty());
        // A young backlog is normal operation.
        s.sinks[1].backlog = Some(Backlog {
            readings: 500,
            oldest_ns: Some(NOW - 59 * SECOND),
        });
        assert!(components(&s).is_empty());
        // No sinks at all: the source decides.
        s.sinks.clear();
        assert!(components(&s).is_empty());
    }

    #[test]
    fn not_ready_names_each_failing_component_and_why() {
        let mut s = healthy();
        s.source_running = false;
        assert_eq!(components(&s), ["source"]);

        // A running source that says it cannot deliver (a modem that does not answer).
        let mut s = healthy();
        s.source_problem = Some("no answer to AT within 1s".into());
        let problems = readiness(&s, Duration::from_secs(60), NOW);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].component, "source");
        assert_eq!(problems[0].reason, "no answer to AT within 1s");

        let mut s = healthy();
        s.sinks[1].connected = false;
        s.sinks[1].last_error =
            Some("connection refused: Connection refused (os error 111)".into());
        let problems = readiness(&s, Duration::from_secs(60), NOW);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].component, "mqtt");
        assert!(
            problems[0].reason.contains("connection refused"),
            "{problems:?}"
        );

        let mut s = healthy();
        s.sinks[0].backlog = Some(Backlog {
            readings: 42,
            oldest_ns: Some(NOW - 61 * SECOND),
        });
        let problems = readiness(&s, Duration::from_secs(60), NOW);
        assert_eq!(problems[0].component, "influxdb");
        assert!(problems[0].reason.contains("61s old"), "{problems:?}");
        assert!(problems[0].reason.contains("42 readings"), "{problems:?}");

        let mut s = healthy();
        s.sinks[0].backlog = None;
        s.sinks[0].backlog_error = Some("database is locked".into());
        assert_eq!(components(&s), ["influxdb"]);
    }

    #[test]
    fn the_document_shows_every_component_and_the_failing_ones() {
        let mut s = healthy();
        s.sinks[1].connected = false;
        s.sinks[1].last_error = Some("timeout: no answer".into());
        s.sinks[1].backlog = Some(Backlog {
            readings: 3,
            oldest_ns: Some(NOW - 2 * SECOND),
        });
        let problems = readiness(&s, Duration::from_secs(60), NOW);
        let doc = document("not ready", &s, &problems, Duration::from_secs(60), NOW);
        assert_eq!(doc["ready"], false);
        assert_eq!(doc["failing"], json!(["mqtt"]));
        assert_eq!(
            doc["source"],
            json!({"kind": "stdin", "running": true, "problem": null})
        );
        let mqtt = &doc["sinks"]["mqtt"];
        assert_eq!(mqtt["connected"], false);
        assert_eq!(mqtt["backlog_readings"], 3);
        assert_eq!(mqtt["oldest_undelivered_age_seconds"], 2.0);
        assert_eq!(mqtt["last_error"], "timeout: no answer");
        assert_eq!(mqtt["last_success"], NOW - SECOND);
        assert_eq!(
            doc["sinks"]["influxdb"]["oldest_undelivered_age_seconds"],
            Value::Null
        );
        assert_eq!(doc["ready_max_backlog_age_seconds"], 60.0);
    }
}
