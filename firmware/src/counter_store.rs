//! Node 1's durable store: its frame-counter reservations (`lora_link::node1::Counter` calls
//! [`CounterStore::store`] before it hands out a counter of a new block), so that the counter
//! never goes back across resets and power loss; and its settings: the uplink interval an
//! `interval` command set, and its boot count (`docs/PROTOCOL.md`, "Downlink").
//!
//! On the board: the log of `lora_link::counter_log` in flash sectors 6 and 7 of the
//! STM32F446RE (128 KiB each, 0x0804_0000 and 0x0806_0000; `memory.x` keeps the code out of
//! them), programmed and erased through the FLASH controller (RM0390, section 3.6: unlock with
//! KEYR, 32-bit parallelism, PG to program a word, SER/SNB/STRT to erase a sector, BSY
//! awaited, error flags checked, each word read back). The ART caches are off (FLASH_ACR's
//! reset value; the board runs on the 16 MHz HSI with no wait state), so a read after a write
//! sees the flash itself. While the controller programs or erases, the core stalls on its next
//! fetch from flash, interrupts included: a word takes ~16 µs, an erase of a 128 KiB sector
//! 1 to 2 s (datasheet, 32-bit parallelism), once every 16,384 records (firmware/README.md).
//!
//! Under QEMU: the same values in the words RAM keeps across a reset (`kept`). QEMU 7.2's
//! STM32F405 has no model of the FLASH controller, so they survive a `reboot` but not a new
//! start of QEMU (the counter starts at 0 then: fine for the emulator's tests, which start
//! fresh; never for a board).

/// Why a record was not stored (for a reservation: the node then sends nothing and tries
/// again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum StoreError {
    /// The FLASH controller reported an error: its status register's error bits.
    Flash(u32),
    /// The controller stayed busy far longer than the datasheet's maximum.
    Timeout,
    /// A programmed word did not read back as written.
    ReadBack,
    /// The active sector is full and the copies it must hold before the other sector may be
    /// erased failed to program (`lora_link::counter_log::Log::plan`).
    Stuck,
}

#[cfg(not(feature = "qemu"))]
pub use flash::CounterStore;
#[cfg(feature = "qemu")]
pub use ram::CounterStore;

#[cfg(not(feature = "qemu"))]
mod flash {
    use lora_link::counter_log::{Log, Record, Step, RECORD_WORDS};
    use stm32f4::stm32f446::FLASH;

    use super::StoreError;

    /// The two sectors of the log: number (FLASH_CR.SNB) and address (RM0390, table 5).
    const SECTORS: [(u8, usize); 2] = [(6, 0x0804_0000), (7, 0x0806_0000)];
    /// 32-bit words in each of them (128 KiB).
    const SECTOR_WORDS: usize = 128 * 1024 / 4;
    /// FLASH_KEYR's unlock sequence.
    const KEYS: [u32; 2] = [0x4567_0123, 0xCDEF_89AB];
    /// FLASH_SR's error flags: OPERR, WRPERR, PGAERR, PGPERR, PGSERR, RDERR.
    const SR_ERRORS: u32 = 0b1_1111_0010;
    /// Polls of BSY before giving up: far beyond a 2 s erase at 16 MHz.
    const BUSY_POLLS: u32 = 200_000_000;

    /// Programs of one record at most: a header, three copies, the record.
    const MAX_PROGRAMS: usize = 5;

    /// The log in flash sectors 6 and 7.
    pub struct CounterStore {
        flash: FLASH,
        log: Log,
    }

    fn address(sector: usize, word: usize) -> usize {
        let base = SECTORS.get(sector).map_or(0, |(_, a)| *a);
        base + word * 4
    }

    fn read(sector: usize, word: usize) -> u32 {
        // SAFETY: `address` is a word of sector 6 or 7 of the on-chip flash (word <
        // SECTOR_WORDS, checked by the callers: `Log` indexes within the size it was given),
        // always mapped and readable; volatile, as the FLASH controller changes it.
        unsafe { core::ptr::read_volatile(address(sector, word) as *const u32) }
    }

