//! The MQTT sink: one topic per reading (`<prefix>/<node>/<metric>`), payload = the value
//! text the firmware wrote.
//!
//! Delivery semantics: the cursor moves on PUBACK (QoS 1) / PUBCOMP (QoS 2), never when
//! `try_publish` returns `Ok` (that only queues inside rumqttc); see [`super::acks`].
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

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tracing::{debug, info, warn};

use super::{Cursor, Link, SinkContext, SinkError};
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::decode::packet_event;
use crate::failure::Failure;
use crate::latest::MAX_SERIES;
use crate::mqtt::topic::{reading_topic, status_topic};
use crate::mqtt::{diagnose, EventDriver};
use crate::outbox::{Seq, StoredReading};
use crate::reading::CompactString;
use acks::{AckTracker, AckWatch};
use homeassistant::{discovery, ha_status_topic};

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

async fn session(
    cfg: &MqttConfig,
    ctx: &SinkContext,
    cursor: &mut Cursor,
    link: &mut Link,
    broker: usize,
) -> Result<SessionEnd, SinkError> {
    let target = cfg.connection.broker_url(broker);
    let reading_qos = qos(cfg.qos);
    let window = match reading_qos {
        QoS::ExactlyOnce => usize::from(cfg.inflight).min(QOS2_MAX_INFLIGHT),
        _ => usize::from(cfg.inflight),
    };
    let (client, event_loop) = AsyncClient::new(options(cfg, broker), window + 8);
    let mut events = EventDriver::spawn(event_loop, window * 2 + 16);
    let mut tracker = AckTracker::new(cursor.value, reading_qos == QoS::AtMostOnce);
    let mut committed = ctx.committed.clone();
    let mut buffered: VecDeque<StoredReading> = VecDeque::new();
    let mut connected = false;
    let mut connected_at: Option<tokio::time::Instant> = None;
    let mut finishing = ctx.finish.is_cancelled();
    let mut ingest_open = true;
    // Series whose Home Assistant discovery config went out on this connection.
    let mut announced: HashSet<(CompactString, CompactString)> = HashSet::new();
    let mut tick = tokio::time::interval(TICK);
    // Packet events: the receive time of the last reading handed over (its packet's event
    // went before it, on this connection or one before: the cursor is never past a packet
    // event that was not confirmed), and the first seq of the packet whose event is queued.
    let mut packet_ts = match cfg.packet_events {
        Some(_) => ctx.outbox.ts_at(cursor.value)?,
        None => None,
    };
    let mut event_queued: Option<Seq> = None;
    // A broker that keeps the connection but stops acknowledging (a cluster node not yet in
    // sync, a frozen process) fails the session: the next broker gets everything unconfirmed.
    let mut ack_watch = AckWatch::new(cfg.ack_timeout);
    let mut ack_check = tokio::time::interval(cfg.ack_timeout / 4);
    ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if tracker.outstanding() == 0 {
            ack_watch.rest();
        }
        if connected {
            committed.borrow_and_update();
            while tracker.outstanding() < window {
                if buffered.is_empty() {
                    // Read a whole window ahead (bounded), not one row per acknowledgement:
                    // one query per `window` messages instead of one per message.
                    buffered.extend(ctx.outbox.read_after(tracker.highest_queued(), window)?);
                }
                let Some(r) = buffered.pop_front() else { break };
                if r.is_event() {
                    // Gateway events are for the database's annotations, not MQTT topics.
                    if let Some(seq) = tracker.on_skipped(r.seq) {
                        cursor.advance(seq, ctx);
                    }
                    continue;
                }
                if let Some(ha) = &cfg.homeassistant {
                    let series = (r.node.clone(), r.metric.clone());
                    // Bounded like the newest-value map: a firmware that invents keys does
                    // not grow this set (or Home Assistant) without limit.
                    let room = announced.len() < MAX_SERIES;
                    if room && !announced.contains(&series) {
                        let (topic, payload) =
                            discovery(ha, &cfg.topic_prefix, &r.node, &r.metric, r.unit.as_deref());
                        if client
                            .try_publish(topic, QoS::AtLeastOnce, true, payload)
                            .is_err()
                        {
                            buffered.push_front(r);
                            break;
                        }
                        tracker.on_queued(None);
                        announced.insert(series);
                    }
                }
                if let Some(pe) = &cfg.packet_events {
                    if packet_ts != Some(r.ts_ns) && event_queued != Some(r.seq) {
                        // `r` opens a packet: its event goes first, with every reading.
                        fill_packet(&mut buffered, &r, window, ctx)?;
                        let rows: Vec<&StoredReading> = std::iter::once(&r)
                            .chain(
                                buffered
                                    .iter()
                                    .take_while(|b| b.ts_ns == r.ts_ns && !b.is_event()),
                            )
                            .collect();
                        // A big packet goes out as several events (same time, same seq).
                        let mut queued_all = true;
                        for chunk in rows.chunks(packet_event::READINGS_PER_EVENT) {
                            let readings: Vec<_> =
                                chunk.iter().map(|r| r.event_reading()).collect();
                            let payload = packet_event::encode(
                                &pe.gateway_id,
                                pe.site.as_deref(),
                                r.ts_ns,
                                &readings,
                            );
                            if client
                                .try_publish(&pe.topic, reading_qos, false, payload)
                                .is_err()
                            {
                                queued_all = false;
                                break;
                            }
                            tracker.on_queued(Some(r.seq));
                        }
                        if !queued_all {
                            buffered.push_front(r);
                            break;
                        }
                        event_queued = Some(r.seq);
                    }
                }
                let topic = reading_topic(&cfg.topic_prefix, &r.node, &r.metric);
                if client
                    .try_publish(topic, reading_qos, cfg.retain, r.value.as_bytes().to_vec())
                    .is_err()
                {
                    buffered.push_front(r);
                    break;
                }
                packet_ts = Some(r.ts_ns);
                cursor.sending(&r, ctx);
                tracker.on_queued(Some(r.seq));
            }
            if finishing && tracker.outstanding() == 0 && buffered.is_empty() {
                let end = ctx.outbox.last_seq()?;
                debug!(
                    cursor = cursor.value.get(),
                    end = end.get(),
                    "mqtt sink finishing"
                );
                if cursor.value >= end {
                    say_offline(&client, &mut events, &cfg.topic_prefix).await;
                    return Ok(SessionEnd::Finished);
                }
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
            event = events.next() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    connected_at = Some(tokio::time::Instant::now());
                    ctx.status.set_error(None);
                    ctx.status.set_endpoint(Some(target.clone()));
                    link.up(NAME, &target);
                    debug!(session_present = ack.session_present, "mqtt connack");
                    if client
                        .try_publish(status_topic(&cfg.topic_prefix), QoS::AtLeastOnce, true, "online")
                        .is_ok()
                    {
                        tracker.on_queued(None);
                    }
                    if let Some(ha) = &cfg.homeassistant {
                        // Home Assistant says `online` when it (re)starts: announce again then.
                        let _ = client.try_subscribe(ha_status_topic(ha), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ha_online = cfg.homeassistant.as_ref().is_some_and(|ha| {
                        p.topic == ha_status_topic(ha) && p.payload.as_ref() == b"online"
                    });
                    if ha_online {
                        debug!("home assistant online; announcing every series again");
                        announced.clear();
                        // Readings already published are not resent: announce the known
                        // series from the latest values right away.
                        for r in ctx.outbox.latest()?.into_iter().take(MAX_SERIES) {
                            let Some(ha) = &cfg.homeassistant else { break };
                            let (topic, payload) = discovery(ha, &cfg.topic_prefix, &r.node, &r.metric, r.unit.as_deref());
                            if client.try_publish(topic, QoS::AtLeastOnce, true, payload).is_err() {
                                break;
                            }
                            tracker.on_queued(None);
                            announced.insert((r.node.clone(), r.metric.clone()));
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(seq) = tracker.on_sent(pkid) {
                        cursor.advance(seq, ctx);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(seq) = tracker.on_ack(ack.pkid) {
                        cursor.advance(seq, ctx);
                    }
                }
                Ok(Event::Incoming(Packet::PubComp(comp))) => {
                    if let Some(seq) = tracker.on_ack(comp.pkid) {
                        cursor.advance(seq, ctx);
                    }
                }
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    // A packet id collision would make acks ambiguous: start a clean
                    // connection instead; everything unconfirmed is sent again.
                    return Ok(SessionEnd::Failed { kind: Failure::ProtocolError, detail: format!("packet id {pkid} still awaiting its acknowledgement"), connected_for: connected_at.map(|t| t.elapsed()) });
                }
                Ok(_) => {}
                Err(err) => {
                    let (kind, detail) = diagnose(&err, &cfg.connection, broker).await;
                    let connected_for = connected_at.map(|t| t.elapsed());
                    return Ok(SessionEnd::Failed { kind, detail, connected_for });
                }
            },
            // The clock, not the tick's own instant: after the branch was off (nothing
            // waiting), the first tick reports when it was due, possibly minutes ago.
            _ = ack_check.tick(), if connected && tracker.outstanding() > 0 => {
                if let Some(quiet) = ack_watch.stalled(tracker.confirmations(), std::time::Instant::now()) {
                    let detail = format!(
                        "no acknowledgement for {}s while {} publishes waited for one (the broker keeps the connection but confirms nothing; [mqtt] ack_timeout)",
                        quiet.as_secs(),
                        tracker.outstanding()
                    );
                    return Ok(SessionEnd::Failed { kind: Failure::Timeout, detail, connected_for: connected_at.map(|t| t.elapsed()) });
                }
            }
            () = ctx.finish.cancelled(), if !finishing => finishing = true,
            // Err: the ingest stage ended; `finish` follows.
            changed = committed.changed(), if ingest_open && connected && buffered.is_empty() && tracker.outstanding() < window => {
                ingest_open = changed.is_ok();
            }
            // Only while a cursor move waits to be stored: an idle sink sleeps.
            _ = tick.tick(), if cursor.unpersisted() => cursor.persist(ctx),
        }
    }
}

/// Reads on until `buffered` holds every row of the packet `first` opens (a packet's rows are
/// consecutive and committed together, so the rows read are all there is when the last has
/// its time and nothing follows).
fn fill_packet(
    buffered: &mut VecDeque<StoredReading>,
    first: &StoredReading,
    window: usize,
    ctx: &SinkContext,
) -> Result<(), SinkError> {
    loop {
        let last = buffered.back().unwrap_or(first);
        if last.ts_ns != first.ts_ns {
            return Ok(());
        }
        let more = ctx.outbox.read_after(last.seq, window)?;
        if more.is_empty() {
            return Ok(());
        }
        buffered.extend(more);
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
