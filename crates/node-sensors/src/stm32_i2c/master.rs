//! The I2C master of the STM32F4's I2C peripheral, generic over its register access
//! ([`Registers`]), so that its register sequences run on the host against a fake (the
//! tests check them as traces) and on the board against I2C1 (`firmware/src/i2c.rs`).
//! Checked point by point against RM0390 §24.3.3 and stm32f4xx-hal's `src/i2c.rs`:
//!
//! - Every wait is at most [`POLLS`] register reads: a missing or stuck device is an error,
//!   never a hang.
//! - A transaction starts only once the previous STOP has been sent (CR1.STOP clear), with
//!   SR1's stale error flags cleared, and waits for its own STOP before returning.
//! - embedded-hal 1.0's contract ([`crate::i2c::runs`]): adjacent operations of one kind are
//!   one stream of bytes under one START; a repeated START only where the kind changes.
//! - A read's last byte is NACKed before STOP or a repeated START by RM0390's polling
//!   sequences ([`ReadClose`]). ACK is on during the address phase (set with START, as the
//!   HAL does), so that with POS the first of two bytes is acknowledged.
//! - After an error ([`Error::recovery`]): a NACK gets a STOP; anything else, or a STOP that
//!   does not complete, gets a software reset (CR1.SWRST), a bus clear with the lines as GPIOs
//!   ([`crate::i2c::clear_bus`]) and the set-up again.

use embedded_hal::i2c::{ErrorType, I2c, Operation, SevenBitAddress};

use super::{
    poll, sr1_clear_value, Error, Phase, Poll, ReadClose, Recovery, SR1_ADDR, SR1_BTF, SR1_RXNE,
    SR1_SB, SR1_TXE,
};
use crate::i2c::{clear_bus, read_byte, run_from, write_bytes, Direction, OpenDrainLines, Run};

/// Control register 1.
pub const CR1: usize = 0x00;
/// Control register 2 (FREQ: the APB clock in MHz).
pub const CR2: usize = 0x04;
/// Data register.
pub const DR: usize = 0x10;
/// Status register 1 (the flags of `super`).
pub const SR1: usize = 0x14;
/// Status register 2 (read after SR1 to clear ADDR).
pub const SR2: usize = 0x18;
/// Clock control register.
pub const CCR: usize = 0x1C;
/// Rise time register.
pub const TRISE: usize = 0x20;

/// CR1: peripheral enable.
pub const CR1_PE: u32 = 1 << 0;
/// CR1: START (or repeated START) generation.
pub const CR1_START: u32 = 1 << 8;
/// CR1: STOP generation.
pub const CR1_STOP: u32 = 1 << 9;
/// CR1: acknowledge received bytes.
pub const CR1_ACK: u32 = 1 << 10;
/// CR1: ACK applies to the next byte (two-byte reception).
pub const CR1_POS: u32 = 1 << 11;
/// CR1: software reset.
pub const CR1_SWRST: u32 = 1 << 15;

/// Register polls before a wait is a timeout (some ms at 16 MHz; a byte at 100 kHz is 90 µs).
pub const POLLS: u32 = 50_000;
/// The bus clock, Hz (standard mode).
pub const BUS_HZ: u32 = 100_000;

/// What the master needs of the hardware.
pub trait Registers {
    /// The bus lines taken over as GPIOs, for a bus clear.
    type Lines: OpenDrainLines;

    /// Reads the peripheral's register at `offset`.
    fn read(&mut self, offset: usize) -> u32;
    /// Writes the peripheral's register at `offset`.
    fn write(&mut self, offset: usize, value: u32);
    /// Runs `f` (a few register accesses) with interrupts masked.
    fn masked<F: FnOnce(&mut Self)>(&mut self, f: F);
    /// Switches SCL and SDA from the peripheral to open-drain GPIOs, both released.
    fn take_lines(&mut self) -> Self::Lines;
    /// Gives the lines back to the peripheral.
    fn give_back_lines(&mut self, lines: Self::Lines);
}

