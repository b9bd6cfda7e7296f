//! The `rylr998` source: the gateway talks to a REYAX RYLR998 LoRa modem on a serial port
//! (a USB-UART adapter, a Raspberry Pi's UART) and receives the sensor nodes' radio frames
//! itself, with no Node 2 board in between.
//!
//! Set-up: `AT`, `AT+ADDRESS`, `AT+NETWORKID`, `AT+BAND`, `AT+PARAMETER`, each reply checked
//! (`+OK`, or `+ERR=<n>` named with its meaning, or no answer within [`REPLY_TIMEOUT`]). A
//! modem that fails set-up is the source's problem, shown by `check`, the start-up checklist
//! and `/readyz` (503) until it is solved; the source retries with backoff.
//!
//! Then every `+RCV` frame (cut by its length, `lora-link`) goes through `radio.rs`: a good
//! frame's readings are stamped on receipt and sent to the ingest stage like any packet, and
//! it is acknowledged with `AT+SEND=<sender>,<len>,<ACK packet>`; a bad one is counted,
//! quarantined with its bytes in hex, and never acknowledged. A modem that restarts
//! (`+READY`) lost its settings and is set up again; a device that goes away (unplugged) is
//! reopened with backoff and set up again.

use std::time::Duration;

use lora_link::at::{self, CommandError};
use lora_link::modem::{error_meaning, Event, ModemParser, WINDOW};
use lora_link::packet::MAX_ACK_LEN;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt as _, SerialStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::radio::{Outcome, RadioLink};
use super::supervisor::{self, Supervised};
use super::{SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::Rylr998Config;
use crate::reading::{now_ns, Line, Reading};
use crate::self_stats::RestartCause;

/// Longest wait for the modem's reply to a command.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// `AT` is tried this often before the modem counts as not answering (it may be booting).
const AT_TRIES: u32 = 3;
/// How long late replies to an `AT` that timed out are waited for and dropped.
const LATE_REPLY: Duration = Duration::from_millis(300);
/// Set-up starts over this often when the modem restarts during it.
const SETUP_TRIES: u32 = 3;
/// A partial frame held this long without more bytes is cut off (counted as a failed frame).
const IDLE_FLUSH: Duration = Duration::from_millis(500);

/// Why the modem could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The device could not be opened.
    #[error("cannot open {path}: {cause}")]
    Open {
        /// The device.
        path: String,
        /// Why.
        cause: String,
    },
    /// No reply in time.
    #[error("no answer to {command} within {timeout:?}: check the wiring (the modem's TX to the adapter's RX and RX to TX, GND to GND), its 3.3 V supply and the baud rate ({baud}, [source] baud)")]
    NoAnswer {
        /// The command, without its line end.
        command: String,
        /// How long it waited.
        timeout: Duration,
        /// The port's baud rate.
        baud: u32,
    },
    /// The modem refused a command.
    #[error("{command} answered +ERR={code} ({meaning})")]
    Refused {
        /// The command, without its line end.
        command: String,
        /// The error code.
        code: u16,
        /// What the code means.
        meaning: &'static str,
    },
    /// The modem restarted (`+READY`) during set-up; set-up starts over.
    #[error("the modem restarted (+READY) during set-up")]
    Restarted,
    /// The modem restarted during every set-up attempt.
    #[error("the modem restarted (+READY) during each of {SETUP_TRIES} set-up attempts: check its power supply (3.3 V, enough current for transmitting) and its NRST pin")]
    KeepsRestarting,
    /// Reading or writing the port failed.
    #[error("{path}: {cause}")]
    Io {
        /// The device.
        path: String,
        /// Why.
        cause: String,
    },
}

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
            link: RadioLink::new(&cfg.nodes),
            tx,
            delivered: 0,
            ctx,
        }
    }

    /// What was set up, for the checklist and `check`.
    fn describe(&self) -> String {
        let (cfg, p) = (self.cfg, self.cfg.parameter);
        format!(
            "RYLR998 on {} set up: address {}, network {}, {} Hz, parameter {},{},{},{}",
            self.path,
            cfg.address,
            cfg.network_id,
            cfg.band,
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

    /// The set-up commands, each reply checked.
    async fn setup(&mut self, port: &mut SerialStream) -> Result<(), SetupError> {
        // A modem that restarts (`+READY`) half-way lost what was set: start over.
        for _ in 0..SETUP_TRIES {
            match self.setup_once(port).await {
                Err(SetupError::Restarted) => {
                    debug!("rylr998 modem restarted during set-up; starting over");
                }
                other => return other,
            }
        }
        Err(SetupError::KeepsRestarting)
    }

    async fn setup_once(&mut self, port: &mut SerialStream) -> Result<(), SetupError> {
        let mut buf = [0u8; 64];
        let mut answered = false;
        for attempt in 0..AT_TRIES {
            let n = at::at(&mut buf).map_err(command_bug)?;
            match self.command(port, &buf[..n], attempt == 0).await {
                Err(SetupError::NoAnswer { .. }) => continue,
                other => {
                    other?;
                    answered = true;
                    if attempt > 0 {
                        // A late `+OK` to an `AT` that timed out would be taken for the answer
                        // to the next command: let it arrive and drop it.
                        self.drain_replies(port).await?;
                    }
                    break;
                }
            }
        }
        if !answered {
            return Err(self.no_answer(b"AT\r\n"));
        }
        type Build = fn(&Rylr998Config, &mut [u8]) -> Result<usize, CommandError>;
        let commands: [Build; 4] = [
            |c, b| at::address(c.address, b),
            |c, b| at::network_id(c.network_id, b),
            |c, b| at::band(c.band, b),
            |c, b| at::parameter(c.parameter, b),
        ];
        for build in commands {
            let n = build(self.cfg, &mut buf).map_err(command_bug)?;
            self.command(port, &buf[..n], false).await?;
        }
        Ok(())
    }

    /// Reads for [`LATE_REPLY`], dropping replies (frames are handled).
    async fn drain_replies(&mut self, port: &mut SerialStream) -> Result<(), SetupError> {
        let deadline = tokio::time::Instant::now() + LATE_REPLY;
        let mut buf = [0u8; 512];
        loop {
            while let Some(heard) = self.next_heard() {
                if let Heard::Frame { .. } | Heard::BrokenFrame(_) = heard {
                    let _ = self.heard(heard, None).await;
                }
            }
            let room = self.room();
            match tokio::time::timeout_at(deadline, port.read(&mut buf[..room])).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(self.io(e)),
                Ok(Ok(0)) => return Err(self.io("the device closed")),
                Ok(Ok(n)) => self.feed(&buf[..n]),
            }
        }
    }

    /// Writes `command` and waits for `+OK` (frames heard meanwhile are handled, not
    /// acknowledged: the modem is busy with the command).
    /// `+READY` before the answer means the modem restarted: [`SetupError::Restarted`], unless
    /// `first` (a modem just powered up says `+READY` before it answers anything).
    async fn command(
        &mut self,
        port: &mut SerialStream,
        command: &[u8],
        first: bool,
    ) -> Result<(), SetupError> {
        debug!(command = %text(command), "rylr998 command");
        port.write_all(command).await.map_err(|e| self.io(e))?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            while let Some(heard) = self.next_heard() {
                match heard {
                    Heard::Ok => return Ok(()),
                    Heard::Error(code) => {
                        return Err(SetupError::Refused {
                            command: text(command),
                            code,
                            meaning: error_meaning(code),
                        })
                    }
                    Heard::Ready if first => debug!("rylr998 modem ready"),
                    Heard::Ready => return Err(SetupError::Restarted),
                    other => {
                        // A frame during set-up is received but not acknowledged.
                        let _ = self.heard(other, None).await;
                    }
                }
            }
            let room = self.room();
            let n = match tokio::time::timeout_at(deadline, port.read(&mut buf[..room])).await {
                Err(_) => return Err(self.no_answer(command)),
                Ok(Err(e)) => return Err(self.io(e)),
                Ok(Ok(0)) => return Err(self.io("the device closed")),
                Ok(Ok(n)) => n,
            };
            self.feed(&buf[..n]);
        }
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
            let n = tokio::select! {
                r = read => r,
                () = token.cancelled() => return Stop::Cancelled,
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
            } => {
                if self.tx.is_none() {
                    debug!(
                        sender,
                        "rylr998 frame while only checking the modem: not delivered"
                    );
                    return Ok(None);
                }
                let received_ns = now_ns();
                let frame = &data[..];
                let ack = match self.link.frame(sender, frame, rssi, snr) {
                    Outcome::Packet { readings, ack } => {
                        self.send(readings, received_ns, describe(sender, frame, rssi, snr))
                            .await?;
                        Some(ack)
                    }
                    Outcome::Duplicate { ack } => {
                        debug!(
                            sender,
                            seq = ack.seq_num,
                            "rylr998 duplicate frame; counted, acknowledged again, not written"
                        );
                        Some(ack)
                    }
                    Outcome::Bad { reason } => {
                        warn!(
                            sender,
                            rssi, snr, reason, "rylr998 frame failed; counted, not acknowledged"
                        );
                        if let Some(ctx) = self.ctx {
                            ctx.quarantine.add("rylr998", &reason, &hex(frame));
                        }
                        None
                    }
                };
                if let (Some(ack), Some(port), true) = (ack, port, self.cfg.ack) {
                    let mut packet = [0u8; MAX_ACK_LEN];
                    let mut command = [0u8; at::MAX_COMMAND];
                    let n = ack
                        .encode(&mut packet)
                        .map_err(|_| Stop::Lost("ACK encoding".into()))?;
                    let n = at::send(sender, &packet[..n], &mut command)
                        .map_err(|e| Stop::Lost(format!("ACK command: {e}")))?;
                    port.write_all(&command[..n])
                        .await
                        .map_err(|e| Stop::Lost(e.to_string()))?;
                    debug!(sender, seq = ack.seq_num, "rylr998 ACK sent");
                }
                Ok(None)
            }
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

    /// Sends readings to the ingest stage as one packet received at `received_ns`.
    async fn send(
        &mut self,
        readings: Vec<Reading>,
        received_ns: i64,
        text: String,
    ) -> Result<(), Stop> {
        let Some(tx) = self.tx else { return Ok(()) };
        let line = Line {
            text,
            received_ns,
            cut: false,
            decoded: Some(readings),
            forwarded: None,
        };
        tx.send(line).await.map_err(|_| Stop::Cancelled)?;
        self.delivered += 1;
        Ok(())
    }

    fn no_answer(&self, command: &[u8]) -> SetupError {
        SetupError::NoAnswer {
            command: text(command),
            timeout: REPLY_TIMEOUT,
            baud: self.cfg.baud,
        }
    }

    fn io(&self, e: impl std::fmt::Display) -> SetupError {
        SetupError::Io {
            path: self.path.clone(),
            cause: e.to_string(),
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

/// A command without its line end, for messages.
fn text(command: &[u8]) -> String {
    String::from_utf8_lossy(command).trim_end().to_string()
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

/// A command that cannot be built is a bug (the buffers are sized for every command).
fn command_bug(e: CommandError) -> SetupError {
    SetupError::Io {
        path: "AT command".into(),
        cause: e.to_string(),
    }
}
