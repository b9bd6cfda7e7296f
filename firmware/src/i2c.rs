//! A blocking I2C master on the STM32F4's I2C1 (the "v1" peripheral of RM0390), standard
//! mode (100 kHz), implementing `embedded_hal::i2c::I2c` for the sensor drivers. Every wait is
//! bounded: a missing or stuck sensor is an error, never a hang. The sequence follows
//! RM0390 §24.3.3 the way stm32f4xx-hal does it (ACK on, NACK and STOP before the last byte).
//!
//! Only the real board uses it: QEMU 7.2 does not model the STM32F4's I2C.

use embedded_hal::i2c::{self, ErrorKind, NoAcknowledgeSource, Operation, SevenBitAddress};

use crate::reg;

const CR1: usize = 0x00;
const CR2: usize = 0x04;
const DR: usize = 0x10;
const SR1: usize = 0x14;
const SR2: usize = 0x18;
const CCR: usize = 0x1C;
const TRISE: usize = 0x20;

const CR1_PE: u32 = 1 << 0;
const CR1_START: u32 = 1 << 8;
const CR1_STOP: u32 = 1 << 9;
const CR1_ACK: u32 = 1 << 10;
const CR1_SWRST: u32 = 1 << 15;

const SR1_SB: u32 = 1 << 0;
const SR1_ADDR: u32 = 1 << 1;
const SR1_BTF: u32 = 1 << 2;
const SR1_RXNE: u32 = 1 << 6;
const SR1_TXE: u32 = 1 << 7;
const SR1_BERR: u32 = 1 << 8;
const SR1_ARLO: u32 = 1 << 9;
const SR1_AF: u32 = 1 << 10;

/// Register polls before a wait is a timeout (some ms at 16 MHz; a byte at 100 kHz is 90 µs).
const POLLS: u32 = 50_000;

/// What went wrong on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No device acknowledged the address or a byte.
    Nack(NoAcknowledgeSource),
    /// Bus error or arbitration lost.
    Bus,
    /// A flag never came.
    Timeout,
}

impl i2c::Error for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Nack(source) => ErrorKind::NoAcknowledge(*source),
            Error::Bus => ErrorKind::Bus,
            Error::Timeout => ErrorKind::Other,
        }
    }
}

/// I2C1, by base address. Cheap to copy: drivers that consume the bus on a failed probe can
/// be given it again.
#[derive(Clone, Copy)]
pub struct I2c1 {
    base: usize,
}

impl I2c1 {
    /// Resets and enables I2C1 at 100 kHz from a `pclk1_hz` APB1 clock. The caller has enabled
    /// its clock and pins (the board module).
    pub fn new(pclk1_hz: u32) -> Self {
        let base = reg::I2C1;
        reg::write(base + CR1, CR1_SWRST);
        reg::write(base + CR1, 0);
        let mhz = pclk1_hz / 1_000_000;
        reg::write(base + CR2, mhz);
        // Standard mode: SCL high = low = CCR * Tpclk, 100 kHz.
        reg::write(base + CCR, (pclk1_hz / (2 * 100_000)).max(4));
        reg::write(base + TRISE, mhz + 1);
        reg::write(base + CR1, CR1_PE);
        I2c1 { base }
    }

    fn wait(self, flag: u32) -> Result<(), Error> {
        for _ in 0..POLLS {
            let sr1 = reg::read(self.base + SR1);
            if sr1 & SR1_AF != 0 {
                reg::modify(self.base + SR1, SR1_AF, 0);
                return Err(Error::Nack(NoAcknowledgeSource::Unknown));
            }
            if sr1 & (SR1_BERR | SR1_ARLO) != 0 {
                reg::modify(self.base + SR1, SR1_BERR | SR1_ARLO, 0);
                return Err(Error::Bus);
            }
            if sr1 & flag != 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    /// START (or repeated START) and the address byte; `read` sets the direction bit.
    fn start(self, address: u8, read: bool) -> Result<(), Error> {
        reg::modify(self.base + CR1, 0, CR1_START | CR1_ACK);
        self.wait(SR1_SB)?;
        reg::write(self.base + DR, u32::from(address << 1 | u8::from(read)));
        self.wait(SR1_ADDR).map_err(|e| match e {
            Error::Nack(_) => Error::Nack(NoAcknowledgeSource::Address),
            e => e,
        })
    }

    /// Clears ADDR (SR1 then SR2 read), which releases the transfer.
    fn clear_addr(self) {
        let _ = reg::read(self.base + SR1);
        let _ = reg::read(self.base + SR2);
    }

    fn write_bytes(self, bytes: &[u8]) -> Result<(), Error> {
        self.clear_addr();
        for &b in bytes {
            self.wait(SR1_TXE)?;
            reg::write(self.base + DR, u32::from(b));
        }
        self.wait(SR1_BTF).map_err(|e| match e {
            Error::Nack(_) => Error::Nack(NoAcknowledgeSource::Data),
            e => e,
        })
    }

    /// Reads `buf`, NACKing the last byte; STOP before it when `stop`, else the next
    /// operation's repeated START ends the read.
    fn read_bytes(self, buf: &mut [u8], stop: bool) -> Result<(), Error> {
        let end = if stop { CR1_STOP } else { 0 };
        if buf.len() <= 1 {
            reg::modify(self.base + CR1, CR1_ACK, 0);
        }
        self.clear_addr();
        let Some((last, head)) = buf.split_last_mut() else {
            reg::modify(self.base + CR1, 0, end);
            return Ok(());
        };
        let Some((before_last, rest)) = head.split_last_mut() else {
            reg::modify(self.base + CR1, CR1_ACK, end);
            self.wait(SR1_RXNE)?;
            *last = reg::read(self.base + DR) as u8;
            return Ok(());
        };
        for b in rest {
            self.wait(SR1_RXNE)?;
            *b = reg::read(self.base + DR) as u8;
        }
        self.wait(SR1_RXNE)?;
        // Reading the byte before the last starts the last one's reception: ACK must be off
        // before that byte ends, so no task may run in between (a higher-priority task
        // writing a JSON line takes ~13 ms, and the last byte would be acknowledged and one
        // more clocked in). A few instructions with interrupts off.
        cortex_m::interrupt::free(|_| {
            *before_last = reg::read(self.base + DR) as u8;
            reg::modify(self.base + CR1, CR1_ACK, end);
        });
        self.wait(SR1_RXNE)?;
        *last = reg::read(self.base + DR) as u8;
        Ok(())
    }

    fn stop(self) {
        reg::modify(self.base + CR1, 0, CR1_STOP);
    }
}

impl i2c::ErrorType for I2c1 {
    type Error = Error;
}

impl i2c::I2c<SevenBitAddress> for I2c1 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let count = operations.len();
        let mut run = || -> Result<bool, Error> {
            let mut stopped = false;
            for (i, op) in operations.iter_mut().enumerate() {
                let last = i + 1 == count;
                match op {
                    Operation::Write(bytes) => {
                        self.start(address, false)?;
                        self.write_bytes(bytes)?;
                    }
                    Operation::Read(buf) => {
                        self.start(address, true)?;
                        self.read_bytes(buf, last)?;
                        stopped = last;
                    }
                }
            }
            Ok(stopped)
        };
        match run() {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.stop();
                Ok(())
            }
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }
}
