//! Where Node 1 keeps what must survive resets and power loss: its frame-counter reservations
//! ([`crate::secure::FrameCounter`]), and its settings (the uplink interval a command set, its
//! boot count: `docs/PROTOCOL.md`, "Downlink"), in an append-only log in two erasable flash
//! sectors. Pure rules, no I/O: the firmware reads the sectors' words, and programs or erases
//! what [`Log::plan`] says.
//!
//! - A record is two 32-bit words, a word `w` and its complement `!w`, programmed in that
//!   order into words that read erased (`0xFFFF_FFFF`). A pair is a record only when the
//!   second word is the complement of the first: a record cut by a power loss (one word
//!   programmed, or a word half programmed) is no record, and a sector whose erase was cut
//!   (bits of old records half set back to 1) holds no false one. Ignoring a cut record is
//!   safe: a reservation is stored before any counter it covers is used, a setting before it
//!   is reported as applied.
//! - What a record holds is in its word's low byte ([`Record`]): 0 for a reservation (they
//!   are multiples of [`crate::secure::RESERVE`], or `0xFFFF_FFFF`, the last one), 1 to 3 for
//!   the interval, the boot count and a sector header, the value in the upper 24 bits. A log
//!   written before settings existed holds reservations only, and reads the same.
//! - Records go one after the other into the active sector. When it is full, the other sector
//!   is erased, and its first record is a header with a generation one above the active
//!   sector's; that sector is the active one from then on, and the first records written into
//!   it are copies of what the old one knew (the highest reservation, the newest of each
//!   setting), before anything new. So what the log knows is always intact in a sector that is
//!   not being erased, and a power loss at any moment leaves it readable: the old sector is
//!   erased only when the new one is full, long after the copies.
//! - After a reset: the active sector is the one with the higher header generation (a sector
//!   without a header counts as 0; with none in either, the one holding the highest
//!   reservation, as logs without headers were kept); the stored reservation is the highest
//!   of both sectors; a setting is its last record in the active sector, or in the other
//!   sector when the active one has none yet (a power loss before its copy). New records go
//!   after the active sector's last written word.

/// What an erased flash word reads.
pub const ERASED: u32 = 0xFFFF_FFFF;
/// Words per record: the word and its complement.
pub const RECORD_WORDS: usize = 2;
/// The largest value a setting or header record holds (24 bits).
pub const MAX_SETTING: u32 = 0x00FF_FFFF;

/// What one record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A frame-counter reservation: every counter below it may have been used.
    Reservation(u32),
    /// Node 1's uplink interval, seconds.
    Interval(u32),
    /// Node 1's boots so far.
    Boots(u32),
    /// The first record of a sector after its erase: its generation.
    Header(u32),
}

/// Record kinds: their index in [`Log`]'s values, their bit in what a sector holds, and their
/// word's low byte (a reservation's is 0).
const RESERVATION: usize = 0;
const INTERVAL: usize = 1;
const BOOTS: usize = 2;
const HEADER: usize = 3;
/// The kinds a sector gets copies of.
const KEPT: usize = 3;

impl Record {
    /// Its kind and value.
    fn split(self) -> (usize, u32) {
        match self {
            Record::Reservation(r) => (RESERVATION, r),
            Record::Interval(s) => (INTERVAL, s),
            Record::Boots(n) => (BOOTS, n),
            Record::Header(g) => (HEADER, g),
        }
    }

    fn join(kind: usize, value: u32) -> Option<Record> {
        match kind {
            RESERVATION => Some(Record::Reservation(value)),
            INTERVAL => Some(Record::Interval(value)),
            BOOTS => Some(Record::Boots(value)),
            HEADER => Some(Record::Header(value)),
            _ => None,
        }
    }

    /// The words to program, in order. A setting's value is cut to [`MAX_SETTING`].
    pub fn words(self) -> [u32; RECORD_WORDS] {
        let w = match self.split() {
            (RESERVATION, r) => r,
            (kind, value) => (value.min(MAX_SETTING) << 8) | kind as u32,
        };
        [w, !w]
    }

