//! The BME680's calibration and Bosch's compensation formulas, integer version: BME68x
//! Sensor API v4.4.8 (`bme68x.c`, built with `BME68X_DO_NOT_USE_FPU`): `get_calib_data`,
//! `calc_temperature`, `calc_humidity`, `calc_gas_resistance_low`/`_high`, `calc_res_heat`
//! and `calc_gas_wait`, the same arithmetic in the same order.
//!
//! The C code computes in 32-bit integers where realistic values fit; here every intermediate
//! is an `i64`, where any calibration and any raw value fit (the bounds are written beside
//! each formula), so no input can overflow; results are clamped into their types where the
//! C code would truncate, and no division is by zero. The tests hold vectors from Bosch's own
//! code and from other drivers' published tests.

/// Calibration bytes: 23 from 0x8A, 14 from 0xE1, 5 from 0x00, in that order.
pub const CALIBRATION_LEN: usize = 42;
/// The three blocks of [`CALIBRATION_LEN`]: (first register, length).
pub const CALIBRATION_BLOCKS: [(u8, usize); 3] = [(0x8A, 23), (0xE1, 14), (0x00, 5)];

/// The sensor's calibration (the coefficients temperature, humidity and gas need; pressure is
/// not measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// Temperature.
    pub par_t1: u16,
    /// Temperature.
    pub par_t2: i16,
    /// Temperature.
    pub par_t3: i8,
    /// Humidity (12 bits).
    pub par_h1: u16,
    /// Humidity (12 bits).
    pub par_h2: u16,
    /// Humidity.
    pub par_h3: i8,
    /// Humidity.
    pub par_h4: i8,
    /// Humidity.
    pub par_h5: i8,
    /// Humidity.
    pub par_h6: u8,
    /// Humidity.
    pub par_h7: i8,
    /// Gas heater.
    pub par_gh1: i8,
    /// Gas heater.
    pub par_gh2: i16,
    /// Gas heater.
    pub par_gh3: i8,
    /// Heater resistance range (0..=3).
    pub res_heat_range: u8,
    /// Heater resistance correction.
    pub res_heat_val: i8,
    /// Gas range switching error (-8..=7).
    pub range_sw_err: i8,
}

impl Calibration {
    /// The calibration in the [`CALIBRATION_BLOCKS`]' bytes (`get_calib_data`'s indices).
    pub fn from_registers(c: &[u8; CALIBRATION_LEN]) -> Calibration {
        let at = |i: usize| c.get(i).copied().unwrap_or(0);
        let word = |msb: usize, lsb: usize| u16::from_be_bytes([at(msb), at(lsb)]);
        let signed = |i: usize| at(i) as i8;
        Calibration {
            par_t1: word(32, 31),
            par_t2: word(1, 0) as i16,
            par_t3: signed(2),
            par_h1: (u16::from(at(25)) << 4) | u16::from(at(24) & 0x0F),
            par_h2: (u16::from(at(23)) << 4) | u16::from(at(24) >> 4),
            par_h3: signed(26),
            par_h4: signed(27),
            par_h5: signed(28),
            par_h6: at(29),
            par_h7: signed(30),
            par_gh1: signed(35),
            par_gh2: word(34, 33) as i16,
            par_gh3: signed(36),
            res_heat_range: (at(39) & 0x30) / 16,
            res_heat_val: signed(37),
            range_sw_err: ((at(41) & 0xF0) as i8) / 16,
        }
    }

    /// `calc_temperature`: (t_fine, temperature in 0.01 °C) for a 20-bit raw value.
    pub fn temperature(&self, adc: u32) -> (i32, i16) {
        let adc = i64::from(adc & 0xF_FFFF);
        // |var1| < 2^17, |var2| < 2^22, var3 < 2^21: t_fine within ±2^23.
        let var1 = (adc >> 3) - (i64::from(self.par_t1) << 1);
        let var2 = (var1 * i64::from(self.par_t2)) >> 11;
        let var3 = ((var1 >> 1) * (var1 >> 1)) >> 12;
        let var3 = (var3 * (i64::from(self.par_t3) << 4)) >> 14;
        let t_fine = var2 + var3;
        let temperature = ((t_fine * 5) + 128) >> 8;
        (clamp_i32(t_fine), clamp_i16(temperature))
    }

