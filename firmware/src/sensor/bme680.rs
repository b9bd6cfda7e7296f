//! Bosch BME680 on I2C through the `bosch-bme680` driver (calibration and Bosch's
//! compensation formulas): forced mode, gas heater 300 °C for 150 ms, so one read takes about
//! 200 ms. The driver is created on the first read and again after a failed one, so a sensor
//! that was missing at boot is picked up when it answers.

use bosch_bme680::{Bme680 as Driver, Configuration, DeviceAddress};
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{Air, Sensor, SensorError};

/// A busy-wait delay for the driver (it waits for the measurement).
struct BusyDelay {
    cycles_per_us: u32,
}

impl DelayNs for BusyDelay {
    fn delay_ns(&mut self, ns: u32) {
        cortex_m::asm::delay((ns / 1_000).max(1).saturating_mul(self.cycles_per_us));
    }
}

/// Where the BME680 answers: SDO high (0x77, Adafruit-style boards) or low (0x76).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdo {
    /// 0x77.
    High,
    /// 0x76.
    Low,
}

/// The BME680 on `bus`.
pub struct Bme680<B: I2c + Clone> {
    bus: B,
    sdo: Sdo,
    cpu_hz: u32,
    driver: Option<Driver<B, BusyDelay>>,
}

impl<B: I2c + Clone> Bme680<B> {
    /// A sensor on `bus`, its address set by `sdo`; `cpu_hz` times the driver's waits.
    pub fn new(bus: B, sdo: Sdo, cpu_hz: u32) -> Self {
        Bme680 {
            bus,
            sdo,
            cpu_hz,
            driver: None,
        }
    }
}

impl<B: I2c + Clone> Sensor for Bme680<B> {
    type Reading = Air;

    fn read(&mut self) -> Result<Air, SensorError> {
        let driver = match &mut self.driver {
            Some(driver) => driver,
            None => {
                let delay = BusyDelay {
                    cycles_per_us: self.cpu_hz / 1_000_000,
                };
                let driver = Driver::new(
                    self.bus.clone(),
                    match self.sdo {
                        Sdo::High => DeviceAddress::Secondary,
                        Sdo::Low => DeviceAddress::Primary,
                    },
                    delay,
                    &Configuration::default(),
                    20,
                )
                .map_err(|_| SensorError::Bus)?;
                self.driver.insert(driver)
            }
        };
        let data = match driver.measure() {
            Ok(data) => data,
            Err(_) => {
                self.driver = None;
                return Err(SensorError::Bus);
            }
        };
        let gas = data.gas_resistance.ok_or(SensorError::NoData)?;
        // The packet's units (docs/PROTOCOL.md, "Fields and units"): truncated tenths of °C,
        // hundredths of %RH, ohms.
        Ok(Air {
            temperature: (data.temperature * 10.0) as i16,
            humidity: (data.humidity * 100.0) as u16,
            gas_resistance: gas as u32,
        })
    }
}
