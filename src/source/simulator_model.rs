//! Pure, deterministic model of the field hardware (remote BME680 nodes, the
//! Node 2 receiver with its local SHT3x, and the LoRa link between them) that
//! produces lines byte-for-byte in the Node 2 firmware's JSON format. This
//! module owns the physics (slow per-node climate drift), the link behaviour
//! (CRC errors, lost frames, reboots) and the exact line formatting. It does no
//! I/O, has no async and reads no clock: every call to [`SimModel::step`]
//! advances model time by one interval, and the caller decides the pacing. The
//! same [`SimConfig`] always yields the same sequence of lines on every
//! platform (only IEEE basic arithmetic and `sqrt` are used, no libm
//! transcendentals), using a small seeded PRNG defined here.
//!
//! Line format (keys in this order, no spaces):
//! `{"ts":10500,"id":"N2","n1":{"t":27.5,"h":53.8,"g":84461},"n2":{"t":26.5,"h":48.4},"sig":{"rssi":-34,"snr":13},"sts":{"rx":1,"err":0}}`
//!
//! Multiple remote nodes: remote node `i` (0-based) is reported as `n1` for
//! `i == 0` and `n{i + 2}` otherwise (`n2` is Node 2's local sensor), and node
//! objects appear in ascending number order (`n1`, `n2`, `n3`, ...). Every
//! interval each remote node sends one frame, and each frame independently is
//! received OK, fails its CRC (`err` += 1, object omitted) or is lost
//! (no trace). The line is emitted when at least one frame was received;
//! `rx` counts frames received OK since boot and `err` CRC failures since
//! boot, so with one remote node `rx` equals the number of lines emitted since
//! boot. `sig` describes the link as a whole (one value per line).

use std::fmt::Write as _;

/// Granularity of the firmware's `ts` field.
const TS_QUANTUM_MS: u64 = 500;
/// Length of the simulated daily temperature cycle.
const DAY_MS: u64 = 86_400_000;

/// Temperature range the sensors report, °C.
const TEMP_RANGE: (f64, f64) = (20.0, 30.0);
/// Relative humidity range the sensors report, %RH.
const HUM_RANGE: (f64, f64) = (30.0, 70.0);
/// Gas resistance range the BME680 reports, Ω.
const GAS_RANGE: (f64, f64) = (50_000.0, 120_000.0);

/// Random-walk kinetics: (relaxation time in ms, stationary standard deviation).
const TEMP_WALK: (f64, f64) = (2.0 * 3_600_000.0, 0.5);
const HUM_WALK: (f64, f64) = (3.0 * 3_600_000.0, 2.0);
const GAS_WALK: (f64, f64) = (6.0 * 3_600_000.0, 6_000.0);
const LINK_WALK: (f64, f64) = (30.0 * 60_000.0, 1.2);

/// How strongly humidity follows temperature (%RH per °C, anti-correlated).
const HUM_PER_DEGREE: f64 = -2.5;
/// How strongly gas resistance follows humidity (Ω per %RH).
const GAS_PER_HUM: f64 = -600.0;

/// Measurement noise (standard deviation) of a single reading.
const TEMP_NOISE: f64 = 0.05;
const HUM_NOISE: f64 = 0.2;
const GAS_NOISE: f64 = 300.0;

/// Link quality: mean RSSI (dBm), per-packet noise, clamp range.
const RSSI_MEAN: f64 = -35.0;
const RSSI_NOISE: f64 = 1.0;
const RSSI_RANGE: (i64, i64) = (-120, -20);
/// Link quality: mean SNR (dB), per-packet noise, clamp range.
const SNR_MEAN: f64 = 12.0;
const SNR_NOISE: f64 = 0.8;
const SNR_RANGE: (i64, i64) = (-20, 20);

