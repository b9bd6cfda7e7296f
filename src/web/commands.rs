//! `POST /api/nodes/{node}/commands` and `GET /api/nodes/{node}/commands` (`docs/API.md`,
//! "Commands"): a command for a node, committed before the answer, and the node's commands
//! with their states. Sending needs `[http] token`: without one configured the POST is
//! refused (403), with one a request without it gets 401 (the auth layer).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::downlink::{row_json, SubmitError};

/// Commands listed per node at most (the newest).
const LIST_LIMIT: usize = 100;

/// `POST /api/nodes/{node}/commands`: 202 with the state `queued` (stored now), 200 with the
/// command stored before under the same id, 422 with the state `rejected` and why, 400 for
/// what is not a command request, 403 without `[http] token`, 503 while the outbox cannot
/// store it.
pub(super) async fn post(
    State(state): State<AppState>,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    if !state.commands_allowed {
        return error(
            StatusCode::FORBIDDEN,
            "sending commands needs a token: set [http] token (or HTTP_TOKEN) and send Authorization: Bearer <token>",
        );
    }
    let Some(downlink) = state.downlink.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is starting; try again",
        );
    };
    match downlink.submit(&node, &body).await {
        Ok(submitted) => {
            let status = match (submitted.new, submitted.row.state.as_str()) {
                (_, "rejected") => StatusCode::UNPROCESSABLE_ENTITY,
                (true, _) => StatusCode::ACCEPTED,
                (false, _) => StatusCode::OK,
            };
            (status, Json(row_json(&submitted.row))).into_response()
        }
        Err(e @ SubmitError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ SubmitError::Unavailable(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// `GET /api/nodes/{node}/commands`: `[state message, ...]`, oldest first (the newest 100).
pub(super) async fn list(State(state): State<AppState>, Path(node): Path<String>) -> Response {
    let history = state.history.clone();
    let rows = tokio::task::spawn_blocking(move || history.commands_of(&node, LIST_LIMIT)).await;
    match rows {
        Ok(Ok(rows)) => Json(rows.iter().map(row_json).collect::<Vec<_>>()).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
