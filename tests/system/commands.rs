//! Commands to the nodes through the HTTP API and `iiot-gateway command` (issue 25, the
//! durable queue): the token required; an unknown command, a bad value or an unknown node
//! refused at once (`rejected`, nothing on the air); the same id twice is one command; a
//! command committed before it is accepted survives a SIGKILL; one never confirmed ends
//! `expired`; `/metrics` counts them by state.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::gateway::{dashboard_url, plain, TestGateway, BIN};
use crate::modem_emulator::{Answer, ModemEmulator};
use crate::support::{get_text, http, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "a-token-of-twenty-chars";

fn config(dir: &std::path::Path, modem: &str, token: bool) -> String {
    let token = if token {
        format!("token = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    format!(
        "[source]\nkind = \"rylr998\"\npath = \"{modem}\"\n\
         [source.nodes.1]\nname = \"node1\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\n\
         [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{token}\
         [downlink]\nexpire_after = \"3s\"\n",
        dir.join("data").display()
    )
}

async fn post(url: &str, node: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{url}/api/nodes/{node}/commands"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn list(url: &str, node: &str) -> Vec<Value> {
    let resp = http()
        .get(format!("{url}/api/nodes/{node}/commands"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

fn state_of(commands: &[Value], id: &str) -> String {
    commands
        .iter()
        .find(|c| c["id"] == id)
        .map(|c| c["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{id} not listed: {commands:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_refused_or_kept_across_a_kill_and_expire_unconfirmed() {
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &modem.path, true);
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let url = dashboard_url(&plain(&gw.log()));
    let interval = r#"{"id": "c-42", "command": "interval", "value": "5s"}"#;

    let (status, _) = post(&url, "node1", interval, None).await;
    assert_eq!(status, 401, "a command without the token");
    let (status, body) = post(&url, "node1", interval, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (
            &body["id"],
            &body["command"],
            &body["value"],
            &body["state"]
        ),
        (
            &"c-42".into(),
            &"interval".into(),
            &"5s".into(),
            &"queued".into()
        )
    );
    // The same id again is the same command.
    let (status, again) = post(
        &url,
        "node1",
        r#"{"id": "c-42", "command": "ping"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["command"], "interval");
    for (node, body, reason) in [
        (
            "node1",
            r#"{"id": "bad-1", "command": "selfdestruct"}"#,
            "unknown command",
        ),
        (
            "node1",
            r#"{"id": "bad-2", "command": "interval", "value": "0s"}"#,
            "interval must be",
        ),
        (
            "ghost",
            r#"{"id": "bad-3", "command": "ping"}"#,
            "unknown node \"ghost\"",
        ),
    ] {
        let (status, answer) = post(&url, node, body, Some(TOKEN)).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["state"], "rejected");
        assert!(
            answer["detail"].as_str().unwrap().contains(reason),
            "{answer}"
        );
    }
    let (status, answer) = post(&url, "node1", "{not json", Some(TOKEN)).await;
    assert_eq!(status, 400, "{answer}");
    // A fresh id when none is given.
    let (status, ping) = post(&url, "node1", r#"{"command": "ping"}"#, Some(TOKEN)).await;
    assert_eq!(status, 202, "{ping}");
    let ping_id = ping["id"].as_str().unwrap().to_string();
    assert!(
        ping_id.starts_with("c-") && ping_id.len() == 14,
        "{ping_id}"
    );

    // Accepted means committed: killed at once, the gateway still has them after a restart.
    gw.signal(libc::SIGKILL);
    gw.wait(WAIT);
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let url = dashboard_url(&plain(&gw.log()));
    let commands = list(&url, "node1").await;
    assert_eq!(state_of(&commands, "bad-1"), "rejected");
    assert!(["queued", "expired"].contains(&state_of(&commands, "c-42").as_str()));
    // Nothing confirms them (the node never reports): they expire.
    wait_until("the commands expired", WAIT, || async {
        let commands = list(&url, "node1").await;
        state_of(&commands, "c-42") == "expired" && state_of(&commands, &ping_id) == "expired"
    })
    .await;
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert!(
        metrics.contains("iiot_commands{state=\"expired\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iiot_commands{state=\"rejected\"} 3"),
        "{metrics}"
    );

    // The command line: the state as it changes, until a final one (exit 1: expired).
    let out = Command::new(BIN)
        .args(["command", "--config"])
        .arg(&cfg_path)
        .args([
            "--url", &url, "node1", "identify", "3s", "--id", "blink", "--wait",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("blink  identify 3s  queued"), "{stdout}");
    assert!(
        lines[1].contains("blink  identify 3s  expired  not confirmed in time"),
        "{stdout}"
    );
    // Refused at once: exit 1, said on stdout.
    let out = Command::new(BIN)
        .args(["command", "--config"])
        .arg(&cfg_path)
        .args(["--url", &url, "node1", "warp", "--wait"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rejected  unknown command \"warp\""));
    // Nothing went on the air.
    assert!(modem.sends().is_empty(), "{:?}", modem.sends());
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());

    // Without a token configured, no one may send commands.
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::start(
        dir.path(),
        &config(dir.path(), &modem.path, false),
        Stdio::null(),
    );
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let url = dashboard_url(&plain(&gw.log()));
    let (status, answer) = post(&url, "node1", interval, None).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("[http] token"),
        "{answer}"
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}
