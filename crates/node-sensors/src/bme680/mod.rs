//! Bosch BME680 (and BME688, the same registers) on I2C, in forced mode: our own minimal
//! driver, replacing the `bosch-bme680` crate (the crate docs say why).
//!
//! One [`Bme680::measure`]: if the sensor is not set up (first call, or after any error),
//! soft reset, chip id 0x61, variant and calibration; then one write of every setting (the
//! heater's for the last ambient temperature) ending with the trigger, so a sensor that reset
//! itself since still measures as configured; one wait for the expected duration
//! ([`MEASUREMENT_US`]), and at most [`POLLS`] reads of the data field, [`POLL_US`] apart,
//! until its `new_data` bit is set. So a sensor that never finishes costs at most
//! [`RESET_US`] + [`MEASUREMENT_US`] + ([`POLLS`] - 1) x [`POLL_US`] of waiting (211 ms, plus
//! the bus transfers) and gives [`Error::NoNewData`]; nothing waits for a mode change (the
//! soft reset leaves sleep mode, and a forced measurement returns to it by itself).
//!
//! Settings: temperature oversampling x2, humidity x1, pressure skipped (the packet has no
//! pressure; Bosch's `calc_pressure` and 10 more calibration bytes would add it), IIR filter
//! off, heater [`HEATER_C`] °C for [`HEATER_MS`] ms: about 160 ms per measurement.
//!
//! The gas reading is only taken when the sensor says it is valid and the heater reached its
//! temperature; otherwise the [`Reading`] has `gas_resistance: None` and its temperature and
//! humidity.

mod compensate;

pub use compensate::{
    gas_resistance_high, gas_wait, measurement_us, Calibration, CALIBRATION_BLOCKS, CALIBRATION_LEN,
};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// What register 0xD0 holds on a BME680 or BME688.
pub const CHIP_ID: u8 = 0x61;
/// Heater target, °C.
pub const HEATER_C: u16 = 300;
/// Heating time, ms.
pub const HEATER_MS: u16 = 150;
/// Ambient temperature assumed for the heater until a measurement gives one, °C (Bosch's).
pub const DEFAULT_AMBIENT_C: i8 = 25;
/// Oversampling register values: x2, skipped, x1.
const OS_T: u8 = 2;
const OS_P: u8 = 0;
const OS_H: u8 = 1;
/// How long a measurement takes: measuring and heating, µs (161 ms).
pub const MEASUREMENT_US: u32 = measurement_us(OS_T, OS_P, OS_H) + HEATER_MS as u32 * 1000;
/// Reads of the data field after [`MEASUREMENT_US`] before [`Error::NoNewData`] (Bosch's
/// `read_field_data`: 5 tries).
pub const POLLS: u32 = 5;
/// Wait between two of those reads, µs (Bosch's `BME68X_PERIOD_POLL`).
pub const POLL_US: u32 = 10_000;
/// Wait after the soft reset, µs (Bosch's `BME68X_PERIOD_RESET`).
pub const RESET_US: u32 = 10_000;

/// Registers (BME680 datasheet §5.2; `bme68x_defs.h`).
mod reg {
    pub const FIELD0: u8 = 0x1D;
    pub const RES_HEAT0: u8 = 0x5A;
    pub const GAS_WAIT0: u8 = 0x64;
    pub const CTRL_GAS_0: u8 = 0x70;
    pub const CTRL_GAS_1: u8 = 0x71;
    pub const CTRL_HUM: u8 = 0x72;
    pub const CTRL_MEAS: u8 = 0x74;
    pub const CONFIG: u8 = 0x75;
    pub const CHIP_ID: u8 = 0xD0;
    pub const SOFT_RESET: u8 = 0xE0;
    pub const VARIANT_ID: u8 = 0xF0;
}
/// The soft reset command.
const SOFT_RESET: u8 = 0xB6;
/// ctrl_meas: forced mode.
const MODE_FORCED: u8 = 0b01;
/// Bytes of the data field read from 0x1D (BME688's length; the BME680's gas is in the first
/// 15).
pub const FIELD_LEN: usize = 17;

/// Where the BME680 answers: its SDO pin low (0x76) or high (0x77, Adafruit-style boards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdo {
    /// 0x76.
    Low,
    /// 0x77.
    High,
}

