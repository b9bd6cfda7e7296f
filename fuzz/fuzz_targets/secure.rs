//! Fuzzes the link crate's secure frames. The input is read as a key, a node, a counter, a
//! packet, an ACK and a change to make; every genuine uplink and ACK must open to what was
//! sealed, and no changed one may open (a change that leaves the bytes as they were is no
//! change). The rest of the input, as it is, must never open as an uplink or an ACK under the
//! key. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_link::packet::{AckPacket, SensorDataPacket};
use lora_link::secure::{
    open_ack, open_uplink, seal_ack, seal_uplink, Key, MAX_ACK_FRAME_LEN, MAX_UPLINK_LEN,
};

/// Takes `N` bytes from the front of `input` (zeros past its end).
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(input.len());
    out[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    out
}

/// Flips `bits` at `at`, or (bits 0) cuts the frame at `at`.
fn change(frame: &[u8], at: u8, bits: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    if bits == 0 {
        f.truncate(usize::from(at) % frame.len());
    } else {
        let i = usize::from(at) % frame.len();
        f[i] ^= bits;
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let key = Key::new(take::<16>(&mut input));
    let node = u16::from_le_bytes(take::<2>(&mut input));
    let counter = u32::from_le_bytes(take::<4>(&mut input));
    let [s0, s1, t0, t1, h0, h1, g0, g1, g2, g3, kind, at, bits] = take::<13>(&mut input);
    let packet = SensorDataPacket {
        seq_num: u16::from_le_bytes([s0, s1]),
        temperature: i16::from_le_bytes([t0, t1]),
        humidity: u16::from_le_bytes([h0, h1]),
        gas_resistance: u32::from_le_bytes([g0, g1, g2, g3]),
    };
    let ack = AckPacket {
        msg_type: 1 + kind % 2,
        seq_num: packet.seq_num,
    };

    let mut frame = [0u8; MAX_UPLINK_LEN];
    let n = seal_uplink(&key, node, counter, &packet, &mut frame).expect("fits");
    let opened = open_uplink(&key, node, &frame[..n]).expect("a genuine uplink opens");
    assert_eq!((opened.counter, opened.packet), (counter, packet));
    assert!(open_uplink(&key, node, &change(&frame[..n], at, bits)).is_err());

    let mut reply = [0u8; MAX_ACK_FRAME_LEN];
    let m = seal_ack(&key, node, counter, &ack, &mut reply).expect("fits");
    assert_eq!(open_ack(&key, node, counter, &reply[..m]), Ok(ack));
    assert!(open_ack(&key, node, counter, &change(&reply[..m], at, bits)).is_err());
    assert!(open_ack(&key, node, counter.wrapping_add(1), &reply[..m]).is_err());

    // What is left: bytes made up without the key.
    assert!(open_uplink(&key, node, input).is_err());
    assert!(open_ack(&key, node, counter, input).is_err());
});