    /// `calc_humidity`: relative humidity in 0.001 % (0..=100_000) for a raw value and the
    /// temperature's t_fine.
    pub fn humidity(&self, adc: u16, t_fine: i32) -> u32 {
        // |temp_scaled| < 2^16, |var1| < 2^18, |var2| < 2^21, |var3| < 2^39, |var6| < 2^51.
        let temp_scaled = ((i64::from(t_fine) * 5) + 128) >> 8;
        let var1 = i64::from(adc)
            - i64::from(self.par_h1) * 16
            - (((temp_scaled * i64::from(self.par_h3)) / 100) >> 1);
        let var2 = (i64::from(self.par_h2)
            * (((temp_scaled * i64::from(self.par_h4)) / 100)
                + (((temp_scaled * ((temp_scaled * i64::from(self.par_h5)) / 100)) >> 6) / 100)
                + (1 << 14)))
            >> 10;
        let var3 = var1 * var2;
        let var4 = i64::from(self.par_h6) << 7;
        let var4 = (var4 + ((temp_scaled * i64::from(self.par_h7)) / 100)) >> 4;
        let var5 = ((var3 >> 14) * (var3 >> 14)) >> 10;
        let var6 = (var4 * var5) >> 1;
        let humidity = (((var3 + var6) >> 10) * 1000) >> 12;
        // In 0..=100_000 after the clamp.
        humidity.clamp(0, 100_000) as u32
    }

    /// `calc_gas_resistance_low` (BME680): ohms for a 10-bit raw value and its range (0..=15).
    pub fn gas_resistance_low(&self, adc: u16, range: u8) -> u32 {
        const K1: [i64; 16] = [
            2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2126008810, 2147483647,
            2130303777, 2147483647, 2147483647, 2143188679, 2136746228, 2147483647, 2126008810,
            2147483647, 2147483647,
        ];
        const K2: [i64; 16] = [
            4096000000, 2048000000, 1024000000, 512000000, 255744255, 127110228, 64000000,
            32258064, 16016016, 8000000, 4000000, 2000000, 1000000, 500000, 250000, 125000,
        ];
        let range = usize::from(range & 0x0F);
        let (Some(&k1), Some(&k2)) = (K1.get(range), K2.get(range)) else {
            return 0; // range < 16: never
        };
        // var1 in [2^25, 2^26), var3 < 2^58; var2 >= var1 - 2^24 > 0.
        let var1 = ((1340 + 5 * i64::from(self.range_sw_err)) * k1) >> 16;
        let var2 = (i64::from(adc & 0x3FF) << 15) - 16_777_216 + var1;
        let var3 = (k2 * var1) >> 9;
        let ohms = (var3 + (var2 >> 1)).checked_div(var2).unwrap_or(0);
        u32::try_from(ohms).unwrap_or(u32::MAX)
    }

    /// `calc_res_heat`: the heater resistance register for `target_c` (°C, 400 at most) at
    /// `ambient_c`.
    pub fn heater_resistance(&self, target_c: u16, ambient_c: i8) -> u8 {
        let target = i64::from(target_c.min(400));
        // |var2| < 2^30; var5 >= 65536 - 131 * 128 > 0.
        let var1 = ((i64::from(ambient_c) * i64::from(self.par_gh3)) / 1000) * 256;
        let var2 = (i64::from(self.par_gh1) + 784)
            * ((((i64::from(self.par_gh2) + 154_009) * target * 5) / 100 + 3_276_800) / 10);
        let var3 = var1 + (var2 / 2);
        let var4 = var3 / (i64::from(self.res_heat_range) + 4);
        let var5 = 131 * i64::from(self.res_heat_val) + 65_536;
        let x100 = (var4.checked_div(var5).unwrap_or(0) - 250) * 34;
        // In 0..=255 after the clamp.
        ((x100 + 50) / 100).clamp(0, 255) as u8
    }
}

