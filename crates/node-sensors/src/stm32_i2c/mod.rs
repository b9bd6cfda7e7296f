//! The STM32F4's I2C peripheral (the "v1" I2C of RM0390 §24): its rules, which touch no
//! register, and [`Master`], the I2C master built on them, generic over its register access
//! ([`Registers`]: `firmware/src/i2c.rs` gives it I2C1's; the tests a fake that records
//! every access, so its register sequences are checked here as traces).
//!
//! - [`poll`]: what one SR1 reading means for a wait on a flag (ready, not yet, or which
//!   [`Error`]), and [`sr1_clear_value`], the write that clears exactly the error flags seen.
//! - [`ReadClose`]: how a read of N bytes ends so that the last byte is NACKed and followed
//!   by STOP (or a repeated START) whatever the CPU does meanwhile (RM0390 §24.3.3, "Closing
//!   the communication", the polling method): the decisions are taken while the peripheral
//!   holds SCL low (ADDR not yet cleared, or BTF), but for N = 1, whose STOP follows the
//!   ADDR clearing within a few instructions run with interrupts masked
//!   ([`Registers::masked`]).
//! - [`Error::recovery`]: what the bus needs after an error.

mod master;
#[cfg(test)]
mod master_tests;

pub use master::{Master, Registers, POLLS};

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};

/// SR1: start bit sent (master).
pub const SR1_SB: u32 = 1 << 0;
/// SR1: address sent and acknowledged (master).
pub const SR1_ADDR: u32 = 1 << 1;
/// SR1: byte transfer finished (data register and shift register both full or both empty;
/// SCL held low).
pub const SR1_BTF: u32 = 1 << 2;
/// SR1: data register not empty (receiver).
pub const SR1_RXNE: u32 = 1 << 6;
/// SR1: data register empty (transmitter).
pub const SR1_TXE: u32 = 1 << 7;
/// SR1: bus error (misplaced START or STOP).
pub const SR1_BERR: u32 = 1 << 8;
/// SR1: arbitration lost.
pub const SR1_ARLO: u32 = 1 << 9;
/// SR1: acknowledge failure (NACK).
pub const SR1_AF: u32 = 1 << 10;
/// SR1: overrun or underrun.
pub const SR1_OVR: u32 = 1 << 11;
/// SR1: PEC error (SMBus).
pub const SR1_PECERR: u32 = 1 << 12;
/// SR1: timeout (SMBus).
pub const SR1_TIMEOUT: u32 = 1 << 14;
/// SR1: SMBus alert.
pub const SR1_SMBALERT: u32 = 1 << 15;
/// SR1's flags that software clears by writing 0 (rc_w0); writing 1 leaves them, and the
/// other bits are read-only.
const SR1_RC_W0: u32 =
    SR1_BERR | SR1_ARLO | SR1_AF | SR1_OVR | SR1_PECERR | SR1_TIMEOUT | SR1_SMBALERT;

/// What went wrong on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No device acknowledged the address or a byte.
    Nack(NoAcknowledgeSource),
    /// Another master won the bus (the peripheral went back to slave mode), or noise made
    /// it look so.
    ArbitrationLoss,
    /// A byte was lost in the receiver or repeated by the transmitter.
    Overrun,
    /// A flag never came within the poll budget: a device holds SCL or SDA, or the
    /// peripheral is stuck.
    Timeout,
}

impl embedded_hal::i2c::Error for Error {
    fn kind(&self) -> ErrorKind {
        match *self {
            Error::Nack(source) => ErrorKind::NoAcknowledge(source),
            Error::ArbitrationLoss => ErrorKind::ArbitrationLoss,
            Error::Overrun => ErrorKind::Overrun,
            Error::Timeout => ErrorKind::Other,
        }
    }
}

/// What the bus needs after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A STOP: the master still holds the bus in a known state (a NACK leaves it so,
    /// RM0390 §24.3.3 "Acknowledge failure"). If the STOP does not complete, escalate.
    Stop,
    /// The peripheral's software reset (CR1.SWRST) and a bus clear
    /// ([`crate::i2c::clear_bus`]): the peripheral or a device is in an unknown state.
    ResetAndClearBus,
}

