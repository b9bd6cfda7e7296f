//! The radio link between iiot-gateway's sensor nodes, in one place: what Node 1 sends, what
//! Node 2 answers, how the REYAX RYLR998 modem carries both, and the JSON line Node 2 prints.
//! The protocol is written down in `docs/PROTOCOL.md` at the repository root; its test
//! vectors are this crate's tests, and it names the test that checks each one.
//!
//! - [`packet`]: `SensorDataPacket` and `AckPacket` in postcard 1.x encoding, and the sensor
//!   frame (postcard bytes + CRC-16/IBM-3740, big-endian).
//! - [`crc`](mod@crc): CRC-16/IBM-3740.
//! - [`modem`]: an incremental parser of the modem's output, fed arbitrary byte chunks;
//!   `+RCV` frames are cut by their length field, whatever bytes the data holds.
//! - [`at`]: the AT commands the nodes and the gateway send.
//! - [`node1`]: Node 1's rules: sequence numbers, retransmission, what an answer means, and
//!   ([`node1::commands`]) which command it applies and what its uplinks say back.
//! - [`node2`]: Node 2's rules for a received frame (ACK, duplicates, `rx`/`err`) and its JSON
//!   line, byte-identical to the original firmware's.
//! - [`secure`]: secure frames (AES-128-CCM with a per-node key, a frame counter that never
//!   goes back, ACKs bound to the frame they answer).
//! - [`counter_log`]: how Node 1 keeps its counter reservations and its settings in two flash
//!   sectors, safe against a power loss at any moment.
//! - [`vcp`]: the downlink's text lines on Node 2's VCP: the gateway's `cmd` line and Node 2's
//!   reports.
//!
//! `#![no_std]`, no allocation, no `unsafe` (the AES and CCM code is RustCrypto's), and no
//! panic on any input: every function takes
//! caller-owned buffers and returns an error when one is too small. The gateway (host) and
//! the firmware (`thumbv7em-none-eabihf`) both build it; nothing of the link is written twice.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic path in the library (tests may index and unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod at;
pub mod counter_log;
pub mod crc;
pub mod downlink;
pub mod modem;
pub mod node1;
pub mod node2;
pub mod packet;
pub mod secure;
pub mod vcp;
mod write;

pub use write::BufferTooSmall;
