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

use crate::modem::Frame;
use crate::packet::AckPacket;

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

    /// What `frame` says about this packet.
    pub fn answer(&self, frame: &Frame<'_>) -> Answer {
        if frame.sender != crate::node2::ADDRESS {
            return Answer::Unrelated;
        }
        match AckPacket::decode_frame(frame.data) {
            Ok(ack) if ack.seq_num != self.seq => Answer::Unrelated,
            Ok(ack) if ack.msg_type == AckPacket::ACK => Answer::Ack,
            Ok(ack) if ack.msg_type == AckPacket::NACK => Answer::Nack,
            _ => Answer::Unrelated,
        }
    }
}

#[cfg(test)]
mod tests {
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
}
