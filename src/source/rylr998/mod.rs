//! The `rylr998` source: the gateway talks to a REYAX RYLR998 LoRa modem on a serial port
//! (a USB-UART adapter, a Raspberry Pi's UART) and receives the sensor nodes' radio frames
//! itself, with no Node 2 board in between.
//!
//! Set-up: `AT`, `AT+ADDRESS`, `AT+NETWORKID`, `AT+BAND`, `AT+CRFOP`, `AT+PARAMETER` (the
//! band, power and parameters from `[source] region` unless set one by one), each reply checked
//! (`+OK`, or `+ERR=<n>` named with its meaning, or no answer within [`REPLY_TIMEOUT`]). A
//! modem that fails set-up is the source's problem, shown by `check`, the start-up checklist
//! and `/readyz` (503) until it is solved; the source retries with backoff.
//!
//! Then every `+RCV` frame (cut by its length, `lora-link`) goes through `radio.rs`: a good
//! frame's readings are stamped on receipt and sent to the ingest stage like any packet, and
//! it is acknowledged with `AT+SEND=<sender>,<len>,<ACK packet>` only once its readings are
//! committed to the outbox: a packet acknowledged is never lost, whatever happens to the
//! gateway after. One that cannot be committed (storage failing, the disk budget full under
//! `on_full = "block"`, the gateway stopping) is not acknowledged, and its number is
//! forgotten, so the node's resend is stored. A repeat of a packet whose commit is still
//! awaited is not acknowledged on its own: the one ACK follows the commit. A bad frame is
//! counted, quarantined with its bytes in hex, and never acknowledged. A modem that restarts
//! (`+READY`) lost its settings and is set up again; a device that goes away (unplugged) is
//! reopened with backoff and set up again.

use std::time::Duration;

