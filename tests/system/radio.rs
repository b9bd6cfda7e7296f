//! The `rylr998` source against the modem emulator (`modem_emulator.rs`): radio frames to
//! real Mosquitto and InfluxDB 1.x, exactly once, with the exact ACK bytes; no ACK for a packet
//! that is not committed, and its resend stored after a kill; a modem that does not answer or
//! refuses a command; a modem that restarts; an adapter unplugged and plugged back.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lora_link::packet::SensorDataPacket;
use lora_link::secure;

use crate::gateway::{
    assert_mqtt_exactly, counts, dashboard_url, plain, Expected, TestGateway, BIN,
};
use crate::modem_emulator::{rcv, Answer, ModemEmulator};
use crate::support::{get_text, http, wait_until, InfluxDb1, Mosquitto, Subscriber};

const WAIT: Duration = Duration::from_secs(20);

fn frame(seq_num: u16, temperature: i16, humidity: u16, gas_resistance: u32) -> Vec<u8> {
    let p = SensorDataPacket {
        seq_num,
        temperature,
        humidity,
        gas_resistance,
    };
    let mut buf = [0u8; lora_link::packet::MAX_FRAME_LEN];
    let n = p.encode_frame(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The published key of docs/PROTOCOL.md's vectors: tests only.
const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f";

fn key() -> secure::Key {
    secure::Key::from_hex(TEST_KEY).unwrap()
}

/// Node 1's secure frame with `counter`.
fn sealed(counter: u32, seq_num: u16, temperature: i16, humidity: u16, gas: u32) -> Vec<u8> {
    let p = SensorDataPacket {
        seq_num,
        temperature,
        humidity,
        gas_resistance: gas,
    };
    let mut buf = [0u8; secure::MAX_UPLINK_LEN];
    let n = secure::seal_uplink(&key(), 1, counter, &p, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn config(dir: &Path, modem: &str, mqtt: &str, influx: &str, http_on: bool) -> String {
    let http = if http_on {
        "listen = \"127.0.0.1:0\""
    } else {
        "enabled = false"
    };
    format!(
        "[source]\nkind = \"rylr998\"\npath = \"{modem}\"\nrestart_initial = \"200ms\"\nrestart_max = \"1s\"\n\
         [source.nodes.1]\nname = \"node1\"\nlegacy = true\n\
         [source.nodes.3]\nname = \"greenhouse\"\nlegacy = true\n\n\
         [storage]\ndir = \"{}\"\n\n[http]\n{http}\n\n{mqtt}\n{influx}\n",
        dir.join("data").display()
    )
}

fn reading(node: &str, metric: &str, unit: Option<&str>, value: &str) -> Expected {
    Expected {
        node: node.into(),
        metric: metric.into(),
        unit: unit.map(str::to_string),
        value: value.into(),
    }
}

fn sensor(node: &str, t: &str, h: &str, g: &str) -> Vec<Expected> {
    vec![
        reading(node, "temperature", Some("celsius"), t),
        reading(node, "humidity", Some("percent"), h),
        reading(node, "gas_resistance", Some("ohms"), g),
    ]
}

/// Signal and counters (received, CRC errors, lost, duplicates, rejected) of one frame.
fn link(rssi: i16, snr: i16, counters: [u64; 5]) -> Vec<Expected> {
    let mut v = vec![
        reading("signal", "rssi", Some("dbm"), &rssi.to_string()),
        reading("signal", "snr", Some("db"), &snr.to_string()),
    ];
    for (metric, n) in [
        "packets_received",
        "crc_errors",
        "packets_lost",
        "duplicates",
        "frames_rejected",
    ]
    .into_iter()
    .zip(counters)
    {
        v.push(reading("stats", metric, None, &n.to_string()));
    }
    v
}

fn ack(sender: u16, data: &[u8]) -> Vec<u8> {
    let mut v = format!("AT+SEND={sender},{},", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

const SETUP: [&[u8]; 6] = [
    b"AT\r\n",
    b"AT+ADDRESS=2\r\n",
    b"AT+NETWORKID=18\r\n",
    b"AT+BAND=915000000\r\n",
    b"AT+CRFOP=22\r\n",
    b"AT+PARAMETER=7,9,1,7\r\n",
];

#[tokio::test(flavor = "multi_thread")]
async fn radio_frames_reach_mqtt_and_the_database_exactly_once_with_the_exact_acks() {
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("radio");
    let sub = Subscriber::connect(mosquitto.port, "watcher-radio", "iiot/#", true).await;
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &modem.path,
        &format!("[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-radio\"\n", mosquitto.url()),
        &format!(
            "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"radio\"\nflush_interval = \"50ms\"\n",
            influx.url()
        ),
        true,
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    // The source sets the modem up once; the start-up checklist shows how that went.
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    gw.wait_log("source     RYLR998 on", WAIT).await;
    let setup: Vec<Vec<u8>> = SETUP.iter().map(|c| c.to_vec()).collect();
    assert_eq!(modem.commands(), setup);
    assert!(
        plain(&gw.log()).contains("✓ source     RYLR998 on"),
        "{}",
        gw.log()
    );

    // docs/PROTOCOL.md, test vectors: packet 1, one byte per write (RSSI -27, SNR 13).
    let f1 = frame(1, 273, 5887, 355_059);
    assert_eq!(
        f1,
        [0x01, 0xA2, 0x04, 0xFF, 0x2D, 0xF3, 0xD5, 0x15, 0x93, 0x83]
    );
    for b in rcv(1, &f1, -27, 13) {
        modem.send(&[b]);
    }
    // Seq 10 (its first byte is 0x0A, and so is its ACK's last) fused with seq 11.
    let f10 = frame(10, -53, 8123, 52174);
    assert_eq!(f10[0], 0x0A);
    let f11 = frame(11, 250, 4000, 90000);
    let mut fused = rcv(1, &f10, -40, 9);
    fused.extend(rcv(1, &f11, -41, 8));
    modem.send(&fused);
    // Seq 12 with a flipped bit: CRC error, no ACK.
    let mut f12 = frame(12, 251, 4001, 90001);
    f12[1] ^= 0x04;
    modem.send(&rcv(1, &f12, -90, -3));
    // Each ACK follows its packet's commit.
    modem.wait_for_sends(3, WAIT).await;
    // Seq 11 again (its ACK was lost): acknowledged at once (it is committed), counted, not
    // written again.
    modem.send(&rcv(1, &f11, -42, 7));
    // A modem reply and noise are not radio errors.
    modem.send(b"+ERR=10\r\nnoise\r\n");
    // Seq 14: 12 and 13 lost.
    let f14 = frame(14, 260, 4100, 91000);
    modem.send(&rcv(1, &f14, -43, 6));
    // Another node, named in [source.nodes].
    let g1 = frame(1, -5, 9999, 1);
    modem.send(&rcv(3, &g1, -50, -1));

    let mut want = Vec::new();
    want.extend(sensor("node1", "27.3", "58.87", "355059"));
    want.extend(link(-27, 13, [1, 0, 0, 0, 0]));
    want.extend(sensor("node1", "-5.3", "81.23", "52174"));
    want.extend(link(-40, 9, [2, 0, 8, 0, 0]));
    want.extend(sensor("node1", "25.0", "40.00", "90000"));
    want.extend(link(-41, 8, [3, 0, 8, 0, 0]));
    // The failed frame and the duplicate are counted, not written: their counts show in the
    // next good frame's counters.
    want.extend(sensor("node1", "26.0", "41.00", "91000"));
    want.extend(link(-43, 6, [5, 1, 10, 1, 0]));
    want.extend(sensor("greenhouse", "-0.5", "99.99", "1"));
    want.extend(link(-50, -1, [6, 1, 10, 1, 0]));
    assert_mqtt_exactly(&sub, "iiot", &want).await;

    modem.wait_for_sends(6, WAIT).await;
    assert_eq!(
        modem.sends(),
        [
            ack(1, &[0x01, 0x01]),
            ack(1, &[0x01, 0x0A]),
            ack(1, &[0x01, 0x0B]),
            ack(1, &[0x01, 0x0B]),
            ack(1, &[0x01, 0x0E]),
            ack(3, &[0x01, 0x01]),
        ]
    );

    // The modem restarts: it is set up again, and frames flow on.
    modem.send(b"+READY\r\n");
    modem
        .wait_for_command(b"AT+PARAMETER=7,9,1,7\r\n", 2, WAIT)
        .await;
    let f15 = frame(15, 270, 4200, 92000);
    modem.send(&rcv(1, &f15, -44, 5));
    want.extend(sensor("node1", "27.0", "42.00", "92000"));
    want.extend(link(-44, 5, [7, 1, 10, 1, 0]));
    assert_mqtt_exactly(&sub, "iiot", &want).await;
    modem.wait_for_sends(7, WAIT).await;
    assert_eq!(modem.sends()[6], ack(1, &[0x01, 0x0F]));

    // The dashboard's newest values hold the radio nodes like any other.
    let url = dashboard_url(&plain(&gw.log()));
    let latest: serde_json::Value =
        serde_json::from_str(&get_text(&format!("{url}/api/latest")).await).unwrap();
    let newest = |node: &str, metric: &str| {
        latest
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node && r["metric"] == metric)
            .map(|r| r["value"].as_str().unwrap().to_string())
    };
    assert_eq!(newest("greenhouse", "humidity").as_deref(), Some("99.99"));
    assert_eq!(newest("node1", "temperature").as_deref(), Some("27.0"));
    assert_eq!(newest("stats", "packets_lost").as_deref(), Some("10"));

    // The database holds every reading once.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
    let points = influx.points("radio").await;
    let got = counts(points.iter().map(|p| {
        (
            p.measurement.clone(),
            p.tag("node").unwrap_or_default().to_string(),
            p.tag("unit").map(str::to_string),
            format!("{}", p.value),
        )
    }));
    let expected = counts(want.iter().map(|e| {
        (
            e.metric.clone(),
            e.node.clone(),
            e.unit.clone(),
            format!("{}", e.value.parse::<f64>().unwrap()),
        )
    }));
    assert_eq!(got, expected, "database points");
    // The failed frame is in the quarantine with its bytes.
    let quarantine = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    assert!(
        quarantine.contains("node1 (address 1): crc"),
        "{quarantine}"
    );
    let hex: Vec<String> = f12.iter().map(|b| format!("{b:02X}")).collect();
    assert!(quarantine.contains(&hex.join(" ")), "{quarantine}");
}

/// A packet is acknowledged only once committed. With the outbox at its disk budget
/// (`on_full = "block"`, the database down) nothing more is committed, so nothing more is
/// acknowledged, not even a repeat; the gateway is SIGKILLed holding such a packet, and the
/// node's resend to the restarted gateway is stored. Every packet acknowledged before the
/// kill is in the database.
#[tokio::test(flavor = "multi_thread")]
async fn a_packet_not_committed_is_not_acknowledged_and_its_resend_after_a_kill_is_stored() {
    let mut influx = InfluxDb1::start();
    influx.create_database("radio");
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[source]\nkind = \"rylr998\"\npath = \"{}\"\nrestart_initial = \"200ms\"\nrestart_max = \"1s\"\n\
         [source.nodes.1]\nname = \"node1\"\nkey = \"{TEST_KEY}\"\n\
         [gateway]\nchannel_capacity = 16\n\
         [storage]\ndir = \"{}\"\nmax_bytes = \"1MiB\"\non_full = \"block\"\n[http]\nenabled = false\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"radio\"\nflush_interval = \"50ms\"\n\
         retry_initial = \"100ms\"\nretry_max = \"500ms\"\n",
        modem.path,
        dir.path().join("data").display(),
        influx.url()
    );
    influx.stop();
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    // Each packet's temperature (tenths) is its number: unique, and readable back. Secure
    // frames: the counter is the number too.
    let packet = |seq: u16| sealed(u32::from(seq), seq, seq as i16, 5000, 1000);
    let mut seq = 0u16;
    let budget = std::time::Instant::now();
    while !gw.log().contains("outbox at its disk budget") {
        assert!(
            budget.elapsed() < Duration::from_secs(90) && seq < 20_000,
            "the outbox never reached its budget after {seq} packets:\n{}",
            gw.log()
        );
        // Small bursts: a gateway that stopped reading holds at most a few in the pty.
        let mut burst = Vec::new();
        for _ in 0..20 {
            seq += 1;
            burst.extend(rcv(1, &packet(seq), -40, 9));
        }
        modem.send(&burst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing is committed now: the packets still queued, a new one and its repeat all go
    // unacknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_before = modem.sends().len();
    let held = seq + 1;
    modem.send(&rcv(1, &packet(held), -40, 9));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    modem.send(&rcv(1, &packet(held), -40, 9));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sends = modem.sends();
    assert_eq!(
        sends.len(),
        acked_before,
        "an ACK went out while nothing could be committed"
    );
    let acks = secure_acks(u32::from(held));
    let acked_seq = |command: &[u8]| -> u16 {
        *acks
            .get(sent_data(command))
            .expect("a secure ACK of node 1 under the test key")
    };
    let acked: Vec<u16> = sends.iter().map(|c| acked_seq(c)).collect();
    assert!(!acked.contains(&held));
    gw.signal(libc::SIGKILL);
    gw.wait(WAIT);

    influx.start_again();
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    // The node sends the packet again: stored, and acknowledged.
    modem.send(&rcv(1, &packet(held), -40, 9));
    modem.wait_for_sends(acked_before + 1, WAIT).await;
    assert_eq!(acked_seq(&modem.sends()[acked_before]), held);
    let temperature = |seq: u16| format!("{}", f64::from(seq) / 10.0);
    let stored = || async {
        influx
            .points("radio")
            .await
            .into_iter()
            .filter(|p| p.measurement == "temperature")
            .map(|p| format!("{}", p.value))
            .collect::<Vec<String>>()
    };
    wait_until("the resend in the database", WAIT, || async {
        stored().await.contains(&temperature(held))
    })
    .await;
    let stored = stored().await;
    assert_eq!(
        stored.iter().filter(|t| **t == temperature(held)).count(),
        1,
        "the resend is stored once"
    );
    // Acknowledged means committed: every packet acknowledged before the kill was kept.
    for seq in acked {
        assert!(
            stored.contains(&temperature(seq)),
            "packet {seq} was acknowledged but is not in the database"
        );
    }
    eprintln!(
        "RADIO ack_after_commit: {} packets acknowledged before the budget, {} sent",
        acked_before, seq
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}

/// The data of an `AT+SEND=<dest>,<len>,<data>\r\n` command.
fn sent_data(command: &[u8]) -> &[u8] {
    let start = command
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b',')
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("AT+SEND=<dest>,<len>,<data>");
    &command[start..command.len() - 2]
}

/// Node 1's secure ACKs of the uplinks with counters 1 to `max` (each packet's sequence
/// number is its counter, in these tests), by their bytes.
fn secure_acks(max: u32) -> std::collections::HashMap<Vec<u8>, u16> {
    (1..=max)
        .map(|c| {
            let seq = c as u16;
            let mut buf = [0u8; secure::MAX_ACK_FRAME_LEN];
            let ack = lora_link::packet::AckPacket::ack(seq);
            let n = secure::seal_ack(&key(), 1, c, &ack, &mut buf).unwrap();
            (buf[..n].to_vec(), seq)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modem_that_does_not_answer_fails_check_and_holds_readyz_at_503_until_it_does() {
    let modem = ModemEmulator::start(Answer::Silent);
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, config(dir.path(), &modem.path, "", "", true)).unwrap();
    let check = |what: &str| {
        let out = Command::new(BIN)
            .args(["check", "--config", cfg_path.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success(), "{what}: check passed:\n{stdout}");
        stdout
    };
    let said = check("silent modem");
    assert!(
        said.contains("FAIL source")
            && said.contains("no answer to AT within 1s: check the wiring"),
        "{said}"
    );
    modem.answer(Answer::ErrOn("AT+BAND".into(), 4));
    let said = check("modem refusing AT+BAND");
    assert!(
        said.contains("FAIL source")
            && said.contains("AT+BAND=915000000 answered +ERR=4 (unknown command)"),
        "{said}"
    );

    modem.answer(Answer::Silent);
    let gw = TestGateway::start(
        dir.path(),
        &std::fs::read_to_string(&cfg_path).unwrap(),
        Stdio::null(),
    );
    gw.wait_log("✗ source", WAIT).await;
    let log = plain(&gw.log());
    assert!(log.contains("✗ source     no answer to AT"), "{log}");
    let url = dashboard_url(&log);
    let readyz = || async {
        let resp = http().get(format!("{url}/readyz")).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("source: no answer to AT"), "{body}");
    // Still 503 a while later: the source keeps trying, and says why.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(readyz().await.0, 503);

    // The modem is powered: the next attempt sets it up, and the gateway is ready.
    modem.answer(Answer::Ok);
    wait_until("/readyz 200 once the modem answers", WAIT, || async {
        readyz().await.0 == 200
    })
    .await;
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert!(
        metrics.contains("iiot_source_running{kind=\"rylr998\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapter_unplugged_and_plugged_back_is_reopened_and_set_up_again() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-replug", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let link_path = dir.path().join("ttyUSB0");
    let first = ModemEmulator::start(Answer::Ok);
    std::os::unix::fs::symlink(&first.path, &link_path).unwrap();
    let cfg = config(
        dir.path(),
        link_path.to_str().unwrap(),
        &format!(
            "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-replug\"\n",
            mosquitto.url()
        ),
        "",
        false,
    );
    let gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    first.send(&rcv(1, &frame(1, 200, 5000, 1000), -30, 10));
    let mut want = sensor("node1", "20.0", "50.00", "1000");
    want.extend(link(-30, 10, [1, 0, 0, 0, 0]));
    assert_mqtt_exactly(&sub, "iiot", &want).await;

    // Unplugged: the pty goes away. Plugged back: a new one behind the same path.
    drop(first);
    gw.wait_log("rylr998 modem lost; reopening with backoff", WAIT)
        .await;
    let second = ModemEmulator::start(Answer::Ok);
    std::fs::remove_file(&link_path).unwrap();
    std::os::unix::fs::symlink(&second.path, &link_path).unwrap();
    second
        .wait_for_command(b"AT+PARAMETER=7,9,1,7\r\n", 1, WAIT)
        .await;
    wait_until("the source to receive again", WAIT, || async {
        gw.log().matches("rylr998 modem set up; receiving").count() >= 2
    })
    .await;
    second.send(&rcv(1, &frame(2, 201, 5001, 1001), -31, 11));
    want.extend(sensor("node1", "20.1", "50.01", "1001"));
    want.extend(link(-31, 11, [2, 0, 0, 0, 0]));
    assert_mqtt_exactly(&sub, "iiot", &want).await;
}

/// Set-up keeps commands and replies paired: a late answer to an `AT` that timed out is not
/// taken for the next command's (here `AT+PARAMETER` is refused, and must be reported as
/// refused), and a modem that restarts half-way is set up from the start again.
#[tokio::test(flavor = "multi_thread")]
async fn set_up_pairs_replies_with_their_commands_and_starts_over_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let modem = ModemEmulator::start(Answer::LateFirstThenErrOn(
        Duration::from_millis(1200),
        "AT+PARAMETER".into(),
        18,
    ));
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, config(dir.path(), &modem.path, "", "", false)).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("AT+PARAMETER=7,9,1,7 answered +ERR=18 (preamble value not allowed)"),
        "{said}"
    );

    let modem = ModemEmulator::start(Answer::ReadyOnceOn("AT+NETWORKID".into()));
    std::fs::write(&cfg_path, config(dir.path(), &modem.path, "", "", false)).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    let sent: Vec<String> = modem
        .commands()
        .iter()
        .map(|c| String::from_utf8_lossy(c).trim_end().to_string())
        .collect();
    assert_eq!(
        sent,
        [
            "AT",
            "AT+ADDRESS=2",
            "AT+NETWORKID=18",
            "AT",
            "AT+ADDRESS=2",
            "AT+NETWORKID=18",
            "AT+BAND=915000000",
            "AT+CRFOP=22",
            "AT+PARAMETER=7,9,1,7"
        ]
    );
}

/// A burst of frames in one write (bytes piled up while the gateway was busy) loses none.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_fused_frames_is_received_whole() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-burst", "iiot/#", true).await;
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &modem.path,
        &format!(
            "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-burst\"\n",
            mosquitto.url()
        ),
        "",
        false,
    );
    let gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let mut burst = Vec::new();
    for seq in 1..=60u16 {
        burst.extend(rcv(1, &frame(seq, 200 + seq as i16, 5000, 1000), -30, 10));
    }
    assert!(burst.len() > 1024, "several reads' worth: {}", burst.len());
    modem.send(&burst);
    modem.wait_for_sends(60, WAIT).await;
    let temperatures = sub
        .wait_for(
            |m| {
                m.iter()
                    .filter(|m| m.topic == "iiot/node1/temperature")
                    .count()
                    >= 60
            },
            WAIT,
        )
        .await;
    let got: Vec<String> = temperatures
        .iter()
        .filter(|m| m.topic == "iiot/node1/temperature")
        .map(|m| m.payload.clone())
        .collect();
    let want: Vec<String> = (1..=60)
        .map(|seq| format!("{}.{}", 20 + seq / 10, seq % 10))
        .collect();
    assert_eq!(got, want);
}

/// `simulate --radio` is a modem: `+RCV` frames of the simulated nodes on stdout, and `+OK`
/// to every command on stdin (`AT+SEND` cut by its length, even when its data holds `\r\n`).
#[test]
fn simulate_radio_writes_frames_and_answers_commands_as_a_modem() {
    use std::io::{Read as _, Write as _};
    let mut sim = Command::new(BIN)
        .args(["simulate", "--radio", "--count", "3", "--interval", "500ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sim.stdin.take().unwrap();
    stdin
        .write_all(b"AT\r\nAT+SEND=1,2,\r\n\r\nAT+ADDRESS=2\r\n")
        .unwrap();
    let mut out = Vec::new();
    sim.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(sim.wait().unwrap().success());
    let mut parser = lora_link::modem::ModemParser::new();
    assert_eq!(parser.feed(&out), out.len());
    let (mut oks, mut good) = (0, Vec::new());
    while let Some(event) = parser.next_event() {
        match event {
            lora_link::modem::Event::Ok => oks += 1,
            lora_link::modem::Event::Frame(f) => {
                if let Ok(p) = SensorDataPacket::decode_frame(f.data) {
                    good.push((f.sender, p.seq_num));
                }
            }
            other => panic!("not modem output: {other:?}"),
        }
    }
    assert_eq!(oks, 3, "one +OK per command");
    assert_eq!(good, [(1, 1), (1, 2), (1, 3)]);
}
