//! What brings a node back without a hand on it (issue 26):
//!
//! - **The independent watchdog** (IWDG, RM0390 §19: its own 32 kHz LSI clock, which nothing
//!   but a reset stops): started with [`WATCHDOG_S`] seconds, fed by each node's lowest-priority
//!   `watchdog` task once a second, and only while the node's main loop keeps the promise it
//!   made with [`alive_until`]: a main loop that hangs, or a task that spins and starves the
//!   lowest priority, resets the chip within [`WATCHDOG_S`] seconds of its deadline.
//! - **A panic resets the chip** (release builds; the debug build keeps panic-probe's
//!   breakpoint for a debugger): it logs the message through defmt and on the VCP, marks the
//!   kept RAM ([`crate::kept::PANIC`]) so that the next start reports reset reason `panic`,
//!   and resets.
//!
//! - **A fault resets the chip** too (a stack that reached its guard, `stack`; a bad access):
//!   the HardFault handler logs the faulting address, marks the kept RAM as a panic does, and
//!   resets.
//!
//! QEMU 7.2 maps the IWDG as an unimplemented device: the writes are ignored and it never
//! fires there (what a test can show is the panic's reset and the deadlines' bookkeeping).

use core::sync::atomic::{AtomicU32, Ordering};

use crate::kept;
use crate::reg;

/// The watchdog's period: this long without a feed resets the chip, s.
pub const WATCHDOG_S: u32 = 8;
/// IWDG registers (RM0390 §19.4).
const IWDG: usize = 0x4000_3000;
const KR: usize = IWDG;
const PR: usize = IWDG + 0x04;
const RLR: usize = IWDG + 0x08;
/// The prescaler /256: the 32 kHz LSI counts 125 times a second.
const PR_DIV_256: u32 = 6;
const TICKS_PER_S: u32 = 32_000 / 256;
/// The kept word that says the last reset was a panic's.
const PANICKED: u32 = 0x5041_4e43; // "PANC"

/// Seconds since boot up to which the main loop promised to come back ([`alive_until`]).
static DEADLINE_S: AtomicU32 = AtomicU32::new(0);

/// The self-test's lines at a node's start (`self-test: ...` on the VCP; firmware/README.md,
/// "Bring-up"): who it is, its region, why it started, the watchdog. The modem's and the
/// sensor's lines follow when they are known ([`self_test_modem`], [`self_test_sensor`]).
pub fn self_test_start(node: &str, boots: u32, reset: u8) {
    let vcp = crate::uart::Uart::USART2;
    let [major, minor, patch] = crate::VERSION;
    let region = crate::REGION;
    let s = region.settings();
    let p = s.parameters;
    let khz = match p.bandwidth {
        7 => 125,
        8 => 250,
        _ => 500,
    };
    crate::modem::print_line(
        vcp,
        format_args!(
            "self-test: {node} {major}.{minor}.{patch} on {}",
            crate::board::NAME
        ),
    );
    crate::modem::print_line(
        vcp,
        format_args!(
            "self-test: region {} ({} Hz, SF{}, {khz} kHz, {} dBm)",
            region.name(),
            s.band_hz,
            p.spreading_factor,
            s.power_dbm
        ),
    );
    crate::modem::print_line(
        vcp,
        format_args!(
            "self-test: boot {boots}, reset {} ({reset}); watchdog armed, {WATCHDOG_S} s",
            reset_name(reset)
        ),
    );
    // The same through defmt, for `probe-rs run` on a desk.
    defmt::info!(
        "self-test: {=str} {}.{}.{} on {=str}; region {=str} ({} Hz, SF{}, {} kHz, {} dBm); boot {}, reset {=str}; watchdog armed, {} s",
        node,
        major,
        minor,
        patch,
        crate::board::NAME,
        region.name(),
        s.band_hz,
        p.spreading_factor,
        khz,
        s.power_dbm,
        boots,
        reset_name(reset),
        WATCHDOG_S
    );
}

