//! I2C1 of the STM32F4 (the "v1" peripheral of RM0390 §24), standard mode (100 kHz), as an
//! `embedded_hal::i2c::I2c` for the sensor drivers. The master is
//! `node_sensors::stm32_i2c::Master`, whose register sequences are host-tested (RM0390
//! §24.3.3's read sequences, STOP before START, one START per run of operations of one kind,
//! bounded waits, STOP or reset and bus clear after an error); this file gives it I2C1's
//! registers, the critical section of the one-byte read, and PB8/PB9 as open-drain GPIOs for
//! the bus clear.
//!
//! Only the real board uses it: QEMU 7.2 does not model the STM32F4's I2C. It has not run on
//! a board yet.

use embedded_hal::i2c::{self, Operation, SevenBitAddress};
use node_sensors::i2c::OpenDrainLines;
use node_sensors::stm32_i2c::{Master, Registers};

pub use node_sensors::stm32_i2c::Error;

use crate::reg;

/// The bus's pins as the board wires them (`board::nucleo_f446re::init`: PB8 SCL, PB9 SDA,
/// AF4, open drain, pull-ups), taken over as GPIOs for a bus clear.
const SCL_PIN: u32 = 8;
const SDA_PIN: u32 = 9;
const GPIO_MODER: usize = 0x00;
const GPIO_OTYPER: usize = 0x04;
const GPIO_IDR: usize = 0x10;
const GPIO_BSRR: usize = 0x18;
const MODE_OUTPUT: u32 = 0b01;
const MODE_ALTERNATE: u32 = 0b10;

/// I2C1's registers.
#[derive(Clone, Copy)]
pub struct I2c1Registers {
    pclk1_hz: u32,
}

impl Registers for I2c1Registers {
    type Lines = Lines;

    fn read(&mut self, offset: usize) -> u32 {
        reg::read(reg::I2C1 + offset)
    }

    fn write(&mut self, offset: usize, value: u32) {
        reg::write(reg::I2C1 + offset, value);
    }

    fn masked<F: FnOnce(&mut Self)>(&mut self, f: F) {
        cortex_m::interrupt::free(|_| f(self));
    }

    fn take_lines(&mut self) -> Lines {
        let pins = (1 << SCL_PIN) | (1 << SDA_PIN);
        // Released before they become outputs: no glitch low.
        reg::write(reg::GPIOB + GPIO_BSRR, pins);
        reg::modify(reg::GPIOB + GPIO_OTYPER, 0, pins);
        set_mode(MODE_OUTPUT);
        // 5 µs in PCLK1 cycles; the core runs at least that fast.
        Lines {
            half_period_cycles: (self.pclk1_hz / 200_000).max(1),
        }
    }

    fn give_back_lines(&mut self, _lines: Lines) {
        set_mode(MODE_ALTERNATE);
    }
}

/// PB8 (SCL) and PB9 (SDA) as open-drain GPIO outputs, for a bus clear.
pub struct Lines {
    half_period_cycles: u32,
}

fn set_mode(mode: u32) {
    let (scl, sda) = (SCL_PIN * 2, SDA_PIN * 2);
    reg::modify(
        reg::GPIOB + GPIO_MODER,
        (0b11 << scl) | (0b11 << sda),
        (mode << scl) | (mode << sda),
    );
}

/// Releases `pin` (open drain: the pull-up takes it high) or drives it low.
fn drive(pin: u32, release: bool) {
    let bit = if release { 1 << pin } else { 1 << (pin + 16) };
    reg::write(reg::GPIOB + GPIO_BSRR, bit);
}

fn is_high(pin: u32) -> bool {
    reg::read(reg::GPIOB + GPIO_IDR) & (1 << pin) != 0
}

impl OpenDrainLines for Lines {
    fn set_scl(&mut self, release: bool) {
        drive(SCL_PIN, release);
    }

    fn set_sda(&mut self, release: bool) {
        drive(SDA_PIN, release);
    }

    fn scl_is_high(&mut self) -> bool {
        is_high(SCL_PIN)
    }

    fn sda_is_high(&mut self) -> bool {
        is_high(SDA_PIN)
    }

    fn wait_half_period(&mut self) {
        cortex_m::asm::delay(self.half_period_cycles);
    }
}

/// The I2C master on I2C1. Cheap to copy: drivers that consume the bus on a failed probe can
/// be given it again.
#[derive(Clone, Copy)]
pub struct I2c1(Master<I2c1Registers>);

impl I2c1 {
    /// Resets and enables I2C1 at 100 kHz from a `pclk1_hz` APB1 clock. The caller has enabled
    /// its clock and pins (the board module).
    pub fn new(pclk1_hz: u32) -> Self {
        I2c1(Master::new(I2c1Registers { pclk1_hz }, pclk1_hz))
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
        self.0.transaction(address, operations)
    }
}
