//! Node 2's Sensirion SHT3x on the board: `node_sensors::sht3x` (the command, the decoding and
//! its CRC-8, host-tested) behind the [`Sensor`] trait, its 16 ms measurement wait a busy
//! loop. A failed transfer or a CRC mismatch is an error, never a value.

use embedded_hal::i2c::I2c;
use node_sensors::sht3x;

use super::{BusyDelay, Climate, Sensor, SensorError};

pub use node_sensors::sht3x::ADDRESS;

/// The SHT3x at [`ADDRESS`] on `bus`.
pub struct Sht3x<B> {
    driver: sht3x::Sht3x<B>,
    delay: BusyDelay,
}

impl<B: I2c> Sht3x<B> {
    /// A sensor on `bus`; `cpu_hz` times the measurement wait.
    pub fn new(bus: B, cpu_hz: u32) -> Self {
        Sht3x {
            driver: sht3x::Sht3x::new(bus, ADDRESS),
            delay: BusyDelay::new(cpu_hz),
        }
    }
}

impl<B: I2c> Sensor for Sht3x<B> {
    type Reading = Climate;

    fn read(&mut self) -> Result<Climate, SensorError> {
        self.driver.measure(&mut self.delay).map_err(|e| match e {
            sht3x::Error::Bus(_) => SensorError::Bus,
            sht3x::Error::Checksum => SensorError::Checksum,
        })
    }
}