/// `calc_gas_resistance_high` (BME688): ohms for a 10-bit raw value and its range (0..=15).
pub fn gas_resistance_high(adc: u16, range: u8) -> u32 {
    let var1 = 262_144u32 >> (range & 0x0F);
    // var2 in [2560, 5629]: never 0.
    let var2 = 4096 + (i32::from(adc & 0x3FF) - 512) * 3;
    let Ok(var2) = u32::try_from(var2) else {
        return 0;
    };
    (10_000 * var1)
        .checked_div(var2)
        .unwrap_or(0)
        .saturating_mul(100)
}

/// `calc_gas_wait`: the gas_wait register for a heating time of `ms` (0xFF, 4032 ms, at most).
pub fn gas_wait(ms: u16) -> u8 {
    if ms >= 0xFC0 {
        return 0xFF;
    }
    let (mut value, mut factor) = (ms, 0u8);
    while value > 0x3F {
        value /= 4;
        factor += 1; // at most 3: 0xFBF / 4^3 < 0x40
    }
    // value <= 0x3F and factor <= 3: at most 0xFF.
    (value as u8).saturating_add(factor.saturating_mul(64))
}

/// `bme68x_get_meas_dur` for forced mode: how long a measurement takes with these
/// oversampling register values (0 = skipped .. 5 = x16), heating not included, µs.
pub const fn measurement_us(os_t: u8, os_p: u8, os_h: u8) -> u32 {
    /// Cycles of an oversampling register value (`os_to_meas_cycles`).
    const fn cycles(os: u8) -> u32 {
        match os {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => 4,
            4 => 8,
            _ => 16,
        }
    }
    let cycles = cycles(os_t) + cycles(os_p) + cycles(os_h);
    // TPH measurement, switching (4 x 477 µs), gas measurement (5 x 477 µs), wake-up (1 ms).
    cycles * 1963 + 477 * 4 + 477 * 5 + 1000
}

/// A real BME680's calibration registers (from the register dump in bosch-bme680 1.0.4's
/// tests, `src/constants.rs`), in [`CALIBRATION_BLOCKS`] order.
#[cfg(test)]
pub(crate) const REAL_CALIBRATION: [u8; CALIBRATION_LEN] = [
    40, 104, 3, 240, 63, 146, 180, 215, 88, 0, 237, 40, 204, 254, 62, 30, 0, 0, 216, 235, 224, 249,
    30, // 0x8A
    61, 209, 55, 0, 45, 20, 120, 156, 86, 101, 124, 220, 187, 18, // 0xE1
    30, 170, 22, 206, 3, // 0x00
];

