//! The HTTP server: the built-in live dashboard, the JSON API behind it, and a liveness
//! endpoint. Binds 127.0.0.1:8080 by default. Everything the page needs is inside the binary
//! (uPlot included): it works with no network. The API is documented in `docs/API.md`.
//!
//! - `GET /`, `GET /d/{uid}` – a dashboard of [`crate::dashboards::panels::DASHBOARDS`] (`/` = the first).
//!   The page gets the panel definitions from `/api/dashboards` and builds every panel.
//! - `GET /latest` – a plain table of the newest value of every series.
//! - `GET /assets/{file}` – the page's script and style, uPlot and its licence.
//! - `GET /api/dashboards` – the panel definitions ([`dashboards`]).
//! - `GET /api/latest` – `[{"node","metric","unit","value","ts","seq","topic"}]`, `ts` in ns.
//! - `GET /api/series` – one measurement's history, downsampled in SQL ([`series`]).
//! - `GET /api/stat` – what a stat panel shows, computed from its definition ([`series`]).
//! - `GET /api/nodes` – every node that reports, online or offline ([`nodes`]).
//! - `POST`/`GET /api/nodes/{node}/commands` – commands to a node and their states
//!   ([`commands`]; sending needs the token).
//! - `GET /api/stream` – Server-Sent Events fed right after each outbox commit ([`live`]).
//! - `GET /api/status` – counters and each sink's state (no secrets: none are held here).
//! - `GET /healthz` – 200 while the process runs, with each component's state ([`health`]).
//! - `GET /readyz` – 200 when source and sinks are up and current, else 503 ([`health`]).
//! - `GET /metrics` – Prometheus text exposition ([`metrics`]).

mod assets;
mod auth;
mod commands;
mod health;
mod live;
pub mod metrics;
mod nodes;
mod series;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::live_view::{LiveView, PACKET_TIMES_PER_NODE};
use crate::outbox::OutboxReader;
use crate::outbox::StoredReading;
use crate::reading::now_ns;
use crate::self_stats::{Snapshot, Stats};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the dashboard: {cause} (port taken? change [http] listen or --http-listen)")]
pub struct WebError {
    addr: SocketAddr,
    cause: std::io::Error,
}

#[derive(Clone)]
struct AppState {
    latest: LiveView,
    stats: Arc<Stats>,
    topic_prefix: Option<String>,
    /// The history (its own read connection; queries run on blocking threads).
    history: Arc<OutboxReader>,
    /// `/readyz` fails when a sink's oldest undelivered reading is older.
    ready_max_backlog_age: Duration,
    /// Cancelled when the server shuts down: ends the live streams, which would otherwise
    /// keep their connections (and the graceful shutdown) open forever.
    live_stop: CancellationToken,
    /// The command queue, once the outbox's writer runs.
    downlink: Arc<std::sync::OnceLock<crate::downlink::Downlink>>,
    /// A token is configured: only then may commands be sent.
    commands_allowed: bool,
}

/// A bound, not yet serving, HTTP server.
pub struct WebServer {
    listener: tokio::net::TcpListener,
    router: Router,
    live_stop: CancellationToken,
    stats: Arc<Stats>,
}