use lora_link::at;
use lora_link::modem::{error_meaning, Event, ModemParser, WINDOW};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_serial::{SerialPortBuilderExt as _, SerialStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod setup;

pub use setup::SetupError;

use super::radio::{Ack, Outcome, RadioLink};
use super::supervisor::{self, Supervised};
use super::{SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::{NodeAuth, Rylr998Config};
use crate::reading::{now_ns, Line, LinkCounter, Reading};
use crate::self_stats::RestartCause;

/// Longest wait for the modem's reply to a command.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// A partial frame held this long without more bytes is cut off (counted as a failed frame).
const IDLE_FLUSH: Duration = Duration::from_millis(500);

/// What ended reception.
enum Stop {
    Cancelled,
    /// The modem restarted (`+READY`): set it up again.
    Reset,
    /// The device failed or went away.
    Lost(String),
}

/// Something the modem said, copied out of the parser.
enum Heard {
    Frame {
        sender: u16,
        data: Vec<u8>,
        rssi: i16,
        snr: i16,
    },
    Ok,
    Error(u16),
    Ready,
    /// A `+RCV` line that broke (counted as a failed frame), as text.
    BrokenFrame(String),
    /// Anything else (noise, query answers), as text.
    Other(String),
}

/// A new packet handed to the ingest stage, its ACK waiting for the commit. At most what
/// the ingest channel and one batch hold are waiting.
struct PendingAck {
    sender: u16,
    ack: Ack,
    /// Told once the packet is committed; dropped when it could not be.
    committed: oneshot::Receiver<()>,
    /// When its `+RCV` was read.
    heard_at: std::time::Instant,
}

/// What woke the receiving loop.
enum Woke {
    /// The port answered: bytes, or an error; `Err(_)`: quiet for [`IDLE_FLUSH`] with a partial
    /// frame held.
    Read(Result<std::io::Result<usize>, tokio::time::error::Elapsed>),
    /// The oldest waiting packet was committed (`true`) or could not be (`false`).
    Committed(bool),
    Cancelled,
}

/// The modem, the parser of its output and the link state.
struct Station<'a> {
    cfg: &'a Rylr998Config,
    path: String,
    parser: ModemParser,
    /// Bytes read that did not fit the parser yet.
    spill: Vec<u8>,
    link: RadioLink,
    /// Where readings go; `None` when only probing.
    tx: Option<&'a mpsc::Sender<Line>>,
    /// Packets handed to the ingest stage since the device was opened.
    delivered: u64,
    /// New packets whose ACK waits for their commit, oldest first (the ingest stage commits
    /// in order).
    pending: std::collections::VecDeque<PendingAck>,
    /// The (node, reason) pairs of refused frames already logged as a warning.
    warned: std::collections::BTreeSet<(String, &'static str)>,
    ctx: Option<&'a SourceContext>,
}

/// Runs the source until `token` is cancelled.
pub(crate) async fn run(
    cfg: Rylr998Config,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> SourceEnd {
    let backoff = Backoff::new(cfg.restart_initial, cfg.restart_max);
    warn_of_nodes(&cfg, &ctx);
    let modem = Supervisor {
        station: Station::new(&cfg, Some(&tx), Some(&ctx)),
        ctx: &ctx,
        down_logged: false,
    };
    supervisor::supervise(modem, backoff, &token).await
}

/// The modem as the supervisor sees it.
struct Supervisor<'a> {
    station: Station<'a>,
    ctx: &'a SourceContext,
    /// Whether the current outage was already logged: one error per state change.
    down_logged: bool,
}

/// How one run of the modem ended.
enum RunEnd {
    /// It could not be opened or set up (logged once per outage).
    Unavailable,
    /// It was receiving and went away; `delivered` packets before.
    Lost { why: String, delivered: u64 },
}

impl Supervised for Supervisor<'_> {
    type End = RunEnd;

    async fn run_once(&mut self, stop: &CancellationToken) -> Option<RunEnd> {
        let (station, ctx) = (&mut self.station, self.ctx);
        station.delivered = 0;
        let mut port = match station.open() {
            Ok(port) => port,
            Err(e) => {
                if !self.down_logged {
                    error!(error = %e, "rylr998 modem unavailable; retrying with backoff");
                    self.down_logged = true;
                }
                ctx.set_up(Err(e.to_string()));
                return Some(RunEnd::Unavailable);
            }
        };
        loop {
            let setup = tokio::select! {
                r = station.setup(&mut port) => r,
                () = stop.cancelled() => return None,
            };
            if let Err(e) = setup {
                if !self.down_logged {
                    error!(error = %e, "rylr998 modem set-up failed; retrying with backoff");
                    self.down_logged = true;
                }
                ctx.set_up(Err(e.to_string()));
                return Some(RunEnd::Unavailable);
            }
            self.down_logged = false;
            ctx.set_up(Ok(station.describe()));
            let cfg = station.cfg;
            info!(
                path = station.path,
                address = cfg.address,
                network_id = cfg.network_id,
                band = cfg.band,
                ack = cfg.ack,
                "rylr998 modem set up; receiving"
            );
            match station.receive(&mut port, stop).await {
                Stop::Cancelled => return None,
                Stop::Reset => {
                    warn!("rylr998 modem restarted (+READY) and lost its settings; setting it up again");
                }
                Stop::Lost(why) => {
                    return Some(RunEnd::Lost {
                        why,
                        delivered: station.delivered,
                    })
                }
            }
        }
    }

    fn delivered(end: &RunEnd) -> bool {
        matches!(end, RunEnd::Lost { delivered, .. } if *delivered > 0)
    }

    fn restarting(&mut self, end: RunEnd, delay: Duration) {
        let RunEnd::Lost { why, .. } = end else {
            return;
        };
        let path = &self.station.path;
        warn!(
            path,
            error = why,
            reopen_in = ?delay,
            "rylr998 modem lost; reopening with backoff"
        );
        self.ctx.set_up(Err(format!("{path}: {why}")));
        self.ctx.restarted(
            RestartCause::DeviceLost,
            "rylr998",
            &format!("{path} lost ({why}); reopening"),
        );
    }
}

/// Opens and sets up the modem once, for `check` and the start-up checklist; says what
/// answered.
pub(crate) async fn probe(cfg: &Rylr998Config) -> Result<String, SetupError> {
    let mut station = Station::new(cfg, None, None);
    let mut port = station.open()?;
    station.setup(&mut port).await?;
    Ok(station.describe())
}

impl<'a> Station<'a> {
    fn new(
        cfg: &'a Rylr998Config,
        tx: Option<&'a mpsc::Sender<Line>>,
        ctx: Option<&'a SourceContext>,
    ) -> Self {
        Station {
            cfg,
            path: cfg.path.display().to_string(),
            parser: ModemParser::new(),
            spill: Vec::new(),
            link: RadioLink::new(&cfg.nodes, ctx.map_or(&[][..], |c| &c.link_counters[..])),
            tx,
            delivered: 0,
            pending: std::collections::VecDeque::new(),
            warned: std::collections::BTreeSet::new(),
            ctx,
        }
    }

    /// What was set up, for the checklist and `check`.
    fn describe(&self) -> String {
        let (cfg, p) = (self.cfg, self.cfg.parameter);
        format!(
            "RYLR998 on {} set up: region {}, address {}, network {}, {} Hz, {} dBm, parameter {},{},{},{}",
            self.path,
            cfg.region.name(),
            cfg.address,
            cfg.network_id,
            cfg.band,
            cfg.power,
            p.spreading_factor,
            p.bandwidth,
            p.coding_rate,
            p.preamble
        )
    }

    /// Opens the device; what an earlier one left half-parsed is forgotten.
    fn open(&mut self) -> Result<SerialStream, SetupError> {
        self.parser = ModemParser::new();
        self.spill.clear();
        tokio_serial::new(&self.path, self.cfg.baud)
            .open_native_async()
            .map_err(|e| SetupError::Open {
                path: self.path.clone(),
                cause: e.to_string(),
            })
    }

    /// Receives frames until cancelled, the modem restarts or the device fails.
    async fn receive(&mut self, port: &mut SerialStream, token: &CancellationToken) -> Stop {
        let mut buf = [0u8; 512];
        loop {
            while let Some(heard) = self.next_heard() {
                match self.heard(heard, Some(port)).await {
                    Ok(None) => {}
                    Ok(Some(stop)) | Err(stop) => return stop,
                }
            }
            let room = self.room();
            let held = self.parser.held() > 0;
            let read = async {
                if held {
                    tokio::time::timeout(IDLE_FLUSH, port.read(&mut buf[..room])).await
                } else {
                    Ok(port.read(&mut buf[..room]).await)
                }
            };
            let committed = async {
                match self.pending.front_mut() {
                    Some(p) => (&mut p.committed).await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                r = read => Woke::Read(r),
                ok = committed => Woke::Committed(ok),
                () = token.cancelled() => Woke::Cancelled,
            };
            let n = match woke {
                Woke::Read(n) => n,
                Woke::Committed(ok) => {
                    if let Err(stop) = self.settle(ok, port).await {
                        return stop;
                    }
                    continue;
                }
                Woke::Cancelled => return Stop::Cancelled,
            };
            match n {
                Err(_) => {
                    // Quiet with a partial frame held: it was cut off.
                    while let Some(event) = self.parser.flush() {
                        let heard = heard_of(event);
                        if let Ok(Some(stop)) | Err(stop) = self.heard(heard, Some(port)).await {
                            return stop;
                        }
                    }
                }
                Ok(Ok(0)) => return Stop::Lost("the device closed".into()),
                Ok(Ok(n)) => self.feed(&buf[..n]),
                Ok(Err(e)) => return Stop::Lost(e.to_string()),
            }
        }
    }

    /// How many bytes the next read may take: never more than the parser has room for, so
    /// everything read is parsed (every event was taken before, and a full window always
    /// yields one, so there is room).
    fn room(&self) -> usize {
        (WINDOW - self.parser.held()).clamp(1, 512)
    }

    fn feed(&mut self, bytes: &[u8]) {
        let taken = self.parser.feed(bytes);
        // Never expected (reads fit the room), but never a lost byte either.
        self.spill.extend_from_slice(&bytes[taken..]);
    }

    fn next_heard(&mut self) -> Option<Heard> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Some(heard_of(event));
            }
            if self.spill.is_empty() {
                return None;
            }
            let taken = self.parser.feed(&self.spill);
            self.spill.drain(..taken);
        }
    }

    /// Handles one thing the modem said. `port` is where ACKs go (`None`: do not ACK).
    /// `Ok(Some(stop))` ends reception.
    async fn heard(
        &mut self,
        heard: Heard,
        port: Option<&mut SerialStream>,
    ) -> Result<Option<Stop>, Stop> {
        match heard {
            Heard::Frame {
                sender,
                data,
                rssi,
                snr,
            } => self.frame(sender, &data, rssi, snr, port).await,
            Heard::BrokenFrame(bytes) => {
                warn!(
                    bytes,
                    "rylr998 cut or garbled +RCV line; counted as a failed frame"
                );
                if let Some(ctx) = self.ctx {
                    ctx.quarantine
                        .add("rylr998", "cut or garbled +RCV line", &bytes);
                }
                self.link.malformed();
                Ok(None)
            }
            Heard::Ok => {
                debug!("rylr998 +OK");
                Ok(None)
            }
            Heard::Error(code) => {
                warn!(
                    code,
                    meaning = error_meaning(code),
                    "rylr998 modem answered +ERR (to an ACK send)"
                );
                Ok(None)
            }
            Heard::Ready => Ok(Some(Stop::Reset)),
            Heard::Other(text) => {
                debug!(bytes = text, "rylr998 modem output ignored");
                Ok(None)
            }
        }
    }

    /// A `+RCV` frame: its readings to the ingest stage (acknowledged once committed), a
    /// repeat acknowledged again, a refused one counted and quarantined.
    async fn frame(
        &mut self,
        sender: u16,
        frame: &[u8],
        rssi: i16,
        snr: i16,
        port: Option<&mut SerialStream>,
    ) -> Result<Option<Stop>, Stop> {
        if self.tx.is_none() {
            debug!(
                sender,
                "rylr998 frame while only checking the modem: not delivered"
            );
            return Ok(None);
        }
        let received_ns = now_ns();
        // ACKs go out only while receiving (not during set-up, nor when told not to).
        let acking = port.is_some() && self.cfg.ack;
        let ack = match self.link.frame(sender, frame, rssi, snr) {
            Outcome::Packet {
                readings,
                ack,
                link,
                extras,
            } => {
                self.extras(sender, extras).await;
                if let Some(ctx) = self.ctx {
                    let node = readings.first().map_or("", |r| r.node.as_str());
                    ctx.stats.radio.accepted(node, link.is_none());
                }
                if !acking {
                    // No ACK waits for the commit: the counter holds from now on.
                    self.link.committed(sender, &ack);
                }
                let handled = acking.then(|| {
                    let (tell, committed) = oneshot::channel();
                    self.pending.push_back(PendingAck {
                        sender,
                        ack,
                        committed,
                        heard_at: std::time::Instant::now(),
                    });
                    tell
                });
                let text = describe(sender, frame, rssi, snr);
                self.send(readings, received_ns, text, handled, link)
                    .await?;
                // Acknowledged once committed (`settle`).
                None
            }
            Outcome::Duplicate { ack } => {
                let awaited = self
                    .pending
                    .iter()
                    .any(|p| p.sender == sender && p.ack.answers_same(&ack));
                debug!(
                    sender,
                    seq = ack.seq,
                    counter = ack.counter,
                    awaited,
                    "rylr998 duplicate frame; counted, not written, acknowledged (once committed)"
                );
                (!awaited).then_some(ack)
            }
            Outcome::Rejected {
                rejection,
                node,
                reason,
            } => {
                // The first of each node and reason is a warning; the rest (an
                // attacker's flood) are counted and quarantined, logged at debug.
                if self.warned.insert((node.to_string(), rejection.as_str())) {
                    warn!(rssi, snr, "rylr998 {reason}; counted, not acknowledged (more like it: iiot_radio_frames_rejected_total, quarantine.log)");
                } else {
                    debug!(rssi, snr, "rylr998 {reason}; counted, not acknowledged");
                }
                if let Some(ctx) = self.ctx {
                    ctx.stats.radio.rejected(&node, rejection.as_str());
                    ctx.quarantine.add("rylr998", &reason, &hex(frame));
                }
                None
            }
        };
        if let (Some(ack), Some(port), true) = (ack, port, acking) {
            write_ack(port, sender, &ack).await?;
            debug!(sender, seq = ack.seq, "rylr998 ACK sent");
        }
        Ok(None)
    }

    /// What rides in a node's uplink: a command's confirmation, its info.
    async fn extras(&self, sender: u16, extras: lora_link::downlink::Extras) {
        let (Some(downlink), Some(name)) = (
            self.ctx.and_then(|c| c.downlink.as_ref()),
            self.link.name(sender),
        ) else {
            return;
        };
        if let Some(number) = extras.confirm {
            match downlink.confirmed(name, number).await {
                Some(row) => info!(
                    node = name,
                    id = row.id,
                    number,
                    command = row.command,
                    "command confirmed by the node"
                ),
                None => debug!(node = name, number, "command confirmed again (or not ours)"),
            }
        }
        if let Some(i) = extras.info {
            let [major, minor, patch] = i.version;
            info!(
                node = name,
                version = format!("{major}.{minor}.{patch}"),
                boots = i.boots,
                uptime_s = i.uptime_s,
                reset = i.reset,
                "node info"
            );
            downlink.info(name, &i).await;
        }
    }

    /// The oldest waiting packet was committed (`ok`) or could not be: acknowledges it, or
    /// forgets its number so that the node's resend is stored.
    async fn settle(&mut self, ok: bool, port: &mut SerialStream) -> Result<(), Stop> {
        let Some(p) = self.pending.pop_front() else {
            return Ok(());
        };
        let seq = p.ack.seq;
        if !ok {
            self.link.forget(p.sender, &p.ack);
            warn!(
                sender = p.sender,
                seq, "rylr998 packet not committed; not acknowledged, so the node sends it again"
            );
            return Ok(());
        }
        self.link.committed(p.sender, &p.ack);
        // The node's next command rides in this ACK (sent again with every ACK until the node
        // confirms it or it expires).
        let next = match (
            self.ctx.and_then(|c| c.downlink.as_ref()),
            self.link.name(p.sender),
        ) {
            (Some(downlink), Some(name)) if p.ack.counter.is_some() => downlink.next_for(name),
            _ => None,
        };
        let ack = self
            .link
            .ack_with(p.sender, &p.ack, next.as_ref().map(|(_, c)| *c));
        write_ack(port, p.sender, &ack).await?;
        let after = p.heard_at.elapsed();
        debug!(sender = p.sender, seq, after = ?after, "rylr998 ACK sent after the commit");
        if let (Some((row, command)), Some(downlink)) =
            (next, self.ctx.and_then(|c| c.downlink.as_ref()))
        {
            info!(
                node = row.node,
                id = row.id,
                number = command.number,
                command = row.command,
                "command sent in the ACK of the node's uplink"
            );
            downlink.sent(&row).await;
        }
        Ok(())
    }

    /// Sends readings to the ingest stage as one packet received at `received_ns`; `handled`
    /// is told once it is committed.
    async fn send(
        &mut self,
        readings: Vec<Reading>,
        received_ns: i64,
        text: String,
        handled: Option<oneshot::Sender<()>>,
        link: Option<LinkCounter>,
    ) -> Result<(), Stop> {
        let Some(tx) = self.tx else { return Ok(()) };
        let line = Line {
            text,
            received_ns,
            cut: false,
            decoded: Some(readings),
            forwarded: None,
            handled,
            link,
        };
        tx.send(line).await.map_err(|_| Stop::Cancelled)?;
        self.delivered += 1;
        Ok(())
    }
}

