//! The RYLR998 on UART4, as the nodes' tasks see it: AT commands out (built by `lora_link::at`),
//! modem events in (parsed by `lora_link::modem::ModemParser` from the bytes the UART4
//! interrupt queued). Only glue: every rule of the link lives in `lora_link`.

use core::fmt::Write as _;

use lora_link::at;
use lora_link::modem::{Event, ModemParser};
use rtic_monotonics::systick::prelude::*;

use crate::board;
use crate::time::Mono;
use crate::uart::Uart;

/// Bytes queued between the UART4 interrupt and the modem task. Full: the interrupt drops
/// bytes (counted) and the parser sees a broken frame. 255 is the channel's maximum; the task
/// drains it byte by byte, far faster than 115200 baud fills it.
pub const RX_QUEUE: usize = 255;
/// The interrupt's end of the byte queue.
pub type RxSender = rtic_sync::channel::Sender<'static, u8, RX_QUEUE>;
/// The task's end of the byte queue.
pub type RxReceiver = rtic_sync::channel::Receiver<'static, u8, RX_QUEUE>;

/// A receive interrupt's whole work (UART4's; on Node 2 USART2's too): moves every byte
/// `uart` received into `queue`. Bytes the hardware overran or the full queue refused are
/// logged (the parser then sees a broken frame, which Node 2 counts in `sts.err`; a broken
/// `cmd` line is refused).
pub fn on_receive_interrupt(uart: Uart, queue: &mut RxSender) {
    let mut dropped = 0u32;
    let overruns = uart.on_interrupt(|b| {
        if queue.try_send(b).is_err() {
            dropped += 1;
        }
    });
    if overruns > 0 || dropped > 0 {
        defmt::warn!(
            "uart: {} overruns, {} bytes dropped (queue full)",
            overruns,
            dropped
        );
    }
}

/// The modem's answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ok,
    Error(u16),
}

/// The modem port and its parser.
pub struct Modem {
    uart: Uart,
    rx: RxReceiver,
    parser: ModemParser,
    /// A byte received while the parser's window was full, fed first next time.
    pending: Option<u8>,
    command: [u8; at::MAX_COMMAND],
    /// The modem said `+READY` since its set-up: it restarted and lost its settings.
    restarted: bool,
}

impl Modem {
    /// The modem on `uart`, its received bytes arriving through `rx`.
    pub fn new(uart: Uart, rx: RxReceiver) -> Self {
        Modem {
            uart,
            rx,
            parser: ModemParser::new(),
            pending: None,
            command: [0; at::MAX_COMMAND],
            restarted: false,
        }
    }

    /// Whether the modem restarted (`+READY`) since its last set-up: run [`Modem::setup`]
    /// again. Clears the flag.
    pub fn take_restarted(&mut self) -> bool {
        core::mem::take(&mut self.restarted)
    }

