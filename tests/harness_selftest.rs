//! Proves the system-test harness (`tests/support`) against the real servers, and pins the
//! server behaviours the gateway's system tests rely on (see the notes in `support/mod.rs`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{
    http, mqtt_publish, wait_until, InfluxDb1, Mosquitto, Point, Subscriber, VictoriaMetrics,
};

const TS1_NS: i64 = 1_764_230_400_000_000_000; // 2025-11-27T08:00:00Z
const TS2_NS: i64 = 1_764_230_401_000_000_000;

async fn post(url: &str, body: &str) -> u16 {
    let resp = http()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 204, "POST {url}: {text}");
    status
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn point(measurement: &str, tags_: &[(&str, &str)], value: f64, ts_ns: i64) -> Point {
    Point {
        measurement: measurement.into(),
        field: "value".into(),
        tags: tags(tags_),
        value,
        ts_ms: ts_ns / 1_000_000,
        ts_ns,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_v2_and_v1_writes_round_trip() {
    let mut vm = VictoriaMetrics::start();
    assert!(vm.points().await.is_empty());

    let v2 = format!(
        "{}/api/v2/write?org=acme&bucket=telemetry&precision=ns",
        vm.url()
    );
    post(
        &v2,
        &format!("temperature,node=node1,unit=celsius value=27.6 {TS1_NS}"),
    )
    .await;
    let v1 = format!("{}/write?db=telemetry", vm.url());
    post(
        &v1,
        &format!("battery_voltage,node=node2 value=3.71 {TS2_NS}"),
    )
    .await;

    let expected = vec![
        // v2: org/bucket are ignored, no `db` label.
        point(
            "temperature",
            &[("node", "node1"), ("unit", "celsius")],
            27.6,
            TS1_NS,
        ),
        // v1: `db` label; the measurement's own `_` survives the name split.
        point(
            "battery_voltage",
            &[("db", "telemetry"), ("node", "node2")],
            3.71,
            TS2_NS,
        ),
    ];
    assert_eq!(vm.points().await, expected);
    assert_eq!(
        vm.export(r#"{__name__="temperature_value"}"#).await,
        expected[..1]
    );

    // Data survives a graceful restart on the same port.
    vm.stop();
    assert!(!vm.is_running());
    vm.start_again();
    assert_eq!(vm.points().await, expected);

    // Duplicates (same series, same ms) are kept, not deduplicated.
    post(&v1, &format!("dup,node=n value=1 {TS1_NS}")).await;
    post(&v1, &format!("dup,node=n value=2 {TS1_NS}")).await;
    let dups: Vec<f64> = vm
        .export(r#"{__name__="dup_value"}"#)
        .await
        .iter()
        .map(|p| p.value)
        .collect();
    assert_eq!(dups, vec![1.0, 2.0]);

    // A sample stamped "now" is visible right after the write (force_flush + explicit end).
    let now_ns = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    post(&v1, &format!("fresh value=1 {now_ns}")).await;
    let fresh = vm.export(r#"{__name__="fresh_value"}"#).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].ts_ms, now_ns / 1_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_write_and_points_round_trip() {
    let mut influx = InfluxDb1::start();
    influx.create_database("telemetry");
    assert!(influx.points("telemetry").await.is_empty());
    assert!(influx.points("no_such_db").await.is_empty());

    let write = format!("{}/write?db=telemetry", influx.url());
    post(
        &write,
        &format!(
            "temperature,node=node1,unit=celsius value=27.6 {TS1_NS}\n\
             temperature,node=node2 value=28 {}\n\
             rssi,node=signal value=-70i {TS2_NS}",
            TS1_NS + 1
        ),
    )
    .await;

    let expected = vec![
        point(
            "temperature",
            &[("node", "node1"), ("unit", "celsius")],
            27.6,
            TS1_NS,
        ),
        // ns precision is kept; the absent `unit` tag is not reported.
        point("temperature", &[("node", "node2")], 28.0, TS1_NS + 1),
        point("rssi", &[("node", "signal")], -70.0, TS2_NS),
    ];
    assert_eq!(influx.points("telemetry").await, expected);

    let raw = influx
        .query("telemetry", "SELECT count(value) FROM temperature")
        .await;
    assert_eq!(raw["results"][0]["series"][0]["values"][0][1], 2, "{raw}");

    // Data survives a graceful restart on the same port.
    influx.stop();
    influx.start_again();
    assert_eq!(influx.points("telemetry").await, expected);

    // Same series + same timestamp: the last write wins.
    post(&write, &format!("rssi,node=signal value=-71i {TS2_NS}")).await;
    let rssi: Vec<f64> = influx
        .points("telemetry")
        .await
        .into_iter()
        .filter(|p| p.measurement == "rssi")
        .map(|p| p.value)
        .collect();
    assert_eq!(rssi, vec![-71.0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_publish_reaches_subscriber() {
    let broker = Mosquitto::start();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port));
    let sub = Subscriber::connect(broker.port, "selftest-sub", "plant/#", true).await;

    mqtt_publish(broker.port, "plant/node1/temperature", "27.6", false).await;
    mqtt_publish(broker.port, "other/topic", "ignored", false).await;
    mqtt_publish(broker.port, "plant/status", "online", true).await;

    let msgs = sub
        .wait_for(|m| m.len() >= 2, Duration::from_secs(10))
        .await;
    assert_eq!(msgs[0].topic, "plant/node1/temperature");
    assert_eq!(msgs[0].payload, "27.6");
    assert!(!msgs[0].retain);
    assert_eq!(msgs[1].payload, "online");
    // Delivered live, so the retain flag is cleared (MQTT 3.1.1 §3.3.1.3).
    assert!(!msgs[1].retain);

    // A new subscriber gets the retained message with the retain flag set.
    let late = Subscriber::connect(broker.port, "selftest-late", "plant/status", true).await;
    let msgs = late
        .wait_for(|m| !m.is_empty(), Duration::from_secs(10))
        .await;
    assert!(msgs[0].retain && msgs[0].payload == "online", "{msgs:?}");
    late.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_session_survives_broker_restart() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "selftest-persistent", "gw/#", false).await;
    mqtt_publish(broker.port, "gw/a", "before", false).await;
    sub.wait_for(|m| m.len() == 1, Duration::from_secs(10))
        .await;

    broker.stop();
    assert!(!broker.is_running());
    broker.start_again();
    mqtt_publish(broker.port, "gw/b", "after", false).await;

    let msgs = sub
        .wait_for(
            |m| m.iter().any(|m| m.payload == "after"),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    // The reconnect resumed the persisted session (no re-subscribe was needed).
    assert_eq!(sub.connacks().first(), Some(&false));
    assert_eq!(sub.connacks().last(), Some(&true));
    assert!(broker.log().contains("selftest-persistent"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_until_polls_until_true() {
    let start = std::time::Instant::now();
    wait_until("200 ms to pass", Duration::from_secs(5), || async {
        start.elapsed() >= Duration::from_millis(200)
    })
    .await;
}

#[test]
#[should_panic(expected = "apt-get install -y mosquitto victoria-metrics influxdb")]
fn missing_binary_names_the_install_command() {
    support::require_binary(
        "no-such-server-binary",
        "/nonexistent/no-such-server-binary",
    );
}

#[test]
fn free_port_is_bindable() {
    let port = support::free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
