//! The sensors behind one small trait, so each node runs the same code on the board (real
//! drivers on I2C1) and under QEMU (emulated sensors with values a test can predict).
//!
//! A read blocks for the measurement (SHT3x: ~16 ms; BME680: ~200 ms with the gas heater);
//! the nodes call it from their lowest-priority task, so the modem's receive interrupt and
//! higher tasks run meanwhile.

#[cfg(not(feature = "qemu"))]
pub mod bme680;
pub mod emulated;
#[cfg(not(feature = "qemu"))]
pub mod sht3x;

/// A sensor that can be read.
pub trait Sensor {
    /// One reading.
    type Reading;

    /// Measures and returns a reading, or why it could not.
    fn read(&mut self) -> Result<Self::Reading, SensorError>;
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum SensorError {
    /// The bus transfer failed (no answer, bus error, timeout).
    Bus,
    /// The data's checksum did not match.
    Checksum,
    /// The sensor answered but gave no usable value.
    NoData,
}

/// Node 2's SHT3x: °C and %RH.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Climate {
    /// Temperature, °C.
    pub temperature: f32,
    /// Relative humidity, %.
    pub humidity: f32,
}

/// Node 1's BME680, in the units of `SensorDataPacket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Air {
    /// Tenths of °C, truncated.
    pub temperature: i16,
    /// Hundredths of %RH.
    pub humidity: u16,
    /// Ohms.
    pub gas_resistance: u32,
}
