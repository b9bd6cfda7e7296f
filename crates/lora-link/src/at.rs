//! The AT commands sent to the RYLR998, each written into a caller's buffer with its `\r\n`.
//! Every builder returns the command's length, or [`BufferTooSmall`]; [`send`] also refuses
//! data the modem cannot carry.

use core::fmt;

use crate::write::Cursor;
use crate::BufferTooSmall;

/// Most data bytes `AT+SEND` carries.
pub const MAX_SEND: usize = 240;
/// Longest command (`AT+SEND=65535,240,` + 240 bytes + `\r\n`).
pub const MAX_COMMAND: usize = 18 + MAX_SEND + 2;

/// Why a command could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// The caller's buffer is too small.
    BufferTooSmall,
    /// `AT+SEND` data must be 1 to 240 bytes.
    BadDataLength(usize),
}

impl From<BufferTooSmall> for CommandError {
    fn from(_: BufferTooSmall) -> Self {
        CommandError::BufferTooSmall
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::BufferTooSmall => f.write_str("buffer too small"),
            CommandError::BadDataLength(n) => {
                write!(f, "AT+SEND carries 1 to {MAX_SEND} bytes, not {n}")
            }
        }
    }
}

/// `AT+PARAMETER=<sf>,<bw>,<cr>,<preamble>`: spreading factor, bandwidth code, coding rate
/// code, preamble length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadioParameters {
    /// Spreading factor, 5 to 11.
    pub spreading_factor: u8,
    /// Bandwidth: 7 = 125 kHz, 8 = 250 kHz, 9 = 500 kHz.
    pub bandwidth: u8,
    /// Coding rate: 1 = 4/5 ... 4 = 4/8.
    pub coding_rate: u8,
    /// Preamble length, 4 to 24 (12 unless the network id is 18).
    pub preamble: u8,
}

impl RadioParameters {
    /// The hardware project's setting, `7,9,1,7`.
    pub const PROJECT: RadioParameters = RadioParameters {
        spreading_factor: 7,
        bandwidth: 9,
        coding_rate: 1,
        preamble: 7,
    };

    /// Time on air of a LoRa packet carrying `payload` bytes, in microseconds (Semtech's
    /// formula: explicit header, payload CRC on, low data rate optimisation when a symbol
    /// lasts more than 16 ms). `None` for a bandwidth code other than 7, 8 or 9. The modem's
    /// own bytes around the data are not counted.
    pub fn airtime_us(&self, payload: usize) -> Option<u32> {
        let bw_hz: u64 = match self.bandwidth {
            7 => 125_000,
            8 => 250_000,
            9 => 500_000,
            _ => return None,
        };
        let sf = u64::from(self.spreading_factor);
        // One symbol: 2^SF / BW, in nanoseconds.
        let symbol_ns = (1u64 << sf) * 1_000_000_000 / bw_hz;
        let low_rate = u64::from(symbol_ns > 16_000_000);
        let bits = (8 * payload as u64 + 16 + 28).saturating_sub(4 * sf);
        let per_block = 4 * (sf.checked_sub(2 * low_rate)?);
        let blocks = bits.div_ceil(per_block.max(1));
        let payload_symbols = 8 + blocks * (u64::from(self.coding_rate) + 4);
        // Preamble: its symbols plus 4.25, in quarter symbols.
        let quarters = (u64::from(self.preamble) * 4 + 17) + payload_symbols * 4;
        u32::try_from(quarters * symbol_ns / 4 / 1_000).ok()
    }
}

/// The LoRa network both nodes join (`AT+NETWORKID`).
pub const NETWORK_ID: u8 = 18;
/// The band of the hardware project, Hz (`AT+BAND`): [`Region::Us915`]'s.
pub const BAND_HZ: u32 = 915_000_000;
/// Commands in a node's start-up ([`setup`]).
pub const SETUP_STEPS: usize = 6;

/// Where the link may transmit, and so how: one setting for the band, the LoRa parameters and
/// the output power, the same on the nodes (chosen when their firmware is built) and on the
/// gateway (`[source] region`). docs/PROTOCOL.md, "Regions", names each region's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The Americas' 902-928 MHz ISM band (FCC part 15.247): 915 MHz, 500 kHz (a digitally
    /// modulated system needs 500 kHz or more), SF7, 22 dBm (the modem's most; the rule allows
    /// 30 dBm conducted). The hardware project's setting.
    Us915,
    /// Europe's 869.4-869.65 MHz sub-band (ETSI EN 300 220, ERC/REC 70-03 band 54): 869.525
    /// MHz, 125 kHz (the sub-band is 250 kHz wide), SF7, 14 dBm (within 27 dBm ERP with any
    /// antenna up to 15 dBi), 10 % duty cycle.
    Eu868,
}

