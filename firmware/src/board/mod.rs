//! The board the image is built for, chosen by a cargo feature: `nucleo-f446re` (the real
//! board, the default) or `qemu` (QEMU 7.2's `netduinoplus2`). Each module holds everything
//! that differs: clocks, pins, which sensors (real or emulated) and the node's timing.
//! Both use USART2 for the VCP and UART4 for the modem, and the same registers for the LED
//! and the reset flags (QEMU 7.2 maps the STM32F405's GPIO and RCC as unimplemented
//! devices: writes are ignored, reads give 0).

#[cfg(all(feature = "qemu", feature = "nucleo-f446re"))]
compile_error!(
    "choose one board: the emulator image builds with `--no-default-features --features qemu`"
);
#[cfg(not(any(feature = "qemu", feature = "nucleo-f446re")))]
compile_error!("choose a board: feature `nucleo-f446re` or `qemu`");

#[cfg(all(feature = "nucleo-f446re", not(feature = "qemu")))]
mod nucleo_f446re;
#[cfg(all(feature = "nucleo-f446re", not(feature = "qemu")))]
pub use nucleo_f446re::*;

#[cfg(feature = "qemu")]
mod qemu;
#[cfg(feature = "qemu")]
pub use qemu::*;

/// The VCP (USART2) and the modem (UART4) both run at 115200 8N1.
pub const BAUD: u32 = 115_200;
/// Node 2 reads its SHT3x this often, ms.
pub const CLIMATE_PERIOD_MS: u32 = 500;
/// How long a node waits for the modem's `+OK`/`+ERR` to a set-up command, ms.
pub const REPLY_TIMEOUT_MS: u32 = 1_000;
/// Sends of one set-up command before it is reported as failed.
pub const SETUP_TRIES: u32 = 3;

/// The LED `identify` blinks: the Nucleo's green LD2 on PA5 (push-pull output). Call once
/// before [`led`].
pub fn led_init() {
    crate::reg::modify(crate::reg::RCC_AHB1ENR, 0, 1); // GPIOA
    let _ = crate::reg::read(crate::reg::RCC_AHB1ENR);
    crate::reg::modify(crate::reg::GPIOA, 0b11 << 10, 0b01 << 10); // MODER5: output
}

/// Switches the LED on or off (GPIOA_BSRR: bit 5 sets PA5, bit 21 resets it).
pub fn led(on: bool) {
    crate::reg::write(crate::reg::GPIOA + 0x18, if on { 1 << 5 } else { 1 << 21 });
}

/// RCC_CSR's reset flags of this start (RM0390, 6.3.21), then cleared (RMVF) so that the
/// next start shows its own. 0 under QEMU.
pub fn take_reset_flags() -> u32 {
    let flags = crate::reg::read(crate::reg::RCC_CSR);
    crate::reg::modify(crate::reg::RCC_CSR, 0, 1 << 24);
    flags
}
