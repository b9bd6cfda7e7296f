//! A fleet on a clustered broker: an edge gateway given every node of a three-node NATS
//! cluster (JetStream, MQTT sessions replicated to all three) keeps publishing while the node
//! it is connected to dies, and again when the next one dies. Counts are exact: the database
//! holds every reading once, and a persistent subscriber on a node that stays up receives
//! every reading at least once (duplicates counted, printed).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::chaos::{
    api_status, assert_db_exactly, assert_mqtt_at_least_once, finish, readings_of, sleep,
    start_gateway, status_url, Db, Feeder,
};
use crate::gateway::{counts, expected_packets, fixture, run_stdin, Expected, TestGateway, BIN};
use crate::support::{free_port, wait_until, InfluxDb1, Mosquitto, NatsCluster, Subscriber};

/// Packets per second the edge gateway receives.
const RATE: u32 = 25;
/// Longest wait for the edge gateway's exit after two node deaths (its drain_timeout is
/// longer).
const DEGRADED_CLUSTER_EXIT: Duration = Duration::from_secs(150);

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
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"180s\"\n\n\
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
    cluster.start_again(0, Duration::from_secs(30));
    sleep(Duration::from_secs(1)).await;
    cluster.kill(second);
    let third = wait_moved(&status, &cluster, second).await;
    sleep(Duration::from_secs(2)).await;
    let (sent, stdin) = feeder.stop();
    // A cluster down to two nodes, one of them just back, can confirm slowly for a while
    // (NATS 2.9 was seen at ~60 QoS 1 publishes/s, seconds per publish at times, for a
    // backlog of thousands): the gateway gets the time the cluster needs.
    drop(stdin);
    let exit = gw.wait(DEGRADED_CLUSTER_EXIT);
    assert!(exit.success(), "gateway exit {exit}; log:\n{}", gw.log());

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

/// A broker that keeps the connection open but stops acknowledging (frozen with SIGSTOP: the
/// kernel still takes what the gateway writes) is left after `ack_timeout`, long before the
/// keep-alive would notice, and the next broker of the list gets everything unconfirmed.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_stops_acknowledging_is_left_for_the_next_after_ack_timeout() {
    const ACK_TIMEOUT: Duration = Duration::from_secs(2);
    const KEEP_ALIVE: Duration = Duration::from_secs(60);
    let mut first = Mosquitto::start();
    let second = Mosquitto::start();
    let subs = [
        Subscriber::connect(first.port, "stall-watcher-1", "iiot/#", false).await,
        Subscriber::connect(second.port, "stall-watcher-2", "iiot/#", false).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"60s\"\n\n\
         [storage]\ndir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [mqtt]\nbroker_url = [\"{}\", \"{}\"]\nclient_id = \"fleet-stall\"\n\
         keep_alive = \"{}s\"\nack_timeout = \"{}s\"\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n",
        dir.path().join("data").display(),
        first.url(),
        second.url(),
        KEEP_ALIVE.as_secs(),
        ACK_TIMEOUT.as_secs(),
    );
    let mut gw = start_gateway(dir.path(), &config).await;
    let status = status_url(&gw.log());
    wait_until(
        "the MQTT sink on the first broker",
        Duration::from_secs(30),
        || async { mqtt_endpoint(&status).await == Some(first.url()) },
    )
    .await;
    let feeder = Feeder::start(gw.stdin(), 0, RATE);
    sleep(Duration::from_secs(2)).await;

    first.freeze();
    let frozen_at = std::time::Instant::now();
    wait_until(
        "the MQTT sink on the second broker",
        Duration::from_secs(30),
        || async { mqtt_endpoint(&status).await == Some(second.url()) },
    )
    .await;
    let moved_after = frozen_at.elapsed();
    sleep(Duration::from_secs(2)).await;
    let (sent, stdin) = feeder.stop();
    first.thaw();
    finish(&mut gw, stdin);

    let log = gw.log();
    assert!(
        log.contains("no acknowledgement for") && log.contains("[mqtt] ack_timeout"),
        "the log names the stall:\n{log}"
    );
    assert!(
        moved_after >= ACK_TIMEOUT && moved_after < KEEP_ALIVE / 4,
        "moved {moved_after:?} after the freeze: the ack timeout, not the keep-alive"
    );
    // Every reading reached a subscriber: what the first broker confirmed before it froze,
    // and everything else (resent) through the second.
    let want = readings_of(sent.clone());
    assert!(sent.end >= u64::from(RATE) * 3, "fed {sent:?}");
    let want_counts = counts(want.iter().map(|e| (e.topic("iiot"), e.value.clone())));
    let got = |subs: &[Subscriber; 2]| {
        counts(
            subs.iter()
                .flat_map(Subscriber::messages)
                .filter(|m| m.topic != "iiot/gateway/status")
                .map(|m| (m.topic, m.payload)),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let have = got(&subs);
        let missing: Vec<_> = want_counts
            .keys()
            .filter(|k| !have.contains_key(*k))
            .collect::<Vec<_>>();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.len();
        }
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(missing, 0, "readings received by neither subscriber");
    let on_second = subs[1].messages().len();
    assert!(on_second > 0, "the second broker carried the rest");
    eprintln!(
        "FLEET ack_stall: sent={} moved_after={moved_after:?} on_second={on_second}",
        want.len()
    );
}

