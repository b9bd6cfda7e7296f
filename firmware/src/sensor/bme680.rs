//! Node 1's Bosch BME680 on the board: our own driver in `node_sensors::bme680` (forced mode,
//! heater 300 °C for 150 ms, Bosch's integer compensation, every wait bounded, no panic
//! path; host-tested) behind the [`Sensor`] trait, its waits a busy loop: one read takes
//! about 160 ms, and waits at most 211 ms (plus a few ms of bus transfers) when the sensor has
//! to be set up first and never finishes. A sensor that was missing, or failed, is set up again on the next read, so it is
//! picked up when it answers.
//!
//! When the sensor marks its gas measurement invalid or its heater unstable, the reading still
//! holds a good temperature and humidity: it goes out with `lora_link::packet::NO_GAS` for
//! the gas (no `g` in Node 2's line, no gas reading at the gateway).

use embedded_hal::i2c::I2c;
use lora_link::packet::NO_GAS;
use node_sensors::bme680;

use super::{Air, BusyDelay, Sensor, SensorError};

pub use node_sensors::bme680::Sdo;

/// The BME680 on `bus`.
pub struct Bme680<B> {
    driver: bme680::Bme680<B>,
    delay: BusyDelay,
}

impl<B: I2c> Bme680<B> {
    /// A sensor on `bus`, its address set by `sdo`; `cpu_hz` times the driver's waits.
    pub fn new(bus: B, sdo: Sdo, cpu_hz: u32) -> Self {
        Bme680 {
            driver: bme680::Bme680::new(bus, sdo),
            delay: BusyDelay::new(cpu_hz),
        }
    }
}

impl<B: I2c> Sensor for Bme680<B> {
    type Reading = Air;

    fn read(&mut self) -> Result<Air, SensorError> {
        let reading = self.driver.measure(&mut self.delay).map_err(|e| match e {
            bme680::Error::Bus(_) => SensorError::Bus,
            bme680::Error::ChipId(_) | bme680::Error::Variant(_) | bme680::Error::NoNewData => {
                SensorError::NoData
            }
        })?;
        // The packet's units (docs/PROTOCOL.md, "Fields and units"): truncated tenths of °C,
        // hundredths of %RH, ohms.
        Ok(Air {
            temperature: reading.temperature_tenths(),
            humidity: reading.humidity_hundredths(),
            gas_resistance: reading.gas_resistance.map_or(NO_GAS, |g| g.min(NO_GAS - 1)),
        })
    }
}
