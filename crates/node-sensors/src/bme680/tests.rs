//! The driver against a scripted fake bus (`embedded-hal-mock`: the expected transactions in
//! order, the sensor's answers, injected errors; `done()` checks that nothing more was sent).

use super::compensate::REAL_CALIBRATION;
use super::*;
use crate::CountingDelay;
use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use std::vec;
use std::vec::Vec;

const ADDRESS: u8 = 0x77;

/// The set-up's transactions for a chip of `variant` with `calibration`.
fn set_up(variant: u8, calibration: &[u8; 42]) -> Vec<Transaction> {
    vec![
        Transaction::write(ADDRESS, vec![0xE0, 0xB6]),
        Transaction::write_read(ADDRESS, vec![0xD0], vec![0x61]),
        Transaction::write_read(ADDRESS, vec![0xF0], vec![variant]),
        Transaction::write_read(ADDRESS, vec![0x8A], calibration[..23].to_vec()),
        Transaction::write_read(ADDRESS, vec![0xE1], calibration[23..37].to_vec()),
        Transaction::write_read(ADDRESS, vec![0x00], calibration[37..].to_vec()),
    ]
}

/// The settings and the trigger of a BME680: humidity x1, filter off, 150 ms (0x65) heating
/// to `res_heat`, heater on, gas on with profile 0, temperature x2, pressure skipped, forced.
fn trigger(res_heat: u8) -> Transaction {
    trigger_of(0x10, res_heat)
}

fn trigger_of(run_gas: u8, res_heat: u8) -> Transaction {
    Transaction::write(
        ADDRESS,
        vec![
            0x72, 0x01, 0x75, 0x00, 0x64, 0x65, 0x5A, res_heat, 0x70, 0x00, 0x71, run_gas, 0x74,
            0x41,
        ],
    )
}

fn field(bytes: [u8; 17]) -> Transaction {
    Transaction::write_read(ADDRESS, vec![0x1D], bytes.to_vec())
}

/// A finished BME680 measurement as the sensor gives it: raw temperature 482062 (0x75B0E),
/// humidity 25537 (0x63C1), gas 302 (0x4B, 0b10) in range 8, with `gas_flags` (0x20 valid,
/// 0x10 heater stable).
fn measured(gas_flags: u8) -> [u8; 17] {
    [
        0x80,
        0x00,
        0x80,
        0x00,
        0x00,
        0x75,
        0xB0,
        0xE0,
        0x63,
        0xC1,
        0x80,
        0x00,
        0x00,
        0x4B,
        0x80 | gas_flags | 0x08,
        0x00,
        0x00,
    ]
}

/// The field right after a reset (from the register dump): no new data, reset values.
const AFTER_RESET: [u8; 17] = [
    0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x04, 0x00,
    0x04,
];