impl Sdo {
    /// The I2C address.
    pub const fn address(self) -> u8 {
        match self {
            Sdo::Low => 0x76,
            Sdo::High => 0x77,
        }
    }
}

/// Which of the two chips with id 0x61 it is (register 0xF0): they compute gas differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// 0: BME680 ("gas low").
    Bme680,
    /// 1: BME688 ("gas high").
    Bme688,
}

/// Why a measurement failed. After any of these the next [`Bme680::measure`] sets the
/// sensor up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus transfer failed.
    Bus(E),
    /// Register 0xD0 did not hold 0x61: not a BME680 (or the bus returned garbage).
    ChipId(u8),
    /// Register 0xF0 held neither 0 nor 1.
    Variant(u8),
    /// The data field never said `new_data` within [`POLLS`] reads.
    NoNewData,
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Temperature, 0.01 °C.
    pub temperature: i16,
    /// Relative humidity, 0.001 % (0..=100_000).
    pub humidity: u32,
    /// Gas resistance, Ω; `None` when the sensor did not mark the gas measurement valid or
    /// the heater did not reach its target (temperature and humidity are still good).
    pub gas_resistance: Option<u32>,
}

impl Reading {
    /// Temperature in tenths of °C, truncated toward zero (the packet's unit).
    pub fn temperature_tenths(&self) -> i16 {
        self.temperature / 10
    }

    /// Relative humidity in hundredths of %, truncated (the packet's unit; at most 10_000).
    pub fn humidity_hundredths(&self) -> u16 {
        u16::try_from(self.humidity / 10).unwrap_or(u16::MAX)
    }
}

/// The data field's contents (0x1D.., `read_field_data`'s layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// meas_status_0 bit 7: the field holds a finished measurement.
    pub new_data: bool,
    /// 20-bit raw temperature.
    pub temperature_adc: u32,
    /// 16-bit raw humidity.
    pub humidity_adc: u16,
    /// 10-bit raw gas resistance.
    pub gas_adc: u16,
    /// Gas range (0..=15).
    pub gas_range: u8,
    /// gas_valid_r: a real gas conversion (not a dummy one).
    pub gas_valid: bool,
    /// heat_stab_r: the heater reached its target.
    pub heater_stable: bool,
}

impl Field {
    /// The field in the [`FIELD_LEN`] bytes read from 0x1D, for `variant`.
    pub fn parse(raw: &[u8; FIELD_LEN], variant: Variant) -> Field {
        let at = |i: usize| u32::from(raw.get(i).copied().unwrap_or(0));
        // The BME680's gas result is at 0x2A/0x2B, the BME688's at 0x2C/0x2D.
        let (msb, lsb) = match variant {
            Variant::Bme680 => (at(13), at(14)),
            Variant::Bme688 => (at(15), at(16)),
        };
        Field {
            new_data: at(0) & 0x80 != 0,
            temperature_adc: (at(5) << 12) | (at(6) << 4) | (at(7) >> 4),
            // 16 and 10 bits: they fit.
            humidity_adc: ((at(8) << 8) | at(9)) as u16,
            gas_adc: ((msb << 2) | (lsb >> 6)) as u16,
            gas_range: (lsb & 0x0F) as u8,
            gas_valid: lsb & 0x20 != 0,
            heater_stable: lsb & 0x10 != 0,
        }
    }

    /// The reading this field gives with `calibration`, or `None` when it holds no new
    /// measurement.
    pub fn reading(&self, calibration: &Calibration, variant: Variant) -> Option<Reading> {
        if !self.new_data {
            return None;
        }
        let (t_fine, temperature) = calibration.temperature(self.temperature_adc);
        let gas = (self.gas_valid && self.heater_stable).then(|| match variant {
            Variant::Bme680 => calibration.gas_resistance_low(self.gas_adc, self.gas_range),
            Variant::Bme688 => gas_resistance_high(self.gas_adc, self.gas_range),
        });
        Some(Reading {
            temperature,
            humidity: calibration.humidity(self.humidity_adc, t_fine),
            gas_resistance: gas,
        })
    }
}

/// A sensor that has been set up.
#[derive(Debug, Clone, Copy)]
struct Ready {
    calibration: Calibration,
    variant: Variant,
}

/// The BME680 on `bus`.
#[derive(Debug)]
pub struct Bme680<B> {
    bus: B,
    address: u8,
    ready: Option<Ready>,
    ambient_c: i8,
}

