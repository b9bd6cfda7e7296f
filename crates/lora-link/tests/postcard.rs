//! The hand-written postcard code agrees with the postcard crate (the original firmware's
//! encoder) on every packet, and decides every byte string the same way.

use lora_link::packet::{AckPacket, SensorDataPacket, MAX_ACK_LEN, MAX_FRAME_LEN};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// The original firmware's types, serialized by postcard.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Reference {
    seq_num: u16,
    temperature: i16,
    humidity: u16,
    gas_resistance: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ReferenceAck {
    msg_type: u8,
    seq_num: u16,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn encoding_is_postcards(seq: u16, t: i16, h: u16, g: u32) {
        let ours = SensorDataPacket { seq_num: seq, temperature: t, humidity: h, gas_resistance: g };
        let mut a = [0u8; MAX_FRAME_LEN];
        let n = ours.encode(&mut a).unwrap();
        let mut b = [0u8; MAX_FRAME_LEN];
        let theirs = postcard::to_slice(&Reference { seq_num: seq, temperature: t, humidity: h, gas_resistance: g }, &mut b).unwrap();
        prop_assert_eq!(&a[..n], &theirs[..]);
        prop_assert_eq!(SensorDataPacket::decode(&a[..n]), Ok((ours, n)));

        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = ours.encode_frame(&mut frame).unwrap();
        prop_assert_eq!(SensorDataPacket::decode_frame(&frame[..n]), Ok(ours));
    }

    #[test]
    fn ack_encoding_is_postcards(kind: u8, seq: u16) {
        let mut a = [0u8; MAX_ACK_LEN];
        let n = AckPacket { msg_type: kind, seq_num: seq }.encode(&mut a).unwrap();
        let mut b = [0u8; MAX_ACK_LEN];
        let theirs = postcard::to_slice(&ReferenceAck { msg_type: kind, seq_num: seq }, &mut b).unwrap();
        prop_assert_eq!(&a[..n], &theirs[..]);
    }

    /// Any bytes: both accept with the same packet and length, or both refuse.
    #[test]
    fn decoding_any_bytes_agrees_with_postcard(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
        let ours = SensorDataPacket::decode(&bytes).ok();
        let theirs = postcard::take_from_bytes::<Reference>(&bytes).ok().map(|(r, rest)| {
            (SensorDataPacket { seq_num: r.seq_num, temperature: r.temperature, humidity: r.humidity, gas_resistance: r.gas_resistance }, bytes.len() - rest.len())
        });
        prop_assert_eq!(ours, theirs);
        let ours = AckPacket::decode(&bytes).ok();
        let theirs = postcard::take_from_bytes::<ReferenceAck>(&bytes).ok().map(|(r, rest)| {
            (AckPacket { msg_type: r.msg_type, seq_num: r.seq_num }, bytes.len() - rest.len())
        });
        prop_assert_eq!(ours, theirs);
        // And a frame decoder never panics.
        let _ = SensorDataPacket::decode_frame(&bytes);
    }
}
