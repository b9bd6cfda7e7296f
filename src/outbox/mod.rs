//! The outbox: every reading is committed here before any sink sees it (invariant 1), and
//! each sink's cursor moves only after its far end confirmed (invariant 2). The same SQLite
//! database is the embedded time-series history behind the dashboard and `/api`.
//!
//! Design:
//! - One file, `outbox.db` in the storage dir, SQLite in WAL mode ([`schema`]).
//!   `synchronous = NORMAL` by default: a crash or SIGKILL of the gateway loses nothing
//!   committed; a power loss may lose the last transactions. `[storage] sync = "full"` closes
//!   that window too.
//! - `readings(seq INTEGER PRIMARY KEY AUTOINCREMENT, ts, node, metric, unit, value)` ([`rows`]):
//!   [`Seq`] orders everything and is never reused, even after every row was pruned, so a
//!   cursor can never skip a new reading. `ts` is the packet's receive time in ns. Gateway
//!   events are rows too, marked with [`EVENT_UNIT`].
//! - `cursors(sink, seq)` ([`cursors`]): the highest seq the sink has delivered; everything
//!   after it is resent after a restart (at-least-once). A sink seen for the first time starts
//!   at the current end (it delivers what arrives from then on, not the whole history).
//! - One writer: [`Outbox`] ([`writer`]) is the only connection that changes the data, owned
//!   by the ingest thread, one transaction per batch of packets. Gateway events, cursor moves
//!   and pruning reach it as messages ([`queue`]). Sinks and the web server read through
//!   connections of their own ([`OutboxReader`], [`reader`]) that SQLite keeps from writing.
//!   No connection checkpoints the WAL by itself: a background thread does, so that a commit
//!   never pays for syncing the database file ([`checkpoint`]).
//! - Retention deletes readings older than `[storage] retention` only when every configured
//!   sink has delivered them: undelivered data is never pruned by age.
//! - Disk budget (`[storage] max_bytes`, [`budget`]): delivered history goes first, then the
//!   `on_full` policy decides about undelivered readings.
//! - A corrupt file is never deleted: opening fails with [`OutboxError::Corrupt`], or, when the
//!   user asked for it, the file is renamed aside and a new outbox starts.

mod backlog;
mod budget;
mod checkpoint;
mod commands;
mod cursors;
mod feed;
pub(crate) mod history;
mod lock;
mod queue;
mod reader;
pub mod retention;
mod rows;
mod schema;
mod writer;

pub use backlog::Backlog;
pub use budget::BudgetReport;
pub use commands::{CommandChange, CommandRow, NodeInfoRow};
pub use feed::FeedReader;
pub use lock::LOCK_FILE;
pub use queue::{
    Applied, CommandOutcome, NotQueued, Reply, Write, WriteQueue, Writes, WRITE_QUEUE_CAPACITY,
};
pub use reader::OutboxReader;
pub use rows::{EventRow, Seq, StoredReading, EVENT_UNIT};
pub use writer::Outbox;

use std::path::PathBuf;

/// File name of the outbox database inside the storage dir.
pub const DB_FILE: &str = "outbox.db";

/// What can go wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Another gateway uses the storage dir.
    #[error("storage dir {dir} is in use by another iiot-gateway{}: stop it, or give this one its own [storage] dir (--storage-dir)", pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Locked {
        /// The dir.
        dir: PathBuf,
        /// The holder's PID, when its lock file says.
        pid: Option<u32>,
    },
    /// The storage dir cannot be created or written.
    #[error("cannot use storage dir {dir}: {cause} (check its permissions, or set [storage] dir)")]
    Dir {
        /// The dir.
        dir: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The storage dir or database file is not writable.
    #[error("cannot write the outbox {path}: {cause} (check that the user running the gateway can write there, or set [storage] dir)")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
    /// The database file is not a usable SQLite database.
    #[error("{path} is not a valid outbox database ({cause}); it was left untouched: restore it from a backup, or start with --move-corrupt-outbox to rename it aside and begin an empty outbox")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
    /// Any other SQLite failure.
    #[error("outbox database {path}: {cause}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        cause: rusqlite::Error,
    },
}

type Result<T> = std::result::Result<T, OutboxError>;

