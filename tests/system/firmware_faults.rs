//! The emulated chain with every fault of issue 26 injected in one run (`radio_emulator.rs`'s
//! [`Faults`], each at a given `AT+SEND` of a board): Node 1 and Node 2 in QEMU, a lossless
//! air otherwise, the gateway's `serial` source on Node 2's VCP writing to a real InfluxDB
//! 1.x and Mosquitto.
//!
//! - Node 1's modem refuses a send (`+ERR`): Node 1 sends again at once, not after its ACK
//!   timeout.
//! - A NACK as Node 2's: Node 1 retransmits.
//! - Node 1's modem restarts (`+READY`, its settings lost): Node 1 sets it up again and its
//!   traffic resumes.
//! - Node 2's modem refuses an ACK (`+ERR`): Node 2 sends it again at once.
//! - Node 2's modem restarts instead of sending an ACK: Node 2 sets it up again, acknowledges
//!   Node 1's retransmission as a repeat (not printed twice).
//! - Node 2's SHT3x fails for 16 reads (8 s): its lines carry `"n2":{}` meanwhile (three or
//!   more in a row, where the emulated sensor's own failure, one read in 20, gives one at most),
//!   never a stale value.
//! - Node 1's BME680 has no gas reading twice: Node 1 sends temperature and humidity anyway
//!   (Node 2's lines without `g`, no gas reading stored).
//! - Node 1 panics: it resets, comes back (boot 2, reset reason `panic` in its info, on MQTT
//!   too), and its frame counter has not gone back (Node 2 refuses nothing).
//!
//! And through all of it every packet Node 1 sent is printed by Node 2 and stored exactly once,
//! and Node 2's counts (`sts.rx`, `sts.err`) match its rules run over what it received.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lora_link::modem::Frame;
use lora_link::node2::{Node, Outcome, Peer, Receiver};
use lora_link::secure;
use lora_link::vcp::Report;
use serde_json::Value;

use crate::firmware::{boot_node1, boot_node2, TEST_KEY};
use crate::gateway::TestGateway;
use crate::radio_emulator::{Air, End, Fault, Faults, RadioEmulator};
use crate::support::{free_port, wait_until, InfluxDb1, Mosquitto, Subscriber};

