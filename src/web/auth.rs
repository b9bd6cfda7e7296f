//! The optional bearer token in front of the dashboard and `/api` (`[http] token`).
//!
//! A request passes with `Authorization: Bearer <token>`, or with the `iiot_token` cookie
//! that `GET /?token=<token>` sets (so a browser can open the dashboard, whose scripts and
//! event stream then send the cookie by themselves). `/healthz` and `/readyz` are outside
//! this guard; `/metrics` is inside only with `protect_metrics`. Comparison is constant-time
//! and the token never appears in a response or a log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::secret::Secret;

const COOKIE: &str = "iiot_token";

/// The token and what it protects.
#[derive(Clone)]
pub struct Guard {
    token: Arc<Secret>,
    protect_metrics: bool,
}

impl Guard {
    /// A guard for `token`.
    pub fn new(token: &Secret, protect_metrics: bool) -> Self {
        Guard {
            token: Arc::new(token.clone()),
            protect_metrics,
        }
    }

    fn accepts(&self, offered: &str) -> bool {
        constant_time_eq(offered.as_bytes(), self.token.expose().as_bytes())
    }
}

/// The middleware.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/metrics" && !guard.protect_metrics {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        });
    if bearer.is_some_and(|t| guard.accepts(t)) || cookie.is_some_and(|t| guard.accepts(&t)) {
        return next.run(request).await;
    }
    // A browser opening `/?token=...`: remember it in a cookie and drop it from the URL.
    let query_token = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if let Some(offered) = query_token {
        if guard.accepts(offered) {
            let mut response = Redirect::to(request.uri().path()).into_response();
            let cookie = format!("{COOKIE}={offered}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return response;
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required: send Authorization: Bearer <[http] token>, or open /?token=<token>\n",
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_accepted() {
        let g = Guard::new(&Secret::new("0123456789abcdef"), false);
        assert!(g.accepts("0123456789abcdef"));
        assert!(!g.accepts("0123456789abcdeF"));
        assert!(!g.accepts("0123456789abcde"));
        assert!(!g.accepts(""));
    }
}
