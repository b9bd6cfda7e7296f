//! Commands to the nodes (`docs/API.md`, "Commands"): what a user sends and the states a
//! command moves through ([`command`]), and the durable queue ([`Downlink`]): a command is
//! committed to the outbox (through its one writer) before its sender hears it was taken,
//! survives restarts, and ends `expired` when not confirmed within `[downlink] expire_after`.
//!
//! Which nodes a command can reach depends on the source: the `rylr998` source's nodes (the
//! gateway's own modem); through Node 2 (`serial`: the gateway writes to Node 2's VCP) its
//! nodes; `probe-rs` (which only reads Node 2's log), `stdin`, `file`, the simulator and the
//! MQTT source cannot send commands, so a command for them is refused.

pub mod client;
pub mod command;
pub mod mqtt;

use std::collections::BTreeSet;
use std::time::Duration;

use rand::TryRngCore as _;

use crate::config::{DownlinkConfig, SourceConfig};
use crate::outbox::{CommandChange, CommandRow, NodeInfoRow, Reply, Write, WriteQueue};
use crate::reading::now_ns;
use command::{Request, State};

/// How often the queue looks for commands whose time is up.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// Which nodes the source can send commands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The nodes of `[source.nodes]` (the `rylr998` source).
    Nodes(BTreeSet<String>),
    /// Any node of the link behind Node 2 (`serial`).
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
            // probe-rs reads Node 2's log over the debug probe: nothing goes back to Node 2.
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
            Reach::Node2 if node2_address(node).is_none() => Some(format!(
                "{node:?} is no radio node behind Node 2 (those are node<address>, and not node2)"
            )),
            Reach::Nodes(_) | Reach::Node2 => None,
            Reach::None(kind) => Some(format!(
                "the {kind} source cannot send commands: only rylr998 (the gateway's modem) and serial (through Node 2) can"
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

/// The durable command queue: commits through the outbox's writer, reads through `reader`.
#[derive(Clone)]
pub struct Downlink {
    writes: WriteQueue,
    reader: std::sync::Arc<crate::outbox::OutboxReader>,
    cfg: DownlinkConfig,
    reach: Reach,
    /// Every change of a command's state, as stored (for the MQTT state messages).
    changes: tokio::sync::broadcast::Sender<CommandRow>,
    /// Every node info heard (for the MQTT info messages).
    infos: tokio::sync::broadcast::Sender<NodeInfoRow>,
    /// Where the "firmware changed" annotations go.
    events: crate::events::EventLog,
    /// Per node: its open commands and its firmware version, for the dashboard.
    summary: std::sync::Arc<std::sync::Mutex<Summary>>,
    /// Where the nodes' starts are counted (`iiot_node_resets_total`).
    stats: std::sync::Arc<crate::self_stats::Stats>,
}

/// What the dashboard's node list shows of the commands and the nodes' info.
#[derive(Debug, Default)]
struct Summary {
    /// Commands not in a final state: (node, id).
    open: BTreeSet<(String, String)>,
    /// Each node's firmware version.
    firmware: std::collections::BTreeMap<String, String>,
}

/// A node's open commands and firmware version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// Commands not confirmed, expired or rejected yet.
    pub pending: usize,
    /// Its firmware version, when it said.
    pub firmware: Option<String>,
}

/// Changes the MQTT task may fall behind by before it misses some (each is also listed by
/// `GET /api/nodes/<node>/commands`).
const CHANGES: usize = 1024;

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink")
            .field("reach", &self.reach)
            .finish()
    }
}

impl Downlink {
    /// A queue writing through `writes` and reading through `reader`.
    pub fn new(
        writes: WriteQueue,
        reader: std::sync::Arc<crate::outbox::OutboxReader>,
        cfg: DownlinkConfig,
        reach: Reach,
        events: crate::events::EventLog,
        stats: std::sync::Arc<crate::self_stats::Stats>,
    ) -> Downlink {
        Downlink {
            writes,
            reader,
            cfg,
            reach,
            changes: tokio::sync::broadcast::channel(CHANGES).0,
            infos: tokio::sync::broadcast::channel(CHANGES).0,
            events,
            summary: Default::default(),
            stats,
        }
        .with_summary()
    }

    /// The summary as stored now.
    fn with_summary(self) -> Downlink {
        if let Ok(mut summary) = self.summary.lock() {
            for row in self.reader.pending_commands().unwrap_or_default() {
                summary.open.insert((row.node, row.id));
            }
            for info in self.reader.node_infos().unwrap_or_default() {
                summary.firmware.insert(info.node, info.version);
            }
        }
        self
    }