    /// The record two words are; `None` for no record (erased, cut) or one of a kind this
    /// code does not know.
    pub fn read(first: u32, second: u32) -> Option<Record> {
        if second != !first {
            return None;
        }
        match (first & 0xFF) as usize {
            _ if first == u32::MAX => Some(Record::Reservation(first)),
            RESERVATION => Some(Record::Reservation(first)),
            kind => Record::join(kind, first >> 8),
        }
    }
}

/// The two sectors' state, as found by [`Log::scan`] and kept up to date by [`Log::written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Records a sector holds.
    records: usize,
    /// The sector new records go into (0 or 1).
    active: usize,
    /// The next free record of the active sector (`records`: full).
    next: usize,
    /// The active sector's kinds (a bit each): what a new sector has yet to get.
    held: u8,
    /// By kind: the highest reservation, the newest interval and boot count, the active
    /// sector's generation (`None`: no header).
    values: [Option<u32>; 4],
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

/// What one sector holds, as [`Log::scan`] reads it: records used (perhaps cut: new ones go
/// after them), its kinds, and by kind its highest reservation or its last value.
#[derive(Debug, Clone, Copy, Default)]
struct Sector {
    used: usize,
    held: u8,
    values: [Option<u32>; 4],
}

impl Sector {
    // Not inlined: one copy for both sectors (flash on the node).
    #[inline(never)]
    fn scan(records: usize, read: impl Fn(usize) -> u32) -> Sector {
        let mut s = Sector::default();
        for record in 0..records {
            let first = read(record * RECORD_WORDS);
            let second = read(record * RECORD_WORDS + 1);
            if first == ERASED && second == ERASED {
                continue;
            }
            s.used = record + 1;
            let Some((kind, value)) = Record::read(first, second).map(Record::split) else {
                continue;
            };
            s.held |= 1 << kind;
            if let Some(v) = s.values.get_mut(kind) {
                *v = if kind == RESERVATION {
                    (*v).max(Some(value))
                } else {
                    Some(value)
                };
            }
        }
        s
    }

    fn value(&self, kind: usize) -> Option<u32> {
        self.values.get(kind).copied().flatten()
    }
}

impl Log {
    /// Reads the log from two sectors of `words` 32-bit words each; `read(sector, index)` is
    /// the word at `index` of `sector` (0 or 1).
    pub fn scan(words: usize, read: impl Fn(usize, usize) -> u32) -> Log {
        let records = words / RECORD_WORDS;
        let [a, b] = [0, 1].map(|sector| Sector::scan(records, |i| read(sector, i)));
        let generation = |s: &Sector| s.value(HEADER).unwrap_or(0);
        let active = if generation(&a) != generation(&b) {
            usize::from(generation(&b) > generation(&a))
        } else {
            usize::from(b.value(RESERVATION) > a.value(RESERVATION))
        };
        let (on, off) = if active == 0 { (a, b) } else { (b, a) };
        let mut values = on.values;
        for (kind, v) in values.iter_mut().enumerate().take(KEPT) {
            *v = if kind == RESERVATION {
                (*v).max(off.value(kind))
            } else {
                (*v).or(off.value(kind))
            };
        }
        Log {
            records,
            active,
            next: on.used,
            held: on.held,
            values,
        }
    }

    fn value(&self, kind: usize) -> Option<u32> {
        self.values.get(kind).copied().flatten()
    }

    /// The highest reservation stored (`None`: never stored, a new board).
    pub fn latest(&self) -> Option<u32> {
        self.value(RESERVATION)
    }

    /// The newest interval stored, seconds.
    pub fn interval(&self) -> Option<u32> {
        self.value(INTERVAL)
    }

    /// The newest boot count stored.
    pub fn boots(&self) -> Option<u32> {
        self.value(BOOTS)
    }

    /// What to program next on the way to storing `want`, and where: after an erase, the new
    /// sector's header; then copies of what the active sector does not hold yet; then `want`
    /// itself (the caller calls [`Log::written`] after each, and is done once the record was
    /// `want`). `None` when the active sector is full while copies are still missing (its
    /// records failed to program all along): erasing the other sector would lose them.
    pub fn plan(&self, want: Record) -> Option<(Step, Record)> {
        let copy = self.missing(want);
        if self.next >= self.records {
            if copy.is_some() {
                return None;
            }
            let generation = self.value(HEADER).unwrap_or(0).saturating_add(1);
            let sector = 1 - self.active;
            return Some((
                Step::EraseThenProgram { sector },
                Record::Header(generation),
            ));
        }
        let step = Step::Program {
            sector: self.active,
            record: self.next,
        };
        Some((step, copy.unwrap_or(want)))
    }

