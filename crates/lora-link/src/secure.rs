//! Secure frames: authenticated encryption of what Node 1 sends and of the ACK that answers
//! it, with a frame counter that never goes back (`docs/PROTOCOL.md`, "Secure frames").
//!
//! The construction is AES-128-CCM (RFC 3610, NIST SP 800-38C; RustCrypto's `aes` and `ccm`
//! crates): one 128-bit key per node, an 8-byte tag, a 13-byte nonce. CCM is what LoRaWAN and
//! IEEE 802.15.4 use, and what STM32 AES peripherals accelerate.
//!
//! The nonce is `[version, direction, node address (2, big-endian), counter (4,
//! big-endian), 0, 0, 0, 0, 0]`. `node` is always the node's address (the sender of an uplink,
//! the destination of its ACK), so every frame under a node's key has its own nonce: an
//! uplink's counter is the node's frame counter, which only moves forward (kept across resets
//! with [`FrameCounter`]); an ACK uses the counter of the uplink it answers and its own
//! direction, which binds the ACK to that one frame.
//!
//! ```text
//! uplink: [version] [counter: 4, big-endian] [ciphertext of the SensorDataPacket] [tag: 8]
//! ACK:    [version] [ciphertext of the AckPacket] [tag: 8]
//! ```
//!
//! The header (version, and the uplink's counter) is authenticated as associated data. An
//! uplink is 17 to 27 bytes and an ACK 11 to 13, so neither can be taken for a frame of the
//! original format (a sensor frame is 6 to 16 bytes, an ACK 2 to 4). The CRC-16 of the
//! original format is gone: the tag covers every byte.

use aes::Aes128Enc;
use ccm::aead::array::Array;
use ccm::aead::{AeadInOut, KeyInit};
use ccm::consts::{U13, U8};
use ccm::Ccm;

use crate::downlink::{Extras, NodeCommand, COMMAND_LEN, MAX_UPLINK_EXTRAS};
use crate::packet::{AckPacket, DecodeError, SensorDataPacket, MAX_ACK_LEN, MAX_PACKET_LEN};
use crate::BufferTooSmall;

/// The format's version, the first byte of every secure frame.
pub const VERSION: u8 = 1;
/// Tag bytes: a forgery is accepted with probability 2^-64 per attempt.
pub const TAG_LEN: usize = 8;
/// The uplink's header: the version byte and the 4-byte counter.
pub const UPLINK_HEADER_LEN: usize = 5;
/// The shortest uplink: header, the shortest packet (four one-byte varints), tag.
pub const MIN_UPLINK_LEN: usize = UPLINK_HEADER_LEN + 4 + TAG_LEN;
/// The longest uplink.
pub const MAX_UPLINK_LEN: usize = UPLINK_HEADER_LEN + MAX_UPLINK_PLAIN + TAG_LEN;
/// The longest uplink plaintext: a packet and its extras ([`crate::downlink`]).
const MAX_UPLINK_PLAIN: usize = MAX_PACKET_LEN + MAX_UPLINK_EXTRAS;
/// The longest ACK plaintext: an ACK packet and a command.
const MAX_ACK_PLAIN: usize = MAX_ACK_LEN + COMMAND_LEN;
/// The shortest ACK: version, a two-byte `AckPacket`, tag.
pub const MIN_ACK_LEN: usize = 1 + 2 + TAG_LEN;
/// The longest ACK.
pub const MAX_ACK_FRAME_LEN: usize = 1 + MAX_ACK_PLAIN + TAG_LEN;
/// The nonce's length (RFC 3610 with a 2-byte length field).
pub const NONCE_LEN: usize = 13;

type Aes128Ccm = Ccm<Aes128Enc, U8, U13>;

/// A node's 128-bit key. Its `Debug` never shows it, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl Key {
    /// The key of these 16 bytes.
    pub const fn new(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// The key written as 32 hexadecimal digits (either case; nothing else around them).
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(KeyError::Length(digits.len()));
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
                return Err(KeyError::Length(digits.len()));
            };
            *byte = (hex_value(hi)? << 4) | hex_value(lo)?;
        }
        Ok(Key(bytes))
    }

    /// The key's check value: the first 8 bytes of AES-128 of a block of zeros under it (the
    /// usual "KCV"). Tells two keys apart without showing either; a receiver stores it beside
    /// a node's counter, so a new key starts a new counter.
    pub fn check_value(&self) -> [u8; 8] {
        use aes::cipher::BlockCipherEncrypt as _;
        let cipher = <Aes128Enc as KeyInit>::new(&Array::from(self.0));
        let mut block = Array::from([0u8; 16]);
        cipher.encrypt_block(&mut block);
        let mut out = [0u8; 8];
        out.copy_from_slice(block.get(..8).unwrap_or(&[0; 8]));
        out
    }

    fn cipher(&self) -> Aes128Ccm {
        Aes128Ccm::new(&Array::from(self.0))
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(***)")
    }
}

