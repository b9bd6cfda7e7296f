//! [`Master`]'s register sequences, as traces of a fake peripheral that records every access
//! and answers SR1 from a script. Each expected trace is RM0390 §24.3.3's sequence for the
//! case, written out: `cr1=..` a CR1 write (its bits), `sr1`/`sr2`/`dr?` reads (consecutive
//! SR1 reads, the polls of one wait, shown once), `dr=..` a DR write, `sr1=..` the write that
//! clears SR1's error flags, `{`..`}` interrupts masked, `gpio`/`af` the lines taken over for
//! a bus clear and given back.

use std::collections::VecDeque;
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use embedded_hal::i2c::{I2c, NoAcknowledgeSource, Operation};

use super::master::{CR1, CR1_ACK, CR1_PE, CR1_POS, CR1_START, CR1_STOP, CR1_SWRST, DR, SR1, SR2};
use super::{
    Error, Master, Registers, POLLS, SR1_ADDR, SR1_AF, SR1_BTF, SR1_RXNE, SR1_SB, SR1_TXE,
};
use crate::i2c::OpenDrainLines;

/// Every flag a wait may be waiting for: each wait ends at its first poll.
const ALL_READY: u32 = SR1_SB | SR1_ADDR | SR1_BTF | SR1_RXNE | SR1_TXE;

/// A peripheral that records what the master does.
struct Fake {
    cr1: u32,
    /// SR1's next values; `idle_sr1` once they run out.
    sr1: VecDeque<u32>,
    idle_sr1: u32,
    /// What DR gives, in order (then 0).
    rx: VecDeque<u8>,
    /// A STOP written stays pending (a bus that cannot make one) until a software reset.
    stop_sticks: bool,
    stop_pending: bool,
    sr1_reads: u32,
    trace: Vec<String>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            cr1: 0,
            sr1: VecDeque::new(),
            idle_sr1: ALL_READY,
            rx: VecDeque::new(),
            stop_sticks: false,
            stop_pending: false,
            sr1_reads: 0,
            trace: vec![],
        }
    }

    fn log(&mut self, event: String) {
        if event == "sr1" && self.trace.last().is_some_and(|e| e == "sr1") {
            return;
        }
        self.trace.push(event);
    }
}

