//! What Node 1 sends and Node 2 answers, in postcard 1.x encoding (the original firmware used
//! postcard with serde; the property tests check this hand-written code against it):
//! unsigned integers as LEB128 varints, signed ones zigzag-encoded first, a `u8` as one byte,
//! struct fields in order with nothing around them.
//!
//! A sensor frame is the packet's postcard bytes followed by their CRC-16/IBM-3740,
//! big-endian: 6 to 16 bytes, no length, type, version or sync byte. An ACK carries no CRC.

use crate::crc::crc16;
use crate::BufferTooSmall;

/// Node 1's reading, one per radio frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorDataPacket {
    /// Starts at 1, +1 per packet, wraps at 65536.
    pub seq_num: u16,
    /// Tenths of °C, truncated (`(t * 10.0) as i16`).
    pub temperature: i16,
    /// Hundredths of %RH.
    pub humidity: u16,
    /// Ohms (BME680 gas resistance); [`NO_GAS`] when the sensor had no gas reading (its
    /// heater not stable, its measurement invalid): temperature and humidity still count.
    pub gas_resistance: u32,
}

/// `gas_resistance` of a packet without a gas reading: 4.29 GΩ, far above what a BME680
/// measures (its range ends in the hundreds of MΩ).
pub const NO_GAS: u32 = u32::MAX;

impl SensorDataPacket {
    /// The gas resistance, `None` for [`NO_GAS`].
    pub fn gas(&self) -> Option<u32> {
        (self.gas_resistance != NO_GAS).then_some(self.gas_resistance)
    }
}

/// Node 2's answer to a good frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPacket {
    /// [`AckPacket::ACK`] or [`AckPacket::NACK`] (the original Node 2 never sent a NACK).
    pub msg_type: u8,
    /// The acknowledged packet's `seq_num`.
    pub seq_num: u16,
}

/// Longest postcard encoding of a [`SensorDataPacket`]: 3 + 3 + 3 + 5 bytes.
pub const MAX_PACKET_LEN: usize = 14;
/// Longest sensor frame: the packet and its 2-byte CRC.
pub const MAX_FRAME_LEN: usize = MAX_PACKET_LEN + 2;
/// Shortest sensor frame: four one-byte varints and the CRC.
pub const MIN_FRAME_LEN: usize = 4 + 2;
/// Longest postcard encoding of an [`AckPacket`].
pub const MAX_ACK_LEN: usize = 1 + 3;

/// Why bytes are not a packet or frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end inside the packet.
    Truncated,
    /// A varint is longer than its type allows or overflows it.
    BadVarint,
    /// The frame's CRC does not match its bytes.
    Crc {
        /// The CRC the frame carries.
        carried: u16,
        /// The CRC of the bytes before it.
        computed: u16,
    },
    /// Bytes are left between the packet and the CRC.
    TrailingBytes,
    /// Frames are 6 to 16 bytes.
    BadLength(usize),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("packet truncated"),
            DecodeError::BadVarint => f.write_str("bad varint"),
            DecodeError::Crc { carried, computed } => {
                write!(
                    f,
                    "CRC mismatch: frame carries {carried:#06x}, bytes give {computed:#06x}"
                )
            }
            DecodeError::TrailingBytes => f.write_str("bytes left after the packet"),
            DecodeError::BadLength(n) => write!(f, "a sensor frame is 6 to 16 bytes, got {n}"),
        }
    }
}

