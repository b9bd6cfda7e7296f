//! `RadioEmulator`: an EMULATOR of the LoRa air between two REYAX RYLR998 modems, for the
//! firmware test; not a real radio. Each emulated board's modem UART (QEMU's UART4, a TCP
//! socket) is one end. The emulator answers every AT command with `+OK`, as the modem does,
//! and turns each `AT+SEND=<dest>,<len>,<data>` into `+RCV=<sender>,<len>,<data>,<rssi>,<snr>`
//! at the other end, unless its seeded loss model drops it, or corrupts it (one flipped bit:
//! uplinks only, secure frames of 17 bytes or more; an acknowledgement is only ever lost).
//! Every transmission and its fate is recorded, in order, and so is every frame each end
//! received, in the order its modem port got it.
//!
//! [`Faults`] make the modems and the receiver misbehave on cue, each at a given `AT+SEND` of
//! an end: `+ERR` instead of `+OK` (nothing sent), a NACK as the receiver's instead of the
//! frame's delivery, a modem restart (`+READY`; it hears and sends nothing until it is set up
//! again), and the emulator image's own fault injection (`+FAULT=<what>`: a panic, failing
//! sensor reads; `firmware/src/board/qemu.rs`).
//!
//! An [`Attacker`] can be put on the air too: a third radio that hears everything and sends
//! as any address: forged frames under a wrong key, frames recorded earlier played back (to
//! the receiver and to the node), a frame of the original format, a sender not in the table.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lora_link::packet::SensorDataPacket;
use lora_link::secure::{self, Key};

use crate::modem_emulator::rcv;

/// What became of one transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Lost,
    /// Delivered with one bit flipped.
    Corrupted,
}

/// One `AT+SEND` as it went over the air.
#[derive(Debug, Clone)]
pub struct Transmission {
    /// The sender's address (from its `AT+ADDRESS`).
    pub from: u16,
    /// The data as the sender sent it (before any corruption).
    pub data: Vec<u8>,
    pub fate: Fate,
}

/// One frame an end's modem port received (`+RCV`), from a board or from the attacker.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The receiving board's address.
    pub to: u16,
    /// The sender's address as the modem reports it.
    pub from: u16,
    /// The data as received (corrupted, if it was).
    pub data: Vec<u8>,
    /// What the attacker sent, if it was the attacker.
    pub attack: Option<AttackKind>,
}

/// The loss model: per mille of transmissions lost, and of uplinks corrupted.
#[derive(Debug, Clone, Copy)]
pub struct Air {
    pub loss_per_mille: u64,
    pub corrupt_per_mille: u64,
    pub seed: u64,
    /// Before the first sending of this sender's n-th distinct frame (from 1), the receiving
    /// modem also says `+READY` and a line of noise (a modem restart, a glitch on the wire).
    pub interference_before: Option<u16>,
}

/// What goes wrong at an end's `AT+SEND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `+ERR=<code>` instead of `+OK`; nothing goes on the air.
    SendError(u16),
    /// The frame does not reach the receiver; the sender gets a NACK sealed as the receiver's
    /// (a receiver that refused it).
    Nack,
    /// The modem restarts before it answers: `+READY`, and until the end sends its set-up
    /// again (`AT+PARAMETER`, the last command) it sends and hears nothing.
    Restart,
    /// `+FAULT=<what>` to the end first (the emulator image's fault injection), then the send
    /// goes on as usual.
    Inject(&'static str),
}

/// Faults on cue: `(address, n, fault)` strikes the n-th `AT+SEND` (from 1) of the end at
/// that address; `key` seals the NACKs (node 1's).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub at: Vec<(u16, usize, Fault)>,
    pub key: Option<Key>,
}

/// One end of the air: an emulated board's modem port, or the gateway's (a pty).
pub struct End {
    stream: File,
    /// The board's address; a frame from the other end is received as from this one.
    address: u16,
}

