//! Node 1's side of the link: which sequence number it sends, how often it tries, and what an
//! answer from Node 2 means. Pure rules, no I/O; the firmware only moves bytes and waits.
//!
//! - The first packet after boot is seq [`FIRST_SEQ`] (1); each new packet takes the next one
//!   ([`next_seq`]), whatever happened to the previous packet (wraps 65535 → 0).
//! - A packet is sent at most [`MAX_ATTEMPTS`] times (one send and 3 retransmissions), always
//!   with the same seq: again after an ACK timeout or a NACK of that seq. Then Node 1 gives up
//!   on it and the packet is lost (the original firmware never retransmitted).
//! - Only a frame from Node 2's address that is exactly an [`AckPacket`] of the seq in flight
//!   answers it; a late ACK of an earlier seq, or anything else, is ignored
//!   ([`Answer::Unrelated`]).
//!
//! Node 2 ACKs a retransmission it already printed again without printing it twice
//! ([`crate::node2::Receiver`]): a lost ACK costs a retransmission, never a duplicate line.
//!
//! Secure frames (`docs/PROTOCOL.md`, "Secure frames"):
//! - each packet is sealed once with the next frame counter, and every attempt sends those
//!   same bytes (a retransmission is the same frame, same counter);
//! - only an ACK that opens with the node's key for the counter in flight
//!   ([`Transmission::answer_sealed`]) answers it: a forged ACK, one of an earlier frame played
//!   back, or one of the original format is [`Answer::Unrelated`];
//! - a counter is used only once the reservation that covers it is stored durably
//!   ([`Counter`]): when storing fails, no counter is handed out and nothing is sent.

pub mod commands;

use crate::downlink::NodeCommand;
use crate::modem::Frame;
use crate::packet::AckPacket;
use crate::secure::{self, FrameCounter, Key};

/// Node 1's modem address (`AT+ADDRESS=1`).
pub const ADDRESS: u16 = 1;
/// Sequence number of the first packet after boot.
pub const FIRST_SEQ: u16 = 1;
/// Sends of one packet at most: the first and 3 retransmissions.
pub const MAX_ATTEMPTS: u8 = 4;

/// The seq of the packet after `seq`.
pub fn next_seq(seq: u16) -> u16 {
    seq.wrapping_add(1)
}

/// What a received frame means for the packet in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Node 2 has it: done.
    Ack,
    /// Node 2 refused it: send it again (if attempts are left).
    Nack,
    /// Not an answer to this packet; keep waiting.
    Unrelated,
}

/// One packet in flight: its seq and the attempts used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmission {
    seq: u16,
    attempts: u8,
}

impl Transmission {
    /// Packet `seq`, not sent yet.
    pub fn new(seq: u16) -> Self {
        Transmission { seq, attempts: 0 }
    }

    /// The packet's seq (the same on every attempt).
    pub fn seq(&self) -> u16 {
        self.seq
    }

    /// Attempts used so far.
    pub fn attempts(&self) -> u8 {
        self.attempts
    }

    /// Starts the next attempt and returns its number (1 to [`MAX_ATTEMPTS`]), or `None`
    /// when all were used: give up.
    pub fn next_attempt(&mut self) -> Option<u8> {
        if self.attempts >= MAX_ATTEMPTS {
            return None;
        }
        self.attempts += 1;
        Some(self.attempts)
    }

    /// What `frame` says about this packet (original format: a plain `AckPacket`).
    pub fn answer(&self, frame: &Frame<'_>) -> Answer {
        if frame.sender != crate::node2::ADDRESS {
            return Answer::Unrelated;
        }
        self.judge(AckPacket::decode_frame(frame.data).ok())
    }

    /// What `frame` says about this packet, sent as a secure uplink with `counter` under
    /// `key`: only Node 2's ACK sealed for that very frame counts.
    pub fn answer_sealed(&self, key: &Key, counter: u32, frame: &Frame<'_>) -> Answer {
        self.answer_with_command(key, counter, frame).0
    }

    /// [`Transmission::answer_sealed`], and the command the ACK carries
    /// ([`commands`]): only an ACK of this packet gives one.
    pub fn answer_with_command(
        &self,
        key: &Key,
        counter: u32,
        frame: &Frame<'_>,
    ) -> (Answer, Option<NodeCommand>) {
        if frame.sender != crate::node2::ADDRESS {
            return (Answer::Unrelated, None);
        }
        let opened = secure::open_ack_with(key, ADDRESS, counter, frame.data).ok();
        let answer = self.judge(opened.map(|(ack, _)| ack));
        let command = opened
            .and_then(|(_, c)| c)
            .filter(|_| answer == Answer::Ack);
        (answer, command)
    }

