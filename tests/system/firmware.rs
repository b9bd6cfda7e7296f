//! The whole radio side, emulated: our Node 1 and Node 2 firmware (`firmware/`, built by
//! `scripts/firmware`) each run in a QEMU `netduinoplus2`, their modem UARTs joined by the
//! radio emulator (`radio_emulator.rs`, test code) with a seeded 20 % loss and 5 % corruption.
//! Node 2's virtual COM port is a pty read by the gateway's serial source, which publishes to
//! a real Mosquitto and writes to a real InfluxDB 1.x. Every packet Node 1 sent is in the
//! database exactly once, or Node 1 retried it until it gave up; CRC failures show in
//! `stats/crc_errors`; nothing is duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lora_link::packet::SensorDataPacket;

use crate::gateway::{counts, TestGateway};
use crate::radio_emulator::{Air, End, Fate, RadioEmulator};
use crate::support::{free_port, wait_until, InfluxDb1, Mosquitto, Subscriber};

const WAIT: Duration = Duration::from_secs(30);
/// Packets Node 1 sends before the test stops it (one every 2 s in the emulator build).
const PACKETS: u16 = 20;
/// Attempts per packet: the first and 3 retransmissions.
const ATTEMPTS: usize = 4;
/// Node 1's sensor address and Node 2's.
const NODE1: u16 = 1;
const NODE2: u16 = 2;
/// The loss model's seed, and the story it tells of packets 1 to 20 (a fate depends only on
/// the packet and the attempt, not on timing: `radio_emulator.rs`). Per packet, each
/// transmission of Node 1 (`D` delivered, `L` lost, `C` corrupted) and of Node 2's ACK to it
/// (`a` delivered, `x` lost): packet 3 reaches Node 2 three times but every ACK is lost
/// (Node 2 acks the two repeats without printing them again) and Node 1 gives up after its
/// fourth try; 4 and 5 are lost once; 6 never gets through (given up, not in the database);
/// 13 is corrupted twice (two CRC failures) before it gets through.
const SEED: u64 = 0x17e;
const STORY: &str = "1:Da 2:Da 3:DxDxCDx 4:LDa 5:LDa 6:LCLL 7:Da 8:Da 9:Da 10:Da 11:Da 12:Da \
                     13:CCDa 14:Da 15:Da 16:Da 17:Da 18:Da 19:Da 20:Da";
/// Before packet 10 first reaches Node 2, its modem also says `+READY` and a line of noise:
/// neither is a radio error.
const INTERFERENCE_BEFORE: u16 = 10;
const QEMU_HINT: &str = "apt-get install -y --no-install-recommends qemu-system-arm";

/// The firmware image `target/firmware/<name>-qemu.elf`; panics with what to run when absent.
fn image(node: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/firmware")
        .join(format!("{node}-qemu.elf"));
    assert!(
        path.is_file(),
        "{} is missing: build the firmware images with scripts/firmware (the README's test \
         command, scripts/test, does so first)",
        path.display()
    );
    path
}

fn qemu() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-arm"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`qemu-system-arm` not found in $PATH; install it with: {QEMU_HINT}")
        })
}