impl<B: I2c> Bme680<B> {
    /// A sensor at the address `sdo` gives. Nothing is sent until [`Bme680::measure`].
    pub fn new(bus: B, sdo: Sdo) -> Self {
        Bme680 {
            bus,
            address: sdo.address(),
            ready: None,
            ambient_c: DEFAULT_AMBIENT_C,
        }
    }

    /// Which chip answered the last set-up, `None` before one succeeded or after an error.
    pub fn variant(&self) -> Option<Variant> {
        self.ready.map(|r| r.variant)
    }

    /// Measures once (setting the sensor up first when needed). Every wait goes to `delay`
    /// and is bounded; an error makes the next call set the sensor up again.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Reading, Error<B::Error>> {
        let result = self.try_measure(delay);
        if result.is_err() {
            self.ready = None;
        }
        result
    }

    fn try_measure(&mut self, delay: &mut impl DelayNs) -> Result<Reading, Error<B::Error>> {
        let ready = match self.ready {
            Some(ready) => ready,
            None => {
                let ready = self.set_up(delay)?;
                self.ready = Some(ready);
                ready
            }
        };
        let heat = ready
            .calibration
            .heater_resistance(HEATER_C, self.ambient_c);
        // Gas measurement on with heater profile 0 (BME680: run_gas 0x10; BME688: 0x20).
        let run_gas = match ready.variant {
            Variant::Bme680 => 0x10,
            Variant::Bme688 => 0x20,
        };
        // Register address and value pairs in one write (datasheet §6.2.1), in the
        // datasheet's order (§3.2.1); ctrl_hum takes effect with the ctrl_meas write that
        // ends it and starts the measurement.
        self.write(&[
            reg::CTRL_HUM,
            OS_H,
            reg::CONFIG,
            0, // IIR filter off
            reg::GAS_WAIT0,
            gas_wait(HEATER_MS),
            reg::RES_HEAT0,
            heat,
            reg::CTRL_GAS_0,
            0, // heater on
            reg::CTRL_GAS_1,
            run_gas,
            reg::CTRL_MEAS,
            (OS_T << 5) | (OS_P << 2) | MODE_FORCED,
        ])?;
        delay.delay_us(MEASUREMENT_US);
        for poll in 0..POLLS {
            if poll > 0 {
                delay.delay_us(POLL_US);
            }
            let mut raw = [0u8; FIELD_LEN];
            self.read(reg::FIELD0, &mut raw)?;
            let field = Field::parse(&raw, ready.variant);
            if let Some(reading) = field.reading(&ready.calibration, ready.variant) {
                // Whole °C, within i8 after the clamp.
                self.ambient_c = (reading.temperature / 100).clamp(-128, 127) as i8;
                return Ok(reading);
            }
        }
        Err(Error::NoNewData)
    }

    /// Soft reset (which leaves sleep mode), identity, calibration.
    fn set_up(&mut self, delay: &mut impl DelayNs) -> Result<Ready, Error<B::Error>> {
        self.write(&[reg::SOFT_RESET, SOFT_RESET])?;
        delay.delay_us(RESET_US);
        let mut id = [0u8];
        self.read(reg::CHIP_ID, &mut id)?;
        match id {
            [CHIP_ID] => {}
            [other] => return Err(Error::ChipId(other)),
        }
        self.read(reg::VARIANT_ID, &mut id)?;
        let variant = match id {
            [0] => Variant::Bme680,
            [1] => Variant::Bme688,
            [other] => return Err(Error::Variant(other)),
        };
        let mut bytes = [0u8; CALIBRATION_LEN];
        let mut rest = bytes.as_mut_slice();
        for (register, len) in CALIBRATION_BLOCKS {
            let (block, tail) = rest.split_at_mut(len.min(rest.len()));
            self.read(register, block)?;
            rest = tail;
        }
        Ok(Ready {
            calibration: Calibration::from_registers(&bytes),
            variant,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        self.bus.write(self.address, bytes).map_err(Error::Bus)
    }

    fn read(&mut self, register: u8, buffer: &mut [u8]) -> Result<(), Error<B::Error>> {
        self.bus
            .write_read(self.address, &[register], buffer)
            .map_err(Error::Bus)
    }
}

#[cfg(test)]
mod tests;