    fn judge(&self, ack: Option<AckPacket>) -> Answer {
        match ack {
            Some(ack) if ack.seq_num != self.seq => Answer::Unrelated,
            Some(ack) if ack.msg_type == AckPacket::ACK => Answer::Ack,
            Some(ack) if ack.msg_type == AckPacket::NACK => Answer::Nack,
            _ => Answer::Unrelated,
        }
    }
}

/// Why [`Counter::next`] gave no counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError<E> {
    /// Storing a reservation failed: nothing may be sent; the next call tries again.
    Store(E),
    /// Every counter is used: the node needs a new key.
    Exhausted,
}

/// Node 1's frame counter with its durable store: a counter is handed out only once the
/// reservation that covers it is stored ([`secure::FrameCounter`] says when one is due; the
/// caller's `store` writes it, to flash on the board).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    counter: FrameCounter,
    /// A reservation due before the next counter is used, not stored yet.
    unsaved: Option<u32>,
}

impl Counter {
    /// After a reset, from the reservation stored last (`None`: a new board).
    pub fn resume(stored: Option<u32>) -> Counter {
        let (counter, reserve) = FrameCounter::resume(stored);
        Counter {
            counter,
            unsaved: Some(reserve),
        }
    }

    /// The counter for the next new frame. `store` must make its argument durable before it
    /// returns `Ok`; it is called only when a reservation is due.
    pub fn next<E>(
        &mut self,
        mut store: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<u32, CounterError<E>> {
        if let Some(reserve) = self.unsaved {
            store(reserve).map_err(CounterError::Store)?;
            self.unsaved = None;
        }
        let before = self.counter;
        let (counter, reserve) = self.counter.next_counter().ok_or(CounterError::Exhausted)?;
        if let Some(reserve) = reserve {
            if let Err(e) = store(reserve) {
                self.counter = before;
                return Err(CounterError::Store(e));
            }
        }
        Ok(counter)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn frame(sender: u16, data: &[u8]) -> Frame<'_> {
        Frame {
            sender,
            data,
            rssi: -40,
            snr: 9,
        }
    }

    #[test]
    fn seq_starts_at_one_and_wraps() {
        assert_eq!(FIRST_SEQ, 1);
        assert_eq!(next_seq(1), 2);
        assert_eq!(next_seq(u16::MAX), 0);
    }

    #[test]
    fn a_packet_is_sent_four_times_at_most_with_the_same_seq() {
        let mut t = Transmission::new(7);
        let tries: [Option<u8>; 5] = core::array::from_fn(|_| t.next_attempt());
        assert_eq!(tries, [Some(1), Some(2), Some(3), Some(4), None]);
        assert_eq!(t.seq(), 7);
        assert_eq!(t.attempts(), MAX_ATTEMPTS);
    }

    #[test]
    fn only_node2s_answer_to_this_seq_counts() {
        // docs/PROTOCOL.md, test vectors: the ACK of packet 1 is `01 01`, of packet 300 `01 AC 02`.
        let t = Transmission::new(1);
        assert_eq!(t.answer(&frame(2, &[0x01, 0x01])), Answer::Ack);
        assert_eq!(t.answer(&frame(2, &[0x02, 0x01])), Answer::Nack);
        assert_eq!(t.answer(&frame(3, &[0x01, 0x01])), Answer::Unrelated);
        assert_eq!(t.answer(&frame(2, &[0x01, 0x02])), Answer::Unrelated);
        assert_eq!(t.answer(&frame(2, &[0x01, 0x01, 0x00])), Answer::Unrelated);
        assert_eq!(t.answer(&frame(2, &[0x07, 0x01])), Answer::Unrelated);
        assert_eq!(t.answer(&frame(2, &[0x01])), Answer::Unrelated);
        let t = Transmission::new(300);
        assert_eq!(t.answer(&frame(2, &[0x01, 0xAC, 0x02])), Answer::Ack);
    }

    /// The key of docs/PROTOCOL.md's test vectors: published, for tests only.
    const TEST_KEY: Key = Key::new([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);

    fn sealed_ack(key: &Key, counter: u32, ack: AckPacket) -> ([u8; 16], usize) {
        let mut buf = [0u8; 16];
        let n = secure::seal_ack(key, ADDRESS, counter, &ack, &mut buf).unwrap();
        (buf, n)
    }

    #[test]
    fn only_node2s_sealed_answer_to_this_frame_counts() {
        let t = Transmission::new(1);
        // docs/PROTOCOL.md, secure-frame vectors: the ACK of packet 1 sent with counter 7.
        let vector = [
            0x01, 0x48, 0x95, 0x75, 0x8A, 0x10, 0x6E, 0x10, 0x5B, 0x41, 0xAD,
        ];
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &vector)),
            Answer::Ack
        );
        // From anyone else, for another counter (an earlier frame's ACK played back), under
        // another key (forged), or in the original format: not an answer.
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(3, &vector)),
            Answer::Unrelated
        );
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 8, &frame(2, &vector)),
            Answer::Unrelated
        );
        let (forged, n) = sealed_ack(&Key::new([0x55; 16]), 7, AckPacket::ack(1));
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &forged[..n])),
            Answer::Unrelated
        );
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &[0x01, 0x01])),
            Answer::Unrelated
        );
        let mut flipped = vector;
        flipped[4] ^= 0x08;
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &flipped)),
            Answer::Unrelated
        );
        // A sealed NACK of this seq asks for the frame again; an ACK of another seq is not
        // this packet's.
        let (nack, n) = sealed_ack(&TEST_KEY, 7, AckPacket::nack(1));
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &nack[..n])),
            Answer::Nack
        );
        let (other, n) = sealed_ack(&TEST_KEY, 7, AckPacket::ack(2));
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &other[..n])),
            Answer::Unrelated
        );
    }

    #[test]
    fn only_the_sealed_ack_of_this_frame_gives_a_command() {
        use crate::downlink::Kind;
        // docs/PROTOCOL.md, "Downlink": the ACK of packet 1 (counter 7) with command 1,
        // interval 5 s.
        let vector = [
            0x01, 0x48, 0x95, 0xC6, 0xE5, 0x4C, 0xAB, 0xF1, 0xD1, 0x86, 0x00, 0xA4, 0x03, 0x22,
            0xDB, 0x6C, 0xBE, 0xC8, 0x9E,
        ];
        let interval = NodeCommand {
            number: 1,
            kind: Kind::Interval(5),
        };
        let t = Transmission::new(1);
        assert_eq!(
            t.answer_with_command(&TEST_KEY, 7, &frame(2, &vector)),
            (Answer::Ack, Some(interval))
        );
        assert_eq!(
            t.answer_sealed(&TEST_KEY, 7, &frame(2, &vector)),
            Answer::Ack
        );
        for (t, counter, sender) in [
            (Transmission::new(2), 7, 2), // another seq
            (Transmission::new(1), 8, 2), // another frame
            (Transmission::new(1), 7, 3), // not Node 2
        ] {
            assert_eq!(
                t.answer_with_command(&TEST_KEY, counter, &frame(sender, &vector)),
                (Answer::Unrelated, None)
            );
        }
        // A NACK carrying a command: the NACK counts, the command does not.
        let mut buf = [0u8; secure::MAX_ACK_FRAME_LEN];
        let n = secure::seal_ack_with(
            &TEST_KEY,
            ADDRESS,
            7,
            &AckPacket::nack(1),
            Some(&interval),
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            Transmission::new(1).answer_with_command(&TEST_KEY, 7, &frame(2, &buf[..n])),
            (Answer::Nack, None)
        );
    }

    #[test]
    fn a_counter_is_used_only_after_its_reservation_is_stored() {
        let mut stored = std::vec::Vec::new();
        let mut c = Counter::resume(None);
        let ok = |stored: &mut std::vec::Vec<u32>, r| {
            stored.push(r);
            Ok::<(), ()>(())
        };
        assert_eq!(c.next(|r| ok(&mut stored, r)), Ok(0));
        assert_eq!(stored, [secure::RESERVE]);
        for want in 1..secure::RESERVE {
            assert_eq!(c.next(|r| ok(&mut stored, r)), Ok(want));
        }
        assert_eq!(stored.len(), 1, "one write per block");
        // The next block's reservation fails: no counter, and the next call tries again.
        assert_eq!(c.next(|_| Err("flash")), Err(CounterError::Store("flash")));
        assert_eq!(c.next(|_| Err("flash")), Err(CounterError::Store("flash")));
        assert_eq!(c.next(|r| ok(&mut stored, r)), Ok(secure::RESERVE));
        assert_eq!(stored, [secure::RESERVE, 2 * secure::RESERVE]);

        // After a reset the first counter is the stored reservation, used only once the next
        // reservation is stored.
        let mut again = Counter::resume(Some(2 * secure::RESERVE));
        assert_eq!(again.next(|_| Err(())), Err(CounterError::Store(())));
        let mut after = std::vec::Vec::new();
        assert_eq!(again.next(|r| ok(&mut after, r)), Ok(2 * secure::RESERVE));
        assert_eq!(after, [3 * secure::RESERVE]);
        let mut end = Counter::resume(Some(u32::MAX));
        assert_eq!(end.next(|_| Ok::<(), ()>(())), Err(CounterError::Exhausted));
    }
}
