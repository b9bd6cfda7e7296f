//! Secure frames, checked on every input proptest makes up: every genuine uplink and ACK
//! opens to what was sealed; no forged, replayed, truncated, extended or bit-flipped one is
//! ever accepted. `PROPTEST_CASES` raises the number of cases (BENCHMARKS.md and the issue
//! note give the count of a long run: `PROPTEST_CASES=1000000 cargo test --release -p
//! lora-link --test secure`).

use lora_link::packet::{AckPacket, SensorDataPacket};
use lora_link::secure::{
    freshness, open_ack, open_uplink, receive, seal_ack, seal_uplink, Accepted, Freshness, Key,
    Rejection, Sender, MAX_ACK_FRAME_LEN, MAX_UPLINK_LEN,
};
use proptest::prelude::*;

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        ..default
    }
}

fn packet() -> impl Strategy<Value = SensorDataPacket> {
    (any::<u16>(), any::<i16>(), any::<u16>(), any::<u32>()).prop_map(|(s, t, h, g)| {
        SensorDataPacket {
            seq_num: s,
            temperature: t,
            humidity: h,
            gas_resistance: g,
        }
    })
}

fn ack() -> impl Strategy<Value = AckPacket> {
    (1u8..=2, any::<u16>()).prop_map(|(msg_type, seq_num)| AckPacket { msg_type, seq_num })
}

/// A change to a frame: flip bits of one byte, cut it, or add bytes.
#[derive(Debug, Clone)]
enum Tamper {
    Flip { at: usize, bits: u8 },
    Cut(usize),
    Extend(Vec<u8>),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Tamper::Flip { at, bits }),
        any::<usize>().prop_map(Tamper::Cut),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Tamper::Extend),
    ]
}

fn apply(frame: &[u8], t: &Tamper) -> Vec<u8> {
    let mut f = frame.to_vec();
    match t {
        Tamper::Flip { at, bits } => f[at % frame.len()] ^= bits,
        Tamper::Cut(n) => f.truncate(n % frame.len()),
        Tamper::Extend(more) => f.extend_from_slice(more),
    }
    f
}