    /// `node`'s open commands and firmware version.
    pub fn summary(&self, node: &str) -> NodeSummary {
        let Ok(summary) = self.summary.lock() else {
            return NodeSummary::default();
        };
        NodeSummary {
            pending: summary.open.iter().filter(|(n, _)| n == node).count(),
            firmware: summary.firmware.get(node).cloned(),
        }
    }

    /// Every node info heard from now on.
    pub fn infos(&self) -> tokio::sync::broadcast::Receiver<NodeInfoRow> {
        self.infos.subscribe()
    }

    /// `node` said what it is (after a boot, or answering `ping`): stored, published, a
    /// "firmware changed" event when its version is not the one it had, and its start counted
    /// by reason when it is a new one ([`is_new_start`]).
    pub async fn info(&self, node: &str, info: &lora_link::downlink::NodeInfo) {
        let [major, minor, patch] = info.version;
        let row = NodeInfoRow {
            node: node.to_string(),
            version: format!("{major}.{minor}.{patch}"),
            boots: info.boots,
            uptime_s: info.uptime_s,
            reset: info.reset,
            at_ns: now_ns(),
        };
        let before = self.reader.node_info(node).ok().flatten();
        if is_new_start(before.as_ref(), &row) {
            self.stats.radio.reset(node, reset_reason(row.reset));
        }
        if let Some(before) = before.filter(|b| b.version != row.version) {
            let text = format!(
                "{node} firmware changed: {} -> {}",
                before.version, row.version
            );
            tracing::info!(
                node,
                from = before.version,
                to = row.version,
                "node firmware changed"
            );
            self.events
                .emit(crate::events::EventKind::FirmwareChanged, node, &text);
        }
        if let Err(error) = self.write(CommandChange::Info(row.clone())).await {
            tracing::warn!(%error, node, "cannot store the node's info");
        }
        if let Ok(mut summary) = self.summary.lock() {
            summary
                .firmware
                .insert(row.node.clone(), row.version.clone());
        }
        let _ = self.infos.send(row);
    }

    /// Whether the source can send commands to any node.
    pub fn reaches_any(&self) -> bool {
        !matches!(self.reach, Reach::None(_))
    }

    /// Every state change from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<CommandRow> {
        self.changes.subscribe()
    }

    /// Every command not in a final state (their states, for a new MQTT connection).
    pub fn pending(&self) -> Vec<CommandRow> {
        self.reader.pending_commands().unwrap_or_default()
    }

    /// `node`'s next command to put on the air (its oldest not in a final state), as sent.
    pub fn next_for(&self, node: &str) -> Option<(CommandRow, lora_link::downlink::NodeCommand)> {
        let row = match self.reader.next_command(node) {
            Ok(row) => row?,
            Err(error) => {
                tracing::warn!(%error, node, "cannot read the node's next command");
                return None;
            }
        };
        let wire = on_air(&row)?;
        Some((row, wire))
    }

    /// `row` went on the air: `sent` (when it was `queued`).
    pub async fn sent(&self, row: &CommandRow) {
        if row.state != State::Queued.as_str() {
            return;
        }
        let change = CommandChange::State {
            node: row.node.clone(),
            id: row.id.clone(),
            state: State::Sent.as_str().into(),
            detail: String::new(),
            at_ns: now_ns(),
        };
        if let Err(error) = self.write(change).await {
            tracing::warn!(%error, node = row.node, id = row.id, "cannot record a command as sent");
        }
    }

    /// `node` confirmed its command `number`; returns it, when there was one waiting.
    pub async fn confirmed(&self, node: &str, number: u16) -> Option<CommandRow> {
        self.numbered(node, number, State::Confirmed, "").await
    }

    /// Node 2 put `node`'s command `number` on the air.
    pub async fn sent_number(&self, node: &str, number: u16) {
        self.numbered(node, number, State::Sent, "").await;
    }

    /// Node 2 refused `node`'s command `number`: why.
    pub async fn refused_number(&self, node: &str, number: u16, why: &str) {
        self.numbered(node, number, State::Rejected, why).await;
    }

    async fn numbered(
        &self,
        node: &str,
        number: u16,
        state: State,
        detail: &str,
    ) -> Option<CommandRow> {
        let change = CommandChange::Numbered {
            node: node.to_string(),
            number,
            state: state.as_str().to_string(),
            detail: detail.to_string(),
            at_ns: now_ns(),
        };
        match self.write(change).await {
            Ok(rows) => rows.into_iter().next(),
            Err(error) => {
                tracing::warn!(%error, node, number, state = state.as_str(), "cannot record a command's state");
                None
            }
        }
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
            number: 0,
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

    /// Commits `change`; every row it changed goes to the state subscribers.
    async fn write(&self, change: CommandChange) -> Result<Vec<CommandRow>, SubmitError> {
        let adds = matches!(change, CommandChange::Add(_));
        let (reply, outcome) = Reply::channel();
        self.writes
            .send(Write::Command { change, reply })
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        let rows = outcome
            .await
            .map_err(|_| SubmitError::Unavailable("the outbox writer stopped".into()))?
            .map_err(SubmitError::Unavailable)?;
        if let Ok(mut summary) = self.summary.lock() {
            for row in &rows {
                let key = (row.node.clone(), row.id.clone());
                match State::parse(&row.state).is_some_and(State::is_final) {
                    true => summary.open.remove(&key),
                    false => summary.open.insert(key),
                };
            }
        }
        for row in &rows {
            // An id taken before comes back unchanged: no new state to tell.
            if !adds || row.created_ns == row.updated_ns {
                let _ = self.changes.send(row.clone());
            }
        }
        Ok(rows)
    }
}