/// A broker that is slow for less than `ack_timeout`, just after the sink had nothing to
/// wait for, is kept: the clock starts when publishes start waiting, not at the last
/// acknowledgement before an idle spell.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_slow_for_less_than_ack_timeout_after_an_idle_spell_is_kept() {
    use std::io::Write as _;
    let mut broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "slow-watcher", "iiot/#", false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"slow-edge\"\n\
         keep_alive = \"60s\"\nack_timeout = \"2s\"\n",
        dir.path().join("data").display(),
        broker.url(),
    );
    let mut gw = start_gateway(dir.path(), &config).await;
    gw.wait_log("sink connected sink=\"mqtt\"", Duration::from_secs(20))
        .await;
    let mut stdin = gw.stdin();
    // One packet acknowledged, then idle for twice the timeout.
    stdin.write_all(crate::chaos::line(0).as_bytes()).unwrap();
    sleep(Duration::from_secs(4)).await;
    // The next packet meets a broker that answers 1.2 s late.
    broker.freeze();
    stdin.write_all(crate::chaos::line(1).as_bytes()).unwrap();
    sleep(Duration::from_millis(1200)).await;
    broker.thaw();
    sleep(Duration::from_secs(3)).await;
    finish(&mut gw, Some(stdin));

    let log = gw.log();
    assert!(
        !log.contains("no acknowledgement for"),
        "a slow answer is no stall:\n{log}"
    );
    assert_eq!(
        log.matches("sink connected sink=\"mqtt\"").count(),
        1,
        "one connection throughout:\n{log}"
    );
    assert_mqtt_at_least_once(&sub, &readings_of(0..2)).await;
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

