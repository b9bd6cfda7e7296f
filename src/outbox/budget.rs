//! The disk budget (`[storage] max_bytes`): after each append the pages in use are compared
//! with the budget. Over it, the oldest delivered history goes first; if that is not enough,
//! `drop_oldest` deletes the oldest undelivered readings (reported to the caller, who counts
//! and logs them) and `block` keeps them, telling the caller to stop accepting. Freed pages
//! are reused by SQLite, so the file stops growing at about the budget.
//!
//! The arithmetic is pure ([`rows_to_free`], [`plan`]); [`Outbox::enforce_budget`] only reads
//! the figures and carries the plan out. Rows are counted, never inferred from the seq range:
//! retention deletes by time, which can leave holes in it.

use rusqlite::{params, OptionalExtension};

use super::rows::{Seq, EVENT_UNIT};
use super::{Outbox, OutboxError, Result};

/// What [`Outbox::enforce_budget`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetReport {
    /// Delivered readings deleted from the history.
    pub history_pruned: u64,
    /// Undelivered readings dropped (`drop_oldest`).
    pub undelivered_dropped: u64,
    /// Still over budget with undelivered readings kept (`block`): accept nothing more.
    pub over: bool,
}

/// How many of the oldest of `rows` rows, taking `used` bytes, must go to bring the outbox
/// down to 90% of `max_bytes` (room for a while before the next round); `None` when it is
/// within the budget.
pub(super) fn rows_to_free(used: u64, max_bytes: u64, rows: u64) -> Option<u64> {
    if used <= max_bytes {
        return None;
    }
    let per_row = (used / rows.max(1)).max(1);
    let target = max_bytes / 10 * 9;
    Some((used - target).div_ceil(per_row).clamp(1, rows.max(1)))
}

/// What to delete once the rows to free end at `cut`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// Delete the delivered history up to this seq.
    pub history_cut: Option<Seq>,
    /// Then the undelivered rows up to this seq (`drop_oldest`).
    pub drop_cut: Option<Seq>,
    /// Undelivered rows are kept although the budget wants them gone (`block`).
    pub over: bool,
}

/// The plan for freeing every row up to `cut` when every sink has delivered up to
/// `delivered` and the oldest row is `oldest`: delivered history first, then undelivered
/// rows only when `drop_undelivered`.
pub(super) fn plan(cut: Seq, oldest: Seq, delivered: Seq, drop_undelivered: bool) -> Plan {
    let history_cut = cut.min(delivered);
    let undelivered = cut > delivered;
    Plan {
        history_cut: (history_cut >= oldest).then_some(history_cut),
        drop_cut: (undelivered && drop_undelivered).then_some(cut),
        over: undelivered && !drop_undelivered,
    }
}

impl Outbox {
    /// Bytes of database pages in use (free pages are reused before the file grows).
    pub fn used_bytes(&self) -> Result<u64> {
        let q = |pragma: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        };
        let used = (|| {
            Ok::<_, rusqlite::Error>((q("page_count")? - q("freelist_count")?) * q("page_size")?)
        })()
        .map_err(|e| self.err(e))?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Brings the outbox under `max_bytes`: oldest delivered history first, then, when
    /// `drop_undelivered`, the oldest undelivered readings.
    pub fn enforce_budget(
        &mut self,
        max_bytes: u64,
        drop_undelivered: bool,
    ) -> Result<BudgetReport> {
        let mut report = BudgetReport::default();
        let used = self.used_bytes()?;
        if used <= max_bytes {
            return Ok(report);
        }
        let path = self.path.clone();
        let err = |cause| OutboxError::Sqlite {
            path: path.clone(),
            cause,
        };
        let rows: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .map_err(err)?;
        let rows = u64::try_from(rows).unwrap_or(0);
        let Some(free) = rows_to_free(used, max_bytes, rows).filter(|_| rows > 0) else {
            report.over = true;
            return Ok(report);
        };
        let bounds: Option<(Seq, Seq)> = self
            .conn
            .query_row(
                "SELECT (SELECT MIN(seq) FROM readings),
                        (SELECT seq FROM readings ORDER BY seq LIMIT 1 OFFSET ?1)",
                [i64::try_from(free - 1).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((oldest, cut)) = bounds else {
            report.over = true;
            return Ok(report);
        };
        let plan = plan(cut, oldest, self.delivered()?, drop_undelivered);
        if let Some(history_cut) = plan.history_cut {
            report.history_pruned = self
                .conn
                .execute("DELETE FROM readings WHERE seq <= ?1", [history_cut])
                .map_err(err)? as u64;
        }
        if let Some(drop_cut) = plan.drop_cut {
            // Counted: the readings (not gateway events) that no sink will ever deliver.
            let readings: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM readings WHERE seq <= ?1 AND unit IS NOT ?2",
                    params![drop_cut, EVENT_UNIT],
                    |r| r.get(0),
                )
                .map_err(err)?;
            self.conn
                .execute("DELETE FROM readings WHERE seq <= ?1", [drop_cut])
                .map_err(err)?;
            report.undelivered_dropped = u64::try_from(readings).unwrap_or(0);
            // The feed may hold some of them: sinks read the database from here on.
            self.feed.forget();
        }
        if plan.history_cut.is_some() || plan.drop_cut.is_some() {
            self.after_commit();
        }
        report.over = plan.over;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_to_free_reach_nine_tenths_of_the_budget() {
        assert_eq!(rows_to_free(1000, 1000, 10), None);
        // 100 bytes a row; 2000 used, budget 1000: down to 900 means 11 rows.
        assert_eq!(rows_to_free(2000, 1000, 20), Some(11));
        // Never more rows than there are, never none when over.
        assert_eq!(rows_to_free(10_000, 10, 5), Some(5));
        // Just over: down to 90%, not just under the budget.
        assert_eq!(rows_to_free(1_000_100, 1_000_000, 10_000), Some(1001));
    }

    #[test]
    fn delivered_history_goes_before_undelivered_rows() {
        let s = Seq::new;
        // All to free is delivered.
        assert_eq!(
            plan(s(50), s(1), s(80), true),
            Plan {
                history_cut: Some(s(50)),
                drop_cut: None,
                over: false
            }
        );
        // Part delivered: history up to the cursor, then the rest dropped...
        assert_eq!(
            plan(s(50), s(1), s(20), true),
            Plan {
                history_cut: Some(s(20)),
                drop_cut: Some(s(50)),
                over: false
            }
        );
        // ...or kept, and the caller told to stop accepting.
        assert_eq!(
            plan(s(50), s(1), s(20), false),
            Plan {
                history_cut: Some(s(20)),
                drop_cut: None,
                over: true
            }
        );
        // Nothing delivered yet (the cursor is before the oldest row).
        assert_eq!(
            plan(s(50), s(30), s(10), true),
            Plan {
                history_cut: None,
                drop_cut: Some(s(50)),
                over: false
            }
        );
    }
}