    impl CounterStore {
        /// Reads the log (both sectors, 65,536 words: some 20 ms at 16 MHz).
        pub fn open(flash: FLASH) -> CounterStore {
            let log = Log::scan(SECTOR_WORDS, |s, w| {
                if w < SECTOR_WORDS {
                    read(s, w)
                } else {
                    lora_link::counter_log::ERASED
                }
            });
            CounterStore { flash, log }
        }

        /// The highest reservation stored (`None`: a new board, or sectors erased).
        pub fn stored(&self) -> Option<u32> {
            self.log.latest()
        }

        /// The uplink interval stored last, seconds.
        pub fn interval(&self) -> Option<u32> {
            self.log.interval()
        }

        /// Stores `reservation` durably: returns once it is programmed and read back.
        pub fn store(&mut self, reservation: u32) -> Result<(), StoreError> {
            self.put(Record::Reservation(reservation))
        }

        /// Stores the uplink interval, seconds.
        pub fn set_interval(&mut self, seconds: u32) -> Result<(), StoreError> {
            self.put(Record::Interval(seconds))
        }

        /// Counts this boot; returns the boots so far, this one included (counted even when
        /// storing it failed).
        pub fn count_boot(&mut self) -> (u32, Result<(), StoreError>) {
            let boots = self.log.boots().unwrap_or(0).saturating_add(1);
            (boots, self.put(Record::Boots(boots)))
        }

        fn put(&mut self, want: Record) -> Result<(), StoreError> {
            self.unlock();
            let mut result = Err(StoreError::Stuck);
            for _ in 0..MAX_PROGRAMS {
                let Some((step, record)) = self.log.plan(want) else {
                    break;
                };
                result = self.append(step, record);
                if result.is_err() || record == want {
                    break;
                }
            }
            self.flash.cr().modify(|_, w| w.lock().locked());
            result
        }

        fn append(&mut self, step: Step, record: Record) -> Result<(), StoreError> {
            let (sector, index) = match step {
                Step::Program { sector, record } => (sector, record),
                Step::EraseThenProgram { sector } => {
                    self.erase(sector)?;
                    (sector, 0)
                }
            };
            for (k, word) in record.words().into_iter().enumerate() {
                let at = index * RECORD_WORDS + k;
                if at >= SECTOR_WORDS {
                    return Err(StoreError::ReadBack);
                }
                if let Err(e) = self.program(address(sector, at), word) {
                    self.log.skipped(step);
                    return Err(e);
                }
                if read(sector, at) != word {
                    self.log.skipped(step);
                    return Err(StoreError::ReadBack);
                }
            }
            self.log.written(step, record);
            Ok(())
        }

        fn unlock(&mut self) {
            if self.flash.cr().read().lock().is_locked() {
                for key in KEYS {
                    self.flash.keyr().write(|w| w.key().set(key));
                }
            }
        }

        /// Waits for BSY to clear, then returns and clears the error flags.
        fn finish(&mut self) -> Result<(), StoreError> {
            let mut polls = 0u32;
            while self.flash.sr().read().bsy().is_busy() {
                polls += 1;
                if polls > BUSY_POLLS {
                    return Err(StoreError::Timeout);
                }
            }
            let errors = self.flash.sr().read().bits() & SR_ERRORS;
            // SAFETY: FLASH_SR's flags are cleared by writing 1; the other bits are read-only.
            self.flash.sr().write(|w| unsafe { w.bits(errors | 1) });
            if errors != 0 {
                return Err(StoreError::Flash(errors));
            }
            Ok(())
        }

