//! Node 2's JSON line, as the original firmware formats it (`core::fmt`, `{:.1}` of `f32`),
//! written into a caller's buffer without its terminator:
//!
//! `{"ts":12000,"id":"N2","n1":{"t":27.3,"h":58.9,"g":355059},"n2":{"t":27.9,"h":48.3},"sig":{"rssi":-27,"snr":13},"sts":{"rx":1,"err":0}}`
//!
//! The original ended it with a literal backslash-n and no newline byte; a firmware that wants
//! a real line end appends `\r\n` itself.
//!
//! [`Receiver`] holds Node 2's rules for a received frame (which to acknowledge, which to
//! print, what `sts.rx` and `sts.err` count), so the firmware only moves bytes:
//! - a frame whose CRC fails or that does not decode, and a `+RCV` line that broke, count in
//!   `err` and get no answer; nothing else does (the modem's `+OK`, `+READY` and other replies
//!   are not frames: the original counted them, see docs/PROTOCOL.md, "Defects of the original
//!   firmware fixed here");
//! - a good frame is acknowledged (`AckPacket::ack(seq)` to its sender), counted in `rx` and
//!   printed;
//! - a retransmission, i.e. a good frame from the same sender with the same seq as the last
//!   good one, is acknowledged again (its first ACK was lost) and counted in `rx` (it was
//!   received, as the gateway's own `rylr998` source counts `packets_received`) but not
//!   printed: a lost ACK never duplicates a line. The next line's `rx` shows it. Node 1 never
//!   goes back to an earlier seq, so the last good packet is all there is to remember.

use crate::modem::{Event, Frame};
use crate::packet::{AckPacket, DecodeError, SensorDataPacket};
use crate::write::Cursor;
use crate::BufferTooSmall;

/// Node 2's modem address (`AT+ADDRESS=2`).
pub const ADDRESS: u16 = 2;

/// What to do about one modem event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new packet: send `ack` to `to`, then print the line.
    New {
        /// Node 1's packet.
        packet: SensorDataPacket,
        /// The answer.
        ack: AckPacket,
        /// The sender's address, where the ACK goes.
        to: u16,
        /// The frame's RSSI, dBm.
        rssi: i16,
        /// The frame's SNR, dB.
        snr: i16,
    },
    /// A retransmission of the last packet: send `ack` to `to` again, print nothing.
    Duplicate {
        /// The answer.
        ack: AckPacket,
        /// The sender's address.
        to: u16,
    },
    /// A frame that failed (counted in `err`): no answer.
    Failed(FrameError),
    /// Not a frame (modem replies, noise): nothing to do, nothing counted.
    NotAFrame,
}

/// Why a received frame failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// CRC mismatch or bytes that are not a packet.
    Decode(DecodeError),
    /// A `+RCV` line that broke (bad header or tail, cut off).
    Broken,
}

/// Node 2's receive state: the counters of the line and the last good packet.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    rx: u32,
    err: u32,
    duplicates: u32,
    /// Sender and seq of the last good frame.
    last: Option<(u16, u16)>,
}

impl Receiver {
    /// Nothing received yet.
    pub const fn new() -> Self {
        Receiver {
            rx: 0,
            err: 0,
            duplicates: 0,
            last: None,
        }
    }

    /// Good frames received since boot, retransmissions included.
    pub fn rx(&self) -> u32 {
        self.rx
    }

    /// Frames that failed since boot.
    pub fn err(&self) -> u32 {
        self.err
    }

    /// Retransmissions acknowledged again and not printed (counted in `rx` too).
    pub fn duplicates(&self) -> u32 {
        self.duplicates
    }

    /// Applies Node 2's rules to one modem event.
    pub fn on_event(&mut self, event: &Event<'_>) -> Outcome {
        match event {
            Event::Frame(frame) => self.on_frame(frame),
            Event::Malformed { bytes, .. } if bytes.starts_with(b"+RCV=") => {
                self.err = self.err.wrapping_add(1);
                Outcome::Failed(FrameError::Broken)
            }
            _ => Outcome::NotAFrame,
        }
    }

