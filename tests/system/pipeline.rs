//! The whole path, fixture lines to real Mosquitto, VictoriaMetrics (v2 API) and
//! InfluxDB 1.x (v1 API), and restarts that resume from the cursors.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::gateway::{
    assert_mqtt_exactly, counts, expected_packets, fixture, readings_received, run_stdin, Expected,
};
use crate::support::{InfluxDb1, Mosquitto, Point, Subscriber, VictoriaMetrics};

const EXIT: Duration = Duration::from_secs(60);

fn all_fixtures() -> String {
    [
        "probe-rs-session.log",
        "vcp-serial.jsonl",
        "legacy-bmp280.log",
    ]
    .map(fixture)
    .join("\n")
}

fn mqtt_section(mosquitto: &Mosquitto, client_id: &str) -> String {
    format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"{client_id}\"\ntopic_prefix = \"iiot\"\nqos = 1\nreconnect_max = \"1s\"\n",
        mosquitto.url()
    )
}

fn base(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n{extra}",
        dir.join("data").display()
    )
}

/// (measurement, node, unit, value) of a stored point, for multiset comparison.
type Key = (String, String, Option<String>, String);

fn point_key(p: &Point) -> Key {
    let measurement = p.measurement.clone();
    let node = p.tag("node").unwrap_or_default().to_string();
    let unit = p.tag("unit").map(str::to_string);
    (measurement, node, unit, format!("{}", p.value))
}

fn expected_key(e: &Expected) -> Key {
    let value: f64 = e.value.parse().expect("numeric fixture value");
    (
        e.metric.clone(),
        e.node.clone(),
        e.unit.clone(),
        format!("{value}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_reading_reaches_mosquitto_and_victoriametrics_v2() {
    let mosquitto = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-fixtures", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = base(
        dir.path(),
        &format!(
            "{}\n[influxdb]\nurl = \"{}\"\napi = \"v2\"\norg = \"plant\"\nbucket = \"telemetry\"\ntoken = \"t0k3n\"\nflush_interval = \"50ms\"\n",
            mqtt_section(&mosquitto, "gw-fixtures"),
            vm.url()
        ),
    );
    let input = all_fixtures();
    let (status, log) = run_stdin(dir.path(), &config, input.as_bytes(), EXIT);
    assert!(status.success(), "gateway failed: {status}\n{log}");

    let packets = expected_packets(&input);
    assert_eq!(packets.len(), 40 + 10 + 1, "fixture packets");
    let expected: Vec<Expected> = packets.into_iter().flatten().collect();

    // MQTT: every topic and payload, as the firmware wrote the number.
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    let want = counts(expected.iter().map(|e| (e.topic("iiot"), e.value.clone())));
    assert!(want.contains_key(&("iiot/node2/pressure".to_string(), "1013.25".to_string())));
    let status_msgs: Vec<_> = sub
        .messages()
        .into_iter()
        .filter(|m| m.topic == "iiot/gateway/status")
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        status_msgs.first().map(String::as_str),
        Some("online"),
        "{status_msgs:?}\n{log}"
    );
    assert_eq!(
        status_msgs.last().map(String::as_str),
        Some("offline"),
        "{status_msgs:?}"
    );

    // VictoriaMetrics through the v2 write API: every point once.
    let points: Vec<Point> = vm
        .points()
        .await
        .into_iter()
        .filter(|p| p.field == "value")
        .collect();
    assert_eq!(
        counts(points.iter().map(point_key)),
        counts(expected.iter().map(expected_key)),
        "points in VictoriaMetrics"
    );
}