/// Configuration of the simulated hardware.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimConfig {
    /// Seed of the model; the same config always produces the same lines.
    pub seed: u64,
    /// Number of remote nodes (`0` is treated as `1`). Memory and per-step
    /// work are linear in this number.
    pub remote_nodes: u32,
    /// Model time per [`SimModel::step`], in ms. Rounded to the nearest
    /// multiple of 500 (minimum 500) so `ts` stays on the firmware's grid.
    pub interval_ms: u64,
    /// Probability that a remote frame fails its CRC (clamped to [0, 1]).
    pub crc_error_rate: f64,
    /// Probability that a remote frame is lost without trace (clamped to [0, 1]).
    pub loss_rate: f64,
    /// Probability per step that Node 2 reboots before the step's packet
    /// (clamped to [0, 1]).
    pub reboot_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            remote_nodes: 1,
            interval_ms: 10_000,
            crc_error_rate: 0.02,
            loss_rate: 0.01,
            reboot_rate: 0.002,
        }
    }
}

/// Deterministic model of the field hardware; see the module docs for the
/// emitted format and link semantics.
#[derive(Debug, Clone)]
pub(crate) struct SimModel {
    interval_ms: u64,
    crc_error_rate: f64,
    loss_rate: f64,
    reboot_rate: f64,
    rng: Rng,
    kinetics: Kinetics,
    remotes: Vec<Climate>,
    local: Climate,
    link_walk: f64,
    /// Time of day of the model, ms in `[0, DAY_MS)`; never reset.
    day_ms: u64,
    /// Small offset (500..=1500 ms) of this boot: `ts = offset + n * interval` at tick `n`.
    boot_offset_ms: u64,
    ticks_since_boot: u64,
    lines_since_boot: u64,
    rx: u64,
    err: u64,
}

impl SimModel {
    /// Creates a model in the state right after Node 2 has booted.
    pub(crate) fn new(cfg: SimConfig) -> Self {
        let quanta = cfg.interval_ms.saturating_add(TS_QUANTUM_MS / 2) / TS_QUANTUM_MS;
        let interval_ms = quanta.max(1).saturating_mul(TS_QUANTUM_MS);
        let remote_count = u64::from(cfg.remote_nodes.max(1));
        let mut rng = Rng::new(cfg.seed);
        let kinetics = Kinetics::new(interval_ms);
        // Shared building phase so all nodes see roughly the same day.
        let building_phase = rng.uniform();
        let remotes = (0..remote_count)
            .map(|index| {
                Climate::new(
                    cfg.seed,
                    remote_number(index),
                    building_phase,
                    &REMOTE_PROFILE,
                )
            })
            .collect();
        let local = Climate::new(cfg.seed, 2, building_phase, &LOCAL_PROFILE);
        let link_walk = LINK_WALK.1 * rng.normal();
        let day_ms = rng.below(DAY_MS);
        let boot_offset_ms = boot_offset(&mut rng);
        Self {
            interval_ms,
            crc_error_rate: probability(cfg.crc_error_rate),
            loss_rate: probability(cfg.loss_rate),
            reboot_rate: probability(cfg.reboot_rate),
            rng,
            kinetics,
            remotes,
            local,
            link_walk,
            day_ms,
            boot_offset_ms,
            ticks_since_boot: 0,
            lines_since_boot: 0,
            rx: 0,
            err: 0,
        }
    }

