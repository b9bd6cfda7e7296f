//! The secure radio link through the `rylr998` source, against the modem emulator and a real
//! Mosquitto: genuine secure frames stored once and answered with the exact secure ACK of
//! docs/PROTOCOL.md; repeats acknowledged again and not stored; replays, forged, tampered,
//! unauthenticated frames, unknown and keyless senders refused, unacknowledged, quarantined
//! and counted by reason in `/metrics`; the highest counter kept in the outbox, so a replay is
//! refused after a restart too. And `simulate --radio --config` as the node and the attacker.

use std::process::{Command, Stdio};
use std::time::Duration;

use lora_link::packet::{AckPacket, SensorDataPacket};
use lora_link::secure;

use crate::gateway::{dashboard_url, plain, readings_received, TestGateway, BIN};
use crate::modem_emulator::{rcv, Answer, ModemEmulator};
use crate::support::{get_text, wait_until, Mosquitto, Subscriber};

const WAIT: Duration = Duration::from_secs(20);
/// The published key of docs/PROTOCOL.md's vectors: tests only.
const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f";

fn key() -> secure::Key {
    secure::Key::from_hex(TEST_KEY).unwrap()
}

fn packet(seq_num: u16, temperature: i16) -> SensorDataPacket {
    SensorDataPacket {
        seq_num,
        temperature,
        humidity: 5887,
        gas_resistance: 355_059,
    }
}

