//! What any I2C master decides apart from its registers.
//!
//! **Transactions** (embedded-hal 1.0, `I2c::transaction`): a START and the address byte
//! before the first operation; adjacent operations of the same kind (write, write or read,
//! read) are one stream of bytes with no START, repeated START or STOP between them; a
//! repeated START and the address byte where the kind changes; a STOP after the last one.
//! [`runs`] turns the operations into these [`Run`]s, each carried under one (repeated) START.
//! A read run's last byte is the one the master NACKs: before a STOP and before a repeated
//! START alike (UM10204 §3.1.6: the master-receiver NACKs the last byte it wants).
//!
//! **Bus clear** (UM10204 §3.1.16): a device reset mid-byte may hold SDA low for ever, and
//! no START can then be made. [`clear_bus`] clocks SCL by hand (two open-drain GPIOs,
//! [`OpenDrainLines`]) until the device lets SDA go, nine clocks at most, then makes a STOP.

use embedded_hal::i2c::Operation;

/// Which way a run's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Master to device.
    Write,
    /// Device to master.
    Read,
}

/// Adjacent operations of one kind, carried under one START (or repeated START) and address
/// byte: `operations[first..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Which way the bytes go.
    pub direction: Direction,
    /// Its first operation's index.
    pub first: usize,
    /// One past its last operation's index.
    pub end: usize,
    /// Bytes in all its operations.
    pub len: usize,
    /// A STOP follows (the transaction ends); else a repeated START does.
    pub last: bool,
}

/// The kind of an operation.
pub fn direction(operation: &Operation<'_>) -> Direction {
    match operation {
        Operation::Write(_) => Direction::Write,
        Operation::Read(_) => Direction::Read,
    }
}

/// The runs of `operations`, in order (none for no operations).
pub fn runs<'o, 'b>(operations: &'o [Operation<'b>]) -> Runs<'o, 'b> {
    Runs {
        operations,
        next: 0,
    }
}

/// The run that starts at operation `first`, `None` past the last operation. A master that
/// must write into the operations between runs (a read) takes them one at a time with this.
pub fn run_from(operations: &[Operation<'_>], first: usize) -> Option<Run> {
    let rest = operations.get(first..)?;
    let kind = direction(rest.first()?);
    let (count, len) = rest.iter().take_while(|op| direction(op) == kind).fold(
        (0usize, 0usize),
        |(count, len), op| {
            let bytes = match op {
                Operation::Write(b) => b.len(),
                Operation::Read(b) => b.len(),
            };
            (count + 1, len.saturating_add(bytes))
        },
    );
    let end = first + count;
    Some(Run {
        direction: kind,
        first,
        end,
        len,
        last: end == operations.len(),
    })
}

/// The iterator of [`runs`].
#[derive(Debug)]
pub struct Runs<'o, 'b> {
    operations: &'o [Operation<'b>],
    next: usize,
}

impl Iterator for Runs<'_, '_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        let run = run_from(self.operations, self.next)?;
        self.next = run.end;
        Some(run)
    }
}

/// The bytes a write run sends, in order across its operations.
pub fn write_bytes<'o>(
    operations: &'o [Operation<'_>],
    run: &Run,
) -> impl Iterator<Item = u8> + 'o {
    operations
        .get(run.first..run.end)
        .unwrap_or_default()
        .iter()
        .flat_map(|op| match op {
            Operation::Write(bytes) => bytes.iter().copied(),
            Operation::Read(_) => [].iter().copied(),
        })
}

/// Where the `k`th byte of a read run goes (its operations' buffers one after the other), or
/// `None` past the run's end.
pub fn read_byte<'o>(
    operations: &'o mut [Operation<'_>],
    run: &Run,
    k: usize,
) -> Option<&'o mut u8> {
    let mut k = k;
    for op in operations.get_mut(run.first..run.end)? {
        if let Operation::Read(buffer) = op {
            if k < buffer.len() {
                return buffer.get_mut(k);
            }
            k -= buffer.len();
        }
    }
    None
}

/// Two open-drain lines driven as GPIOs, for [`clear_bus`]. "Release" lets the pull-up take
/// the line high unless a device holds it low.
pub trait OpenDrainLines {
    /// Releases SCL (`true`) or drives it low (`false`).
    fn set_scl(&mut self, release: bool);
    /// Releases SDA (`true`) or drives it low (`false`).
    fn set_sda(&mut self, release: bool);
    /// Whether SCL is high.
    fn scl_is_high(&mut self) -> bool;
    /// Whether SDA is high.
    fn sda_is_high(&mut self) -> bool;
    /// Waits half a clock period (5 µs for 100 kHz).
    fn wait_half_period(&mut self);
}

/// Clocks a bus clear gives before it declares SDA stuck (UM10204 §3.1.16).
pub const BUS_CLEAR_CLOCKS: u8 = 9;
/// Half periods a device may hold SCL low (clock stretching) each time the master releases
/// it, before the bus clear gives up: 1 ms at 100 kHz.
pub const SCL_STRETCH_HALF_PERIODS: u32 = 200;

