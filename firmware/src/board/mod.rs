//! The board the image is built for, chosen by a cargo feature: `nucleo-f446re` (the real
//! board, the default) or `qemu` (QEMU 7.2's `netduinoplus2`). Each module holds everything
//! that differs: clocks, pins, which sensors (real or emulated) and the node's timing.
//! Both use USART2 for the VCP and UART4 for the modem.

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