fn sealed(key: &secure::Key, counter: u32, p: &SensorDataPacket) -> Vec<u8> {
    let mut buf = [0u8; secure::MAX_UPLINK_LEN];
    let n = secure::seal_uplink(key, 1, counter, p, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn plain_frame(p: &SensorDataPacket) -> Vec<u8> {
    let mut buf = [0u8; lora_link::packet::MAX_FRAME_LEN];
    let n = p.encode_frame(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn send_command(dest: u16, data: &[u8]) -> Vec<u8> {
    let mut v = format!("AT+SEND={dest},{},", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn secure_ack(counter: u32, seq: u16) -> Vec<u8> {
    let mut buf = [0u8; secure::MAX_ACK_FRAME_LEN];
    let n = secure::seal_ack(&key(), 1, counter, &AckPacket::ack(seq), &mut buf).unwrap();
    buf[..n].to_vec()
}

fn config(dir: &std::path::Path, modem: &str, mqtt_url: &str) -> String {
    format!(
        "[source]\nkind = \"rylr998\"\npath = \"{modem}\"\nrestart_initial = \"200ms\"\n\
         [source.nodes.1]\nname = \"node1\"\nkey = \"{TEST_KEY}\"\n\
         [source.nodes.3]\nname = \"greenhouse\"\nlegacy = true\n\
         [source.nodes.4]\nname = \"keyless\"\n\
         [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nbroker_url = \"{mqtt_url}\"\nclient_id = \"gw-secure\"\n",
        dir.join("data").display()
    )
}

/// `name{labels} value` in `/metrics`, or 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// MQTT payloads of `topic`, in order.
fn values(sub: &Subscriber, topic: &str) -> Vec<String> {
    readings_received(sub, "iiot")
        .into_iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_genuine_fresh_frames_are_stored_and_acknowledged_and_replays_stay_refused_after_a_restart(
) {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-secure", "iiot/#", true).await;
    let modem = ModemEmulator::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &modem.path, &mosquitto.url());
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let log = plain(&gw.log());
    assert!(log.contains("node greenhouse is legacy"), "{log}");
    assert!(
        log.contains("✗ nodes      1 with a key (node1); legacy, unauthenticated: greenhouse; no key, frames refused: keyless (iiot-gateway keys new keyless --address 4)"),
        "{log}"
    );
    assert!(
        log.contains("node keyless has no key: its frames will be refused")
            && log.contains("iiot-gateway keys new keyless --address 4"),
        "{log}"
    );

    // docs/PROTOCOL.md, "Secure frames": uplink vector 1 and the exact ACK that answers it.
    let f7 = sealed(&key(), 7, &packet(1, 273));
    assert_eq!(
        f7,
        [
            0x01, 0x00, 0x00, 0x00, 0x07, 0x78, 0xBE, 0x47, 0x0C, 0xCF, 0xBA, 0xBB, 0x1F, 0x7F,
            0x19, 0x90, 0x5C, 0xBE, 0x38, 0x52, 0x78
        ]
    );
    modem.send(&rcv(1, &f7, -30, 9));
    modem.wait_for_sends(1, WAIT).await;
    assert_eq!(
        modem.sends()[0],
        send_command(
            1,
            &[0x01, 0x48, 0x95, 0x75, 0x8A, 0x10, 0x6E, 0x10, 0x5B, 0x41, 0xAD]
        )
    );
    let f8 = sealed(&key(), 8, &packet(2, 274));
    modem.send(&rcv(1, &f8, -30, 9));
    modem.wait_for_sends(2, WAIT).await;
    // Sent again (its ACK lost): acknowledged again, not stored again.
    modem.send(&rcv(1, &f8, -30, 9));
    modem.wait_for_sends(3, WAIT).await;
    // The attacker: a replay, a forgery with the right address, a genuine frame changed, the
    // original format from node 1's address, an address not in the table, a keyless node.
    let mut tampered = sealed(&key(), 9, &packet(3, 900));
    tampered[8] ^= 0x01;
    let wrong = secure::Key::new([0x5A; 16]);
    for (from, bytes) in [
        (1, f7.clone()),
        (1, sealed(&wrong, 100, &packet(3, 901))),
        (1, tampered.clone()),
        (1, plain_frame(&packet(3, 902))),
        (5, sealed(&key(), 50, &packet(3, 903))),
        (4, plain_frame(&packet(3, 904))),
    ] {
        modem.send(&rcv(from, &bytes, -70, 2));
    }
    // A legacy node's frame of the original format is taken, with a plain ACK.
    modem.send(&rcv(3, &plain_frame(&packet(1, 250)), -50, 5));
    let f9 = sealed(&key(), 9, &packet(3, 275));
    modem.send(&rcv(1, &f9, -31, 8));
    modem.wait_for_sends(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        modem.sends(),
        [
            send_command(1, &secure_ack(7, 1)),
            send_command(1, &secure_ack(8, 2)),
            send_command(1, &secure_ack(8, 2)),
            send_command(3, &[0x01, 0x01]),
            send_command(1, &secure_ack(9, 3)),
        ],
        "one ACK per genuine frame (two for the repeat), none for the attacker"
    );
    wait_until("node1's three packets on MQTT", WAIT, || async {
        values(&sub, "iiot/node1/temperature").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        values(&sub, "iiot/node1/temperature"),
        ["27.3", "27.4", "27.5"],
        "each genuine packet once, nothing of the attacker's"
    );
    assert_eq!(values(&sub, "iiot/greenhouse/temperature"), ["25.0"]);
    assert_eq!(
        values(&sub, "iiot/stats/frames_rejected").last().unwrap(),
        "6"
    );
    assert_eq!(values(&sub, "iiot/stats/duplicates").last().unwrap(), "1");

    let url = dashboard_url(&plain(&gw.log()));
    let metrics = get_text(&format!("{url}/metrics")).await;
    let rejected = |node: &str, reason: &str| {
        metric(
            &metrics,
            &format!("iiot_radio_frames_rejected_total{{node=\"{node}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(rejected("node1", "replay"), 1, "{metrics}");
    assert_eq!(rejected("node1", "bad_tag"), 2, "{metrics}");
    assert_eq!(rejected("node1", "legacy_format"), 1, "{metrics}");
    assert_eq!(rejected("unknown", "unknown_node"), 1, "{metrics}");
    assert_eq!(rejected("keyless", "no_key"), 1, "{metrics}");
    let accepted = |node: &str, security: &str| {
        metric(
            &metrics,
            &format!("iiot_radio_frames_accepted_total{{node=\"{node}\",security=\"{security}\"}}"),
        )
    };
    assert_eq!(accepted("node1", "secure"), 3, "{metrics}");
    assert_eq!(accepted("greenhouse", "legacy"), 1, "{metrics}");
    // Quarantined with the frame's bytes and the reason; the key appears nowhere.
    let quarantine = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    let hex: Vec<String> = tampered.iter().map(|b| format!("{b:02X}")).collect();
    assert!(quarantine.contains(&hex.join(" ")), "{quarantine}");
    assert!(quarantine.contains("replay"), "{quarantine}");
    for text in [&gw.log(), &quarantine, &metrics] {
        assert!(!text.contains(TEST_KEY), "the key leaked: {text}");
    }

    // Restarted, the gateway still knows counter 9 (the outbox): 8 played back is refused,
    // 9 sent again is a repeat (acknowledged, not stored), 10 is new.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("rylr998 modem set up; receiving", WAIT).await;
    let before = modem.sends().len();
    modem.send(&rcv(1, &f8, -30, 9));
    modem.send(&rcv(1, &f9, -30, 9));
    modem.send(&rcv(1, &sealed(&key(), 10, &packet(4, 276)), -30, 9));
    modem.wait_for_sends(before + 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        modem.sends()[before..],
        [
            send_command(1, &secure_ack(9, 3)),
            send_command(1, &secure_ack(10, 4))
        ]
    );
    wait_until("packet 10 on MQTT", WAIT, || async {
        values(&sub, "iiot/node1/temperature").len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        values(&sub, "iiot/node1/temperature"),
        ["27.3", "27.4", "27.5", "27.6"]
    );
    let url = dashboard_url(&plain(&gw.log()));
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert_eq!(
        metric(
            &metrics,
            "iiot_radio_frames_rejected_total{node=\"node1\",reason=\"replay\"}"
        ),
        1,
        "{metrics}"
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
}

/// `simulate --radio --config` hears the config's keyed nodes, each sealing with its own key
/// from a counter that moves on across runs, and mixes in the attacks it is told to.
#[test]
fn simulate_radio_with_a_config_sends_secure_frames_and_the_attacks_asked_for() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("radio.toml");
    let other = "ffeeddccbbaa99887766554433221100";
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"rylr998\"\npath = \"/dev/null\"\n\
             [source.nodes.1]\nname = \"a\"\nkey = \"{TEST_KEY}\"\n\
             [source.nodes.9]\nname = \"b\"\nkey = \"{other}\"\n\
             [source.nodes.12]\nname = \"c\"\n"
        ),
    )
    .unwrap();
    let run = |attacks: &str| {
        let mut sim = Command::new(BIN)
            .args(["simulate", "--radio", "--count", "2", "--interval", "0s"])
            .arg("--config")
            .arg(&cfg)
            .args(["--attack", attacks])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = Vec::new();
        sim.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        assert!(sim.wait().unwrap().success());
        let mut parser = lora_link::modem::ModemParser::new();
        let (mut frames, mut rest) = (Vec::new(), &out[..]);
        while !rest.is_empty() {
            let taken = parser.feed(rest);
            rest = &rest[taken..];
            while let Some(event) = parser.next_event() {
                let lora_link::modem::Event::Frame(f) = event else {
                    panic!("not a frame: {event:?}")
                };
                frames.push((f.sender, f.data.to_vec()));
            }
        }
        frames
    };
    let keys = [(1, key()), (9, secure::Key::from_hex(other).unwrap())];
    let sender = |address: u16| match keys.iter().find(|(a, _)| *a == address) {
        Some((_, k)) => secure::Sender::Keyed(k),
        None => secure::Sender::Unknown,
    };
    let frames = run("forged,replayed,tampered,legacy,unknown");
    let mut highest = std::collections::BTreeMap::new();
    let (mut genuine, mut refused) = (Vec::new(), std::collections::BTreeMap::new());
    for (from, data) in &frames {
        let h = highest.get(from).copied();
        match secure::receive(sender(*from), *from, h, data) {
            Ok(secure::Accepted::Secure {
                counter, repeat, ..
            }) => {
                assert!(!repeat);
                highest.insert(*from, counter);
                genuine.push(*from);
            }
            Ok(other) => panic!("{other:?}"),
            Err(r) => *refused.entry(r.as_str()).or_insert(0) += 1,
        }
    }
    // Two lines, two keyed nodes each (node 12 has no key: not heard).
    assert_eq!(genuine, [1, 9, 1, 9]);
    // After each genuine frame one of each attack; a replay needs an earlier frame.
    let expected: std::collections::BTreeMap<&str, i32> = [
        ("bad_tag", 8),
        ("replay", 2),
        ("legacy_format", 4),
        ("unknown_node", 4),
    ]
    .into();
    assert_eq!(refused, expected);
    // A second run goes on above the first run's counters.
    let first = highest[&1];
    std::thread::sleep(Duration::from_millis(200));
    let again = run("forged");
    let (_, data) = again.iter().find(|(from, _)| *from == 1).unwrap();
    assert!(matches!(
        secure::receive(sender(1), 1, Some(first), data),
        Ok(secure::Accepted::Secure { repeat: false, .. })
    ));
}
