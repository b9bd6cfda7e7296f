//! Delivery details: QoS 2 and retain honoured, refused points split out and quarantined,
//! Retry-After honoured, bad lines quarantined while the good ones flow, taken ports named.

use std::io::Read as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::gateway::{
    assert_mqtt_exactly, counts, expected_packets, fixture, run_stdin, Expected, TestGateway,
};
use crate::support::{InfluxDb1, Mosquitto, Subscriber};

const EXIT: Duration = Duration::from_secs(60);

fn stdin_config(dir: &std::path::Path, sinks: &str) -> String {
    format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n{sinks}",
        dir.join("data").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_2_and_retain_are_honoured() {
    let mosquitto = Mosquitto::start();
    let live = Subscriber::connect(mosquitto.port, "live-watcher", "site/a/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-qos2\"\ntopic_prefix = \"site/a\"\nqos = 2\nretain = true\n",
        mosquitto.url()
    );
    let input = fixture("vcp-serial.jsonl");
    let (status, log) = run_stdin(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        input.as_bytes(),
        EXIT,
    );
    assert!(status.success(), "{log}");
    // Every message arrived (QoS 2 through Mosquitto's default inflight limit of 20) ...
    let all: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    assert_mqtt_exactly(&live, "site/a", &all).await;
    // ... and a subscriber arriving afterwards gets the retained last value of every topic.
    let sub = Subscriber::connect(mosquitto.port, "late-watcher", "site/a/#", true).await;
    let last = expected_packets(&input).pop().unwrap();
    let msgs = sub
        .wait_for(|m| m.len() > last.len(), Duration::from_secs(3))
        .await;
    for e in &last {
        let topic = e.topic("site/a");
        let m = msgs
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("{topic}"));
        assert!(m.retain, "{topic} retained");
        assert_eq!(m.payload, e.value);
    }
    assert!(msgs
        .iter()
        .any(|m| m.topic == "site/a/gateway/status" && m.payload == "offline"));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_points_are_split_out_and_quarantined_while_the_rest_is_written() {
    let influx = InfluxDb1::start();
    influx.create_database("telemetry");
    // Make InfluxDB refuse every `rssi` point: the field already exists as an integer in
    // the current shard.
    let marker_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        - 3_600_000_000_000;
    let resp = crate::support::http()
        .post(format!("{}/write?db=telemetry", influx.url()))
        .body(format!("rssi,node=signal,unit=dbm value=1i {marker_ts}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nflush_interval = \"50ms\"\n",
        influx.url()
    );
    let input = fixture("vcp-serial.jsonl");
    let (status, log) = run_stdin(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        input.as_bytes(),
        EXIT,
    );
    assert!(
        status.success(),
        "one refused metric must not block the rest: {log}"
    );
    let expected: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    let points = influx.points("telemetry").await;
    let written = points.iter().filter(|p| p.ts_ns != marker_ts).count();
    let rssi = expected.iter().filter(|e| e.metric == "rssi").count();
    assert_eq!(written, expected.len() - rssi);
    let quarantine = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    let refused: Vec<&str> = quarantine
        .lines()
        .filter(|l| l.contains("\tinfluxdb\t"))
        .collect();
    assert_eq!(refused.len(), rssi, "{quarantine}");
    assert!(refused
        .iter()
        .all(|l| l.contains("field type conflict") && l.contains("rssi,node=signal")));
}

/// A FAKE InfluxDB: real servers cannot be made to answer 503 with Retry-After on demand.
/// It refuses the first write with `503 Retry-After: 1`, accepts the rest, and records
/// (arrival time, decompressed body) of every write.
async fn fake_influx() -> (u16, Arc<Mutex<Vec<(Instant, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8];
                    while !head.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    sock.read_exact(&mut body).await.unwrap();
                    let reply = if head.starts_with("post /api/v2/write") {
                        // Small bodies go uncompressed.
                        let mut text = String::new();
                        if head.contains("content-encoding: gzip") {
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_string(&mut text)
                                .unwrap();
                        } else {
                            text = String::from_utf8(body).unwrap();
                        }
                        let mut w = seen.lock().unwrap();
                        if text.is_empty() {
                            // The start-up check's empty write: not a delivery.
                            "HTTP/1.1 204 No Content\r\n\r\n"
                        } else {
                            w.push((Instant::now(), text));
                            if w.len() == 1 {
                                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 0\r\n\r\n"
                            } else {
                                "HTTP/1.1 204 No Content\r\n\r\n"
                            }
                        }
                    } else {
                        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    sock.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, writes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_with_retry_after_is_retried_after_that_delay_with_the_same_points() {
    let (port, writes) = fake_influx().await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[influxdb]\nurl = \"http://127.0.0.1:{port}\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"secret-token-value\"\nflush_interval = \"50ms\"\nretry_initial = \"10ms\"\nretry_max = \"20ms\"\n"
    );
    let input = fixture("legacy-bmp280.log");
    let (status, log) = run_stdin(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        input.as_bytes(),
        EXIT,
    );
    assert!(status.success(), "{log}");
    let w = writes.lock().unwrap();
    // The refused write, its retry, and possibly later writes with the gateway's own events
    // (the outage ended, the gateway stopping).
    assert!(w.len() >= 2, "{w:?}");
    let reading_lines = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| !l.starts_with("events,"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        reading_lines(&w[0].1),
        reading_lines(&w[1].1),
        "the retry carries the very same points (plus any gateway event recorded meanwhile)"
    );
    let waited = w[1].0 - w[0].0;
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After honoured: {waited:?}"
    );
    let readings = |body: &str| body.lines().filter(|l| !l.starts_with("events,")).count();
    assert_eq!(readings(&w[0].1), 9);
    assert_eq!(
        w[1..].iter().map(|(_, b)| readings(b)).sum::<usize>(),
        9,
        "each reading written once"
    );
    assert_eq!(
        log.matches("sink server error").count(),
        1,
        "one line per state: {log}"
    );
    assert!(!log.contains("secret-token-value"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lines_are_quarantined_with_their_reason_and_good_lines_around_them_flow() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-bad", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-bad\"\n",
        mosquitto.url()
    );
    let good = fixture("vcp-serial.jsonl");
    let good: Vec<&str> = good.lines().collect();
    let mut input = Vec::new();
    for (i, line) in good.iter().enumerate() {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
        match i {
            0 => input.extend_from_slice(b"[INFO] JSON sent via VCP: {\"ts\":1,\"n1\":{\"t\":\n"),
            1 => input.extend_from_slice(b"\xff\xfe\x00 binary noise \x1b[31m\n"),
            2 => input.extend_from_slice(b"{\"n1\":{\"t\":\"hot\"}}\n"),
            3 => {
                input.extend_from_slice(&[b'{'; 100_000]);
                input.push(b'\n');
            }
            _ => {}
        }
    }
    input.push(b'\n');
    let (status, log) = run_stdin(dir.path(), &stdin_config(dir.path(), &sinks), &input, EXIT);
    assert!(status.success(), "{log}");
    let expected: Vec<Expected> = expected_packets(&good.join("\n"))
        .into_iter()
        .flatten()
        .collect();
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    let q = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    let reasons: Vec<&str> = q
        .lines()
        .map(|l| l.split('\t').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(reasons.len(), 3, "{q}");
    assert!(reasons[0].starts_with("invalid JSON"), "{reasons:?}");
    assert_eq!(reasons[1], "n1.t: expected a number, got \"hot\"");
    assert!(reasons[2].contains("max_line_length"), "{reasons:?}");
    assert!(
        q.lines().all(|l| l.len() < 5000),
        "quarantine keeps lines bounded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_port_is_named_with_the_setting_that_changes_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    for (flag, setting) in [
        ("--mqtt-listen", "[mqtt] embedded_listen"),
        ("--http-listen", "[http] listen"),
    ] {
        let addr = format!("127.0.0.1:{port}");
        let other = format!("127.0.0.1:{}", crate::support::free_port());
        let args: Vec<&str> = match flag {
            "--mqtt-listen" => vec![
                "--storage-dir",
                "data",
                "--http-listen",
                &other,
                flag,
                &addr,
            ],
            _ => vec![
                "--storage-dir",
                "data",
                "--mqtt-listen",
                &other,
                flag,
                &addr,
            ],
        };
        let mut gw = TestGateway::spawn(dir.path(), &args, Stdio::null());
        let status = gw.wait(Duration::from_secs(20));
        let log = gw.log();
        assert!(!status.success());
        assert!(log.contains(&addr), "{log}");
        assert!(log.contains(flag) && log.contains(setting), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_sent_while_the_broker_is_down_arrive_after_it_returns() {
    let mut mosquitto = Mosquitto::start();
    // A persistent-session QoS 1 subscriber: the broker keeps its queue across the restart.
    let sub = Subscriber::connect(mosquitto.port, "watcher-outage", "iiot/#", false).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-outage\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"400ms\"\n",
        mosquitto.url()
    );
    let mut gw = TestGateway::start(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        Stdio::piped(),
    );
    let mut stdin = gw.stdin();
    let text = fixture("probe-rs-session.log");
    let lines: Vec<&str> = text.lines().collect();
    let (before, during) = lines.split_at(lines.len() / 2);
    let before_n: usize = expected_packets(&before.join("\n"))
        .iter()
        .map(Vec::len)
        .sum();
    use std::io::Write as _;
    writeln!(stdin, "{}", before.join("\n")).unwrap();
    sub.wait_for(
        |m| {
            m.iter()
                .filter(|m| m.topic != "iiot/gateway/status")
                .count()
                >= before_n
        },
        Duration::from_secs(10),
    )
    .await;

    mosquitto.stop();
    writeln!(stdin, "{}", during.join("\n")).unwrap();
    gw.wait_log("sink connection refused", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    mosquitto.start_again();
    drop(stdin);
    let status = gw.wait(EXIT);
    assert!(status.success(), "{}", gw.log());

    let expected: Vec<Expected> = expected_packets(&text).into_iter().flatten().collect();
    let want = counts(expected.iter().map(|e| (e.topic("iiot"), e.value.clone())));
    let msgs = sub
        .wait_for(
            |m| {
                let got = counts(
                    m.iter()
                        .filter(|m| m.topic != "iiot/gateway/status")
                        .map(|m| (m.topic.clone(), m.payload.clone())),
                );
                want.iter()
                    .all(|(k, n)| got.get(k).copied().unwrap_or(0) >= *n)
            },
            Duration::from_secs(20),
        )
        .await;
    let received = msgs
        .iter()
        .filter(|m| m.topic != "iiot/gateway/status")
        .count();
    assert!(
        received >= expected.len(),
        "at least once: {received} of {}",
        expected.len()
    );
    let log = gw.log();
    assert_eq!(
        log.matches("sink connection refused").count(),
        1,
        "one line per state change: {log}"
    );
    assert!(log.matches("sink connected").count() >= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_0_publishes_everything_and_moves_the_cursor_once_written() {
    let mosquitto = Mosquitto::start();
    let live = Subscriber::connect(mosquitto.port, "watcher-qos0", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-qos0\"\nqos = 0\n",
        mosquitto.url()
    );
    let input = fixture("vcp-serial.jsonl");
    let (status, log) = run_stdin(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        input.as_bytes(),
        EXIT,
    );
    assert!(status.success(), "{log}");
    assert!(!log.contains("stay buffered"), "{log}");
    let all: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    assert_mqtt_exactly(&live, "iiot", &all).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn home_assistant_discovery_configs_are_retained_and_announced_again_on_ha_online() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-ha\"\n\n[homeassistant]\nenabled = true\ngateway_id = \"plant1\"\n",
        mosquitto.url()
    );
    let ha = Subscriber::connect(mosquitto.port, "home-assistant", "homeassistant/#", true).await;
    let mut gw = TestGateway::start(
        dir.path(),
        &stdin_config(dir.path(), &sinks),
        Stdio::piped(),
    );
    let mut stdin = gw.stdin();
    use std::io::Write as _;
    let input = fixture("vcp-serial.jsonl");
    stdin.write_all(input.as_bytes()).unwrap();
    // Every series of the fixture: its config, once, valid for Home Assistant ...
    let series: std::collections::BTreeSet<(String, String)> = expected_packets(&input)
        .into_iter()
        .flatten()
        .map(|e| (e.node, e.metric))
        .collect();
    let live = ha
        .wait_for(|m| m.len() >= series.len(), Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ha.messages().len(),
        series.len(),
        "one config per series: {live:?}"
    );
    // ... and retained: a Home Assistant connecting later gets them all at once.
    let late = Subscriber::connect(
        mosquitto.port,
        "home-assistant-late",
        "homeassistant/#",
        true,
    )
    .await;
    let msgs = late
        .wait_for(|m| m.len() >= series.len(), Duration::from_secs(10))
        .await;
    for (node, metric) in &series {
        let topic = format!("homeassistant/sensor/plant1_{node}_{metric}/config");
        let m = msgs
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("{topic} missing"));
        assert!(m.retain, "{topic} must be retained");
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(v["state_topic"], format!("iiot/{node}/{metric}"));
        assert_eq!(v["unique_id"], format!("plant1_{node}_{metric}"));
        assert_eq!(v["availability_topic"], "iiot/gateway/status");
        assert_eq!(v["device"]["identifiers"][0], format!("plant1_{node}"));
        assert!(v["state_class"].is_string());
    }
    let temp = msgs
        .iter()
        .find(|m| m.topic == "homeassistant/sensor/plant1_node1_temperature/config")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&temp.payload).unwrap();
    assert_eq!(
        (
            v["device_class"].as_str(),
            v["unit_of_measurement"].as_str()
        ),
        (Some("temperature"), Some("°C"))
    );

    // Home Assistant restarts and says so: every config is published again.
    ha.clear();
    crate::support::mqtt_publish(mosquitto.port, "homeassistant/status", "online", false).await;
    let again = ha
        .wait_for(
            |m| m.iter().filter(|m| m.topic.ends_with("/config")).count() >= series.len(),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        again
            .iter()
            .filter(|m| m.topic.ends_with("/config"))
            .count()
            >= series.len()
    );
    drop(stdin);
    assert!(gw.wait(EXIT).success(), "{}", gw.log());
}

/// Ctrl-C with the servers down: the gateway says at once what it is waiting to deliver and
/// that a second Ctrl-C stops now, and a second one does.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_with_the_servers_down_says_what_it_waits_for_and_a_second_signal_ends_it() {
    let mut mosquitto = Mosquitto::start();
    let mut influx = InfluxDb1::start();
    influx.create_database("telemetry");
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-stop\"\nreconnect_max = \"1s\"\n\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nretry_max = \"1s\"\n",
        mosquitto.url(),
        influx.url()
    );
    let cfg = stdin_config(dir.path(), &sinks)
        .replace("drain_timeout = \"20s\"", "drain_timeout = \"120s\"");
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    mosquitto.stop();
    influx.stop();
    let mut stdin = gw.stdin();
    use std::io::Write as _;
    stdin
        .write_all(fixture("vcp-serial.jsonl").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    gw.wait_log("sink connection refused", Duration::from_secs(10))
        .await;
    let stop = Instant::now();
    gw.signal(libc::SIGINT);
    gw.wait_log("Press Ctrl-C again to stop now", Duration::from_secs(5))
        .await;
    let told = stop.elapsed();
    assert!(told < Duration::from_secs(3), "told after {told:?}");
    let log = gw.log();
    assert!(
        log.contains("the mqtt sink still has 85 readings and 0 gateway events to deliver"),
        "{log}"
    );
    assert!(
        log.contains("the influxdb sink still has 85 readings"),
        "{log}"
    );
    gw.signal(libc::SIGINT);
    gw.wait(Duration::from_secs(10));
    assert!(
        stop.elapsed() < Duration::from_secs(15),
        "{:?}",
        stop.elapsed()
    );
    drop(stdin);
}
