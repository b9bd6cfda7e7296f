//! Emulated sensors for the QEMU builds: deterministic values that the end-to-end test
//! predicts from the read number (reads are numbered 1, 2, ... from boot).

use super::{Air, Climate, Sensor, SensorError};

/// Node 2's SHT3x under emulation: 23.5 °C and 51.0 %RH, except that every read whose number
/// is a multiple of [`EmulatedSht3x::FAIL_EVERY`] fails.
#[derive(Debug, Default)]
pub struct EmulatedSht3x {
    reads: u32,
}

impl EmulatedSht3x {
    /// Read `r` fails when `r % FAIL_EVERY == 0`.
    pub const FAIL_EVERY: u32 = 20;
}

impl Sensor for EmulatedSht3x {
    type Reading = Climate;

    fn read(&mut self) -> Result<Climate, SensorError> {
        self.reads = self.reads.wrapping_add(1);
        if self.reads.is_multiple_of(Self::FAIL_EVERY) {
            return Err(SensorError::Bus);
        }
        Ok(Climate {
            temperature: 23.5,
            humidity: 51.0,
        })
    }
}

/// Node 1's BME680 under emulation. Read `n` (= the seq of the packet it goes into: Node 1
/// reads once per packet and this sensor never fails) gives `temperature = 200 + n % 100`
/// tenths of °C, `humidity = 4000 + (n % 50) * 10` hundredths of %RH and
/// `gas_resistance = 100_000 + 37 * n` ohms.
#[derive(Debug, Default)]
pub struct EmulatedBme680 {
    reads: u16,
}

impl Sensor for EmulatedBme680 {
    type Reading = Air;

    fn read(&mut self) -> Result<Air, SensorError> {
        self.reads = self.reads.wrapping_add(1);
        Ok(emulated_air(self.reads))
    }
}

/// The emulated BME680's reading number `n`.
pub fn emulated_air(n: u16) -> Air {
    Air {
        temperature: 200 + (n % 100) as i16,
        humidity: 4000 + (n % 50) * 10,
        gas_resistance: 100_000 + u32::from(n) * 37,
    }
}