    /// Applies Node 2's rules to one received frame.
    pub fn on_frame(&mut self, frame: &Frame<'_>) -> Outcome {
        let packet = match SensorDataPacket::decode_frame(frame.data) {
            Ok(packet) => packet,
            Err(e) => {
                self.err = self.err.wrapping_add(1);
                return Outcome::Failed(FrameError::Decode(e));
            }
        };
        let ack = AckPacket::ack(packet.seq_num);
        let key = (frame.sender, packet.seq_num);
        self.rx = self.rx.wrapping_add(1);
        if self.last == Some(key) {
            self.duplicates = self.duplicates.wrapping_add(1);
            return Outcome::Duplicate {
                ack,
                to: frame.sender,
            };
        }
        self.last = Some(key);
        Outcome::New {
            packet,
            ack,
            to: frame.sender,
            rssi: frame.rssi,
            snr: frame.snr,
        }
    }
}

/// Longest line [`write_line`] can produce (every number at its widest).
pub const MAX_LINE: usize = 256;

/// What one line reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node2Line {
    /// Milliseconds since Node 2 booted.
    pub ts: u32,
    /// Node 1's packet.
    pub n1: SensorDataPacket,
    /// Node 2's own SHT3x temperature, °C, when read.
    pub n2_temperature: Option<f32>,
    /// Node 2's own SHT3x humidity, %RH, when read.
    pub n2_humidity: Option<f32>,
    /// The frame's RSSI, dBm.
    pub rssi: i16,
    /// The frame's SNR, dB.
    pub snr: i16,
    /// Good frames received since boot (retransmissions included).
    pub rx: u32,
    /// Frames that failed (CRC or decoding) since boot.
    pub err: u32,
}