/// A recorded log: each fixture line prefixed with its receive time, 10 s apart.
fn recorded(text: &str, start_ns: i64) -> (String, Vec<i64>) {
    let mut out = String::new();
    let mut times = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ns = start_ns + i as i64 * 10_000_000_000;
        let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64);
        out.push_str(&format!("{} {line}\n", humantime::format_rfc3339_nanos(t)));
        if crate::gateway::expected(line).is_some() {
            times.push(ns);
        }
    }
    (out, times)
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_log_replays_into_influxdb_v1_with_one_timestamp_per_packet() {
    let influx = InfluxDb1::start();
    influx.create_database("telemetry");
    let dir = tempfile::tempdir().unwrap();
    let text = fixture("probe-rs-session.log");
    let start = 1_795_000_000_000_000_000; // 2026-11-17, inside the default retention
    let (recording, times) = recorded(&text, start);
    let path = dir.path().join("session.log");
    std::fs::write(&path, recording).unwrap();
    let config = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\nspeed = 0\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nflush_interval = \"50ms\"\n",
        path.display(),
        dir.path().join("data").display(),
        influx.url()
    );
    let mut gw =
        crate::gateway::TestGateway::start(dir.path(), &config, std::process::Stdio::null());
    let status = gw.wait(EXIT);
    assert!(status.success(), "{status}\n{}", gw.log());

    let packets = expected_packets(&text);
    assert_eq!(packets.len(), 40);
    let points = influx.points("telemetry").await;
    let mut by_time: BTreeMap<i64, Vec<Key>> = BTreeMap::new();
    for p in &points {
        by_time.entry(p.ts_ns).or_default().push(point_key(p));
    }
    // One timestamp per packet, the recorded one, holding exactly that packet's readings.
    assert_eq!(by_time.keys().copied().collect::<Vec<_>>(), times);
    for ((ts, got), packet) in by_time.iter_mut().zip(&packets) {
        got.sort();
        let mut want: Vec<Key> = packet.iter().map(expected_key).collect();
        want.sort();
        assert_eq!(*got, want, "packet at {ts}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_from_cursors_without_loss_or_duplicates() {
    let mosquitto = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    vm.stop();
    let sub = Subscriber::connect(mosquitto.port, "watcher-restart", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "{}\n[influxdb]\nurl = \"{}\"\napi = \"v2\"\nbucket = \"b\"\nflush_interval = \"50ms\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n",
        mqtt_section(&mosquitto, "gw-restart"),
        vm.url()
    );
    let short_drain =
        base(dir.path(), &sinks).replace("drain_timeout = \"20s\"", "drain_timeout = \"2s\"");
    let input = fixture("vcp-serial.jsonl");
    let expected: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();

    // First run: the database is down. MQTT gets everything; the rest stays buffered and the
    // gateway says so with a non-zero exit.
    let (status, log) = run_stdin(dir.path(), &short_drain, input.as_bytes(), EXIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("{} readings stay buffered", expected.len())),
        "{log}"
    );
    sub.wait_for(|m| m.len() > expected.len(), Duration::from_secs(10))
        .await;

    // Second run, database back, no new input: the backlog is delivered, MQTT sends nothing
    // again (its cursor had moved), and every point is in the database exactly once.
    vm.start_again();
    let (status, log) = run_stdin(dir.path(), &base(dir.path(), &sinks), b"", EXIT);
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("({} readings buffered)", expected.len())),
        "{log}"
    );
    let points: Vec<Point> = vm.points().await;
    assert_eq!(
        counts(points.iter().map(point_key)),
        counts(expected.iter().map(expected_key)),
        "points after restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counts(readings_received(&sub, "iiot")),
        counts(expected.iter().map(|e| (e.topic("iiot"), e.value.clone()))),
        "MQTT messages: each once"
    );
}

/// The `events` measurement as (kind, node, ts) rows.
async fn events(influx: &InfluxDb1, db: &str) -> Vec<(String, String, i64)> {
    let mut rows: Vec<(String, String, i64)> = influx
        .all_points(db)
        .await
        .into_iter()
        .filter(|p| p.measurement == "events")
        .map(|p| {
            (
                p.tag("kind").unwrap_or_default().to_string(),
                p.tag("node").unwrap_or_default().to_string(),
                p.ts_ns,
            )
        })
        .collect();
    rows.sort_by_key(|r| r.2);
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_events_reach_the_database_as_annotations() {
    let mut influx = InfluxDb1::start();
    influx.create_database("telemetry");
    let dir = tempfile::tempdir().unwrap();
    // A recorded session with a node reboot: started, the reboot at the first packet after
    // it, stopped.
    let text = fixture("probe-rs-session.log");
    let (recording, times) = recorded(&text, 1_795_000_000_000_000_000);
    let path = dir.path().join("session.log");
    std::fs::write(&path, recording).unwrap();
    let sink = format!(
        "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"telemetry\"\nflush_interval = \"50ms\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n",
        influx.url()
    );
    let config = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\nspeed = 0\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n{sink}",
        path.display(),
        dir.path().join("data").display(),
    );
    let mut gw =
        crate::gateway::TestGateway::start(dir.path(), &config, std::process::Stdio::null());
    assert!(gw.wait(EXIT).success(), "{}", gw.log());
    let got = events(&influx, "telemetry").await;
    let mut kinds: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["gateway_started", "gateway_stopped", "node_reboot"],
        "{got:?}"
    );
    // The reboot is stamped with the recorded time of the first packet after it (the 22nd
    // packet of the session, whose `ts` went back to 10500).
    let reboot = got.iter().find(|e| e.0 == "node_reboot").unwrap();
    assert_eq!(reboot.2, times[21], "{got:?}");

    // A database outage is recorded when it begins and when it ends.
    influx.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = crate::gateway::TestGateway::start(
        dir.path(),
        &base(dir.path(), &sink),
        std::process::Stdio::piped(),
    );
    let mut stdin = gw.stdin();
    use std::io::Write as _;
    writeln!(stdin, "{}", fixture("legacy-bmp280.log").trim()).unwrap();
    gw.wait_log("sink unreachable", Duration::from_secs(10))
        .await;
    influx.start_again();
    gw.wait_log("sink connected", Duration::from_secs(10)).await;
    drop(stdin);
    assert!(gw.wait(EXIT).success(), "{}", gw.log());
    let got = events(&influx, "telemetry").await;
    let outage: Vec<(&str, &str)> = got
        .iter()
        .filter(|e| e.0.starts_with("sink_outage"))
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        outage,
        [
            ("sink_outage_begun", "influxdb"),
            ("sink_outage_ended", "influxdb")
        ]
    );
}