    /// Advance one interval; returns the firmware line (without newline) or
    /// `None` when no remote frame was received this interval (all lost or
    /// failed CRC). The environment evolves and `ts` advances either way.
    pub(crate) fn step(&mut self) -> Option<String> {
        self.day_ms = (self.day_ms + self.interval_ms % DAY_MS) % DAY_MS;
        if self.rng.chance(self.reboot_rate) {
            self.reboot();
        }
        self.ticks_since_boot += 1;
        let ts = self
            .ticks_since_boot
            .saturating_mul(self.interval_ms)
            .saturating_add(self.boot_offset_ms);
        let day_frac = self.day_ms as f64 / DAY_MS as f64;
        let link = Link {
            crc_error_rate: self.crc_error_rate,
            loss_rate: self.loss_rate,
        };

        let mut line = String::with_capacity(112 + 48 * self.remotes.len());
        let _ = write!(line, "{{\"ts\":{ts},\"id\":\"N2\"");
        let mut tally = Tally::default();
        // `remotes` is never empty (`remote_nodes` is at least 1).
        if let Some((first, rest)) = self.remotes.split_first_mut() {
            let ctx = FrameCtx {
                kinetics: &self.kinetics,
                link: &link,
                day_frac,
            };
            remote_frame(first, 1, &ctx, &mut self.rng, &mut tally, &mut line);
            self.local.evolve(&self.kinetics, &mut self.rng);
            let local = self.local.sample(day_frac, &mut self.rng);
            write_local(&mut line, local, self.lines_since_boot);
            for (offset, node) in (1u64..).zip(rest.iter_mut()) {
                let number = remote_number(offset);
                remote_frame(node, number, &ctx, &mut self.rng, &mut tally, &mut line);
            }
        }

        self.rx += tally.received;
        self.err += tally.crc_errors;
        if tally.received == 0 {
            return None;
        }
        self.lines_since_boot += 1;

        self.link_walk = self.kinetics.link.advance(self.link_walk, &mut self.rng);
        let rssi = (RSSI_MEAN + self.link_walk + RSSI_NOISE * self.rng.normal()).round() as i64;
        let snr = (SNR_MEAN + SNR_NOISE * self.rng.normal()).round() as i64;
        let _ = write!(
            line,
            ",\"sig\":{{\"rssi\":{},\"snr\":{}}},\"sts\":{{\"rx\":{},\"err\":{}}}}}",
            rssi.clamp(RSSI_RANGE.0, RSSI_RANGE.1),
            snr.clamp(SNR_RANGE.0, SNR_RANGE.1),
            self.rx,
            self.err
        );
        Some(line)
    }

    /// Node 2 restarts: `ts`, counters and the local sensor state start over.
    fn reboot(&mut self) {
        self.boot_offset_ms = boot_offset(&mut self.rng);
        self.ticks_since_boot = 0;
        self.lines_since_boot = 0;
        self.rx = 0;
        self.err = 0;
    }
}

/// Firmware number of remote node `index` (0-based): 1, then 3, 4, ...
fn remote_number(index: u64) -> u64 {
    if index == 0 {
        1
    } else {
        index + 2
    }
}

/// `ts` of boot is a small multiple of 500 (500, 1000 or 1500 ms).
fn boot_offset(rng: &mut Rng) -> u64 {
    TS_QUANTUM_MS * (1 + rng.below(3))
}

/// Sanitizes a configured probability (NaN counts as 0).
fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Per-link frame fate probabilities.
#[derive(Debug, Clone, Copy)]
struct Link {
    crc_error_rate: f64,
    loss_rate: f64,
}

/// Shared, read-only inputs of one remote frame.
struct FrameCtx<'a> {
    kinetics: &'a Kinetics,
    link: &'a Link,
    day_frac: f64,
}

/// Frame outcomes of one step.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    crc_errors: u64,
}

/// Evolves one remote node and, if its frame was received, appends it.
fn remote_frame(
    node: &mut Climate,
    number: u64,
    ctx: &FrameCtx<'_>,
    rng: &mut Rng,
    tally: &mut Tally,
    line: &mut String,
) {
    node.evolve(ctx.kinetics, rng);
    let fate = rng.uniform();
    if fate < ctx.link.loss_rate {
        return;
    }
    if fate < ctx.link.loss_rate + ctx.link.crc_error_rate {
        tally.crc_errors += 1;
        return;
    }
    tally.received += 1;
    let s = node.sample(ctx.day_frac, rng);
    let _ = write!(
        line,
        ",\"n{number}\":{{\"t\":{:.1},\"h\":{:.1},\"g\":{}}}",
        s.t,
        s.h,
        s.g.round() as i64
    );
}