fn hex_value(digit: u8) -> Result<u8, KeyError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(KeyError::NotHex),
    }
}

/// Why text is not a key. (Neither variant says anything of the text itself.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// A key is 32 hexadecimal digits; this many were given.
    Length(usize),
    /// A character is not a hexadecimal digit.
    NotHex,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "a key is 32 hexadecimal digits, not {n} characters"),
            KeyError::NotHex => f.write_str("a key holds only hexadecimal digits (0-9, a-f)"),
        }
    }
}

/// Which way a frame goes: part of its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// Node to receiver (a sensor packet).
    Uplink = 0,
    /// Receiver to node, answering one uplink.
    Ack = 1,
    /// Receiver to node, on its own (commands; not used yet).
    Downlink = 2,
}

/// The nonce of a frame to or from `node` with `counter`.
pub fn nonce(direction: Direction, node: u16, counter: u32) -> [u8; NONCE_LEN] {
    let [a0, a1] = node.to_be_bytes();
    let [c0, c1, c2, c3] = counter.to_be_bytes();
    [
        VERSION,
        direction as u8,
        a0,
        a1,
        c0,
        c1,
        c2,
        c3,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Why a received frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Not a length a secure frame of this kind has.
    BadLength(usize),
    /// Another format's version byte.
    BadVersion(u8),
    /// The tag does not match: another key, another node, another counter, or bytes changed.
    BadTag,
    /// Authentic, but the plaintext is not a packet (a sender that encodes wrongly).
    Malformed(DecodeError),
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::BadLength(n) => write!(f, "not a secure frame's length ({n} bytes)"),
            OpenError::BadVersion(v) => write!(f, "unknown secure frame version {v}"),
            OpenError::BadTag => f.write_str("bad tag (wrong key, node or counter, or changed)"),
            OpenError::Malformed(e) => write!(f, "authentic but not a packet: {e}"),
        }
    }
}

/// An uplink opened: its counter, its packet, and what rides with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// The node's frame counter for this frame.
    pub counter: u32,
    /// What the node measured.
    pub packet: SensorDataPacket,
    /// A command's confirmation, the node's info.
    pub extras: Extras,
}

/// Writes the secure uplink of `packet` from `node` with `counter` into `out`; returns its
/// length. `counter` must never have been used with this key before ([`FrameCounter`]).
pub fn seal_uplink(
    key: &Key,
    node: u16,
    counter: u32,
    packet: &SensorDataPacket,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    seal_uplink_with(key, node, counter, packet, &Extras::NONE, out)
}

/// [`seal_uplink`] with `extras` after the packet.
pub fn seal_uplink_with(
    key: &Key,
    node: u16,
    counter: u32,
    packet: &SensorDataPacket,
    extras: &Extras,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut plain = [0u8; MAX_UPLINK_PLAIN];
    let n = packet.encode(&mut plain)?;
    let n = n + extras.encode(plain.get_mut(n..).ok_or(BufferTooSmall)?)?;
    let [c0, c1, c2, c3] = counter.to_be_bytes();
    let header = [VERSION, c0, c1, c2, c3];
    seal(
        key,
        &nonce(Direction::Uplink, node, counter),
        &header,
        plain.get(..n).ok_or(BufferTooSmall)?,
        out,
    )
}

/// Opens an uplink that the modem says `node` sent: checks its tag with `key` and decrypts
/// it. Whether its counter is new is the receiver's to judge ([`freshness`]).
pub fn open_uplink(key: &Key, node: u16, frame: &[u8]) -> Result<Uplink, OpenError> {
    if !(MIN_UPLINK_LEN..=MAX_UPLINK_LEN).contains(&frame.len()) {
        return Err(OpenError::BadLength(frame.len()));
    }
    let header = frame
        .get(..UPLINK_HEADER_LEN)
        .ok_or(OpenError::BadLength(frame.len()))?;
    let counter = match header {
        [VERSION, c0, c1, c2, c3] => u32::from_be_bytes([*c0, *c1, *c2, *c3]),
        [version, ..] => return Err(OpenError::BadVersion(*version)),
        [] => return Err(OpenError::BadLength(frame.len())),
    };
    let mut plain = [0u8; MAX_UPLINK_PLAIN];
    let n = open(
        key,
        &nonce(Direction::Uplink, node, counter),
        header,
        frame.get(UPLINK_HEADER_LEN..).unwrap_or_default(),
        &mut plain,
    )?;
    let plain = plain.get(..n).unwrap_or_default();
    let (packet, used) = SensorDataPacket::decode(plain).map_err(OpenError::Malformed)?;
    let extras = Extras::decode(plain.get(used..).unwrap_or_default())
        .ok_or(OpenError::Malformed(DecodeError::TrailingBytes))?;
    Ok(Uplink {
        counter,
        packet,
        extras,
    })
}