/// `AT+SEND=<sender>,<len>,<ACK frame>`.
async fn write_ack(port: &mut SerialStream, sender: u16, ack: &Ack) -> Result<(), Stop> {
    let mut command = [0u8; at::MAX_COMMAND];
    let n = at::send(sender, &ack.frame, &mut command)
        .map_err(|e| Stop::Lost(format!("ACK command: {e}")))?;
    port.write_all(&command[..n])
        .await
        .map_err(|e| Stop::Lost(e.to_string()))
}

/// Says at start-up which nodes' frames will be refused (no key) or taken unauthenticated
/// (legacy), and how to fix each; every node's accepted counter shows from the start.
fn warn_of_nodes(cfg: &Rylr998Config, ctx: &SourceContext) {
    for (address, node) in &cfg.nodes {
        let name = node.name.as_str();
        match &node.auth {
            NodeAuth::Key(key) => {
                ctx.stats.radio.expect(name, false);
                let stored = ctx.link_counters.iter().find(|s| s.node == *address);
                if stored.is_some_and(|s| s.key_check != key.check_value()) {
                    info!(
                        node = name,
                        address,
                        "rylr998 node {name} has a new key: its frame counter starts afresh"
                    );
                }
            }
            NodeAuth::Legacy => {
                ctx.stats.radio.expect(name, true);
                warn!(
                    node = name,
                    address,
                    "rylr998 node {name} is legacy: its frames are taken unauthenticated, so anyone on the channel can send as it or play its frames back; flash the secure firmware and give it a key (iiot-gateway keys new {name} --address {address})"
                );
            }
            NodeAuth::Missing => warn!(
                node = name,
                address,
                "rylr998 node {name} has no key: its frames will be refused. Create one with `iiot-gateway keys new {name} --address {address}`, put the printed [source.nodes.{address}] table in this config and flash the node with it (scripts/firmware --keys), or set legacy = true for a node on the original firmware"
            ),
        }
    }
}

fn heard_of(event: Event<'_>) -> Heard {
    match event {
        Event::Frame(f) => Heard::Frame {
            sender: f.sender,
            data: f.data.to_vec(),
            rssi: f.rssi,
            snr: f.snr,
        },
        Event::Ok => Heard::Ok,
        Event::Error(code) => Heard::Error(code),
        Event::Ready => Heard::Ready,
        Event::Malformed { reason, bytes } if bytes.starts_with(b"+RCV=") => {
            Heard::BrokenFrame(format!("{reason}: {}", printable(bytes)))
        }
        Event::Malformed { reason, bytes } => {
            Heard::Other(format!("{reason}: {}", printable(bytes)))
        }
        Event::Value { key, value } => Heard::Other(format!("+{key}={value}")),
        Event::Garbage(bytes) => Heard::Other(printable(bytes)),
    }
}

/// Bytes as text, with anything unprintable as `\xNN`.
fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a radio packet's `Line::text` says (for logs and the quarantine).
fn describe(sender: u16, frame: &[u8], rssi: i16, snr: i16) -> String {
    format!("+RCV={sender},{},{},{rssi},{snr}", frame.len(), hex(frame))
}
