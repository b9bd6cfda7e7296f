//! Commands to the nodes (`docs/API.md`, "Commands"): what a user sends and the states a
//! command moves through ([`command`]), and the durable queue ([`Downlink`]): a command is
//! committed to the outbox (through its one writer) before its sender hears it was taken,
//! survives restarts, and ends `expired` when not confirmed within `[downlink] expire_after`.
//!
//! Which nodes a command can reach depends on the source: the `rylr998` source's nodes (the
//! gateway's own modem); through Node 2 (`serial`, `probe-rs`) its nodes; `stdin`, `file`,
//! the simulator and the MQTT source cannot send commands, so a command for them is refused.
//! Sending on the air follows (issue 25): until then a queued command ends `expired`.

pub mod client;
pub mod command;

use std::collections::BTreeSet;
use std::time::Duration;

use rand::TryRngCore as _;

use crate::config::{DownlinkConfig, SourceConfig};
use crate::outbox::{CommandChange, CommandRow, Reply, Write, WriteQueue};
use crate::reading::now_ns;
use command::{Request, State};

/// How often the queue looks for commands whose time is up.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// Which nodes the source can send commands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The nodes of `[source.nodes]` (the `rylr998` source).
    Nodes(BTreeSet<String>),
    /// Any node of the link behind Node 2 (`serial`, `probe-rs`).
    Node2,
    /// None: why (the source's kind).
    None(String),
}

impl Reach {
    /// What `source` can reach.
    pub fn of(source: &SourceConfig) -> Reach {
        match source {
            SourceConfig::Rylr998(r) => {
                Reach::Nodes(r.nodes.values().map(|n| n.name.clone()).collect())
            }
            SourceConfig::Serial(_) => Reach::Node2,
            SourceConfig::Process(p) if p.kind == crate::config::ProcessKind::ProbeRs => {
                Reach::Node2
            }
            other => Reach::None(other.kind().to_string()),
        }
    }

    /// Why `node` cannot be reached, if it cannot.
    fn refuses(&self, node: &str) -> Option<String> {
        match self {
            Reach::Nodes(nodes) if !nodes.contains(node) => Some(format!(
                "unknown node {node:?}: not in [source.nodes] ({})",
                nodes.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Reach::Nodes(_) | Reach::Node2 => None,
            Reach::None(kind) => Some(format!(
                "the {kind} source cannot send commands: only rylr998 (the gateway's modem) and serial or probe-rs (through Node 2) can"
            )),
        }
    }
}

/// Why a request was not taken at all (nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Not a command request: why.
    #[error("{0}")]
    BadRequest(String),
    /// The outbox could not store it now: why (try again).
    #[error("the command could not be stored: {0}; try again")]
    Unavailable(String),
}

/// A submitted command as stored, and whether this request made it (`false`: its id was
/// taken already, and this is the command stored then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The command.
    pub row: CommandRow,
    /// This request stored it.
    pub new: bool,
}

/// The durable command queue: commits through the outbox's writer.
#[derive(Debug, Clone)]
pub struct Downlink {
    writes: WriteQueue,
    cfg: DownlinkConfig,
    reach: Reach,
}

impl Downlink {
    /// A queue writing through `writes`.
    pub fn new(writes: WriteQueue, cfg: DownlinkConfig, reach: Reach) -> Downlink {
        Downlink { writes, cfg, reach }
    }

    /// Takes a request for `node`: stored as `queued`, or as `rejected` with the reason
    /// (unknown command, bad value, a node the source cannot reach). Returns once committed.
    pub async fn submit(&self, node: &str, body: &[u8]) -> Result<Submitted, SubmitError> {
        crate::config::validate_node_name(node)
            .map_err(|e| SubmitError::BadRequest(format!("node {node:?}: {e}")))?;
        let Request { id, name, command } =
            command::parse(body).map_err(SubmitError::BadRequest)?;
        let id = match id {
            Some(id) => id,
            None => fresh_id().map_err(SubmitError::Unavailable)?,
        };
        let now = now_ns();
        let expires =
            now.saturating_add(i64::try_from(self.cfg.expire_after.as_nanos()).unwrap_or(i64::MAX));
        let (state, value, detail) = match command {
            Ok(c) => match self.reach.refuses(node) {
                Some(why) => (State::Rejected, c.value(), why),
                None => (State::Queued, c.value(), String::new()),
            },
            Err(why) => (State::Rejected, None, why),
        };
        let row = CommandRow {
            node: node.to_string(),
            id,
            command: name,
            value,
            state: state.as_str().to_string(),
            detail,
            created_ns: now,
            updated_ns: now,
            expires_ns: expires,
        };
        let stored = self.write(CommandChange::Add(row.clone())).await?;
        let stored = stored
            .into_iter()
            .next()
            .ok_or_else(|| SubmitError::Unavailable("not found after storing".into()))?;
        let new = stored.created_ns == row.created_ns && stored.command == row.command;
        Ok(Submitted { row: stored, new })
    }

    /// Ends every command whose time is up; returns them.
    pub async fn expire(&self) -> Result<Vec<CommandRow>, SubmitError> {
        self.write(CommandChange::Expire { now_ns: now_ns() }).await
    }

    async fn write(&self, change: CommandChange) -> Result<Vec<CommandRow>, SubmitError> {
        let (reply, outcome) = Reply::channel();
        self.writes
            .send(Write::Command { change, reply })
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        outcome
            .await
            .map_err(|_| SubmitError::Unavailable("the outbox writer stopped".into()))?
            .map_err(SubmitError::Unavailable)
    }
}

/// A new command id: `c-` and 12 random hex digits.
fn fresh_id() -> Result<String, String> {
    let mut bytes = [0u8; 6];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("no random id: {e}"))?;
    Ok(format!(
        "c-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The JSON of a stored command (its state message).
pub fn row_json(row: &CommandRow) -> serde_json::Value {
    let state = State::parse(&row.state).unwrap_or(State::Rejected);
    command::state_json(
        &row.id,
        &row.command,
        row.value.as_deref(),
        state,
        row.updated_ns,
        &row.detail,
    )
}

/// Expires commands every [`EXPIRE_EVERY`] until `stop`.
pub async fn expire_job(downlink: Downlink, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        match downlink.expire().await {
            Ok(expired) => {
                for row in expired {
                    tracing::info!(
                        node = row.node,
                        id = row.id,
                        command = row.command,
                        "command expired: not confirmed within [downlink] expire_after"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cannot expire commands now; trying again"),
        }
    }
}
