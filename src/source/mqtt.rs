//! `kind = "mqtt"`: the central ingest tier. Subscribes (QoS 1, a persistent session, shared
//! as `$share/<group>/<topic>` when `share_group` is set) to edge gateways' packet events
//! (`docs/API.md`), and hands each to the ingest stage as a packet with the **edge's** receive
//! time and its `gateway`/`site` tags, so a redelivered event rewrites the same points.
//!
//! Nothing is lost when an instance dies: acknowledgements are manual, and the PUBACK for a
//! message goes out only after the ingest stage committed its packet to the outbox (in arrival
//! order, by the acker task). Until then the broker holds the message and, when the
//! connection dies, delivers it again: to this instance's persistent session or to another
//! member of the share group. A message that is not a packet event is quarantined with the
//! reason and acknowledged, so it is never redelivered forever.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{SourceContext, SourceEnd};
use crate::backoff::Backoff;
use crate::config::MqttSourceConfig;
use crate::decode::{packet_event, ErrorClass};
use crate::mqtt::{diagnose, probe_all, EventDriver};
use crate::reading::{CompactString, Forwarded, Line, Origin};

/// A connection that lived this long was healthy: the next reconnect starts from the
/// shortest delay.
const HEALTHY: Duration = Duration::from_secs(3);

/// Runs the source until `token` is cancelled, reconnecting (to the next broker of the list)
/// with backoff.
pub(super) async fn run(
    cfg: MqttSourceConfig,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
    ctx: SourceContext,
) -> SourceEnd {
    let conn = &cfg.connection;
    let mut backoff = Backoff::new(conn.reconnect_initial, conn.reconnect_max);
    let mut broker = 0;
    let mut last_problem = String::new();
    loop {
        let started = tokio::time::Instant::now();
        let problem = match session(&cfg, broker, &tx, &token, &ctx).await {
            Ok(end) => return end,
            Err(problem) => problem,
        };
        if started.elapsed() >= HEALTHY {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let url = conn.broker_url(broker);
        if problem != last_problem {
            warn!(url, error = %problem, retry_in = ?delay, "mqtt source disconnected; unacknowledged events stay with the broker");
            last_problem.clone_from(&problem);
        }
        ctx.set_up(Err(format!("{url}: {problem}")));
        broker = (broker + 1) % conn.broker_count();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = token.cancelled() => return SourceEnd::Cancelled,
        }
    }
}

/// Logs in to each broker of the list as the source would (under a separate client id, so
/// the persistent session is untouched), for the checklist: ok while one accepts.
pub(super) async fn probe(cfg: &MqttSourceConfig) -> Result<String, String> {
    let (accepted, failed) = probe_all(&cfg.connection, PROBE_TIMEOUT).await;
    if accepted.is_empty() {
        return Err(format!("mqtt: {}", failed.join("; ")));
    }
    let mut said = format!(
        "mqtt: {} accepted our connection; subscribing to {}",
        accepted.join(", "),
        cfg.subscription
    );
    if !failed.is_empty() {
        said.push_str(&format!("; not reachable: {}", failed.join("; ")));
    }
    Ok(said)
}