impl Error {
    /// What the bus needs after this error.
    pub fn recovery(self) -> Recovery {
        match self {
            Error::Nack(_) => Recovery::Stop,
            Error::ArbitrationLoss | Error::Overrun | Error::Timeout => Recovery::ResetAndClearBus,
        }
    }
}

/// The part of a transfer a wait belongs to: says which NACK it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// START and the address byte.
    Address,
    /// The data bytes.
    Data,
}

/// What one SR1 reading means for a wait on `flag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// The flag is set.
    Ready,
    /// Not yet: read SR1 again (within the poll budget).
    Pending,
    /// The transfer failed.
    Failed(Error),
}

/// What `sr1` means for a wait on `flag` during `phase`. An error flag wins over the flag
/// waited for. BERR alone is not an error: the STM32F4 errata sheets' "spurious bus error
/// detection in master mode" says it may be set wrongly and does not affect the transfer
/// (clear it and go on; stm32f4xx-hal does the same); a real bus fault ends in a timeout.
pub fn poll(sr1: u32, flag: u32, phase: Phase) -> Poll {
    if sr1 & SR1_AF != 0 {
        return Poll::Failed(Error::Nack(match phase {
            Phase::Address => NoAcknowledgeSource::Address,
            Phase::Data => NoAcknowledgeSource::Data,
        }));
    }
    if sr1 & SR1_ARLO != 0 {
        return Poll::Failed(Error::ArbitrationLoss);
    }
    if sr1 & SR1_OVR != 0 {
        return Poll::Failed(Error::Overrun);
    }
    if sr1 & flag != 0 {
        Poll::Ready
    } else {
        Poll::Pending
    }
}

/// The value to write to SR1 to clear the error flags set in `sr1` (read just before) and
/// nothing else: a flag that rises between the read and the write is kept for the next read.
/// `None` when there is nothing to clear.
pub fn sr1_clear_value(sr1: u32) -> Option<u32> {
    (sr1 & SR1_RC_W0 != 0).then_some(SR1_RC_W0 & !sr1)
}

/// How a read of `len` bytes ends (RM0390 §24.3.3, "Closing the communication", polling).
/// "Close" is STOP after the read's last run, a repeated START before another run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadClose {
    /// One byte (a read of none reads one and drops it: a master receiver cannot take 0):
    /// ACK off before ADDR is cleared, close programmed right after clearing it, the two with
    /// interrupts masked (a few instructions; the byte is under way once ADDR is clear), then
    /// the byte on RXNE.
    One,
    /// Two bytes: ACK off and POS on before ADDR is cleared (SCL is held until then), so the
    /// second byte is NACKed; at BTF (byte 1 in DR, byte 2 in the shift register, SCL held)
    /// close, read both, POS off.
    Two,
    /// N > 2 bytes: ACK on; the first N - 3 on RXNE; at BTF (byte N-2 in DR, N-1 in the shift
    /// register, SCL held) ACK off and read N-2, which starts byte N with a NACK; at BTF
    /// again (N-1 in DR, N in the shift register) close, read N-1 and N.
    Many {
        /// Bytes read one by one on RXNE first (N - 3).
        plain: usize,
    },
}

