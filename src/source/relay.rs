//! Commands through Node 2 (`serial` source; `docs/PROTOCOL.md`, "Downlink"): the gateway
//! writes a node's oldest open command to Node 2's VCP as a `cmd` line (`lora_link::vcp`),
//! Node 2 puts it in the ACK of the node's next uplink, and reports on its VCP what became of
//! it (`command sent`, `confirmed`, `info`, `command refused`), which the source reads among
//! the JSON lines and hands to the command queue. A node behind Node 2 is `node<address>`, as
//! Node 2's JSON names it (`n1` is `node1`).
//!
//! Node 2 keeps one command per node, and forgets it when it restarts: the line is written
//! when the port opens, whenever a node's open commands change, and again every
//! [`REWRITE_EVERY`] while any is open (the same line again changes nothing on Node 2).

use std::time::Duration;

use lora_link::vcp::{self, Report};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tracing::{debug, info, warn};

use crate::downlink::{node2_address, on_air, Downlink};

/// How often the open commands are written to Node 2 again.
pub(crate) const REWRITE_EVERY: Duration = Duration::from_secs(30);

/// The name of the node at `address` behind Node 2.
fn name_of(address: u16) -> String {
    format!("node{address}")
}

/// Hands a line Node 2 wrote about a command to the queue; false when it is no such line.
pub(crate) async fn report(downlink: &Downlink, line: &str) -> bool {
    let Some(report) = Report::parse(line) else {
        return false;
    };
    match report {
        Report::Queued { to, number } => {
            debug!(node = name_of(to), number, "Node 2 took the command")
        }
        Report::Sent { to, number } => downlink.sent_number(&name_of(to), number).await,
        Report::Confirmed { from, number } => {
            let node = name_of(from);
            if let Some(row) = downlink.confirmed(&node, number).await {
                info!(
                    node,
                    id = row.id,
                    number,
                    command = row.command,
                    "command confirmed by the node (through Node 2)"
                );
            }
        }
        Report::Info { from, info } => downlink.info(&name_of(from), &info).await,
        Report::Refused {
            command: Some((to, number)),
            reason,
        } => {
            let why = match reason {
                vcp::Refusal::UnknownNode => {
                    "Node 2 does not know this node (not in the table it was built with)"
                }
                vcp::Refusal::NotSecure => {
                    "the node is legacy or has no key in Node 2's table: its ACKs carry no command"
                }
                vcp::Refusal::BadLine => "Node 2 did not understand the command line",
            };
            downlink.refused_number(&name_of(to), number, why).await;
        }
        Report::Refused {
            command: None,
            reason,
        } => {
            warn!(reason = reason.as_str(), "Node 2 refused a command line");
        }
    }
    true
}

/// Writes each node's oldest open command to Node 2 now, at every change of the commands and
/// every [`REWRITE_EVERY`], until writing fails (the port is gone): returns why.
pub(crate) async fn write_commands(
    port: &mut (impl AsyncWrite + Unpin),
    downlink: &Downlink,
) -> String {
    let mut changes = downlink.changes();
    let mut every = tokio::time::interval(REWRITE_EVERY);
    loop {
        let nodes: Vec<String> = tokio::select! {
            _ = every.tick() => {
                let mut nodes: Vec<String> = downlink.pending().into_iter().map(|r| r.node).collect();
                nodes.dedup();
                nodes
            }
            change = changes.recv() => match change {
                Ok(row) => vec![row.node],
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            },
        };
        for node in nodes {
            let Some(address) = node2_address(&node) else {
                continue;
            };
            let Some((row, _)) = downlink.next_for(&node) else {
                continue;
            };
            let Some(command) = on_air(&row) else {
                continue;
            };
            let mut line = [0u8; vcp::MAX_COMMAND_LINE + 2];
            let Ok(n) = vcp::write_command(address, &command, &mut line) else {
                continue;
            };
            let Some(end) = line.get_mut(n..n + 1) else {
                continue;
            };
            end.copy_from_slice(b"\n");
            if let Err(e) = port.write_all(&line[..=n]).await {
                return e.to_string();
            }
            debug!(
                node,
                id = row.id,
                number = command.number,
                "command written to Node 2"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_radio_nodes_have_an_address_behind_node2() {
        assert_eq!(node2_address("node1"), Some(1));
        assert_eq!(node2_address("node65535"), Some(65_535));
        for name in [
            "node2",
            "node",
            "node01",
            "nodeX",
            "greenhouse",
            "node65536",
            "stats",
        ] {
            assert_eq!(node2_address(name), None, "{name}");
        }
        assert_eq!(name_of(7), "node7");
    }
}
