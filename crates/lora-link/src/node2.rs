//! Node 2's JSON line, as the original firmware formats it (`core::fmt`, `{:.1}` of `f32`),
//! written into a caller's buffer without its terminator:
//!
//! `{"ts":12000,"id":"N2","n1":{"t":27.3,"h":58.9,"g":355059},"n2":{"t":27.9,"h":48.3},"sig":{"rssi":-27,"snr":13},"sts":{"rx":1,"err":0}}`
//!
//! The original ended it with a literal backslash-n and no newline byte; a firmware that wants
//! a real line end appends `\r\n` itself.

use crate::packet::SensorDataPacket;
use crate::write::Cursor;
use crate::BufferTooSmall;

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
    /// Good frames received since boot.
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

    /// LORA_LINK.md: packet 1 end to end (own SHT3x 27.88 °C / 48.26 %).
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