/// Appends Node 2's local sensor object; empty for the first two packets
/// after boot, temperature only for the third.
fn write_local(line: &mut String, s: Sample, lines_since_boot: u64) {
    let _ = match lines_since_boot {
        0 | 1 => write!(line, ",\"n2\":{{}}"),
        2 => write!(line, ",\"n2\":{{\"t\":{:.1}}}", s.t),
        _ => write!(line, ",\"n2\":{{\"t\":{:.1},\"h\":{:.1}}}", s.t, s.h),
    };
}

/// Discretized Ornstein-Uhlenbeck step: mean-reverting random walk whose
/// stationary standard deviation does not depend on the interval.
#[derive(Debug, Clone, Copy)]
struct Drift {
    retain: f64,
    kick: f64,
}

impl Drift {
    fn new(interval_ms: u64, (tau_ms, sigma): (f64, f64)) -> Self {
        let theta = (interval_ms as f64 / tau_ms).min(1.0);
        Self {
            retain: 1.0 - theta,
            kick: sigma * (theta * (2.0 - theta)).sqrt(),
        }
    }

    fn advance(self, value: f64, rng: &mut Rng) -> f64 {
        value * self.retain + self.kick * rng.normal()
    }
}

/// Drift kinetics of all walks, precomputed for the interval.
#[derive(Debug, Clone)]
struct Kinetics {
    temp: Drift,
    hum: Drift,
    gas: Drift,
    link: Drift,
}

impl Kinetics {
    fn new(interval_ms: u64) -> Self {
        Self {
            temp: Drift::new(interval_ms, TEMP_WALK),
            hum: Drift::new(interval_ms, HUM_WALK),
            gas: Drift::new(interval_ms, GAS_WALK),
            link: Drift::new(interval_ms, LINK_WALK),
        }
    }
}

/// Ranges baselines are drawn from for one kind of node.
struct Profile {
    base_t: (f64, f64),
    amp_t: (f64, f64),
    base_h: (f64, f64),
    base_g: (f64, f64),
}

/// Remote nodes: more exposed, larger daily swing.
const REMOTE_PROFILE: Profile = Profile {
    base_t: (23.5, 26.5),
    amp_t: (1.0, 2.0),
    base_h: (45.0, 55.0),
    base_g: (75_000.0, 95_000.0),
};

/// Node 2's local sensor: indoors, cooler and drier, small daily swing.
const LOCAL_PROFILE: Profile = Profile {
    base_t: (22.5, 25.0),
    amp_t: (0.5, 1.0),
    base_h: (42.0, 50.0),
    base_g: (75_000.0, 95_000.0),
};

/// One sensor's environment: fixed baseline plus slow random walks.
#[derive(Debug, Clone)]
struct Climate {
    base_t: f64,
    amp_t: f64,
    phase: f64,
    base_h: f64,
    base_g: f64,
    walk_t: f64,
    walk_h: f64,
    walk_g: f64,
}

/// One reading of a sensor, already clamped to the realistic ranges.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    h: f64,
    g: f64,
}

impl Climate {
    /// Baseline derived only from the seed and the node's firmware number, so
    /// a node looks the same whatever the number of nodes.
    fn new(seed: u64, number: u64, building_phase: f64, profile: &Profile) -> Self {
        let mut mix = seed ^ 0xA076_1D64_78BD_642F;
        let seed_part = splitmix64(&mut mix);
        let mut mix = number ^ 0xE703_7ED1_A0B4_28DB;
        let mut rng = Rng::new(seed_part ^ splitmix64(&mut mix));
        Self {
            base_t: rng.between(profile.base_t),
            amp_t: rng.between(profile.amp_t),
            phase: building_phase + 0.03 * (rng.uniform() - 0.5),
            base_h: rng.between(profile.base_h),
            base_g: rng.between(profile.base_g),
            walk_t: TEMP_WALK.1 * rng.normal(),
            walk_h: HUM_WALK.1 * rng.normal(),
            walk_g: GAS_WALK.1 * rng.normal(),
        }
    }

