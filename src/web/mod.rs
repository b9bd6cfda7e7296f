//! The HTTP server: a first live page listing the newest value of every topic, the JSON
//! API behind it, and a liveness endpoint. Binds 127.0.0.1:8080 by default.
//!
//! - `GET /` – the page (plain HTML + a few lines of JS polling `/api/latest`).
//! - `GET /api/latest` – `[{"node","metric","unit","value","ts"}]`, `ts` in ns.
//! - `GET /api/status` – counters and each sink's state (no secrets: none are held here).
//! - `GET /healthz` – 200 while the process runs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::stats::{Latest, Stats};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the dashboard: {cause} (port taken? change [http] listen or --http-listen)")]
pub struct WebError {
    addr: SocketAddr,
    cause: std::io::Error,
}

#[derive(Clone)]
struct AppState {
    latest: Latest,
    stats: Arc<Stats>,
    topic_prefix: Option<String>,
}

/// A bound, not yet serving, HTTP server.
pub struct WebServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl WebServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        latest: Latest,
        stats: Arc<Stats>,
        topic_prefix: Option<String>,
    ) -> Result<WebServer, WebError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| WebError { addr, cause })?;
        let state = AppState {
            latest,
            stats,
            topic_prefix,
        };
        let router = Router::new()
            .route("/", get(page))
            .route("/api/latest", get(api_latest))
            .route("/api/status", get(api_status))
            .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
            .with_state(state);
        Ok(WebServer { listener, router })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `token` is cancelled.
    pub async fn serve(self, token: CancellationToken) {
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "http server failed");
        }
    }
}

async fn api_latest(State(state): State<AppState>) -> impl IntoResponse {
    let rows: Vec<Value> = state
        .latest
        .snapshot()
        .into_iter()
        .map(|r| {
            let topic = state
                .topic_prefix
                .as_deref()
                .map(|p| crate::sink::topic::reading_topic(p, &r.node, &r.metric));
            json!({"node": r.node, "metric": r.metric, "unit": r.unit, "value": r.value, "ts": r.ts_ns, "topic": topic})
        })
        .collect();
    Json(rows)
}

async fn api_status(State(state): State<AppState>) -> impl IntoResponse {
    let s = &state.stats;
    let sinks: serde_json::Map<String, Value> = s
        .sinks
        .read()
        .map(|sinks| {
            sinks
                .iter()
                .map(|(name, st)| {
                    let error = st.last_error.lock().ok().and_then(|e| e.clone());
                    (
                        name.to_string(),
                        json!({
                            "connected": st.connected.load(Ordering::Relaxed),
                            "delivered": st.delivered.load(Ordering::Relaxed),
                            "cursor": st.cursor.load(Ordering::Relaxed),
                            "last_error": error,
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Json(json!({
        "lines": s.lines.load(Ordering::Relaxed),
        "packets": s.packets.load(Ordering::Relaxed),
        "readings": s.readings.load(Ordering::Relaxed),
        "invalid_lines": s.invalid_lines.load(Ordering::Relaxed),
        "rejected_fields": s.rejected_fields.load(Ordering::Relaxed),
        "cut_lines": s.cut_lines.load(Ordering::Relaxed),
        "dropped_readings": s.dropped_readings.load(Ordering::Relaxed),
        "sinks": sinks,
    }))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("latest.html"))
}