fn clamp_i32(x: i64) -> i32 {
    // In i32's range after the clamp.
    x.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

fn clamp_i16(x: i64) -> i16 {
    // In i16's range after the clamp.
    x.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::REAL_CALIBRATION as REAL;

    /// Bytes with many signed coefficients negative (bosch-bme680 1.0.4's test calibration).
    const SIGNED: [u8; CALIBRATION_LEN] = [
        179, 193, 176, 188, 21, 51, 11, 29, 222, 179, 184, 1, 230, 47, 209, 22, 154, 34, 237, 70,
        148, 134, 44, 13, 204, 61, 206, 69, 18, 43, 124, 164, 92, 132, 19, 63, 29, 28, 201, 140,
        70, 24,
    ];

    /// pimoroni/bme680-python's test calibration (`library/tests/conftest.py`).
    fn pimoroni() -> Calibration {
        Calibration {
            par_t1: 26041,
            par_t2: 26469,
            par_t3: 3,
            par_h1: 676,
            par_h2: 1029,
            par_h3: 0,
            par_h4: 45,
            par_h5: 20,
            par_h6: 120,
            par_h7: -100,
            par_gh1: -30,
            par_gh2: -24754,
            par_gh3: 18,
            res_heat_range: 1,
            res_heat_val: 48,
            range_sw_err: 0,
        }
    }

    #[test]
    fn calibration_is_read_as_bosch_reads_it() {
        // Expected: Bosch's get_calib_data (bme68x.c v4.4.8) on the same bytes.
        let c = Calibration::from_registers(&REAL);
        let expected = Calibration {
            par_t1: 25942,
            par_t2: 26664,
            par_t3: 3,
            par_h1: 881,
            par_h2: 989,
            par_h3: 0,
            par_h4: 45,
            par_h5: 20,
            par_h6: 120,
            par_h7: -100,
            par_gh1: -69,
            par_gh2: -9092,
            par_gh3: 18,
            res_heat_range: 1,
            res_heat_val: 30,
            range_sw_err: 0,
        };
        assert_eq!(c, expected);
        let c = Calibration::from_registers(&SIGNED);
        let expected = Calibration {
            par_t1: 23716,
            par_t2: -15949,
            par_t3: -80,
            par_h1: 988,
            par_h2: 220,
            par_h3: -50,
            par_h4: 69,
            par_h5: 18,
            par_h6: 43,
            par_h7: 124,
            par_gh1: 63,
            par_gh2: 4996,
            par_gh3: 29,
            res_heat_range: 0,
            res_heat_val: 28,
            range_sw_err: 1,
        };
        assert_eq!(c, expected);
        // range_sw_err is a signed nibble: 0xF0 -> -1, 0x80 -> -8.
        let mut bytes = REAL;
        bytes[41] = 0xF3;
        assert_eq!(Calibration::from_registers(&bytes).range_sw_err, -1);
        bytes[41] = 0x80;
        assert_eq!(Calibration::from_registers(&bytes).range_sw_err, -8);
    }

    #[test]
    fn compensation_matches_pimoronis_published_vectors() {
        // library/tests/test_compensation.py: 2669, t_fine 136667, 42402, 12946860.
        let c = pimoroni();
        assert_eq!(c.temperature(501240), (136667, 2669));
        assert_eq!(c.humidity(19019, 136667), 42402);
        assert_eq!(c.gas_resistance_low(0, 0), 12946860);
    }

    #[test]
    fn compensation_matches_boschs_code_on_a_real_calibration() {
        // Expected: bme68x.c v4.4.8, integer build, on REAL's calibration. Its float build
        // gives 21.2959 °C and 59.447 %RH for the first line (bosch-bme680's test comments
        // list the same float temperatures).
        let c = Calibration::from_registers(&REAL);
        let cases = [
            (482062, 109024, 2129, 25537, 59424),
            (482452, 109662, 2142, 25531, 59416),
            (482060, 109024, 2129, 25545, 59477),
            (482453, 109662, 2142, 25535, 59442),
            (482058, 109024, 2129, 25549, 59502),
        ];
        for (t_adc, t_fine, centi, h_adc, milli) in cases {
            assert_eq!(c.temperature(t_adc), (t_fine, centi), "T {t_adc}");
            assert_eq!(c.humidity(h_adc, t_fine), milli, "H {h_adc}");
        }
        assert_eq!(c.heater_resistance(300, 25), 106);
        assert_eq!(c.gas_resistance_low(302, 8), 37095);
    }

    #[test]
    fn compensation_matches_boschs_code_with_negative_coefficients() {
        // Expected: bme68x.c v4.4.8, integer build, on SIGNED's calibration.
        let c = Calibration::from_registers(&SIGNED);
        let cases = [
            (482062, -100661, -1966, 7234, 40284),
            (400000, -20031, -391, 8103, 44986),
            (600000, -218313, -4264, 6193, 34890),
            (0, 358653, 7005, 14478, 83564),
            (1048575, -684704, -13373, 3901, 24520),
        ];
        for (t_adc, t_fine, centi, h_25537, h_max) in cases {
            assert_eq!(c.temperature(t_adc), (t_fine, centi), "T {t_adc}");
            assert_eq!(c.humidity(25537, t_fine), h_25537, "H at {t_adc}");
            assert_eq!(c.humidity(0, t_fine), 0, "H 0 at {t_adc}");
            assert_eq!(c.humidity(65535, t_fine), h_max, "H max at {t_adc}");
        }
        let gas = [
            (0, 0, 12917167, 102400000),
            (195, 9, 20443, 162700),
            (512, 5, 248262, 2000000),
            (1023, 15, 177, 1400),
            (300, 7, 74906, 591900),
        ];
        for (adc, range, low, high) in gas {
            assert_eq!(c.gas_resistance_low(adc, range), low, "low {adc} {range}");
            assert_eq!(gas_resistance_high(adc, range), high, "high {adc} {range}");
        }
        assert_eq!(c.heater_resistance(300, 25), 209);
        assert_eq!(c.heater_resistance(320, 20), 218);
    }

    #[test]
    fn compensation_agrees_with_an_independent_float_driver() {
        // elixir-sensors/bmp280's BME680 test (float): 19.3113 °C, 25.2 %RH, 20467.26 Ω.
        let c = Calibration {
            par_t1: 26195,
            par_t2: 26290,
            par_t3: 3,
            par_h1: 717,
            par_h2: 1021,
            par_h3: 0,
            par_h4: 45,
            par_h5: 20,
            par_h6: 120,
            par_h7: -100,
            par_gh1: -30,
            par_gh2: -5969,
            par_gh3: 18,
            res_heat_range: 0,
            res_heat_val: 0,
            range_sw_err: 0,
        };
        let (t_fine, centi) = c.temperature(480_732);
        assert_eq!(centi, 1931);
        assert_eq!(c.humidity(16820, t_fine), 25200);
        assert_eq!(c.gas_resistance_low(195, 9), 20467);
    }

    #[test]
    fn heater_registers_follow_bosch() {
        assert_eq!(gas_wait(150), 0x65);
        assert_eq!(gas_wait(100), 0x59);
        assert_eq!(gas_wait(63), 63);
        assert_eq!(gas_wait(0xFBF), 0xFE);
        assert_eq!(gas_wait(0xFC0), 0xFF);
        assert_eq!(gas_wait(u16::MAX), 0xFF);
        assert_eq!(pimoroni().heater_resistance(300, 25), 101);
        // Above 400 °C the target is 400 °C.
        let c = Calibration::from_registers(&REAL);
        assert_eq!(c.heater_resistance(1000, 25), c.heater_resistance(400, 25));
        // T x2, P skipped, H x1: 3 cycles.
        assert_eq!(measurement_us(2, 0, 1), 3 * 1963 + 477 * 9 + 1000);
        assert_eq!(measurement_us(5, 5, 5), 48 * 1963 + 477 * 9 + 1000);
        assert_eq!(measurement_us(7, 7, 7), measurement_us(5, 5, 5));
    }

    #[test]
    fn no_calibration_and_no_raw_value_can_overflow_or_leave_the_range() {
        // Debug builds check every operation for overflow: a panic here is a bug.
        let raw_t = [0, 1, 0x7_FFFF, 0x8_0000, 0xF_FFFF, u32::MAX];
        let raw_h = [0, 1, 0x8000, 0xFFFF];
        let raw_g = [0, 1, 511, 512, 1023, u16::MAX];
        let mut fills = [[0u8; CALIBRATION_LEN]; 5];
        fills[1] = [0xFF; CALIBRATION_LEN];
        fills[2] = [0x80; CALIBRATION_LEN];
        fills[3] = [0x7F; CALIBRATION_LEN];
        for (i, b) in fills[4].iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0x80 } else { 0x7F };
        }
        for bytes in fills.iter().chain([&REAL, &SIGNED]) {
            let c = Calibration::from_registers(bytes);
            for t in raw_t {
                let (t_fine, _) = c.temperature(t);
                for h in raw_h {
                    assert!(c.humidity(h, t_fine) <= 100_000);
                }
            }
            for g in raw_g {
                for range in 0..=255u8 {
                    c.gas_resistance_low(g, range);
                    gas_resistance_high(g, range);
                }
            }
            for target in [0, 200, 400, u16::MAX] {
                for ambient in [i8::MIN, 0, 25, i8::MAX] {
                    c.heater_resistance(target, ambient);
                }
            }
        }
    }
}