/// What a [`Region`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSettings {
    /// `AT+BAND`, Hz.
    pub band_hz: u32,
    /// `AT+PARAMETER`.
    pub parameters: RadioParameters,
    /// `AT+CRFOP`, dBm (the RYLR998 takes 0 to 22).
    pub power_dbm: u8,
}

impl Region {
    /// Every region, the default first.
    pub const ALL: [Region; 2] = [Region::Us915, Region::Eu868];

    /// Its settings.
    pub const fn settings(self) -> RegionSettings {
        match self {
            Region::Us915 => RegionSettings {
                band_hz: BAND_HZ,
                parameters: RadioParameters::PROJECT,
                power_dbm: 22,
            },
            Region::Eu868 => RegionSettings {
                band_hz: 869_525_000,
                parameters: RadioParameters {
                    spreading_factor: 7,
                    bandwidth: 7,
                    coding_rate: 1,
                    preamble: 7,
                },
                power_dbm: 14,
            },
        }
    }

    /// Its name: `us915`, `eu868`.
    pub const fn name(self) -> &'static str {
        match self {
            Region::Us915 => "us915",
            Region::Eu868 => "eu868",
        }
    }

    /// The region named `name` ([`Region::name`]).
    pub fn parse(name: &str) -> Option<Region> {
        Region::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Step `step` (0 to [`SETUP_STEPS`] - 1) of a node's start-up in `region`: `AT`,
/// `AT+ADDRESS=<address>`, `AT+NETWORKID=18`, `AT+BAND=<hz>`, `AT+CRFOP=<dBm>`,
/// `AT+PARAMETER=<sf>,<bw>,<cr>,<preamble>` (last: a modem restart's emulator takes it as the
/// end of the set-up). `None` past the last step.
pub fn setup(
    step: usize,
    address: u16,
    region: Region,
    buf: &mut [u8],
) -> Option<Result<usize, CommandError>> {
    let s = region.settings();
    Some(match step {
        0 => at(buf),
        1 => self::address(address, buf),
        2 => network_id(NETWORK_ID, buf),
        3 => band(s.band_hz, buf),
        4 => output_power(s.power_dbm, buf),
        5 => parameter(s.parameters, buf),
        _ => return None,
    })
}

/// `AT\r\n`: is the modem there?
pub fn at(buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT"))
}

/// `AT+RESET\r\n`.
pub fn reset(buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT+RESET"))
}

/// `AT+ADDRESS=<address>\r\n`.
pub fn address(address: u16, buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT+ADDRESS={address}"))
}

/// `AT+NETWORKID=<id>\r\n`.
pub fn network_id(id: u8, buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT+NETWORKID={id}"))
}

/// `AT+BAND=<hz>\r\n`.
pub fn band(hz: u32, buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT+BAND={hz}"))
}

/// `AT+CRFOP=<dBm>\r\n`: the RF output power (0 to 22).
pub fn output_power(dbm: u8, buf: &mut [u8]) -> Result<usize, CommandError> {
    command(buf, format_args!("AT+CRFOP={dbm}"))
}

/// `AT+PARAMETER=<sf>,<bw>,<cr>,<preamble>\r\n`.
pub fn parameter(p: RadioParameters, buf: &mut [u8]) -> Result<usize, CommandError> {
    command(
        buf,
        format_args!(
            "AT+PARAMETER={},{},{},{}",
            p.spreading_factor, p.bandwidth, p.coding_rate, p.preamble
        ),
    )
}

/// `AT+SEND=<dest>,<len>,<data>\r\n` with the data as raw bytes.
pub fn send(dest: u16, data: &[u8], buf: &mut [u8]) -> Result<usize, CommandError> {
    if data.is_empty() || data.len() > MAX_SEND {
        return Err(CommandError::BadDataLength(data.len()));
    }
    let mut w = Cursor::new(buf);
    w.fmt(format_args!("AT+SEND={dest},{},", data.len()))?;
    w.bytes(data)?;
    w.bytes(b"\r\n")?;
    Ok(w.len())
}

/// The modem's side: the length of the first complete command in `input` (with its `\r\n`),
/// or `None` until it is complete. `AT+SEND` is cut by its length field (its data may hold
/// `\r\n`); a malformed `AT+SEND` header falls back to the first `\r\n`.
pub fn command_len(input: &[u8]) -> Option<usize> {
    let line_end = || input.windows(2).position(|w| w == b"\r\n").map(|i| i + 2);
    let Some(rest) = input.strip_prefix(b"AT+SEND=") else {
        return line_end();
    };
    // `<dest>,<len>,`: digits, then a comma; anything else is not a well-formed header.
    let mut fields = rest.splitn(3, |b| *b == b',');
    let (dest, len) = (fields.next().unwrap_or(&[]), fields.next());
    let digits = |f: &[u8]| f.len() <= 5 && f.iter().all(u8::is_ascii_digit);
    let complete = fields.next().is_some();
    match len {
        _ if !digits(dest) => return line_end(),
        None => return None,
        Some(len) if !digits(len) => return line_end(),
        Some(_) if !complete => return None,
        Some(len) if dest.is_empty() || len.is_empty() => return line_end(),
        Some(_) => {}
    }
    let len = len.unwrap_or(&[]);
    let data_len = len
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    let total = 8 + dest.len() + 1 + len.len() + 1 + data_len + 2;
    (input.len() >= total).then_some(total)
}

fn command(buf: &mut [u8], args: fmt::Arguments<'_>) -> Result<usize, CommandError> {
    let mut w = Cursor::new(buf);
    w.fmt(args)?;
    w.bytes(b"\r\n")?;
    Ok(w.len())
}

#[cfg(test)]
mod airtime_tests {
    use super::*;

    #[test]
    fn time_on_air_follows_semtechs_formula() {
        // SF7, 125 kHz, 4/5, preamble 8, 10 bytes: 40.25 symbols of 1.024 ms (the
        // calculators' 41.2 ms).
        let classic = RadioParameters {
            spreading_factor: 7,
            bandwidth: 7,
            coding_rate: 1,
            preamble: 8,
        };
        assert_eq!(classic.airtime_us(10), Some(41_216));
        // The project's setting (SF7, 500 kHz): the original frame of 10 bytes and a secure
        // uplink of 21; the original ACK of 2 bytes and a secure one of 11.
        let p = RadioParameters::PROJECT;
        assert_eq!(p.airtime_us(10), Some(10_048));
        assert_eq!(p.airtime_us(21), Some(13_888));
        assert_eq!(p.airtime_us(2), Some(7_488));
        assert_eq!(p.airtime_us(11), Some(10_048));
        // SF11 at 125 kHz: 16.4 ms symbols, low data rate optimisation on.
        let far = RadioParameters {
            spreading_factor: 11,
            bandwidth: 7,
            coding_rate: 1,
            preamble: 12,
        };
        // 8 + ceil((168 - 44 + 44) / 36) * 5 = 33 payload symbols, 16.25 of preamble.
        assert_eq!(far.airtime_us(21), Some(806_912));
        assert_eq!(RadioParameters { bandwidth: 3, ..p }.airtime_us(10), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut [u8]) -> Result<usize, CommandError>) -> [u8; 64] {
        let mut buf = [0u8; 64];
        let n = f(&mut buf).unwrap();
        let mut out = [0u8; 64];
        out[..n].copy_from_slice(&buf[..n]);
        out
    }

    fn eq(got: [u8; 64], want: &[u8]) {
        assert_eq!(&got[..want.len()], want);
        assert!(got[want.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn set_up_commands_of_the_project() {
        eq(text(at), b"AT\r\n");
        eq(text(|b| address(2, b)), b"AT+ADDRESS=2\r\n");
        eq(text(|b| network_id(18, b)), b"AT+NETWORKID=18\r\n");
        eq(text(|b| band(915_000_000, b)), b"AT+BAND=915000000\r\n");
        eq(
            text(|b| parameter(RadioParameters::PROJECT, b)),
            b"AT+PARAMETER=7,9,1,7\r\n",
        );
        eq(text(reset), b"AT+RESET\r\n");
        eq(text(|b| output_power(14, b)), b"AT+CRFOP=14\r\n");
    }

    #[test]
    fn setup_is_the_six_commands_of_the_region_in_order() {
        let us: [&[u8]; SETUP_STEPS] = [
            b"AT\r\n",
            b"AT+ADDRESS=1\r\n",
            b"AT+NETWORKID=18\r\n",
            b"AT+BAND=915000000\r\n",
            b"AT+CRFOP=22\r\n",
            b"AT+PARAMETER=7,9,1,7\r\n",
        ];
        let eu: [&[u8]; SETUP_STEPS] = [
            b"AT\r\n",
            b"AT+ADDRESS=2\r\n",
            b"AT+NETWORKID=18\r\n",
            b"AT+BAND=869525000\r\n",
            b"AT+CRFOP=14\r\n",
            b"AT+PARAMETER=7,7,1,7\r\n",
        ];
        for (region, address, want) in [(Region::Us915, 1, us), (Region::Eu868, 2, eu)] {
            for (step, want) in want.iter().enumerate() {
                eq(text(|b| setup(step, address, region, b).unwrap()), want);
            }
            assert!(setup(SETUP_STEPS, address, region, &mut [0; 64]).is_none());
        }
    }

    #[test]
    fn regions_by_name_and_within_their_rules() {
        for region in Region::ALL {
            assert_eq!(Region::parse(region.name()), Some(region));
            let s = region.settings();
            assert!(s.power_dbm <= 22, "the RYLR998's most");
        }
        assert_eq!(Region::parse("EU868"), None, "names are lower case");
        assert_eq!(Region::parse("as923"), None);
        let eu = Region::Eu868.settings();
        // 869.4-869.65 MHz: the 125 kHz channel fits inside the sub-band.
        assert!(eu.band_hz - 62_500 >= 869_400_000 && eu.band_hz + 62_500 <= 869_650_000);
        assert_eq!(eu.parameters.bandwidth, 7);
        // 10 % duty cycle: a 40-byte frame every 10 s (Node 1's default) uses under 1 %.
        let airtime = eu.parameters.airtime_us(40).unwrap();
        assert!(airtime < 100_000, "{airtime} us");
        let us = Region::Us915.settings();
        assert!((902_000_000..=928_000_000).contains(&us.band_hz));
        assert_eq!(
            us.parameters.bandwidth, 9,
            "500 kHz: a digitally modulated system"
        );
    }

    /// docs/PROTOCOL.md, test vectors: Node 1's send of packet 1, and Node 2's ACK of it.
    #[test]
    fn send_matches_the_vectors() {
        let frame = [0x01, 0xA2, 0x04, 0xFF, 0x2D, 0xF3, 0xD5, 0x15, 0x93, 0x83];
        let mut buf = [0u8; MAX_COMMAND];
        let n = send(2, &frame, &mut buf).unwrap();
        assert_eq!(n, 25);
        assert_eq!(&buf[..13], b"AT+SEND=2,10,");
        assert_eq!(&buf[13..23], &frame);
        assert_eq!(&buf[23..25], b"\r\n");
        let n = send(1, &[0x01, 0x01], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"AT+SEND=1,2,\x01\x01\r\n");
    }

    #[test]
    fn the_modem_cuts_commands_by_line_end_or_send_length() {
        assert_eq!(command_len(b"AT\r\nAT+ADDRESS=2\r\n"), Some(4));
        assert_eq!(command_len(b"AT+ADDR"), None);
        let mut send = [0u8; MAX_COMMAND];
        let n = super::send(1, &[0x0D, 0x0A, 0x01], &mut send).unwrap();
        for cut in 0..n {
            assert_eq!(command_len(&send[..cut]), None, "{cut}");
        }
        assert_eq!(command_len(&send[..n]), Some(n));
        assert_eq!(command_len(b"AT+SEND=x,y\r\n"), Some(13));
    }

    #[test]
    fn bad_data_and_small_buffers_are_errors() {
        let mut buf = [0u8; MAX_COMMAND];
        assert_eq!(send(1, &[], &mut buf), Err(CommandError::BadDataLength(0)));
        assert_eq!(
            send(1, &[0; 241], &mut buf),
            Err(CommandError::BadDataLength(241))
        );
        assert_eq!(send(65535, &[7; 240], &mut buf), Ok(MAX_COMMAND));
        for n in 0..17 {
            assert_eq!(
                band(915_000_000, &mut buf[..n]),
                Err(CommandError::BufferTooSmall),
                "{n}"
            );
        }
    }
}