/// Writes the secure ACK `ack` to `node`, answering its uplink with `counter`, into `out`;
/// returns its length.
pub fn seal_ack(
    key: &Key,
    node: u16,
    counter: u32,
    ack: &AckPacket,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    seal_ack_with(key, node, counter, ack, None, out)
}

/// [`seal_ack`] with a command for the node after the ACK packet.
pub fn seal_ack_with(
    key: &Key,
    node: u16,
    counter: u32,
    ack: &AckPacket,
    command: Option<&NodeCommand>,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut plain = [0u8; MAX_ACK_PLAIN];
    let mut n = ack.encode(&mut plain)?;
    if let Some(command) = command {
        n += command.encode(plain.get_mut(n..).ok_or(BufferTooSmall)?)?;
    }
    seal(
        key,
        &nonce(Direction::Ack, node, counter),
        &[VERSION],
        plain.get(..n).ok_or(BufferTooSmall)?,
        out,
    )
}

/// Opens an ACK that should answer `node`'s uplink with `counter`: one for any other frame, or
/// from anyone without the key, fails its tag.
pub fn open_ack(key: &Key, node: u16, counter: u32, frame: &[u8]) -> Result<AckPacket, OpenError> {
    open_ack_with(key, node, counter, frame).map(|(ack, _)| ack)
}

/// [`open_ack`], with the command that rides in the ACK, if any.
pub fn open_ack_with(
    key: &Key,
    node: u16,
    counter: u32,
    frame: &[u8],
) -> Result<(AckPacket, Option<NodeCommand>), OpenError> {
    if !(MIN_ACK_LEN..=MAX_ACK_FRAME_LEN).contains(&frame.len()) {
        return Err(OpenError::BadLength(frame.len()));
    }
    let (header, rest) = frame
        .split_at_checked(1)
        .ok_or(OpenError::BadLength(frame.len()))?;
    if header != [VERSION] {
        return Err(OpenError::BadVersion(header.first().copied().unwrap_or(0)));
    }
    let mut plain = [0u8; MAX_ACK_PLAIN];
    let n = open(
        key,
        &nonce(Direction::Ack, node, counter),
        header,
        rest,
        &mut plain,
    )?;
    let plain = plain.get(..n).unwrap_or_default();
    let (ack, used) = AckPacket::decode(plain).map_err(OpenError::Malformed)?;
    match plain.get(used..).unwrap_or_default() {
        [] => Ok((ack, None)),
        record => NodeCommand::decode(record)
            .map(|c| (ack, Some(c)))
            .ok_or(OpenError::Malformed(DecodeError::TrailingBytes)),
    }
}

/// `header`, then `plain` encrypted, then the tag, into `out`.
fn seal(
    key: &Key,
    nonce: &[u8; NONCE_LEN],
    header: &[u8],
    plain: &[u8],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let len = header.len() + plain.len() + TAG_LEN;
    let out = out.get_mut(..len).ok_or(BufferTooSmall)?;
    let (head, rest) = out.split_at_mut(header.len());
    let (body, tag_out) = rest.split_at_mut(plain.len());
    head.copy_from_slice(header);
    body.copy_from_slice(plain);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&Array::from(*nonce), header, body.into())
        .map_err(|_| BufferTooSmall)?;
    tag_out.copy_from_slice(&tag);
    Ok(len)
}

/// Checks `sealed` (ciphertext then tag) against `header` and decrypts it into `plain`;
/// returns the plaintext's length. Nothing is written to `plain` unless the tag is good.
fn open(
    key: &Key,
    nonce: &[u8; NONCE_LEN],
    header: &[u8],
    sealed: &[u8],
    plain: &mut [u8],
) -> Result<usize, OpenError> {
    let n = sealed
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(OpenError::BadLength(sealed.len()))?;
    let (body, tag) = sealed.split_at(n);
    let tag: &Array<u8, U8> = tag
        .try_into()
        .map_err(|_| OpenError::BadLength(sealed.len()))?;
    let mut work = [0u8; MAX_UPLINK_PLAIN];
    let work = work
        .get_mut(..n)
        .ok_or(OpenError::BadLength(sealed.len()))?;
    work.copy_from_slice(body);
    key.cipher()
        .decrypt_inout_detached(&Array::from(*nonce), header, work.into(), tag)
        .map_err(|_| OpenError::BadTag)?;
    plain
        .get_mut(..n)
        .ok_or(OpenError::BadLength(sealed.len()))?
        .copy_from_slice(work);
    Ok(n)
}

