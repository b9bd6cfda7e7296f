//! Setting the modem up: `AT` (tried while the modem may still be booting, late replies
//! drained), `AT+ADDRESS`, `AT+NETWORKID`, `AT+BAND`, `AT+CRFOP`, `AT+PARAMETER`, each reply checked
//! (`+OK`, or `+ERR=<n>` named with its meaning, or no answer within [`REPLY_TIMEOUT`]); a
//! restart (`+READY`) half-way starts it over. Frames heard meanwhile are delivered, not
//! acknowledged: the modem is busy with the command.

use std::time::Duration;

use lora_link::at::{self, CommandError};
use lora_link::modem::error_meaning;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_serial::SerialStream;
use tracing::debug;

use super::{Heard, Station, REPLY_TIMEOUT};
use crate::config::Rylr998Config;

/// `AT` is tried this often before the modem counts as not answering (it may be booting).
const AT_TRIES: u32 = 3;
/// How long late replies to an `AT` that timed out are waited for and dropped.
const LATE_REPLY: Duration = Duration::from_millis(300);
/// Set-up starts over this often when the modem restarts during it.
const SETUP_TRIES: u32 = 3;

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
/// A command without its line end, for messages.
fn text(command: &[u8]) -> String {
    String::from_utf8_lossy(command).trim_end().to_string()
}
/// A command that cannot be built is a bug (the buffers are sized for every command).
fn command_bug(e: CommandError) -> SetupError {
    SetupError::Io {
        path: "AT command".into(),
        cause: e.to_string(),
    }
}

impl Station<'_> {
    /// The set-up commands, each reply checked.
    pub(super) async fn setup(&mut self, port: &mut SerialStream) -> Result<(), SetupError> {
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

    pub(super) async fn setup_once(&mut self, port: &mut SerialStream) -> Result<(), SetupError> {
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
        let commands: [Build; 5] = [
            |c, b| at::address(c.address, b),
            |c, b| at::network_id(c.network_id, b),
            |c, b| at::band(c.band, b),
            |c, b| at::output_power(c.power, b),
            |c, b| at::parameter(c.parameter, b),
        ];
        for build in commands {
            let n = build(self.cfg, &mut buf).map_err(command_bug)?;
            self.command(port, &buf[..n], false).await?;
        }
        Ok(())
    }

    /// Reads for [`LATE_REPLY`], dropping replies (frames are handled).
    pub(super) async fn drain_replies(
        &mut self,
        port: &mut SerialStream,
    ) -> Result<(), SetupError> {
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
    pub(super) async fn command(
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

    pub(super) fn no_answer(&self, command: &[u8]) -> SetupError {
        SetupError::NoAnswer {
            command: text(command),
            timeout: REPLY_TIMEOUT,
            baud: self.cfg.baud,
        }
    }

    pub(super) fn io(&self, e: impl std::fmt::Display) -> SetupError {
        SetupError::Io {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }
}
