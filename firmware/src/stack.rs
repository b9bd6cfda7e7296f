//! The stack (issue 26): guarded, painted, and its deepest use measured.
//!
//! - **Guard**: the MPU makes the lowest 32 bytes above the statics (`_stack_end`) a
//!   no-access region, so a stack that grows into the statics faults (a HardFault: the node
//!   resets, `recovery`) instead of silently overwriting them. The same as flip-link's aim,
//!   without a linker wrapper.
//! - **Paint**: at start every free word between the guard and the stack pointer is set to a
//!   pattern; [`peak`] finds the lowest word no longer painted: the most stack used since.
//!   The nodes print it on the VCP whenever it grew (`stack peak=<bytes> static=<bytes>`), and
//!   the emulated chain test holds static RAM plus the peak within the 16 KiB budget.
//!
//! QEMU models the Cortex-M4's MPU (PMSAv7), so the emulator images run with the guard too.

use core::ptr::{addr_of, read_volatile, write_volatile};

extern "C" {
    /// The top of the stack (cortex-m-rt: the end of RAM in `memory.x`).
    static _stack_start: u32;
    /// The lowest address the stack may take: the end of the statics.
    static _stack_end: u32;
    /// The start of `.data`, the first of the statics.
    static __sdata: u32;
}

/// What a free stack word holds until the stack reaches it.
const PAINT: u32 = 0x5354_4B21; // "STK!"
/// The guard region's size, bytes (the MPU's smallest, aligned to itself).
const GUARD: usize = 32;
/// Words left unpainted just below the stack pointer at painting time.
const MARGIN: usize = 64;

fn top() -> usize {
    addr_of!(_stack_start) as usize
}

/// The guard region's first address: the end of the statics, aligned up to the guard's size.
fn guard() -> usize {
    (addr_of!(_stack_end) as usize + GUARD - 1) & !(GUARD - 1)
}

/// Paints the free stack and arms the guard. Call once, first thing in `init` (interrupts
/// off: nothing else uses the stack meanwhile).
pub fn paint_and_guard() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut word = guard() + GUARD;
    while word + MARGIN < sp {
        // SAFETY: a word between the statics' guard and the stack pointer: free stack, which
        // no Rust object occupies, aligned (the guard is, and words step by 4).
        unsafe { write_volatile(word as *mut u32, PAINT) };
        word += 4;
    }
    // SAFETY: the MPU's registers (PMSAv7); only this function writes them, once, before
    // anything could depend on them. Region 0: the guard, no access, never executed;
    // PRIVDEFENA keeps the default memory map everywhere else.
    unsafe {
        let mpu = &*cortex_m::peripheral::MPU::PTR;
        mpu.rnr.write(0);
        mpu.rbar.write(guard() as u32);
        // XN | AP = no access | SIZE = 4 (2^(4+1) = 32 bytes) | ENABLE
        mpu.rasr.write((1 << 28) | (4 << 1) | 1);
        mpu.ctrl.write((1 << 2) | 1);
    }
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

/// The most stack used since [`paint_and_guard`], bytes: from the top down to the lowest
/// word no longer painted.
pub fn peak() -> u32 {
    let mut word = guard() + GUARD;
    while word < top() {
        // SAFETY: as in `paint_and_guard`: a word of the stack region, read as a plain word.
        if unsafe { read_volatile(word as *const u32) } != PAINT {
            break;
        }
        word += 4;
    }
    (top() - word) as u32
}

/// Static RAM: `.data`, `.bss` and `.uninit`, bytes.
pub fn static_ram() -> u32 {
    (addr_of!(_stack_end) as usize - addr_of!(__sdata) as usize) as u32
}

/// Tracks the peak, to say when it grew.
#[derive(Default)]
pub struct PeakWatch(u32);

impl PeakWatch {
    /// The peak when it is higher than last time it was asked.
    pub fn grew(&mut self) -> Option<u32> {
        let now = peak();
        (now > self.0).then(|| {
            self.0 = now;
            now
        })
    }
}