fn cr1_bits(value: u32) -> String {
    let names = [
        (CR1_PE, "PE"),
        (CR1_START, "START"),
        (CR1_STOP, "STOP"),
        (CR1_ACK, "ACK"),
        (CR1_POS, "POS"),
        (CR1_SWRST, "SWRST"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        String::from("0")
    } else {
        set.join("|")
    }
}

/// A free bus: SDA and SCL high whenever released.
struct FreeLines;

impl OpenDrainLines for FreeLines {
    fn set_scl(&mut self, _release: bool) {}
    fn set_sda(&mut self, _release: bool) {}
    fn scl_is_high(&mut self) -> bool {
        true
    }
    fn sda_is_high(&mut self) -> bool {
        true
    }
    fn wait_half_period(&mut self) {}
}

impl Registers for Fake {
    type Lines = FreeLines;

    fn read(&mut self, offset: usize) -> u32 {
        match offset {
            // START and STOP are done at once (unless a STOP sticks).
            CR1 => {
                let stop = if self.stop_pending { CR1_STOP } else { 0 };
                (self.cr1 & !(CR1_START | CR1_STOP)) | stop
            }
            SR1 => {
                self.sr1_reads += 1;
                self.log(String::from("sr1"));
                self.sr1.pop_front().unwrap_or(self.idle_sr1)
            }
            SR2 => {
                self.log(String::from("sr2"));
                0
            }
            DR => {
                self.log(String::from("dr?"));
                u32::from(self.rx.pop_front().unwrap_or(0))
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        match offset {
            CR1 => {
                if value & CR1_SWRST != 0 {
                    self.stop_pending = false;
                } else if value & CR1_STOP != 0 && self.stop_sticks {
                    self.stop_pending = true;
                }
                self.cr1 = value;
                self.log(format!("cr1={}", cr1_bits(value)));
            }
            SR1 => self.log(format!("sr1={value:#x}")),
            DR => self.log(format!("dr={value:02x}")),
            _ => self.log(format!("{offset:#x}={value}")),
        }
    }

    fn masked<F: FnOnce(&mut Self)>(&mut self, f: F) {
        self.log(String::from("{"));
        f(self);
        self.log(String::from("}"));
    }

    fn take_lines(&mut self) -> FreeLines {
        self.log(String::from("gpio"));
        FreeLines
    }

    fn give_back_lines(&mut self, _lines: FreeLines) {
        self.log(String::from("af"));
    }
}

/// The set-up at 16 MHz: reset, FREQ 16, CCR 80 (100 kHz), TRISE 17, PE.
const SET_UP: [&str; 6] = [
    "cr1=SWRST",
    "cr1=0",
    "0x4=16",
    "0x1c=80",
    "0x20=17",
    "cr1=PE",
];

/// A master on `fake`, set up, with the set-up's trace cleared.
fn master(fake: Fake) -> Master<Fake> {
    let mut master = Master::new(fake, 16_000_000);
    assert_eq!(trace(&master), SET_UP);
    master.registers_mut().trace.clear();
    master
}

fn trace(master: &Master<Fake>) -> Vec<String> {
    master.registers().trace.clone()
}

#[test]
fn a_write_is_start_address_bytes_btf_stop() {
    let mut m = master(Fake::new());
    m.write(0x44, &[0x24, 0x00]).unwrap();
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1", // SB
        "dr=88",
        "sr1", // ADDR (and the SR1 read of its clearing)
        "sr2",
        "sr1", // TXE
        "dr=24",
        "sr1", // TXE
        "dr=00",
        "sr1", // BTF: the last byte acknowledged
        "cr1=PE|STOP|ACK",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn a_one_byte_read_turns_ack_off_before_addr_and_stops_with_interrupts_masked() {
    let mut fake = Fake::new();
    fake.rx.push_back(0x61);
    let mut m = master(fake);
    let mut buf = [0u8];
    m.read(0x77, &mut buf).unwrap();
    assert_eq!(buf, [0x61]);
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=ef",
        "sr1",    // ADDR: SCL held until cleared
        "cr1=PE", // ACK and POS off
        "{",
        "sr1",
        "sr2", // ADDR cleared: the byte comes, NACKed
        "cr1=PE|STOP",
        "}",
        "sr1", // RXNE
        "dr?",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn a_two_byte_read_uses_pos_and_stops_at_btf() {
    let mut fake = Fake::new();
    fake.rx.extend([0xAB, 0xCD]);
    let mut m = master(fake);
    let mut buf = [0u8; 2];
    m.read(0x44, &mut buf).unwrap();
    assert_eq!(buf, [0xAB, 0xCD]);
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK", // ACK on for the first byte
        "sr1",
        "dr=89",
        "sr1",        // ADDR
        "cr1=PE|POS", // ACK off, POS on, while SCL is held: the second byte is NACKed
        "sr1",
        "sr2", // ADDR cleared
        "sr1", // BTF: byte 1 in DR, byte 2 in the shift register
        "cr1=PE|STOP|POS",
        "dr?",
        "sr1",
        "dr?",
        "cr1=PE", // POS off
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn a_longer_read_turns_ack_off_and_stops_at_btf() {
    let mut fake = Fake::new();
    fake.rx.extend([1, 2, 3, 4, 5, 6]);
    let mut m = master(fake);
    let mut buf = [0u8; 6];
    m.read(0x44, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=89",
        "sr1",
        "cr1=PE|ACK", // POS off, ACK on
        "sr1",
        "sr2",
        "sr1", // N - 3 = 3 bytes on RXNE
        "dr?",
        "sr1",
        "dr?",
        "sr1",
        "dr?",
        "sr1",    // BTF: byte 4 in DR, 5 in the shift register, SCL held
        "cr1=PE", // ACK off: byte 6 will be NACKed
        "dr?",
        "sr1", // BTF: byte 5 in DR, 6 in the shift register
        "cr1=PE|STOP",
        "dr?",
        "sr1",
        "dr?",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn write_read_has_a_repeated_start_between_its_runs() {
    let mut fake = Fake::new();
    fake.rx.push_back(0x61);
    let mut m = master(fake);
    let mut id = [0u8];
    m.write_read(0x77, &[0xD0], &mut id).unwrap();
    assert_eq!(id, [0x61]);
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=ee",
        "sr1",
        "sr2",
        "sr1",
        "dr=d0",
        "sr1",              // BTF
        "cr1=PE|START|ACK", // repeated START, no STOP
        "sr1",
        "dr=ef",
        "sr1",
        "cr1=PE",
        "{",
        "sr1",
        "sr2",
        "cr1=PE|STOP",
        "}",
        "sr1",
        "dr?",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn adjacent_operations_of_one_kind_share_their_start() {
    let mut fake = Fake::new();
    fake.rx.extend([1, 2, 3, 4, 5]);
    let mut m = master(fake);
    let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
    m.transaction(
        0x44,
        &mut [
            Operation::Write(&[0x01, 0x02]),
            Operation::Write(&[0x03]),
            Operation::Read(&mut a),
            Operation::Read(&mut b),
        ],
    )
    .unwrap();
    assert_eq!((a, b), ([1, 2], [3, 4, 5]));
    let t = trace(&m);
    let starts = t.iter().filter(|e| e.contains("START")).count();
    let stops = t.iter().filter(|e| e.contains("STOP")).count();
    assert_eq!((starts, stops), (2, 1), "{t:?}");
    let written: Vec<&String> = t.iter().filter(|e| e.starts_with("dr=")).collect();
    assert_eq!(written, ["dr=88", "dr=01", "dr=02", "dr=03", "dr=89"]);
    // One read of 5 bytes: the N > 2 sequence, not two reads.
    assert_eq!(t.iter().filter(|e| *e == "dr?").count(), 5);
    assert_eq!(
        t.iter().filter(|e| *e == "cr1=PE").count(),
        1,
        "ACK off once"
    );
}

#[test]
fn a_read_followed_by_a_write_closes_with_a_repeated_start() {
    let mut fake = Fake::new();
    fake.rx.push_back(7);
    let mut m = master(fake);
    let mut one = [0u8];
    m.transaction(
        0x44,
        &mut [Operation::Read(&mut one), Operation::Write(&[9])],
    )
    .unwrap();
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=89",
        "sr1",
        "cr1=PE",
        "{",
        "sr1",
        "sr2",
        "cr1=PE|START", // the read's byte NACKed, then a repeated START
        "}",
        "sr1",
        "dr?",
        "sr1", // SB of that START, not asked twice
        "dr=88",
        "sr1",
        "sr2",
        "sr1",
        "dr=09",
        "sr1",
        "cr1=PE|STOP",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn an_empty_write_probes_the_address() {
    let mut m = master(Fake::new());
    m.write(0x44, &[]).unwrap();
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=88",
        "sr1",
        "sr2",
        "cr1=PE|STOP|ACK",
    ];
    assert_eq!(trace(&m), expected);
    let mut m = master(Fake::new());
    m.transaction(0x44, &mut []).unwrap();
    assert_eq!(trace(&m), ["sr1=0x0"], "no bus activity");
}

#[test]
fn a_nack_is_reported_and_answered_with_a_stop() {
    let mut fake = Fake::new();
    fake.sr1.extend([SR1_SB, SR1_AF]);
    let mut m = master(fake);
    assert_eq!(
        m.write(0x44, &[0x24, 0x00]),
        Err(Error::Nack(NoAcknowledgeSource::Address))
    );
    let expected = [
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=88",
        "sr1",
        "sr1=0xdb00", // AF cleared, the other error flags left alone
        "cr1=PE|STOP",
    ];
    assert_eq!(trace(&m), expected);
}

#[test]
fn a_stop_that_never_completes_escalates_to_reset_and_bus_clear() {
    let mut fake = Fake::new();
    fake.sr1.extend([SR1_SB, SR1_AF]);
    fake.stop_sticks = true;
    let mut m = master(fake);
    assert!(m.write(0x44, &[0x24]).is_err());
    let mut expected = vec![
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "dr=88",
        "sr1",
        "sr1=0xdb00",
        "cr1=PE|STOP",
        "cr1=SWRST",
        "gpio",
        "af",
    ];
    expected.extend(SET_UP);
    assert_eq!(trace(&m), expected);
}

#[test]
fn a_flag_that_never_comes_is_a_bounded_timeout_then_reset_and_bus_clear() {
    let mut fake = Fake::new();
    fake.idle_sr1 = 0;
    let mut m = master(fake);
    m.registers_mut().sr1_reads = 0;
    assert_eq!(m.write(0x44, &[1]), Err(Error::Timeout));
    assert_eq!(m.registers().sr1_reads, POLLS);
    let mut expected = vec![
        "sr1=0x0",
        "cr1=PE|START|ACK",
        "sr1",
        "cr1=SWRST",
        "gpio",
        "af",
    ];
    expected.extend(SET_UP);
    assert_eq!(trace(&m), expected);
}

#[test]
fn no_start_while_a_stop_is_still_pending() {
    let mut fake = Fake::new();
    fake.stop_sticks = true;
    let mut m = master(fake);
    // A STOP asked for earlier that the bus has not let out yet.
    m.registers_mut().stop_pending = true;
    assert_eq!(m.write(0x44, &[1]), Err(Error::Timeout));
    let t = trace(&m);
    assert!(!t.iter().any(|e| e.contains("START")), "{t:?}");
    assert_eq!(t[..3], ["cr1=SWRST", "gpio", "af"]);
}

#[test]
fn after_a_recovery_the_next_transaction_works() {
    let mut fake = Fake::new();
    fake.sr1.extend([SR1_SB, SR1_AF]);
    fake.rx.push_back(0x42);
    let mut m = master(fake);
    assert!(m.write(0x44, &[1]).is_err());
    let mut buf = [0u8];
    m.read(0x44, &mut buf).unwrap();
    assert_eq!(buf, [0x42]);
}
