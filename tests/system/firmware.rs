//! The whole radio side, emulated: our Node 1 and Node 2 firmware (`firmware/`, built by
//! `scripts/firmware` without `--keys`, so both emulator images hold the published test key
//! of docs/PROTOCOL.md for node 1) each run in a QEMU `netduinoplus2`, their modem UARTs
//! joined by the radio emulator (`radio_emulator.rs`, test code) with a seeded 20 % loss and
//! 5 % corruption, and an attacker on the air: forged frames as node 1 under a wrong key,
//! frames recorded earlier played back (uplinks to Node 2, ACKs to Node 1), a frame of the
//! original format and a sender not in Node 2's table. Node 2's virtual COM port is a pty read
//! by the gateway's serial source, which publishes to a real Mosquitto and writes to a real
//! InfluxDB 1.x. Every packet Node 1 sent is in the database exactly once, or Node 1 retried
//! it until it gave up; none of the attacker's frames is stored, acknowledged or taken by
//! Node 1 as an ACK; Node 2 names every refused frame's reason on its VCP, and its `sts.err`
//! (`stats/crc_errors`) counts them; nothing is duplicated.
//!
//! Commands (docs/PROTOCOL.md, "Downlink"): the test writes `cmd` lines to Node 2's VCP, as
//! the gateway does, one after the other as each is confirmed (`ping`, `identify`, `interval
//! 5`): Node 2 puts each in the sealed ACK of Node 1's next uplink, Node 1 applies each once
//! and confirms it in an uplink sent at once, the gateway's receive times show the interval
//! going from 2 s to 5 s, and the ping brings Node 1's info. A second, smaller chain (no gateway) has Node 1 reboot on
//! command: once, keeping its counter, its interval and what it applied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::Write as _;

use lora_link::downlink::{Kind, NodeInfo};
use lora_link::modem::Frame;
use lora_link::node2::{Node, Outcome, Peer, Receiver};
use lora_link::packet::SensorDataPacket;
use lora_link::secure::{self, Key, Rejection};
use lora_link::vcp::Report;

use crate::gateway::{counts, TestGateway};
use crate::radio_emulator::{
    Air, AttackKind, Attacker, Delivery, End, Fate, RadioEmulator, Transmission,
};
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
/// 10's first delivery and the first ACK of 11 come while their receivers set their modems up
/// again (below), and are dropped: one more try each (11's second is lost); 13 is corrupted
/// twice (two CRC failures) before it gets through.
const SEED: u64 = 0x17e;
const STORY: &str = "1:Da 2:Da 3:DxDxCDx 4:LDa 5:LDa 6:LCLL 7:Da 8:Da 9:Da 10:DDa 11:DaLDa \
                     12:Da 13:CCDa 14:Da 15:Da 16:Da 17:Da 18:Da 19:Da 20:Da";