impl SensorDataPacket {
    /// Writes the postcard encoding into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer { buf, len: 0 };
        w.varint(u32::from(self.seq_num))?;
        w.varint(u32::from(zigzag(self.temperature)))?;
        w.varint(u32::from(self.humidity))?;
        w.varint(self.gas_resistance)?;
        Ok(w.len)
    }

    /// Reads a packet from the start of `bytes`; returns it and the bytes it took (postcard's
    /// `take_from_bytes`).
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let packet = SensorDataPacket {
            seq_num: r.varint_u16()?,
            temperature: unzigzag(r.varint_u16()?),
            humidity: r.varint_u16()?,
            gas_resistance: r.varint_u32()?,
        };
        Ok((packet, r.at))
    }

    /// Writes the radio frame (postcard bytes + CRC, big-endian) into `buf`; returns its
    /// length.
    pub fn encode_frame(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let n = self.encode(buf)?;
        let crc = crc16(buf.get(..n).ok_or(BufferTooSmall)?);
        buf.get_mut(n..n + 2)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(&crc.to_be_bytes());
        Ok(n + 2)
    }

    /// Checks and reads a whole radio frame: the CRC first, then the packet, which must take
    /// every byte before the CRC.
    pub fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(DecodeError::BadLength(frame.len()));
        }
        let (body, tail) = frame.split_at(frame.len() - 2);
        let carried = match tail {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => return Err(DecodeError::Truncated),
        };
        let computed = crc16(body);
        if carried != computed {
            return Err(DecodeError::Crc { carried, computed });
        }
        let (packet, used) = Self::decode(body)?;
        if used != body.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(packet)
    }
}

impl AckPacket {
    /// `msg_type` of an acknowledgement.
    pub const ACK: u8 = 1;
    /// `msg_type` of a negative acknowledgement.
    pub const NACK: u8 = 2;

    /// The ACK of `seq_num`.
    pub fn ack(seq_num: u16) -> Self {
        AckPacket {
            msg_type: Self::ACK,
            seq_num,
        }
    }

    /// Writes the postcard encoding into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer { buf, len: 0 };
        w.byte(self.msg_type)?;
        w.varint(u32::from(self.seq_num))?;
        Ok(w.len)
    }

    /// Reads an ACK from the start of `bytes`; returns it and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let ack = AckPacket {
            msg_type: r.byte()?,
            seq_num: r.varint_u16()?,
        };
        Ok((ack, r.at))
    }

    /// Reads a whole ACK frame (what Node 1 receives): the packet must take every byte.
    pub fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        let (ack, used) = Self::decode(frame)?;
        if used != frame.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(ack)
    }

    /// The NACK of `seq_num`.
    pub fn nack(seq_num: u16) -> Self {
        AckPacket {
            msg_type: Self::NACK,
            seq_num,
        }
    }
}

fn zigzag(n: i16) -> u16 {
    ((n << 1) ^ (n >> 15)) as u16
}

