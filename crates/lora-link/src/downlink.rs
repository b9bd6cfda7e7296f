//! Commands to a node and what it says back (`docs/PROTOCOL.md`, "Downlink"): a command
//! rides in the secure ACK that answers the node's uplink, after the `AckPacket`; the node's
//! confirmation, and its info (after a boot and in answer to `ping`), ride in its next secure
//! uplink, after the `SensorDataPacket`. Both are sealed with the frame they ride in, so they
//! are as authentic as it. This module is their bytes; no allocation, no panics.
//!
//! ```text
//! command (in an ACK): 0x10 [number: 2, BE] [kind: 1] [value: 4, BE]   8 bytes
//! confirm (uplink):    0x01 [number: 2, BE]                             3 bytes
//! info (uplink):       0x02 [version: 3] [boots: 4, BE] [uptime s: 4, BE] [reset: 1]   13 bytes
//! ```

use crate::BufferTooSmall;

/// A command record's first byte.
pub const COMMAND_TAG: u8 = 0x10;
/// A confirmation record's first byte.
pub const CONFIRM_TAG: u8 = 0x01;
/// An info record's first byte.
pub const INFO_TAG: u8 = 0x02;
/// A command record's length.
pub const COMMAND_LEN: usize = 8;
/// A confirmation record's length.
pub const CONFIRM_LEN: usize = 3;
/// An info record's length.
pub const INFO_LEN: usize = 13;
/// The most an uplink carries after its packet: a confirmation and an info record.
pub const MAX_UPLINK_EXTRAS: usize = CONFIRM_LEN + INFO_LEN;

/// What a node is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Report every this many seconds (1 to 86,400), kept across resets.
    Interval(u32),
    /// Send its info in the next uplink.
    Ping,
    /// Blink the board's LED this many seconds (1 to 300).
    Identify(u32),
    /// Restart.
    Reboot,
}

impl Kind {
    fn code(self) -> (u8, u32) {
        match self {
            Kind::Interval(s) => (1, s),
            Kind::Ping => (2, 0),
            Kind::Identify(s) => (3, s),
            Kind::Reboot => (4, 0),
        }
    }

    fn from_code(code: u8, value: u32) -> Option<Kind> {
        match code {
            1 if (1..=86_400).contains(&value) => Some(Kind::Interval(value)),
            2 => Some(Kind::Ping),
            3 if (1..=300).contains(&value) => Some(Kind::Identify(value)),
            4 => Some(Kind::Reboot),
            _ => None,
        }
    }
}

/// A command as sent to a node: its number (the gateway's, per node: the node applies each
/// number once and confirms it) and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCommand {
    /// The command's number for this node.
    pub number: u16,
    /// What to do.
    pub kind: Kind,
}

impl NodeCommand {
    /// Its record, into `out`; returns the length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let out = out.get_mut(..COMMAND_LEN).ok_or(BufferTooSmall)?;
        let (code, value) = self.kind.code();
        let [n0, n1] = self.number.to_be_bytes();
        let [v0, v1, v2, v3] = value.to_be_bytes();
        out.copy_from_slice(&[COMMAND_TAG, n0, n1, code, v0, v1, v2, v3]);
        Ok(COMMAND_LEN)
    }

    /// The command record that `bytes` are exactly; `None` for anything else (an unknown kind,
    /// a value out of range).
    pub fn decode(bytes: &[u8]) -> Option<NodeCommand> {
        match *bytes {
            [COMMAND_TAG, n0, n1, code, v0, v1, v2, v3] => Some(NodeCommand {
                number: u16::from_be_bytes([n0, n1]),
                kind: Kind::from_code(code, u32::from_be_bytes([v0, v1, v2, v3]))?,
            }),
            _ => None,
        }
    }
}

/// What a node says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// Firmware version, major, minor, patch.
    pub version: [u8; 3],
    /// Boots since its flash was written.
    pub boots: u32,
    /// Seconds since this boot.
    pub uptime_s: u32,
    /// Why it last reset: 0 unknown, 1 power-on, 2 software (reboot), 3 watchdog, 4 panic.
    pub reset: u8,
}

/// What an uplink carries after its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extras {
    /// The number of a command the node applied (confirmed).
    pub confirm: Option<u16>,
    /// The node's info.
    pub info: Option<NodeInfo>,
}

impl Extras {
    /// Nothing.
    pub const NONE: Extras = Extras {
        confirm: None,
        info: None,
    };

