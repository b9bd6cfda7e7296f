//! The nodes' clock: RTIC's SysTick monotonic, started by `init` with the board's
//! `SYSTICK_HZ`. `Mono::now().duration_since_epoch().as_millis()` is milliseconds since boot.
//!
//! 1 kHz on the board. 100 Hz under QEMU: QEMU delivers each SysTick interrupt on a host timer
//! and drops those a busy host delivers late, so the clock falls behind real time under load;
//! 10 ms steps (ample for the 1 s ACK timeout) lose far fewer ticks. (The tick rate is a literal
//! here because the macro needs it as a `u64` const and a `u32` value at once.)

#[cfg(not(feature = "qemu"))]
rtic_monotonics::systick_monotonic!(Mono, 1_000);
#[cfg(feature = "qemu")]
rtic_monotonics::systick_monotonic!(Mono, 100);