/// A stored command as it goes on the air; `None` for one that cannot (refused ones never
/// get here: only queued and sent ones are sent).
pub fn on_air(row: &CommandRow) -> Option<lora_link::downlink::NodeCommand> {
    use lora_link::downlink::{Kind, NodeCommand};
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let kind = match command::command(&row.command, row.value.as_deref()).ok()? {
        command::Command::Interval(d) => Kind::Interval(secs(d)),
        command::Command::Ping => Kind::Ping,
        command::Command::Identify(d) => Kind::Identify(secs(d)),
        command::Command::Reboot => Kind::Reboot,
    };
    Some(NodeCommand {
        number: row.number,
        kind,
    })
}

/// The address of the node named `node` behind Node 2 (`node7` is 7, as Node 2's JSON names
/// it); `None` for a name that is no radio node's (Node 2's own `node2` included).
pub fn node2_address(node: &str) -> Option<u16> {
    let digits = node.strip_prefix("node")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|a| *a != lora_link::node2::ADDRESS)
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

/// The JSON of a node's info (`<prefix>/<node>/info`).
pub fn info_json(info: &NodeInfoRow) -> serde_json::Value {
    serde_json::json!({
        "node": info.node,
        "version": info.version,
        "boots": info.boots,
        "uptime_s": info.uptime_s,
        "reset": reset_reason(info.reset),
        "at": command::rfc3339(info.at_ns),
    })
}

/// Whether `now` tells of a start after `before` (the info stored last): the first info of a
/// node, a new boot count, or an uptime that went back (a node whose count did not survive
/// its reset, like Node 2 after a power loss). A `ping`'s answer is none.
fn is_new_start(before: Option<&NodeInfoRow>, now: &NodeInfoRow) -> bool {
    before.is_none_or(|b| b.boots != now.boots || now.uptime_s < b.uptime_s)
}

/// `lora_link::downlink::NodeInfo::reset` in words.
fn reset_reason(code: u8) -> &'static str {
    match code {
        1 => "power_on",
        2 => "software",
        3 => "watchdog",
        4 => "panic",
        _ => "unknown",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(boots: u32, uptime_s: u32) -> NodeInfoRow {
        NodeInfoRow {
            node: "node1".into(),
            version: "0.1.0".into(),
            boots,
            uptime_s,
            reset: 4,
            at_ns: 0,
        }
    }

    #[test]
    fn a_start_is_a_first_info_a_new_boot_count_or_an_uptime_that_went_back() {
        assert!(is_new_start(None, &info(1, 0)), "the first info");
        assert!(is_new_start(Some(&info(1, 40)), &info(2, 0)), "a new boot");
        assert!(
            is_new_start(Some(&info(1, 40)), &info(1, 2)),
            "a count that did not survive"
        );
        assert!(
            !is_new_start(Some(&info(3, 40)), &info(3, 95)),
            "a ping's answer"
        );
        assert_eq!(reset_reason(4), "panic");
        assert_eq!(reset_reason(3), "watchdog");
        assert_eq!(reset_reason(9), "unknown");
    }
}
