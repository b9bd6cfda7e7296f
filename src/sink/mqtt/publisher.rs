//! What the MQTT sink publishes, in which order, and how far its cursor may move: a state
//! machine with no I/O, in the way of [`super::acks`]. Committed rows and broker events go in;
//! messages to hand to the client, reads to make and cursor moves come out. The session task
//! around it (`super::session`) only selects, reads the outbox and writes to the client.
//!
//! Its ordering rules:
//! - Rows go out in seq order, one message per reading on `<prefix>/<node>/<metric>`;
//!   gateway events are not MQTT messages: they are passed over in order (the cursor moves
//!   past them once everything before them is confirmed).
//! - With packet events on, a packet's event goes before its first reading and carries every
//!   reading of the packet (read on until the packet is whole; a packet's rows are committed
//!   together). The event shares its first reading's seq, so the cursor never passes an
//!   unconfirmed event, and after a reconnect a packet whose event was confirmed is not
//!   announced again (the session starts with the receive time of the row at the cursor).
//! - With Home Assistant discovery on, a series is announced once per connection, before its
//!   first reading, and again when Home Assistant says it is `online` (the newest values'
//!   series, a window of them at once; the others before their next reading).
//! - `online` (retained) goes first on every connection.
//! - A row is planned only while fewer than `window` publishes await their acknowledgement;
//!   its messages (announcement, event parts, reading) then all go. A message the client could
//!   not take is handed over again first, never dropped, and the cursor stays below its row
//!   meanwhile: every message of a row is expected by the tracker when it is made.
//! - Rows are read after the last row read, once the committed seq says there is more than the
//!   last read that took everything saw: a commit notice that comes early costs a read, never
//!   a row.
//! - A new connection is a new publisher, started from the cursor: everything after it is
//!   published again (at-least-once).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use super::acks::{AckTracker, AckWatch};
use super::homeassistant::{command_entities, discovery, ha_status_topic};
use crate::config::{HomeAssistantConfig, PacketEvents};
use crate::decode::packet_event::{self, EventReading};
use crate::live_view::MAX_SERIES;
use crate::mqtt::topic::{reading_topic, status_topic};
use crate::outbox::{Seq, StoredReading};
use crate::reading::CompactString;

/// The publishing settings of `[mqtt]` (and `[homeassistant]`, `[gateway]`).
#[derive(Debug, Clone)]
pub(super) struct Rules {
    /// `[mqtt] topic_prefix`.
    pub prefix: String,
    /// Readings' (and packet events') QoS.
    pub qos: QoS,
    /// Retain reading messages.
    pub retain: bool,
    /// Publishes awaiting acknowledgement at most.
    pub window: usize,
    /// `[mqtt] ack_timeout`.
    pub ack_timeout: Duration,
    /// Home Assistant discovery, when on.
    pub homeassistant: Option<HomeAssistantConfig>,
    /// Packet events, when on.
    pub packet_events: Option<PacketEvents>,
}

/// A message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload: Vec<u8>,
    /// What it is, for the bookkeeping once the client took it.
    pub kind: Kind,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `online`.
    Status,
    /// A Home Assistant discovery config.
    Discovery,
    /// (A part of) the event of the packet that opens at this seq.
    PacketEvent(Seq),
    /// The reading at this seq, received at `ts_ns`.
    Reading { seq: Seq, ts_ns: i64 },
}

impl Kind {
    /// The seq whose confirmation this message is part of (`None`: not a row's).
    fn seq(self) -> Option<Seq> {
        match self {
            Kind::Status | Kind::Discovery => None,
            Kind::PacketEvent(seq) | Kind::Reading { seq, .. } => Some(seq),
        }
    }
}

/// What the session does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Read up to `limit` committed rows after `after` and hand them to
    /// [`Publisher::on_rows`].
    Read { after: Seq, limit: usize },
    /// Hand this to the client, then tell [`Publisher::on_handed`] (taken) or
    /// [`Publisher::on_refused`] (its queue is full).
    Publish(Message),
    /// Everything up to this seq is confirmed: move the cursor.
    Confirmed(Seq),
    /// Nothing until a broker event or a commit.
    Wait,
}

