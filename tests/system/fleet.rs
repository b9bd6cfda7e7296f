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