    fn evolve(&mut self, k: &Kinetics, rng: &mut Rng) {
        self.walk_t = k.temp.advance(self.walk_t, rng);
        self.walk_h = k.hum.advance(self.walk_h, rng);
        self.walk_g = k.gas.advance(self.walk_g, rng);
    }

    fn sample(&self, day_frac: f64, rng: &mut Rng) -> Sample {
        let dt = self.amp_t * sin_turns(day_frac + self.phase) + self.walk_t;
        let dh = HUM_PER_DEGREE * dt + self.walk_h;
        let t = self.base_t + dt + TEMP_NOISE * rng.normal();
        let h = self.base_h + dh + HUM_NOISE * rng.normal();
        let g = self.base_g + self.walk_g + GAS_PER_HUM * dh + GAS_NOISE * rng.normal();
        Sample {
            t: t.clamp(TEMP_RANGE.0, TEMP_RANGE.1),
            h: h.clamp(HUM_RANGE.0, HUM_RANGE.1),
            g: g.clamp(GAS_RANGE.0, GAS_RANGE.1),
        }
    }
}

/// `sin(2π·turns)` using only basic arithmetic (bit-identical everywhere);
/// absolute error below 1e-7.
fn sin_turns(turns: f64) -> f64 {
    let mut x = turns - turns.floor();
    if x > 0.5 {
        x -= 1.0;
    }
    if x > 0.25 {
        x = 0.5 - x;
    } else if x < -0.25 {
        x = -0.5 - x;
    }
    let r = x * std::f64::consts::TAU;
    let r2 = r * r;
    // Taylor series to r^11, Horner form.
    r * (1.0
        - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0 * (1.0 - r2 / 110.0)))))
}