/// Writes `line` into `buf`; returns its length.
pub fn write_line(line: &Node2Line, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let n1 = &line.n1;
    let t = f32::from(n1.temperature) / 10.0;
    let h = f32::from(n1.humidity) / 100.0;
    let mut w = Cursor::new(buf);
    w.fmt(format_args!(
        "{{\"ts\":{},\"id\":\"N2\",\"n1\":{{\"t\":{t:.1},\"h\":{h:.1},\"g\":{}}},\"n2\":{{",
        line.ts, n1.gas_resistance
    ))?;
    match (line.n2_temperature, line.n2_humidity) {
        (Some(t), Some(h)) => w.fmt(format_args!("\"t\":{t:.1},\"h\":{h:.1}"))?,
        (Some(t), None) => w.fmt(format_args!("\"t\":{t:.1}"))?,
        (None, Some(h)) => w.fmt(format_args!("\"h\":{h:.1}"))?,
        (None, None) => {}
    }
    w.fmt(format_args!(
        "}},\"sig\":{{\"rssi\":{},\"snr\":{}}},\"sts\":{{\"rx\":{},\"err\":{}}}}}",
        line.rssi, line.snr, line.rx, line.err
    ))?;
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n2_temperature: Option<f32>, n2_humidity: Option<f32>) -> Node2Line {
        Node2Line {
            ts: 12000,
            n1: SensorDataPacket {
                seq_num: 1,
                temperature: 273,
                humidity: 5887,
                gas_resistance: 355_059,
            },
            n2_temperature,
            n2_humidity,
            rssi: -27,
            snr: 13,
            rx: 1,
            err: 0,
        }
    }

    fn written(l: &Node2Line) -> ([u8; MAX_LINE], usize) {
        let mut buf = [0u8; MAX_LINE];
        let n = write_line(l, &mut buf).unwrap();
        (buf, n)
    }

    /// docs/PROTOCOL.md, test vectors: packet 1 end to end (own SHT3x 27.88 °C / 48.26 %).
    #[test]
    fn the_vector_line_is_byte_identical() {
        let (buf, n) = written(&line(Some(27.88), Some(48.26)));
        assert_eq!(
            core::str::from_utf8(&buf[..n]).unwrap(),
            r#"{"ts":12000,"id":"N2","n1":{"t":27.3,"h":58.9,"g":355059},"n2":{"t":27.9,"h":48.3},"sig":{"rssi":-27,"snr":13},"sts":{"rx":1,"err":0}}"#
        );
    }

    #[test]
    fn n2_is_empty_until_the_sensor_was_read() {
        let (buf, n) = written(&line(None, None));
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains(r#""n2":{},"sig""#), "{text}");
        let (buf, n) = written(&line(Some(26.5), None));
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains(r#""n2":{"t":26.5},"sig""#), "{text}");
    }

    /// Packet 1's frame (docs/PROTOCOL.md, test vectors): `01 A2 04 FF 2D F3 D5 15 93 83`.
    const FRAME_1: [u8; 10] = [0x01, 0xA2, 0x04, 0xFF, 0x2D, 0xF3, 0xD5, 0x15, 0x93, 0x83];

    fn frame(sender: u16, data: &[u8]) -> Event<'_> {
        Event::Frame(Frame {
            sender,
            data,
            rssi: -27,
            snr: 13,
        })
    }

    #[test]
    fn a_good_frame_is_acked_counted_and_printed() {
        let mut r = Receiver::new();
        let Outcome::New {
            packet, ack, to, ..
        } = r.on_event(&frame(1, &FRAME_1))
        else {
            panic!("not new");
        };
        assert_eq!(packet.seq_num, 1);
        assert_eq!(to, 1);
        let mut buf = [0u8; 4];
        let n = ack.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x01, 0x01]);
        assert_eq!((r.rx(), r.err()), (1, 0));
    }

    #[test]
    fn a_retransmission_is_acked_and_counted_again_but_not_printed() {
        let mut r = Receiver::new();
        assert!(matches!(
            r.on_event(&frame(1, &FRAME_1)),
            Outcome::New { .. }
        ));
        assert_eq!(
            r.on_event(&frame(1, &FRAME_1)),
            Outcome::Duplicate {
                ack: AckPacket::ack(1),
                to: 1
            }
        );
        assert_eq!((r.rx(), r.err(), r.duplicates()), (2, 0, 1));
        // The same seq from another sender is new; so is the first sender's again after it
        // (only the last good packet is remembered).
        assert!(matches!(
            r.on_event(&frame(3, &FRAME_1)),
            Outcome::New { .. }
        ));
        assert!(matches!(
            r.on_event(&frame(1, &FRAME_1)),
            Outcome::New { .. }
        ));
        assert_eq!(r.rx(), 4);
    }

    #[test]
    fn only_failed_frames_count_as_errors() {
        let mut r = Receiver::new();
        let mut bad = FRAME_1;
        bad[9] ^= 0x01;
        assert!(matches!(
            r.on_event(&frame(1, &bad)),
            Outcome::Failed(FrameError::Decode(DecodeError::Crc { .. }))
        ));
        assert!(matches!(
            r.on_event(&frame(1, &[0xFF; 3])),
            Outcome::Failed(FrameError::Decode(DecodeError::BadLength(3)))
        ));
        let broken = Event::Malformed {
            reason: crate::modem::Malformed::BadTail,
            bytes: b"+RCV=1,10,",
        };
        assert_eq!(r.on_event(&broken), Outcome::Failed(FrameError::Broken));
        assert_eq!(r.err(), 3);
        let not_frames = [
            Event::Ok,
            Event::Ready,
            Event::Error(10),
            Event::Garbage(b"xyz"),
            Event::Malformed {
                reason: crate::modem::Malformed::BadReply,
                bytes: b"+OK+",
            },
        ];
        for e in &not_frames {
            assert_eq!(r.on_event(e), Outcome::NotAFrame, "{e:?}");
        }
        assert_eq!((r.rx(), r.err()), (0, 3));
        // A failed frame does not make the next good one a duplicate, nor the reverse.
        assert!(matches!(
            r.on_event(&frame(1, &FRAME_1)),
            Outcome::New { .. }
        ));
        assert!(matches!(r.on_event(&frame(1, &bad)), Outcome::Failed(_)));
        assert!(matches!(
            r.on_event(&frame(1, &FRAME_1)),
            Outcome::Duplicate { .. }
        ));
    }

    #[test]
    fn the_widest_line_fits_and_small_buffers_are_errors() {
        let widest = Node2Line {
            ts: u32::MAX,
            n1: SensorDataPacket {
                seq_num: u16::MAX,
                temperature: i16::MIN,
                humidity: u16::MAX,
                gas_resistance: u32::MAX,
            },
            n2_temperature: Some(-f32::MAX),
            n2_humidity: Some(-f32::MAX),
            rssi: i16::MIN,
            snr: i16::MIN,
            rx: u32::MAX,
            err: u32::MAX,
        };
        let (_, n) = written(&widest);
        assert!(n > 200, "{n}");
        let mut buf = [0u8; MAX_LINE];
        for size in [0, 10, 100, n - 1] {
            assert_eq!(write_line(&widest, &mut buf[..size]), Err(BufferTooSmall));
        }
    }
}
