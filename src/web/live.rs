//! `GET /api/stream`: the live feed of the dashboard as Server-Sent Events.
//!
//! Each browser gets its own task that forwards what the ingest thread broadcasts right after
//! each commit ([`crate::live_view::LiveView::subscribe`]) into a small per-browser queue. Nothing
//! here can slow ingest: the broadcast never waits, a browser that falls
//! [`crate::live_view::LIVE_CHANNEL_CAPACITY`] batches behind loses the oldest and gets a
//! `resync` event instead (the page re-reads the history), and a full per-browser queue only
//! holds that browser's task. Events:
//!
//! - `readings`: `[{"node","metric","unit","value","ts","seq","topic"}]`, one per committed batch;
//! - `nodes`: the `nodes` array of `/api/nodes`, at connect and whenever a state changed;
//! - `resync`: `{"missed_batches": n}` (or `{"too_large": n}`): read everything again.
//!
//! The task ends when the browser goes away or the server shuts down, which ends the stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};

use super::{nodes, reading_json, AppState};
use crate::live_view::LiveBatch;
use crate::reading::now_ns;

/// Events queued for one browser. Full: that browser's task waits (and may lag), nobody else.
const CLIENT_QUEUE: usize = 16;
/// How often node states are re-evaluated; a `nodes` event goes out when one changed.
const NODES_EVERY: Duration = Duration::from_secs(1);

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

pub(super) async fn api_stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut feed = state.latest.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(NODES_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last_nodes = Value::Null;
        loop {
            let next = tokio::select! {
                () = state.live_stop.cancelled() => break,
                () = tx.closed() => break,
                got = feed.recv() => match got {
                    Ok(LiveBatch::TooLarge(n)) => event("resync", &json!({"too_large": n})),
                    Ok(LiveBatch::Readings(batch)) => {
                        let prefix = state.topic_prefix.as_deref();
                        let rows: Vec<Value> = batch.iter().map(|r| reading_json(r, prefix)).collect();
                        event("readings", &Value::Array(rows))
                    }
                    Err(RecvError::Lagged(missed)) => event("resync", &json!({"missed_batches": missed})),
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let nodes = nodes::current(&state.latest, state.downlink.get(), now_ns());
                    if nodes == last_nodes {
                        continue;
                    }
                    last_nodes = nodes;
                    event("nodes", &last_nodes)
                }
            };
            if tx.send(next).await.is_err() {
                break;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default())
}
