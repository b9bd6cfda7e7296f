//! Where Node 1 keeps its frame-counter reservations ([`crate::secure::FrameCounter`]) so that
//! they survive resets and power loss: an append-only log in two erasable flash sectors. Pure
//! rules, no I/O: the firmware reads the sectors' words, and programs or erases what
//! [`Log::next_step`] says.
//!
//! - A record is two 32-bit words, the reservation `r` and its complement `!r`, programmed in
//!   that order into words that read erased (`0xFFFF_FFFF`). A pair is a record only when the
//!   second word is the complement of the first: a record cut by a power loss (one word
//!   programmed, or a word half programmed) is no record, and a sector whose erase was cut
//!   (bits of old records half set back to 1) holds no false one. Ignoring a cut record is
//!   safe: a reservation is stored before any counter it covers is used.
//! - Records go one after the other into the active sector. When it is full, the other sector
//!   is erased and the record goes into its first pair; only then does that sector become the
//!   active one. The record with the highest reservation is always intact, in a sector that is
//!   not being erased, so a power loss at any moment leaves it readable.
//! - After a reset, the stored reservation is the highest record of both sectors, and the
//!   active sector is the one holding it; new records go after its last written word.

/// What an erased flash word reads.
pub const ERASED: u32 = 0xFFFF_FFFF;
/// Words per record: the reservation and its complement.
pub const RECORD_WORDS: usize = 2;

/// The two sectors' state, as found by [`Log::scan`] and kept up to date by [`Log::written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Records a sector holds.
    records: usize,
    /// The sector new records go into (0 or 1).
    active: usize,
    /// The next free record of the active sector (`records`: full).
    next: usize,
    /// The highest reservation stored.
    latest: Option<u32>,
}

/// Where the next record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Program record `record` of sector `sector` (its two words read erased).
    Program {
        /// The sector, 0 or 1.
        sector: usize,
        /// The record's index in the sector (its words are `2 * record` and `2 * record + 1`).
        record: usize,
    },
    /// Erase sector `sector`, then program its first record.
    EraseThenProgram {
        /// The sector, 0 or 1.
        sector: usize,
    },
}

impl Log {
    /// Reads the log from two sectors of `words` 32-bit words each; `read(sector, index)` is
    /// the word at `index` of `sector` (0 or 1).
    pub fn scan(words: usize, read: impl Fn(usize, usize) -> u32) -> Log {
        let records = words / RECORD_WORDS;
        let mut latest: Option<(u32, usize)> = None;
        let mut used = [0usize; 2];
        for (sector, used) in used.iter_mut().enumerate() {
            for record in 0..records {
                let first = read(sector, record * RECORD_WORDS);
                let second = read(sector, record * RECORD_WORDS + 1);
                if first == ERASED && second == ERASED {
                    continue;
                }
                // Written (perhaps cut): new records go after it.
                *used = record + 1;
                if second == !first && latest.is_none_or(|(r, _)| first > r) {
                    latest = Some((first, sector));
                }
            }
        }
        let active = latest.map_or(0, |(_, sector)| sector);
        Log {
            records,
            active,
            next: used.get(active).copied().unwrap_or(0),
            latest: latest.map(|(r, _)| r),
        }
    }

    /// The highest reservation stored (`None`: never stored, a new board).
    pub fn latest(&self) -> Option<u32> {
        self.latest
    }

    /// Where the next record goes.
    pub fn next_step(&self) -> Step {
        if self.next < self.records {
            Step::Program {
                sector: self.active,
                record: self.next,
            }
        } else {
            Step::EraseThenProgram {
                sector: 1 - self.active,
            }
        }
    }

    /// Records that `step` (from [`Log::next_step`]) stored `reservation`, both words
    /// programmed and read back.
    pub fn written(&mut self, step: Step, reservation: u32) {
        match step {
            Step::Program { sector, record } => {
                self.active = sector;
                self.next = record + 1;
            }
            Step::EraseThenProgram { sector } => {
                self.active = sector;
                self.next = 1;
            }
        }
        self.latest = Some(self.latest.map_or(reservation, |l| l.max(reservation)));
    }

    /// Marks the record `step` was about to program as used without storing anything (its
    /// programming failed half way): the next record goes after it.
    pub fn skipped(&mut self, step: Step) {
        if let Step::Program { sector, record } = step {
            if sector == self.active {
                self.next = record + 1;
            }
        }
    }