/// The I2C master, 100 kHz standard mode, on the registers `R`.
#[derive(Debug, Clone, Copy)]
pub struct Master<R> {
    regs: R,
    pclk1_hz: u32,
}

impl<R: Registers> Master<R> {
    /// Resets and enables the peripheral at 100 kHz from a `pclk1_hz` APB clock. The caller
    /// has enabled its clock and pins.
    pub fn new(regs: R, pclk1_hz: u32) -> Self {
        let mut master = Master { regs, pclk1_hz };
        master.set_up();
        master
    }

    /// The register access.
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// The register access, to script a fake.
    #[cfg(test)]
    pub(crate) fn registers_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Software reset, then standard mode (CR2.FREQ, CCR, TRISE) and PE, in RM0390's order.
    fn set_up(&mut self) {
        self.regs.write(CR1, CR1_SWRST);
        self.regs.write(CR1, 0);
        let mhz = self.pclk1_hz / 1_000_000;
        self.regs.write(CR2, mhz);
        // Standard mode: SCL high = low = CCR * Tpclk.
        self.regs.write(CCR, (self.pclk1_hz / (2 * BUS_HZ)).max(4));
        self.regs.write(TRISE, mhz.saturating_add(1));
        self.regs.write(CR1, CR1_PE);
    }

    fn cr1(&mut self, clear: u32, set: u32) {
        let value = (self.regs.read(CR1) & !clear) | set;
        self.regs.write(CR1, value);
    }

    fn dr(&mut self) -> u8 {
        // DR holds 8 bits.
        self.regs.read(DR) as u8
    }

    /// Polls SR1 until `flag`, an error or the poll budget; error flags seen are cleared.
    fn wait(&mut self, flag: u32, phase: Phase) -> Result<(), Error> {
        for _ in 0..POLLS {
            let sr1 = self.regs.read(SR1);
            if let Some(clear) = sr1_clear_value(sr1) {
                self.regs.write(SR1, clear);
            }
            match poll(sr1, flag, phase) {
                Poll::Ready => return Ok(()),
                Poll::Failed(e) => return Err(e),
                Poll::Pending => {}
            }
        }
        Err(Error::Timeout)
    }