proptest! {
    #![proptest_config(config(4_096))]

    #[test]
    fn every_genuine_uplink_opens_to_what_was_sealed(
        key: [u8; 16], node: u16, counter: u32, p in packet()
    ) {
        let key = Key::new(key);
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&key, node, counter, &p, &mut frame).unwrap();
        let opened = open_uplink(&key, node, &frame[..n]).unwrap();
        prop_assert_eq!(opened.counter, counter);
        prop_assert_eq!(opened.packet, p);
    }

    #[test]
    fn no_tampered_uplink_is_accepted(
        key: [u8; 16], node: u16, counter: u32, p in packet(), t in tamper()
    ) {
        let key = Key::new(key);
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&key, node, counter, &p, &mut frame).unwrap();
        let changed = apply(&frame[..n], &t);
        prop_assert!(open_uplink(&key, node, &changed).is_err(), "{:?} accepted", t);
    }

    #[test]
    fn no_uplink_opens_under_another_key_or_sender(
        key: [u8; 16], other: [u8; 16], node: u16, forged_node: u16, counter: u32, p in packet()
    ) {
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&Key::new(key), node, counter, &p, &mut frame).unwrap();
        if other != key {
            prop_assert!(open_uplink(&Key::new(other), node, &frame[..n]).is_err());
        }
        if forged_node != node {
            prop_assert!(open_uplink(&Key::new(key), forged_node, &frame[..n]).is_err());
        }
    }

    /// Bytes from someone without the key: refused whatever they are.
    #[test]
    fn made_up_bytes_are_never_an_uplink_or_an_ack(
        key: [u8; 16], node: u16, counter: u32,
        bytes in proptest::collection::vec(any::<u8>(), 0..40)
    ) {
        let key = Key::new(key);
        prop_assert!(open_uplink(&key, node, &bytes).is_err());
        prop_assert!(open_ack(&key, node, counter, &bytes).is_err());
    }

    #[test]
    fn an_ack_opens_only_for_its_node_counter_and_key(
        key: [u8; 16], node: u16, counter: u32, a in ack(),
        other_counter: u32, other_node: u16, t in tamper()
    ) {
        let key = Key::new(key);
        let mut frame = [0u8; MAX_ACK_FRAME_LEN];
        let n = seal_ack(&key, node, counter, &a, &mut frame).unwrap();
        prop_assert_eq!(open_ack(&key, node, counter, &frame[..n]), Ok(a));
        if other_counter != counter {
            // An ACK of an earlier frame, played back: refused.
            prop_assert!(open_ack(&key, node, other_counter, &frame[..n]).is_err());
        }
        if other_node != node {
            prop_assert!(open_ack(&key, other_node, counter, &frame[..n]).is_err());
        }
        let changed = apply(&frame[..n], &t);
        prop_assert!(open_ack(&key, node, counter, &changed).is_err(), "{:?} accepted", t);
    }

    /// A receiver that keeps the highest counter accepted takes each counter once: a frame
    /// played back later is refused, the same frame right again is a repeat.
    #[test]
    fn a_played_back_uplink_is_a_replay(counters in proptest::collection::vec(any::<u32>(), 1..50)) {
        let mut highest: Option<u32> = None;
        let mut accepted = Vec::new();
        for c in counters {
            match freshness(highest, c) {
                Freshness::New => {
                    prop_assert!(highest.is_none_or(|h| c > h));
                    highest = Some(c);
                    accepted.push(c);
                }
                Freshness::Repeat => prop_assert_eq!(Some(c), highest),
                Freshness::Replay => prop_assert!(highest.is_some_and(|h| c < h)),
            }
        }
        for w in accepted.windows(2) {
            prop_assert!(w[0] < w[1], "strictly increasing: {:?}", accepted);
        }
    }

    /// A receiver's stream: the node's genuine frames (counters rising, each sent once or
    /// twice), mixed with an attacker's frames (earlier genuine ones played back, forged under
    /// another key, tampered copies). Every genuine frame is accepted once as new (its second
    /// sending as a repeat) and nothing of the attacker's ever is.
    #[test]
    fn a_receiver_takes_every_genuine_frame_once_and_nothing_else(
        key: [u8; 16],
        wrong: [u8; 16],
        node: u16,
        steps in proptest::collection::vec((1u32..1000, any::<bool>(), 0u8..4, packet(), tamper()), 1..40),
    ) {
        prop_assume!(key != wrong);
        let (key, wrong) = (Key::new(key), Key::new(wrong));
        let mut highest: Option<u32> = None;
        let mut counter = 0u32;
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut new = 0usize;
        let mut buf = [0u8; MAX_UPLINK_LEN];
        for (step, twice, attack, p, t) in steps {
            counter += step;
            let n = seal_uplink(&key, node, counter, &p, &mut buf).unwrap();
            let genuine = buf[..n].to_vec();
            for sending in 0..if twice { 2 } else { 1 } {
                match receive(Sender::Keyed(&key), node, highest, &genuine) {
                    Ok(Accepted::Secure { counter: c, repeat, packet, .. }) => {
                        prop_assert_eq!((c, repeat, packet), (counter, sending == 1, p));
                        if !repeat {
                            new += 1;
                        }
                        highest = Some(c);
                    }
                    other => prop_assert!(false, "genuine frame not taken: {:?}", other),
                }
            }
            let attacker = match attack {
                0 if !sent.is_empty() => sent[usize::from(p.seq_num) % sent.len()].clone(),
                1 => {
                    let n = seal_uplink(&wrong, node, counter + 1, &p, &mut buf).unwrap();
                    buf[..n].to_vec()
                }
                _ => apply(&genuine, &t),
            };
            let verdict = receive(Sender::Keyed(&key), node, highest, &attacker);
            prop_assert!(verdict.is_err(), "attacker frame taken: {:?}", verdict);
            if attack == 0 && !sent.is_empty() {
                prop_assert_eq!(verdict, Err(Rejection::Replay));
            }
            sent.push(genuine);
        }
        prop_assert_eq!(new, sent.len());
    }
}
