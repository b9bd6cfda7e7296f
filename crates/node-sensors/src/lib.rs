//! The sensor nodes' sensors and their I2C bus: everything of `firmware/`'s sensor path that
//! can run on the host, tested there. The firmware keeps only register access and board
//! wiring (`firmware/src/i2c.rs`, `firmware/src/sensor/`).
//!
//! - [`sht3x`]: Node 2's Sensirion SHT3x: the command, the 6-byte answer's decoding and its
//!   CRC-8, and a driver generic over `embedded_hal::i2c::I2c`.
//! - [`bme680`]: Node 1's Bosch BME680: our own forced-mode driver (configure, trigger, a
//!   bounded number of polls, read, compensate with Bosch's integer formulas), generic over
//!   `embedded_hal::i2c::I2c` and `embedded_hal::delay::DelayNs`. A missing gas reading is
//!   `gas_resistance: None` beside a valid temperature and humidity.
//! - [`i2c`]: what any I2C master must decide: how `I2c::transaction`'s operations become
//!   START/repeated START/STOP (embedded-hal 1.0's contract), and the nine-clock bus clear
//!   (UM10204 §3.1.16) over two open-drain lines.
//! - [`stm32_i2c`]: the STM32F4's I2C peripheral ("v1", RM0390 §24): its rules (what SR1's
//!   flags mean, how a read of N bytes is closed so that its last byte's NACK cannot be
//!   preempted, which recovery an error needs) and `Master`, the I2C master built on them,
//!   generic over its register access, its register sequences checked as traces of a fake.
//!
//! ## Why not the `bosch-bme680` crate
//!
//! Node 1 used `bosch-bme680` 1.0.4 until issue 26. It can panic on a register value a glitch
//! can produce, and it waits without bound for a mode change (paths in that crate):
//! - `src/config.rs:44`: `impl From<u8> for Variant` panics on a variant id other than 0 or 1
//!   (read once at start-up, `src/i2c_helper.rs:121`);
//! - `src/config.rs:98`: `impl From<u8> for SensorMode` panics when `ctrl_meas`'s mode bits
//!   read 0b10 or 0b11 (read before every measurement, `src/i2c_helper.rs:151-154`);
//! - `src/i2c_helper.rs:149-166`: `set_mode` loops until the sensor reports sleep mode, with
//!   no bound (the same loop as Bosch's `bme68x_set_op_mode`);
//! - `src/data.rs:59`: a field whose `new_data` bit is clear is taken as a reading when the
//!   `measuring` bit is clear too (a sensor that never measured gives its reset values).
//!
//! A panic or a hang stops Node 1 for good (until the watchdog). [`bme680`] replaces it: every
//! register value is data, every wait is counted, and a field without `new_data` is never a
//! reading.
//!
//! `#![no_std]`, no allocation, no `unsafe`, and no panic path outside the tests: no indexing
//! that can fail, no `unwrap`, arithmetic whose range is shown in the code or checked.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic path in the library (tests may index and unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod bme680;
pub mod i2c;
pub mod sht3x;
pub mod stm32_i2c;

#[cfg(test)]
extern crate std;

/// A delay that only adds up what it was asked to wait, for tests: how long a driver would
/// have waited, without waiting.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct CountingDelay {
    /// Nanoseconds asked for so far.
    pub(crate) total_ns: u64,
}

#[cfg(test)]
impl embedded_hal::delay::DelayNs for CountingDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.total_ns += u64::from(ns);
    }
}