/// Before packet 10 first reaches Node 2, its modem also says `+READY` and a line of noise,
/// and so does Node 1's before Node 2's 10th ACK: a modem restart. Each board sets its modem
/// up again (the noise is no radio error).
const INTERFERENCE_BEFORE: u16 = 10;
const QEMU_HINT: &str = "apt-get install -y --no-install-recommends qemu-system-arm";
/// The key of docs/PROTOCOL.md's vectors, node 1's in the emulator images: published.
pub(crate) const TEST_KEY: Key = Key::new([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
/// The attacker's key: not node 1's.
const WRONG_KEY: Key = Key::new([0xA5; 16]);
/// What the attacker's forgeries carry: values no packet of the emulated BME680 has.
const FORGED: SensorDataPacket = SensorDataPacket {
    seq_num: 4242,
    temperature: 999,
    humidity: 9999,
    gas_resistance: 4_242_424,
};
/// An address in no table.
const STRANGER: u16 = 7;
/// The commands the test sends, one after the other as each is confirmed, once Node 1 has
/// finished `COMMANDS_AFTER` packets: `(number, line)`.
const COMMANDS: [(u16, &str); 3] = [
    (1, "cmd 1 1 ping"),
    (2, "cmd 1 2 identify 2"),
    (3, "cmd 1 3 interval 5"),
];
const COMMANDS_AFTER: usize = 2;
/// Node 1's uplink interval in the emulator image, and the one the test sets, ms.
const DEFAULT_INTERVAL_MS: u64 = 2_000;
const NEW_INTERVAL_MS: u64 = 5_000;

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
pub(crate) struct Board {
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
    pub(crate) fn output(&self) -> String {
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

/// Node 2's VCP as the gateway writes to it: the pty QEMU made for its USART2 (the gateway
/// reads the same pty; what the test writes goes to Node 2 only).
struct VcpWriter(std::fs::File);

impl VcpWriter {
    fn open(pty: &str) -> VcpWriter {
        use std::os::unix::fs::OpenOptionsExt as _;
        // O_NOCTTY: never the test's controlling terminal (QEMU's exit would hang it up).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(pty)
            .unwrap_or_else(|e| panic!("open Node 2's VCP {pty} for writing: {e}"));
        VcpWriter(file)
    }

    /// Writes `line` and its `\n`, as the gateway writes a `cmd` line.
    fn line(&mut self, line: &str) {
        self.0.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.0.flush().unwrap();
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

/// The genuine air, opened with node 1's key: per seq, what became of each transmission of
/// its frame and of each ACK to it; and the frames Node 2 got corrupted.
struct AirStory {
    packets: BTreeMap<u16, Packet>,
    /// The seqs whose ACK reached Node 1 at least once.
    acks_delivered: BTreeSet<u16>,
    corrupted: usize,
}

fn air_story(air: &[Transmission]) -> AirStory {
    let mut packets: BTreeMap<u16, Packet> = BTreeMap::new();
    let mut acks_delivered = BTreeSet::new();
    let mut counters: Vec<(u32, u16)> = Vec::new();
    let mut corrupted = 0;
    for t in air {
        if t.from == NODE2 {
            // An ACK answers one of node 1's frames: the one whose counter opens it.
            let seq = counters
                .iter()
                .rev()
                .find_map(|(c, _)| secure::open_ack(&TEST_KEY, NODE1, *c, &t.data).ok())
                .unwrap_or_else(|| {
                    panic!(
                        "Node 2 sent an ACK no frame of node 1 opens: {:02X?}",
                        t.data
                    )
                })
                .seq_num;
            packets
                .entry(seq)
                .or_default()
                .story
                .push(if t.fate == Fate::Delivered { 'a' } else { 'x' });
            if t.fate == Fate::Delivered {
                acks_delivered.insert(seq);
            }
            continue;
        }
        let up = secure::open_uplink(&TEST_KEY, NODE1, &t.data).unwrap_or_else(|e| {
            panic!(
                "Node 1 sent a frame the published test key does not open ({e}): {:02X?}; \
                 build the emulator images with scripts/firmware without --keys",
                t.data
            )
        });
        let p = up.packet;
        assert_eq!(
            (p.temperature, p.humidity, p.gas_resistance),
            emulated_bme680(p.seq_num),
            "packet {}: the emulated sensor's values",
            p.seq_num
        );
        if !counters.iter().any(|(c, _)| *c == up.counter) {
            assert!(
                counters.last().is_none_or(|(c, _)| *c < up.counter),
                "Node 1's counter went back: {counters:?} then {}",
                up.counter
            );
            counters.push((up.counter, p.seq_num));
        }
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
            }
            Fate::Delivered | Fate::Lost => {}
        }
    }
    // One counter per packet: a retransmission is the same frame.
    let seqs: Vec<u16> = counters.iter().map(|(_, s)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "one counter per packet, in order: {counters:?}"
    );
    AirStory {
        packets,
        acks_delivered,
        corrupted,
    }
}

/// Node 2's rules (`lora_link::node2::Receiver`, with the emulator image's table) run over
/// every frame Node 2's modem port received, in order: what Node 2 must have done.
struct Expected {
    /// New packets: the lines Node 2 prints.
    new: usize,
    /// Refusals by reason.
    rejected: BTreeMap<String, usize>,
    /// Frames of the attacker that reached Node 2, by kind.
    attacks: BTreeMap<String, usize>,
}

fn expected_node2(deliveries: &[Delivery]) -> Expected {
    let table = [Node {
        address: NODE1,
        peer: Peer::Keyed(TEST_KEY),
    }];
    let mut model = Receiver::new(&table);
    let mut e = Expected {
        new: 0,
        rejected: BTreeMap::new(),
        attacks: BTreeMap::new(),
    };
    for d in deliveries {
        let outcome = model.on_frame(&Frame {
            sender: d.from,
            data: &d.data,
            rssi: -40,
            snr: 9,
        });
        if let Some(kind) = d.attack {
            *e.attacks.entry(format!("{kind:?}")).or_default() += 1;
            let want = match kind {
                AttackKind::Forged => Rejection::BadTag,
                AttackKind::ReplayedUplink => Rejection::Replay,
                AttackKind::LegacyFrame => Rejection::LegacyFormat,
                AttackKind::UnknownSender => Rejection::UnknownNode,
                AttackKind::ReplayedAck | AttackKind::ForgedAck => unreachable!("to Node 1"),
            };
            assert_eq!(
                outcome,
                Outcome::Rejected {
                    from: d.from,
                    reason: want
                },
                "the attacker's {kind:?} frame {:02X?}",
                d.data
            );
        }
        match outcome {
            Outcome::New { .. } => e.new += 1,
            Outcome::Rejected { reason, .. } => {
                *e.rejected.entry(reason.as_str().to_string()).or_default() += 1;
            }
            Outcome::Duplicate { .. } | Outcome::Broken | Outcome::NotAFrame => {}
        }
    }
    e
}

/// What Node 2 wrote on its VCP.
struct Node2Output {
    /// The JSON lines, one per new packet.
    json: Vec<String>,
    /// Refused frames by reason.
    rejected: BTreeMap<String, usize>,
    /// The refusals before the last JSON line.
    refused_before_last_json: u64,
    /// The downlink's lines (`command ...`, `confirmed ...`, `info ...`), in order.
    reports: Vec<Report>,
    /// What Node 2 said of its modem: `modem restarted: set-up again`, `ack send failed ...`.
    modem: Vec<String>,
}

/// Node 2's VCP, byte for byte: each line ends in a real CR LF and is either a JSON line (one
/// per new packet, `ts` never going back: two packets can share a 10 ms tick of the emulator
/// build), `rejected from=<address> reason=<reason> count=<n>` (n counting that reason), a
/// start-up `warning: node ...`, a line of the downlink (`lora_link::vcp::Report`), one
/// about its modem (`modem restarted: set-up again`, `ack send failed ...`), its stack's
/// high-water mark (`stack peak=...`) or its self-test at start (`self-test: ...`).
fn node2_output(vcp: &str) -> Node2Output {
    let lines: Vec<&str> = vcp.split("\r\n").collect();
    assert_eq!(
        lines.last(),
        Some(&""),
        "Node 2's output ends with CR LF: {vcp:?}"
    );
    let mut out = Node2Output {
        json: Vec::new(),
        rejected: BTreeMap::new(),
        refused_before_last_json: 0,
        reports: Vec::new(),
        modem: Vec::new(),
    };
    let mut refused = 0;
    let mut last_ts = None;
    for line in &lines[..lines.len() - 1] {
        assert!(!line.contains(['\r', '\n']), "a Node 2 line: {line:?}");
        if line.starts_with("warning: node ") {
            continue; // a node of the table that is not secure (none in the emulator's)
        }
        if line.starts_with("stack peak=") || line.starts_with("self-test: ") {
            continue; // its stack's high-water mark, its start-up self-test (firmware_faults.rs)
        }
        if *line == "modem restarted: set-up again" || line.starts_with("ack send failed ") {
            out.modem.push(line.to_string());
            continue;
        }
        if let Some(report) = Report::parse(line) {
            assert!(
                !line.contains("\":") && !line.contains(['{', '}']),
                "the gateway's decoder must skip {line:?}"
            );
            out.reports.push(report);
            continue;
        }
        if let Some(rest) = line.strip_prefix("rejected ") {
            let field = |name: &str| {
                rest.split(' ')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                    .to_string()
            };
            let reason = field("reason");
            let n = out.rejected.entry(reason).or_default();
            *n += 1;
            assert_eq!(field("count"), n.to_string(), "{line:?}: the running count");
            refused += 1;
            continue;
        }
        assert!(
            line.starts_with("{\"ts\":") && line.ends_with('}'),
            "a Node 2 line: {line:?}"
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["ts"].as_u64().unwrap();
        assert!(last_ts <= Some(ts), "ts never goes back: {vcp}");
        last_ts = Some(ts);
        out.refused_before_last_json = refused;
        out.json.push(line.to_string());
    }
    out
}

/// Both boards booted in QEMU, each holding its CPU until the radio connects to its modem
/// port.
struct Boards {
    node1: Board,
    node2: Board,
    node1_vcp: PathBuf,
    node2_vcp: PathBuf,
    /// Node 2's VCP (USART2), a pty: the gateway's serial device.
    node2_pty: String,
    node1_modem: u16,
    node2_modem: u16,
}

fn boot_boards(dir: &Path) -> Boards {
    // Node 2 first: its VCP is the gateway's serial device.
    let (node2, node2_vcp, node2_pty, node2_modem) = boot_node2(dir);
    // Node 1 boots now too; both hold their CPUs until the radio connects.
    let (node1, node1_vcp, node1_modem) = boot_node1(dir);
    Boards {
        node1,
        node2,
        node1_vcp,
        node2_vcp,
        node2_pty,
        node1_modem,
        node2_modem,
    }
}

/// Node 2 in QEMU, holding its CPU until the radio connects: the board, the log of
/// everything it writes to its VCP (QEMU's, to check the lines byte for byte), its VCP's pty
/// and its modem port.
pub(crate) fn boot_node2(dir: &Path) -> (Board, PathBuf, String, u16) {
    let modem = free_port();
    let vcp = dir.join("node2-vcp.log");
    let node2 = Board::boot(
        dir,
        "node2",
        &image("node2"),
        &[
            "-chardev".into(),
            format!("pty,id=vcp,logfile={}", vcp.display()),
        ],
        "chardev:vcp",
        modem,
    );
    let pty = node2.pty();
    (node2, vcp, pty, modem)
}

/// Node 1 in QEMU, holding its CPU until the radio connects: the board, the file its VCP
/// writes to, and its modem port.
pub(crate) fn boot_node1(dir: &Path) -> (Board, PathBuf, u16) {
    let modem = free_port();
    let vcp = dir.join("node1-vcp.log");
    let node1 = Board::boot(
        dir,
        "node1",
        &image("node1"),
        &[],
        &format!("file:{}", vcp.display()),
        modem,
    );
    (node1, vcp, modem)
}

/// The air between the boards: each runs from the moment its end connects, and the emulator
/// answers both at once.
fn connect_radio(boards: &Boards, air: Air) -> RadioEmulator {
    let node2_end = End::connect(boards.node2_modem, NODE2);
    let node1_end = End::connect(boards.node1_modem, NODE1);
    RadioEmulator::start(node1_end, node2_end, air)
}

/// The chain: both boards in QEMU, the radio between them, the gateway on Node 2's VCP.
struct Chain {
    node1: Board,
    node2: Board,
    node1_vcp: PathBuf,
    node2_vcp: PathBuf,
    /// Where the test writes `cmd` lines, as the gateway does.
    commands: VcpWriter,
    radio: RadioEmulator,
    gw: TestGateway,
}

async fn start_chain(dir: &Path, mosquitto: &Mosquitto, influx: &InfluxDb1) -> Chain {
    let boards = boot_boards(dir);
    let cfg = format!(
        "[source]\nkind = \"serial\"\npath = \"{}\"\nbaud = 115200\n\
         [storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-firmware\"\n\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"firmware\"\nflush_interval = \"50ms\"\n",
        boards.node2_pty,
        dir.join("data").display(),
        mosquitto.url(),
        influx.url()
    );
    let gw = TestGateway::start(dir, &cfg, Stdio::null());
    wait_until("the gateway to open Node 2's VCP", WAIT, || async {
        crate::gateway::plain(&gw.log()).contains("✓ source")
    })
    .await;
    let commands = VcpWriter::open(&boards.node2_pty);

    // The attacker is on the air from the start.
    let radio = connect_radio(
        &boards,
        Air {
            loss_per_mille: 200,
            corrupt_per_mille: 50,
            seed: SEED,
            interference_before: Some(INTERFERENCE_BEFORE),
        },
    );
    radio.attack(Attacker {
        every: Duration::from_millis(300),
        node: NODE1,
        receiver: NODE2,
        wrong_key: WRONG_KEY,
        forged: FORGED,
        unknown: STRANGER,
    });
    let Boards {
        node1,
        node2,
        node1_vcp,
        node2_vcp,
        ..
    } = boards;
    Chain {
        node1,
        node2,
        node1_vcp,
        node2_vcp,
        commands,
        radio,
        gw,
    }
}

/// The test's side of the downlink: it writes each command of [`COMMANDS`] once Node 2
/// reported the one before confirmed (as the gateway would, which sends one command at a
/// time per node and never needs to resend through Node 2: Node 2 keeps it until confirmed).
struct Commander {
    next: usize,
}

impl Commander {
    /// Writes the next command when its time has come; `true` once all are confirmed.
    fn step(&mut self, vcp: &mut VcpWriter, node1_finished: usize, node2_log: &str) -> bool {
        let confirmed = |n: u16| node2_log.contains(&format!("confirmed from=1 number={n}\r\n"));
        let ready = match self.next {
            0 => node1_finished >= COMMANDS_AFTER,
            k if k < COMMANDS.len() => confirmed(COMMANDS[k - 1].0),
            _ => return confirmed(COMMANDS[COMMANDS.len() - 1].0),
        };
        if ready {
            vcp.line(COMMANDS[self.next].1);
            self.next += 1;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node1_over_a_lossy_radio_with_an_attacker_reaches_mqtt_and_the_database_exactly_once() {
    let mosquitto = Mosquitto::start();
    let influx = InfluxDb1::start();
    influx.create_database("firmware");
    let sub = Subscriber::connect(mosquitto.port, "watcher-firmware", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let Chain {
        node1,
        node2,
        node1_vcp,
        node2_vcp,
        mut commands,
        radio,
        mut gw,
    } = start_chain(dir.path(), &mosquitto, &influx).await;

    // Node 1 finishes PACKETS packets (each acknowledged or given up), and the commands are
    // confirmed one after the other meanwhile.
    let node1_log = || std::fs::read_to_string(&node1_vcp).unwrap_or_default();
    let node2_log = || std::fs::read_to_string(&node2_vcp).unwrap_or_default();
    let finished = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("acked seq=") || l.starts_with("gave up seq="))
            .count()
    };
    let mut commander = Commander { next: 0 };
    // At most 2 s per packet before the interval command, 5 s after; commands wait for
    // losses on the air.
    let deadline = Instant::now() + Duration::from_secs(60 + 6 * u64::from(PACKETS));
    loop {
        let done = finished(&node1_log());
        let confirmed = commander.step(&mut commands, done, &node2_log());
        if done >= usize::from(PACKETS) && confirmed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Node 1 finished {done} of {PACKETS} packets, the test wrote {} of {} commands; \
             its VCP:\n{}\nNode 2's VCP:\n{}\nNode 2's QEMU:\n{}",
            commander.next,
            COMMANDS.len(),
            node1_log(),
            node2_log(),
            node2.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    radio.stop_attack();
    drop(node1);
    // The emulator's last reads from Node 1's socket are recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let air = radio.transmissions();

    check_setup(&radio);

    // What the air saw, per packet of Node 1, in order: the story of the seed, whatever the
    // attacker did (none of its frames made Node 1 stop early or Node 2 answer).
    let AirStory {
        packets,
        acks_delivered,
        corrupted,
    } = air_story(&air);
    let gave_up = check_node1(&packets, &acks_delivered, &node1_log());
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
    assert!(corrupted > 0, "the loss model corrupted no frame");
    // The attacker's ACKs reached Node 1, and it took none (the story above).
    let to_node1 = counts(
        radio
            .deliveries(NODE1)
            .iter()
            .filter_map(|d| d.attack.map(|k| format!("{k:?}"))),
    );
    for kind in ["ReplayedAck", "ForgedAck"] {
        assert!(
            to_node1.get(kind).copied().unwrap_or(0) >= 3,
            "the attacker's {kind} frames reached Node 1: {to_node1:?}"
        );
    }

    // Node 2 did what its rules say with every frame it got, the attacker's included: each
    // of those refused with its reason, named on its VCP; one line per new packet.
    let expected = expected_node2(&radio.deliveries(NODE2));
    for kind in ["Forged", "ReplayedUplink", "LegacyFrame", "UnknownSender"] {
        assert!(
            expected.attacks.get(kind).copied().unwrap_or(0) >= 3,
            "the attacker's {kind} frames reached Node 2: {:?}",
            expected.attacks
        );
    }
    let Node2Output {
        json: json_lines,
        rejected,
        refused_before_last_json,
        reports,
        modem,
    } = node2_output(&std::fs::read_to_string(&node2_vcp).unwrap());
    assert_eq!(
        modem,
        ["modem restarted: set-up again"],
        "Node 2's modem lines"
    );
    assert_eq!(
        rejected, expected.rejected,
        "Node 2's refusals by reason (its VCP) against its rules run on what it received"
    );
    assert_eq!(
        (json_lines.len(), expected.new),
        (delivered.len(), delivered.len()),
        "one line per delivered packet"
    );
    assert!(
        json_lines.iter().all(|l| !l.contains("\"g\":4242424")),
        "a forged packet was printed"
    );

    check_mqtt(&sub, &delivered, refused_before_last_json, corrupted).await;
    let interval_after = check_commands(&reports, &node1_log(), &air);

    // The database holds each delivered packet once, with its values, and nothing forged.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait(WAIT).success(), "{}", gw.log());
    check_database(&influx, &delivered).await;
    let (before, after) = check_interval(&influx, &packets, interval_after, &node1_log()).await;
    eprintln!(
        "firmware chain: {} packets, {} transmissions of Node 1, {retried} retransmitted, \
         {saved} delivered by a retransmission, {} delivered, {} given up, {corrupted} \
         corrupted; the attacker's frames: {:?} to Node 2, {to_node1:?} to Node 1; Node 2 \
         refused {rejected:?}; interval command applied after packet {interval_after}, \
         receive-time gaps before {before:?} ms, after {after:?} ms",
        packets.len(),
        air.iter().filter(|t| t.from == NODE1).count(),
        delivered.len(),
        gave_up.len(),
        expected.attacks,
    );
    drop(node2);
}

/// The firmware's version (firmware/Cargo.toml), as Node 1 reports it.
pub(crate) fn firmware_version() -> [u8; 3] {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware/Cargo.toml");
    let text = std::fs::read_to_string(manifest).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("firmware/Cargo.toml: version");
    let parts: Vec<u8> = version.split('.').map(|p| p.parse().unwrap()).collect();
    parts.try_into().unwrap()
}

/// Each command was queued, sent, confirmed once (Node 2's reports) and applied once (Node
/// 1's VCP); Node 1 confirmed only commands an ACK brought it (the air); the info came after
/// the boot and with the ping's confirmation. Returns the seq of the packet whose ACK
/// brought the interval command (the packets after it are 5 s apart).
fn check_commands(reports: &[Report], node1_log: &str, air: &[Transmission]) -> u16 {
    let count = |want: Report| reports.iter().filter(|r| **r == want).count();
    for (number, line) in COMMANDS {
        let (to, from) = (NODE1, NODE1);
        assert_eq!(
            count(Report::Queued { to, number }),
            1,
            "{line}: {reports:?}"
        );
        assert!(
            count(Report::Sent { to, number }) >= 1,
            "{line}: {reports:?}"
        );
        assert_eq!(
            count(Report::Confirmed { from, number }),
            1,
            "{line}: confirmed once ({reports:?})"
        );
    }
    assert!(
        !reports.iter().any(|r| matches!(r, Report::Refused { .. })),
        "{reports:?}"
    );
    // Node 1 applied each once; any other line of a command is a repeat of one.
    let lines: Vec<&str> = node1_log
        .lines()
        .filter(|l| l.starts_with("command number="))
        .collect();
    let applied: Vec<&&str> = lines.iter().filter(|l| l.ends_with(" applied")).collect();
    assert_eq!(
        applied,
        [
            &"command number=1 kind=ping value=0 applied",
            &"command number=2 kind=identify value=2 applied",
            &"command number=3 kind=interval value=5 applied",
        ],
        "Node 1's VCP:\n{node1_log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with(" again (not applied)") || l.ends_with(" applied")),
        "{lines:?}"
    );
    let log: Vec<&str> = node1_log.lines().collect();
    let at = log
        .iter()
        .position(|l| l.starts_with("command number=3 ") && l.ends_with(" applied"))
        .unwrap();
    assert_eq!(log.get(at + 1), Some(&"interval now 5000 ms"));
    assert_eq!(
        log.iter().filter(|l| l.starts_with("interval now")).count(),
        1
    );
    let interval_after: u16 = log[..at]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("acked seq="))
        .and_then(|s| s.parse().ok())
        .expect("the interval command came with an ACK");
    check_info(reports);
    check_confirmations_on_the_air(air);
    interval_after
}

/// The first uplink after the boot carried Node 1's info (this firmware's version, boot 1,
/// reset reason 0: QEMU has no reset flags), and so did the one confirming the ping.
fn check_info(reports: &[Report]) {
    let infos: Vec<(usize, NodeInfo)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Report::Info { from: NODE1, info } => Some((i, *info)),
            _ => None,
        })
        .collect();
    let (_, first) = infos[0];
    assert_eq!(
        (first.version, first.boots, first.reset),
        (firmware_version(), 1, 0),
        "{first:?}"
    );
    assert!(first.uptime_s <= 5, "the first uplink's info: {first:?}");
    let ping = reports
        .iter()
        .position(|r| {
            *r == Report::Confirmed {
                from: NODE1,
                number: 1,
            }
        })
        .unwrap();
    let (_, pong) = infos
        .iter()
        .find(|(i, _)| *i == ping + 1)
        .unwrap_or_else(|| panic!("no info with the ping's confirmation: {reports:?}"));
    assert_eq!((pong.version, pong.boots), (first.version, 1));
    assert!(pong.uptime_s > first.uptime_s, "{pong:?} after {first:?}");
}

/// On the air: Node 1 confirmed only numbers an ACK delivered to it carried, and every ACK
/// with a command carried one of the test's.
fn check_confirmations_on_the_air(air: &[Transmission]) {
    let mut counters: Vec<u32> = Vec::new();
    let mut brought = BTreeSet::new();
    let mut confirmed = BTreeSet::new();
    for t in air {
        if t.from == NODE1 {
            let up = secure::open_uplink(&TEST_KEY, NODE1, &t.data).unwrap();
            counters.push(up.counter);
            if let Some(n) = up.extras.confirm {
                assert!(
                    brought.contains(&n),
                    "confirmed {n} before any ACK brought it"
                );
                confirmed.insert(n);
            }
            continue;
        }
        let command = counters
            .iter()
            .rev()
            .find_map(|c| secure::open_ack_with(&TEST_KEY, NODE1, *c, &t.data).ok())
            .map(|(_, command)| command)
            .expect("an ACK of a frame of node 1");
        if let Some(c) = command {
            let want = COMMANDS.iter().find(|(n, _)| *n == c.number);
            let kind = match c.kind {
                Kind::Ping => "ping".to_string(),
                Kind::Identify(s) => format!("identify {s}"),
                Kind::Interval(s) => format!("interval {s}"),
                Kind::Reboot => "reboot".to_string(),
            };
            assert_eq!(
                want.map(|(n, line)| (*n, *line)),
                Some((c.number, format!("cmd 1 {} {kind}", c.number).as_str())),
                "a command in an ACK"
            );
            if t.fate == Fate::Delivered {
                brought.insert(c.number);
            }
        }
    }
    assert_eq!(confirmed, COMMANDS.iter().map(|(n, _)| *n).collect());
}

/// The seqs whose ACK brought Node 1 a command (Node 1's VCP): the next uplink went at once
/// to confirm it, not one slot later.
pub(crate) fn brought_a_command(node1_log: &str) -> BTreeSet<u16> {
    let mut acked: Option<u16> = None;
    let mut brought = BTreeSet::new();
    for line in node1_log.lines() {
        if let Some(seq) = line.strip_prefix("acked seq=") {
            acked = seq.parse().ok();
        } else if line.starts_with("command number=") {
            brought.extend(acked);
        }
    }
    brought
}

/// When the gateway received each packet of node 1 in database `db` (its timestamps), by seq:
/// the emulated BME680's gas resistance is 100000 + 37 * seq ([`emulated_bme680`]).
pub(crate) async fn received_at(influx: &InfluxDb1, db: &str) -> BTreeMap<u16, i64> {
    influx
        .points(db)
        .await
        .iter()
        .filter(|p| p.measurement == "gas_resistance" && p.tag("node") == Some("node1"))
        .map(|p| (((p.value as u32 - 100_000) / 37) as u16, p.ts_ms))
        .collect()
}

/// The gateway's receive times (the database's timestamps) of packets sent one slot apart,
/// each on its first try: 2 s apart up to the packet whose ACK brought `interval 5`, 5 s
/// from it on; and each uplink after an ACK that brought a command at once (within 1 s),
/// the slots going on from it. Returns both sets of slot gaps, ms.
async fn check_interval(
    influx: &InfluxDb1,
    packets: &BTreeMap<u16, Packet>,
    interval_after: u16,
    node1_log: &str,
) -> (Vec<i64>, Vec<i64>) {
    let received = received_at(influx, "firmware").await;
    // Packet s was done with on its first try (its exchange took no slot time), and s + 1
    // was received on its only try (a frame Node 2 dropped while it set its modem up reached
    // its port but not the gateway): s + 1 came one interval after s.
    let gap = |s: u16| {
        let first_try = packets.get(&s)?.attempts == 1;
        let next = packets.get(&(s + 1))?;
        let next_first = next.attempts == 1 && next.delivered_on == Some(1);
        (first_try && next_first).then_some(received.get(&(s + 1))? - received.get(&s)?)
    };
    let at_once = brought_a_command(node1_log);
    assert!(
        at_once.contains(&interval_after),
        "{at_once:?}: {interval_after}"
    );
    let confirmations: Vec<i64> = at_once.iter().filter_map(|s| gap(*s)).collect();
    assert!(
        !confirmations.is_empty() && confirmations.iter().all(|g| (0..1_000).contains(g)),
        "the uplinks confirming a command went at once: gaps {confirmations:?} ms"
    );
    let slot = |s: &u16| !at_once.contains(s);
    let before: Vec<i64> = (1..interval_after).filter(slot).filter_map(gap).collect();
    let after: Vec<i64> = (interval_after..)
        .take(40)
        .filter(slot)
        .filter_map(gap)
        .collect();
    let median = |v: &[i64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 2]
    };
    for (gaps, want, what) in [
        (&before, DEFAULT_INTERVAL_MS, "before"),
        (&after, NEW_INTERVAL_MS, "after"),
    ] {
        let want = want as i64;
        assert!(gaps.len() >= 2, "{what} the interval command: {gaps:?}");
        // QEMU's clock falls behind on a loaded host: late, never early.
        assert!(
            gaps.iter().all(|g| (want - 300..=want + 1_500).contains(g))
                && (want - 200..=want + 500).contains(&median(gaps)),
            "receive-time gaps {what} the interval command: {gaps:?} ms, want {want} ms"
        );
    }
    (before, after)
}

/// Waits until `done(Node 1's VCP, Node 2's VCP)`, or fails showing both.
async fn wait_for_vcps(what: &str, boards: &Boards, done: impl Fn(&str, &str) -> bool) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (node1, node2) = (read(&boards.node1_vcp), read(&boards.node2_vcp));
        if done(&node1, &node2) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; Node 1's VCP:\n{node1}\nNode 2's VCP:\n{node2}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node 1 reboots on command, once: the command sent again after the restart is confirmed,
/// not applied again (what Node 1 applied is kept in RAM a reset does not clear); its frame
/// counter goes on from its stored reservation (Node 2 refuses nothing as a replay); the
/// interval it was given survives the restart; and its first uplink after it says boot 2,
/// reset reason 2 (a software reset). Both boards and a lossy radio, no gateway.
#[tokio::test(flavor = "multi_thread")]
async fn node1_reboots_on_command_once_and_goes_on_with_its_counter_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    let boards = boot_boards(dir.path());
    let mut vcp = VcpWriter::open(&boards.node2_pty);
    let radio = connect_radio(
        &boards,
        Air {
            loss_per_mille: 200,
            corrupt_per_mille: 0,
            seed: SEED,
            interference_before: None,
        },
    );
    let finished = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("acked seq=") || l.starts_with("gave up seq="))
            .count()
    };
    let reports = |log: &str| -> Vec<Report> { log.lines().filter_map(Report::parse).collect() };
    let confirmed = |log: &str, number: u16| {
        let want = Report::Confirmed {
            from: NODE1,
            number,
        };
        reports(log).iter().filter(|r| **r == want).count()
    };
    let rebooted = |log: &str| {
        reports(log)
            .iter()
            .any(|r| matches!(r, Report::Info { info, .. } if info.boots == 2))
    };
    wait_for_vcps("Node 1's first packets", &boards, |n1, _| finished(n1) >= 2).await;
    vcp.line("cmd 1 1 interval 3");
    wait_for_vcps("interval 3 confirmed", &boards, |_, n2| {
        confirmed(n2, 1) == 1
    })
    .await;
    vcp.line("cmd 1 2 reboot");
    wait_for_vcps("the reboot", &boards, |_, n2| rebooted(n2)).await;
    // The gateway sends it again (say it missed the confirmation): confirmed again.
    vcp.line("cmd 1 2 reboot");
    wait_for_vcps("the reboot confirmed again", &boards, |_, n2| {
        confirmed(n2, 2) == 2
    })
    .await;
    let after = finished(&std::fs::read_to_string(&boards.node1_vcp).unwrap());
    wait_for_vcps("four packets more", &boards, |n1, _| {
        finished(n1) >= after + 4
    })
    .await;
    drop(boards.node1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let node1_log = std::fs::read_to_string(&boards.node1_vcp).unwrap();
    let node2_log = std::fs::read_to_string(&boards.node2_vcp).unwrap();
    let count = |line: &str| node1_log.lines().filter(|l| *l == line).count();
    assert_eq!(count("rebooting"), 1, "{node1_log}");
    assert_eq!(count("command number=2 kind=reboot value=0 applied"), 1);
    assert!(count("command number=2 kind=reboot value=0 again (not applied)") >= 1);
    assert_eq!(count("command number=1 kind=interval value=3 applied"), 1);
    let out = node2_output(&node2_log);
    assert!(
        out.rejected.is_empty(),
        "Node 2 refused frames after the reboot (a counter used again is a replay): {:?}",
        out.rejected
    );
    let infos: Vec<NodeInfo> = out
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Info { from: NODE1, info } => Some(*info),
            _ => None,
        })
        .collect();
    let version = firmware_version();
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.version, i.boots, i.reset))
            .collect::<Vec<_>>(),
        [(version, 1, 0), (version, 2, 2)],
        "the info after each boot: {infos:?}"
    );
    // On the air: Node 1's counter never went back, and went on past its reservation.
    let mut counters: Vec<u32> = Vec::new();
    for t in radio.transmissions().iter().filter(|t| t.from == NODE1) {
        let counter = secure::open_uplink(&TEST_KEY, NODE1, &t.data)
            .unwrap()
            .counter;
        if counters.last() != Some(&counter) {
            assert!(
                counters.last().is_none_or(|c| *c < counter),
                "{counters:?} then {counter}"
            );
            counters.push(counter);
        }
    }
    assert!(
        counters.iter().any(|c| *c >= secure::RESERVE),
        "after the reboot Node 1 goes on from its reservation: {counters:?}"
    );
    check_interval_after_reboot(&node2_log);
    eprintln!("firmware reboot: counters {counters:?}; infos {infos:?}");
}

