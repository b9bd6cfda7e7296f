//! Glue shared by the two node firmwares (`src/bin/node1.rs`, `src/bin/node2.rs`): the board
//! module (pins, clocks, timing, which sensors), the UART and I2C drivers, the sensors behind
//! one trait, the modem port, the clock, the keys the image was built with, Node 1's
//! counter store and the words RAM keeps across a reset. Every rule of the LoRa link (packets, secure frames, ACK, retransmission,
//! duplicates and replays, the counter log, the JSON line) lives in the host-tested
//! `lora_link` crate.

#![no_std]

pub mod board;
pub mod counter_store;
#[cfg(not(feature = "qemu"))]
pub mod i2c;
pub mod kept;
pub mod keys;
pub mod modem;
mod reg;
pub mod sensor;
pub mod time;
pub mod uart;

/// What both nodes do in RTIC's `idle`: sleep until the next interrupt. RTIC's own idle is a
/// busy loop, which would keep a battery node's core awake (and QEMU spinning a host core)
/// between packets.
pub fn sleep_between_interrupts() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// What both nodes do first, in RTIC's `init`: clocks and pins, the monotonic clock, USART2
/// (VCP; its receive interrupt on when `vcp_input`: Node 2 takes the gateway's `cmd` lines)
/// and UART4 (modem, receive interrupt on). Returns the modem port and the UART4
/// interrupt's end of its byte queue (for [`modem::on_receive_interrupt`]). Call once.
pub fn start(syst: cortex_m::peripheral::SYST, vcp_input: bool) -> (modem::Modem, modem::RxSender) {
    board::init();
    time::Mono::start(syst, board::SYSTICK_HZ);
    uart::Uart::USART2.enable(board::PCLK1_HZ, board::BAUD, vcp_input);
    uart::Uart::UART4.enable(board::PCLK1_HZ, board::BAUD, true);
    let (queue, rx) = rtic_sync::make_channel!(u8, { modem::RX_QUEUE });
    (modem::Modem::new(uart::Uart::UART4, rx), queue)
}