impl WebServer {
    /// Binds `addr` (port 0 picks a free port). `history` is a read connection of the
    /// outbox; each node's recent packet times are read from it now, so online/offline and
    /// reporting intervals are right from the first page load after a restart. Enables the
    /// `/metrics` registry in `stats` (bind before registering sinks).
    pub async fn bind(
        http: &HttpConfig,
        latest: LiveView,
        stats: Arc<Stats>,
        topic_prefix: Option<String>,
        history: OutboxReader,
        downlink: Arc<std::sync::OnceLock<crate::downlink::Downlink>>,
    ) -> Result<WebServer, WebError> {
        let addr = http.listen;
        let ready_max_backlog_age = http.ready_max_backlog_age;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| WebError { addr, cause })?;
        seed_node_times(&latest, &history);
        metrics::enable(&stats.metrics);
        let state = AppState {
            latest,
            stats,
            topic_prefix,
            history: Arc::new(history),
            ready_max_backlog_age,
            live_stop: CancellationToken::new(),
            downlink,
            commands_allowed: http.token.is_some(),
        };
        let router = Router::new()
            .route("/", get(first_dashboard))
            .route("/d/{uid}", get(dashboard))
            .route("/latest", get(|| async { Html(assets::LATEST_HTML) }))
            .route("/assets/{file}", get(assets::asset))
            .route(
                "/api/dashboards",
                get(|| async { Json(crate::dashboards::page::dashboards_json()) }),
            )
            .route("/api/latest", get(api_latest))
            .route("/api/series", get(series::api_series))
            .route("/api/stat", get(series::api_stat))
            .route("/api/nodes", get(api_nodes))
            .route(
                "/api/nodes/{node}/commands",
                get(commands::list).post(commands::post),
            )
            .route("/api/stream", get(live::api_stream))
            .route("/api/status", get(api_status))
            .route("/metrics", get(metrics::api_metrics));
        let router = match &http.token {
            // Everything above needs the token; /metrics only when asked.
            Some(token) => {
                let guard = auth::Guard::new(token, http.protect_metrics);
                router.layer(axum::middleware::from_fn_with_state(guard, auth::require))
            }
            None => router,
        }
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state.clone());
        Ok(WebServer {
            listener,
            router,
            live_stop: state.live_stop,
            stats: state.stats,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `token` is cancelled; the `/metrics` registry's upkeep runs alongside.
    pub async fn serve(self, token: CancellationToken) {
        let live_stop = self.live_stop;
        let upkeep = metrics::upkeep(self.stats, token.clone());
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            token.cancelled().await;
            live_stop.cancel();
        });
        let (result, ()) = tokio::join!(std::future::IntoFuture::into_future(server), upkeep);
        if let Err(error) = result {
            tracing::error!(%error, "http server failed");
        }
    }
}

/// Reads each node's recent packet times from the history into `latest` (start-up).
fn seed_node_times(latest: &LiveView, history: &OutboxReader) {
    for r in latest.snapshot() {
        match history.recent_times(&r.node, &r.metric, PACKET_TIMES_PER_NODE) {
            Ok(times) => latest.seed_times(&r.node, &times),
            Err(error) => {
                tracing::warn!(%error, "reading recent packet times failed");
                return;
            }
        }
    }
}

/// One reading as `/api/latest` and the live stream show it.
fn reading_json(r: &StoredReading, topic_prefix: Option<&str>) -> Value {
    let topic = topic_prefix.map(|p| crate::mqtt::topic::reading_topic(p, &r.node, &r.metric));
    json!({
        "node": r.node,
        "metric": r.metric,
        "unit": r.unit,
        "value": r.value,
        "ts": r.ts_ns,
        "seq": r.seq,
        "topic": topic,
    })
}

async fn api_latest(State(state): State<AppState>) -> impl IntoResponse {
    let prefix = state.topic_prefix.as_deref();
    let rows: Vec<Value> = state
        .latest
        .snapshot()
        .iter()
        .map(|r| reading_json(r, prefix))
        .collect();
    Json(rows)
}

async fn api_nodes(State(state): State<AppState>) -> impl IntoResponse {
    let now = now_ns();
    Json(json!({
        "now": now,
        "offline_after_intervals": crate::nodes::liveness::OFFLINE_AFTER_INTERVALS,
        "nodes": nodes::current(&state.latest, state.downlink.get(), now),
    }))
}

async fn api_status(State(state): State<AppState>) -> Response {
    let stats = state.stats.clone();
    let history = state.history.clone();
    match tokio::task::spawn_blocking(move || {
        status(&crate::self_stats::snapshot(&stats, &history))
    })
    .await
    {
        Ok(doc) => Json(doc).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the status failed: {error}\n"),
        )
            .into_response(),
    }
}

/// The `/api/status` document of one snapshot.
fn status(s: &Snapshot) -> Value {
    let sinks: serde_json::Map<String, Value> = s
        .sinks
        .iter()
        .map(|sink| {
            (
                sink.name.to_string(),
                json!({
                    "connected": sink.connected,
                    "endpoint": sink.endpoint,
                    "delivered": sink.delivered,
                    "delivered_events": sink.delivered_events,
                    "cursor": sink.cursor,
                    "last_error": sink.last_error,
                }),
            )
        })
        .collect();
    let c = &s.counts;
    json!({
        "lines": c.lines,
        "packets": c.packets,
        "readings": c.readings,
        "invalid_lines": c.invalid_lines,
        "rejected_fields": c.rejected_fields,
        "cut_lines": c.cut_lines,
        "dropped_readings": c.dropped_readings,
        "sinks": sinks,
    })
}