/// The readings of `events`, as `Expected`s (values as their JSON number tokens), sorted.
fn sorted_readings(events: &[Event]) -> Vec<Expected> {
    let mut got: Vec<Expected> = events
        .iter()
        .flat_map(|e| &e.readings)
        .map(|r| Expected {
            node: r.node.clone(),
            metric: r.metric.clone(),
            unit: r.unit.clone(),
            value: r.value.get().to_string(),
        })
        .collect();
    got.sort();
    got
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
        let got = sorted_readings(std::slice::from_ref(&e));
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

/// A central ingest tier: three `kind = "mqtt"` instances in one share group take an edge
/// gateway's packet events from Mosquitto into InfluxDB 1.x. One is SIGKILLed mid-stream and
/// started again. Every reading is in the database exactly once, with the edge's receive time
/// (the edge's outbox has them too) and its gateway and site as tags.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_ingest_instance_loses_nothing_and_duplicates_nothing() {
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("telemetry");
    let root = tempfile::tempdir().unwrap();
    let ingest_config = |i: usize| {
        format!(
            "[source]\nkind = \"mqtt\"\nurl = \"{}\"\nshare_group = \"ingest\"\nclient_id = \"ingest-{i}\"\n\
             reconnect_initial = \"100ms\"\nreconnect_max = \"500ms\"\ndrain_timeout = \"20s\"\n\
             [storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
             [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nflush_interval = \"100ms\"\n",
            mosquitto.url(),
            root.path().join(format!("ingest-{i}")).display(),
            influx.url()
        )
    };
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let d = root.path().join(format!("run-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let mut ingest = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let gw = TestGateway::start(dir, &ingest_config(i), Stdio::null());
        gw.wait_log("mqtt source connected", Duration::from_secs(20))
            .await;
        ingest.push(gw);
    }
    let edge_dir = root.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"30s\"\n[gateway]\nid = \"edge-1\"\nsite = \"plant a\"\n\
         [storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"edge-1\"\npacket_events = true\n",
        edge_dir.join("data").display(),
        mosquitto.url()
    );
    let mut edge = start_gateway(&edge_dir, &edge_config).await;
    let feeder = Feeder::start(edge.stdin(), 0, 50);
    sleep(Duration::from_secs(2)).await;

    // One instance dies without a word, mid-stream, and comes back.
    ingest[1].signal(libc::SIGKILL);
    ingest[1].wait(Duration::from_secs(10));
    sleep(Duration::from_secs(1)).await;
    ingest[1] = TestGateway::start(&dirs[1], &ingest_config(1), Stdio::null());
    ingest[1]
        .wait_log("mqtt source connected", Duration::from_secs(20))
        .await;
    sleep(Duration::from_secs(2)).await;
    let (sent, stdin) = feeder.stop();
    finish(&mut edge, stdin);

    let want = readings_of(sent.clone());
    wait_until(
        "every reading in InfluxDB",
        Duration::from_secs(30),
        || async { influx.points("telemetry").await.len() >= want.len() },
    )
    .await;
    sleep(Duration::from_millis(500)).await;
    let points = influx.points("telemetry").await;
    let key = |measurement: &str, node: &str, unit: Option<&str>, value: f64| {
        (
            measurement.to_string(),
            node.to_string(),
            unit.map(str::to_string),
            format!("{value}"),
        )
    };
    let got = counts(points.iter().map(|p| {
        key(
            &p.measurement,
            p.tag("node").unwrap_or_default(),
            p.tag("unit"),
            p.value,
        )
    }));
    let expected = counts(want.iter().map(|e| {
        key(
            &e.metric,
            &e.node,
            e.unit.as_deref(),
            e.value.parse().unwrap(),
        )
    }));
    assert_eq!(points.len(), want.len(), "every reading exactly once");
    assert_eq!(got, expected);
    assert!(
        points
            .iter()
            .all(|p| p.tag("gateway") == Some("edge-1") && p.tag("site") == Some("plant a")),
        "tagged with the edge gateway and its site"
    );
    // The edge's receive times: the points of each packet carry the time the edge stored.
    let edge_times = edge_packet_times(&edge_dir.join("data"));
    for p in points.iter().filter(|p| p.measurement == "gas_resistance") {
        assert_eq!(
            edge_times.get(&format!("{}", p.value)),
            Some(&p.ts_ns),
            "the edge's receive time"
        );
    }
    let all_took_part = ingest
        .iter()
        .filter(|gw| gw.log().contains("sink connected"))
        .count();
    eprintln!(
        "FLEET ingest_kill: sent={} db={} instances_writing={all_took_part}",
        want.len(),
        points.len()
    );
    for gw in &mut ingest {
        gw.signal(libc::SIGTERM);
        let status = gw.wait(Duration::from_secs(30));
        assert!(status.success(), "{}", gw.log());
    }
}

/// Receive time (ns) of each packet in an edge gateway's outbox, by its unique gas value.
fn edge_packet_times(data: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT value, ts FROM readings WHERE metric = 'gas_resistance'")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The acknowledgement waits for the commit, shown without luck in the timing: an ingest
/// instance whose outbox is full (the database is down, `on_full = "block"`) holds events it
/// received and cannot commit when it is SIGKILLed. They were never acknowledged, so the
/// broker delivers them again after the restart, and the database ends with every reading
/// exactly once. (Acknowledged on receipt, they would be lost.)
#[tokio::test(flavor = "multi_thread")]
async fn events_received_but_not_committed_are_delivered_again_after_a_kill() {
    let mosquitto = Mosquitto::start();
    let mut influx = InfluxDb1::start();
    influx.create_database("telemetry");
    let root = tempfile::tempdir().unwrap();
    let ingest_dir = root.path().join("ingest");
    std::fs::create_dir_all(&ingest_dir).unwrap();
    let ingest_config = format!(
        "[source]\nkind = \"mqtt\"\nurl = \"{}\"\nclient_id = \"ingest-full\"\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"500ms\"\n\
         [gateway]\nchannel_capacity = 64\n\
         [storage]\ndir = \"{}\"\nmax_bytes = \"1MiB\"\non_full = \"block\"\n[http]\nenabled = false\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nflush_interval = \"100ms\"\n\
         retry_initial = \"100ms\"\nretry_max = \"500ms\"\n",
        mosquitto.url(),
        ingest_dir.join("data").display(),
        influx.url()
    );
    influx.stop();
    let mut ingest = TestGateway::start(&ingest_dir, &ingest_config, Stdio::null());
    ingest
        .wait_log("mqtt source connected", Duration::from_secs(20))
        .await;
    let edge_dir = root.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"60s\"\n[gateway]\nid = \"edge-2\"\n\
         [storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"edge-2\"\npacket_events = true\n",
        edge_dir.join("data").display(),
        mosquitto.url()
    );
    let mut edge = start_gateway(&edge_dir, &edge_config).await;
    let feeder = Feeder::start(edge.stdin(), 0, 1000);
    ingest
        .wait_log("outbox at its disk budget", Duration::from_secs(60))
        .await;
    // Full: what arrives now waits in the channel, unacknowledged.
    sleep(Duration::from_millis(500)).await;
    ingest.signal(libc::SIGKILL);
    ingest.wait(Duration::from_secs(10));
    let (sent, stdin) = feeder.stop();
    finish(&mut edge, stdin);

    influx.start_again();
    let mut ingest = TestGateway::start(&ingest_dir, &ingest_config, Stdio::null());
    let want = readings_of(sent.clone());
    wait_until(
        "every reading in InfluxDB",
        Duration::from_secs(90),
        || async { influx.points("telemetry").await.len() >= want.len() },
    )
    .await;
    sleep(Duration::from_millis(500)).await;
    let points = influx.points("telemetry").await;
    let key = |measurement: &str, node: &str, value: f64| {
        (
            measurement.to_string(),
            node.to_string(),
            format!("{value}"),
        )
    };
    assert_eq!(points.len(), want.len(), "every reading exactly once");
    assert_eq!(
        counts(points.iter().map(|p| key(
            &p.measurement,
            p.tag("node").unwrap_or_default(),
            p.value
        ))),
        counts(
            want.iter()
                .map(|e| key(&e.metric, &e.node, e.value.parse().unwrap()))
        )
    );
    eprintln!(
        "FLEET ingest_full_kill: sent={} db={}",
        want.len(),
        points.len()
    );
    ingest.signal(libc::SIGTERM);
    assert!(
        ingest.wait(Duration::from_secs(30)).success(),
        "{}",
        ingest.log()
    );
}

/// A packet bigger than one event holds (here 1,203 readings, 90 KB of JSON: more than
/// rumqttc's default 10 KiB packet limit, which once stopped the sink) goes out as several
/// events with the same receive time, which together hold every reading once.
#[tokio::test(flavor = "multi_thread")]
async fn a_big_packet_goes_out_as_several_events_of_one_time() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(
        mosquitto.port,
        "big-watcher",
        "iiot/gateway/+/packets",
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"big-edge\"\npacket_events = true\n",
        dir.path().join("data").display(),
        mosquitto.url()
    );
    let nodes: Vec<String> = (1..=400)
        .map(|k| {
            format!(
                "\"n{k}\":{{\"t\":2{},\"h\":4{},\"g\":{}}}",
                k % 10,
                k % 7,
                1000 + k
            )
        })
        .collect();
    let line = format!(
        "{{\"ts\":1,\"id\":\"N2\",{},\"sig\":{{\"rssi\":-40,\"snr\":9}},\"sts\":{{\"rx\":1}}}}\n",
        nodes.join(",")
    );
    let want = expected_packets(&line).concat();
    assert_eq!(want.len(), 1203);
    let (status, log) = run_stdin(
        dir.path(),
        &config,
        line.as_bytes(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{log}");
    let msgs = sub
        .wait_for(
            |m| {
                m.iter()
                    .map(|m| m.payload.matches("\"node\"").count())
                    .sum::<usize>()
                    >= want.len()
            },
            Duration::from_secs(20),
        )
        .await;
    let events: Vec<Event> = msgs
        .iter()
        .map(|m| serde_json::from_str(&m.payload).expect("an event"))
        .collect();
    assert_eq!(events.len(), 2, "1,000 readings per event");
    assert!(events
        .iter()
        .all(|e| e.received_ns == events[0].received_ns));
    let got = sorted_readings(&events);
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
}

/// A message on the events topic that is not a packet event is quarantined with the reason
/// and acknowledged: after a restart of the instance (its persistent session resumed) it is
/// not delivered again, while the good event next to it is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_is_quarantined_once_and_never_redelivered() {
    let mosquitto = Mosquitto::start();
    let db = Db::vm();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"mqtt\"\nurl = \"{}\"\nclient_id = \"ingest-q\"\n\
         [storage]\ndir = \"{}\"\n[http]\nenabled = false\n\n{}",
        mosquitto.url(),
        dir.path().join("data").display(),
        db.section()
    );
    let mut gw = TestGateway::start(dir.path(), &config, Stdio::null());
    gw.wait_log("mqtt source connected", Duration::from_secs(20))
        .await;
    let topic = "iiot/gateway/edge-9/packets";
    crate::support::mqtt_publish(mosquitto.port, topic, "{\"received_ns\":\"soon\"}", false).await;
    let good = r#"{"gateway":"edge-9","received":"2026-11-29T12:00:00Z","received_ns":1796040000000000000,"readings":[{"node":"node1","metric":"temperature","unit":"celsius","value":21.5}]}"#;
    crate::support::mqtt_publish(mosquitto.port, topic, good, false).await;
    let quarantine = dir.path().join("data").join("quarantine.log");
    let bad_lines = || {
        std::fs::read_to_string(&quarantine)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("not a packet event"))
            .count()
    };
    wait_until(
        "the malformed event quarantined",
        Duration::from_secs(20),
        || async { bad_lines() == 1 },
    )
    .await;
    wait_until("the good event stored", Duration::from_secs(20), || async {
        !db.points().await.is_empty()
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(Duration::from_secs(30)).success(), "{}", gw.log());

    // The same session again: nothing is delivered a second time.
    let mut gw = TestGateway::start(dir.path(), &config, Stdio::null());
    gw.wait_log("mqtt source connected", Duration::from_secs(20))
        .await;
    sleep(Duration::from_secs(2)).await;
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(Duration::from_secs(30)).success(), "{}", gw.log());
    assert_eq!(bad_lines(), 1, "quarantined once, acknowledged");
    let points = db.points().await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(
        (points[0].ts_ns, points[0].tag("gateway"), points[0].value),
        (1_796_040_000_000_000_000, Some("edge-9"), 21.5)
    );
}