const NODE1: u16 = 1;
const NODE2: u16 = 2;
const WAIT: Duration = Duration::from_secs(120);
/// Each fault at the n-th `AT+SEND` of a board (Node 1's are its uplinks, retransmissions
/// included; Node 2's its ACKs).
fn faults() -> Vec<(u16, usize, Fault)> {
    vec![
        (NODE1, 3, Fault::SendError(17)),
        (NODE2, 4, Fault::Inject("SENSOR16")),
        (NODE1, 7, Fault::Nack),
        (NODE1, 10, Fault::Restart),
        (NODE2, 12, Fault::SendError(10)),
        (NODE2, 15, Fault::Restart),
        (NODE1, 16, Fault::Inject("NOGAS2")),
        (NODE1, 20, Fault::Inject("PANIC")),
    ]
}
/// Packets Node 1 has acknowledged after its restart when the test stops.
const AFTER_PANIC: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_injected_in_one_run_and_every_packet_stored_exactly_once() {
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("faults");
    let info_sub = Subscriber::connect(mosquitto.port, "watch-info", "iiot/node1/info", true).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let (node2, node2_vcp, node2_pty, node2_modem) = boot_node2(dir.path());
    let (node1, node1_vcp, node1_modem) = boot_node1(dir.path());
    let cfg = format!(
        "[source]\nkind = \"serial\"\npath = \"{node2_pty}\"\nbaud = 115200\n\
         [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-faults\"\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"faults\"\nflush_interval = \"50ms\"\n",
        dir.path().join("data").display(),
        mosquitto.url(),
        influx.url()
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    let radio = RadioEmulator::start_with_faults(
        End::connect(node1_modem, NODE1),
        End::connect(node2_modem, NODE2),
        Air {
            loss_per_mille: 0,
            corrupt_per_mille: 0,
            seed: 26,
            interference_before: None,
        },
        Faults {
            at: faults(),
            key: Some(TEST_KEY),
        },
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until("Node 1 back from its panic", WAIT, || async {
        let log = read(&node1_vcp);
        log.split("panic: ")
            .nth(1)
            .is_some_and(|after| after.matches("acked seq=").count() >= AFTER_PANIC)
    })
    .await;
    drop(node1);
    // The last ACK's line and its packet's way to the database.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node1_log = read(&node1_vcp);
    let node2_log = read(&node2_vcp);
    let mut struck = radio.struck();
    let mut want = faults();
    // The two boards' faults interleave as timing has it.
    struck.sort_by_key(|(a, n, _)| (*a, *n));
    want.sort_by_key(|(a, n, _)| (*a, *n));
    assert_eq!(struck, want, "the faults that struck");

    check_node1_answers(&radio, &node1_log);
    let sent = packets_sent(&node1_log);
    let lines = check_node2(&radio, &node2_log);
    assert_eq!(
        lines.len(),
        sent,
        "one line per packet Node 1 sent ({sent}): {lines:?}"
    );
    check_counters(&radio);
    check_stack(&node1_log, &node2_log);

    // The gateway counts the nodes' starts by reason (QEMU sets no reset flag: `unknown`).
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "iiot_node_resets_total{node=\"node1\",reason=\"unknown\"} 1",
        "iiot_node_resets_total{node=\"node1\",reason=\"panic\"} 1",
        "iiot_node_resets_total{node=\"node2\",reason=\"unknown\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "{want} in /metrics:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("resets"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // The gateway stored each once, and heard of the panic.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(Duration::from_secs(30)).success(), "{}", gw.log());
    let stored = influx_count(&influx, "temperature").await;
    assert_eq!(
        stored, sent,
        "node1's temperatures in the database, one per packet"
    );
    let no_gas = lines
        .iter()
        .filter(|l| l["n1"].get("g").is_none() && l["n1"]["t"].is_number())
        .count();
    assert_eq!(no_gas, 2, "Node 2's lines without a gas reading");
    let gas = influx_count(&influx, "gas_resistance").await;
    assert_eq!(
        gas,
        sent - 2,
        "node1's gas readings: none for the two without"
    );
    let infos = info_sub.messages();
    let last: Value = serde_json::from_str(&infos.last().expect("node1's info").payload).unwrap();
    assert_eq!(
        (&last["boots"], &last["reset"]),
        (&2.into(), &"panic".into()),
        "{last}"
    );
    eprintln!(
        "faults: {} struck; Node 1 sent {sent} packets over {} AT+SENDs, every one printed and \
         stored once",
        struck.len(),
        radio
            .commands()
            .iter()
            .filter(|(a, c)| *a == NODE1 && c.starts_with(b"AT+SEND="))
            .count()
    );
    drop(node2);
}

/// Node 1's answers: at once after `+ERR`, a retransmission after the NACK, a set-up after
/// its modem's restart, a reset after the panic (and a set-up after it).
fn check_node1_answers(radio: &RadioEmulator, log: &str) {
    let sends: Vec<(Instant, Vec<u8>)> = radio
        .timed_commands()
        .into_iter()
        .filter(|(_, a, c)| *a == NODE1 && c.starts_with(b"AT+SEND="))
        .map(|(t, _, c)| (t, c))
        .collect();
    // Sends 3 (refused) and 4 carry the same frame, well within the 1 s ACK timeout.
    let gap = sends[3].0 - sends[2].0;
    assert!(
        sends[3].1 == sends[2].1 && gap < Duration::from_millis(900),
        "Node 1 sent again {gap:?} after the modem's +ERR"
    );
    let lines: Vec<&str> = log.lines().collect();
    let after = |prefix: &str| {
        let at = lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in Node 1's VCP:\n{log}"));
        lines.get(at + 1).copied().unwrap_or_default()
    };
    // "send failed seq=<n> error=<code>": the next line sends seq n again.
    let retried = |line: &str, what: &str| {
        let seq = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            after(line).starts_with(&format!("sent {seq} try=")),
            "after {what}: {:?}\n{log}",
            after(line)
        );
    };
    let refused = lines
        .iter()
        .find(|l| l.starts_with("send failed seq="))
        .expect("Node 1 saw the +ERR");
    assert!(refused.ends_with(" error=17"), "{refused}");
    retried(refused, "the +ERR");
    let nack = lines.iter().find(|l| l.starts_with("nack seq=")).unwrap();
    let seq = nack.trim_start_matches("nack ");
    assert!(
        after(nack).starts_with(&format!("sent {seq} try=2")),
        "after the NACK: {log}"
    );
    assert_eq!(
        log.matches("modem restarted: set-up again").count(),
        1,
        "{log}"
    );
    let version = crate::firmware::firmware_version()
        .map(|p| p.to_string())
        .join(".");
    let self_test = |boot: &str| {
        [
            format!("self-test: node1 {version} on qemu"),
            "self-test: region us915 (915000000 Hz, SF7, 500 kHz, 22 dBm)".into(),
            format!("self-test: {boot}; watchdog armed, 8 s"),
            "self-test: modem answered, set up (6 commands)".into(),
            "self-test: sensor BME680 (emulated): ok".into(),
            "sent seq=1 try=1 counter=".into(),
        ]
    };
    let boots: Vec<&str> = log.split("panic: ").collect();
    for (boot, want) in boots.iter().zip([
        self_test("boot 1, reset unknown (0)"),
        self_test("boot 2, reset panic (4)"),
    ]) {
        // After the panic's line, the rest of it; then the start of the new boot.
        let start: Vec<&str> = boot
            .lines()
            .skip_while(|l| !l.starts_with("self-test: "))
            .take(6)
            .collect();
        assert!(
            start.len() == 6
                && start
                    .iter()
                    .zip(&want)
                    .all(|(l, w)| l.starts_with(w.as_str())),
            "Node 1's start: {start:?}, want {want:?}"
        );
    }
    assert!(
        log.contains("panic: fault injected by the emulator"),
        "{log}"
    );
    // Set-ups: at boot, after the modem's restart, after the panic's reset.
    let setups = radio
        .commands()
        .iter()
        .filter(|(a, c)| *a == NODE1 && c.starts_with(b"AT+PARAMETER="))
        .count();
    assert_eq!(setups, 3, "Node 1's set-ups");
}

/// Packets Node 1 sent: one per new seq of each boot.
fn packets_sent(log: &str) -> usize {
    log.split("panic: ")
        .map(|boot| {
            boot.lines()
                .filter_map(|l| l.strip_prefix("sent seq="))
                .filter_map(|r| r.split_whitespace().next())
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum()
}

/// Node 2's VCP: its answers to its own faults, its info from Node 1 after the panic, and its
/// JSON lines with the counts its rules give over what it received. Returns the JSON lines.
fn check_node2(radio: &RadioEmulator, vcp: &str) -> Vec<Value> {
    let mut json = Vec::new();
    let mut infos = Vec::new();
    let mut other = Vec::new();
    let mut self_test = Vec::new();
    for line in vcp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with('{') {
            json.push(serde_json::from_str::<Value>(line).unwrap());
        } else if line.starts_with("stack peak=") {
            continue;
        } else if let Some(test) = line.strip_prefix("self-test: ") {
            self_test.push(test);
        } else if let Some(Report::Info { from, info }) = Report::parse(line) {
            infos.push((from, info));
        } else {
            other.push(line);
        }
    }
    assert_eq!(
        other,
        [
            "ack send failed to=1 error=10 try=1",
            "modem restarted: set-up again"
        ],
        "Node 2's other lines:\n{vcp}"
    );
    let version = crate::firmware::firmware_version()
        .map(|p| p.to_string())
        .join(".");
    assert_eq!(
        self_test,
        [
            format!("node2 {version} on qemu"),
            "region us915 (915000000 Hz, SF7, 500 kHz, 22 dBm)".into(),
            "boot 1, reset unknown (0); watchdog armed, 8 s".into(),
            "modem answered, set up (6 commands)".into(),
            "sensor SHT3x (emulated): ok".into(),
        ],
        "Node 2's self-test"
    );
    let node1: Vec<(u32, u8)> = infos
        .iter()
        .filter(|(f, _)| *f == NODE1)
        .map(|(_, i)| (i.boots, i.reset))
        .collect();
    assert_eq!(
        node1,
        [(1, 0), (2, 4)],
        "Node 1's info: boot 1, then 2 after a panic"
    );
    assert!(
        infos.iter().any(|(f, i)| *f == NODE2 && i.boots == 1),
        "Node 2 reports its own start: {infos:?}"
    );
    // The sensor's failed reads: "n2":{} then, values before and after.
    let empty: Vec<usize> = (0..json.len())
        .filter(|i| json[*i]["n2"].as_object().is_some_and(|o| o.is_empty()))
        .collect();
    let mut run = 0;
    let mut longest_run = 0;
    for i in 0..json.len() {
        run = if empty.contains(&i) { run + 1 } else { 0 };
        longest_run = longest_run.max(run);
    }
    assert!(
        longest_run >= 3 && empty[0] > 0 && *empty.last().unwrap() + 1 < json.len(),
        "three lines or more in a row with an empty n2 while the SHT3x failed, between lines \
         with values: {empty:?}"
    );
    assert!(
        json.iter()
            .enumerate()
            .all(|(i, l)| empty.contains(&i) || l["n2"]["t"].is_number()),
        "every other line has Node 2's reading"
    );
    // The counts of Node 2's rules over what it received, line by line.
    let table = [Node {
        address: NODE1,
        peer: Peer::Keyed(TEST_KEY),
    }];
    let mut model = Receiver::new(&table);
    let mut want = Vec::new();
    for d in radio.deliveries(NODE2) {
        let frame = Frame {
            sender: d.from,
            data: &d.data,
            rssi: -40,
            snr: 9,
        };
        if let Outcome::New { .. } = model.on_frame(&frame) {
            want.push((model.rx(), model.err()));
        }
    }
    let got: Vec<(u64, u64)> = json
        .iter()
        .map(|l| {
            (
                l["sts"]["rx"].as_u64().unwrap(),
                l["sts"]["err"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64)> = want
        .iter()
        .map(|(r, e)| (u64::from(*r), u64::from(*e)))
        .collect();
    assert_eq!(got, want, "Node 2's counts against its rules");
    json
}

/// Node 1's frame counter never went back, across its panic: every frame on the air opens with
/// its key, new frames with a higher counter than any before.
fn check_counters(radio: &RadioEmulator) {
    let mut highest = None;
    for t in radio.transmissions().iter().filter(|t| t.from == NODE1) {
        let up = secure::open_uplink(&TEST_KEY, NODE1, &t.data).unwrap();
        assert!(
            highest <= Some(up.counter),
            "counter {} after {highest:?}",
            up.counter
        );
        highest = Some(up.counter);
    }
}

/// Each node's deepest stack, in this run that took every path a fault opens (its last `stack
/// peak=<bytes> static=<bytes>` line), plus its static RAM, is within the 16 KiB budget;
/// written to `target/firmware/stack-measured.txt` for `scripts/firmware` to show.
fn check_stack(node1_log: &str, node2_log: &str) {
    let mut measured = String::new();
    for (node, log) in [("node1", node1_log), ("node2", node2_log)] {
        let (peak, statics) = log
            .lines()
            .filter_map(|l| {
                let rest = l.trim_end().strip_prefix("stack peak=")?;
                let (peak, statics) = rest.split_once(" static=")?;
                Some((peak.parse::<u32>().ok()?, statics.parse::<u32>().ok()?))
            })
            .max()
            .unwrap_or_else(|| panic!("{node} never said its stack peak:\n{log}"));
        assert!(
            (256..8_192).contains(&peak) && peak + statics <= 16 * 1024,
            "{node}: stack peak {peak} B + static RAM {statics} B over the 16 KiB budget"
        );
        measured += &format!("{node}-qemu {peak}\n");
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/firmware");
    let _ = std::fs::create_dir_all(&out);
    std::fs::write(out.join("stack-measured.txt"), &measured).unwrap();
    eprintln!("stack measured: {}", measured.replace('\n', "; "));
}

/// Node 1's points of `measurement` (packets of both boots share seqs: the points, not seqs).
async fn influx_count(influx: &InfluxDb1, measurement: &str) -> usize {
    influx
        .points("faults")
        .await
        .iter()
        .filter(|p| p.measurement == measurement && p.tag("node") == Some("node1"))
        .count()
}