async fn first_dashboard() -> Html<&'static str> {
    Html(assets::DASHBOARD_HTML)
}

async fn dashboard(Path(uid): Path<String>) -> Response {
    if crate::dashboards::page::is_dashboard(&uid) {
        Html(assets::DASHBOARD_HTML).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such dashboard\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::Outbox;

    fn reading(seq: i64, value: &str) -> StoredReading {
        StoredReading {
            seq: crate::outbox::Seq::new(seq),
            ts_ns: now_ns(),
            node: "node1".into(),
            metric: "temperature".into(),
            unit: Some("celsius".into()),
            value: value.into(),
            origin: None,
        }
    }

    async fn server(dir: &std::path::Path, latest: LiveView) -> (String, CancellationToken) {
        let outbox = Outbox::open(&crate::outbox::test_storage(dir)).unwrap();
        let http = HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ready_max_backlog_age: Duration::from_secs(60),
            token: None,
            protect_metrics: false,
        };
        let server = WebServer::bind(
            &http,
            latest,
            Arc::default(),
            Some("iiot".into()),
            outbox.reader().unwrap(),
            Arc::default(),
        )
        .await
        .unwrap();
        let url = format!("http://{}", server.local_addr().unwrap());
        let token = CancellationToken::new();
        tokio::spawn(server.serve(token.clone()));
        (url, token)
    }

    #[tokio::test]
    async fn the_stream_pushes_committed_readings_and_ends_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let latest = LiveView::default();
        let (url, token) = server(dir.path(), latest.clone()).await;
        let client = reqwest::Client::new();
        let mut stream = client
            .get(format!("{url}/api/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            stream.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        // Subscribed once the response started; now a commit reaches the browser.
        tokio::time::timeout(Duration::from_secs(5), async {
            while latest.subscribers() < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        latest.update(&[reading(7, "27.6")]);
        let mut seen = String::new();
        while !seen.contains("event: readings") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.contains(r#""value":"27.6""#), "{seen}");
        assert!(
            seen.contains(r#""topic":"iiot/node1/temperature""#),
            "{seen}"
        );
        // An open stream does not hold the server up at shutdown.
        token.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = stream.chunk().await {}
        })
        .await;
        assert!(end.is_ok(), "the stream ends when the server shuts down");
    }

    #[tokio::test]
    async fn pages_and_assets_are_served_with_their_content_types() {
        let dir = tempfile::tempdir().unwrap();
        let (url, token) = server(dir.path(), LiveView::default()).await;
        let client = reqwest::Client::new();
        for (path, status, content_type) in [
            ("/", 200, "text/html; charset=utf-8"),
            ("/d/iiot-signal", 200, "text/html; charset=utf-8"),
            ("/d/nope", 404, "text/plain; charset=utf-8"),
            (
                "/assets/uPlot.iife.min.js",
                200,
                "text/javascript; charset=utf-8",
            ),
            ("/assets/uPlot.min.css", 200, "text/css; charset=utf-8"),
            (
                "/assets/dashboard.js",
                200,
                "text/javascript; charset=utf-8",
            ),
            ("/api/dashboards", 200, "application/json"),
            ("/api/nodes", 200, "application/json"),
            (
                "/api/series?measurement=temperature&range=7d",
                200,
                "application/json",
            ),
            (
                "/api/series?measurement=temperature&range=2h",
                400,
                "application/json",
            ),
            ("/api/stat?panel=14", 200, "application/json"),
            ("/api/stat?panel=5", 404, "application/json"),
            ("/healthz", 200, "application/json"),
            // No source runs in this test server.
            ("/readyz", 503, "application/json"),
            ("/metrics", 200, "text/plain; version=0.0.4; charset=utf-8"),
        ] {
            let resp = client.get(format!("{url}{path}")).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{path}");
            assert_eq!(
                resp.headers()["content-type"].to_str().unwrap(),
                content_type,
                "{path}"
            );
        }
        token.cancel();
    }
}