    /// Waits for the next modem event and returns what `f` makes of it (the event borrows
    /// the parser, so `f` turns it into something owned).
    pub async fn next_event<R>(&mut self, f: impl FnOnce(Event<'_>) -> R) -> R {
        loop {
            if let Some(b) = self.pending {
                if self.parser.feed(&[b]) == 1 {
                    self.pending = None;
                }
            }
            if let Some(event) = self.parser.next_event() {
                match event {
                    Event::Ready => self.restarted = true,
                    Event::Value {
                        key: "FAULT",
                        value,
                    } => board::inject_fault(value),
                    _ => {}
                }
                return f(event);
            }
            // The parser wants more; the window had room (a full window always yields an
            // event), so the byte below fits unless an event is due first.
            let Ok(b) = self.rx.recv().await else {
                // The sender lives in the interrupt's locals for ever: not reached.
                continue;
            };
            if self.parser.feed(&[b]) == 0 {
                self.pending = Some(b);
            }
        }
    }

    /// `AT+SEND=<dest>,<len>,<data>` (raw bytes). Data the modem cannot carry is reported
    /// and not sent.
    pub fn send(&mut self, dest: u16, data: &[u8]) {
        match at::send(dest, data, &mut self.command) {
            Ok(n) => self.uart.write(self.command.get(..n).unwrap_or(&[])),
            Err(_) => defmt::error!("AT+SEND of {} bytes not built", data.len()),
        }
    }

    /// The modem set-up of docs/PROTOCOL.md (`AT`, `AT+ADDRESS=<address>`, `AT+NETWORKID=18`,
    /// then the band, output power and parameters of the image's region: `AT+BAND=915000000`,
    /// `AT+CRFOP=22`, `AT+PARAMETER=7,9,1,7` for `us915`), each command's reply checked: `+OK`
    /// goes on, `+ERR` or no reply within `REPLY_TIMEOUT_MS` sends it again, up to
    /// `SETUP_TRIES` times; then the failure is reported and the set-up goes on with the next
    /// command (the modem keeps settings in flash, so it may still work). Before each send,
    /// whatever the modem said already is dropped (a late `+OK` to the command before must not
    /// pass for this one's reply); anything else it says meanwhile (`+READY`, noise, even a
    /// frame) is skipped. Returns the number of commands that failed. Run it again whenever
    /// [`Modem::take_restarted`] says so.
    pub async fn setup(&mut self, address: u16) -> usize {
        let mut failed = 0;
        for step in 0..at::SETUP_STEPS {
            let Some(Ok(n)) = at::setup(step, address, crate::REGION, &mut self.command) else {
                continue;
            };
            let mut done = false;
            for attempt in 1..=board::SETUP_TRIES {
                self.drain();
                self.uart.write(self.command.get(..n).unwrap_or(&[]));
                let reply =
                    Mono::timeout_after(board::REPLY_TIMEOUT_MS.millis(), self.reply()).await;
                let command =
                    core::str::from_utf8(self.command.get(..n.saturating_sub(2)).unwrap_or(&[]))
                        .unwrap_or("?");
                match reply {
                    Ok(Reply::Ok) => {
                        done = true;
                        break;
                    }
                    Ok(Reply::Error(code)) => defmt::warn!(
                        "modem: {=str} -> +ERR={} ({=str}), try {}",
                        command,
                        code,
                        lora_link::modem::error_meaning(code),
                        attempt
                    ),
                    Err(_) => defmt::warn!("modem: {=str} -> no reply, try {}", command, attempt),
                }
                Mono::delay(100.millis()).await;
            }
            if !done {
                failed += 1;
                defmt::error!(
                    "modem set-up: command {} of {} failed",
                    step + 1,
                    at::SETUP_STEPS
                );
            }
        }
        // A `+READY` during the set-up came before the commands that set the modem up.
        self.restarted = false;
        failed
    }

    /// Drops every event the bytes received so far make (stale replies, noise), without
    /// waiting for more; a `+READY` among them still counts ([`Modem::take_restarted`]).
    fn drain(&mut self) {
        loop {
            while let Some(event) = self.parser.next_event() {
                if event == Event::Ready {
                    self.restarted = true;
                }
            }
            let byte = match self.pending.take() {
                Some(b) => b,
                None => match self.rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => break,
                },
            };
            if self.parser.feed(&[byte]) == 0 {
                self.pending = Some(byte);
            }
        }
    }

    /// The next `+OK` or `+ERR`, skipping every other event.
    async fn reply(&mut self) -> Reply {
        loop {
            let reply = self
                .next_event(|e| match e {
                    Event::Ok => Some(Reply::Ok),
                    Event::Error(code) => Some(Reply::Error(code)),
                    _ => None,
                })
                .await;
            if let Some(reply) = reply {
                return reply;
            }
        }
    }
}

/// Writes `args` and `\r\n` on `uart` (a human-readable VCP line).
pub fn print_line(uart: Uart, args: core::fmt::Arguments<'_>) {
    let mut w = uart;
    let _ = w.write_fmt(args);
    uart.write(b"\r\n");
}
