//! Glue shared by the two node firmwares (`src/bin/node1.rs`, `src/bin/node2.rs`): the board
//! module (pins, clocks, timing, which sensors), the UART and I2C drivers, the sensors behind
//! one trait, the modem port and the clock. Every rule of the LoRa link (packets, CRC, ACK,
//! retransmission, duplicates, the JSON line) lives in the host-tested `lora_link` crate.

#![no_std]

pub mod board;
#[cfg(not(feature = "qemu"))]
pub mod i2c;
pub mod modem;
mod reg;
pub mod sensor;
pub mod time;
pub mod uart;