/// What an authentic uplink's counter says, given the highest counter accepted from its node
/// so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Above every counter accepted: a new packet.
    New,
    /// The highest counter accepted, again: the node sending the same frame again (its ACK was
    /// lost). Acknowledged again, not stored again.
    Repeat,
    /// Below the highest accepted: a frame recorded and played back. Refused.
    Replay,
}

/// Judges `counter` against `highest`, the highest accepted from the node (`None`: none yet).
pub fn freshness(highest: Option<u32>, counter: u32) -> Freshness {
    match highest {
        None => Freshness::New,
        Some(h) if counter > h => Freshness::New,
        Some(h) if counter == h => Freshness::Repeat,
        Some(_) => Freshness::Replay,
    }
}

/// Counters a node reserves at a time: one durable write per this many frames.
pub const RESERVE: u32 = 256;

/// Node 1's frame counter, which must never repeat a value, even across resets and power
/// loss: a block of [`RESERVE`] counters is made durable ("every counter below this may have
/// been used") before the first of them is used, so a reset skips at most the rest of a block.
/// Pure: the caller writes the reservations to flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounter {
    next: u32,
    /// Counters below this are reserved (stored durably).
    reserved: u32,
}

impl FrameCounter {
    /// After a reset, from the reservation stored last (`None`: the first start). Returns the
    /// counter and the reservation to store durably before [`FrameCounter::next_counter`] is used.
    pub fn resume(stored: Option<u32>) -> (FrameCounter, u32) {
        let next = stored.unwrap_or(0);
        let reserved = next.saturating_add(RESERVE);
        (FrameCounter { next, reserved }, reserved)
    }

    /// The next counter to use, and, when it starts a new block, the reservation to store
    /// durably before the frame is sent. `None` once every counter is used (after 2^32 - 1
    /// frames: 1,361 years at one frame per 10 s): the node needs a new key.
    pub fn next_counter(&mut self) -> Option<(u32, Option<u32>)> {
        if self.next == u32::MAX {
            return None;
        }
        let counter = self.next;
        let mut store = None;
        if counter >= self.reserved {
            self.reserved = counter.saturating_add(RESERVE);
            store = Some(self.reserved);
        }
        self.next += 1;
        Some((counter, store))
    }
}

/// What a receiver (Node 2, the gateway) knows of the address a frame came from.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'k> {
    /// A node with its key: only secure frames.
    Keyed(&'k Key),
    /// A node marked legacy (the original firmware): only frames of the original format.
    Legacy,
    /// A node in the table without a key (and not marked legacy).
    NoKey,
    /// An address that is not in the table.
    Unknown,
}

/// Why a receiver refused a frame. Refused frames are counted and never acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// From an address not in the node table.
    UnknownNode,
    /// From a node that has no key and is not marked legacy.
    NoKey,
    /// A frame of the original, unauthenticated format from a node that has a key.
    LegacyFormat,
    /// The tag does not match: a wrong key, a forged or changed frame, or one corrupted on
    /// the air.
    BadTag,
    /// Authentic, but its counter is below the highest accepted: played back.
    Replay,
    /// Not a secure frame: a length or a version this receiver does not know.
    BadFormat,
    /// A legacy node's frame that fails its CRC or decoding.
    Crc,
}

impl Rejection {
    /// Every reason, for counters that show each from the start.
    pub const ALL: [Rejection; 7] = [
        Rejection::UnknownNode,
        Rejection::NoKey,
        Rejection::LegacyFormat,
        Rejection::BadTag,
        Rejection::Replay,
        Rejection::BadFormat,
        Rejection::Crc,
    ];

    /// The reason as a metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownNode => "unknown_node",
            Rejection::NoKey => "no_key",
            Rejection::LegacyFormat => "legacy_format",
            Rejection::BadTag => "bad_tag",
            Rejection::Replay => "replay",
            Rejection::BadFormat => "bad_format",
            Rejection::Crc => "crc",
        }
    }
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame a receiver accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A secure frame. `repeat`: its counter is the highest accepted, so it is the node
    /// sending the same frame again (its ACK was lost): acknowledge it again, do not store it
    /// again. Otherwise the counter is new: the receiver's highest becomes `counter`.
    Secure {
        /// The frame's counter.
        counter: u32,
        /// The highest counter accepted, again.
        repeat: bool,
        /// What the node measured.
        packet: SensorDataPacket,
        /// A command's confirmation, the node's info.
        extras: Extras,
    },
    /// A legacy node's frame of the original format (CRC, no counter).
    Legacy {
        /// What the node measured.
        packet: SensorDataPacket,
    },
}