        /// Programs one 32-bit word at `addr` (erased: all ones).
        fn program(&mut self, addr: usize, word: u32) -> Result<(), StoreError> {
            self.finish()?;
            self.flash
                .cr()
                .modify(|_, w| w.psize().psize32().pg().program());
            // SAFETY: `addr` is a word of the log's sectors, which hold no code or data of the
            // image (memory.x); with PG set, a word write to flash programs it.
            unsafe { core::ptr::write_volatile(addr as *mut u32, word) };
            cortex_m::asm::dsb();
            let result = self.finish();
            self.flash.cr().modify(|_, w| w.pg().clear_bit());
            result
        }

        /// Erases sector `sector` of the log (0 or 1).
        fn erase(&mut self, sector: usize) -> Result<(), StoreError> {
            let Some(&(snb, _)) = SECTORS.get(sector) else {
                return Err(StoreError::Flash(0));
            };
            self.finish()?;
            // SAFETY: SNB takes a sector number (0-7 on this chip); 6 and 7 are the log's.
            self.flash
                .cr()
                .modify(|_, w| unsafe { w.psize().psize32().ser().sector_erase().snb().bits(snb) });
            self.flash.cr().modify(|_, w| w.strt().start());
            let result = self.finish();
            // SAFETY: as above; 0 clears the sector number.
            self.flash
                .cr()
                .modify(|_, w| unsafe { w.ser().clear_bit().snb().bits(0) });
            result
        }
    }
}

#[cfg(feature = "qemu")]
mod ram {
    use lora_link::counter_log::MAX_SETTING;
    use lora_link::node1::commands::check_word;
    use stm32f4::stm32f446::FLASH;

    use super::StoreError;
    use crate::kept;

    /// The kept words' first word: what this store wrote.
    const MAGIC: u32 = 0x5354_4F31;
    /// Magic, reservation stored (0/1), reservation, interval (0: none), boots, check.
    const WORDS: usize = 6;

    /// The values in RAM kept across a reset (QEMU has no FLASH controller model).
    pub struct CounterStore {
        reservation: Option<u32>,
        interval: Option<u32>,
        boots: u32,
    }

    impl CounterStore {
        /// What was kept across the last reset; nothing on a new start of QEMU.
        pub fn open(_flash: FLASH) -> CounterStore {
            let [magic, stored, reservation, interval, boots, check] =
                kept::load::<WORDS>(kept::STORE);
            if magic != MAGIC || check != check_word(&[magic, stored, reservation, interval, boots])
            {
                return CounterStore {
                    reservation: None,
                    interval: None,
                    boots: 0,
                };
            }
            CounterStore {
                reservation: (stored != 0).then_some(reservation),
                interval: (interval != 0).then_some(interval),
                boots,
            }
        }

        /// The reservation stored last.
        pub fn stored(&self) -> Option<u32> {
            self.reservation
        }

        /// The uplink interval stored last, seconds.
        pub fn interval(&self) -> Option<u32> {
            self.interval
        }

        /// Keeps `reservation`.
        pub fn store(&mut self, reservation: u32) -> Result<(), StoreError> {
            self.reservation = Some(reservation);
            self.keep();
            Ok(())
        }

        /// Keeps the uplink interval, seconds.
        pub fn set_interval(&mut self, seconds: u32) -> Result<(), StoreError> {
            self.interval = Some(seconds.min(MAX_SETTING));
            self.keep();
            Ok(())
        }

        /// Counts this boot; returns the boots so far, this one included.
        pub fn count_boot(&mut self) -> (u32, Result<(), StoreError>) {
            self.boots = self.boots.saturating_add(1).min(MAX_SETTING);
            self.keep();
            (self.boots, Ok(()))
        }

        fn keep(&self) {
            let body = [
                MAGIC,
                u32::from(self.reservation.is_some()),
                self.reservation.unwrap_or(0),
                self.interval.unwrap_or(0),
                self.boots,
            ];
            kept::save(kept::STORE, &body);
            kept::save(kept::STORE + body.len(), &[check_word(&body)]);
        }
    }
}