/// One connection's publishing state.
#[derive(Debug)]
pub(super) struct Publisher {
    rules: Rules,
    tracker: AckTracker,
    watch: AckWatch,
    /// Rows read, not yet turned into messages.
    buffered: VecDeque<StoredReading>,
    /// Messages made, not yet taken by the client (in order).
    pending: VecDeque<Message>,
    /// The last row read (the cursor before the first read): the next read is after it.
    read_upto: Seq,
    /// The last read returned less than it asked for, so it took every row committed then:
    /// the highest committed seq known at that read. `None`: the last read was full.
    caught_up_at: Option<Seq>,
    /// The highest committed seq known.
    committed: Seq,
    /// The receive time of the last reading made into a message (its packet's event, when
    /// events are on, went before it).
    packet_ts: Option<i64>,
    /// Series whose discovery config went out on this connection.
    announced: HashSet<(CompactString, CompactString)>,
}

impl Publisher {
    /// A publisher for a new connection, starting after `cursor`. `packet_ts`: the receive
    /// time of the row at the cursor (its packet's event was confirmed with it).
    pub fn new(rules: Rules, cursor: Seq, packet_ts: Option<i64>) -> Self {
        Publisher {
            tracker: AckTracker::new(cursor, rules.qos == QoS::AtMostOnce),
            watch: AckWatch::new(rules.ack_timeout),
            rules,
            buffered: VecDeque::new(),
            pending: VecDeque::new(),
            read_upto: cursor,
            caught_up_at: None,
            committed: cursor,
            packet_ts,
            announced: HashSet::new(),
        }
    }

    /// The broker accepted the connection: `online` goes first. Returns the topic to
    /// subscribe to (Home Assistant's status, when discovery is on).
    pub fn on_connected(&mut self) -> Option<String> {
        self.pending.push_front(Message {
            topic: status_topic(&self.rules.prefix),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: b"online".to_vec(),
            kind: Kind::Status,
        });
        self.rules.homeassistant.as_ref().map(ha_status_topic)
    }

    /// Rows are committed up to `seq`: one more read is due when that is more than the last
    /// read that took everything knew of. (A stale or early `seq` costs a read, never a row.)
    pub fn on_committed(&mut self, seq: Seq) {
        self.committed = self.committed.max(seq);
    }

