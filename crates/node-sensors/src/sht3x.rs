//! Sensirion SHT3x (SHT30/31/35) on I2C: single-shot measurement, high repeatability, no
//! clock stretching (command 0x2400), then 6 bytes: temperature, CRC, humidity, CRC (CRC-8,
//! polynomial 0x31, init 0xFF). Datasheet "SHT3x-DIS" (Sensirion, 2019), §4.3, §4.12, §4.13.
//!
//! [`decode`] and [`crc8`] are the whole of the sensor's rules; [`Sht3x`] only moves bytes:
//! one write, one wait of [`MEASURE_MS`], one read. A failed transfer or a CRC that does not
//! match is an error, never a stale or made-up value.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// The SHT3x's address with its ADDR pin low (Node 2's wiring).
pub const ADDRESS: u8 = 0x44;
/// The SHT3x's address with its ADDR pin high.
pub const ADDRESS_ALTERNATE: u8 = 0x45;
/// Single shot, high repeatability, clock stretching disabled (datasheet Table 9).
pub const MEASURE: [u8; 2] = [0x24, 0x00];
/// Longest single-shot measurement at high repeatability: 15.5 ms (datasheet Table 4), ms.
pub const MEASURE_MS: u32 = 16;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Climate {
    /// Temperature, °C.
    pub temperature: f32,
    /// Relative humidity, %.
    pub humidity: f32,
}

/// Why a measurement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus transfer failed (no answer, bus error, timeout).
    Bus(E),
    /// A word's CRC did not match: the bytes were corrupted on the way.
    Checksum,
}

/// The SHT3x on `bus`.
#[derive(Debug)]
pub struct Sht3x<B> {
    bus: B,
    address: u8,
}

impl<B: I2c> Sht3x<B> {
    /// A sensor at `address` ([`ADDRESS`] or [`ADDRESS_ALTERNATE`]) on `bus`.
    pub fn new(bus: B, address: u8) -> Self {
        Sht3x { bus, address }
    }

    /// Starts a single-shot measurement, waits [`MEASURE_MS`] on `delay`, reads and checks
    /// the result.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Climate, Error<B::Error>> {
        self.bus.write(self.address, &MEASURE).map_err(Error::Bus)?;
        delay.delay_ms(MEASURE_MS);
        let mut raw = [0u8; 6];
        self.bus.read(self.address, &mut raw).map_err(Error::Bus)?;
        decode(raw)
    }
}

/// The reading in the sensor's 6 bytes (datasheet §4.13): T = -45 + 175 * St / 65535 °C,
/// RH = 100 * Srh / 65535 %.
pub fn decode<E>(raw: [u8; 6]) -> Result<Climate, Error<E>> {
    let [t0, t1, tc, h0, h1, hc] = raw;
    if crc8(&[t0, t1]) != tc || crc8(&[h0, h1]) != hc {
        return Err(Error::Checksum);
    }
    let t = f32::from(u16::from_be_bytes([t0, t1]));
    let h = f32::from(u16::from_be_bytes([h0, h1]));
    Ok(Climate {
        temperature: -45.0 + 175.0 * t / 65535.0,
        humidity: 100.0 * h / 65535.0,
    })
}