    /// The records, into `out`; returns their length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut n = 0;
        if let Some(number) = self.confirm {
            let [a, b] = number.to_be_bytes();
            put(out, &mut n, &[CONFIRM_TAG, a, b])?;
        }
        if let Some(i) = self.info {
            let [b0, b1, b2, b3] = i.boots.to_be_bytes();
            let [u0, u1, u2, u3] = i.uptime_s.to_be_bytes();
            let [major, minor, patch] = i.version;
            put(
                out,
                &mut n,
                &[
                    INFO_TAG, major, minor, patch, b0, b1, b2, b3, u0, u1, u2, u3, i.reset,
                ],
            )?;
        }
        Ok(n)
    }

    /// The records of `bytes` (each at most once, a confirmation first); `None` when they
    /// are anything else.
    pub fn decode(bytes: &[u8]) -> Option<Extras> {
        let mut extras = Extras::NONE;
        let mut rest = bytes;
        if let [CONFIRM_TAG, a, b, tail @ ..] = rest {
            extras.confirm = Some(u16::from_be_bytes([*a, *b]));
            rest = tail;
        }
        if let [INFO_TAG, major, minor, patch, b0, b1, b2, b3, u0, u1, u2, u3, reset, tail @ ..] =
            rest
        {
            extras.info = Some(NodeInfo {
                version: [*major, *minor, *patch],
                boots: u32::from_be_bytes([*b0, *b1, *b2, *b3]),
                uptime_s: u32::from_be_bytes([*u0, *u1, *u2, *u3]),
                reset: *reset,
            });
            rest = tail;
        }
        rest.is_empty().then_some(extras)
    }
}

fn put(out: &mut [u8], n: &mut usize, bytes: &[u8]) -> Result<(), BufferTooSmall> {
    let end = *n + bytes.len();
    out.get_mut(*n..end)
        .ok_or(BufferTooSmall)?
        .copy_from_slice(bytes);
    *n = end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_nothing_else_decodes() {
        for kind in [
            Kind::Interval(5),
            Kind::Interval(86_400),
            Kind::Ping,
            Kind::Identify(10),
            Kind::Reboot,
        ] {
            let c = NodeCommand { number: 513, kind };
            let mut buf = [0u8; COMMAND_LEN];
            assert_eq!(c.encode(&mut buf), Ok(COMMAND_LEN));
            assert_eq!(NodeCommand::decode(&buf), Some(c));
            assert_eq!(NodeCommand::decode(&buf[..7]), None);
        }
        let interval = [0x10, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0x05];
        assert_eq!(
            NodeCommand::decode(&interval),
            Some(NodeCommand {
                number: 7,
                kind: Kind::Interval(5)
            })
        );
        for bad in [
            [0x10, 0, 7, 0x01, 0, 0, 0, 0],       // interval 0
            [0x10, 0, 7, 0x03, 0, 0, 0x01, 0x2D], // identify 301 s
            [0x10, 0, 7, 0x09, 0, 0, 0, 0],       // unknown kind
            [0x11, 0, 7, 0x02, 0, 0, 0, 0],       // not a command record
        ] {
            assert_eq!(NodeCommand::decode(&bad), None, "{bad:?}");
        }
        assert_eq!(
            NodeCommand {
                number: 1,
                kind: Kind::Ping
            }
            .encode(&mut [0u8; 7]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn extras_round_trip_in_their_one_order() {
        let info = NodeInfo {
            version: [0, 3, 1],
            boots: 12,
            uptime_s: 3600,
            reset: 2,
        };
        for extras in [
            Extras::NONE,
            Extras {
                confirm: Some(9),
                info: None,
            },
            Extras {
                confirm: None,
                info: Some(info),
            },
            Extras {
                confirm: Some(65_535),
                info: Some(info),
            },
        ] {
            let mut buf = [0u8; MAX_UPLINK_EXTRAS];
            let n = extras.encode(&mut buf).unwrap();
            assert_eq!(Extras::decode(&buf[..n]), Some(extras));
            if n > 0 {
                assert_eq!(Extras::decode(&buf[..n - 1]), None);
            }
        }
        // Info before a confirmation, a record twice, a stray byte: not extras.
        let mut buf = [0u8; MAX_UPLINK_EXTRAS];
        let n = Extras {
            confirm: None,
            info: Some(info),
        }
        .encode(&mut buf)
        .unwrap();
        let mut swapped = buf[..n].to_vec();
        swapped.extend_from_slice(&[CONFIRM_TAG, 0, 1]);
        assert_eq!(Extras::decode(&swapped), None);
        assert_eq!(
            Extras::decode(&[CONFIRM_TAG, 0, 1, CONFIRM_TAG, 0, 2]),
            None
        );
        assert_eq!(Extras::decode(&[7]), None);
    }
}