/// Node 2's clock (`ts`) between consecutive packets Node 1 sent after its restart: mostly
/// 3 s, the interval it was given before it (a retransmission moves one by a second).
fn check_interval_after_reboot(node2_log: &str) {
    let after_reboot = node2_log
        .split("\r\n")
        .skip_while(|l| !(l.starts_with("info from=1 ") && l.contains(" boots=2 ")));
    let packets: Vec<(u64, u64)> = after_reboot
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["ts"].as_u64().unwrap(), v["n1"]["g"].as_u64().unwrap())
        })
        .collect();
    let mut gaps: Vec<u64> = packets
        .windows(2)
        .filter(|w| w[1].1 == w[0].1 + 37)
        .map(|w| w[1].0 - w[0].0)
        .collect();
    gaps.sort_unstable();
    assert!(gaps.len() >= 2, "packets after the reboot: {packets:?}");
    let median = gaps[gaps.len() / 2];
    assert!(
        (2_800..=3_300).contains(&median),
        "Node 1's interval after the reboot: gaps {gaps:?} ms, want 3000 ms"
    );
}

/// Both boards set their modems up as docs/PROTOCOL.md ("Set-up") says, each reply awaited.
fn check_setup(radio: &RadioEmulator) {
    for (address, setup_address) in [(NODE1, "AT+ADDRESS=1\r\n"), (NODE2, "AT+ADDRESS=2\r\n")] {
        let commands: Vec<Vec<u8>> = radio
            .commands()
            .into_iter()
            .filter(|(a, _)| *a == address)
            .map(|(_, c)| c)
            .take(6)
            .collect();
        let want: Vec<&[u8]> = vec![
            b"AT\r\n",
            setup_address.as_bytes(),
            b"AT+NETWORKID=18\r\n",
            b"AT+BAND=915000000\r\n",
            b"AT+CRFOP=22\r\n",
            b"AT+PARAMETER=7,9,1,7\r\n",
        ];
        assert_eq!(commands, want, "set-up of the board at address {address}");
        // And once more after the modem's `+READY`.
        let setups = radio
            .commands()
            .iter()
            .filter(|(a, c)| *a == address && c.starts_with(b"AT+PARAMETER="))
            .count();
        assert_eq!(setups, 2, "set-ups of the board at address {address}");
    }
}