/// Why a bus clear could not free the bus (only a power cycle of the device can then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusClearError {
    /// SCL stayed low with the master releasing it.
    SclHeldLow,
    /// SDA was still low after [`BUS_CLEAR_CLOCKS`] clocks.
    SdaHeldLow,
}

/// Frees a bus whose SDA a device holds low: SCL clocked until the device releases SDA
/// (sampled with SCL high), [`BUS_CLEAR_CLOCKS`] at most, then a STOP (SDA rising while SCL
/// is high) so that every device sees the bus idle. Returns the clocks it took (0 when SDA
/// was already high). Both lines are released when it returns. Every wait is bounded.
pub fn clear_bus(lines: &mut impl OpenDrainLines) -> Result<u8, BusClearError> {
    lines.set_sda(true);
    lines.set_scl(true);
    lines.wait_half_period();
    wait_for_scl(lines)?;
    let mut clocks = 0;
    while !lines.sda_is_high() {
        if clocks == BUS_CLEAR_CLOCKS {
            return Err(BusClearError::SdaHeldLow);
        }
        lines.set_scl(false);
        lines.wait_half_period();
        lines.set_scl(true);
        lines.wait_half_period();
        wait_for_scl(lines)?;
        clocks += 1;
    }
    // STOP: SDA goes low while SCL is low (not a START), then rises while SCL is high.
    lines.set_scl(false);
    lines.wait_half_period();
    lines.set_sda(false);
    lines.wait_half_period();
    lines.set_scl(true);
    lines.wait_half_period();
    let scl = wait_for_scl(lines);
    lines.set_sda(true);
    lines.wait_half_period();
    scl.map(|()| clocks)
}