/// One SplitMix64 step; used for seeding.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded through SplitMix64.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Self { s }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, (lo, hi): (f64, f64)) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[0, n)` (`n > 0`), multiply-shift method.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Approximately standard normal: Irwin-Hall sum of four uniforms,
    /// mean 0, standard deviation 1, bounded to about ±3.46.
    fn normal(&mut self) -> f64 {
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * 1.732_050_807_568_877_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn lines(cfg: SimConfig, steps: usize) -> Vec<Option<String>> {
        let mut model = SimModel::new(cfg);
        (0..steps).map(|_| model.step()).collect()
    }

    fn cfg(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    fn parse(line: &str) -> serde_json::Map<String, Value> {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line}: {other:?}"),
        }
    }

    fn int(v: &Value, a: &str, b: &str) -> i64 {
        v[a][b]
            .as_i64()
            .unwrap_or_else(|| panic!("{a}.{b} not int in {v}"))
    }

    /// Top-level keys in textual order (the format is flat enough for this).
    fn top_keys(line: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut in_string = false;
        let mut expecting_key = false;
        let mut current = String::new();
        for c in line.chars() {
            if in_string {
                if c == '"' {
                    in_string = false;
                    if depth == 1 && expecting_key {
                        keys.push(std::mem::take(&mut current));
                        expecting_key = false;
                    }
                    current.clear();
                } else {
                    current.push(c);
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '{' => {
                    depth += 1;
                    expecting_key = depth == 1;
                }
                '}' => depth -= 1,
                ',' if depth == 1 => expecting_key = true,
                _ => {}
            }
        }
        keys
    }

    #[test]
    fn same_seed_same_lines_different_seed_differs() {
        let a = lines(cfg(7), 1000);
        let b = lines(cfg(7), 1000);
        let c = lines(cfg(8), 1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().flatten().count() > 900);
    }

    #[test]
    fn example_shape_and_key_order() {
        let mut model = SimModel::new(SimConfig {
            crc_error_rate: 0.0,
            loss_rate: 0.0,
            reboot_rate: 0.0,
            ..SimConfig::default()
        });
        let first = model.step().expect("no loss configured");
        assert!(!first.contains(' ') && !first.contains('\n'));
        assert!(first.starts_with("{\"ts\":"));
        assert!(first.contains(",\"id\":\"N2\",\"n1\":{\"t\":"));
        assert!(first.contains(",\"n2\":{},\"sig\":{\"rssi\":"));
        assert!(first.ends_with(",\"sts\":{\"rx\":1,\"err\":0}}"));
        assert_eq!(top_keys(&first), ["ts", "id", "n1", "n2", "sig", "sts"]);
        let ts = parse(&first)["ts"].as_u64().expect("ts");
        assert!((10_500..=11_500).contains(&ts), "{ts}");
        let map = parse(&first);
        let n1 = map["n1"].as_object().expect("n1");
        assert_eq!(n1.keys().collect::<Vec<_>>(), ["g", "h", "t"]);
        assert!(n1["g"].is_u64());
    }

    #[test]
    fn n2_sensor_warms_up_after_boot() {
        let mut model = SimModel::new(SimConfig {
            crc_error_rate: 0.0,
            loss_rate: 0.0,
            reboot_rate: 0.0,
            ..SimConfig::default()
        });
        let n2 = |line: Option<String>| {
            let line = line.expect("no loss configured");
            parse(&line)["n2"].as_object().expect("n2 object").clone()
        };
        assert!(n2(model.step()).is_empty());
        assert!(n2(model.step()).is_empty());
        let third = n2(model.step());
        assert_eq!(third.keys().collect::<Vec<_>>(), ["t"]);
        let fourth = n2(model.step());
        assert_eq!(fourth.keys().collect::<Vec<_>>(), ["h", "t"]);
        model.reboot();
        assert!(n2(model.step()).is_empty());
    }

    #[test]
    fn one_decimal_formatting() {
        for line in lines(cfg(3), 5000).into_iter().flatten() {
            for key in ["\"t\":", "\"h\":"] {
                for (pos, _) in line.match_indices(key) {
                    let rest = &line[pos + key.len()..];
                    let end = rest.find([',', '}']).expect("number end");
                    let num = &rest[..end];
                    let (int_part, frac) = num.split_once('.').expect("has a dot");
                    assert!(!int_part.is_empty() && int_part.chars().all(|c| c.is_ascii_digit()));
                    assert_eq!(frac.len(), 1, "{num} in {line}");
                    assert!(frac.chars().all(|c| c.is_ascii_digit()));
                }
            }
            for key in [
                "\"g\":",
                "\"rssi\":",
                "\"snr\":",
                "\"rx\":",
                "\"err\":",
                "\"ts\":",
            ] {
                for (pos, _) in line.match_indices(key) {
                    let rest = &line[pos + key.len()..];
                    let end = rest.find([',', '}']).expect("number end");
                    let num = rest[..end].trim_start_matches('-');
                    assert!(!num.is_empty() && num.chars().all(|c| c.is_ascii_digit()));
                }
            }
        }
    }

    #[test]
    fn sin_turns_is_accurate() {
        for i in 0..=1000 {
            let x = f64::from(i) / 1000.0 * 3.0 - 1.0;
            let err = (sin_turns(x) - (x * std::f64::consts::TAU).sin()).abs();
            assert!(err < 1e-7, "{x}: {err}");
        }
    }

    #[test]
    fn interval_is_rounded_to_the_ts_grid() {
        for (cfg_ms, want) in [
            (0, 500),
            (1, 500),
            (749, 500),
            (750, 1000),
            (10_000, 10_000),
        ] {
            let model = SimModel::new(SimConfig {
                interval_ms: cfg_ms,
                ..SimConfig::default()
            });
            assert_eq!(model.interval_ms, want);
        }
    }

    /// Long run with the default config: structure, counters, ranges, rates.
    #[test]
    fn long_run_is_consistent_and_realistic() {
        const STEPS: usize = 100_000;
        let config = SimConfig::default();
        let all = lines(config.clone(), STEPS);
        let mut prev: Option<(u64, u64, u64)> = None; // ts, rx, err
        let (mut reboots, mut crc, mut emitted) = (0u64, 0u64, 0u64);
        let mut since_boot = 0u64;
        let (mut tsum, mut hsum, mut tt, mut hh, mut th) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut tmin, mut tmax) = (f64::MAX, f64::MIN);
        let mut rssi_sum = 0i64;
        let mut prev_t: Option<f64> = None;
        for line in all.iter().flatten() {
            emitted += 1;
            let map = parse(line);
            let keys = top_keys(line);
            assert_eq!(keys, ["ts", "id", "n1", "n2", "sig", "sts"], "{line}");
            assert_eq!(map["id"], "N2");
            let v = Value::Object(map.clone());
            let ts = map["ts"].as_u64().expect("ts");
            let rx = int(&v, "sts", "rx") as u64;
            let err = int(&v, "sts", "err") as u64;
            assert_eq!(ts % 500, 0);
            match prev {
                Some((pts, prx, perr)) if rx == prx + 1 => {
                    assert!(ts > pts, "{line}");
                    assert_eq!((ts - pts) % config.interval_ms, 0);
                    assert!(err >= perr);
                    crc += err - perr;
                    since_boot += 1;
                }
                _ => {
                    assert_eq!(rx, 1, "reboot must restart rx: {line}");
                    assert!(ts <= 1_500 + 50 * config.interval_ms, "{line}");
                    if prev.is_some() {
                        reboots += 1;
                        prev_t = None;
                    }
                    crc += err;
                    since_boot = 0;
                }
            }
            prev = Some((ts, rx, err));
            let n2 = map["n2"].as_object().expect("n2");
            match since_boot {
                0 | 1 => assert!(n2.is_empty(), "{line}"),
                2 => assert_eq!(n2.len(), 1, "{line}"),
                _ => assert_eq!(n2.len(), 2, "{line}"),
            }
            let t = v["n1"]["t"].as_f64().expect("t");
            let h = v["n1"]["h"].as_f64().expect("h");
            let g = v["n1"]["g"].as_u64().expect("g");
            assert!(
                (20.0..=30.0).contains(&t) && (30.0..=70.0).contains(&h),
                "{line}"
            );
            assert!((50_000..=120_000).contains(&g), "{line}");
            if let Some(pt) = prev_t {
                assert!((t - pt).abs() < 1.0, "temperature jumped: {line}");
            }
            prev_t = Some(t);
            for (k, val) in n2 {
                let x = val.as_f64().expect("n2 value");
                let range = if k == "t" { 20.0..=30.0 } else { 30.0..=70.0 };
                assert!(range.contains(&x), "{line}");
            }
            let rssi = int(&v, "sig", "rssi");
            let snr = int(&v, "sig", "snr");
            assert!(
                (-120..=-20).contains(&rssi) && (-50..=-20).contains(&rssi),
                "{line}"
            );
            assert!((6..=18).contains(&snr), "{line}");
            rssi_sum += rssi;
            tsum += t;
            hsum += h;
            tt += t * t;
            hh += h * h;
            th += t * h;
            tmin = tmin.min(t);
            tmax = tmax.max(t);
        }
        let n = emitted as f64;
        let cov = th / n - (tsum / n) * (hsum / n);
        let corr = cov / ((tt / n - (tsum / n).powi(2)) * (hh / n - (hsum / n).powi(2))).sqrt();
        assert!(
            corr < -0.3,
            "humidity should follow temperature inversely: {corr}"
        );
        assert!(
            tmax - tmin > 2.0,
            "temperature should drift: {tmin}..{tmax}"
        );
        let mean_rssi = rssi_sum as f64 / n;
        assert!((-38.0..=-32.0).contains(&mean_rssi), "{mean_rssi}");

        let steps = STEPS as f64;
        let lost = STEPS as u64 - emitted - crc;
        // Within five standard deviations of the expected (Poisson) count.
        let near = |got: u64, rate: f64| {
            let want = rate * steps;
            (got as f64 - want).abs() < 5.0 * want.sqrt()
        };
        assert!(near(crc, config.crc_error_rate), "crc {crc}");
        assert!(near(lost, config.loss_rate), "lost {lost}");
        assert!(near(reboots, config.reboot_rate), "reboots {reboots}");
    }

    #[test]
    fn many_remote_nodes_use_firmware_numbering() {
        let mut model = SimModel::new(SimConfig {
            remote_nodes: 1000,
            crc_error_rate: 0.0,
            loss_rate: 0.0,
            reboot_rate: 0.0,
            ..SimConfig::default()
        });
        let line = model.step().expect("no loss configured");
        let map = parse(&line);
        let mut want = vec!["ts".to_owned(), "id".to_owned()];
        want.extend((1..=1001).map(|n| format!("n{n}")));
        want.extend(["sig".to_owned(), "sts".to_owned()]);
        assert_eq!(top_keys(&line), want);
        assert_eq!(map.len(), want.len());
        assert_eq!(map["sts"]["rx"], 1000);
        assert_eq!(
            model.step().map(|l| parse(&l)["sts"]["rx"].clone()),
            Some(2000.into())
        );
    }

    #[test]
    fn node_baseline_does_not_depend_on_node_count() {
        let one = SimModel::new(cfg(5));
        let many = SimModel::new(SimConfig {
            remote_nodes: 4,
            ..cfg(5)
        });
        assert_eq!(one.remotes[0].base_t, many.remotes[0].base_t);
        assert_ne!(many.remotes[1].base_t, many.remotes[2].base_t);
        assert_ne!(one.local.base_t, one.remotes[0].base_t);
    }

    #[test]
    fn lossy_multi_node_lines_omit_lost_nodes_and_count_frames() {
        let mut model = SimModel::new(SimConfig {
            remote_nodes: 5,
            crc_error_rate: 0.2,
            loss_rate: 0.2,
            reboot_rate: 0.0,
            ..SimConfig::default()
        });
        let (mut prev_rx, mut prev_err) = (0, 0);
        let mut partial = 0;
        for _ in 0..2000 {
            let Some(line) = model.step() else { continue };
            let map = parse(&line);
            let nodes = map
                .keys()
                .filter(|k| k.starts_with('n') && *k != "n2")
                .count() as u64;
            assert!(nodes >= 1);
            partial += u64::from(nodes < 5);
            let rx = map["sts"]["rx"].as_u64().expect("rx");
            let err = map["sts"]["err"].as_u64().expect("err");
            assert_eq!(rx - prev_rx, nodes, "{line}");
            assert!(err >= prev_err);
            (prev_rx, prev_err) = (rx, err);
        }
        assert!(partial > 1000);
        assert!(prev_err > 1500 && prev_err < 2500, "{prev_err}");
    }

    #[test]
    fn extreme_rates_are_sanitized() {
        let mut dead = SimModel::new(SimConfig {
            loss_rate: 7.0,
            ..SimConfig::default()
        });
        assert!((0..100).all(|_| dead.step().is_none()));
        let mut nan = SimModel::new(SimConfig {
            crc_error_rate: f64::NAN,
            loss_rate: -1.0,
            reboot_rate: f64::NAN,
            ..SimConfig::default()
        });
        assert!((0..100).all(|_| nan.step().is_some()));
        let mut zero = SimModel::new(SimConfig {
            remote_nodes: 0,
            ..SimConfig::default()
        });
        assert!(top_keys(&zero.step().expect("line")).contains(&"n1".to_owned()));
    }

    #[test]
    fn ten_thousand_nodes_step_is_linear_and_fast() {
        let mut model = SimModel::new(SimConfig {
            remote_nodes: 10_000,
            ..SimConfig::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..10 {
            let line = model.step().expect("some node is always heard");
            assert!(line.len() < 10_000 * 50 + 200);
            let nodes = line.matches("\":{\"t\":").count();
            assert!(nodes > 9_000, "{nodes}");
        }
        let elapsed = start.elapsed();
        assert!(elapsed.as_secs_f64() < 10.0, "{elapsed:?}");
    }
}