impl ReadClose {
    /// The sequence for a read of `len` bytes.
    pub fn for_len(len: usize) -> ReadClose {
        match len {
            0 | 1 => ReadClose::One,
            2 => ReadClose::Two,
            n => ReadClose::Many { plain: n - 3 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::Error as _;

    #[test]
    fn a_wait_ends_on_its_flag_or_an_error() {
        assert_eq!(poll(0, SR1_SB, Phase::Address), Poll::Pending);
        assert_eq!(poll(SR1_SB, SR1_SB, Phase::Address), Poll::Ready);
        assert_eq!(poll(SR1_TXE, SR1_BTF, Phase::Data), Poll::Pending);
        assert_eq!(poll(SR1_TXE | SR1_BTF, SR1_BTF, Phase::Data), Poll::Ready);
    }

    #[test]
    fn errors_are_classified_and_win_over_the_flag() {
        let nack_address = Poll::Failed(Error::Nack(NoAcknowledgeSource::Address));
        assert_eq!(poll(SR1_AF, SR1_ADDR, Phase::Address), nack_address);
        assert_eq!(
            poll(SR1_AF | SR1_TXE, SR1_TXE, Phase::Data),
            Poll::Failed(Error::Nack(NoAcknowledgeSource::Data))
        );
        assert_eq!(
            poll(SR1_ARLO | SR1_SB, SR1_SB, Phase::Address),
            Poll::Failed(Error::ArbitrationLoss)
        );
        assert_eq!(
            poll(SR1_OVR | SR1_RXNE, SR1_RXNE, Phase::Data),
            Poll::Failed(Error::Overrun)
        );
        // A NACK is reported before arbitration when both are up.
        assert_eq!(
            poll(SR1_AF | SR1_ARLO, SR1_ADDR, Phase::Address),
            nack_address
        );
    }

    #[test]
    fn a_spurious_bus_error_does_not_end_the_transfer() {
        assert_eq!(poll(SR1_BERR, SR1_RXNE, Phase::Data), Poll::Pending);
        assert_eq!(
            poll(SR1_BERR | SR1_RXNE, SR1_RXNE, Phase::Data),
            Poll::Ready
        );
        // ...but it is cleared.
        assert_eq!(
            sr1_clear_value(SR1_BERR | SR1_RXNE),
            Some(SR1_RC_W0 & !SR1_BERR)
        );
    }

    #[test]
    fn clearing_touches_only_the_error_flags_seen() {
        assert_eq!(sr1_clear_value(0), None);
        assert_eq!(sr1_clear_value(SR1_TXE | SR1_BTF | SR1_ADDR), None);
        let v = sr1_clear_value(SR1_AF | SR1_TXE).unwrap();
        assert_eq!(v & SR1_AF, 0, "AF written 0: cleared");
        assert_eq!(
            v & (SR1_BERR | SR1_ARLO | SR1_OVR),
            SR1_BERR | SR1_ARLO | SR1_OVR
        );
        assert_eq!(v & 0xFFFF_0000, 0, "reserved bits written 0");
        assert_eq!(
            sr1_clear_value(SR1_AF | SR1_ARLO | SR1_BERR),
            Some(SR1_OVR | SR1_PECERR | SR1_TIMEOUT | SR1_SMBALERT)
        );
    }

    #[test]
    fn only_a_nack_leaves_the_bus_to_a_plain_stop() {
        assert_eq!(
            Error::Nack(NoAcknowledgeSource::Address).recovery(),
            Recovery::Stop
        );
        assert_eq!(
            Error::Nack(NoAcknowledgeSource::Data).recovery(),
            Recovery::Stop
        );
        for e in [Error::ArbitrationLoss, Error::Overrun, Error::Timeout] {
            assert_eq!(e.recovery(), Recovery::ResetAndClearBus, "{e:?}");
        }
    }

    #[test]
    fn errors_map_to_embedded_hal_kinds() {
        assert_eq!(
            Error::Nack(NoAcknowledgeSource::Data).kind(),
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)
        );
        assert_eq!(Error::ArbitrationLoss.kind(), ErrorKind::ArbitrationLoss);
        assert_eq!(Error::Overrun.kind(), ErrorKind::Overrun);
        assert_eq!(Error::Timeout.kind(), ErrorKind::Other);
    }

    #[test]
    fn reads_close_by_their_length() {
        assert_eq!(ReadClose::for_len(0), ReadClose::One);
        assert_eq!(ReadClose::for_len(1), ReadClose::One);
        assert_eq!(ReadClose::for_len(2), ReadClose::Two);
        assert_eq!(ReadClose::for_len(3), ReadClose::Many { plain: 0 });
        assert_eq!(ReadClose::for_len(17), ReadClose::Many { plain: 14 });
        assert_eq!(
            ReadClose::for_len(usize::MAX),
            ReadClose::Many {
                plain: usize::MAX - 3
            }
        );
    }
}