    /// The words of a record of `reservation`, in the order they are programmed.
    pub fn record(reservation: u32) -> [u32; RECORD_WORDS] {
        [reservation, !reservation]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    /// Two sectors of 8 words (4 records each), in RAM.
    #[derive(Clone)]
    struct Flash([Vec<u32>; 2]);

    impl Flash {
        fn new() -> Flash {
            Flash([std::vec![ERASED; 8], std::vec![ERASED; 8]])
        }

        fn log(&self) -> Log {
            Log::scan(8, |s, i| self.0[s][i])
        }

        /// Stores `r` as the firmware does; returns the log after.
        fn store(&mut self, log: &mut Log, r: u32) {
            let step = log.next_step();
            let (sector, record) = match step {
                Step::Program { sector, record } => (sector, record),
                Step::EraseThenProgram { sector } => {
                    self.0[sector].fill(ERASED);
                    (sector, 0)
                }
            };
            for (k, word) in Log::record(r).into_iter().enumerate() {
                let w = &mut self.0[sector][record * 2 + k];
                assert_eq!(*w, ERASED, "programs only erased words");
                *w = word;
            }
            log.written(step, r);
        }
    }

    #[test]
    fn a_new_board_has_nothing_stored() {
        let log = Flash::new().log();
        assert_eq!(log.latest(), None);
        assert_eq!(
            log.next_step(),
            Step::Program {
                sector: 0,
                record: 0
            }
        );
    }

    #[test]
    fn records_fill_one_sector_then_the_other_and_a_reset_finds_the_latest() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        for k in 1..=20u32 {
            flash.store(&mut log, k * 256);
            assert_eq!(log.latest(), Some(k * 256));
            // A reset at any point reads back what was stored, and goes on in the same place.
            assert_eq!(flash.log(), log, "after record {k}");
        }
        // 20 records, 4 per sector: 1-4, 9-12 and 17-20 went into sector 0, the others into
        // sector 1, each erased before it was written again.
        assert_eq!(flash.0[0][..2], [17 * 256, !(17 * 256)]);
        assert_eq!(flash.0[0][6..], [20 * 256, !(20 * 256)]);
        assert_eq!(flash.0[1][..2], [13 * 256, !(13 * 256)]);
    }

    #[test]
    fn a_power_loss_while_storing_or_erasing_never_loses_the_latest_record() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        for k in 1..=4u32 {
            flash.store(&mut log, k * 256);
        }
        // Sector 0 is full; the next record erases sector 1. Power lost after its first word:
        let mut cut = flash.clone();
        cut.0[1][0] = 5 * 256;
        let after = cut.log();
        assert_eq!(after.latest(), Some(4 * 256), "a cut record is no record");
        // A word half programmed (bits still 1) is no record either.
        let mut half = flash.clone();
        half.0[1][0] = (5 * 256) | 0xFF00_0000;
        half.0[1][1] = !(5 * 256) | 0x0000_00F0;
        assert_eq!(half.log().latest(), Some(4 * 256));
        // Sector 1 full of older records, sector 0 holding the latest: an erase of sector 1
        // cut half way sets bits of its old records back to 1, which makes them no records
        // (whichever words it reached), never a higher reservation.
        let mut older = Flash::new();
        older.0[1][..2].copy_from_slice(&Log::record(256));
        older.0[0][..2].copy_from_slice(&Log::record(512));
        for (a, b) in [
            (0x8000_0000, 0),
            (0, 0x0000_0100),
            (0xF000_0000, 0x0F00_0000),
        ] {
            let mut e = older.clone();
            e.0[1][0] |= a;
            e.0[1][1] |= b;
            assert_eq!(e.log().latest(), Some(512), "{a:08X} {b:08X}");
        }
    }

    #[test]
    fn after_a_cut_record_the_next_goes_after_it() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        flash.store(&mut log, 256);
        flash.0[0][2] = 512; // cut: no complement
        let mut log = flash.log();
        assert_eq!(log.latest(), Some(256));
        assert_eq!(
            log.next_step(),
            Step::Program {
                sector: 0,
                record: 2
            }
        );
        flash.store(&mut log, 512);
        assert_eq!(flash.log().latest(), Some(512));
        // A failed programming marks its record used.
        let step = log.next_step();
        log.skipped(step);
        assert_eq!(log.next_step(), Step::EraseThenProgram { sector: 1 });
    }

    #[test]
    fn the_highest_record_wins_whatever_its_place() {
        let mut flash = Flash::new();
        flash.0[1][..2].copy_from_slice(&Log::record(9_000));
        flash.0[0][..2].copy_from_slice(&Log::record(300));
        flash.0[0][2..4].copy_from_slice(&Log::record(600));
        let log = flash.log();
        assert_eq!(log.latest(), Some(9_000));
        assert_eq!(
            log.next_step(),
            Step::Program {
                sector: 1,
                record: 1
            }
        );
        // The reservation 0xFFFF_FFFF is a record too (its complement is 0).
        let mut end = Flash::new();
        end.0[0][..2].copy_from_slice(&Log::record(u32::MAX));
        assert_eq!(end.log().latest(), Some(u32::MAX));
    }
}
