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
pub mod recovery;
mod reg;
pub mod sensor;
pub mod stack;
pub mod time;
pub mod uart;

/// The radio region the image was built for (`scripts/firmware --region`, `us915` by
/// default): its band, LoRa parameters and output power (`lora_link::at::Region`).
pub const REGION: lora_link::at::Region = include!(concat!(env!("OUT_DIR"), "/region.rs"));

/// The firmware's version, as the nodes report it (`lora_link::downlink::NodeInfo::version`).
pub const VERSION: [u8; 3] = [
    number(env!("CARGO_PKG_VERSION_MAJOR")),
    number(env!("CARGO_PKG_VERSION_MINOR")),
    number(env!("CARGO_PKG_VERSION_PATCH")),
];

/// A decimal number of at most 255 (a version part), at compile time.
const fn number(text: &str) -> u8 {
    let bytes = text.as_bytes();
    let mut value: u8 = 0;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0');
        i += 1;
    }
    value
}

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
    stack::paint_and_guard();
    board::init();
    time::Mono::start(syst, board::SYSTICK_HZ);
    uart::Uart::USART2.enable(board::PCLK1_HZ, board::BAUD, vcp_input);
    uart::Uart::UART4.enable(board::PCLK1_HZ, board::BAUD, true);
    let (queue, rx) = rtic_sync::make_channel!(u8, { modem::RX_QUEUE });
    (modem::Modem::new(uart::Uart::UART4, rx), queue)
}