impl End {
    /// Connects to a board's modem port (a QEMU `tcp:...,server=on` serial), retrying while
    /// QEMU starts.
    pub fn connect(port: u16, address: u16) -> End {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    stream.set_nodelay(true).unwrap();
                    let stream = File::from(OwnedFd::from(stream));
                    return End { stream, address };
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect to the emulated board's modem port {port}: {e}"),
            }
        }
    }

    /// The master side of a pty whose slave the gateway's `rylr998` source opens as its
    /// modem, `address` until it sends `AT+ADDRESS`. Someone must hold the slave open for the
    /// whole run (the test does), or the master reads EIO while the gateway restarts.
    pub fn pty(master: OwnedFd, address: u16) -> End {
        End {
            stream: File::from(master),
            address,
        }
    }
}

/// What the emulator records, shared by its threads.
#[derive(Default)]
struct Records {
    transmissions: Vec<Transmission>,
    deliveries: Vec<Delivery>,
    /// Every command a board sent to its modem, with the board's address.
    commands: Vec<(u16, Vec<u8>)>,
    /// When each command came.
    command_times: Vec<Instant>,
    /// The faults that struck: `(address, n, fault)` as in [`Faults`], in order.
    struck: Vec<(u16, usize, Fault)>,
}

/// A board's modem port, for writing: one writer at a time, so `+RCV` lines never interleave.
#[derive(Clone)]
struct Port {
    address: u16,
    stream: Arc<Mutex<File>>,
    /// False from a modem restart until the end set it up again: it hears nothing.
    configured: Arc<AtomicBool>,
}

impl Port {
    /// Writes `data` received from `from` as a `+RCV` line and records it, in the order the
    /// board gets it.
    fn deliver(
        &self,
        from: u16,
        data: &[u8],
        attack: Option<AttackKind>,
        records: &Mutex<Records>,
    ) {
        self.deliver_recorded(from, data, attack, records, None);
    }

    /// [`Port::deliver`], and `transmission` recorded with it: the records are held from
    /// before the write, so nothing the peer answers is recorded before what it answers.
    fn deliver_recorded(
        &self,
        from: u16,
        data: &[u8],
        attack: Option<AttackKind>,
        records: &Mutex<Records>,
        transmission: Option<Transmission>,
    ) {
        let mut records = records.lock().unwrap();
        let mut stream = self.stream.lock().unwrap();
        let _ = stream.write_all(&rcv(from, data, -40, 9));
        records.deliveries.push(Delivery {
            to: self.address,
            from,
            data: data.to_vec(),
            attack,
        });
        records.transmissions.extend(transmission);
    }
}

pub struct RadioEmulator {
    records: Arc<Mutex<Records>>,
    ports: Vec<Port>,
    stop: Arc<AtomicBool>,
}

impl RadioEmulator {
    /// Joins two ends with `air`. A transmission's fate depends only on the seed, its sender,
    /// which distinct data this is of the sender's (the n-th packet, the n-th ACK) and how
    /// many times the same data was sent before (the attempt): not on timing, so a seed gives
    /// the same story on a fast or a loaded machine. The attacker's frames take no part in it.
    pub fn start(a: End, b: End, air: Air) -> RadioEmulator {
        Self::start_with_faults(a, b, air, Faults::default())
    }

