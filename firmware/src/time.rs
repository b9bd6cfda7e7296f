//! The nodes' clock: SysTick at 1 kHz (RTIC's SysTick monotonic), started by `init` with the
//! board's `SYSTICK_HZ`. `Mono::now().duration_since_epoch().as_millis()` is milliseconds since boot.

rtic_monotonics::systick_monotonic!(Mono, 1_000);
