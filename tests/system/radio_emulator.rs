//! `RadioEmulator`: an EMULATOR of the LoRa air between two REYAX RYLR998 modems, for the
//! firmware test; not a real radio. Each emulated board's modem UART (QEMU's UART4, a TCP
//! socket) is one end. The emulator answers every AT command with `+OK`, as the modem does,
//! and turns each `AT+SEND=<dest>,<len>,<data>` into `+RCV=<sender>,<len>,<data>,<rssi>,<snr>`
//! at the other end, unless its seeded loss model drops it, or corrupts it (one flipped bit:
//! sensor frames only, which carry a CRC; an acknowledgement is only ever lost). Every
//! transmission and its fate is recorded, in order, for the test to count.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The loss model: per mille of transmissions lost, and of sensor frames corrupted.
#[derive(Debug, Clone, Copy)]
pub struct Air {
    pub loss_per_mille: u64,
    pub corrupt_per_mille: u64,
    pub seed: u64,
    /// Before the first sending of this sender's n-th distinct frame (from 1), the receiving
    /// modem also says `+READY` and a line of noise (a modem restart, a glitch on the wire).
    pub interference_before: Option<u16>,
}

/// One end of the air: an emulated board's modem port.
pub struct End {
    stream: TcpStream,
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
                    return End { stream, address };
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect to the emulated board's modem port {port}: {e}"),
            }
        }
    }
}

/// Every command a board sent to its modem, with the board's address.
type Commands = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

pub struct RadioEmulator {
    log: Arc<Mutex<Vec<Transmission>>>,
    commands: Commands,
}

impl RadioEmulator {
    /// Joins two ends with `air`. A transmission's fate depends only on the seed, its sender,
    /// which distinct data this is of the sender's (the n-th packet, the n-th ACK) and how
    /// many times the same data was sent before (the attempt): not on timing, so a seed gives
    /// the same story on a fast or a loaded machine.
    pub fn start(a: End, b: End, air: Air) -> RadioEmulator {
        let log = Arc::new(Mutex::new(Vec::new()));
        let commands: Commands = Arc::new(Mutex::new(Vec::new()));
        let a_out = a.stream.try_clone().unwrap();
        let b_out = b.stream.try_clone().unwrap();
        for (end, peer) in [(a, b_out), (b, a_out)] {
            let (log, commands) = (log.clone(), commands.clone());
            std::thread::spawn(move || serve(end, peer, air, &log, &commands));
        }
        RadioEmulator { log, commands }
    }

    /// Every transmission so far, in the order sent.
    pub fn transmissions(&self) -> Vec<Transmission> {
        self.log.lock().unwrap().clone()
    }

    /// Every command a board sent to its modem, with the board's address.
    pub fn commands(&self) -> Vec<(u16, Vec<u8>)> {
        self.commands.lock().unwrap().clone()
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
    mut peer: TcpStream,
    air: Air,
    log: &Mutex<Vec<Transmission>>,
    commands: &Mutex<Vec<(u16, Vec<u8>)>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    // Each distinct data this end sent, and how many times.
    let mut sent: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = match end.stream.read(&mut buf) {
            Ok(0) | Err(_) => return, // the board stopped
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(len) = lora_link::at::command_len(&pending) {
            let command: Vec<u8> = pending.drain(..len).collect();
            commands
                .lock()
                .unwrap()
                .push((end.address, command.clone()));
            if let Some(address) = command
                .strip_prefix(b"AT+ADDRESS=")
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|a| a.trim_end().parse().ok())
            {
                end.address = address;
            }
            if end.stream.write_all(b"+OK\r\n").is_err() {
                return;
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
                let _ = peer.write_all(b"+READY\r\nnoise on the wire\r\n");
            }
            let mut rng = Rng::for_transmission(air.seed, end.address, nth, sent[nth].1);
            sent[nth].1 += 1;
            let sensor_frame = data.len() >= lora_link::packet::MIN_FRAME_LEN;
            let fate = if rng.per_mille(air.loss_per_mille) {
                Fate::Lost
            } else if sensor_frame && rng.per_mille(air.corrupt_per_mille) {
                Fate::Corrupted
            } else {
                Fate::Delivered
            };
            log.lock().unwrap().push(Transmission {
                from: end.address,
                data: data.clone(),
                fate,
            });
            let mut on_air = data;
            match fate {
                Fate::Lost => continue,
                Fate::Corrupted => {
                    let bit = rng.next() as usize % (on_air.len() * 8);
                    on_air[bit / 8] ^= 1 << (bit % 8);
                }
                Fate::Delivered => {}
            }
            let _ = peer.write_all(&rcv(end.address, &on_air, -40, 9));
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
