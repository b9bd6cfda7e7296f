//! [`Outbox`]: the one connection that changes the outbox. It appends packets and gateway
//! events, moves cursors, prunes and keeps the disk budget; the ingest thread owns it, and
//! everyone else asks through a [`super::WriteQueue`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::checkpoint::{self, Checkpointer};
use super::cursors::LAST_SEQ;
use super::feed::{self, Feed, FeedReader};
use super::rows::{EventRow, Seq, StoredReading, EVENT_UNIT};
use super::schema::{self, BUSY_TIMEOUT, SCHEMA};
use super::{lock, OutboxError, OutboxReader, Result, DB_FILE};
use crate::config::{StorageConfig, SyncMode};
use crate::reading::{LinkCounter, Origin, Packet};

/// The writer side of the outbox.
pub struct Outbox {
    /// Declared first: stops before the writer's connection closes.
    pub(super) checkpointer: Option<Checkpointer>,
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    sync: SyncMode,
    /// The configured sinks ([`Outbox::track_sinks`]): their cursors tell delivered rows from
    /// undelivered ones for retention and the disk budget.
    pub(super) sinks: Vec<&'static str>,
    /// Rows just committed, for the sinks ([`Outbox::feed_reader`]).
    pub(super) feed: Feed,
    /// The storage dir is ours while the writer lives.
    _lock: Option<lock::DirLock>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `cfg.dir`, which becomes this process's: a
    /// second writer, in this process or another, gets [`OutboxError::Locked`].
    pub fn open(cfg: &StorageConfig) -> Result<Outbox> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| OutboxError::Dir {
            dir: cfg.dir.clone(),
            cause: source,
        })?;
        let lock = lock::DirLock::acquire(&cfg.dir).map_err(|e| match e {
            lock::LockError::Held(pid) => OutboxError::Locked {
                dir: cfg.dir.clone(),
                pid,
            },
            lock::LockError::Io(cause) => OutboxError::Dir {
                dir: cfg.dir.clone(),
                cause,
            },
        })?;
        let path = cfg.dir.join(DB_FILE);
        let opened = match Self::open_file(&path, cfg.sync) {
            Err(OutboxError::Corrupt { .. }) if cfg.move_corrupt_aside => {
                let aside = schema::move_aside(&path).map_err(|cause| OutboxError::Dir {
                    dir: cfg.dir.clone(),
                    cause,
                })?;
                tracing::warn!(moved_to = %aside.display(), "corrupt outbox moved aside; starting an empty one");
                Self::open_file(&path, cfg.sync)
            }
            other => other,
        };
        let mut outbox = opened?;
        outbox._lock = Some(lock);
        Ok(outbox)
    }

    /// Who holds `dir` (a running gateway's PID), if anyone: for `check`.
    pub fn holder(dir: &Path) -> Option<u32> {
        lock::holder(dir)
    }

    fn open_file(path: &Path, sync: SyncMode) -> Result<Outbox> {
        if path.is_file() {
            schema::check_intact(path)?;
        }
        let conn = schema::connect(path, sync)?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(super::commands::SCHEMA))
            .and_then(|()| schema::migrate(&conn))
            .map_err(|source| schema::classify(path, source))?;
        let checkpointer = match Checkpointer::start(schema::connect(path, sync)?) {
            Ok(checkpointer) => {
                checkpoint::watch(&conn);
                Some(checkpointer)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the outbox checkpoint thread; commits checkpoint themselves");
                conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;")
                    .map_err(|source| schema::classify(path, source))?;
                None
            }
        };
        let last: Seq = conn
            .query_row(LAST_SEQ, [], |r| r.get(0))
            .map_err(|source| schema::classify(path, source))?;
        Ok(Outbox {
            checkpointer,
            conn,
            path: path.to_path_buf(),
            sync,
            sinks: Vec::new(),
            feed: Feed::after(last),
            _lock: None,
        })
    }

    /// A writer without the checkpoint thread and the lock (tests of what the thread does).
    #[cfg(test)]
    pub(super) fn without_checkpointer(cfg: &StorageConfig) -> Result<Outbox> {
        let path = cfg.dir.join(DB_FILE);
        let conn = schema::connect(&path, cfg.sync)?;
        conn.execute_batch(SCHEMA).unwrap();
        let last = conn.query_row(LAST_SEQ, [], |r| r.get(0)).unwrap();
        Ok(Outbox {
            checkpointer: None,
            conn,
            path,
            sync: cfg.sync,
            sinks: Vec::new(),
            feed: Feed::after(last),
            _lock: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, cause: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite {
            path: self.path.clone(),
            cause,
        }
    }

    /// Applies a change to the commands for the nodes in its own transaction; returns the
    /// rows it left (`super::commands`).
    pub fn apply_command(
        &mut self,
        change: &super::commands::CommandChange,
    ) -> Result<Vec<super::commands::CommandRow>> {
        let applied = super::commands::apply(&mut self.conn, change);
        let rows = applied.map_err(|e| self.err(e))?;
        self.after_commit();
        Ok(rows)
    }

    /// A new read connection to the same database.
    pub fn reader(&self) -> Result<OutboxReader> {
        OutboxReader::open(&self.path, self.sync)
    }

    /// A reader of the rows this writer commits from now on, in memory, for a sink whose
    /// cursor is `cursor`: [`super::OutboxReader::with_feed`].
    pub fn feed_reader(&self, cursor: Seq) -> FeedReader {
        self.feed.reader(cursor)
    }

    /// Commits every reading of `packets` in one transaction, with the secure radio frames'
    /// counters (the highest per node, so that a replay is refused after a restart too);
    /// returns the last seq.
    pub fn append(&mut self, packets: &[Packet]) -> Result<Seq> {
        let links: Vec<LinkCounter> = packets.iter().filter_map(|p| p.link).collect();
        self.insert_rows(
            &links,
            packets.iter().flat_map(|p| {
                let origin = p.origin.as_ref();
                p.readings.iter().map(move |r| Row {
                    ts: p.received_ns,
                    node: r.node.as_str(),
                    metric: r.metric.as_str(),
                    unit: r.unit,
                    value: r.value.as_str(),
                    gateway: origin.and_then(|o| o.gateway.as_deref()),
                    site: origin.and_then(|o| o.site.as_deref()),
                })
            }),
        )
    }

    /// Commits gateway events in one transaction (rows marked with [`EVENT_UNIT`]); returns
    /// the last seq.
    pub fn append_events(&mut self, events: &[EventRow]) -> Result<Seq> {
        self.insert_rows(
            &[],
            events.iter().map(|e| Row {
                ts: e.ts_ns,
                node: e.node.as_str(),
                metric: e.kind,
                unit: Some(EVENT_UNIT),
                value: e.text.as_str(),
                gateway: None,
                site: None,
            }),
        )
    }

    /// Inserts rows in one transaction; the seqs they get are consecutive. Returns the last
    /// seq. The committed rows go to the feed, when a sink reads it.
    fn insert_rows<'a>(
        &mut self,
        links: &[LinkCounter],
        rows: impl Iterator<Item = Row<'a>>,
    ) -> Result<Seq> {
        let mut fed = VecDeque::new();
        let feeding = self.feed.has_readers();
        let path = &self.path;
        let err = |source| OutboxError::Sqlite {
            path: path.clone(),
            cause: source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO readings (ts, node, metric, unit, value, gateway, site) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for r in rows {
                insert
                    .execute(params![
                        r.ts, r.node, r.metric, r.unit, r.value, r.gateway, r.site
                    ])
                    .map_err(err)?;
                if feeding {
                    if fed.len() == feed::CAPACITY {
                        fed.pop_front();
                    }
                    fed.push_back(r.stored(Seq::new(tx.last_insert_rowid())));
                }
            }
        }
        let last = tx.last_insert_rowid();
        if !links.is_empty() {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO link_counters (node, counter, key_check) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (node) DO UPDATE SET \
                     counter = CASE WHEN key_check = excluded.key_check \
                         THEN max(counter, excluded.counter) ELSE excluded.counter END, \
                     key_check = excluded.key_check",
                )
                .map_err(err)?;
            for l in links {
                upsert
                    .execute(params![l.node, l.counter, &l.key_check[..]])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.feed.publish(fed);
        self.after_commit();
        Ok(Seq::new(last))
    }

    /// After every commit: a WAL of [`checkpoint::CHECKPOINT_AT`] pages goes to the checkpoint
    /// thread, and one the passive checkpoints cannot keep short is truncated here
    /// ([`checkpoint`]).
    pub(super) fn after_commit(&mut self) {
        let Some(checkpointer) = &self.checkpointer else {
            return;
        };
        let pages = checkpoint::wal_pages();
        if pages > checkpoint::MAX_WAL_FRAMES {
            match checkpoint::truncate(&self.conn, BUSY_TIMEOUT) {
                Ok(true) => {}
                Ok(false) => tracing::debug!("outbox WAL in use by a reader; truncating later"),
                Err(error) => {
                    tracing::debug!(%error, "outbox WAL truncation failed; retrying later");
                }
            }
        } else if pages >= checkpoint::CHECKPOINT_AT {
            checkpointer.wal_grew();
        }
    }

    /// Deletes readings received before `before_ns` that every tracked sink delivered;
    /// returns how many.
    pub fn prune(&mut self, before_ns: i64) -> Result<usize> {
        let delivered = self.delivered()?;
        let pruned = self
            .conn
            .execute(
                "DELETE FROM readings WHERE seq <= ?1 AND ts < ?2",
                params![delivered, before_ns],
            )
            .map_err(|e| self.err(e))?;
        if pruned > 0 {
            self.after_commit();
        }
        Ok(pruned)
    }
}

impl Row<'_> {
    /// The row as a sink reads it back, at `seq`.
    fn stored(&self, seq: Seq) -> StoredReading {
        StoredReading {
            seq,
            ts_ns: self.ts,
            node: self.node.into(),
            metric: self.metric.into(),
            unit: self.unit.map(Into::into),
            value: self.value.into(),
            origin: (self.gateway.is_some() || self.site.is_some()).then(|| {
                Box::new(Origin {
                    gateway: self.gateway.map(Into::into),
                    site: self.site.map(Into::into),
                })
            }),
        }
    }
}

/// One row to insert.
struct Row<'a> {
    ts: i64,
    node: &'a str,
    metric: &'a str,
    unit: Option<&'a str>,
    value: &'a str,
    gateway: Option<&'a str>,
    site: Option<&'a str>,
}