/// Waits, [`SCL_STRETCH_HALF_PERIODS`] at most, for a released SCL to be high.
fn wait_for_scl(lines: &mut impl OpenDrainLines) -> Result<(), BusClearError> {
    for _ in 0..SCL_STRETCH_HALF_PERIODS {
        if lines.scl_is_high() {
            return Ok(());
        }
        lines.wait_half_period();
    }
    if lines.scl_is_high() {
        Ok(())
    } else {
        Err(BusClearError::SclHeldLow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn run(direction: Direction, first: usize, end: usize, len: usize, last: bool) -> Run {
        Run {
            direction,
            first,
            end,
            len,
            last,
        }
    }

    #[test]
    fn adjacent_operations_of_one_kind_share_one_start() {
        let (a, b, c) = ([1u8, 2], [3u8], [4u8, 5, 6]);
        let (mut r1, mut r2, mut r3) = ([0u8; 2], [0u8; 3], [0u8; 1]);
        let ops = [
            Operation::Write(&a),
            Operation::Write(&b),
            Operation::Read(&mut r1),
            Operation::Read(&mut r2),
            Operation::Write(&c),
            Operation::Read(&mut r3),
        ];
        let got: Vec<Run> = runs(&ops).collect();
        assert_eq!(run_from(&ops, 2), Some(got[1]));
        assert_eq!(run_from(&ops, 6), None);
        assert_eq!(run_from(&ops, 99), None);
        assert_eq!(
            got,
            vec![
                run(Direction::Write, 0, 2, 3, false),
                run(Direction::Read, 2, 4, 5, false),
                run(Direction::Write, 4, 5, 3, false),
                run(Direction::Read, 5, 6, 1, true),
            ]
        );
    }

    #[test]
    fn common_transactions_plan_as_expected() {
        assert_eq!(runs(&[]).count(), 0);
        let reg = [0xD0u8];
        let mut buf = [0u8; 1];
        // write_read: START, write, repeated START, read, STOP.
        let ops = [Operation::Write(&reg), Operation::Read(&mut buf)];
        assert_eq!(
            runs(&ops).collect::<Vec<_>>(),
            vec![
                run(Direction::Write, 0, 1, 1, false),
                run(Direction::Read, 1, 2, 1, true)
            ]
        );
        // An empty write (an address probe) is a run of 0 bytes.
        let ops = [Operation::Write(&[])];
        assert_eq!(
            runs(&ops).collect::<Vec<_>>(),
            vec![run(Direction::Write, 0, 1, 0, true)]
        );
        // Empty reads between reads merge away.
        let (mut x, mut y) = ([0u8; 2], [0u8; 0]);
        let ops = [Operation::Read(&mut x), Operation::Read(&mut y)];
        assert_eq!(
            runs(&ops).collect::<Vec<_>>(),
            vec![run(Direction::Read, 0, 2, 2, true)]
        );
    }

    #[test]
    fn a_runs_bytes_span_its_operations() {
        let (a, b) = ([1u8, 2], [3u8]);
        let (mut r1, mut r2, mut r3) = ([0u8; 2], [0u8; 0], [0u8; 2]);
        let mut ops = [
            Operation::Write(&a),
            Operation::Write(&b),
            Operation::Read(&mut r1),
            Operation::Read(&mut r2),
            Operation::Read(&mut r3),
        ];
        let plan: Vec<Run> = runs(&ops).collect();
        assert_eq!(write_bytes(&ops, &plan[0]).collect::<Vec<_>>(), [1, 2, 3]);
        for k in 0..4 {
            *read_byte(&mut ops, &plan[1], k).unwrap() = 10 + k as u8;
        }
        assert!(read_byte(&mut ops, &plan[1], 4).is_none());
        // A run that is not the operations' (stale plan) gives nothing, never a panic.
        let beyond = run(Direction::Read, 7, 9, 3, true);
        assert!(read_byte(&mut ops, &beyond, 0).is_none());
        assert_eq!(write_bytes(&ops, &beyond).count(), 0);
        assert_eq!((r1, r3), ([10, 11], [12, 13]));
    }

    /// Two lines with a device on them: it holds SDA low until it has seen `release_after`
    /// falling SCL edges (`None`: never), and holds SCL low for `stretch` half periods.
    struct Bus {
        scl_out: bool,
        sda_out: bool,
        release_after: Option<u32>,
        stretch: u32,
        falling_edges: u32,
        half_periods: u32,
        /// (SCL, SDA) levels, one entry per change.
        trace: Vec<(bool, bool)>,
    }

    impl Bus {
        fn new(release_after: Option<u32>, stretch: u32) -> Self {
            Bus {
                scl_out: true,
                sda_out: true,
                release_after,
                stretch,
                falling_edges: 0,
                half_periods: 0,
                trace: vec![],
            }
        }
        fn scl(&self) -> bool {
            self.scl_out && self.stretch == 0
        }
        fn sda(&self) -> bool {
            let held = self.release_after.is_none_or(|n| self.falling_edges < n);
            self.sda_out && !held
        }
        fn record(&mut self) {
            let now = (self.scl(), self.sda());
            if self.trace.last() != Some(&now) {
                self.trace.push(now);
            }
        }
        /// START conditions (SDA falling while SCL high) and STOPs (SDA rising while SCL high).
        fn conditions(&self) -> (usize, usize) {
            let pairs = self.trace.windows(2);
            let start = pairs
                .clone()
                .filter(|w| w[0].0 && w[1].0 && w[0].1 && !w[1].1)
                .count();
            let stop = pairs
                .filter(|w| w[0].0 && w[1].0 && !w[0].1 && w[1].1)
                .count();
            (start, stop)
        }
    }

    impl OpenDrainLines for Bus {
        fn set_scl(&mut self, release: bool) {
            if self.scl() && !release {
                self.falling_edges += 1;
            }
            self.scl_out = release;
            self.record();
        }
        fn set_sda(&mut self, release: bool) {
            self.sda_out = release;
            self.record();
        }
        fn scl_is_high(&mut self) -> bool {
            self.scl()
        }
        fn sda_is_high(&mut self) -> bool {
            self.sda()
        }
        fn wait_half_period(&mut self) {
            self.half_periods += 1;
            self.stretch = self.stretch.saturating_sub(1);
            self.record();
        }
    }

    #[test]
    fn a_free_bus_gets_a_stop_and_no_clock() {
        let mut bus = Bus::new(Some(0), 0);
        assert_eq!(clear_bus(&mut bus), Ok(0));
        assert_eq!(bus.conditions(), (0, 1));
        assert_eq!(bus.trace.last(), Some(&(true, true)));
    }

    #[test]
    fn sda_held_low_is_clocked_free_then_stopped() {
        for n in 1..=9 {
            let mut bus = Bus::new(Some(n), 0);
            assert_eq!(clear_bus(&mut bus), Ok(n as u8), "released after {n}");
            // n clocks, then the STOP's SCL low; no START anywhere, one STOP at the end.
            assert_eq!(bus.falling_edges, n + 1);
            assert_eq!(bus.conditions(), (0, 1));
            assert_eq!(bus.trace.last(), Some(&(true, true)));
        }
    }

    #[test]
    fn sda_never_released_gives_up_after_nine_clocks() {
        let mut bus = Bus::new(None, 0);
        assert_eq!(clear_bus(&mut bus), Err(BusClearError::SdaHeldLow));
        assert_eq!(bus.falling_edges, 9);
        assert_eq!(bus.conditions().0, 0);
        assert!(bus.scl_out && bus.sda_out, "lines released");
    }

    #[test]
    fn a_stretching_device_is_waited_for_but_not_for_ever() {
        let mut bus = Bus::new(Some(2), 50);
        assert_eq!(clear_bus(&mut bus), Ok(2));
        let mut bus = Bus::new(Some(2), u32::MAX);
        assert_eq!(clear_bus(&mut bus), Err(BusClearError::SclHeldLow));
        assert!(bus.half_periods <= SCL_STRETCH_HALF_PERIODS + 1);
    }
}