/// The storage settings of a test outbox in `dir`: an hour of retention, 1 GiB, `normal`
/// sync, `drop_oldest`.
#[cfg(test)]
pub(crate) fn test_storage(dir: &std::path::Path) -> crate::config::StorageConfig {
    crate::config::StorageConfig {
        dir: dir.to_path_buf(),
        retention: std::time::Duration::from_secs(3600),
        sync: crate::config::SyncMode::Normal,
        max_bytes: 1 << 30,
        on_full: crate::config::FullPolicy::DropOldest,
        move_corrupt_aside: false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{params, Connection};

    use super::schema::SCHEMA;
    use super::*;
    use crate::config::StorageConfig;
    use crate::reading::{Packet, Reading};

    fn s(n: i64) -> Seq {
        Seq::new(n)
    }

    fn storage(dir: &Path) -> StorageConfig {
        test_storage(dir)
    }

    fn packet(ts: i64, values: &[&str]) -> Packet {
        Packet {
            received_ns: ts,
            origin: None,
            device_ts: None,
            link: None,
            readings: values
                .iter()
                .map(|v| Reading {
                    node: "node1".into(),
                    metric: "temperature".into(),
                    unit: Some("celsius"),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn commits_leave_checkpoints_to_the_background_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let size = || std::fs::metadata(&db).unwrap().len();
        let mut with = Outbox::open(&storage(dir.path())).unwrap();
        let before = size();
        for i in 0..400 {
            with.append(&[packet(i, &["1.0"; 50])]).unwrap();
        }
        // 20,000 rows are in the WAL, and the database file gets them only from a checkpoint:
        // the thread does it within a second or two.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(size() > before, "no checkpoint within 10 s");
        drop(with);

        // Commits back to back: a passive checkpoint alone never catches up, and without a
        // truncating checkpoint the WAL file only ever grows (a restarted WAL reuses the file
        // from its start but keeps its size). So it must shrink at some point. A watcher
        // samples its size; the writer goes on until it saw a shrink, or gives up after 30 s
        // (a loaded machine may starve the checkpoint thread for a while, never for that long).
        let busy = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(busy.path())).unwrap();
        let wal = busy.path().join(format!("{DB_FILE}-wal"));
        let shrank = std::sync::atomic::AtomicBool::new(false);
        let writing = std::sync::atomic::AtomicBool::new(true);
        let mut commits = 0u64;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = 0;
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    if now < last {
                        shrank.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    last = now;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            let start = std::time::Instant::now();
            while !shrank.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < std::time::Duration::from_secs(30)
            {
                ob.append(&[packet(commits as i64, &["1.0"; 9])]).unwrap();
                commits += 1;
            }
            writing.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(
            shrank.into_inner(),
            "WAL never truncated in 30 s of back-to-back commits ({commits} commits)"
        );

        // A reader holding an old snapshot (a long history query) keeps the WAL from being
        // truncated, and the writer must not wait for it.
        let reader = ob.reader().unwrap();
        let held = std::sync::Barrier::new(2);
        let slow_commits = std::thread::scope(|scope| {
            scope.spawn(|| {
                let conn = reader.conn();
                conn.execute_batch("BEGIN; SELECT count(*) FROM readings;")
                    .unwrap();
                held.wait();
                std::thread::sleep(std::time::Duration::from_secs(3));
                conn.execute_batch("COMMIT").unwrap();
            });
            held.wait();
            let start = std::time::Instant::now();
            let mut slow = 0;
            while start.elapsed() < std::time::Duration::from_secs(2) {
                let t0 = std::time::Instant::now();
                ob.append(&[packet(commits as i64, &["1.0"; 9])]).unwrap();
                commits += 1;
                // A commit that waited would wait until the reader ends: over a second.
                if t0.elapsed() > std::time::Duration::from_millis(1000) {
                    slow += 1;
                }
            }
            slow
        });
        assert_eq!(slow_commits, 0, "a commit waited for the reader");

        // Without the thread, no commit checkpoints: the database file stays as it was.
        let other = tempfile::tempdir().unwrap();
        let mut without = Outbox::without_checkpointer(&storage(other.path())).unwrap();
        let db = other.path().join(DB_FILE);
        let before = std::fs::metadata(&db).unwrap().len();
        for i in 0..400 {
            without.append(&[packet(i, &["1.0"; 50])]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(std::fs::metadata(&db).unwrap().len(), before);
    }

    #[test]
    fn a_sinks_read_is_planned_once_whatever_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let reader = ob.reader().unwrap();
        for i in 0..20 {
            ob.append(&[packet(i, &["1.0"; 9])]).unwrap();
            let rows = reader.read_after(s(i * 3), 1 + i as usize).unwrap();
            assert_eq!(rows.len(), 1 + i as usize);
        }
        let reprepared = reader
            .conn()
            .prepare_cached(reader::READ_AFTER)
            .unwrap()
            .get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(reprepared, 0, "read_after was parsed again on new bounds");
    }

    #[test]
    fn a_reader_cannot_change_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.append(&[packet(1, &["1"])]).unwrap();
        let reader = ob.reader().unwrap();
        for sql in [
            "DELETE FROM readings",
            "INSERT INTO cursors (sink, seq) VALUES ('mqtt', 1)",
            "UPDATE readings SET value = '2'",
        ] {
            let err = reader.conn().execute_batch(sql).unwrap_err();
            assert!(err.to_string().contains("readonly"), "{sql}: {err}");
        }
        assert_eq!(reader.count_after(Seq::START).unwrap(), 1);
    }

    #[test]
    fn appended_readings_come_back_in_order_with_their_packet_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let last = ob
            .append(&[packet(10, &["1.0", "2.0"]), packet(20, &["3.0"])])
            .unwrap();
        assert_eq!(last, s(3));
        let r = ob.reader().unwrap();
        let all = r.read_after(Seq::START, 10).unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|x| (x.seq.get(), x.ts_ns, x.value.as_str()))
            .collect();
        assert_eq!(got, [(1, 10, "1.0"), (2, 10, "2.0"), (3, 20, "3.0")]);
        assert_eq!(r.read_after(s(2), 10).unwrap().len(), 1);
        assert_eq!(r.read_after(Seq::START, 2).unwrap().len(), 2);
        assert_eq!(all[0].unit.as_deref(), Some("celsius"));
    }

    #[test]
    fn cursors_survive_reopening_and_new_sinks_start_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ob = Outbox::open(&storage(dir.path())).unwrap();
            ob.track_sinks(&["mqtt"]).unwrap();
            let r = ob.reader().unwrap();
            assert_eq!(r.cursor("mqtt").unwrap(), Some(Seq::START));
            ob.append(&[packet(1, &["1", "2", "3"])]).unwrap();
            ob.set_cursor("mqtt", s(2)).unwrap();
        }
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.track_sinks(&["mqtt", "influx"]).unwrap();
        let r = ob.reader().unwrap();
        assert_eq!(r.cursor("mqtt").unwrap(), Some(s(2)));
        assert_eq!(r.count_after(s(2)).unwrap(), 1);
        assert_eq!(r.cursor("influx").unwrap(), Some(s(3)));
        assert_eq!(r.cursor("other").unwrap(), None);
    }

    #[test]
    fn queued_writes_are_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.track_sinks(&["mqtt"]).unwrap();
        ob.append(&[packet(1, &["1", "2"])]).unwrap();
        let (queue, mut writes) = WriteQueue::new();
        let event = EventRow {
            ts_ns: 5,
            node: "gateway".into(),
            kind: "gateway_started",
            text: "started".into(),
        };
        queue.send(Write::Event(event.clone())).unwrap();
        let cursor = Write::Cursor {
            sink: "mqtt",
            seq: s(3),
        };
        queue.send(cursor).unwrap();
        queue.send(Write::Prune { before_ns: 2 }).unwrap();
        let mut applied = Vec::new();
        while let Ok(write) = writes.try_recv() {
            applied.push(ob.apply(&write).unwrap());
        }
        assert_eq!(
            applied,
            [Applied::Committed(s(3)), Applied::Done, Applied::Pruned(2)]
        );
        let r = ob.reader().unwrap();
        let left = r.read_after(Seq::START, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].is_event());
        assert_eq!(left[0].value, event.text);
    }

    #[test]
    fn a_full_or_closed_queue_refuses_without_waiting() {
        let (queue, writes) = WriteQueue::new();
        let prune = || Write::Prune { before_ns: 0 };
        for _ in 0..WRITE_QUEUE_CAPACITY {
            queue.send(prune()).unwrap();
        }
        assert_eq!(queue.send(prune()), Err(NotQueued::Full));
        drop(writes);
        assert_eq!(queue.send(prune()), Err(NotQueued::Closed));
    }

    #[test]
    fn seqs_are_never_reused_after_pruning_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.track_sinks(&["a"]).unwrap();
        ob.append(&[packet(1, &["1", "2"])]).unwrap();
        ob.set_cursor("a", s(2)).unwrap();
        assert_eq!(ob.prune(100).unwrap(), 2);
        assert_eq!(ob.append(&[packet(2, &["3"])]).unwrap(), s(3));
        assert_eq!(ob.reader().unwrap().last_seq().unwrap(), s(3));
    }

    #[test]
    fn pruning_keeps_what_any_sink_has_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.track_sinks(&["mqtt", "influx"]).unwrap();
        ob.append(&[packet(1, &["1"]), packet(2, &["2"]), packet(3, &["3"])])
            .unwrap();
        ob.set_cursor("mqtt", s(3)).unwrap();
        ob.set_cursor("influx", s(1)).unwrap();
        let r = ob.reader().unwrap();
        assert_eq!(ob.prune(100).unwrap(), 1);
        assert_eq!(r.read_after(Seq::START, 10).unwrap()[0].seq, s(2));
        // Newer than the retention horizon: kept even when delivered.
        ob.set_cursor("influx", s(3)).unwrap();
        assert_eq!(ob.prune(3).unwrap(), 1);
        assert_eq!(r.read_after(Seq::START, 10).unwrap()[0].seq, s(3));
    }

    #[test]
    fn latest_gives_the_newest_value_per_series_and_no_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.append(&[packet(1, &["1"]), packet(2, &["2"])]).unwrap();
        let seq = ob
            .append_events(&[EventRow {
                ts_ns: 3,
                node: "gateway".into(),
                kind: "gateway_started",
                text: "gateway started".into(),
            }])
            .unwrap();
        let event = &ob.reader().unwrap().read_after(seq.plus(-1), 1).unwrap()[0];
        assert!(event.is_event());
        assert_eq!(
            (event.node.as_str(), event.metric.as_str()),
            ("gateway", "gateway_started")
        );
        let latest = ob.reader().unwrap().latest().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].value, "2");
    }

    fn fill(ob: &mut Outbox, packets: usize) {
        let value = "1".repeat(40);
        let values = [value.as_str(); 9];
        let batch: Vec<Packet> = (0..packets).map(|i| packet(i as i64, &values)).collect();
        ob.append(&batch).unwrap();
    }

    #[test]
    fn over_budget_delivered_history_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        ob.track_sinks(&["mqtt"]).unwrap();
        fill(&mut ob, 5000);
        let last = r.last_seq().unwrap();
        ob.set_cursor("mqtt", last).unwrap();
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, true).unwrap();
        assert!(report.history_pruned > 0);
        assert_eq!(report.undelivered_dropped, 0);
        assert!(
            ob.used_bytes().unwrap() <= used / 2,
            "under budget afterwards"
        );
        // Nothing to do when under budget.
        assert_eq!(
            ob.enforce_budget(used, true).unwrap(),
            BudgetReport::default()
        );
    }

    #[test]
    fn over_budget_drop_oldest_drops_and_counts_undelivered_readings() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        ob.track_sinks(&["influxdb"]).unwrap();
        fill(&mut ob, 5000);
        let total = r.count_after(Seq::START).unwrap() as u64;
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, true).unwrap();
        assert_eq!(report.history_pruned, 0);
        assert!(
            report.undelivered_dropped > total / 3,
            "{report:?} of {total}"
        );
        assert_eq!(
            r.count_after(Seq::START).unwrap() as u64,
            total - report.undelivered_dropped
        );
        // The newest readings are the ones kept, and the sink reads on from its cursor.
        assert_eq!(
            r.read_after(Seq::START, 1).unwrap()[0].seq.get() as u64,
            report.undelivered_dropped + 1
        );
        assert!(ob.used_bytes().unwrap() <= used / 2);
    }

    #[test]
    fn over_budget_block_keeps_undelivered_readings_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let r = ob.reader().unwrap();
        ob.track_sinks(&["influxdb"]).unwrap();
        fill(&mut ob, 2000);
        let total = r.count_after(Seq::START).unwrap();
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, false).unwrap();
        assert!(report.over);
        assert_eq!(report.undelivered_dropped, 0);
        assert_eq!(r.count_after(Seq::START).unwrap(), total);
    }

    #[test]
    fn the_budget_counts_rows_not_seqs_after_retention_left_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.track_sinks(&["influxdb"]).unwrap();
        let value = "1".repeat(40);
        let values = [value.as_str(); 9];
        // Rows 1..=4500 received late (ts 1000+), 4501..=36000 early (ts 0..), then more late
        // ones: retention by time takes the middle and leaves a hole of 31,500 seqs.
        let batch = |ts: i64, n: usize| -> Vec<Packet> {
            (0..n).map(|i| packet(ts + i as i64, &values)).collect()
        };
        ob.append(&batch(1_000_000, 500)).unwrap();
        ob.append(&batch(0, 3500)).unwrap();
        let end = ob.append(&batch(2_000_000, 1500)).unwrap();
        ob.set_cursor("influxdb", end).unwrap();
        assert_eq!(ob.prune(500_000).unwrap(), 31_500);
        ob.set_cursor("influxdb", s(4500)).unwrap();
        let r = ob.reader().unwrap();
        let rows = r.count_after(Seq::START).unwrap() as u64;
        assert_eq!(rows, 18_000);
        // Half the pages in use as the budget: 9,000 undelivered rows must go to reach 90%
        // of it... and no more than that.
        let used = ob.used_bytes().unwrap();
        let report = ob.enforce_budget(used / 2, true).unwrap();
        assert!(ob.used_bytes().unwrap() <= used / 2, "{report:?}");
        assert_eq!(report.history_pruned, 4500);
        let dropped = report.undelivered_dropped;
        let kept = r.count_after(Seq::START).unwrap() as u64;
        assert_eq!(kept + dropped + 4500, rows);
        assert!(
            kept as f64 >= rows as f64 * 0.40,
            "dropped {dropped} of {rows}: more than the budget needs"
        );
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, b"garbage".repeat(1000)).unwrap();
        let mut cfg = storage(dir.path());
        assert!(Outbox::open(&cfg).is_err());
        cfg.move_corrupt_aside = true;
        let ob = Outbox::open(&cfg).unwrap();
        assert_eq!(ob.reader().unwrap().last_seq().unwrap(), Seq::START);
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("outbox.db.corrupt-")
            })
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            std::fs::read(kept[0].path()).unwrap(),
            b"garbage".repeat(1000)
        );
    }

    #[test]
    fn an_unwritable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        // A file where the database should go makes the path unusable even for root.
        std::fs::create_dir(ro.join(DB_FILE)).unwrap();
        let err = Outbox::open(&storage(&ro)).unwrap_err();
        assert!(err.to_string().contains("[storage] dir"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(
            &path,
            b"this is not sqlite, but it is someone's data".repeat(200),
        )
        .unwrap();
        let err = Outbox::open(&storage(dir.path())).unwrap_err();
        assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("--move-corrupt-outbox"), "{err}");
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is not sqlite"));
    }

    #[test]
    fn a_database_with_damaged_pages_is_reported_and_left_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            // Rollback-journal mode, as a restored backup would be: opening it in WAL mode
            // would rewrite its header.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let value = "1".repeat(100);
            for i in 0..2000 {
                conn.execute(
                    "INSERT INTO readings (ts, node, metric, value) VALUES (?1, 'n', 'm', ?2)",
                    params![i, value],
                )
                .unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 * 4096..24 * 4096].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        let err = Outbox::open(&storage(dir.path())).unwrap_err();
        assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn the_feed_hands_a_sink_exactly_the_rows_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        ob.append(&[packet(1, &["0"])]).unwrap();
        let db = ob.reader().unwrap();
        // Opened after seq 1: that row is only in the database.
        let feed = ob.feed_reader(Seq::new(1));
        let fed = ob.reader().unwrap().with_feed(ob.feed_reader(Seq::new(1)));
        let mut edge = packet(2, &["1.5", "-2"]);
        edge.origin = Some(crate::reading::Origin {
            gateway: Some("edge-1".into()),
            site: None,
        });
        edge.readings[1].unit = None;
        ob.append(&[edge, packet(3, &["7"])]).unwrap();
        ob.append_events(&[EventRow {
            ts_ns: 4,
            node: "gateway".into(),
            kind: "gateway_started",
            text: "started".into(),
        }])
        .unwrap();
        let stored = db.read_after(s(1), 100).unwrap();
        assert_eq!(stored.len(), 4);
        assert!(stored[0].origin.is_some() && stored[3].is_event());
        assert_eq!(feed.read_after(s(1), 100), Some(stored.clone()));
        assert_eq!(feed.read_after(s(0), 100), None, "row 1 predates the feed");
        assert_eq!(fed.read_after(s(0), 100).unwrap().len(), 5);
        assert_eq!(fed.read_after(s(2), 2).unwrap(), stored[1..3]);

        // Undelivered rows dropped by the disk budget: the feed no longer answers for them.
        ob.track_sinks(&["s"]).unwrap();
        let rows = fed.read_after(s(0), 100).unwrap();
        for i in 0..300 {
            ob.append(&[packet(10 + i, &["12345678901234567890"; 20])])
                .unwrap();
        }
        let report = ob.enforce_budget(64 * 1024, true).unwrap();
        assert!(report.undelivered_dropped > 0, "{report:?}");
        let last = rows.last().unwrap().seq;
        assert_eq!(feed.read_after(last, 10), None);
        assert_eq!(
            fed.read_after(last, 10).unwrap(),
            db.read_after(last, 10).unwrap()
        );
    }

    #[test]
    fn the_checkpoint_thread_sleeps_until_the_wal_grew() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let runs = |ob: &Outbox| ob.checkpointer.as_ref().unwrap().runs();
        let pause = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
        // A few small commits (one packet per second at a quiet site): nothing to do yet.
        for i in 0..20 {
            ob.append(&[packet(i, &["21.5"; 9])]).unwrap();
        }
        pause(600);
        assert_eq!(runs(&ob), 0, "checkpointed a WAL of a few pages");
        // Commits until the WAL reaches the threshold: one checkpoint, soon.
        let mut commits = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while runs(&ob) == 0 && std::time::Instant::now() < deadline {
            ob.append(&[packet(100 + commits, &["12345678901234567890"; 100])])
                .unwrap();
            commits += 1;
            pause(2);
        }
        assert_eq!(runs(&ob), 1, "no checkpoint after {commits} commits");
        assert!(commits > 10, "checkpointed after {commits} commits");
        // A stream of big commits: at most one checkpoint per 250 ms.
        let start = std::time::Instant::now();
        for i in 0..100 {
            ob.append(&[packet(10_000 + i, &["12345678901234567890"; 100])])
                .unwrap();
            pause(5);
        }
        let streamed = start.elapsed().as_millis() as u64;
        let during = runs(&ob) - 1;
        assert!(during >= 1, "{during} checkpoints for 100 big commits");
        assert!(
            during <= streamed / 250 + 2,
            "{during} checkpoints in {streamed} ms"
        );
        // Nothing committed: the thread sleeps.
        pause(400);
        let settled = runs(&ob);
        pause(800);
        assert_eq!(runs(&ob), settled, "checkpointed with nothing committed");
    }

    #[test]
    fn a_commit_bigger_than_the_feed_leaves_its_newest_rows_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&storage(dir.path())).unwrap();
        let feed = ob.feed_reader(Seq::START);
        let last = ob.append(&[packet(1, &["1"; 3000])]).unwrap();
        assert_eq!(last, s(3000));
        assert_eq!(
            feed.read_after(s(0), 10),
            None,
            "the oldest rows are only in the database"
        );
        let tail = feed.read_after(s(2990), 100).unwrap();
        assert_eq!(tail.len(), 10);
        assert_eq!(tail, ob.reader().unwrap().read_after(s(2990), 100).unwrap());
    }
}
