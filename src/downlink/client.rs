//! `iiot-gateway command <node> <command> [value] [--wait]`: sends a command to a running
//! gateway through its HTTP API (the address and token of its config), prints the state, and
//! with `--wait` every change until a final one. Exit status: 0 when the command is queued
//! (or, with `--wait`, confirmed), 1 when it ends rejected or expired, 2 for a usage error.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// How often `--wait` asks for the state.
const POLL: Duration = Duration::from_millis(500);

/// What to send, and where.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The node.
    pub node: String,
    /// `interval`, `ping`, `identify` or `reboot`.
    pub command: String,
    /// Its value, e.g. `30s`.
    pub value: Option<String>,
    /// The command's id (made by the gateway when `None`).
    pub id: Option<String>,
    /// Print the states until a final one.
    pub wait: bool,
    /// The gateway's URL, instead of its config's `[http] listen`.
    pub url: Option<String>,
}

/// Runs the command against the gateway `cfg` describes.
pub async fn run(cfg: &Config, inv: Invocation) -> ExitCode {
    match send(cfg, &inv).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn send(cfg: &Config, inv: &Invocation) -> Result<ExitCode, String> {
    let http = cfg.http.as_ref();
    let base = match (&inv.url, http) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(h)) => format!("http://{}", h.listen),
        (None, None) => {
            return Err(format!(
                "{}: [http] is off, so the gateway takes no commands; give --url of one that does",
                cfg.origin
            ))
        }
    };
    let token = http.and_then(|h| h.token.as_ref());
    let node = &inv.node;
    let url = format!("{base}/api/nodes/{node}/commands");
    let mut body = serde_json::json!({ "command": inv.command });
    if let Some(v) = &inv.value {
        body["value"] = v.clone().into();
    }
    if let Some(id) = &inv.id {
        body["id"] = id.clone().into();
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let authorized = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.bearer_auth(t.expose()),
        None => r,
    };
    let resp = authorized(
        client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .send()
    .await
    .map_err(|e| format!("{url}: {e} (is the gateway running? its [http] listen, or --url)"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{url}: not a JSON answer ({status}): {e}"))?;
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(format!("{status}: {error}"));
    }
    print_state(&answer);
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    let mut last = answer;
    while inv.wait && !is_final(&last) {
        tokio::time::sleep(POLL).await;
        let bytes = authorized(client.get(&url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("{url}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let list: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
        let now = list
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == id.as_str()))
            .cloned()
            .ok_or_else(|| format!("command {id} is no longer listed"))?;
        if now["state"] != last["state"] {
            print_state(&now);
        }
        last = now;
    }
    Ok(match last["state"].as_str() {
        Some("rejected" | "expired") => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

fn is_final(state: &Value) -> bool {
    matches!(
        state["state"].as_str(),
        Some("confirmed" | "expired" | "rejected")
    )
}

/// `<at>  <id>  <command> [value]  <state>  <detail>`.
fn print_state(s: &Value) {
    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    let command = match s["value"].as_str() {
        Some(v) => format!("{} {v}", text("command")),
        None => text("command"),
    };
    let detail = text("detail");
    println!(
        "{}  {}  {command}  {}{}",
        text("at"),
        text("id"),
        text("state"),
        if detail.is_empty() {
            String::new()
        } else {
            format!("  {detail}")
        }
    );
}
