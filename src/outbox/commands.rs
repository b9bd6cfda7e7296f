//! Commands for the nodes, kept in the outbox so that one acknowledged to its sender survives
//! a crash: the table `commands` and its queries. What a command means and which states it
//! moves through are `crate::downlink`'s; here they are rows.

use rusqlite::{params, Connection, OptionalExtension as _, Result};

/// The table (created with the outbox's schema).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (
    node       TEXT NOT NULL,
    id         TEXT NOT NULL,
    command    TEXT NOT NULL,
    value      TEXT,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    PRIMARY KEY (node, id)
);
CREATE TABLE IF NOT EXISTS node_info (
    node     TEXT PRIMARY KEY,
    version  TEXT NOT NULL,
    boots    INTEGER NOT NULL,
    uptime_s INTEGER NOT NULL,
    reset    INTEGER NOT NULL,
    at_ns    INTEGER NOT NULL
);
";

/// What a node last said of itself (its `ping` answer, or the info after a boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfoRow {
    /// The node.
    pub node: String,
    /// Its firmware version, `major.minor.patch`.
    pub version: String,
    /// Its boots since its flash was written.
    pub boots: u32,
    /// Seconds since its boot.
    pub uptime_s: u32,
    /// Why it last reset (`lora_link::downlink::NodeInfo::reset`).
    pub reset: u8,
    /// When it said so.
    pub at_ns: i64,
}

/// One command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// The node it is for.
    pub node: String,
    /// The caller's id (or the one made for it): unique per node.
    pub id: String,
    /// `interval`, `ping`, ... (as sent, for a refused one).
    pub command: String,
    /// Its value as written back (`"30s"`), if it has one.
    pub value: Option<String>,
    /// `queued`, `sent`, `confirmed`, `expired` or `rejected`.
    pub state: String,
    /// Why it is in that state, when there is something to say.
    pub detail: String,
    /// When it arrived, ns since the epoch.
    pub created_ns: i64,
    /// When its state last changed.
    pub updated_ns: i64,
    /// When it expires unless confirmed.
    pub expires_ns: i64,
    /// Its number on the air (`lora_link::downlink::NodeCommand::number`): the row's id in
    /// the table, cut to 16 bits (a node remembers the last few it applied).
    pub number: u16,
}

/// A change to the commands, for the outbox's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandChange {
    /// A new command (state and all): stored unless the node already has one with its id,
    /// which is kept as it is (the same id twice is one command).
    Add(CommandRow),
    /// `node`'s command `id` moves to `state`, unless it is in a final one already.
    State {
        /// The node.
        node: String,
        /// The command.
        id: String,
        /// Its new state.
        state: String,
        /// Why.
        detail: String,
        /// When.
        at_ns: i64,
    },
    /// `node`'s command with `number` (not in a final state) moves to `state`: what the
    /// node or Node 2 said of it by its number.
    Numbered {
        /// The node.
        node: String,
        /// The command's number.
        number: u16,
        /// Its new state.
        state: String,
        /// Why.
        detail: String,
        /// When.
        at_ns: i64,
    },
    /// A node's info, replacing what it said before.
    Info(NodeInfoRow),
    /// Every command not in a final state whose time is up moves to `expired`.
    Expire {
        /// Now, ns since the epoch.
        now_ns: i64,
    },
}

/// The states no other follows.
const FINAL: &str = "('confirmed', 'expired', 'rejected')";

const COLUMNS: &str =
    "node, id, command, value, state, detail, created_ns, updated_ns, expires_ns, rowid";