    /// Something the log knows that the active sector does not hold, and `want` does not
    /// replace (a reservation replaces the highest when it is not below it).
    fn missing(&self, want: Record) -> Option<Record> {
        let (want_kind, want_value) = want.split();
        (0..KEPT).find_map(|kind| {
            let value = self.value(kind)?;
            let replaced = kind == want_kind && !(kind == RESERVATION && want_value < value);
            let held = self.held & (1 << kind) != 0;
            if held || replaced {
                return None;
            }
            Record::join(kind, value)
        })
    }

    /// Records that `step` (from [`Log::plan`]) stored `record`, both words programmed and
    /// read back.
    pub fn written(&mut self, step: Step, record: Record) {
        match step {
            Step::Program { sector, record } => {
                self.active = sector;
                self.next = record + 1;
            }
            Step::EraseThenProgram { sector } => {
                self.active = sector;
                self.next = 1;
                self.held = 0;
            }
        }
        let (kind, value) = record.split();
        self.held |= 1 << kind;
        if let Some(v) = self.values.get_mut(kind) {
            *v = match kind {
                RESERVATION => (*v).max(Some(value)),
                _ => Some(value.min(MAX_SETTING)),
            };
        }
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
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    /// Two sectors of 8 words (4 records each), in RAM.
    #[derive(Clone, Debug)]
    struct Flash([Vec<u32>; 2]);

    impl Flash {
        fn new() -> Flash {
            Flash([std::vec![ERASED; 8], std::vec![ERASED; 8]])
        }

        fn log(&self) -> Log {
            Log::scan(8, |s, i| self.0[s][i])
        }

        /// Programs one record as the firmware does (erasing first when the step says so).
        fn put(&mut self, log: &mut Log, step: Step, record: Record) {
            let (sector, index) = match step {
                Step::Program { sector, record } => (sector, record),
                Step::EraseThenProgram { sector } => {
                    self.0[sector].fill(ERASED);
                    (sector, 0)
                }
            };
            for (k, word) in record.words().into_iter().enumerate() {
                let w = &mut self.0[sector][index * 2 + k];
                assert_eq!(*w, ERASED, "programs only erased words");
                *w = word;
            }
            log.written(step, record);
        }

        /// Stores `want` as the firmware does, calling `each` with the flash after every
        /// word programmed and every erase (where a power loss could cut it).
        fn store_watched(&mut self, log: &mut Log, want: Record, mut each: impl FnMut(&Flash)) {
            for _ in 0..6 {
                let (step, record) = log.plan(want).expect("room");
                let (sector, index) = match step {
                    Step::Program { sector, record } => (sector, record),
                    Step::EraseThenProgram { sector } => {
                        self.0[sector].fill(ERASED);
                        each(self);
                        (sector, 0)
                    }
                };
                for (k, word) in record.words().into_iter().enumerate() {
                    self.0[sector][index * 2 + k] = word;
                    each(self);
                }
                log.written(step, record);
                if record == want {
                    return;
                }
            }
            panic!("{want:?} not stored in 6 steps");
        }

        fn store(&mut self, log: &mut Log, want: Record) {
            self.store_watched(log, want, |_| {});
        }
    }

    #[test]
    fn a_new_board_has_nothing_stored() {
        let log = Flash::new().log();
        assert_eq!(
            (log.latest(), log.interval(), log.boots()),
            (None, None, None)
        );
        assert_eq!(
            log.plan(Record::Reservation(256)),
            Some((
                Step::Program {
                    sector: 0,
                    record: 0
                },
                Record::Reservation(256)
            ))
        );
    }

    #[test]
    fn records_fill_one_sector_then_the_other_and_a_reset_finds_the_latest() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        for k in 1..=20u32 {
            flash.store(&mut log, Record::Reservation(k * 256));
            assert_eq!(log.latest(), Some(k * 256));
            // A reset at any point reads back what was stored, and goes on in the same place.
            assert_eq!(flash.log(), log, "after record {k}");
        }
        // Sector 0 took 1-4; then each switch wrote a header, then the new reservation (it
        // replaces the copy of the highest): sector 1 [gen 1, 5, 6, 7], sector 0 [gen 2, 8,
        // 9, 10], ... sector 1 [gen 5, 17, 18, 19], sector 0 [gen 6, 20].
        assert_eq!(flash.0[0][..2], Record::Header(6).words());
        assert_eq!(flash.0[0][2..4], [20 * 256, !(20 * 256)]);
        assert_eq!(flash.0[0][4..], [ERASED; 4]);
        assert_eq!(flash.0[1][..2], Record::Header(5).words());
        assert_eq!(flash.0[1][6..], Record::Reservation(19 * 256).words());
    }