    /// What to do next.
    pub fn next(&mut self) -> Next {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Next::Publish(message);
            }
            if self.tracker.outstanding() >= self.rules.window {
                return Next::Wait;
            }
            let Some(first) = self.buffered.front() else {
                if self.caught_up_at.is_some_and(|seen| self.committed <= seen) {
                    return Next::Wait;
                }
                return self.read(self.read_upto);
            };
            if first.is_event() {
                let seq = first.seq;
                self.buffered.pop_front();
                if let Some(safe) = self.tracker.on_skipped(seq) {
                    return Next::Confirmed(safe);
                }
                continue;
            }
            if self.opens_packet(first) && !self.packet_whole() {
                let after = self.buffered.back().map_or(self.read_upto, |r| r.seq);
                return self.read(after);
            }
            let Some(first) = self.buffered.pop_front() else {
                continue;
            };
            self.make_messages(first);
        }
    }

    /// The rows read for [`Next::Read`] with `limit`.
    pub fn on_rows(&mut self, rows: Vec<StoredReading>, limit: usize) {
        self.caught_up_at = (rows.len() < limit).then_some(self.committed);
        if let Some(last) = rows.last() {
            self.read_upto = self.read_upto.max(last.seq);
        }
        self.buffered.extend(rows);
    }

    /// The client took `kind`'s message (its seq was expected by the tracker when the message
    /// was made, so the cursor cannot pass a row one of whose messages is still here).
    /// Returns the reading's (seq, receive time) when it was one: it is on its way.
    pub fn on_handed(&mut self, kind: Kind) -> Option<(Seq, i64)> {
        self.tracker.on_queued(kind.seq());
        match kind {
            Kind::Reading { seq, ts_ns } => Some((seq, ts_ns)),
            _ => None,
        }
    }

    /// The client could not take `message` (its queue is full): it goes first next time.
    pub fn on_refused(&mut self, message: Message) {
        self.pending.push_front(message);
    }

    /// The client wrote the oldest publish it took with `pkid`. Returns the new cursor when
    /// it moved (QoS 0).
    pub fn on_sent(&mut self, pkid: u16) -> Option<Seq> {
        let safe = self.tracker.on_sent(pkid);
        self.rest_when_nothing_waits();
        safe
    }

    /// The broker acknowledged `pkid` (PUBACK or PUBCOMP). Returns the new cursor when it
    /// moved.
    pub fn on_ack(&mut self, pkid: u16) -> Option<Seq> {
        let safe = self.tracker.on_ack(pkid);
        self.rest_when_nothing_waits();
        safe
    }

    /// A message arrived on a subscription. True when Home Assistant came `online`: every
    /// known series is to be announced again ([`Publisher::announce_again`]).
    pub fn on_incoming(&mut self, topic: &str, payload: &[u8]) -> bool {
        let ha_online = self
            .rules
            .homeassistant
            .as_ref()
            .is_some_and(|ha| topic == ha_status_topic(ha) && payload == b"online");
        if ha_online {
            self.announced.clear();
        }
        ha_online
    }

    /// Announces the series of `newest` (the newest value of each) again, at most a window
    /// of them now: readings already published are not sent again, and a series left out is
    /// announced before its next reading.
    pub fn announce_again(&mut self, newest: &[StoredReading]) {
        for r in newest.iter().take(self.rules.window) {
            self.announce(r);
        }
    }

    /// How long nothing was confirmed while publishes waited, once that is the ack timeout
    /// or more: the broker keeps the connection but confirms nothing.
    pub fn stalled(&mut self, now: Instant) -> Option<Duration> {
        if self.tracker.outstanding() == 0 {
            self.watch.rest();
            return None;
        }
        self.watch.stalled(self.tracker.confirmations(), now)
    }

    /// Publishes taken by the client and not yet confirmed.
    pub fn outstanding(&self) -> usize {
        self.tracker.outstanding()
    }

    /// Room for more: no row or message waits and the window is not full (a commit would
    /// be published at once).
    pub fn wants_rows(&self) -> bool {
        self.buffered.is_empty()
            && self.pending.is_empty()
            && self.tracker.outstanding() < self.rules.window
    }

    /// Nothing read, made or taken waits for anything.
    pub fn idle(&self) -> bool {
        self.buffered.is_empty() && self.pending.is_empty() && self.tracker.outstanding() == 0
    }

    fn read(&self, after: Seq) -> Next {
        Next::Read {
            after,
            limit: self.rules.window,
        }
    }

    fn rest_when_nothing_waits(&mut self) {
        if self.tracker.outstanding() == 0 {
            self.watch.rest();
        }
    }

    /// Whether `r` opens a packet whose event is still to go.
    fn opens_packet(&self, r: &StoredReading) -> bool {
        self.rules.packet_events.is_some() && self.packet_ts != Some(r.ts_ns)
    }

    /// Whether every row of the packet the first buffered row opens was read: a row of
    /// another time follows, or the last read took everything committed.
    fn packet_whole(&self) -> bool {
        let Some(first) = self.buffered.front() else {
            return true;
        };
        self.caught_up_at.is_some() || self.buffered.iter().any(|r| r.ts_ns != first.ts_ns)
    }

    /// The messages of one reading: its series' announcement, its packet's event and the
    /// reading itself.
    fn make_messages(&mut self, r: StoredReading) {
        if self.rules.homeassistant.is_some() {
            self.announce(&r);
        }
        if self.opens_packet(&r) {
            self.packet_event(&r);
        }
        self.packet_ts = Some(r.ts_ns);
        self.tracker.expect(r.seq);
        self.pending.push_back(Message {
            topic: reading_topic(&self.rules.prefix, &r.node, &r.metric),
            qos: self.rules.qos,
            retain: self.rules.retain,
            payload: r.value.as_bytes().to_vec(),
            kind: Kind::Reading {
                seq: r.seq,
                ts_ns: r.ts_ns,
            },
        });
    }

    /// Queues `r`'s series' discovery config unless it went out on this connection.
    /// Bounded like the newest-value map: a firmware that invents keys does not grow this
    /// set (or Home Assistant) without limit.
    fn announce(&mut self, r: &StoredReading) {
        let Some(ha) = &self.rules.homeassistant else {
            return;
        };
        let series = (r.node.clone(), r.metric.clone());
        if self.announced.len() >= MAX_SERIES || self.announced.contains(&series) {
            return;
        }
        let (topic, payload) = discovery(
            ha,
            &self.rules.prefix,
            &r.node,
            &r.metric,
            r.unit.as_deref(),
        );
        self.pending.push_back(Message {
            topic,
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: payload.into_bytes(),
            kind: Kind::Discovery,
        });
        self.announced.insert(series);
        // A node that takes commands gets its controls once, with its first series.
        let controls = (r.node.clone(), CompactString::const_new(""));
        if ha.command_nodes.contains(&r.node) && !self.announced.contains(&controls) {
            for (topic, payload) in command_entities(ha, &self.rules.prefix, &r.node) {
                self.pending.push_back(Message {
                    topic,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    payload: payload.into_bytes(),
                    kind: Kind::Discovery,
                });
            }
            self.announced.insert(controls);
        }
    }

    /// Queues the event of the packet `first` opens: `first` and the buffered rows of the same
    /// time, in events of at most [`packet_event::READINGS_PER_EVENT`] readings (the same
    /// time, the same seq).
    fn packet_event(&mut self, first: &StoredReading) {
        let Some(pe) = &self.rules.packet_events else {
            return;
        };
        let readings: Vec<EventReading<'_>> = std::iter::once(first)
            .chain(
                self.buffered
                    .iter()
                    .take_while(|b| b.ts_ns == first.ts_ns && !b.is_event()),
            )
            .map(StoredReading::event_reading)
            .collect();
        for chunk in readings.chunks(packet_event::READINGS_PER_EVENT) {
            let payload =
                packet_event::encode(&pe.gateway_id, pe.site.as_deref(), first.ts_ns, chunk);
            self.tracker.expect(first.seq);
            self.pending.push_back(Message {
                topic: pe.topic.clone(),
                qos: self.rules.qos,
                retain: false,
                payload,
                kind: Kind::PacketEvent(first.seq),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: i64 = 1_000;
    const T2: i64 = 2_000;

    fn row(seq: i64, ts_ns: i64, metric: &str, value: &str) -> StoredReading {
        StoredReading {
            seq: Seq::new(seq),
            ts_ns,
            node: "node1".into(),
            metric: metric.into(),
            unit: Some("celsius".into()),
            value: value.into(),
            origin: None,
        }
    }

    fn event_row(seq: i64, ts_ns: i64) -> StoredReading {
        StoredReading {
            seq: Seq::new(seq),
            ts_ns,
            node: "gateway".into(),
            metric: "gateway_started".into(),
            unit: Some(crate::outbox::EVENT_UNIT.into()),
            value: "started".into(),
            origin: None,
        }
    }

    fn rules(window: usize) -> Rules {
        Rules {
            prefix: "iiot".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            window,
            ack_timeout: Duration::from_secs(2),
            homeassistant: None,
            packet_events: None,
        }
    }

    fn with_events(mut r: Rules) -> Rules {
        r.packet_events = Some(PacketEvents {
            topic: "iiot/gateway/edge/packets".into(),
            gateway_id: "edge".into(),
            site: None,
        });
        r
    }

    fn with_ha(mut r: Rules) -> Rules {
        r.homeassistant = Some(HomeAssistantConfig {
            discovery_prefix: "homeassistant".into(),
            gateway_id: "gw".into(),
            command_nodes: Default::default(),
        });
        r
    }

    /// A session's outbox and client, for the publisher alone: serves reads from `rows`
    /// (committed up to `committed`), lets the client take everything, and records what was
    /// handed over and where the cursor went.
    struct Session {
        publisher: Publisher,
        rows: Vec<StoredReading>,
        committed: Seq,
        /// What the client took: (topic, payload as text, kind).
        sent: Vec<(String, String, Kind)>,
        cursor: Seq,
        reads: usize,
    }

    impl Session {
        fn new(
            rules: Rules,
            rows: Vec<StoredReading>,
            cursor: i64,
            packet_ts: Option<i64>,
        ) -> Self {
            let committed = rows.last().map_or(Seq::START, |r| r.seq);
            let mut publisher = Publisher::new(rules, Seq::new(cursor), packet_ts);
            publisher.on_committed(committed);
            Session {
                publisher,
                rows,
                committed,
                sent: Vec::new(),
                cursor: Seq::new(cursor),
                reads: 0,
            }
        }

        /// Runs the publisher until it waits.
        fn pump(&mut self) {
            loop {
                match self.publisher.next() {
                    Next::Read { after, limit } => {
                        self.reads += 1;
                        let rows: Vec<StoredReading> = self
                            .rows
                            .iter()
                            .filter(|r| r.seq > after && r.seq <= self.committed)
                            .take(limit)
                            .cloned()
                            .collect();
                        self.publisher.on_rows(rows, limit);
                    }
                    Next::Publish(m) => {
                        let text = String::from_utf8(m.payload.clone()).unwrap();
                        self.publisher.on_handed(m.kind);
                        self.sent.push((m.topic, text, m.kind));
                    }
                    Next::Confirmed(seq) => self.cursor = self.cursor.max(seq),
                    Next::Wait => return,
                }
            }
        }

        /// The broker acknowledges the publishes with these packet ids (in the order the
        /// client wrote them: pkid = position in `sent`, from 1).
        fn write_and_ack(&mut self, pkids: impl IntoIterator<Item = u16>) {
            for pkid in pkids {
                if let Some(seq) = self.publisher.on_sent(pkid) {
                    self.cursor = self.cursor.max(seq);
                }
            }
        }

        fn ack(&mut self, pkids: impl IntoIterator<Item = u16>) {
            for pkid in pkids {
                if let Some(seq) = self.publisher.on_ack(pkid) {
                    self.cursor = self.cursor.max(seq);
                }
            }
        }

        fn topics(&self) -> Vec<&str> {
            self.sent.iter().map(|(t, _, _)| t.as_str()).collect()
        }
    }

    #[test]
    fn a_packets_event_goes_before_its_first_reading_and_carries_every_reading() {
        let rows = vec![
            row(1, T1, "temperature", "27.6"),
            row(2, T1, "humidity", "58.9"),
            row(3, T2, "temperature", "27.7"),
        ];
        let mut s = Session::new(with_events(rules(16)), rows, 0, None);
        s.pump();
        assert_eq!(
            s.topics(),
            [
                "iiot/gateway/edge/packets",
                "iiot/node1/temperature",
                "iiot/node1/humidity",
                "iiot/gateway/edge/packets",
                "iiot/node1/temperature",
            ]
        );
        let first_event = &s.sent[0].1;
        assert!(
            first_event.contains("\"value\":27.6") && first_event.contains("\"value\":58.9"),
            "{first_event}"
        );
        assert!(!first_event.contains("27.7"), "{first_event}");
        assert_eq!(s.sent[0].2, Kind::PacketEvent(Seq::new(1)));
        assert_eq!(s.sent[3].2, Kind::PacketEvent(Seq::new(3)));
    }

    #[test]
    fn a_packet_read_in_parts_waits_until_it_is_whole_before_its_event_goes() {
        // A window of 2: the packet of 3 readings takes two reads; its event must carry all 3.
        let rows = vec![
            row(1, T1, "a", "1"),
            row(2, T1, "b", "2"),
            row(3, T1, "c", "3"),
        ];
        let mut s = Session::new(with_events(rules(2)), rows, 0, None);
        s.pump();
        assert_eq!(s.sent[0].0, "iiot/gateway/edge/packets");
        assert!(s.sent[0].1.contains("\"metric\":\"c\""), "{}", s.sent[0].1);
        assert_eq!(s.reads, 2);
        // The window holds 2 publishes: the event and the first reading, then it waits.
        assert_eq!(s.sent.len(), 2);
        assert_eq!(s.publisher.next(), Next::Wait);
        s.write_and_ack([1, 2]);
        s.ack([1]);
        assert_eq!(
            s.cursor,
            Seq::START,
            "the packet's first seq is not confirmed yet"
        );
        s.ack([2]);
        assert_eq!(
            s.cursor,
            Seq::new(1),
            "event and first reading both confirmed"
        );
        s.pump();
        assert_eq!(s.topics()[2..], ["iiot/node1/b", "iiot/node1/c"]);
    }

    #[test]
    fn a_reading_refused_after_its_packets_event_went_holds_the_cursor() {
        let rows = vec![row(5, T1, "a", "1")];
        let mut p = Publisher::new(with_events(rules(16)), Seq::new(4), None);
        p.on_committed(Seq::new(5));
        let Next::Read { limit, .. } = p.next() else {
            panic!("reads first")
        };
        p.on_rows(rows, limit);
        let Next::Publish(event) = p.next() else {
            panic!("the event")
        };
        p.on_handed(event.kind);
        let Next::Publish(reading) = p.next() else {
            panic!("the reading")
        };
        // The client's queue is full: the reading waits; the broker confirms the event.
        p.on_refused(reading);
        assert_eq!(p.on_sent(1), None);
        assert_eq!(p.on_ack(1), None, "reading 5 is not even handed over");
        let Next::Publish(reading) = p.next() else {
            panic!("the reading again")
        };
        p.on_handed(reading.kind);
        assert_eq!(p.on_sent(2), None);
        assert_eq!(p.on_ack(2), Some(Seq::new(5)));
    }

    #[test]
    fn a_watch_ahead_of_what_is_readable_delays_a_row_but_never_skips_it() {
        // The watch says 3 while only rows 1 and 2 are readable: the short read takes those;
        // row 3 is read after row 2 with the next commit, not passed over.
        let rows = vec![row(1, T1, "a", "1"), row(2, T2, "a", "2")];
        let mut s = Session::new(rules(16), rows, 0, None);
        s.publisher.on_committed(Seq::new(3));
        s.pump();
        assert_eq!(s.topics().len(), 2);
        s.rows.push(row(3, 3_000, "a", "3"));
        s.rows.push(row(4, 4_000, "a", "4"));
        s.committed = Seq::new(4);
        s.publisher.on_committed(Seq::new(4));
        s.pump();
        let values: Vec<&str> = s.sent.iter().map(|(_, v, _)| v.as_str()).collect();
        assert_eq!(values, ["1", "2", "3", "4"]);
    }

    #[test]
    fn the_cursor_never_passes_an_unconfirmed_packet_event() {
        let rows = vec![row(1, T1, "a", "1"), row(2, T1, "b", "2")];
        let mut s = Session::new(with_events(rules(16)), rows, 0, None);
        s.pump();
        // pkid 1 = the event, 2 and 3 = the readings.
        s.write_and_ack([1, 2, 3]);
        s.ack([2, 3]);
        assert_eq!(s.cursor, Seq::START);
        s.ack([1]);
        assert_eq!(s.cursor, Seq::new(2));
    }

    #[test]
    fn after_a_reconnect_everything_after_the_cursor_goes_again_and_a_confirmed_event_does_not() {
        let rows = vec![
            row(1, T1, "a", "1"),
            row(2, T1, "b", "2"),
            row(3, T2, "a", "3"),
        ];
        let mut s = Session::new(with_events(rules(16)), rows.clone(), 0, None);
        s.pump();
        s.write_and_ack(1..=5);
        // Only the first packet's event and first reading were confirmed: the connection dies.
        s.ack([1, 2]);
        assert_eq!(s.cursor, Seq::new(1));

        // The next connection starts from the cursor, with the time of the row there.
        let mut again = Session::new(with_events(rules(16)), rows, 1, Some(T1));
        again.pump();
        assert_eq!(
            again.topics(),
            ["iiot/node1/b", "iiot/gateway/edge/packets", "iiot/node1/a",],
            "row 2 again without its packet's event (confirmed), then packet T2 whole"
        );
        assert_eq!(
            again.sent[0].2,
            Kind::Reading {
                seq: Seq::new(2),
                ts_ns: T1
            }
        );
    }

    #[test]
    fn online_goes_first_on_every_connection() {
        let mut s = Session::new(with_ha(rules(16)), vec![row(1, T1, "a", "1")], 0, None);
        assert_eq!(
            s.publisher.on_connected().as_deref(),
            Some("homeassistant/status")
        );
        s.pump();
        assert_eq!(s.sent[0].0, "iiot/gateway/status");
        assert_eq!(s.sent[0].1, "online");
        assert_eq!(s.sent[0].2, Kind::Status);
        let mut plain = Session::new(rules(16), vec![], 0, None);
        assert_eq!(plain.publisher.on_connected(), None);
        plain.pump();
        assert_eq!(plain.topics(), ["iiot/gateway/status"]);
    }

    #[test]
    fn a_series_is_announced_once_per_connection_before_its_first_reading() {
        let rows = vec![
            row(1, T1, "temperature", "27.6"),
            row(2, T2, "temperature", "27.7"),
            row(3, T2, "humidity", "50"),
        ];
        let mut s = Session::new(with_ha(rules(16)), rows, 0, None);
        s.pump();
        let discovery_t = "homeassistant/sensor/gw_node1_temperature/config";
        let discovery_h = "homeassistant/sensor/gw_node1_humidity/config";
        assert_eq!(
            s.topics(),
            [
                discovery_t,
                "iiot/node1/temperature",
                "iiot/node1/temperature",
                discovery_h,
                "iiot/node1/humidity",
            ]
        );
        // Home Assistant restarts: every known series is announced again, once.
        assert!(!s.publisher.on_incoming("homeassistant/status", b"offline"));
        assert!(!s.publisher.on_incoming("other/topic", b"online"));
        assert!(s.publisher.on_incoming("homeassistant/status", b"online"));
        let newest = vec![
            row(2, T2, "temperature", "27.7"),
            row(3, T2, "humidity", "50"),
        ];
        s.publisher.announce_again(&newest);
        s.pump();
        assert_eq!(s.topics()[5..], [discovery_t, discovery_h]);
        assert_eq!(s.sent[5].2, Kind::Discovery);
        // A commit of a known series: no announcement.
        s.rows.push(row(4, 3_000, "temperature", "28"));
        s.committed = Seq::new(4);
        s.publisher.on_committed(Seq::new(4));
        s.pump();
        assert_eq!(s.topics()[7..], ["iiot/node1/temperature"]);
        // A new connection announces again.
        let mut next = Session::new(with_ha(rules(16)), s.rows.clone(), 3, None);
        next.pump();
        assert_eq!(next.topics(), [discovery_t, "iiot/node1/temperature"]);
    }

    #[test]
    fn gateway_events_are_passed_over_in_order() {
        let rows = vec![
            row(1, T1, "a", "1"),
            event_row(2, T1 + 1),
            row(3, T2, "a", "2"),
        ];
        let mut s = Session::new(rules(16), rows, 0, None);
        s.pump();
        assert_eq!(s.topics(), ["iiot/node1/a", "iiot/node1/a"]);
        assert_eq!(
            s.cursor,
            Seq::START,
            "row 1 is not confirmed: the event waits"
        );
        s.write_and_ack([1, 2]);
        s.ack([2]);
        assert_eq!(s.cursor, Seq::START);
        s.ack([1]);
        assert_eq!(s.cursor, Seq::new(3));
        // An event with nothing before it unconfirmed moves the cursor at once.
        let mut alone = Session::new(rules(16), vec![event_row(5, T1)], 4, None);
        alone.pump();
        assert!(alone.sent.is_empty());
        assert_eq!(alone.cursor, Seq::new(5));
    }

    #[test]
    fn the_window_bounds_what_awaits_acknowledgement_and_a_refused_message_goes_first() {
        let rows: Vec<StoredReading> = (1..=5).map(|n| row(n, n * 10, "a", "1")).collect();
        let mut p = Publisher::new(with_events(rules(2)), Seq::START, None);
        p.on_committed(Seq::new(5));
        let Next::Read { after, limit } = p.next() else {
            panic!("reads first")
        };
        assert_eq!((after, limit), (Seq::START, 2));
        p.on_rows(rows[..2].to_vec(), limit);
        let Next::Publish(event) = p.next() else {
            panic!("publishes row 1's packet event")
        };
        assert_eq!(event.kind, Kind::PacketEvent(Seq::new(1)));
        // The client's queue is full: the same message comes again, before row 1's reading.
        p.on_refused(event.clone());
        assert_eq!(p.next(), Next::Publish(event.clone()));
        p.on_handed(event.kind);
        let Next::Publish(reading) = p.next() else {
            panic!("publishes row 1")
        };
        assert_eq!(reading.topic, "iiot/node1/a");
        p.on_handed(reading.kind);
        assert_eq!(p.outstanding(), 2);
        assert_eq!(p.next(), Next::Wait, "the window is full");
        assert!(!p.wants_rows());
        assert_eq!(p.on_sent(1), None);
        assert_eq!(p.on_sent(2), None);
        assert_eq!(p.on_ack(2), None);
        assert_eq!(p.on_ack(1), Some(Seq::new(1)));
        // Row 2 opens a packet: more rows are read to know it is whole.
        assert_eq!(
            p.next(),
            Next::Read {
                after: Seq::new(2),
                limit: 2
            }
        );
        p.on_rows(rows[2..4].to_vec(), 2);
        assert!(matches!(p.next(), Next::Publish(m) if m.kind == Kind::PacketEvent(Seq::new(2))));
    }

    #[test]
    fn nothing_is_read_again_until_something_new_is_committed() {
        let mut s = Session::new(rules(16), vec![row(1, T1, "a", "1")], 0, None);
        s.pump();
        assert_eq!(s.reads, 1, "a short read took everything committed");
        s.pump();
        assert_eq!(s.reads, 1);
        s.rows.push(row(2, T2, "a", "2"));
        s.committed = Seq::new(2);
        s.publisher.on_committed(Seq::new(2));
        s.pump();
        assert_eq!(s.reads, 2);
        assert_eq!(s.topics(), ["iiot/node1/a", "iiot/node1/a"]);
    }

    #[test]
    fn a_broker_that_confirms_nothing_is_stalled_only_while_publishes_wait() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Session::new(rules(16), vec![row(1, T1, "a", "1")], 0, None);
        assert_eq!(s.publisher.stalled(at(0)), None, "nothing waits");
        s.pump();
        s.write_and_ack([1]);
        assert_eq!(s.publisher.stalled(at(10)), None, "the clock starts");
        assert_eq!(s.publisher.stalled(at(12)), Some(Duration::from_secs(2)));
        s.ack([1]);
        assert_eq!(s.publisher.stalled(at(100)), None);
        assert!(s.publisher.idle());
    }
}
