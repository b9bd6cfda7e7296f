//! Commands from MQTT to our Node 1 firmware, end to end: Node 1 runs in QEMU (the emulator
//! image, the published test key) behind an emulated air that loses 20 % of the frames each
//! way (`radio_emulator.rs`), and the gateway reaches it both ways it can:
//! - through Node 2: our Node 2 firmware in QEMU on the other end of the air, the gateway's
//!   `serial` source on its VCP writing `cmd` lines to it (`src/source/relay.rs`);
//! - with its own `rylr998` source in Node 2's place: the air's other end is the gateway's
//!   modem port, a pty.
//!
//! Each way: `ping` publishes Node 1's info (this firmware's version) on `iiot/node1/info`;
//! `identify`; `interval 5s` takes Node 1 from its 2 s to 5 s, measured from the gateway's
//! receive times (the database's timestamps); every command is confirmed exactly once (its
//! MQTT states) and applied once (Node 1's VCP), also one queued just before the gateway is
//! SIGKILLed and sent only after it restarts. An unknown command ends `rejected` with nothing
//! of it on the air; a `POST` without the token gets 401; and once Node 1 is stopped, a
//! command to it ends `expired`.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lora_link::downlink::Kind;
use lora_link::secure;
use serde_json::Value;

use crate::firmware::{
    boot_node1, boot_node2, brought_a_command, firmware_version, received_at, Board, TEST_KEY,
};
use crate::gateway::TestGateway;
use crate::radio_emulator::{Air, End, RadioEmulator};
use crate::support::{free_port, mqtt_publish, wait_until, InfluxDb1, Mosquitto, Subscriber};

const WAIT: Duration = Duration::from_secs(60);
const NODE1: u16 = 1;
const NODE2: u16 = 2;
const TOKEN: &str = "firmware-commands-token";
/// [`TEST_KEY`], as the gateway's config takes it (published: docs/PROTOCOL.md's vectors).
const TEST_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";
/// The loss model's seed: a fate depends on the packet and the attempt, not on timing
/// (`radio_emulator.rs`); this one leaves several packets delivered on their first try at
/// each interval, whose receive times show it.
const SEED: u64 = 1;
/// How long an unconfirmed command lives: long enough for a few uplinks at 5 s lost on the
/// air, short enough to see one expire.
const EXPIRE_AFTER_S: u64 = 25;
/// The commands the test sends and Node 1 takes, in order: `(id, JSON, what Node 1's VCP
/// says it applied)`. `c-kill` is queued just before the gateway is killed.
const COMMANDS: [(&str, &str, &str); 4] = [
    ("c-ping", r#""command": "ping""#, "kind=ping value=0"),
    (
        "c-identify",
        r#""command": "identify", "value": "2s""#,
        "kind=identify value=2",
    ),
    (
        "c-interval",
        r#""command": "interval", "value": "5s""#,
        "kind=interval value=5",
    ),
    ("c-kill", r#""command": "ping""#, "kind=ping value=0"),
];

/// How the gateway reaches Node 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ThroughNode2,
    ModemSource,
}

/// Node 1 on the air, and what is on the other end.
struct Chain {
    node1: Option<Board>,
    node1_vcp: PathBuf,
    _node2: Option<Board>,
    /// The gateway's modem pty slave, held open while the gateway restarts.
    _slave: Option<std::fs::File>,
    radio: RadioEmulator,
    config: String,
}

fn start_chain(
    way: Way,
    dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    port: u16,
    loss_per_mille: u64,
) -> Chain {
    let common = format!(
        "[storage]\ndir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\
         [downlink]\nexpire_after = \"{EXPIRE_AFTER_S}s\"\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-firmware-commands\"\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"commands\"\nflush_interval = \"50ms\"\n",
        dir.join("data").display(),
        mosquitto.url(),
        influx.url()
    );
    let air = Air {
        loss_per_mille,
        corrupt_per_mille: 0,
        seed: SEED,
        interference_before: None,
    };
    match way {
        Way::ThroughNode2 => {
            let (node2, _, node2_pty, node2_modem) = boot_node2(dir);
            let (node1, node1_vcp, node1_modem) = boot_node1(dir);
            let config = format!(
                "[source]\nkind = \"serial\"\npath = \"{node2_pty}\"\nbaud = 115200\n{common}"
            );
            let node2_end = End::connect(node2_modem, NODE2);
            let node1_end = End::connect(node1_modem, NODE1);
            Chain {
                node1: Some(node1),
                node1_vcp,
                _node2: Some(node2),
                _slave: None,
                radio: RadioEmulator::start(node1_end, node2_end, air),
                config,
            }
        }
        Way::ModemSource => {
            let (master, slave_path) = crate::sources::pty();
            // Held open by the test: the master never reads EIO while the gateway restarts.
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&slave_path)
                .unwrap();
            let (node1, node1_vcp, node1_modem) = boot_node1(dir);
            let config = format!(
                "[source]\nkind = \"rylr998\"\npath = \"{slave_path}\"\n\
                 [source.nodes.1]\nname = \"node1\"\nkey = \"{TEST_KEY_HEX}\"\n{common}"
            );
            // SAFETY: `master` is our pty master, owned by the end from here on.
            let gateway_end = End::pty(unsafe { OwnedFd::from_raw_fd(master) }, NODE2);
            let node1_end = End::connect(node1_modem, NODE1);
            Chain {
                node1: Some(node1),
                node1_vcp,
                _node2: None,
                _slave: Some(slave),
                radio: RadioEmulator::start(node1_end, gateway_end, air),
                config,
            }
        }
    }
}