    /// Stores a mix of reservations and settings; the wanted values of each, after each.
    fn mixed(k: u32) -> Record {
        match k % 4 {
            0 => Record::Boots(k),
            1 => Record::Interval(k),
            2 => Record::Reservation(k * 256),
            _ => Record::Interval(1000 + k),
        }
    }

    /// What storing `want` changes: (reservation, interval, boots).
    fn values(want: Record) -> (Option<u32>, Option<u32>, Option<u32>) {
        match want {
            Record::Reservation(r) => (Some(r), None, None),
            Record::Interval(s) => (None, Some(s), None),
            Record::Boots(n) => (None, None, Some(n)),
            Record::Header(_) => (None, None, None),
        }
    }

    #[test]
    fn settings_are_the_newest_of_each_and_survive_every_switch() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        let mut want_values = (None, None, None);
        for k in 1..=60u32 {
            let want = mixed(k);
            flash.store(&mut log, want);
            let (r, i, b) = values(want);
            want_values = (
                r.or(want_values.0),
                i.or(want_values.1),
                b.or(want_values.2),
            );
            let after = flash.log();
            assert_eq!(after, log, "after {want:?}");
            assert_eq!(
                (after.latest(), after.interval(), after.boots()),
                want_values,
                "after {want:?}"
            );
        }
        assert_eq!(want_values, (Some(58 * 256), Some(1059), Some(60)));
    }

    /// A power loss after any word programmed or any erase, while storing any record, never
    /// loses what was stored before, and reads either the old or the new value of what was
    /// being stored.
    #[test]
    fn a_power_loss_at_any_moment_keeps_everything_stored_before() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        let mut cuts = 0;
        for k in 1..=60u32 {
            let want = mixed(k);
            let before = (log.latest(), log.interval(), log.boots());
            let new = values(want);
            flash.store_watched(&mut log, want, |f| {
                cuts += 1;
                let cut = f.log();
                let now = (cut.latest(), cut.interval(), cut.boots());
                for (field, (b, n, c)) in [
                    ("reservation", (before.0, new.0, now.0)),
                    ("interval", (before.1, new.1, now.1)),
                    ("boots", (before.2, new.2, now.2)),
                ] {
                    assert!(
                        c == b || (n.is_some() && c == n),
                        "storing {want:?}, cut: {field} {c:?}, before {b:?}"
                    );
                }
            });
        }
        assert!(cuts > 150, "{cuts} cuts tried");
    }

    #[test]
    fn a_cut_record_or_a_cut_erase_is_no_record() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        for k in 1..=4u32 {
            flash.store(&mut log, Record::Reservation(k * 256));
        }
        // Sector 0 is full; the next record erases sector 1. Power lost after the header's
        // first word:
        let mut cut = flash.clone();
        cut.0[1][0] = Record::Header(1).words()[0];
        let after = cut.log();
        assert_eq!(after.latest(), Some(4 * 256), "a cut record is no record");
        assert_eq!(
            after.plan(Record::Reservation(5 * 256)),
            Some((Step::EraseThenProgram { sector: 1 }, Record::Header(1)))
        );
        // A word half programmed (bits still 1) is no record either.
        let mut half = flash.clone();
        half.0[1][0] = (5 * 256) | 0xFF00_0000;
        half.0[1][1] = !(5 * 256) | 0x0000_00F0;
        assert_eq!(half.log().latest(), Some(4 * 256));
        // Sector 1 full of older records, sector 0 holding the latest: an erase of sector 1
        // cut half way sets bits of its old records back to 1, which makes them no records
        // (whichever words it reached), never a higher reservation.
        let mut older = Flash::new();
        older.0[1][..2].copy_from_slice(&Record::Reservation(256).words());
        older.0[0][..2].copy_from_slice(&Record::Reservation(512).words());
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
        flash.store(&mut log, Record::Reservation(256));
        flash.0[0][2] = 512; // cut: no complement
        let mut log = flash.log();
        assert_eq!(log.latest(), Some(256));
        let (step, _) = log.plan(Record::Reservation(512)).unwrap();
        assert_eq!(
            step,
            Step::Program {
                sector: 0,
                record: 2
            }
        );
        flash.store(&mut log, Record::Reservation(512));
        assert_eq!(flash.log().latest(), Some(512));
        // A failed programming marks its record used.
        let (step, _) = log.plan(Record::Reservation(768)).unwrap();
        log.skipped(step);
        assert_eq!(
            log.plan(Record::Reservation(768)),
            Some((Step::EraseThenProgram { sector: 1 }, Record::Header(1)))
        );
    }

    #[test]
    fn a_full_sector_missing_its_copies_is_never_left_for_an_erase() {
        let mut flash = Flash::new();
        let mut log = flash.log();
        for want in [
            Record::Interval(5),
            Record::Reservation(256),
            Record::Boots(1),
            Record::Boots(2),
        ] {
            flash.store(&mut log, want);
        }
        // The switch: header, then the copies fail to program, one record after the other.
        let (step, header) = log.plan(Record::Boots(3)).unwrap();
        flash.put(&mut log, step, header);
        for _ in 0..3 {
            let (step, record) = log.plan(Record::Boots(3)).unwrap();
            assert_ne!(record, Record::Boots(3), "copies first");
            log.skipped(step);
        }
        assert_eq!(
            log.plan(Record::Boots(3)),
            None,
            "sector 0 holds the only copies"
        );
        assert_eq!(flash.log().interval(), Some(5));
    }

    #[test]
    fn the_highest_reservation_wins_whatever_its_place_in_logs_without_headers() {
        // As the firmware before settings left them: reservations only, no header.
        let mut flash = Flash::new();
        flash.0[1][..2].copy_from_slice(&Record::Reservation(9_216).words());
        flash.0[0][..2].copy_from_slice(&Record::Reservation(256).words());
        flash.0[0][2..4].copy_from_slice(&Record::Reservation(512).words());
        let log = flash.log();
        assert_eq!(log.latest(), Some(9_216));
        assert_eq!(
            log.plan(Record::Interval(5)).unwrap().0,
            Step::Program {
                sector: 1,
                record: 1
            }
        );
        // The reservation 0xFFFF_FFFF is a record too (its complement is 0).
        let mut end = Flash::new();
        end.0[0][..2].copy_from_slice(&[u32::MAX, 0]);
        assert_eq!(end.log().latest(), Some(u32::MAX));
    }

    #[test]
    fn records_read_back_as_written_and_unknown_kinds_are_skipped() {
        for r in [
            Record::Reservation(0),
            Record::Reservation(256),
            Record::Reservation(0xFFFF_FF00),
            Record::Reservation(u32::MAX),
            Record::Interval(86_400),
            Record::Boots(MAX_SETTING),
            Record::Header(7),
        ] {
            let [a, b] = r.words();
            assert_eq!(Record::read(a, b), Some(r));
        }
        assert_eq!(
            Record::Boots(u32::MAX).words(),
            Record::Boots(MAX_SETTING).words()
        );
        assert_eq!(Record::read(0x0000_0104, !0x0000_0104), None, "kind 4");
        assert_eq!(Record::read(0x0000_01FE, !0x0000_01FE), None, "kind 0xFE");
        // Every reservation Node 1 stores has a low byte of 0, or is the last one.
        let (mut c, first) = crate::secure::FrameCounter::resume(Some(0xFFFF_FE00));
        let mut reservations = std::vec![first];
        while let Some((_, r)) = c.next_counter() {
            reservations.extend(r);
        }
        assert_eq!(reservations, [0xFFFF_FF00, u32::MAX]);
        assert!(reservations
            .iter()
            .all(|r| matches!(Record::read(*r, !*r), Some(Record::Reservation(v)) if v == *r)));
    }
}