/// The receivers' rule for one frame that the modem says `node` sent, as `sender` is known,
/// with `highest` the highest counter accepted from it so far (`None`: none yet). Pure; the
/// receiver keeps `highest` (and the gateway stores it with the packet).
pub fn receive(
    sender: Sender<'_>,
    node: u16,
    highest: Option<u32>,
    frame: &[u8],
) -> Result<Accepted, Rejection> {
    let key = match sender {
        Sender::Keyed(key) => key,
        Sender::Legacy => {
            return SensorDataPacket::decode_frame(frame)
                .map(|packet| Accepted::Legacy { packet })
                .map_err(|_| Rejection::Crc);
        }
        Sender::NoKey => return Err(Rejection::NoKey),
        Sender::Unknown => return Err(Rejection::UnknownNode),
    };
    match open_uplink(key, node, frame) {
        Ok(Uplink {
            counter,
            packet,
            extras,
        }) => match freshness(highest, counter) {
            Freshness::New => Ok(Accepted::Secure {
                counter,
                repeat: false,
                packet,
                extras,
            }),
            Freshness::Repeat => Ok(Accepted::Secure {
                counter,
                repeat: true,
                packet,
                extras,
            }),
            Freshness::Replay => Err(Rejection::Replay),
        },
        // A good frame of the original format (its CRC holds): a node still on the old
        // firmware, or someone sending as one.
        Err(_) if SensorDataPacket::decode_frame(frame).is_ok() => Err(Rejection::LegacyFormat),
        Err(OpenError::BadTag) => Err(Rejection::BadTag),
        // Authentic but not a packet (a node's bug, never an outsider): not a frame we know.
        Err(OpenError::BadLength(_) | OpenError::BadVersion(_) | OpenError::Malformed(_)) => {
            Err(Rejection::BadFormat)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The key of docs/PROTOCOL.md's test vectors: published, never for a real node.
    const TEST_KEY: Key = Key::new([
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ]);

    fn packet1() -> SensorDataPacket {
        SensorDataPacket {
            seq_num: 1,
            temperature: 273,
            humidity: 5887,
            gas_resistance: 355_059,
        }
    }

    /// RFC 3610, packet vector #1 (AES-128, 8-byte tag, 13-byte nonce, 8 bytes of associated
    /// data): the cipher this module builds on reproduces the standard's own vector.
    #[test]
    fn rfc_3610_packet_vector_1() {
        let key = Key::new([
            0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD,
            0xCE, 0xCF,
        ]);
        let nonce = [
            0x00, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5,
        ];
        let header = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
        let plain: [u8; 23] = core::array::from_fn(|i| 0x08 + i as u8);
        let mut out = [0u8; 64];
        let n = seal(&key, &nonce, &header, &plain, &mut out).unwrap();
        let expected = [
            // The header, then the RFC's encrypted payload and its 8-byte tag.
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x58, 0x8C, 0x97, 0x9A, 0x61, 0xC6,
            0x63, 0xD2, 0xF0, 0x66, 0xD0, 0xC2, 0xC0, 0xF9, 0x89, 0x80, 0x6D, 0x5F, 0x6B, 0x61,
            0xDA, 0xC3, 0x84, 0x17, 0xE8, 0xD1, 0x2C, 0xFD, 0xF9, 0x26, 0xE0,
        ];
        assert_eq!(&out[..n], &expected[..]);
        let mut back = [0u8; MAX_PACKET_LEN];
        // 23 bytes do not fit a packet's buffer: `open` is for packets; the RFC's vector is
        // checked by decrypting with the cipher directly.
        assert!(open(&key, &nonce, &header, &out[8..n], &mut back).is_err());
        let mut body = out[8..8 + 23].to_vec();
        let tag: &Array<u8, U8> = out[8 + 23..n].try_into().unwrap();
        key.cipher()
            .decrypt_inout_detached(
                &Array::from(nonce),
                &header,
                body.as_mut_slice().into(),
                tag,
            )
            .unwrap();
        assert_eq!(body, plain);
    }

    /// docs/PROTOCOL.md, "Secure frames", test vectors (computed independently with OpenSSL
    /// through Python's `cryptography` by `tests/system/protocol.rs`).
    #[test]
    fn the_protocol_vectors() {
        let packet2 = SensorDataPacket {
            seq_num: 300,
            temperature: -53,
            humidity: 8123,
            gas_resistance: 52_174,
        };
        let mut out = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&TEST_KEY, 1, 7, &packet1(), &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                0x01, 0x00, 0x00, 0x00, 0x07, 0x78, 0xBE, 0x47, 0x0C, 0xCF, 0xBA, 0xBB, 0x1F, 0x7F,
                0x19, 0x90, 0x5C, 0xBE, 0x38, 0x52, 0x78
            ]
        );
        let n = seal_uplink(&TEST_KEY, 1, 0x0100_0200, &packet2, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                0x01, 0x01, 0x00, 0x02, 0x00, 0x1E, 0x84, 0xAD, 0x3C, 0x67, 0xF2, 0x44, 0x84, 0x1D,
                0x07, 0x93, 0x0A, 0x38, 0xAB, 0x85, 0x87
            ]
        );
        let mut ack = [0u8; MAX_ACK_FRAME_LEN];
        let n = seal_ack(&TEST_KEY, 1, 7, &AckPacket::ack(1), &mut ack).unwrap();
        assert_eq!(
            &ack[..n],
            &[0x01, 0x48, 0x95, 0x75, 0x8A, 0x10, 0x6E, 0x10, 0x5B, 0x41, 0xAD]
        );
        let n = seal_ack(&TEST_KEY, 1, 0x0100_0200, &AckPacket::nack(300), &mut ack).unwrap();
        assert_eq!(
            &ack[..n],
            &[0x01, 0xFD, 0xD8, 0x26, 0x2B, 0xDF, 0xED, 0xC3, 0xB8, 0x95, 0xEC, 0xED]
        );
    }

    #[test]
    fn an_uplink_opens_with_its_key_node_and_nothing_changed() {
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&TEST_KEY, 1, 7, &packet1(), &mut frame).unwrap();
        assert_eq!(n, UPLINK_HEADER_LEN + 8 + TAG_LEN);
        assert_eq!(&frame[..5], &[VERSION, 0, 0, 0, 7]);
        let opened = open_uplink(&TEST_KEY, 1, &frame[..n]).unwrap();
        assert_eq!(
            opened,
            Uplink {
                counter: 7,
                packet: packet1(),
                extras: Extras::NONE
            }
        );
        // The plaintext does not show through.
        assert!(frame[5..n].windows(3).all(|w| w != [0x01, 0xA2, 0x04]));

        let other = Key::new([0x42; 16]);
        assert_eq!(open_uplink(&other, 1, &frame[..n]), Err(OpenError::BadTag));
        assert_eq!(
            open_uplink(&TEST_KEY, 3, &frame[..n]),
            Err(OpenError::BadTag),
            "another sender"
        );
        for i in 0..n {
            for bit in 0..8 {
                let mut f = frame;
                f[i] ^= 1 << bit;
                let r = open_uplink(&TEST_KEY, 1, &f[..n]);
                assert!(
                    matches!(r, Err(OpenError::BadTag | OpenError::BadVersion(_))),
                    "byte {i} bit {bit}: {r:?}"
                );
            }
        }
        for len in 0..n {
            assert!(
                open_uplink(&TEST_KEY, 1, &frame[..len]).is_err(),
                "cut to {len}"
            );
        }
    }

    #[test]
    fn an_ack_opens_only_for_the_frame_it_answers() {
        let ack = AckPacket::ack(1);
        let mut frame = [0u8; MAX_ACK_FRAME_LEN];
        let n = seal_ack(&TEST_KEY, 1, 7, &ack, &mut frame).unwrap();
        assert_eq!(n, 1 + 2 + TAG_LEN);
        assert_eq!(open_ack(&TEST_KEY, 1, 7, &frame[..n]), Ok(ack));
        assert_eq!(
            open_ack(&TEST_KEY, 1, 6, &frame[..n]),
            Err(OpenError::BadTag),
            "an older frame's"
        );
        assert_eq!(
            open_ack(&TEST_KEY, 2, 7, &frame[..n]),
            Err(OpenError::BadTag),
            "another node's"
        );
        assert_eq!(
            open_ack(&Key::new([9; 16]), 1, 7, &frame[..n]),
            Err(OpenError::BadTag)
        );
        // An uplink's bytes with the same counter are no ACK (another direction).
        let mut up = [0u8; MAX_UPLINK_LEN];
        let m = seal_uplink(&TEST_KEY, 1, 7, &packet1(), &mut up).unwrap();
        assert!(open_ack(&TEST_KEY, 1, 7, &up[..m]).is_err());
        // The original format's ACK is refused by its length.
        assert_eq!(
            open_ack(&TEST_KEY, 1, 7, &[0x01, 0x01]),
            Err(OpenError::BadLength(2))
        );
    }

    #[test]
    fn counters_are_new_repeated_or_replayed() {
        assert_eq!(freshness(None, 0), Freshness::New);
        assert_eq!(freshness(Some(5), 6), Freshness::New);
        assert_eq!(freshness(Some(5), 5), Freshness::Repeat);
        assert_eq!(freshness(Some(5), 4), Freshness::Replay);
        assert_eq!(freshness(Some(u32::MAX), 0), Freshness::Replay);
    }

    #[test]
    fn a_reset_never_reuses_a_counter() {
        // First start: reserve 0..256 before sending counter 0.
        let (mut c, store) = FrameCounter::resume(None);
        assert_eq!(store, RESERVE);
        let mut stored = store;
        let mut used = std::vec::Vec::new();
        for _ in 0..600 {
            let (counter, reserve) = c.next_counter().unwrap();
            if let Some(r) = reserve {
                assert!(r > counter, "stored before it is used");
                stored = r;
            }
            assert!(counter < stored);
            used.push(counter);
        }
        assert_eq!(used, (0..600).collect::<std::vec::Vec<_>>());
        // Power lost: the node starts again from what was stored, above all it used.
        let (mut again, store) = FrameCounter::resume(Some(stored));
        let (first, _) = again.next_counter().unwrap();
        assert!(first > *used.last().unwrap());
        assert!(store > first);
        // At the end of the counters the node stops rather than repeat one.
        let mut end = FrameCounter {
            next: u32::MAX - 1,
            reserved: u32::MAX,
        };
        assert_eq!(end.next_counter(), Some((u32::MAX - 1, None)));
        assert_eq!(end.next_counter(), None);
    }

    #[test]
    fn keys_read_from_hex_and_never_print() {
        let k = Key::from_hex("000102030405060708090A0B0C0D0E0f").unwrap();
        assert_eq!(k, TEST_KEY);
        assert_eq!(std::format!("{k:?}"), "Key(***)");
        assert_eq!(Key::from_hex("00"), Err(KeyError::Length(2)));
        assert_eq!(
            Key::from_hex("zz0102030405060708090a0b0c0d0e0f"),
            Err(KeyError::NotHex)
        );
        assert!(Key::from_hex("é01020304050607080900a0b0c0d0e0").is_err());
    }

    /// docs/PROTOCOL.md, "Downlink", vectors (computed with OpenSSL through Python's
    /// `cryptography`): the ACK of packet 1 (counter 7) carrying command 1, interval 5 s; the
    /// next uplink (counter 8) confirming it.
    #[test]
    fn the_downlink_vectors() {
        use crate::downlink::{Kind, NodeCommand};
        let command = NodeCommand {
            number: 1,
            kind: Kind::Interval(5),
        };
        let mut ack = [0u8; MAX_ACK_FRAME_LEN];
        let n = seal_ack_with(
            &TEST_KEY,
            1,
            7,
            &AckPacket::ack(1),
            Some(&command),
            &mut ack,
        )
        .unwrap();
        let expected = [
            0x01, 0x48, 0x95, 0xc6, 0xe5, 0x4c, 0xab, 0xf1, 0xd1, 0x86, 0x00, 0xa4, 0x03, 0x22,
            0xdb, 0x6c, 0xbe, 0xc8, 0x9e,
        ];
        assert_eq!(&ack[..n], &expected[..]);
        assert_eq!(
            open_ack_with(&TEST_KEY, 1, 7, &ack[..n]),
            Ok((AckPacket::ack(1), Some(command)))
        );
        // Bound to the uplink it answers, like any ACK; the plain ACK API still takes it.
        assert_eq!(
            open_ack_with(&TEST_KEY, 1, 8, &ack[..n]),
            Err(OpenError::BadTag)
        );
        assert_eq!(open_ack(&TEST_KEY, 1, 7, &ack[..n]), Ok(AckPacket::ack(1)));
        let extras = Extras {
            confirm: Some(1),
            info: None,
        };
        let mut up = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink_with(&TEST_KEY, 1, 8, &packet1(), &extras, &mut up).unwrap();
        let expected = [
            0x01, 0x00, 0x00, 0x00, 0x08, 0x88, 0xd0, 0x12, 0x98, 0xd6, 0x1d, 0x86, 0xce, 0x1c,
            0x01, 0xcc, 0x82, 0x38, 0x0c, 0x11, 0x09, 0x43, 0x9d, 0x05,
        ];
        assert_eq!(&up[..n], &expected[..]);
        let opened = open_uplink(&TEST_KEY, 1, &up[..n]).unwrap();
        assert_eq!((opened.counter, opened.extras), (8, extras));
        // The longest uplink: the longest packet, a confirmation and the node's info.
        let info = crate::downlink::NodeInfo {
            version: [1, 2, 3],
            boots: u32::MAX,
            uptime_s: u32::MAX,
            reset: 4,
        };
        let longest = SensorDataPacket {
            seq_num: u16::MAX,
            temperature: i16::MIN,
            humidity: u16::MAX,
            gas_resistance: u32::MAX,
        };
        let all = Extras {
            confirm: Some(u16::MAX),
            info: Some(info),
        };
        let n = seal_uplink_with(&TEST_KEY, 1, 9, &longest, &all, &mut up).unwrap();
        assert_eq!(n, MAX_UPLINK_LEN);
        assert_eq!(open_uplink(&TEST_KEY, 1, &up[..n]).unwrap().extras, all);
    }

    /// AES-128 of zeros under the test key, computed with OpenSSL (Python `cryptography`):
    /// c6a13b37878f5b82...
    #[test]
    fn the_check_value_is_aes_of_zeros() {
        assert_eq!(
            TEST_KEY.check_value(),
            [0xc6, 0xa1, 0x3b, 0x37, 0x87, 0x8f, 0x5b, 0x82]
        );
        assert_ne!(Key::new([1; 16]).check_value(), TEST_KEY.check_value());
    }

    #[test]
    fn receivers_accept_only_what_the_table_allows() {
        let mut frame = [0u8; MAX_UPLINK_LEN];
        let n = seal_uplink(&TEST_KEY, 1, 7, &packet1(), &mut frame).unwrap();
        let secure = &frame[..n];
        let mut legacy = [0u8; crate::packet::MAX_FRAME_LEN];
        let m = packet1().encode_frame(&mut legacy).unwrap();
        let legacy = &legacy[..m];
        let keyed = Sender::Keyed(&TEST_KEY);
        let new = Accepted::Secure {
            counter: 7,
            repeat: false,
            packet: packet1(),
            extras: Extras::NONE,
        };
        assert_eq!(receive(keyed, 1, None, secure), Ok(new));
        assert_eq!(receive(keyed, 1, Some(6), secure), Ok(new));
        assert_eq!(
            receive(keyed, 1, Some(7), secure),
            Ok(Accepted::Secure {
                counter: 7,
                repeat: true,
                packet: packet1(),
                extras: Extras::NONE
            })
        );
        assert_eq!(receive(keyed, 1, Some(8), secure), Err(Rejection::Replay));
        // Another node's address, another key: the tag fails.
        assert_eq!(receive(keyed, 3, None, secure), Err(Rejection::BadTag));
        let other = Key::new([7; 16]);
        assert_eq!(
            receive(Sender::Keyed(&other), 1, None, secure),
            Err(Rejection::BadTag)
        );
        let mut flipped = secure.to_vec();
        flipped[9] ^= 0x10;
        assert_eq!(receive(keyed, 1, None, &flipped), Err(Rejection::BadTag));
        assert_eq!(
            receive(keyed, 1, None, legacy),
            Err(Rejection::LegacyFormat)
        );
        assert_eq!(
            receive(keyed, 1, None, &secure[..n - 1]),
            Err(Rejection::BadTag)
        );
        assert_eq!(
            receive(keyed, 1, None, &secure[..4]),
            Err(Rejection::BadFormat)
        );
        let mut v2 = secure.to_vec();
        v2[0] = 2;
        assert_eq!(receive(keyed, 1, None, &v2), Err(Rejection::BadFormat));
        assert_eq!(
            receive(Sender::Legacy, 1, Some(99), legacy),
            Ok(Accepted::Legacy { packet: packet1() })
        );
        assert_eq!(
            receive(Sender::Legacy, 1, None, secure),
            Err(Rejection::Crc)
        );
        assert_eq!(
            receive(Sender::NoKey, 1, None, secure),
            Err(Rejection::NoKey)
        );
        assert_eq!(
            receive(Sender::Unknown, 1, None, secure),
            Err(Rejection::UnknownNode)
        );
        let reasons: std::vec::Vec<&str> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "unknown_node",
                "no_key",
                "legacy_format",
                "bad_tag",
                "replay",
                "bad_format",
                "crc"
            ]
        );
    }
}
