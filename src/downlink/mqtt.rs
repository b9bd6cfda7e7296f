//! Commands over MQTT (`docs/API.md`, "Commands"): a connection of its own to the MQTT sink's
//! broker (client id `<client id>-commands`, a persistent session, manual acknowledgements)
//! subscribes to `<prefix>/+/commands`; each request is committed to the outbox before its
//! PUBACK, so a command the broker handed over is never lost. Every state change of every
//! command is published retained on `<prefix>/<node>/commands/<id>` (on connecting: the
//! state of each command still open).

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{row_json, Downlink, SubmitError};
use crate::backoff::Backoff;
use crate::mqtt::{Connection, EventDriver};
use crate::outbox::CommandRow;

/// The topic of a command's state.
pub fn state_topic(prefix: &str, row: &CommandRow) -> String {
    format!("{prefix}/{}/commands/{}", row.node, row.id)
}

/// The node a request topic names, when it is one (`<prefix>/<node>/commands`).
fn node_of<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix("/commands")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// Runs until `stop`, reconnecting with backoff.
pub async fn run(conn: Connection, prefix: String, downlink: Downlink, stop: CancellationToken) {
    let mut backoff = Backoff::new(conn.reconnect_initial, conn.reconnect_max);
    let mut news = News {
        changes: downlink.changes(),
        infos: downlink.infos(),
    };
    let mut broker = 0;
    loop {
        let why = session(&conn, broker, &prefix, &downlink, &mut news, &stop).await;
        let Err(why) = why else { return };
        let delay = backoff.next_delay();
        warn!(url = conn.broker_url(broker), error = why, retry_in = ?delay, "mqtt commands connection lost; requests wait at the broker");
        broker = (broker + 1) % conn.broker_count();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// What the connection publishes: state changes and node infos.
struct News {
    changes: broadcast::Receiver<CommandRow>,
    infos: broadcast::Receiver<crate::outbox::NodeInfoRow>,
}

/// One connection: `Ok` when stopped, else why it ended.
async fn session(
    conn: &Connection,
    broker: usize,
    prefix: &str,
    downlink: &Downlink,
    news: &mut News,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut opts = conn.options(format!("{}-commands", conn.client_id), broker);
    opts.set_clean_session(false).set_manual_acks(true);
    let (client, event_loop) = AsyncClient::new(opts, 64);
    let mut events = EventDriver::spawn(event_loop, 64);
    let subscription = crate::mqtt::topic::commands_topic(prefix, "+");
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = client.try_disconnect();
                return Ok(());
            }
            info = news.infos.recv() => {
                if let Ok(info) = info {
                    client
                        .publish(
                            format!("{prefix}/{}/info", info.node),
                            QoS::AtLeastOnce,
                            true,
                            super::info_json(&info).to_string(),
                        )
                        .await
                        .map_err(|e| format!("publish: {e}"))?;
                }
            }
            change = news.changes.recv() => match change {
                Ok(row) => publish(&client, prefix, &row).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "mqtt commands: state messages missed; they are in GET /api/nodes/<node>/commands");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            event = events.next() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(subscription, "mqtt commands connected");
                    client
                        .subscribe(&subscription, QoS::AtLeastOnce)
                        .await
                        .map_err(|e| format!("subscribe: {e}"))?;
                    for row in downlink.pending() {
                        publish(&client, prefix, &row).await?;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Some(node) = node_of(prefix, &p.topic) else {
                        let _ = client.ack(&p).await;
                        continue;
                    };
                    match downlink.submit(node, &p.payload).await {
                        Ok(s) => debug!(node, id = s.row.id, state = s.row.state, "mqtt command taken"),
                        Err(SubmitError::BadRequest(why)) => {
                            warn!(topic = p.topic, error = why, "mqtt: not a command request; dropped");
                        }
                        // Not stored: not acknowledged, so the broker delivers it again.
                        Err(e @ SubmitError::Unavailable(_)) => return Err(e.to_string()),
                    }
                    client.ack(&p).await.map_err(|e| format!("ack: {e}"))?;
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            },
        }
    }
}

async fn publish(client: &AsyncClient, prefix: &str, row: &CommandRow) -> Result<(), String> {
    client
        .publish(
            state_topic(prefix, row),
            QoS::AtLeastOnce,
            true,
            row_json(row).to_string(),
        )
        .await
        .map_err(|e| format!("publish: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nodes_request_topic_names_a_node() {
        assert_eq!(node_of("iiot", "iiot/node1/commands"), Some("node1"));
        for topic in [
            "iiot/node1/commands/c-1",
            "iiot//commands",
            "iiot/a/b/commands",
            "other/node1/commands",
            "iiot/node1/temperature",
        ] {
            assert_eq!(node_of("iiot", topic), None, "{topic}");
        }
    }
}
