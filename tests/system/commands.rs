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

/// On the air through the gateway's modem: the queued command rides in the ACK of the node's
/// next uplink (sealed, bound to it), the same bytes again for a repeat of that uplink, in
/// every ACK until the node confirms it in an uplink; then `confirmed`, and the next command
/// goes out.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_rides_in_the_ack_until_the_node_confirms_it() {
    use lora_link::downlink::{Extras, Kind, NodeCommand};
    use lora_link::packet::SensorDataPacket;
    use lora_link::secure::{self, Key};
    let key = Key::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &modem.path, true)
        .replace("expire_after = \"3s\"", "expire_after = \"1h\"");
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let url = dashboard_url(&plain(&gw.log()));
    let uplink = |counter: u32, confirm: Option<u16>| {
        let p = SensorDataPacket {
            seq_num: counter as u16,
            temperature: 250,
            humidity: 5000,
            gas_resistance: 1000,
        };
        let extras = Extras {
            confirm,
            info: None,
        };
        let mut buf = [0u8; secure::MAX_UPLINK_LEN];
        let n = secure::seal_uplink_with(&key, 1, counter, &p, &extras, &mut buf).unwrap();
        crate::modem_emulator::rcv(1, &buf[..n], -40, 9)
    };
    // What the ACK of uplink `counter` (the modem's n-th send) carries.
    let command_in = |send: &[u8], counter: u32| {
        let data_at = send
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b',')
            .nth(1)
            .unwrap()
            .0
            + 1;
        let data = &send[data_at..send.len() - 2];
        secure::open_ack_with(&key, 1, counter, data)
            .expect("an authentic ACK of that uplink")
            .1
    };
    let (status, body) = post(
        &url,
        "node1",
        r#"{"id": "slow", "command": "interval", "value": "5s"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    modem.send(&uplink(7, None));
    modem.wait_for_sends(1, WAIT).await;
    let first = modem.sends()[0].clone();
    let command = command_in(&first, 7).expect("the command in the ACK");
    assert_eq!(command.kind, Kind::Interval(5));
    wait_until("sent", WAIT, || async {
        state_of(&list(&url, "node1").await, "slow") == "sent"
    })
    .await;
    // The uplink again (its ACK lost): the very same ACK.
    modem.send(&uplink(7, None));
    modem.wait_for_sends(2, WAIT).await;
    assert_eq!(modem.sends()[1], first);
    // Not confirmed yet: the next uplink's ACK carries it again.
    modem.send(&uplink(8, None));
    modem.wait_for_sends(3, WAIT).await;
    assert_eq!(command_in(&modem.sends()[2], 8), Some(command));
    // Queued meanwhile: a ping, after the interval.
    let (status, _) = post(
        &url,
        "node1",
        r#"{"id": "hello", "command": "ping"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202);
    // Confirmed: the next ACK carries the ping.
    modem.send(&uplink(9, Some(command.number)));
    modem.wait_for_sends(4, WAIT).await;
    let ping: Option<NodeCommand> = command_in(&modem.sends()[3], 9);
    assert_eq!(ping.map(|c| c.kind), Some(Kind::Ping));
    let commands = list(&url, "node1").await;
    assert_eq!(state_of(&commands, "slow"), "confirmed");
    assert_eq!(state_of(&commands, "hello"), "sent");
    // The dashboard's node list shows the node's commands not done yet.
    let nodes: Value = serde_json::from_str(
        &http()
            .get(format!("{url}/api/nodes"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let node1 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node1")
        .expect("node1 listed");
    assert_eq!(node1["pending_commands"], 1, "{node1}");
    // Confirmed again (the node repeats its confirmation until it hears an ACK): no change.
    modem.send(&uplink(10, Some(command.number)));
    modem.wait_for_sends(5, WAIT).await;
    assert_eq!(state_of(&list(&url, "node1").await, "slow"), "confirmed");
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}

/// Over MQTT: a request on `<prefix>/<node>/commands` is taken (committed before its PUBACK);
/// every state change is published retained on `<prefix>/<node>/commands/<id>`; a refused one
/// says why.
#[tokio::test(flavor = "multi_thread")]
async fn commands_over_mqtt_publish_every_state_retained() {
    use crate::support::{mqtt_publish, Mosquitto, Subscriber};
    use lora_link::downlink::Extras;
    use lora_link::packet::SensorDataPacket;
    use lora_link::secure::{self, Key};
    let key = Key::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let mosquitto = Mosquitto::start();
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &modem.path, true)
        .replace("expire_after = \"3s\"", "expire_after = \"1h\"")
        + &format!(
            "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-cmd\"\n[homeassistant]\nenabled = true\n",
            mosquitto.url()
        );
    let ha = Subscriber::connect(mosquitto.port, "home-assistant", "homeassistant/#", true).await;
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("mqtt commands connected", WAIT).await;
    mqtt_publish(
        mosquitto.port,
        "iiot/node1/commands",
        r#"{"id": "m-1", "command": "interval", "value": "5s"}"#,
        false,
    )
    .await;
    mqtt_publish(
        mosquitto.port,
        "iiot/node1/commands",
        r#"{"id": "m-2", "command": "warp"}"#,
        false,
    )
    .await;
    let states = |sub: &Subscriber, id: &str| -> Vec<String> {
        sub.messages()
            .iter()
            .filter(|m| m.topic == format!("iiot/node1/commands/{id}"))
            .map(|m| {
                serde_json::from_str::<Value>(&m.payload).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    // A late subscriber gets the retained states.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sub = Subscriber::connect(mosquitto.port, "watch-cmd", "iiot/node1/commands/#", true).await;
    sub.wait_for(|m| m.len() >= 2, WAIT).await;
    assert_eq!(states(&sub, "m-1"), ["queued"]);
    assert_eq!(states(&sub, "m-2"), ["rejected"]);
    let uplink = |counter: u32, confirm: Option<u16>| {
        let p = SensorDataPacket {
            seq_num: counter as u16,
            temperature: 250,
            humidity: 5000,
            gas_resistance: 1000,
        };
        let mut buf = [0u8; secure::MAX_UPLINK_LEN];
        let n = secure::seal_uplink_with(
            &key,
            1,
            counter,
            &p,
            &Extras {
                confirm,
                info: None,
            },
            &mut buf,
        )
        .unwrap();
        crate::modem_emulator::rcv(1, &buf[..n], -40, 9)
    };
    modem.send(&uplink(1, None));
    sub.wait_for(|_| states(&sub, "m-1").len() >= 2, WAIT).await;
    let number = {
        let send = &modem.sends()[0];
        let at = send
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b',')
            .nth(1)
            .unwrap()
            .0
            + 1;
        secure::open_ack_with(&key, 1, 1, &send[at..send.len() - 2])
            .unwrap()
            .1
            .unwrap()
            .number
    };
    modem.send(&uplink(2, Some(number)));
    sub.wait_for(|_| states(&sub, "m-1").len() >= 3, WAIT).await;
    assert_eq!(states(&sub, "m-1"), ["queued", "sent", "confirmed"]);
    // The node's info, retained on <prefix>/<node>/info; a new version is an annotation.
    let info_sub = Subscriber::connect(mosquitto.port, "watch-info", "iiot/node1/info", true).await;
    let info = |counter: u32, version: [u8; 3]| {
        let p = SensorDataPacket {
            seq_num: counter as u16,
            temperature: 250,
            humidity: 5000,
            gas_resistance: 1000,
        };
        let extras = Extras {
            confirm: None,
            info: Some(lora_link::downlink::NodeInfo {
                version,
                boots: 3,
                uptime_s: 12,
                reset: 2,
            }),
        };
        let mut buf = [0u8; secure::MAX_UPLINK_LEN];
        let n = secure::seal_uplink_with(&key, 1, counter, &p, &extras, &mut buf).unwrap();
        crate::modem_emulator::rcv(1, &buf[..n], -40, 9)
    };
    modem.send(&info(3, [0, 3, 0]));
    info_sub.wait_for(|m| !m.is_empty(), WAIT).await;
    let v: Value = serde_json::from_str(&info_sub.messages()[0].payload).unwrap();
    assert_eq!(
        (&v["version"], &v["boots"], &v["uptime_s"], &v["reset"]),
        (&"0.3.0".into(), &3.into(), &12.into(), &"software".into())
    );
    modem.send(&info(4, [0, 4, 0]));
    gw.wait_log("node firmware changed", WAIT).await;
    assert!(!gw.log().contains("firmware changed: 0.2"), "{}", gw.log());

    // Home Assistant got node1's controls with its first readings; pressing "ping" there is a
    // command request like any other.
    let controls = ha
        .wait_for(
            |m| {
                m.iter()
                    .any(|m| m.topic == "homeassistant/button/iiot_gateway_node1_ping/config")
            },
            WAIT,
        )
        .await;
    for topic in [
        "homeassistant/number/iiot_gateway_node1_interval/config",
        "homeassistant/button/iiot_gateway_node1_identify/config",
    ] {
        assert!(controls.iter().any(|m| m.topic == topic), "{topic} missing");
    }
    let ping = controls
        .iter()
        .find(|m| m.topic == "homeassistant/button/iiot_gateway_node1_ping/config")
        .unwrap();
    let ping: Value = serde_json::from_str(&ping.payload).unwrap();
    let before = sub.messages().len();
    mqtt_publish(
        mosquitto.port,
        ping["command_topic"].as_str().unwrap(),
        ping["payload_press"].as_str().unwrap(),
        false,
    )
    .await;
    let state = |m: &crate::support::Msg| m.topic.starts_with("iiot/node1/commands/");
    let after = sub.wait_for(|m| m[before..].iter().any(state), WAIT).await;
    let pressed = after[before..].iter().find(|m| state(m)).unwrap();
    let pressed: Value = serde_json::from_str(&pressed.payload).unwrap();
    assert_eq!(
        (&pressed["command"], &pressed["state"]),
        (&"ping".into(), &"queued".into())
    );
    let last = sub
        .messages()
        .into_iter()
        .rfind(|m| m.topic == "iiot/node1/commands/m-1")
        .unwrap();
    let v: Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!(
        (&v["command"], &v["value"]),
        (&"interval".into(), &"5s".into())
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}

/// Through Node 2 (`serial`): the gateway writes the node's oldest open command to Node 2's
/// VCP as a `cmd` line and takes Node 2's lines about it (sent, confirmed, refused, the node's
/// info) among the JSON lines. Here the test is Node 2, on a pseudo-terminal.
#[tokio::test(flavor = "multi_thread")]
async fn through_node2_commands_are_written_to_its_port_and_its_reports_read_back() {
    use crate::sources::{pty, write_fd};
    let dir = tempfile::tempdir().unwrap();
    let (master, slave) = pty();
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    {
        let written = written.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                // SAFETY: reading our pty master into our buffer.
                let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                written
                    .lock()
                    .unwrap()
                    .extend_from_slice(&buf[..n as usize]);
            }
        });
    }
    let cfg = format!(
        "[source]\nkind = \"serial\"\npath = \"{slave}\"\n\
         [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        dir.path().join("data").display()
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("serial port opened", WAIT).await;
    let url = dashboard_url(&plain(&gw.log()));
    let lines = || String::from_utf8_lossy(&written.lock().unwrap()).to_string();
    // Node 2 reports node1 (so it shows in the node list).
    write_fd(master, b"{\"ts\":500,\"id\":\"N2\",\"n1\":{\"t\":21.5,\"h\":40.1,\"g\":1000},\"sts\":{\"rx\":1,\"err\":0}}\r\n");
    let (status, body) = post(
        &url,
        "node1",
        r#"{"id": "s-1", "command": "interval", "value": "5s"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_until("the cmd line on Node 2's port", WAIT, || async {
        lines().contains("cmd 1 ")
    })
    .await;
    let line = lines()
        .lines()
        .find(|l| l.starts_with("cmd 1 "))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!((fields[3], fields[4]), ("interval", "5"), "{line}");
    let number = fields[2];
    for report in [
        format!("command queued to=1 number={number}\r\n"),
        format!("command sent to=1 number={number}\r\n"),
    ] {
        write_fd(master, report.as_bytes());
    }
    wait_until("sent", WAIT, || async {
        state_of(&list(&url, "node1").await, "s-1") == "sent"
    })
    .await;
    write_fd(
        master,
        format!("confirmed from=1 number={number}\r\n").as_bytes(),
    );
    write_fd(
        master,
        b"info from=1 version=0.3.1 boots=4 uptime=99 reset=1\r\n",
    );
    wait_until("confirmed", WAIT, || async {
        state_of(&list(&url, "node1").await, "s-1") == "confirmed"
    })
    .await;
    // Node 2 refuses a command for a node it does not know.
    let (status, _) = post(
        &url,
        "node3",
        r#"{"id": "s-3", "command": "ping"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202);
    wait_until("the cmd line for node3", WAIT, || async {
        lines().contains("cmd 3 ")
    })
    .await;
    let line = lines()
        .lines()
        .find(|l| l.starts_with("cmd 3 "))
        .unwrap()
        .to_string();
    let number = line.split(' ').nth(2).unwrap().to_string();
    write_fd(
        master,
        format!("command refused to=3 number={number} reason=unknown_node\r\n").as_bytes(),
    );
    wait_until("rejected", WAIT, || async {
        state_of(&list(&url, "node3").await, "s-3") == "rejected"
    })
    .await;
    // Node 2 itself and names that are no radio node's are refused at once.
    let (status, answer) = post(&url, "node2", r#"{"command": "ping"}"#, Some(TOKEN)).await;
    assert_eq!(status, 422, "{answer}");
    // The node list has node1's firmware; no JSON line was lost to the relay.
    let nodes: Value =
        serde_json::from_str(&get_text_with_token(&format!("{url}/api/nodes")).await).unwrap();
    let node1 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node1")
        .unwrap()
        .clone();
    assert_eq!(node1["firmware"], "0.3.1", "{node1}");
    assert!(
        !lines().lines().any(|l| l.starts_with("cmd 2 ")),
        "{}",
        lines()
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}

async fn get_text_with_token(url: &str) -> String {
    http()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
