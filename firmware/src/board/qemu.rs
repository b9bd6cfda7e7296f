//! QEMU 7.2's `netduinoplus2` (an STM32F405 with the F446's USART2 and UART4 addresses and
//! interrupt numbers). QEMU does not model the RCC (its registers read 0, so waiting for a
//! ready bit hangs) nor the I2C: the image configures no clock, and its sensors are emulated
//! (`sensor::emulated`). QEMU ignores baud rates.
//!
//! Node 1 sends every 2 s instead of 10 s (an end-to-end test of a few dozen packets takes
//! about a minute) and waits 1 s for an ACK (a loaded CI host can take hundreds of ms to
//! schedule both emulators and the radio between them).

use core::sync::atomic::{AtomicU32, Ordering};

use crate::reg;
use crate::sensor::emulated::{EmulatedBme680, EmulatedSht3x};
use crate::sensor::{Air, Sensor, SensorError};

/// The board's name, as in the image file names.
pub const NAME: &str = "qemu";
/// Core clock as far as the image knows (the HSI it would run on).
pub const CPU_HZ: u32 = 16_000_000;
/// SysTick's clock: QEMU clocks the netduinoplus2's core at a fixed 168 MHz whatever the RCC
/// says, and SysTick counts that clock.
pub const SYSTICK_HZ: u32 = 168_000_000;
/// APB1 clock (only for the baud-rate registers, which QEMU ignores).
pub const PCLK1_HZ: u32 = CPU_HZ;

/// Node 1 sends one packet this often, ms.
pub const SEND_PERIOD_MS: u32 = 2_000;
/// Node 1's first packet comes this long after the modem set-up, ms.
pub const FIRST_SEND_DELAY_MS: u32 = 1_000;
/// Node 1 waits this long for an ACK before sending again, ms.
pub const ACK_TIMEOUT_MS: u32 = 1_000;

/// The sensors as the self-test names them.
pub const AIR_SENSOR: &str = "BME680 (emulated)";
/// See [`AIR_SENSOR`].
pub const CLIMATE_SENSOR: &str = "SHT3x (emulated)";

/// Node 2's SHT3x, emulated (reads fail when the emulator says so: [`inject_fault`]).
pub type ClimateSensor = Faulty<EmulatedSht3x>;
/// Node 1's BME680, emulated (reads fail, or have no gas reading, when the emulator says so:
/// [`inject_fault`]).
pub type AirSensor = Faulty<NoGas>;

/// Clock enables of USART2 and UART4 (what the board does; QEMU ignores them). No wait on
/// any ready bit.
pub fn init() {
    reg::modify(reg::RCC_APB1ENR, 0, (1 << 17) | (1 << 19));
}

/// Node 2's emulated SHT3x.
pub fn climate_sensor() -> ClimateSensor {
    Faulty(EmulatedSht3x::default())
}

/// Node 1's emulated BME680.
pub fn air_sensor() -> AirSensor {
    Faulty(NoGas(EmulatedBme680::default()))
}

/// Sensor reads still to fail ([`inject_fault`]).
static SENSOR_FAULTS: AtomicU32 = AtomicU32::new(0);
/// BME680 reads still to come without a gas reading ([`inject_fault`]).
static GAS_FAULTS: AtomicU32 = AtomicU32::new(0);

/// Takes one from `faults` when it is not 0: whether this read is struck.
fn strike(faults: &AtomicU32) -> bool {
    faults
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// FAULT INJECTION, in the emulator image only: the radio emulator's `+FAULT=<what>` lines on
/// the modem port (no real modem says this; the board image ignores them). `PANIC` panics at
/// once (the node resets: `recovery`); `SENSOR<n>` makes the sensor's next `n` reads fail
/// with a bus error; `NOGAS<n>` gives the BME680's next `n` readings without gas (its heater
/// not stable). Anything else is ignored.
pub fn inject_fault(what: &str) {
    if what == "PANIC" {
        panic!("fault injected by the emulator");
    }
    let count = |prefix: &str| what.strip_prefix(prefix).and_then(|n| n.parse().ok());
    if let Some(n) = count("SENSOR") {
        SENSOR_FAULTS.store(n, Ordering::Relaxed);
    }
    if let Some(n) = count("NOGAS") {
        GAS_FAULTS.store(n, Ordering::Relaxed);
    }
}

/// The emulated BME680, its gas reading missing while [`inject_fault`] says so.
pub struct NoGas(EmulatedBme680);

impl Sensor for NoGas {
    type Reading = Air;

    fn read(&mut self) -> Result<Air, SensorError> {
        let air = self.0.read()?;
        Ok(if strike(&GAS_FAULTS) {
            Air {
                gas_resistance: lora_link::packet::NO_GAS,
                ..air
            }
        } else {
            air
        })
    }
}

/// An emulated sensor whose reads fail while [`inject_fault`] says so.
pub struct Faulty<S>(S);

impl<S: Sensor> Sensor for Faulty<S> {
    type Reading = S::Reading;

    fn read(&mut self) -> Result<S::Reading, SensorError> {
        if strike(&SENSOR_FAULTS) {
            return Err(SensorError::Bus);
        }
        self.0.read()
    }
}
