//! Sensirion SHT3x (SHT30/31/35) on I2C: single-shot measurement, high repeatability, no
//! clock stretching (command 0x2400), then 6 bytes: temperature, CRC, humidity, CRC
//! (CRC-8, polynomial 0x31, init 0xFF). Datasheet: "SHT3x-DIS", §4.3 and §4.12.

use embedded_hal::i2c::I2c;

use super::{Climate, Sensor, SensorError};

/// The SHT3x's address with ADDR low (Node 2's wiring).
pub const ADDRESS: u8 = 0x44;
/// Single shot, high repeatability, clock stretching disabled.
const MEASURE: [u8; 2] = [0x24, 0x00];
/// Longest measurement at high repeatability: 15.5 ms.
const MEASURE_MS: u32 = 16;

/// The SHT3x on `bus`.
pub struct Sht3x<B> {
    bus: B,
    cycles_per_ms: u32,
}

impl<B: I2c> Sht3x<B> {
    /// A sensor on `bus`; `cpu_hz` times the measurement wait.
    pub fn new(bus: B, cpu_hz: u32) -> Self {
        Sht3x {
            bus,
            cycles_per_ms: cpu_hz / 1_000,
        }
    }
}

impl<B: I2c> Sensor for Sht3x<B> {
    type Reading = Climate;

    fn read(&mut self) -> Result<Climate, SensorError> {
        self.bus
            .write(ADDRESS, &MEASURE)
            .map_err(|_| SensorError::Bus)?;
        cortex_m::asm::delay(MEASURE_MS * self.cycles_per_ms);
        let mut raw = [0u8; 6];
        self.bus
            .read(ADDRESS, &mut raw)
            .map_err(|_| SensorError::Bus)?;
        decode(raw)
    }
}

/// The reading in the sensor's 6 bytes (datasheet §4.13).
pub fn decode(raw: [u8; 6]) -> Result<Climate, SensorError> {
    let [t0, t1, tc, h0, h1, hc] = raw;
    if crc8(&[t0, t1]) != tc || crc8(&[h0, h1]) != hc {
        return Err(SensorError::Checksum);
    }
    let t = f32::from(u16::from_be_bytes([t0, t1]));
    let h = f32::from(u16::from_be_bytes([h0, h1]));
    Ok(Climate {
        temperature: -45.0 + 175.0 * t / 65535.0,
        humidity: 100.0 * h / 65535.0,
    })
}

/// CRC-8 of the datasheet: polynomial 0x31, init 0xFF, no reflection (0xBEEF -> 0x92).
fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0xFF, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
        crc
    })
}