/// Node 1 followed the seed's story and its rules: its attempts, ACKs and give-ups. Returns
/// the packets it gave up.
fn check_node1(
    packets: &BTreeMap<u16, Packet>,
    acks_delivered: &BTreeSet<u16>,
    log: &str,
) -> BTreeSet<u16> {
    let story: Vec<String> = packets
        .iter()
        .take(STORY.split_whitespace().count())
        .map(|(seq, p)| format!("{seq}:{}", p.story))
        .collect();
    assert_eq!(
        story.join(" "),
        STORY.split_whitespace().collect::<Vec<_>>().join(" "),
        "what went over the air (a difference means Node 1 or Node 2 did not follow the \
         link's rules, took an attacker's frame, or an ACK took longer than Node 1's \
         timeout); Node 1's VCP:\n{log}"
    );
    assert!(
        packets.keys().copied().eq(1..=packets.len() as u16),
        "Node 1's sequence numbers start at 1 and go up by one: {:?}",
        packets.keys()
    );
    let (acked, gave_up) = (seqs(log, "acked"), seqs(log, "gave up"));
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
                "packet {seq}: acked without a genuine ACK on the air"
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
    gave_up
}

/// Every delivered packet reaches the subscriber once, none of the attacker's does, and Node
/// 2's refusals before its last line show as stats/crc_errors (`sts.err`).
async fn check_mqtt(
    sub: &Subscriber,
    delivered: &BTreeSet<u16>,
    refused_before_last_json: u64,
    corrupted: usize,
) {
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
        "node1 gas resistance on MQTT (one per packet, none forged)"
    );
    let crc_errors: Vec<u64> = msgs
        .iter()
        .filter(|m| m.topic == "iiot/stats/crc_errors")
        .map(|m| m.payload.parse().unwrap())
        .collect();
    assert_eq!(
        crc_errors.last().copied(),
        Some(refused_before_last_json),
        "stats/crc_errors counts the frames Node 2 refused before its last line \
         ({corrupted} corrupted on the air, the rest the attacker's)"
    );
}

/// Each delivered packet is in the database once with its values; Node 2's own emulated
/// SHT3x gives its values, never a stale one; nothing of the attacker's is there.
async fn check_database(influx: &InfluxDb1, delivered: &BTreeSet<u16>) {
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
    assert!(
        !points
            .iter()
            .any(|p| p.value == f64::from(FORGED.gas_resistance)
                || (p.measurement == "temperature" && p.value == 99.9)),
        "a forged value is in the database"
    );
    // A line right after a failed SHT3x read has no node2 values.
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
}