/// One emulated board; killed on drop.
struct Board {
    child: Child,
    /// QEMU's stdout (where it names the pty) and stderr.
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Board {
    /// Boots `elf` with USART2 (the VCP) on `vcp` (a `-serial` spec, after the `-chardev`
    /// options in `chardev`) and UART4 (the modem) on a TCP server at `modem_port`; QEMU holds
    /// the CPU until the radio emulator connects.
    fn boot(
        dir: &Path,
        name: &str,
        elf: &Path,
        chardev: &[String],
        vcp: &str,
        modem_port: u16,
    ) -> Board {
        let stdout = dir.join(format!("{name}-qemu.out"));
        let stderr = dir.join(format!("{name}-qemu.log"));
        let child = Command::new(qemu())
            .args([
                "-M",
                "netduinoplus2",
                "-nographic",
                "-monitor",
                "none",
                "-kernel",
            ])
            .arg(elf)
            .args(chardev)
            .args([
                "-serial", "null", "-serial", vcp, "-serial", "null", "-serial",
            ])
            // nodelay: QEMU writes the UART byte by byte; Nagle would hold each command ~40 ms.
            .arg(format!(
                "tcp:127.0.0.1:{modem_port},server=on,wait=on,nodelay=on"
            ))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start qemu-system-arm: {e}; install it with: {QEMU_HINT}"));
        Board {
            child,
            stdout,
            stderr,
        }
    }

    /// What QEMU said.
    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// The pty QEMU made for USART2 (`-serial pty`).
    fn pty(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            for line in self.output().lines() {
                // "char device redirected to /dev/pts/3 (label vcp)"
                if let Some(rest) = line.split("redirected to ").nth(1) {
                    if rest.contains("(label vcp)") {
                        return rest.split_whitespace().next().unwrap().to_string();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "QEMU did not say where USART2's pty is: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sensor values the emulated BME680 gives Node 1 for packet `seq` (firmware/README.md).
fn emulated_bme680(seq: u16) -> (i16, u16, u32) {
    (
        200 + (seq % 100) as i16,
        4000 + (seq % 50) * 10,
        100_000 + u32::from(seq) * 37,
    )
}

/// What the air saw of one packet of Node 1.
#[derive(Debug, Default)]
struct Packet {
    attempts: usize,
    /// The attempt that first reached Node 2 intact.
    delivered_on: Option<usize>,
    /// Its transmissions and its ACKs' in order, as in [`STORY`].
    story: String,
}

/// Node 1's VCP lines `<what> seq=<n>...`: the sequence numbers.
fn seqs(log: &str, what: &str) -> BTreeSet<u16> {
    log.lines()
        .filter_map(|l| l.strip_prefix(what)?.strip_prefix(" seq="))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn node1_over_a_lossy_radio_to_node2_reaches_mqtt_and_the_database_exactly_once() {
    let (node1_elf, node2_elf) = (image("node1"), image("node2"));
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("firmware");
    let sub = Subscriber::connect(mosquitto.port, "watcher-firmware", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();

    // Node 2 first: its VCP is the gateway's serial device.
    let node2_modem = free_port();
    // QEMU logs everything Node 2 writes to its VCP, to check the lines byte for byte.
    let node2_vcp = dir.path().join("node2-vcp.log");
    let node2 = Board::boot(
        dir.path(),
        "node2",
        &node2_elf,
        &[
            "-chardev".into(),
            format!("pty,id=vcp,logfile={}", node2_vcp.display()),
        ],
        "chardev:vcp",
        node2_modem,
    );
    let vcp = node2.pty();
    // Node 1 boots now too; both hold their CPUs until the radio connects.
    let node1_modem = free_port();
    let node1_vcp = dir.path().join("node1-vcp.log");
    let node1 = Board::boot(
        dir.path(),
        "node1",
        &node1_elf,
        &[],
        &format!("file:{}", node1_vcp.display()),
        node1_modem,
    );
    let cfg = format!(
        "[source]\nkind = \"serial\"\npath = \"{vcp}\"\nbaud = 115200\n\
         [storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-firmware\"\n\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"firmware\"\nflush_interval = \"50ms\"\n",
        dir.path().join("data").display(),
        mosquitto.url(),
        influx.url()
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    wait_until("the gateway to open Node 2's VCP", WAIT, || async {
        crate::gateway::plain(&gw.log()).contains("✓ source")
    })
    .await;

    // The air between them: each board runs from the moment its end connects, and the
    // emulator answers both at once.
    let node2_end = End::connect(node2_modem, NODE2);
    let node1_end = End::connect(node1_modem, NODE1);
    let radio = RadioEmulator::start(
        node1_end,
        node2_end,
        Air {
            loss_per_mille: 200,
            corrupt_per_mille: 50,
            seed: SEED,
            interference_before: Some(INTERFERENCE_BEFORE),
        },
    );

    // Node 1 finishes PACKETS packets: each acknowledged or given up.
    let node1_log = || std::fs::read_to_string(&node1_vcp).unwrap_or_default();
    let finished = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("acked seq=") || l.starts_with("gave up seq="))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(40 + 4 * u64::from(PACKETS));
    while finished(&node1_log()) < usize::from(PACKETS) {
        assert!(
            Instant::now() < deadline,
            "Node 1 finished {} of {PACKETS} packets; its VCP:\n{}\nNode 2's QEMU:\n{}",
            finished(&node1_log()),
            node1_log(),
            node2.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node1);
    // The emulator's last reads from Node 1's socket are recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let air = radio.transmissions();

    // Both boards set their modems up as docs/PROTOCOL.md ("Set-up") says, each reply awaited.
    for (address, setup_address) in [(NODE1, "AT+ADDRESS=1\r\n"), (NODE2, "AT+ADDRESS=2\r\n")] {
        let commands: Vec<Vec<u8>> = radio
            .commands()
            .into_iter()
            .filter(|(a, _)| *a == address)
            .map(|(_, c)| c)
            .take(5)
            .collect();
        let want: Vec<&[u8]> = vec![
            b"AT\r\n",
            setup_address.as_bytes(),
            b"AT+NETWORKID=18\r\n",
            b"AT+BAND=915000000\r\n",
            b"AT+PARAMETER=7,9,1,7\r\n",
        ];
        assert_eq!(commands, want, "set-up of the board at address {address}");
    }

    // What the air saw, per packet of Node 1, in order.
    let mut packets: BTreeMap<u16, Packet> = BTreeMap::new();
    // Frames Node 2 got corrupted: in all, and before the last packet it printed.
    let (mut corrupted, mut corrupted_before_last_print) = (0, 0);
    for t in &air {
        if t.from == NODE2 {
            let (ack, _) = lora_link::packet::AckPacket::decode(&t.data).unwrap();
            let packet = packets.entry(ack.seq_num).or_default();
            packet
                .story
                .push(if t.fate == Fate::Delivered { 'a' } else { 'x' });
            continue;
        }
        let p = SensorDataPacket::decode_frame(&t.data).unwrap_or_else(|e| {
            panic!(
                "Node 1 sent a frame that does not decode: {:02X?}: {e:?}",
                t.data
            )
        });
        assert_eq!(
            (p.temperature, p.humidity, p.gas_resistance),
            emulated_bme680(p.seq_num),
            "packet {}: the emulated sensor's values",
            p.seq_num
        );
        let packet = packets.entry(p.seq_num).or_default();
        packet.attempts += 1;
        packet.story.push(match t.fate {
            Fate::Delivered => 'D',
            Fate::Lost => 'L',
            Fate::Corrupted => 'C',
        });
        match t.fate {
            Fate::Corrupted => corrupted += 1,
            Fate::Delivered if packet.delivered_on.is_none() => {
                packet.delivered_on = Some(packet.attempts);
                corrupted_before_last_print = corrupted;
            }
            Fate::Delivered | Fate::Lost => {}
        }
    }
    let acks_delivered: BTreeSet<u16> = air
        .iter()
        .filter(|t| t.from == NODE2 && t.fate == Fate::Delivered)
        .map(|t| {
            lora_link::packet::AckPacket::decode(&t.data)
                .unwrap()
                .0
                .seq_num
        })
        .collect();
    let story: Vec<String> = packets
        .iter()
        .take(STORY.split_whitespace().count())
        .map(|(seq, p)| format!("{seq}:{}", p.story))
        .collect();
    assert_eq!(
        story.join(" "),
        STORY.split_whitespace().collect::<Vec<_>>().join(" "),
        "what went over the air (a difference means Node 1 or Node 2 did not follow the \
         link's rules, or an ACK took longer than Node 1's timeout)"
    );
    assert!(
        packets.keys().copied().eq(1..=packets.len() as u16),
        "Node 1's sequence numbers start at 1 and go up by one: {:?}",
        packets.keys()
    );
    let log = node1_log();
    let (acked, gave_up) = (seqs(&log, "acked"), seqs(&log, "gave up"));
    // The packet after the last (if Node 1 began it before it was stopped) is half told.
    for (seq, p) in packets.range(..=PACKETS) {
        let sent_lines = log
            .lines()
            .filter(|l| l.starts_with(&format!("sent seq={seq} try=")))
            .count();
        assert_eq!(
            sent_lines, p.attempts,
            "packet {seq}: Node 1's count of its attempts"
        );
        assert!(
            p.attempts <= ATTEMPTS,
            "packet {seq}: {} attempts",
            p.attempts
        );
        if acked.contains(seq) {
            assert!(
                acks_delivered.contains(seq),
                "packet {seq}: acked without an ACK on the air"
            );
        }
        if gave_up.contains(seq) {
            assert_eq!(
                p.attempts, ATTEMPTS,
                "packet {seq} was given up before its last try"
            );
        }
        if p.delivered_on.is_none() && (acked.contains(seq) || gave_up.contains(seq)) {
            assert!(
                gave_up.contains(seq),
                "packet {seq} never reached Node 2, yet was acked"
            );
        }
    }
    assert!(acked.len() + gave_up.len() >= usize::from(PACKETS));
    let retried = packets.values().filter(|p| p.attempts > 1).count();
    let saved = packets
        .values()
        .filter(|p| p.delivered_on.is_some_and(|a| a > 1))
        .count();
    assert!(
        saved > 0,
        "no packet reached Node 2 only by a retransmission: {packets:?}"
    );
    let delivered: BTreeSet<u16> = packets
        .iter()
        .filter(|(_, p)| p.delivered_on.is_some())
        .map(|(seq, _)| *seq)
        .collect();

    // Every delivered packet reaches the subscriber once, and the CRC failures show.
    let gas_topic = "iiot/node1/gas_resistance";
    let want_gas: BTreeMap<String, usize> = delivered
        .iter()
        .map(|seq| (emulated_bme680(*seq).2.to_string(), 1))
        .collect();
    sub.wait_for(
        |m| m.iter().filter(|m| m.topic == gas_topic).count() >= delivered.len(),
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs = sub.messages();
    let got_gas = counts(
        msgs.iter()
            .filter(|m| m.topic == gas_topic)
            .map(|m| m.payload.clone()),
    );
    assert_eq!(
        got_gas, want_gas,
        "node1 gas resistance on MQTT (one per packet)"
    );
    let crc_errors: Vec<u64> = msgs
        .iter()
        .filter(|m| m.topic == "iiot/stats/crc_errors")
        .map(|m| m.payload.parse().unwrap())
        .collect();
    assert_eq!(
        crc_errors.last().copied(),
        Some(corrupted_before_last_print),
        "stats/crc_errors counts the corrupted frames ({corrupted} in all, {corrupted_before_last_print} before Node 2's last line)"
    );
    assert!(
        corrupted_before_last_print > 0,
        "the loss model corrupted no frame"
    );

    // Node 2's VCP, byte for byte: one line per packet (a repeat acknowledged, never printed
    // again), each a JSON object ending in a real CR LF, `ts` never going back (two packets
    // can share a 10 ms tick of the emulator build).
    let vcp_bytes = std::fs::read_to_string(&node2_vcp).unwrap();
    let lines: Vec<&str> = vcp_bytes.split("\r\n").collect();
    assert_eq!(
        lines.last(),
        Some(&""),
        "Node 2's output ends with CR LF: {vcp_bytes:?}"
    );
    let lines = &lines[..lines.len() - 1];
    assert_eq!(
        lines.len(),
        delivered.len(),
        "one line per delivered packet: {vcp_bytes}"
    );
    let mut last_ts = None;
    for line in lines {
        assert!(
            line.starts_with("{\"ts\":") && line.ends_with('}') && !line.contains(['\r', '\n']),
            "a Node 2 line: {line:?}"
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["ts"].as_u64().unwrap();
        assert!(last_ts <= Some(ts), "ts never goes back: {vcp_bytes}");
        last_ts = Some(ts);
    }

    // The database holds each delivered packet once, with its values.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
    let points = influx.points("firmware").await;
    let node1_points = |metric: &str| {
        counts(
            points
                .iter()
                .filter(|p| p.measurement == metric && p.tag("node") == Some("node1"))
                .map(|p| format!("{}", p.value)),
        )
    };
    let expect = |f: fn(u16) -> String| counts(delivered.iter().map(|s| f(*s)));
    assert_eq!(
        node1_points("gas_resistance"),
        expect(|s| format!("{}", f64::from(emulated_bme680(s).2))),
        "node1 gas resistance in the database"
    );
    assert_eq!(
        node1_points("temperature"),
        expect(|s| format!("{}", f64::from(emulated_bme680(s).0) / 10.0)),
        "node1 temperature in the database"
    );
    assert_eq!(
        node1_points("humidity"),
        expect(|s| format!(
            "{}",
            (f64::from(emulated_bme680(s).1) / 10.0).round() / 10.0
        )),
        "node1 humidity in the database (Node 2 prints one decimal)"
    );
    // Node 2's own emulated SHT3x: its values, never a stale one (a line right after a
    // failed read has none).
    for (metric, value) in [("temperature", 23.5), ("humidity", 51.0)] {
        let n2: Vec<f64> = points
            .iter()
            .filter(|p| p.measurement == metric && p.tag("node") == Some("node2"))
            .map(|p| p.value)
            .collect();
        assert!(
            !n2.is_empty() && n2.len() <= delivered.len() && n2.iter().all(|v| *v == value),
            "node2 {metric}: {n2:?}"
        );
    }
    eprintln!(
        "firmware chain: {} packets, {} transmissions of Node 1, {retried} retransmitted, \
         {saved} delivered by a retransmission, {} delivered, {} given up, {corrupted} corrupted",
        packets.len(),
        air.iter().filter(|t| t.from == NODE1).count(),
        delivered.len(),
        gave_up.len(),
    );
    drop(node2);
}