/// The self-test's modem line: the set-up's commands that failed (of `at::SETUP_STEPS`).
pub fn self_test_modem(failed: usize) {
    let steps = lora_link::at::SETUP_STEPS;
    let vcp = crate::uart::Uart::USART2;
    if failed == 0 {
        defmt::info!("self-test: modem answered, set up ({} commands)", steps);
        crate::modem::print_line(
            vcp,
            format_args!("self-test: modem answered, set up ({steps} commands)"),
        );
    } else {
        defmt::error!(
            "self-test: modem FAILED {} of {} set-up commands",
            failed,
            steps
        );
        crate::modem::print_line(
            vcp,
            format_args!(
                "self-test: modem FAILED {failed} of {steps} set-up commands: check its wiring \
                 (UART4: PA0 TX to its RXD, PA1 RX to its TXD), 3.3 V and 115200 baud"
            ),
        );
    }
}

/// The self-test's sensor line: `what` (the board's sensor and where it answers) and the
/// first read's outcome.
pub fn self_test_sensor(what: &str, read: Result<(), crate::sensor::SensorError>) {
    let vcp = crate::uart::Uart::USART2;
    match read {
        Ok(()) => {
            defmt::info!("self-test: sensor {=str}: ok", what);
            crate::modem::print_line(vcp, format_args!("self-test: sensor {what}: ok"));
        }
        Err(e) => {
            defmt::error!(
                "self-test: sensor {=str}: FAILED, {=str}",
                what,
                e.describe()
            );
            crate::modem::print_line(
                vcp,
                format_args!("self-test: sensor {what}: FAILED, {}", e.describe()),
            );
        }
    }
}

/// `reset` in words, as the gateway names it.
fn reset_name(reset: u8) -> &'static str {
    match reset {
        1 => "power_on",
        2 => "software",
        3 => "watchdog",
        4 => "panic",
        _ => "unknown",
    }
}

/// Starts the watchdog (it cannot be stopped) and gives the main loop `first_s` seconds to
/// make its first promise.
pub fn start_watchdog(now_s: u32, first_s: u32) {
    alive_until(now_s.saturating_add(first_s));
    reg::write(KR, 0x5555); // unlock PR and RLR
    reg::write(PR, PR_DIV_256);
    reg::write(RLR, (WATCHDOG_S * TICKS_PER_S).min(0xFFF));
    reg::write(KR, 0xAAAA); // reload
    reg::write(KR, 0xCCCC); // start
}

/// The main loop promises to come back by `deadline_s` (seconds since boot).
pub fn alive_until(deadline_s: u32) {
    DEADLINE_S.store(deadline_s, Ordering::Relaxed);
}

/// The `watchdog` task's step, once a second: feeds the watchdog while the promise holds;
/// `false` once it is broken (the watchdog then resets the chip).
pub fn feed_if_alive(now_s: u32) -> bool {
    let alive = now_s <= DEADLINE_S.load(Ordering::Relaxed);
    if alive {
        reg::write(KR, 0xAAAA);
    }
    alive
}

/// Whether the last reset was a panic's; clears the mark.
pub fn take_panicked() -> bool {
    let [word] = kept::load::<1>(kept::PANIC);
    kept::save(kept::PANIC, &[0]);
    word == PANICKED
}

/// A fault (a stack that reached its guard, a bad access): logged, marked like a panic, reset.
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:#x}", frame.pc());
    crate::modem::print_line(
        crate::uart::Uart::USART2,
        format_args!("hard fault at pc={:#x}", frame.pc()),
    );
    crate::uart::Uart::USART2.flush();
    kept::save(kept::PANIC, &[PANICKED]);
    cortex_m::peripheral::SCB::sys_reset()
}

#[cfg(not(debug_assertions))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    defmt::error!("panic: {}", defmt::Display2Format(info));
    crate::modem::print_line(
        crate::uart::Uart::USART2,
        format_args!("panic: {}", info.message()),
    );
    crate::uart::Uart::USART2.flush();
    kept::save(kept::PANIC, &[PANICKED]);
    cortex_m::peripheral::SCB::sys_reset()
}
