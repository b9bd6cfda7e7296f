//! Words kept across a reset: the last 256 bytes of SRAM (`memory.x`, region `KEPT`), outside
//! every section of the image. cortex-m-rt's start-up zeroes `.bss` and copies `.data` only,
//! and QEMU's reset reloads the image's sections only, so what is written here survives a
//! software reset (`reboot`) on the board and under QEMU; a power-up leaves anything in it.
//! Each user therefore checks its words (a magic word and a check word) before it trusts
//! them.
//!
//! Slots: Node 1's command state ([`COMMANDS`], `lora_link::node1::commands`), the
//! emulator image's counter store ([`STORE`], `counter_store`), the panic mark ([`PANIC`],
//! `recovery`) and Node 2's boot count ([`BOOTS`]).

/// Words in the region.
pub const WORDS: usize = 64;
/// Node 1's command state: `lora_link::node1::commands::SAVED_WORDS` words.
pub const COMMANDS: usize = 0;
/// The emulator's counter store (QEMU has no flash controller model).
pub const STORE: usize = 16;
/// Whether the last reset was a panic's (`recovery`), one word.
pub const PANIC: usize = 40;
/// Node 2's boot count since power-up, with a check word (its reset reports), two words.
pub const BOOTS: usize = 41;

extern "C" {
    /// The region's first word (`memory.x`).
    static _kept_start: u32;
}

/// The address of word `index` of the region, if it is in it.
fn word(index: usize) -> Option<*mut u32> {
    if index >= WORDS {
        return None;
    }
    // Only the symbol's address is taken, never a reference to it.
    let base = core::ptr::addr_of!(_kept_start) as *mut u32;
    Some(base.wrapping_add(index))
}

/// `N` words from word `at`; 0 for any beyond the region.
pub fn load<const N: usize>(at: usize) -> [u32; N] {
    core::array::from_fn(|i| match word(at + i) {
        // SAFETY: a word of the KEPT region, which no Rust object occupies (memory.x puts it
        // outside RAM's sections); always mapped SRAM, read as plain words.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    })
}

/// Writes `words` from word `at` (those beyond the region are dropped).
pub fn save(at: usize, words: &[u32]) {
    for (i, w) in words.iter().enumerate() {
        if let Some(p) = word(at + i) {
            // SAFETY: as in `load`; only this module writes the region, from one task at a
            // time (Node 1's radio task and its `init`).
            unsafe { core::ptr::write_volatile(p, *w) };
        }
    }
}