/// Longest wait for a broker's answer in [`probe`].
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection: `Ok` when the source is to stop, else why the connection ended.
async fn session(
    cfg: &MqttSourceConfig,
    broker: usize,
    tx: &mpsc::Sender<Line>,
    token: &CancellationToken,
    ctx: &SourceContext,
) -> Result<SourceEnd, String> {
    let conn = &cfg.connection;
    let url = conn.broker_url(broker);
    let mut opts = conn.options(conn.client_id.clone(), broker);
    // A persistent session keeps our subscription and what was not acknowledged across
    // reconnects; acknowledgements wait for the commit.
    opts.set_clean_session(false).set_manual_acks(true);
    let (client, event_loop) = AsyncClient::new(opts, 64);
    let mut events = EventDriver::spawn(event_loop, 64);
    let (acks, mut acker) = Acker::spawn(client.clone());
    loop {
        let event = tokio::select! {
            () = token.cancelled() => {
                // Acknowledge what the ingest stage commits meanwhile; what it does not stays
                // unacknowledged, with the broker.
                drop(acks);
                acker.finish().await;
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(event) = events.next().await {
                        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                            break;
                        }
                    }
                })
                .await;
                return Ok(SourceEnd::Cancelled);
            }
            event = events.next() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(url, session_present = ack.session_present, subscription = %cfg.subscription, "mqtt source connected");
                // Subscribing again on a resumed session changes nothing; on a new one it is
                // what makes the broker send to us.
                client
                    .try_subscribe(&cfg.subscription, QoS::AtLeastOnce)
                    .map_err(|e| format!("subscribe: {e}"))?;
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    return Err(format!(
                        "the broker refused the subscription {} (check the user's ACL; a broker without shared subscriptions refuses $share/...)",
                        cfg.subscription
                    ));
                }
                ctx.set_up(Ok(format!("{url}: subscribed to {}", cfg.subscription)));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let (line, handled) = forward(&publish, ctx);
                if let Some(line) = line {
                    if tx.send(line).await.is_err() {
                        // The ingest stage is gone: the gateway is stopping.
                        return Ok(SourceEnd::Cancelled);
                    }
                }
                if acks.send((publish, handled)).is_err() {
                    return Err("the acknowledging task ended".to_string());
                }
            }
            Ok(_) => {}
            Err(error) => {
                let (kind, detail) = diagnose(&error, conn, broker).await;
                return Err(format!("{kind}: {detail}"));
            }
        }
    }
}

/// The line for a received message, and what says when it may be acknowledged: after the
/// commit for a packet event; at once for a message that is none (quarantined here).
fn forward(publish: &Publish, ctx: &SourceContext) -> (Option<Line>, oneshot::Receiver<()>) {
    let (tell, handled) = oneshot::channel();
    match packet_event::decode(&publish.payload) {
        Ok(event) => {
            let text = format!(
                "packet event of {} on {}",
                event.gateway.as_deref().unwrap_or("an unnamed gateway"),
                publish.topic
            );
            let line = Line {
                text,
                received_ns: event.received_ns,
                cut: false,
                decoded: Some(event.readings),
                forwarded: Some(Forwarded {
                    origin: Origin {
                        gateway: event.gateway.map(CompactString::from),
                        site: event.site.map(CompactString::from),
                    },
                }),
                handled: Some(tell),
                link: None,
            };
            (Some(line), handled)
        }
        Err(why) => {
            ctx.stats
                .invalid_lines
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.stats.decode_error(ErrorClass::BadPacketEvent);
            let text = String::from_utf8_lossy(&publish.payload);
            ctx.quarantine
                .add("mqtt", &format!("{}: {why}", publish.topic), &text);
            debug!(topic = %publish.topic, %why, "message quarantined and acknowledged");
            let _ = tell.send(());
            (None, handled)
        }
    }
}

/// Acknowledges received messages in arrival order, each once the ingest stage handled it.
/// A message the ingest stage dropped (not committed: the gateway is stopping) ends the
/// acknowledging: it and everything after it stay with the broker.
///
/// Its queue is unbounded on purpose: rumqttc takes an acknowledgement only while its event
/// loop is polled, and the loop waits while the session takes its events; a session waiting
/// for room in this queue would close the circle (measured: a stalled instance with 360 KB
/// unread in its socket). The queue holds what was received and not yet acknowledged, which
/// the ingest channel's bound already limits.
struct Acker {
    task: tokio::task::JoinHandle<()>,
}

type Pending = (Publish, oneshot::Receiver<()>);

impl Acker {
    fn spawn(client: AsyncClient) -> (mpsc::UnboundedSender<Pending>, Acker) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let task = tokio::spawn(async move {
            while let Some((publish, handled)) = rx.recv().await {
                if handled.await.is_err() || client.ack(&publish).await.is_err() {
                    return;
                }
            }
        });
        (tx, Acker { task })
    }

    /// Once its queue was closed: lets the acknowledgements due within a second go out.
    async fn finish(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
