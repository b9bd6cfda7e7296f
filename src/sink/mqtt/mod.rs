//! The MQTT sink: one topic per reading (`<prefix>/<node>/<metric>`), payload = the value
//! text the firmware wrote.
//!
//! Delivery semantics: the cursor moves on PUBACK (QoS 1) / PUBCOMP (QoS 2), never when
//! `try_publish` returns `Ok` (that only queues inside rumqttc); see [`acks`]. What is published
//! in which order is [`publisher`]'s; this module runs the connection around it.
//! At-least-once: after a reconnect everything after the cursor is published again.
//!
//! Session: fixed client id, clean session off (the broker keeps our subscribers' queued
//! messages across our reconnects), at most `inflight` publishes awaiting acknowledgement.
//! After any connection error the client and event loop are rebuilt (rumqttc's own resend
//! queue is dropped: the outbox is the one source of truth) after an exponential backoff
//! with jitter, capped at `reconnect_max`.
//!
//! Availability: `<prefix>/gateway/status` is `online` (retained) after each connect,
//! `offline` as the last will and on clean shutdown.

mod acks;
mod homeassistant;
mod publisher;

use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Request,
};
use tracing::{debug, info, warn};

use super::{Cursor, Link, SinkContext, SinkError};
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::failure::Failure;
use crate::live_view::MAX_SERIES;
use crate::mqtt::topic::status_topic;
use crate::mqtt::{diagnose, EventDriver};
use publisher::{Kind, Message, Next, Publisher, Rules};

/// Cursor key in the outbox.
pub const NAME: &str = "mqtt";
/// Longest wait for the `offline` acknowledgement at shutdown.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most QoS 2 publishes awaiting PUBCOMP at once, whatever `inflight` says. Measured:
/// Mosquitto 2.0 completes the QoS 2 handshake for, but silently drops, publishes of an MQTT
/// 3.1.1 client beyond its `max_inflight_messages` (default 20). QoS 1 is not affected.
const QOS2_MAX_INFLIGHT: usize = 16;
/// How soon a cursor move that `advance` left unstored is stored (no tick while there is none).
const TICK: Duration = Duration::from_millis(250);

/// How one connection ended.
enum SessionEnd {
    /// Everything delivered after `finish`, `offline` published.
    Finished,
    /// `abort`: stop now.
    Aborted,
    /// The connection failed; reconnect after a backoff. `connected_for`: how long it had
    /// been up after the broker accepted it (`None`: it never was).
    Failed {
        kind: Failure,
        detail: String,
        connected_for: Option<Duration>,
    },
}

/// A connection that ends this soon after the broker accepted it does not reset the backoff
/// (a clash of client ids then settles at `reconnect_max` instead of twice a second).
const QUICK_DROP: Duration = Duration::from_secs(3);
/// A connection that lived this long was healthy: a clash, if any, is over.
const HEALTHY_SESSION: Duration = Duration::from_secs(300);
/// Connections in a row lost after CONNACK that make the likely cause worth a warning.
const TAKEOVER_WARN_AFTER: u32 = 3;

/// Notices a broker that drops the connection again and again after accepting it, while
/// every reconnect succeeds at once: the mark of another client with the same client id
/// (each connect takes the session from the other). How long each connection lives does not
/// matter: it is the other client's backoff. Pure.
#[derive(Debug, Default)]
struct Takeovers {
    drops: u32,
    warned: bool,
}

impl Takeovers {
    /// One connection ended after `connected_for` (`None`: it never connected); `lost`: the
    /// broker closed it (not a timeout, TLS or protocol failure). Returns the number of such
    /// drops in a row when it is time to warn (once per streak).
    fn on_end(&mut self, connected_for: Option<Duration>, lost: bool) -> Option<u32> {
        match connected_for {
            Some(d) if lost && d < HEALTHY_SESSION => self.drops += 1,
            Some(_) => {
                self.drops = 0;
                self.warned = false;
            }
            // Could not connect: the broker or the network is down, not another client.
            None => self.drops = 0,
        }
        if self.drops >= TAKEOVER_WARN_AFTER && !self.warned {
            self.warned = true;
            return Some(self.drops);
        }
        None
    }
}