#[test]
fn sets_up_measures_and_compensates_a_real_format_field() {
    // Expected values: Bosch's bme68x.c v4.4.8 (integer build) on the same bytes.
    let mut script = set_up(0, &REAL_CALIBRATION);
    script.extend([trigger(106), field(measured(0x30))]);
    // The second measurement needs no set-up; the heater follows the measured 21 °C.
    script.extend([trigger(106), field(measured(0x30))]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    let expected = Reading {
        temperature: 2129,
        humidity: 59424,
        gas_resistance: Some(37095),
    };
    assert_eq!(sensor.measure(&mut delay), Ok(expected));
    assert_eq!(sensor.variant(), Some(Variant::Bme680));
    assert_eq!(delay.total_ns, u64::from(RESET_US + MEASUREMENT_US) * 1000);
    assert_eq!(sensor.measure(&mut delay), Ok(expected));
    bus.done();
    assert_eq!(expected.temperature_tenths(), 212);
    assert_eq!(expected.humidity_hundredths(), 5942);
}

#[test]
fn a_chip_that_is_not_a_bme680_is_refused_and_tried_again_next_time() {
    let mut script = vec![
        Transaction::write(ADDRESS, vec![0xE0, 0xB6]),
        // 0x60: a BME280.
        Transaction::write_read(ADDRESS, vec![0xD0], vec![0x60]),
    ];
    script.extend(set_up(0, &REAL_CALIBRATION));
    script.extend([trigger(106), field(measured(0x30))]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    assert_eq!(sensor.measure(&mut delay), Err(Error::ChipId(0x60)));
    assert_eq!(sensor.variant(), None);
    assert!(sensor.measure(&mut delay).is_ok());
    bus.done();
}

#[test]
fn an_unknown_variant_is_an_error_not_a_panic() {
    let script = [
        Transaction::write(ADDRESS, vec![0xE0, 0xB6]),
        Transaction::write_read(ADDRESS, vec![0xD0], vec![0x61]),
        Transaction::write_read(ADDRESS, vec![0xF0], vec![0xFF]),
    ];
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    assert_eq!(
        sensor.measure(&mut CountingDelay::default()),
        Err(Error::Variant(0xFF))
    );
    bus.done();
}

#[test]
fn a_sensor_that_never_finishes_is_given_up_after_a_bounded_wait() {
    let mut script = set_up(0, &REAL_CALIBRATION);
    script.push(trigger(106));
    for _ in 0..POLLS {
        script.push(field(AFTER_RESET));
    }
    // The next measurement starts with a fresh set-up.
    script.extend(set_up(0, &REAL_CALIBRATION));
    script.extend([trigger(106), field(measured(0x30))]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    assert_eq!(sensor.measure(&mut delay), Err(Error::NoNewData));
    let waited = u64::from(RESET_US + MEASUREMENT_US + (POLLS - 1) * POLL_US) * 1000;
    assert_eq!(delay.total_ns, waited);
    assert!(waited <= 250_000_000, "at most 250 ms: {waited} ns");
    assert!(sensor.measure(&mut delay).is_ok());
    bus.done();
}

#[test]
fn a_field_that_becomes_ready_on_a_later_poll_is_read() {
    let mut script = set_up(0, &REAL_CALIBRATION);
    script.extend([
        trigger(106),
        field(AFTER_RESET),
        field(AFTER_RESET),
        field(measured(0x30)),
    ]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    assert_eq!(sensor.measure(&mut delay).unwrap().temperature, 2129);
    assert_eq!(
        delay.total_ns,
        u64::from(RESET_US + MEASUREMENT_US + 2 * POLL_US) * 1000
    );
    bus.done();
}

#[test]
fn a_missing_gas_reading_keeps_temperature_and_humidity() {
    let mut script = set_up(0, &REAL_CALIBRATION);
    // Gas not valid (a dummy conversion), then heater not stable, then neither.
    for flags in [0x10, 0x20, 0x00] {
        script.extend([trigger(106), field(measured(flags))]);
    }
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    for _ in 0..3 {
        assert_eq!(
            sensor.measure(&mut delay),
            Ok(Reading {
                temperature: 2129,
                humidity: 59424,
                gas_resistance: None,
            })
        );
    }
    bus.done();
}

#[test]
fn a_bus_error_makes_the_next_measurement_set_up_again() {
    let mut script = set_up(0, &REAL_CALIBRATION);
    script.push(trigger(106).with_error(ErrorKind::Other));
    script.extend(set_up(0, &REAL_CALIBRATION));
    script.extend([
        trigger(106),
        field(measured(0x30)).with_error(ErrorKind::Bus),
    ]);
    script.extend(set_up(0, &REAL_CALIBRATION));
    script.extend([trigger(106), field(measured(0x30))]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let mut delay = CountingDelay::default();
    assert_eq!(
        sensor.measure(&mut delay),
        Err(Error::Bus(ErrorKind::Other))
    );
    assert_eq!(sensor.measure(&mut delay), Err(Error::Bus(ErrorKind::Bus)));
    assert!(sensor.measure(&mut delay).is_ok());
    bus.done();
}

#[test]
fn a_missing_sensor_is_a_bus_error_every_time() {
    let nack = ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address);
    let script = [
        Transaction::write(0x76, vec![0xE0, 0xB6]).with_error(nack),
        Transaction::write(0x76, vec![0xE0, 0xB6]).with_error(nack),
    ];
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::Low);
    let mut delay = CountingDelay::default();
    assert_eq!(sensor.measure(&mut delay), Err(Error::Bus(nack)));
    assert_eq!(sensor.measure(&mut delay), Err(Error::Bus(nack)));
    assert_eq!(delay.total_ns, 0);
    bus.done();
}

#[test]
fn a_bme688_uses_its_own_gas_registers_and_formula() {
    let mut script = set_up(1, &REAL_CALIBRATION);
    // The BME680 gas bytes say "not valid"; the BME688's (0x2C/0x2D) hold 512, range 5.
    let mut bytes = measured(0x00);
    bytes[15] = 0x80;
    bytes[16] = 0x30 | 0x05; // adc low bits 0, valid, stable, range 5
    script.extend([trigger_of(0x20, 106), field(bytes)]);
    let mut bus = Mock::new(&script);
    let mut sensor = Bme680::new(bus.clone(), Sdo::High);
    let reading = sensor.measure(&mut CountingDelay::default()).unwrap();
    assert_eq!(sensor.variant(), Some(Variant::Bme688));
    assert_eq!(reading.gas_resistance, Some(2_000_000));
    bus.done();
}

#[test]
fn fields_parse_by_the_register_layout() {
    let f = Field::parse(&measured(0x30), Variant::Bme680);
    assert_eq!(
        f,
        Field {
            new_data: true,
            temperature_adc: 482062,
            humidity_adc: 25537,
            gas_adc: 302,
            gas_range: 8,
            gas_valid: true,
            heater_stable: true,
        }
    );
    let f = Field::parse(&AFTER_RESET, Variant::Bme680);
    assert!(!f.new_data);
    assert_eq!((f.temperature_adc, f.humidity_adc), (0x80000, 0x8000));
    let calibration = Calibration::from_registers(&REAL_CALIBRATION);
    assert_eq!(f.reading(&calibration, Variant::Bme680), None);
    // All ones: the largest raw values, still a reading, never a panic.
    let f = Field::parse(&[0xFF; 17], Variant::Bme688);
    assert_eq!(
        (f.temperature_adc, f.gas_adc, f.gas_range),
        (0xFFFFF, 1023, 15)
    );
    assert!(f.reading(&calibration, Variant::Bme688).is_some());
}

#[test]
fn packet_units_truncate_toward_zero() {
    let reading = |temperature, humidity| Reading {
        temperature,
        humidity,
        gas_resistance: None,
    };
    assert_eq!(reading(-1966, 0).temperature_tenths(), -196);
    assert_eq!(reading(-9, 0).temperature_tenths(), 0);
    assert_eq!(reading(2129, 0).temperature_tenths(), 212);
    assert_eq!(reading(0, 100_000).humidity_hundredths(), 10_000);
    assert_eq!(reading(0, 9).humidity_hundredths(), 0);
}

#[test]
fn the_addresses_follow_sdo() {
    assert_eq!(Sdo::Low.address(), 0x76);
    assert_eq!(Sdo::High.address(), 0x77);
}
