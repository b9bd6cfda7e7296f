//! The sensors behind one small trait, so each node runs the same code on the board (real
//! drivers on I2C1) and under QEMU (emulated sensors with values a test can predict).
//!
//! The board's drivers are `crates/node-sensors`' (host-tested); `sht3x.rs` and `bme680.rs`
//! only put them behind [`Sensor`] with a busy-wait delay.
//!
//! A read blocks for the measurement (SHT3x: ~16 ms; BME680: ~160 ms with the gas heater);
//! the nodes call it from their lowest-priority task, so the modem's receive interrupt and
//! higher tasks run meanwhile.

#[cfg(not(feature = "qemu"))]
pub mod bme680;
pub mod emulated;
#[cfg(not(feature = "qemu"))]
pub mod sht3x;

/// Node 2's SHT3x reading: °C and %RH (`node_sensors::sht3x`).
pub use node_sensors::sht3x::Climate;

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

impl SensorError {
    /// What went wrong and what to check, for the self-test's line.
    pub fn describe(self) -> &'static str {
        match self {
            SensorError::Bus => {
                "no answer on the bus: check the wiring, the pull-ups and the address"
            }
            SensorError::Checksum => {
                "its data failed the checksum: check the wiring and the pull-ups"
            }
            SensorError::NoData => {
                "it answered without a reading: a different chip id, or no measurement"
            }
        }
    }
}

/// Node 1's BME680, in the units of `SensorDataPacket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Air {
    /// Tenths of °C, truncated.
    pub temperature: i16,
    /// Hundredths of %RH.
    pub humidity: u16,
    /// Ohms; `lora_link::packet::NO_GAS` when the sensor had no gas reading.
    pub gas_resistance: u32,
}

/// A busy-wait delay for the drivers' measurement waits, in core clock cycles.
#[cfg(not(feature = "qemu"))]
struct BusyDelay {
    cycles_per_us: u32,
}

#[cfg(not(feature = "qemu"))]
impl BusyDelay {
    fn new(cpu_hz: u32) -> Self {
        BusyDelay {
            cycles_per_us: (cpu_hz / 1_000_000).max(1),
        }
    }
}

#[cfg(not(feature = "qemu"))]
impl embedded_hal::delay::DelayNs for BusyDelay {
    fn delay_ns(&mut self, ns: u32) {
        cortex_m::asm::delay(ns.div_ceil(1_000).saturating_mul(self.cycles_per_us));
    }

    fn delay_us(&mut self, us: u32) {
        cortex_m::asm::delay(us.saturating_mul(self.cycles_per_us));
    }
}