/// Runs the sink until finished or aborted.
pub async fn run(cfg: MqttConfig, ctx: &SinkContext) -> Result<(), SinkError> {
    let mut cursor = Cursor::load(NAME, ctx)?;
    let mut backoff = Backoff::new(
        cfg.connection.reconnect_initial,
        cfg.connection.reconnect_max,
    );
    let mut link = Link::new(ctx.events.clone());
    let mut takeovers = Takeovers::default();
    // The broker tried next: after a failure, the next one of the list (a cluster's nodes
    // hold the same persistent session, so whatever was not acknowledged is sent there).
    let mut broker = 0;
    loop {
        let target = cfg.connection.broker_url(broker);
        let end = session(&cfg, ctx, &mut cursor, &mut link, broker).await?;
        cursor.persist(ctx);
        match end {
            SessionEnd::Finished | SessionEnd::Aborted => return Ok(()),
            SessionEnd::Failed {
                kind,
                detail,
                connected_for,
            } => {
                // A connection that lived a while was healthy: reconnect quickly. One dropped
                // right after CONNACK keeps the backoff growing.
                if connected_for.is_some_and(|d| d >= QUICK_DROP) {
                    backoff.reset();
                }
                if let Some(n) = takeovers.on_end(connected_for, kind == Failure::ConnectionLost) {
                    warn!(
                        client_id = cfg.connection.client_id,
                        drops = n,
                        "the broker keeps dropping the connection right after accepting it: another client with the same client_id is the likely cause (each connection takes the session from the other); give each gateway its own [mqtt] client_id"
                    );
                }
                let delay = backoff.next_delay();
                ctx.status.set_error(Some(format!("{kind}: {detail}")));
                link.down(NAME, &target, kind, &detail, delay);
                ctx.status.set_endpoint(None);
                broker = (broker + 1) % cfg.connection.broker_count();
                debug!(attempt = backoff.attempts(), retry_in = ?delay, next = %cfg.connection.broker_url(broker), "mqtt reconnect scheduled");
                if nothing_left(&cursor, ctx)? {
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.abort.cancelled() => return Ok(()),
                    () = ctx.finish.cancelled(), if !ctx.finish.is_cancelled() => {
                        if nothing_left(&cursor, ctx)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// Finishing, and every committed reading already delivered: no reason to keep reconnecting.
/// (Gateway events after the cursor do not count: MQTT does not carry them.)
fn nothing_left(cursor: &Cursor, ctx: &SinkContext) -> Result<bool, SinkError> {
    Ok(ctx.finish.is_cancelled() && ctx.outbox.count_after(cursor.value)? == 0)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// The rumqttc options for `cfg`'s `broker`th broker.
pub fn options(cfg: &MqttConfig, broker: usize) -> MqttOptions {
    let conn = &cfg.connection;
    let mut opts = conn.options(conn.client_id.clone(), broker);
    // A persistent session (clean session off) as the broker contract asks, except with
    // QoS 2: every connection starts a new client whose packet ids restart at 1, and a broker
    // still holding an unreleased QoS 2 id from the old session would take a new publish
    // with that id as a duplicate and drop it, while completing the handshake.
    opts.set_clean_session(cfg.qos == 2)
        // Twice our window: packet ids are never reused while one is awaiting its ack.
        .set_inflight(cfg.inflight.saturating_mul(2))
        .set_last_will(LastWill::new(
            status_topic(&cfg.topic_prefix),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    opts
}

/// The publishing rules of `cfg`.
fn rules(cfg: &MqttConfig) -> Rules {
    let qos = qos(cfg.qos);
    let window = match qos {
        QoS::ExactlyOnce => usize::from(cfg.inflight).min(QOS2_MAX_INFLIGHT),
        _ => usize::from(cfg.inflight),
    };
    Rules {
        prefix: cfg.topic_prefix.clone(),
        qos,
        retain: cfg.retain,
        window,
        ack_timeout: cfg.ack_timeout,
        homeassistant: cfg.homeassistant.clone(),
        packet_events: cfg.packet_events.clone(),
    }
}

/// One connection to the `broker`th broker: the [`Publisher`] decides, this task reads the
/// outbox, hands messages to the client and waits for whatever comes first.
async fn session(
    cfg: &MqttConfig,
    ctx: &SinkContext,
    cursor: &mut Cursor,
    link: &mut Link,
    broker: usize,
) -> Result<SessionEnd, SinkError> {
    let rules = rules(cfg);
    let window = rules.window;
    let (client, event_loop) = AsyncClient::new(options(cfg, broker), window + 8);
    let mut events = EventDriver::spawn(event_loop, window * 2 + 16);
    let packet_ts = match cfg.packet_events {
        Some(_) => ctx.outbox.ts_at(cursor.value)?,
        None => None,
    };
    let mut publisher = Publisher::new(rules, cursor.value, packet_ts);
    let mut connection = BrokerEvents {
        cfg,
        ctx,
        client: &client,
        target: cfg.connection.broker_url(broker),
        broker,
        connected_at: None,
    };
    let mut committed = ctx.committed.clone();
    let mut finishing = ctx.finish.is_cancelled();
    let mut ingest_open = true;
    let mut tick = tokio::time::interval(TICK);
    // A broker that keeps the connection but stops acknowledging (a cluster node not yet in
    // sync, a frozen process) fails the session: the next broker gets everything unconfirmed.
    let mut ack_check = tokio::time::interval(cfg.ack_timeout / 4);
    ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let connected = connection.connected_at.is_some();
        if connected {
            publisher.on_committed(*committed.borrow_and_update());
            if let Some(detail) = hand_over(&client, &mut publisher, cursor, ctx)? {
                return Ok(connection.failed(Failure::ProtocolError, detail));
            }
            if finishing && publisher.idle() && all_delivered(cursor, ctx)? {
                say_offline(&client, &mut events, &cfg.topic_prefix).await;
                return Ok(SessionEnd::Finished);
            }
        }
        tokio::select! {
            biased;
            () = ctx.abort.cancelled() => {
                if connected {
                    say_offline(&client, &mut events, &cfg.topic_prefix).await;
                }
                return Ok(SessionEnd::Aborted);
            }
            event = events.next() => {
                let end = connection.on_event(event, &mut publisher, cursor, link).await?;
                if let Some(end) = end {
                    return Ok(end);
                }
            }
            // The clock, not the tick's own instant: after the branch was off (nothing
            // waiting), the first tick reports when it was due, possibly minutes ago.
            _ = ack_check.tick(), if connected && publisher.outstanding() > 0 => {
                if let Some(quiet) = publisher.stalled(std::time::Instant::now()) {
                    let detail = format!(
                        "no acknowledgement for {}s while {} publishes waited for one (the broker keeps the connection but confirms nothing; [mqtt] ack_timeout)",
                        quiet.as_secs(),
                        publisher.outstanding()
                    );
                    return Ok(connection.failed(Failure::Timeout, detail));
                }
            }
            () = ctx.finish.cancelled(), if !finishing => finishing = true,
            // Err: the ingest stage ended; `finish` follows.
            changed = committed.changed(), if ingest_open && connected && publisher.wants_rows() => {
                ingest_open = changed.is_ok();
            }
            // Only while a cursor move waits to be stored: an idle sink sleeps.
            _ = tick.tick(), if cursor.unpersisted() => cursor.persist(ctx),
        }
    }
}

/// Whether the cursor reached the last committed row.
fn all_delivered(cursor: &Cursor, ctx: &SinkContext) -> Result<bool, SinkError> {
    let end = ctx.outbox.last_seq()?;
    debug!(
        cursor = cursor.value.get(),
        end = end.get(),
        "mqtt sink finishing"
    );
    Ok(cursor.value >= end)
}

/// Does what the publisher says until it waits: reads the outbox, hands messages to the
/// client (until its queue is full), moves the cursor. `Some(why)` when the session must end.
fn hand_over(
    client: &AsyncClient,
    publisher: &mut Publisher,
    cursor: &mut Cursor,
    ctx: &SinkContext,
) -> Result<Option<String>, SinkError> {
    loop {
        match publisher.next() {
            Next::Read { after, limit } => {
                let rows = ctx.outbox.read_after(after, limit)?;
                publisher.on_rows(rows, limit);
            }
            Next::Publish(message) => {
                let kind = message.kind;
                let Message {
                    topic,
                    qos,
                    retain,
                    payload,
                    ..
                } = message;
                match client.try_publish(topic, qos, retain, payload) {
                    Ok(()) => {
                        if let Some((seq, ts_ns)) = publisher.on_handed(kind) {
                            cursor.sending(seq, ts_ns, false, ctx);
                        }
                    }
                    // The client's queue is full: the message waits for the next turn.
                    Err(error) => match given_back(error, kind) {
                        Some(message) => {
                            publisher.on_refused(message);
                            return Ok(None);
                        }
                        None => return Ok(Some("the client lost a message it refused".into())),
                    },
                }
            }
            Next::Confirmed(seq) => cursor.advance(seq, ctx),
            Next::Wait => return Ok(None),
        }
    }
}

/// The message a refused `try_publish` hands back (it always does: the request it was given).
fn given_back(error: ClientError, kind: Kind) -> Option<Message> {
    let (ClientError::Request(request) | ClientError::TryRequest(request)) = error;
    match request {
        Request::Publish(p) => Some(Message {
            topic: p.topic,
            qos: p.qos,
            retain: p.retain,
            payload: p.payload.to_vec(),
            kind,
        }),
        _ => None,
    }
}

/// One connection's broker events and what they do to the publisher, the cursor and the link.
struct BrokerEvents<'a> {
    cfg: &'a MqttConfig,
    ctx: &'a SinkContext,
    client: &'a AsyncClient,
    /// The broker's URL.
    target: String,
    broker: usize,
    /// When the broker accepted it.
    connected_at: Option<tokio::time::Instant>,
}

impl BrokerEvents<'_> {
    /// Handles one event of the client's event loop; `Some` when the session ends.
    // rumqttc's own error type is large; it comes once per connection, not per event.
    #[allow(clippy::result_large_err)]
    async fn on_event(
        &mut self,
        event: Result<Event, ConnectionError>,
        publisher: &mut Publisher,
        cursor: &mut Cursor,
        link: &mut Link,
    ) -> Result<Option<SessionEnd>, SinkError> {
        let ctx = self.ctx;
        let confirmed = match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                self.connected_at = Some(tokio::time::Instant::now());
                ctx.status.set_error(None);
                ctx.status.set_endpoint(Some(self.target.clone()));
                link.up(NAME, &self.target);
                debug!(session_present = ack.session_present, "mqtt connack");
                if let Some(topic) = publisher.on_connected() {
                    // Home Assistant says `online` when it (re)starts: announce again then.
                    let _ = self.client.try_subscribe(topic, QoS::AtLeastOnce);
                }
                None
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if publisher.on_incoming(&p.topic, &p.payload) {
                    debug!("home assistant online; announcing every series again");
                    // Readings already published are not resent: announce the known series
                    // from the newest values.
                    let newest = ctx.outbox.latest()?;
                    publisher.announce_again(&newest[..newest.len().min(MAX_SERIES)]);
                }
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => publisher.on_sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => publisher.on_ack(ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(comp))) => publisher.on_ack(comp.pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                // A packet id collision would make acks ambiguous: start a clean connection
                // instead; everything unconfirmed is sent again.
                let detail = format!("packet id {pkid} still awaiting its acknowledgement");
                return Ok(Some(self.failed(Failure::ProtocolError, detail)));
            }
            Ok(_) => None,
            Err(err) => {
                let (kind, detail) = diagnose(&err, &self.cfg.connection, self.broker).await;
                return Ok(Some(self.failed(kind, detail)));
            }
        };
        if let Some(seq) = confirmed {
            cursor.advance(seq, ctx);
        }
        Ok(None)
    }

    /// The session ends with `kind`.
    fn failed(&self, kind: Failure, detail: String) -> SessionEnd {
        SessionEnd::Failed {
            kind,
            detail,
            connected_for: self.connected_at.map(|t| t.elapsed()),
        }
    }
}

/// Clean shutdown: `offline` (retained), then DISCONNECT, waiting briefly for both.
async fn say_offline(client: &AsyncClient, events: &mut EventDriver, prefix: &str) {
    if client
        .try_publish(status_topic(prefix), QoS::AtLeastOnce, true, "offline")
        .is_err()
    {
        return;
    }
    let wait = async {
        let mut disconnect_sent = false;
        loop {
            match events.next().await {
                Ok(Event::Incoming(Packet::PubAck(_))) if !disconnect_sent => {
                    disconnect_sent = client.try_disconnect().is_ok();
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(OFFLINE_TIMEOUT, wait).await.is_err() {
        info!("broker did not confirm the offline status in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_lost_after_connack_again_and_again_are_a_takeover_warned_once_a_streak() {
        let mut t = Takeovers::default();
        let short = Some(Duration::from_millis(200));
        // Each lives as long as the other client's backoff: 60 s is still a drop.
        let minute = Some(Duration::from_secs(60));
        assert_eq!(t.on_end(short, true), None);
        // A failure before CONNACK breaks the streak; so does a timeout.
        assert_eq!(t.on_end(None, false), None);
        assert_eq!(t.on_end(short, true), None);
        assert_eq!(t.on_end(minute, false), None);
        assert_eq!(t.on_end(minute, true), None);
        assert_eq!(t.on_end(short, true), None);
        assert_eq!(t.on_end(minute, true), Some(3));
        assert_eq!(t.on_end(short, true), None, "once a streak");
        // A healthy stretch ends the streak; a new clash is told again.
        assert_eq!(t.on_end(Some(HEALTHY_SESSION), true), None);
        for _ in 0..2 {
            assert_eq!(t.on_end(short, true), None);
        }
        assert_eq!(t.on_end(short, true), Some(3));
    }
}