/// `[influxdb] precision`: the write uses it (InfluxDB 1.x's own name for microseconds is
/// `u`; `us` would be taken as nanoseconds, silently), and packets stamped within one unit
/// stay distinct points: each gets the previous time + 1 unit.
#[tokio::test(flavor = "multi_thread")]
async fn packets_within_one_unit_of_the_precision_stay_distinct_points() {
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let packet = |i: u32| format!("{{\"n1\":{{\"t\":2{i}.5}}}}");
    // 2026-11-17, inside the default retention; three packets in the same nanosecond, one
    // 10.5 s later.
    let t0: i64 = 1_795_000_000_123_456_789;
    let at = |ns: i64| {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64))
    };
    let recording = format!(
        "{t} {}\n{t} {}\n{t} {}\n{} {}\n",
        packet(0),
        packet(1),
        packet(2),
        at(t0 + 10_500_000_000),
        packet(3),
        t = at(t0),
    );
    let path = dir.path().join("burst.log");
    std::fs::write(&path, recording).unwrap();

    let s = 1_000_000_000;
    let us = 1_000;
    let whole_s = t0 - t0 % s;
    let whole_us = t0 - t0 % us;
    for (precision, want) in [
        (
            "s",
            vec![whole_s, whole_s + s, whole_s + 2 * s, whole_s + 10 * s],
        ),
        (
            "us",
            vec![
                whole_us,
                whole_us + us,
                whole_us + 2 * us,
                t0 + 10_500_000_000 - 789,
            ],
        ),
    ] {
        let db = format!("precision_{precision}");
        influx.create_database(&db);
        let run = dir.path().join(precision);
        std::fs::create_dir_all(&run).unwrap();
        let config = format!(
            "[source]\nkind = \"file\"\npath = \"{}\"\nspeed = 0\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\nprecision = \"{precision}\"\nflush_interval = \"50ms\"\n",
            path.display(),
            run.join("data").display(),
            influx.url()
        );
        let mut gw = crate::gateway::TestGateway::start(&run, &config, std::process::Stdio::null());
        let status = gw.wait(EXIT);
        let log = crate::gateway::plain(&gw.log());
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("packets_time_shifted=2"), "{log}");

        let mut points: Vec<(i64, f64)> = influx
            .points(&db)
            .await
            .iter()
            .map(|p| (p.ts_ns, p.value))
            .collect();
        points.sort_by_key(|p| p.0);
        let times: Vec<i64> = points.iter().map(|p| p.0).collect();
        assert_eq!(times, want, "precision {precision}");
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        assert_eq!(values, [20.5, 21.5, 22.5, 23.5], "precision {precision}");

        // A restart on the same outbox continues after the newest packet time: a packet
        // recorded at t0 again does not take the first packet's time (and overwrite it).
        let again = run.join("again.log");
        std::fs::write(&again, format!("{} {}\n", at(t0), packet(4))).unwrap();
        let config = config.replace(&path.display().to_string(), &again.display().to_string());
        let mut gw = crate::gateway::TestGateway::start(&run, &config, std::process::Stdio::null());
        assert!(gw.wait(EXIT).success(), "{}", gw.log());
        let mut points: Vec<(i64, f64)> = influx
            .points(&db)
            .await
            .iter()
            .map(|p| (p.ts_ns, p.value))
            .collect();
        points.sort_by_key(|p| p.0);
        let unit = if precision == "s" { s } else { us };
        assert_eq!(points.len(), 5, "precision {precision}: {points:?}");
        assert_eq!(points[4], (want[3] + unit, 24.5), "precision {precision}");
    }
}