    /// [`RadioEmulator::start`] with `faults` on cue.
    pub fn start_with_faults(a: End, b: End, air: Air, faults: Faults) -> RadioEmulator {
        let records = Arc::new(Mutex::new(Records::default()));
        let port = |e: &End| Port {
            address: e.address,
            stream: Arc::new(Mutex::new(e.stream.try_clone().unwrap())),
            configured: Arc::new(AtomicBool::new(true)),
        };
        let (a_port, b_port) = (port(&a), port(&b));
        let faults = Arc::new(faults);
        for (end, own, peer) in [
            (a, a_port.clone(), b_port.clone()),
            (b, b_port.clone(), a_port.clone()),
        ] {
            let (records, faults) = (records.clone(), faults.clone());
            std::thread::spawn(move || serve(end, &own, &peer, air, &faults, &records));
        }
        RadioEmulator {
            records,
            ports: vec![a_port, b_port],
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Every transmission so far, in the order sent.
    pub fn transmissions(&self) -> Vec<Transmission> {
        self.records.lock().unwrap().transmissions.clone()
    }

    /// Every frame the board at `address` received so far, in order.
    pub fn deliveries(&self, address: u16) -> Vec<Delivery> {
        let records = self.records.lock().unwrap();
        records
            .deliveries
            .iter()
            .filter(|d| d.to == address)
            .cloned()
            .collect()
    }

    /// Every command a board sent to its modem, with the board's address.
    pub fn commands(&self) -> Vec<(u16, Vec<u8>)> {
        self.records.lock().unwrap().commands.clone()
    }

    /// [`RadioEmulator::commands`] with when each came.
    pub fn timed_commands(&self) -> Vec<(Instant, u16, Vec<u8>)> {
        let records = self.records.lock().unwrap();
        records
            .command_times
            .iter()
            .zip(&records.commands)
            .map(|(t, (a, c))| (*t, *a, c.clone()))
            .collect()
    }

    /// The faults that struck, in order.
    pub fn struck(&self) -> Vec<(u16, usize, Fault)> {
        self.records.lock().unwrap().struck.clone()
    }

    /// Puts `attacker` on the air until [`RadioEmulator::stop_attack`].
    pub fn attack(&self, attacker: Attacker) {
        let port = |address: u16| {
            self.ports
                .iter()
                .find(|p| p.address == address)
                .expect("the attacked boards are ends of the air")
                .clone()
        };
        let (node, receiver) = (port(attacker.node), port(attacker.receiver));
        let (records, stop) = (self.records.clone(), self.stop.clone());
        std::thread::spawn(move || {
            let mut round = 0usize;
            loop {
                std::thread::sleep(attacker.every);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                attacker.strike(round, &node, &receiver, &records);
                round += 1;
            }
        });
    }

    /// Takes the attacker off the air.
    pub fn stop_attack(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the attacker sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// An uplink as the node, sealed with a wrong key (to the receiver).
    Forged,
    /// An uplink of the node recorded earlier, older than one the receiver has since received
    /// intact (to the receiver).
    ReplayedUplink,
    /// The node's packet in the original format, with a good CRC (to the receiver).
    LegacyFrame,
    /// A sealed-looking uplink from an address not in the receiver's table.
    UnknownSender,
    /// An ACK of the receiver recorded earlier, for a frame the node has finished with (to the
    /// node).
    ReplayedAck,
    /// An ACK as the receiver for the node's frame in flight, sealed with a wrong key (to the
    /// node).
    ForgedAck,
}

/// A frame the attacker heard, and whether it reached its destination intact.
type Heard = (Vec<u8>, bool);

/// A third radio on the air: every `every` it sends one frame, cycling through
/// [`AttackKind`]s (a kind with nothing to play back yet is skipped that round).
#[derive(Debug, Clone)]
pub struct Attacker {
    pub every: Duration,
    /// The node it impersonates, and the receiver it impersonates to the node.
    pub node: u16,
    pub receiver: u16,
    /// Not the node's key.
    pub wrong_key: Key,
    /// The packet its forgeries carry: values no genuine packet has.
    pub forged: SensorDataPacket,
    /// The address of its unknown sender.
    pub unknown: u16,
}

impl Attacker {
    fn strike(&self, round: usize, node: &Port, receiver: &Port, records: &Mutex<Records>) {
        const KINDS: [AttackKind; 6] = [
            AttackKind::Forged,
            AttackKind::ReplayedAck,
            AttackKind::ReplayedUplink,
            AttackKind::ForgedAck,
            AttackKind::LegacyFrame,
            AttackKind::UnknownSender,
        ];
        let kind = KINDS[round % KINDS.len()];
        let (uplinks, acks) = self.heard(records);
        // The counter of the node's latest frame (uplink bytes 1-4 travel in clear).
        let latest = uplinks
            .last()
            .map_or(0, |(u, _)| u32::from_be_bytes([u[1], u[2], u[3], u[4]]));
        let mut frame = [0u8; secure::MAX_UPLINK_LEN];
        match kind {
            AttackKind::Forged => {
                let n = secure::seal_uplink(
                    &self.wrong_key,
                    self.node,
                    latest + 1,
                    &self.forged,
                    &mut frame,
                )
                .unwrap();
                receiver.deliver(self.node, &frame[..n], Some(kind), records);
            }
            AttackKind::ReplayedUplink => {
                // The oldest uplink before the last one the receiver got intact.
                let intact = uplinks.iter().rposition(|(_, delivered)| *delivered);
                if let Some((old, _)) = intact.and_then(|i| uplinks[..i].get(round / 6 % i.max(1)))
                {
                    receiver.deliver(self.node, old, Some(kind), records);
                }
            }
            AttackKind::LegacyFrame => {
                let n = self.forged.encode_frame(&mut frame).unwrap();
                receiver.deliver(self.node, &frame[..n], Some(kind), records);
            }
            AttackKind::UnknownSender => {
                let n =
                    secure::seal_uplink(&self.wrong_key, self.unknown, 1, &self.forged, &mut frame)
                        .unwrap();
                receiver.deliver(self.unknown, &frame[..n], Some(kind), records);
            }
            AttackKind::ReplayedAck => {
                if !acks.is_empty() {
                    let old = &acks[round / 6 % acks.len()];
                    node.deliver(self.receiver, old, Some(kind), records);
                }
            }
            AttackKind::ForgedAck => {
                let ack = lora_link::packet::AckPacket::ack(1);
                let n =
                    secure::seal_ack(&self.wrong_key, self.node, latest, &ack, &mut frame).unwrap();
                node.deliver(self.receiver, &frame[..n], Some(kind), records);
            }
        }
    }

    /// What it recorded off the air: the node's distinct uplinks in order (and whether one
    /// reached the receiver intact), and the receiver's ACKs sent before the node's latest
    /// uplink first went out (so they answer frames the node has finished with).
    fn heard(&self, records: &Mutex<Records>) -> (Vec<Heard>, Vec<Vec<u8>>) {
        let records = records.lock().unwrap();
        let mut uplinks: Vec<Heard> = Vec::new();
        let mut acks: Vec<Vec<u8>> = Vec::new();
        let mut acks_before_latest = 0;
        for t in &records.transmissions {
            if t.from == self.node {
                let delivered = t.fate == Fate::Delivered;
                match uplinks.iter_mut().find(|(d, _)| *d == t.data) {
                    Some(u) => u.1 |= delivered,
                    None => {
                        uplinks.push((t.data.clone(), delivered));
                        acks_before_latest = acks.len();
                    }
                }
            } else if t.from == self.receiver && !acks.contains(&t.data) {
                acks.push(t.data.clone());
            }
        }
        acks.truncate(acks_before_latest);
        (uplinks, acks)
    }
}

/// splitmix64: a small deterministic generator (the loss model must repeat from its seed).
struct Rng(u64);

impl Rng {
    /// The draws for the `attempt`-th sending (from 0) of the `nth` distinct data of `sender`.
    fn for_transmission(seed: u64, sender: u16, nth: usize, attempt: usize) -> Rng {
        Rng(seed ^ (u64::from(sender) << 48) ^ ((nth as u64) << 16) ^ attempt as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.next() % 1000 < p
    }
}

fn serve(
    mut end: End,
    own: &Port,
    peer: &Port,
    air: Air,
    faults: &Faults,
    records: &Mutex<Records>,
) {
    let mut pending: Vec<u8> = Vec::new();
    // Each distinct data this end sent, and how many times.
    let mut sent: Vec<(Vec<u8>, usize)> = Vec::new();
    // This end's `AT+SEND`s so far.
    let mut sends = 0;
    let mut buf = [0u8; 512];
    loop {
        let n = match end.stream.read(&mut buf) {
            Ok(0) | Err(_) => return, // the board stopped
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(len) = lora_link::at::command_len(&pending) {
            let command: Vec<u8> = pending.drain(..len).collect();
            {
                let mut records = records.lock().unwrap();
                records.commands.push((end.address, command.clone()));
                records.command_times.push(Instant::now());
            }
            if command.starts_with(b"AT+PARAMETER=") {
                own.configured.store(true, Ordering::SeqCst);
            }
            let fault = send_data(&command).and_then(|_| {
                sends += 1;
                let fault = faults
                    .at
                    .iter()
                    .find(|(a, n, _)| *a == end.address && *n == sends)?
                    .2
                    .clone();
                records
                    .lock()
                    .unwrap()
                    .struck
                    .push((end.address, sends, fault.clone()));
                Some(fault)
            });
            let answer: &[u8] = match &fault {
                Some(Fault::SendError(code)) => &format!("+ERR={code}\r\n").into_bytes(),
                Some(Fault::Restart) => {
                    own.configured.store(false, Ordering::SeqCst);
                    b"+READY\r\n"
                }
                Some(Fault::Inject(what)) => &format!("+FAULT={what}\r\n+OK\r\n").into_bytes(),
                Some(Fault::Nack) | None => b"+OK\r\n",
            };
            if own.stream.lock().unwrap().write_all(answer).is_err() {
                return;
            }
            if matches!(fault, Some(Fault::SendError(_) | Fault::Restart)) {
                continue;
            }
            if let Some(address) = command
                .strip_prefix(b"AT+ADDRESS=")
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|a| a.trim_end().parse().ok())
            {
                end.address = address;
            }
            let Some(data) = send_data(&command) else {
                continue;
            };
            let nth = match sent.iter().position(|(d, _)| *d == data) {
                Some(i) => i,
                None => {
                    sent.push((data.clone(), 0));
                    sent.len() - 1
                }
            };
            if sent[nth].1 == 0 && air.interference_before.map(usize::from) == Some(nth + 1) {
                let _ = peer
                    .stream
                    .lock()
                    .unwrap()
                    .write_all(b"+READY\r\nnoise on the wire\r\n");
            }
            let mut rng = Rng::for_transmission(air.seed, end.address, nth, sent[nth].1);
            sent[nth].1 += 1;
            let uplink = data.len() >= secure::MIN_UPLINK_LEN;
            let fate = if rng.per_mille(air.loss_per_mille) {
                Fate::Lost
            } else if uplink && rng.per_mille(air.corrupt_per_mille) {
                Fate::Corrupted
            } else {
                Fate::Delivered
            };
            let mut on_air = data.clone();
            // Recorded with the frame's delivery to the peer's port: an attacker that heard it
            // can only play it back after it, and the peer's answer is recorded after it.
            let transmission = Transmission {
                from: end.address,
                data,
                fate,
            };
            let unheard =
                !own.configured.load(Ordering::SeqCst) || !peer.configured.load(Ordering::SeqCst);
            if fault == Some(Fault::Nack) || unheard {
                let transmission = Transmission {
                    fate: Fate::Lost,
                    ..transmission
                };
                records.lock().unwrap().transmissions.push(transmission);
                if let (Some(Fault::Nack), Some(key)) = (&fault, &faults.key) {
                    let up = secure::open_uplink(key, end.address, &on_air).unwrap();
                    let nack = lora_link::packet::AckPacket::nack(up.packet.seq_num);
                    let mut frame = [0u8; secure::MAX_UPLINK_LEN];
                    let n =
                        secure::seal_ack(key, end.address, up.counter, &nack, &mut frame).unwrap();
                    own.deliver(peer.address, &frame[..n], None, records);
                }
                continue;
            }
            match fate {
                Fate::Lost => records.lock().unwrap().transmissions.push(transmission),
                Fate::Corrupted => {
                    let bit = rng.next() as usize % (on_air.len() * 8);
                    on_air[bit / 8] ^= 1 << (bit % 8);
                    peer.deliver_recorded(end.address, &on_air, None, records, Some(transmission));
                }
                Fate::Delivered => {
                    peer.deliver_recorded(end.address, &on_air, None, records, Some(transmission))
                }
            }
        }
    }
}

/// The data of `AT+SEND=<dest>,<len>,<data>\r\n`.
fn send_data(command: &[u8]) -> Option<Vec<u8>> {
    let rest = command.strip_prefix(b"AT+SEND=")?;
    let mut fields = rest.splitn(3, |b| *b == b',');
    let _dest = fields.next()?;
    let len: usize = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let data = fields.next()?;
    data.get(..len).map(<[u8]>::to_vec)
}