fn unzigzag(n: u16) -> i16 {
    ((n >> 1) as i16) ^ -((n & 1) as i16)
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) -> Result<(), BufferTooSmall> {
        *self.buf.get_mut(self.len).ok_or(BufferTooSmall)? = b;
        self.len += 1;
        Ok(())
    }

    fn varint(&mut self, mut n: u32) -> Result<(), BufferTooSmall> {
        loop {
            let low = (n & 0x7F) as u8;
            n >>= 7;
            if n == 0 {
                return self.byte(low);
            }
            self.byte(low | 0x80)?;
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    /// A varint of at most `max_bytes` bytes whose last byte is at most `max_last` (postcard's
    /// rules: overlong encodings within the byte limit are accepted, as postcard does).
    fn varint(&mut self, max_bytes: u32, max_last: u8) -> Result<u32, DecodeError> {
        let mut out = 0u32;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > max_last {
                    return Err(DecodeError::BadVarint);
                }
                return Ok(out);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn varint_u16(&mut self) -> Result<u16, DecodeError> {
        // 16 = 2 * 7 + 2: the third byte holds 2 bits.
        let n = self.varint(3, 0b11)?;
        u16::try_from(n).map_err(|_| DecodeError::BadVarint)
    }

    fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        // 32 = 4 * 7 + 4: the fifth byte holds 4 bits.
        self.varint(5, 0b1111)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The two packets of docs/PROTOCOL.md, test vectors, checked against the original hardware's
    /// log.
    fn vectors() -> [(SensorDataPacket, Vec<u8>, u16, Vec<u8>); 2] {
        [
            (
                SensorDataPacket {
                    seq_num: 1,
                    temperature: 273,
                    humidity: 5887,
                    gas_resistance: 355_059,
                },
                hex("01 A2 04 FF 2D F3 D5 15"),
                0x9383,
                hex("01 01"),
            ),
            (
                SensorDataPacket {
                    seq_num: 300,
                    temperature: -53,
                    humidity: 8123,
                    gas_resistance: 52174,
                },
                hex("AC 02 69 BB 3F CE 97 03"),
                0x6756,
                hex("01 AC 02"),
            ),
        ]
    }

    #[test]
    fn the_test_vectors_encode_decode_and_check() {
        for (packet, postcard, crc, ack) in vectors() {
            let mut buf = [0u8; MAX_FRAME_LEN];
            let n = packet.encode(&mut buf).unwrap();
            assert_eq!(&buf[..n], &postcard[..]);
            assert_eq!(crc16(&postcard), crc);
            let n = packet.encode_frame(&mut buf).unwrap();
            let mut frame = postcard.clone();
            frame.extend_from_slice(&crc.to_be_bytes());
            assert_eq!(&buf[..n], &frame[..]);
            assert_eq!(SensorDataPacket::decode_frame(&frame), Ok(packet));

            let mut a = [0u8; MAX_ACK_LEN];
            let n = AckPacket::ack(packet.seq_num).encode(&mut a).unwrap();
            assert_eq!(&a[..n], &ack[..]);
            assert_eq!(
                AckPacket::decode(&ack),
                Ok((AckPacket::ack(packet.seq_num), n))
            );
        }
    }

    #[test]
    fn ack_frames_are_read_whole() {
        assert_eq!(
            AckPacket::decode_frame(&hex("01 01")),
            Ok(AckPacket::ack(1))
        );
        assert_eq!(
            AckPacket::decode_frame(&hex("02 AC 02")),
            Ok(AckPacket::nack(300))
        );
        assert_eq!(
            AckPacket::decode_frame(&hex("01 01 00")),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(
            AckPacket::decode_frame(&hex("01")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(AckPacket::decode_frame(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let (_, postcard, crc, _) = vectors()[0].clone();
        let mut frame = postcard;
        frame.extend_from_slice(&crc.to_be_bytes());
        frame[2] ^= 0x10;
        assert!(matches!(
            SensorDataPacket::decode_frame(&frame),
            Err(DecodeError::Crc {
                carried: 0x9383,
                ..
            })
        ));
    }

    #[test]
    fn frames_of_the_wrong_length_or_with_extra_bytes_are_refused() {
        assert_eq!(
            SensorDataPacket::decode_frame(&[0; 5]),
            Err(DecodeError::BadLength(5))
        );
        assert_eq!(
            SensorDataPacket::decode_frame(&[0; 17]),
            Err(DecodeError::BadLength(17))
        );
        // A valid packet plus one byte, with a CRC over all of it.
        let mut frame = hex("01 A2 04 FF 2D F3 D5 15 00");
        let crc = crc16(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(
            SensorDataPacket::decode_frame(&frame),
            Err(DecodeError::TrailingBytes)
        );
    }

    #[test]
    fn small_buffers_are_an_error_not_a_panic() {
        let (packet, ..) = vectors()[0].clone();
        for n in 0..10 {
            let mut buf = std::vec![0u8; n];
            assert_eq!(packet.encode_frame(&mut buf), Err(BufferTooSmall), "{n}");
        }
    }

    #[test]
    fn extreme_values_fit_the_maximum_lengths() {
        let packet = SensorDataPacket {
            seq_num: u16::MAX,
            temperature: i16::MIN,
            humidity: u16::MAX,
            gas_resistance: u32::MAX,
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(packet.encode_frame(&mut buf), Ok(MAX_FRAME_LEN));
        assert_eq!(SensorDataPacket::decode_frame(&buf), Ok(packet));
        let mut a = [0u8; MAX_ACK_LEN];
        assert_eq!(AckPacket::ack(u16::MAX).encode(&mut a), Ok(MAX_ACK_LEN));
    }
}