/// CRC-8 of the datasheet (§4.12): polynomial 0x31, init 0xFF, no reflection, no final XOR
/// (0xBEEF -> 0x92).
pub fn crc8(data: &[u8]) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CountingDelay;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;

    type E = ErrorKind;

    /// A word and its CRC as the sensor sends them.
    fn word(w: u16) -> [u8; 3] {
        let [a, b] = w.to_be_bytes();
        [a, b, crc8(&[a, b])]
    }

    fn raw(t: u16, h: u16) -> [u8; 6] {
        let [a, b, c] = word(t);
        let [d, e, f] = word(h);
        [a, b, c, d, e, f]
    }

    #[test]
    fn crc8_matches_the_datasheets_example_and_independent_values() {
        assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
        // Computed apart from this code (polynomial division of the same CRC).
        assert_eq!(crc8(&[0x00, 0x00]), 0x81);
        assert_eq!(crc8(&[0xFF, 0xFF]), 0xAC);
        assert_eq!(crc8(&[0x66, 0x66]), 0x93);
        assert_eq!(crc8(&[]), 0xFF);
    }

    #[test]
    fn decodes_a_reading_in_the_sensors_format() {
        // The CRCs here were computed apart from this code (polynomial division).
        // 0x6666 / 0x8000: 25.0 °C, 50.0008 %RH.
        let climate = decode::<E>([0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]).unwrap();
        assert!((climate.temperature - 25.0).abs() < 1e-4, "{climate:?}");
        assert!((climate.humidity - 50.000_76).abs() < 1e-4, "{climate:?}");
        // 0x6E42 / 0x5C9E: 30.3727 °C, 36.1791 %RH.
        let climate = decode::<E>([0x6E, 0x42, 0xE6, 0x5C, 0x9E, 0xF4]).unwrap();
        assert!((climate.temperature - 30.372_7).abs() < 1e-3, "{climate:?}");
        assert!((climate.humidity - 36.179_14).abs() < 1e-3, "{climate:?}");
    }

    #[test]
    fn decodes_the_ends_of_the_range() {
        assert_eq!(
            decode::<E>(raw(0x0000, 0x0000)),
            Ok(Climate {
                temperature: -45.0,
                humidity: 0.0
            })
        );
        assert_eq!(
            decode::<E>(raw(0xFFFF, 0xFFFF)),
            Ok(Climate {
                temperature: 130.0,
                humidity: 100.0
            })
        );
    }

    #[test]
    fn refuses_a_corrupted_word_or_crc() {
        let good = raw(0x6666, 0x8000);
        for i in 0..6 {
            for bit in 0..8 {
                let mut bad = good;
                bad[i] ^= 1 << bit;
                assert_eq!(decode::<E>(bad), Err(Error::Checksum), "byte {i} bit {bit}");
            }
        }
        // A bus that reads all ones (no sensor driving SDA): 0xFF is not the CRC of 0xFFFF.
        assert_eq!(decode::<E>([0xFF; 6]), Err(Error::Checksum));
        assert_eq!(decode::<E>([0x00; 6]), Err(Error::Checksum));
    }

    #[test]
    fn measures_with_one_write_a_wait_and_one_read() {
        let answer = raw(0x6666, 0x8000);
        let mut bus = Mock::new(&[
            Transaction::write(ADDRESS, MEASURE.to_vec()),
            Transaction::read(ADDRESS, answer.to_vec()),
        ]);
        let mut delay = CountingDelay::default();
        let climate = Sht3x::new(bus.clone(), ADDRESS)
            .measure(&mut delay)
            .unwrap();
        assert_eq!(climate, decode::<E>(answer).unwrap());
        assert_eq!(delay.total_ns, 16_000_000);
        bus.done();
    }

    #[test]
    fn a_failed_transfer_or_corrupted_answer_is_an_error_not_a_value() {
        let mut bus = Mock::new(&[
            Transaction::write(ADDRESS, MEASURE.to_vec()).with_error(ErrorKind::Other),
            Transaction::write(ADDRESS, MEASURE.to_vec()),
            Transaction::read(ADDRESS, vec![0; 6]).with_error(ErrorKind::Bus),
            Transaction::write(ADDRESS, MEASURE.to_vec()),
            Transaction::read(ADDRESS, vec![0x66, 0x66, 0x92, 0x80, 0x00, 0xA2]),
        ]);
        let mut sensor = Sht3x::new(bus.clone(), ADDRESS);
        let mut delay = CountingDelay::default();
        assert_eq!(
            sensor.measure(&mut delay),
            Err(Error::Bus(ErrorKind::Other))
        );
        assert_eq!(sensor.measure(&mut delay), Err(Error::Bus(ErrorKind::Bus)));
        assert_eq!(sensor.measure(&mut delay), Err(Error::Checksum));
        bus.done();
    }
}