/// Applies `change` in its own transaction; returns the rows it left (the stored command for
/// `Add` and `State`, every expired one for `Expire`).
pub(super) fn apply(conn: &mut Connection, change: &CommandChange) -> Result<Vec<CommandRow>> {
    let tx = conn.transaction()?;
    let rows = match change {
        CommandChange::Add(r) => {
            tx.execute(
                "INSERT INTO commands \
                 (node, id, command, value, state, detail, created_ns, updated_ns, expires_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (node, id) DO NOTHING",
                params![
                    r.node,
                    r.id,
                    r.command,
                    r.value,
                    r.state,
                    r.detail,
                    r.created_ns,
                    r.updated_ns,
                    r.expires_ns
                ],
            )?;
            one(&tx, &r.node, &r.id)?.into_iter().collect()
        }
        CommandChange::State {
            node,
            id,
            state,
            detail,
            at_ns,
        } => {
            tx.execute(
                &format!(
                    "UPDATE commands SET state = ?3, detail = ?4, updated_ns = ?5 \
                     WHERE node = ?1 AND id = ?2 AND state NOT IN {FINAL}"
                ),
                params![node, id, state, detail, at_ns],
            )?;
            one(&tx, node, id)?.into_iter().collect()
        }
        CommandChange::Numbered {
            node,
            number,
            state,
            detail,
            at_ns,
        } => {
            let matching =
                format!("WHERE node = ?1 AND (rowid & 65535) = ?2 AND state NOT IN {FINAL}");
            let rows = select(&tx, &matching, params![node, number])?;
            tx.execute(
                &format!("UPDATE commands SET state = ?3, detail = ?4, updated_ns = ?5 {matching}"),
                params![node, number, state, detail, at_ns],
            )?;
            rows.into_iter()
                .map(|r| CommandRow {
                    state: state.clone(),
                    detail: detail.clone(),
                    updated_ns: *at_ns,
                    ..r
                })
                .collect()
        }
        CommandChange::Info(i) => {
            tx.execute(
                "INSERT INTO node_info (node, version, boots, uptime_s, reset, at_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (node) DO UPDATE SET \
                 version = excluded.version, boots = excluded.boots, \
                 uptime_s = excluded.uptime_s, reset = excluded.reset, at_ns = excluded.at_ns",
                params![i.node, i.version, i.boots, i.uptime_s, i.reset, i.at_ns],
            )?;
            Vec::new()
        }
        CommandChange::Expire { now_ns } => {
            let expired = select(
                &tx,
                &format!("WHERE state NOT IN {FINAL} AND expires_ns <= ?1"),
                params![now_ns],
            )?;
            tx.execute(
                &format!(
                    "UPDATE commands SET state = 'expired', updated_ns = ?1, \
                     detail = 'not confirmed in time ([downlink] expire_after)' \
                     WHERE state NOT IN {FINAL} AND expires_ns <= ?1"
                ),
                params![now_ns],
            )?;
            expired
                .into_iter()
                .map(|r| CommandRow {
                    state: "expired".into(),
                    updated_ns: *now_ns,
                    detail: "not confirmed in time ([downlink] expire_after)".into(),
                    ..r
                })
                .collect()
        }
    };
    tx.commit()?;
    Ok(rows)
}

fn one(conn: &Connection, node: &str, id: &str) -> Result<Option<CommandRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM commands WHERE node = ?1 AND id = ?2"),
        params![node, id],
        row,
    )
    .optional()
}

fn select(conn: &Connection, filter: &str, args: impl rusqlite::Params) -> Result<Vec<CommandRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM commands {filter} ORDER BY created_ns, id"
    ))?;
    let rows = stmt.query_map(args, row)?;
    rows.collect()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        node: r.get(0)?,
        id: r.get(1)?,
        command: r.get(2)?,
        value: r.get(3)?,
        state: r.get(4)?,
        detail: r.get(5)?,
        created_ns: r.get(6)?,
        updated_ns: r.get(7)?,
        expires_ns: r.get(8)?,
        number: (r.get::<_, i64>(9)? & 0xFFFF) as u16,
    })
}

/// `node`'s commands, oldest first (the newest `limit`).
pub(super) fn of_node(conn: &Connection, node: &str, limit: usize) -> Result<Vec<CommandRow>> {
    let mut rows = select(conn, "WHERE node = ?1", params![node])?;
    let skip = rows.len().saturating_sub(limit);
    Ok(rows.split_off(skip))
}

/// `node`'s oldest command not in a final state: the one to send next.
pub(super) fn next_for(conn: &Connection, node: &str) -> Result<Option<CommandRow>> {
    let mut rows = select(
        conn,
        &format!("WHERE node = ?1 AND state NOT IN {FINAL}"),
        params![node],
    )?;
    Ok((!rows.is_empty()).then(|| rows.swap_remove(0)))
}

/// What `node` last said of itself.
pub(super) fn info(conn: &Connection, node: &str) -> Result<Option<NodeInfoRow>> {
    conn.query_row(
        "SELECT node, version, boots, uptime_s, reset, at_ns FROM node_info WHERE node = ?1",
        params![node],
        info_row,
    )
    .optional()
}

/// What every node last said of itself.
pub(super) fn infos(conn: &Connection) -> Result<Vec<NodeInfoRow>> {
    let mut stmt = conn.prepare(
        "SELECT node, version, boots, uptime_s, reset, at_ns FROM node_info ORDER BY node",
    )?;
    let rows = stmt.query_map([], info_row)?;
    rows.collect()
}

fn info_row(r: &rusqlite::Row<'_>) -> Result<NodeInfoRow> {
    Ok(NodeInfoRow {
        node: r.get(0)?,
        version: r.get(1)?,
        boots: r.get(2)?,
        uptime_s: r.get(3)?,
        reset: r.get(4)?,
        at_ns: r.get(5)?,
    })
}

/// Every command not in a final state, oldest first.
pub(super) fn pending(conn: &Connection) -> Result<Vec<CommandRow>> {
    select(conn, &format!("WHERE state NOT IN {FINAL}"), [])
}

/// How many commands are in each state.
pub(super) fn counts(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT state, count(*) FROM commands GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