impl Chain {
    fn node1_log(&self) -> String {
        std::fs::read_to_string(&self.node1_vcp).unwrap_or_default()
    }

    /// Node 1's `acked seq=` lines so far.
    fn acked(&self) -> usize {
        self.node1_log()
            .lines()
            .filter(|l| l.starts_with("acked seq="))
            .count()
    }

    async fn wait_acked(&self, n: usize, what: &str) {
        wait_until(what, WAIT, || async { self.acked() >= n }).await;
    }
}

/// The states `iiot/node1/commands/<id>` carried, in order.
fn states(sub: &Subscriber, id: &str) -> Vec<String> {
    sub.messages()
        .iter()
        .filter(|m| m.topic == format!("iiot/node1/commands/{id}"))
        .map(|m| {
            let v: Value = serde_json::from_str(&m.payload).unwrap();
            assert_eq!(v["id"], id, "{v}");
            v["state"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn wait_state(sub: &Subscriber, id: &str, state: &str, timeout: Duration) {
    sub.wait_for(|_| states(sub, id).iter().any(|s| s == state), timeout)
        .await;
}

/// `POST`s `body` to `url`, with `token` if any: the status.
async fn post(http: &reqwest::Client, url: &str, body: &str, token: Option<&str>) -> u16 {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn send(mosquitto: &Mosquitto, id: &str, json: &str) {
    let body = format!("{{\"id\": \"{id}\", {json}}}");
    mqtt_publish(mosquitto.port, "iiot/node1/commands", &body, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_from_mqtt_reach_node1_through_node2_over_a_lossy_air() {
    commands_reach_node1(Way::ThroughNode2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_from_mqtt_reach_node1_through_the_gateways_modem_over_a_lossy_air() {
    commands_reach_node1(Way::ModemSource).await;
}

async fn commands_reach_node1(way: Way) {
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("commands");
    let sub = Subscriber::connect(
        mosquitto.port,
        "watch-commands",
        "iiot/node1/commands/#",
        true,
    )
    .await;
    let info = Subscriber::connect(mosquitto.port, "watch-info", "iiot/node1/info", true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut chain = start_chain(way, dir.path(), &mosquitto, &influx, port, 200);
    let mut gw = TestGateway::start(dir.path(), &chain.config, Stdio::null());
    gw.wait_log("mqtt commands connected", WAIT).await;
    chain.wait_acked(6, "Node 1's first six uplinks").await;

    // ping, identify, interval: each sent once on MQTT, confirmed before the next.
    for (id, json, _) in &COMMANDS[..3] {
        send(&mosquitto, id, json).await;
        wait_state(&sub, id, "confirmed", WAIT).await;
    }
    let version = firmware_version().map(|p| p.to_string()).join(".");
    let infos = info
        .wait_for(
            |m| {
                m.iter().any(|m| {
                    serde_json::from_str::<Value>(&m.payload).unwrap()["version"]
                        == version.as_str()
                })
            },
            WAIT,
        )
        .await;
    let first: Value = serde_json::from_str(&infos[0].payload).unwrap();
    assert_eq!(first["boots"], 1, "{first}");

    // A few uplinks at the new interval.
    let after_interval = chain.acked();
    chain
        .wait_acked(after_interval + 5, "five uplinks at 5 s")
        .await;

    // Queued, then the gateway is killed before Node 1's next uplink (5 s away: it was just
    // acknowledged) can take it; sent once the gateway is back.
    let acked = chain.acked();
    chain.wait_acked(acked + 1, "an uplink").await;
    let (id, json, _) = COMMANDS[3];
    send(&mosquitto, id, json).await;
    wait_state(&sub, id, "queued", Duration::from_secs(3)).await;
    gw.signal(libc::SIGKILL);
    gw.wait(WAIT);
    assert_eq!(states(&sub, id), ["queued"], "killed before it was sent");
    drop(gw);
    let gw = TestGateway::start(dir.path(), &chain.config, Stdio::null());
    wait_state(&sub, id, "confirmed", WAIT).await;

    // Refused at once, nothing on the air; no token, no command.
    send(&mosquitto, "c-warp", r#""command": "warp""#).await;
    wait_state(&sub, "c-warp", "rejected", WAIT).await;
    let url = format!("http://127.0.0.1:{port}/api/nodes/node1/commands");
    let http = reqwest::Client::new();
    let no_token = post(&http, &url, r#"{"id": "c-anon", "command": "ping"}"#, None).await;
    assert_eq!(no_token, 401);

    // Node 1 is gone: a command to it expires.
    drop(chain.node1.take());
    let body = r#"{"id": "c-gone", "command": "identify"}"#;
    assert_eq!(post(&http, &url, body, Some(TOKEN)).await, 202);
    wait_state(
        &sub,
        "c-gone",
        "expired",
        Duration::from_secs(EXPIRE_AFTER_S + 30),
    )
    .await;

    check_states(&sub);
    let listed = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    let listed: Vec<Value> = serde_json::from_str(&listed.text().await.unwrap()).unwrap();
    let listed: BTreeMap<String, String> = listed
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!listed.contains_key("c-anon"), "{listed:?}");
    assert_eq!(listed.get("c-gone").map(String::as_str), Some("expired"));
    let node1_log = chain.node1_log();
    check_applied_once(&node1_log);
    check_on_air(&chain.radio);
    let (before, after) = check_interval(&influx, &node1_log).await;
    eprintln!(
        "{way:?}: commands confirmed once each; receive-time gaps before the interval command \
         {before:?} ms, after {after:?} ms; {} transmissions on the air",
        chain.radio.transmissions().len()
    );
    drop(gw);
}

/// On MQTT, each command Node 1 took was confirmed exactly once and never refused or
/// expired; the unknown one only refused.
fn check_states(sub: &Subscriber) {
    for (id, _, _) in COMMANDS {
        let s = states(sub, id);
        assert_eq!(
            s.iter().filter(|s| *s == "confirmed").count(),
            1,
            "{id}: {s:?}"
        );
        assert_eq!(
            s.last().map(String::as_str),
            Some("confirmed"),
            "{id}: {s:?}"
        );
        assert!(
            s.iter()
                .all(|s| ["queued", "sent", "confirmed"].contains(&s.as_str())),
            "{id}: {s:?}"
        );
    }
    assert_eq!(states(sub, "c-warp"), ["rejected"]);
}

/// Node 1 applied each command once; any other line of a command is a repeat of one.
fn check_applied_once(node1_log: &str) {
    let applied: Vec<&str> = node1_log
        .lines()
        .filter(|l| l.starts_with("command number=") && l.ends_with(" applied"))
        .map(|l| l.split_once(' ').unwrap().1.split_once(' ').unwrap().1)
        .collect();
    let want: Vec<String> = COMMANDS
        .iter()
        .map(|(_, _, what)| format!("{what} applied"))
        .collect();
    assert_eq!(applied, want, "Node 1's VCP:\n{node1_log}");
    assert!(
        node1_log
            .lines()
            .filter(|l| l.starts_with("command number="))
            .all(|l| l.ends_with(" applied") || l.ends_with(" again (not applied)")),
        "{node1_log}"
    );
}

/// Every command an ACK carried on the air was one of the test's four (never `warp`, never
/// the one to the stopped node): four numbers, of the kinds sent.
fn check_on_air(radio: &RadioEmulator) {
    let mut counters = Vec::new();
    let mut on_air = BTreeMap::new();
    for t in radio.transmissions() {
        if t.from == NODE1 {
            counters.push(
                secure::open_uplink(&TEST_KEY, NODE1, &t.data)
                    .unwrap()
                    .counter,
            );
            continue;
        }
        let command = counters
            .iter()
            .rev()
            .find_map(|c| secure::open_ack_with(&TEST_KEY, NODE1, *c, &t.data).ok())
            .expect("an ACK of a frame of node 1")
            .1;
        if let Some(c) = command {
            on_air.insert(c.number, c.kind);
        }
    }
    let kinds: Vec<Kind> = on_air.values().copied().collect();
    assert_eq!(
        kinds,
        [Kind::Ping, Kind::Identify(2), Kind::Interval(5), Kind::Ping],
        "the commands on the air, by number: {on_air:?}"
    );
}

/// The gateway's receive times of Node 1's packets sent one slot apart, each on its first try
/// (Node 1's VCP): 2 s apart before the interval command, 5 s after; an uplink confirming a
/// command went at once and is no slot.
async fn check_interval(influx: &InfluxDb1, node1_log: &str) -> (Vec<i64>, Vec<i64>) {
    let received = received_at(influx, "commands").await;
    let mut tries: BTreeMap<u16, u32> = BTreeMap::new();
    for line in node1_log.lines() {
        if let Some(rest) = line.strip_prefix("sent seq=") {
            let seq = rest.split_whitespace().next().unwrap().parse().unwrap();
            *tries.entry(seq).or_default() += 1;
        }
    }
    let at_once = brought_a_command(node1_log);
    let interval_seq = interval_brought_by(node1_log);
    // Packets delivered on their first try, at their slot: the gaps between two of them, per
    // slot, as long as no uplink between them went at once and none of those between them
    // took longer than a slot with its retransmissions (1 s apart), which would move the slots.
    let first_tries: Vec<u16> = tries
        .iter()
        .filter(|(s, n)| **n == 1 && received.contains_key(s))
        .map(|(s, _)| *s)
        .collect();
    let per_slot = |from: u16, to: u16, interval: u32| {
        let steady = (from..to).all(|s| !at_once.contains(&s))
            && (from + 1..to).all(|s| tries.get(&s).is_some_and(|n| n * 1_000 < interval + 500));
        steady.then(|| (received[&to] - received[&from]) / i64::from(to - from))
    };
    let gaps = |range: std::ops::Range<u16>, interval: u32| -> Vec<i64> {
        first_tries
            .windows(2)
            .filter(|w| range.contains(&w[0]) && range.contains(&w[1]))
            .filter_map(|w| per_slot(w[0], w[1], interval))
            .collect()
    };
    let before = gaps(0..interval_seq + 1, 2_000);
    let after = gaps(interval_seq + 1..u16::MAX, 5_000);
    for (gaps, want, what) in [(&before, 2_000, "before"), (&after, 5_000, "after")] {
        let mut sorted = gaps.clone();
        sorted.sort_unstable();
        assert!(
            gaps.len() >= 2,
            "{what} the interval command (seq {interval_seq}): {gaps:?}; tries {tries:?}, at once {at_once:?}, received {received:?}"
        );
        let median = sorted[sorted.len() / 2];
        // QEMU's clock falls behind on a loaded host: late, never early.
        assert!(
            gaps.iter().all(|g| (want - 300..=want + 1_500).contains(g))
                && (want - 200..=want + 500).contains(&median),
            "receive-time gaps {what} the interval command: {gaps:?} ms, want {want} ms"
        );
    }
    (before, after)
}

/// The seq whose ACK brought `interval 5`.
fn interval_brought_by(node1_log: &str) -> u16 {
    let mut acked = None;
    for line in node1_log.lines() {
        if let Some(seq) = line.strip_prefix("acked seq=") {
            acked = seq.parse().ok();
        } else if line.contains(" kind=interval ") && line.ends_with(" applied") {
            return acked.expect("an ACK before the interval command");
        }
    }
    panic!("Node 1 never applied the interval command:\n{node1_log}")
}

/// BENCHMARK, not a check (`--ignored`; BENCHMARKS.md, "Commands: from arrival to
/// confirmation"): our Node 1 firmware in QEMU (an uplink every 2 s) behind the gateway's
/// `rylr998` source on a lossless emulated air; 50 `ping`s over HTTP one at a time, each at a
/// pseudo-random moment of the node's cycle, timed from the `POST` to `confirmed` (polled
/// every 10 ms). Prints p50, p99 and max.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn bench_command_latency_on_the_emulated_node1() {
    const COUNT: usize = 50;
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let chain = start_chain(Way::ModemSource, dir.path(), &mosquitto, &influx, port, 0);
    let _gw = TestGateway::start(dir.path(), &chain.config, Stdio::null());
    chain.wait_acked(2, "Node 1's first uplinks").await;
    let url = format!("http://127.0.0.1:{port}/api/nodes/node1/commands");
    let http = reqwest::Client::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut latencies = Vec::new();
    for i in 0..COUNT {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 2_000)).await;
        let id = format!("b-{i}");
        let sent = std::time::Instant::now();
        let body = format!("{{\"id\": \"{id}\", \"command\": \"ping\"}}");
        assert_eq!(post(&http, &url, &body, Some(TOKEN)).await, 202);
        loop {
            assert!(sent.elapsed() < WAIT, "{id} never confirmed");
            let list = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            let list: Vec<Value> = serde_json::from_str(&list.text().await.unwrap()).unwrap();
            if list
                .iter()
                .any(|c| c["id"] == id.as_str() && c["state"] == "confirmed")
            {
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((q * COUNT as f64).ceil() as usize).clamp(1, COUNT) - 1];
    eprintln!(
        "command latency on the emulated Node 1 (interval 2 s, {COUNT} pings): p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.99),
        latencies[COUNT - 1]
    );
}
