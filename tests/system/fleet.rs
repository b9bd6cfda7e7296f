//! A fleet on a clustered broker: an edge gateway given every node of a three-node NATS
//! cluster (JetStream, MQTT sessions replicated to all three) keeps publishing while the node
//! it is connected to dies, and again when the next one dies. Counts are exact: the database
//! holds every reading once, and a persistent subscriber on a node that stays up receives
//! every reading at least once (duplicates counted, printed).

use std::process::Command;
use std::time::Duration;

use crate::chaos::{
    api_status, assert_db_exactly, assert_mqtt_at_least_once, finish, readings_of, sleep,
    start_gateway, status_url, Db, Feeder,
};
use crate::gateway::{expected_packets, fixture, run_stdin, Expected, BIN};
use crate::support::{free_port, wait_until, Mosquitto, NatsCluster, Subscriber};

/// Packets per second the edge gateway receives.
const RATE: u32 = 50;

/// The MQTT sink's node now, from `/api/status` (`None` while connected to none).
async fn mqtt_endpoint(status: &str) -> Option<String> {
    api_status(status).await["sinks"]["mqtt"]["endpoint"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the MQTT sink is connected to a node other than `left`; returns its index.
async fn wait_moved(status: &str, cluster: &NatsCluster, left: usize) -> usize {
    let urls: Vec<String> = (0..3).map(|i| cluster.mqtt_url(i)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = mqtt_endpoint(status).await;
        if let Some(i) = urls.iter().position(|u| now.as_deref() == Some(u)) {
            if i != left {
                return i;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the MQTT sink did not move from {} (now {now:?})",
            urls[left]
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_gateway_rides_out_the_death_of_two_cluster_nodes_losing_nothing() {
    let mut cluster = NatsCluster::start();
    let db = Db::vm();
    // A persistent subscriber that, like the gateway, moves to another node when its own dies.
    let sub = Subscriber::connect_cluster(&cluster.mqtt_ports, "fleet-watcher", "iiot/#").await;
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("\"{}\"", cluster.mqtt_url(i)))
        .collect();
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"60s\"\n\n\
         [storage]\ndir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [mqtt]\nbroker_url = [{}]\nclient_id = \"fleet-edge\"\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\n{}",
        dir.path().join("data").display(),
        urls.join(", "),
        db.section()
    );
    let mut gw = start_gateway(dir.path(), &config).await;
    let status = status_url(&gw.log());
    wait_until(
        "the MQTT sink on the first node",
        Duration::from_secs(30),
        || async { mqtt_endpoint(&status).await == Some(cluster.mqtt_url(0)) },
    )
    .await;
    let metrics = status.replace("/api/status", "/metrics");
    let text = crate::support::get_text(&metrics).await;
    assert!(
        text.contains(&format!(
            "iiot_sink_endpoint{{sink=\"mqtt\",url=\"{}\"}} 1",
            cluster.mqtt_url(0)
        )),
        "/metrics names the node:\n{text}"
    );
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_secs(2)).await;

    // The node it is on dies: it moves to another and resumes its session there.
    cluster.kill(0);
    let second = wait_moved(&status, &cluster, 0).await;
    sleep(Duration::from_secs(2)).await;
    // Back to full strength (JetStream's R3 streams need two of three), then the next death.
    cluster.start_again(0);
    sleep(Duration::from_secs(1)).await;
    cluster.kill(second);
    let third = wait_moved(&status, &cluster, second).await;
    sleep(Duration::from_secs(2)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    let log = gw.log();
    for i in [0, second, third] {
        let url = cluster.mqtt_url(i);
        assert!(
            log.lines()
                .any(|l| l.contains("sink connected") && l.contains(&url)),
            "connected to {url}:\n{log}"
        );
    }
    let want = readings_of(sent.clone());
    assert!(sent.end >= u64::from(RATE) * 5, "fed {sent:?}");
    let in_db = assert_db_exactly(&db, &want).await;
    let (received, duplicates) = assert_mqtt_at_least_once(&sub, &want).await;
    eprintln!(
        "FLEET nats_failover: sent={} db={in_db} mqtt_received={received} mqtt_duplicates={duplicates}",
        want.len()
    );
    assert!(!cluster.is_running(second) && cluster.is_running(third));
}

/// A list whose first node is down: `check` says which node answers and which does not and
/// passes (the sink can run), and the gateway delivers through the node that answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_first_node_is_named_by_check_and_skipped_by_the_sink() {
    let mosquitto = Mosquitto::start();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n[storage]\ndir = \"{}\"\n\
         [http]\nenabled = false\n[mqtt]\nbroker_url = [\"{dead}\", \"{}\"]\n\
         client_id = \"fleet-skip\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"400ms\"\n",
        dir.path().join("data").display(),
        mosquitto.url()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let line = said
        .lines()
        .find(|l| l.contains(" mqtt "))
        .unwrap_or_else(|| panic!("no mqtt line in:\n{said}"));
    assert!(
        line.starts_with("ok ")
            && line.contains(&format!("{} accepted our connection", mosquitto.url()))
            && line.contains(&format!("not reachable: {dead}: connection refused")),
        "{line}"
    );
    assert!(out.status.success(), "{said}");

    let sub = Subscriber::connect(mosquitto.port, "fleet-skip-watcher", "iiot/#", false).await;
    let (status, log) = run_stdin(
        dir.path(),
        &config,
        fixture("legacy-bmp280.log").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{log}");
    let want: Vec<Expected> = expected_packets(&fixture("legacy-bmp280.log"))
        .into_iter()
        .flatten()
        .collect();
    assert!(!want.is_empty());
    let (received, _) = assert_mqtt_at_least_once(&sub, &want).await;
    assert!(received >= want.len());
    assert!(
        log.contains(&format!(
            "sink connected sink=\"mqtt\" target=\"{}\"",
            mosquitto.url()
        )),
        "{log}"
    );
}

/// One packet event as a consumer reads it (values as their JSON number tokens).
#[derive(serde::Deserialize)]
struct Event {
    gateway: String,
    site: Option<String>,
    received: String,
    received_ns: i64,
    readings: Vec<EventReading>,
}

#[derive(serde::Deserialize)]
struct EventReading {
    node: String,
    metric: String,
    unit: Option<String>,
    value: Box<serde_json::value::RawValue>,
}

/// Packet events on while the broker restarts mid-stream: every packet's event arrives (at
/// least once), each whole (every reading of its packet, values as the device wrote them),
/// with the gateway's id, its site and the receive time the database got.
#[tokio::test(flavor = "multi_thread")]
async fn every_packet_event_is_whole_and_carries_the_receive_time_the_database_got() {
    let mut mosquitto = Mosquitto::start();
    let db = Db::vm();
    let sub = Subscriber::connect(
        mosquitto.port,
        "events-watcher",
        "iiot/gateway/+/packets",
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"30s\"\n[gateway]\nid = \"edge-1\"\nsite = \"plant a\"\n\
         [storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"events-gateway\"\npacket_events = true\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\n{}",
        dir.path().join("data").display(),
        mosquitto.url(),
        db.section()
    );
    let mut gw = start_gateway(dir.path(), &config).await;
    let feeder = Feeder::start(gw.stdin(), 0, 40);
    sleep(Duration::from_millis(1500)).await;
    mosquitto.stop();
    sleep(Duration::from_secs(2)).await;
    mosquitto.start_again();
    sleep(Duration::from_millis(1500)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut gw, stdin);

    // The database's time of each packet, by its unique gas value.
    let points = db.points().await;
    let time_of: std::collections::BTreeMap<String, i64> = points
        .iter()
        .filter(|p| p.measurement == "gas_resistance")
        .map(|p| (format!("{}", p.value), p.ts_ns))
        .collect();
    let want: Vec<Vec<Expected>> = sent.clone().map(|i| readings_of([i])).collect();
    let msgs = sub
        .wait_for(|m| m.len() >= want.len(), Duration::from_secs(20))
        .await;
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for m in &msgs {
        assert_eq!(m.topic, "iiot/gateway/edge-1/packets");
        let e: Event =
            serde_json::from_str(&m.payload).unwrap_or_else(|err| panic!("{err}: {}", m.payload));
        assert_eq!(
            (e.gateway.as_str(), e.site.as_deref()),
            ("edge-1", Some("plant a"))
        );
        let mut got: Vec<Expected> = e
            .readings
            .iter()
            .map(|r| Expected {
                node: r.node.clone(),
                metric: r.metric.clone(),
                unit: r.unit.clone(),
                value: r.value.get().to_string(),
            })
            .collect();
        got.sort();
        let gas = got
            .iter()
            .find(|r| r.metric == "gas_resistance")
            .map(|r| r.value.clone())
            .unwrap_or_else(|| panic!("no gas reading: {}", m.payload));
        let packet = gas.parse::<u64>().unwrap() - 100_000;
        let mut whole = want[usize::try_from(packet - sent.start).unwrap()].clone();
        whole.sort();
        assert_eq!(
            got, whole,
            "the event of packet {packet} is whole: {}",
            m.payload
        );
        assert_eq!(
            Some(&e.received_ns),
            time_of.get(&gas),
            "the database's time of packet {packet}"
        );
        let at = humantime::parse_rfc3339(&e.received).expect("RFC 3339");
        let ns = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        assert_eq!(ns, u128::try_from(e.received_ns).unwrap(), "{}", e.received);
        *seen.entry(gas).or_default() += 1;
    }
    assert_eq!(seen.len(), want.len(), "one event (at least) per packet");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "EVENTS broker_restart: packets={} events={} duplicates={duplicates}",
        want.len(),
        msgs.len()
    );
}