    /// Waits until the STOP asked for has been sent (the hardware clears CR1.STOP).
    fn wait_stop_sent(&mut self) -> Result<(), Error> {
        for _ in 0..POLLS {
            if self.regs.read(CR1) & CR1_STOP == 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    /// START with ACK on (unless the previous read's close already asked for the START) and
    /// the address byte, up to ADDR: SCL is held low until [`Master::clear_addr`].
    fn address(
        &mut self,
        address: u8,
        direction: Direction,
        start_asked: bool,
    ) -> Result<(), Error> {
        if !start_asked {
            self.cr1(0, CR1_START | CR1_ACK);
        }
        self.wait(SR1_SB, Phase::Address)?;
        let read = u32::from(direction == Direction::Read);
        self.regs.write(DR, (u32::from(address) << 1) | read);
        self.wait(SR1_ADDR, Phase::Address)
    }

    /// Clears ADDR (SR1 then SR2 read), which lets the transfer go on.
    fn clear_addr(regs: &mut R) {
        let _ = regs.read(SR1);
        let _ = regs.read(SR2);
    }

    /// A write run's bytes, up to BTF (the last byte acknowledged, SCL held).
    fn write_run(&mut self, operations: &[Operation<'_>], run: &Run) -> Result<(), Error> {
        Self::clear_addr(&mut self.regs);
        for byte in write_bytes(operations, run) {
            self.wait(SR1_TXE, Phase::Data)?;
            self.regs.write(DR, u32::from(byte));
        }
        if run.len > 0 {
            self.wait(SR1_BTF, Phase::Data)?;
        }
        Ok(())
    }

    /// A read run's bytes, its last NACKed and `close` (STOP or START) asked for in time
    /// ([`ReadClose`]). A run of 0 bytes reads one and drops it.
    fn read_run(
        &mut self,
        operations: &mut [Operation<'_>],
        run: &Run,
        close: u32,
    ) -> Result<(), Error> {
        let mut put = |k: usize, byte: u8| {
            if let Some(slot) = read_byte(operations, run, k) {
                *slot = byte;
            }
        };
        match ReadClose::for_len(run.len) {
            ReadClose::One => {
                self.cr1(CR1_ACK | CR1_POS, 0);
                self.regs.masked(|regs| {
                    Self::clear_addr(regs);
                    let cr1 = regs.read(CR1) | close;
                    regs.write(CR1, cr1);
                });
                self.wait(SR1_RXNE, Phase::Data)?;
                put(0, self.dr());
            }
            ReadClose::Two => {
                self.cr1(CR1_ACK, CR1_POS);
                Self::clear_addr(&mut self.regs);
                // Byte 1 in DR, byte 2 (NACKed) in the shift register.
                self.wait(SR1_BTF, Phase::Data)?;
                self.cr1(0, close);
                put(0, self.dr());
                self.wait(SR1_RXNE, Phase::Data)?;
                put(1, self.dr());
                self.cr1(CR1_POS, 0);
            }
            ReadClose::Many { plain } => {
                self.cr1(CR1_POS, CR1_ACK);
                Self::clear_addr(&mut self.regs);
                for k in 0..plain {
                    self.wait(SR1_RXNE, Phase::Data)?;
                    put(k, self.dr());
                }
                // Byte N-2 in DR, N-1 in the shift register.
                self.wait(SR1_BTF, Phase::Data)?;
                self.cr1(CR1_ACK, 0);
                put(plain, self.dr());
                // Byte N-1 in DR, N (NACKed) in the shift register.
                self.wait(SR1_BTF, Phase::Data)?;
                self.cr1(0, close);
                put(plain.saturating_add(1), self.dr());
                self.wait(SR1_RXNE, Phase::Data)?;
                put(plain.saturating_add(2), self.dr());
            }
        }
        Ok(())
    }

    fn run(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), Error> {
        self.wait_stop_sent()?;
        self.regs.write(SR1, 0); // stale error flags (rc_w0)
        let mut start_asked = false;
        let mut next = run_from(operations, 0);
        while let Some(run) = next {
            self.address(address, run.direction, start_asked)?;
            match run.direction {
                Direction::Write => {
                    self.write_run(operations, &run)?;
                    if run.last {
                        self.cr1(0, CR1_STOP);
                    }
                    start_asked = false;
                }
                Direction::Read => {
                    let close = if run.last { CR1_STOP } else { CR1_START };
                    self.read_run(operations, &run, close)?;
                    start_asked = !run.last;
                }
            }
            next = run_from(operations, run.end);
        }
        self.wait_stop_sent()
    }

    /// What `error` needs: a STOP, or when that does not complete or cannot do, the reset and
    /// the bus clear.
    fn recover(&mut self, error: Error) {
        if error.recovery() == Recovery::Stop {
            self.cr1(CR1_ACK | CR1_POS, CR1_STOP);
            if self.wait_stop_sent().is_ok() {
                return;
            }
        }
        self.reset_and_clear_bus();
    }

    /// CR1.SWRST, the bus clear with the lines as GPIOs, then the lines and the set-up (with
    /// its own SWRST) back: the STM32F4 errata sheets' way out of a BUSY flag stuck by the
    /// analog filter also toggles the lines as GPIOs, then resets. A bus still stuck after it
    /// shows as the next transfer's timeout.
    fn reset_and_clear_bus(&mut self) {
        self.regs.write(CR1, CR1_SWRST);
        let mut lines = self.regs.take_lines();
        let _ = clear_bus(&mut lines);
        self.regs.give_back_lines(lines);
        self.set_up();
    }
}

impl<R> ErrorType for Master<R> {
    type Error = Error;
}

impl<R: Registers> I2c<SevenBitAddress> for Master<R> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let result = self.run(address, operations);
        if let Err(error) = result {
            self.recover(error);
        }
        result
    }
}
