//! Packet events: one JSON message per packet, the stable interface between an edge gateway
//! and whatever consumes its data centrally (a `kind = "mqtt"` ingest gateway, Node-RED, Home
//! Assistant, Telegraf's `json_v2`). Both directions live here, so the two cannot drift;
//! `docs/API.md` documents the schema. Pure: no I/O.
//!
//! ```json
//! {"gateway":"edge-1","site":"plant-a","received":"2026-11-29T14:05:00.123456789Z",
//!  "received_ns":1796047500123456789,
//!  "readings":[{"node":"node1","metric":"temperature","unit":"celsius","value":27.6}]}
//! ```
//!
//! `value` is the number exactly as the device wrote it (a JSON number token, never
//! reformatted); `unit` is absent for counters; `site` is absent when not configured.
//! `received_ns` is authoritative: a consumer that writes it as the point's time rewrites the
//! same point when a message is delivered twice (idempotent).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{known_unit, number_text};
use crate::reading::{CompactString, Reading};

/// Most readings one event may carry, read back (a packet of the firmware has 7 to 9).
pub const MAX_READINGS: usize = 10_000;
/// Readings per event sent: a bigger packet goes out as several events with the same
/// receive time (a few hundred KB each at most, whatever the names' lengths).
pub const READINGS_PER_EVENT: usize = 1_000;

#[derive(Serialize)]
struct EventOut<'a> {
    gateway: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    received: String,
    received_ns: i64,
    readings: Vec<ReadingOut<'a>>,
}

#[derive(Serialize)]
struct ReadingOut<'a> {
    node: &'a str,
    metric: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    value: ValueOut<'a>,
}

/// A number token as written, or (a value that is not a JSON number) its text.
#[derive(Serialize)]
#[serde(untagged)]
enum ValueOut<'a> {
    Number(&'a RawValue),
    Text(&'a str),
}

/// One reading of an event to send: plain values, however the sender holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventReading<'a> {
    /// Node name.
    pub node: &'a str,
    /// Metric name.
    pub metric: &'a str,
    /// Unit tag, if any.
    pub unit: Option<&'a str>,
    /// The value text as the device wrote it.
    pub value: &'a str,
}

/// The event of one packet: `readings` all share its receive time `received_ns`.
pub fn encode(
    gateway: &str,
    site: Option<&str>,
    received_ns: i64,
    readings: &[EventReading<'_>],
) -> Vec<u8> {
    let raws: Vec<Option<Box<RawValue>>> = readings
        .iter()
        .map(|r| {
            number_text(r.value)
                .ok()
                .and_then(|n| RawValue::from_string(n.to_string()).ok())
        })
        .collect();
    let event = EventOut {
        gateway,
        site,
        received: rfc3339_ns(received_ns),
        received_ns,
        readings: readings
            .iter()
            .zip(&raws)
            .map(|(r, raw)| ReadingOut {
                node: r.node,
                metric: r.metric,
                unit: r.unit,
                value: match raw {
                    Some(raw) => ValueOut::Number(raw),
                    None => ValueOut::Text(r.value),
                },
            })
            .collect(),
    };
    // Serializing strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&event).unwrap_or_default()
}

/// `ns` since the epoch as RFC 3339 UTC with nanoseconds.
fn rfc3339_ns(ns: i64) -> String {
    let t = match u64::try_from(ns) {
        Ok(ns) => SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    #[serde(borrow)]
    gateway: Option<&'a str>,
    #[serde(borrow)]
    site: Option<&'a str>,
    #[serde(rename = "received")]
    _received: Option<&'a str>,
    received_ns: i64,
    #[serde(borrow)]
    readings: Vec<ReadingIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingIn<'a> {
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    metric: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    unit: Option<&'a str>,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// A packet event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketEvent {
    /// The edge gateway's id, when it said.
    pub gateway: Option<String>,
    /// Its site, when configured.
    pub site: Option<String>,
    /// The edge gateway's receive time, ns since the epoch.
    pub received_ns: i64,
    /// The readings, as the edge stored them.
    pub readings: Vec<Reading>,
}

/// Reads an event, refusing anything the schema does not allow, with the reason.
pub fn decode(payload: &[u8]) -> Result<PacketEvent, String> {
    let event: EventIn =
        serde_json::from_slice(payload).map_err(|e| format!("not a packet event: {e}"))?;
    if event.readings.is_empty() {
        return Err("a packet event without readings".to_string());
    }
    if event.readings.len() > MAX_READINGS {
        return Err(format!(
            "{} readings in one event; at most {MAX_READINGS}",
            event.readings.len()
        ));
    }
    if event.received_ns <= 0 {
        return Err(format!(
            "received_ns {} is not a time after 1970",
            event.received_ns
        ));
    }
    let readings = event
        .readings
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |what: String| format!("reading {i}: {what}");
            if r.node.is_empty() || r.metric.is_empty() {
                return Err(at("node and metric must not be empty".to_string()));
            }
            let unit = match r.unit {
                None => None,
                Some(u) => Some(known_unit(u).ok_or_else(|| at(format!("unknown unit {u:?}")))?),
            };
            let value = number_text(r.value.get()).map_err(|e| at(format!("value: {e}")))?;
            Ok(Reading {
                node: CompactString::from(r.node.as_ref()),
                metric: CompactString::from(r.metric.as_ref()),
                unit,
                value: CompactString::new(value),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PacketEvent {
        gateway: event.gateway.map(str::to_string),
        site: event.site.map(str::to_string),
        received_ns: event.received_ns,
        readings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading<'a>(
        node: &'a str,
        metric: &'a str,
        unit: Option<&'a str>,
        value: &'a str,
    ) -> EventReading<'a> {
        EventReading {
            node,
            metric,
            unit,
            value,
        }
    }

    #[test]
    fn an_event_carries_every_reading_exactly_and_reads_back_the_same() {
        let refs = [
            reading("node1", "temperature", Some("celsius"), "27.60"),
            reading("signal", "rssi", Some("dbm"), "-39"),
            reading("stats", "packets_received", None, "1e3"),
        ];
        let ts = 1_796_047_500_123_456_789;
        let json = encode("edge-1", Some("plant a"), ts, &refs);
        let text = String::from_utf8(json.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"gateway":"edge-1","site":"plant a","received":"2026-11-30T14:05:00.123456789Z","received_ns":1796047500123456789,"readings":[{"node":"node1","metric":"temperature","unit":"celsius","value":27.60},{"node":"signal","metric":"rssi","unit":"dbm","value":-39},{"node":"stats","metric":"packets_received","value":1e3}]}"#
        );
        let back = decode(&json).unwrap();
        assert_eq!(back.gateway.as_deref(), Some("edge-1"));
        assert_eq!(back.site.as_deref(), Some("plant a"));
        assert_eq!(back.received_ns, ts);
        let values: Vec<(&str, Option<&str>, &str)> = back
            .readings
            .iter()
            .map(|r| (r.metric.as_str(), r.unit, r.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("temperature", Some("celsius"), "27.60"),
                ("rssi", Some("dbm"), "-39"),
                ("packets_received", None, "1e3")
            ]
        );
        let no_site = String::from_utf8(encode("e", None, ts, &refs[..1])).unwrap();
        assert!(!no_site.contains("site"), "{no_site}");
    }

    #[test]
    fn events_outside_the_schema_are_refused_with_the_reason() {
        let ok = r#"{"received_ns":5,"readings":[{"node":"n","metric":"m","value":1}]}"#;
        assert!(decode(ok.as_bytes()).is_ok());
        for (bad, why) in [
            ("{", "not a packet event"),
            (r#"{"received_ns":5,"readings":[]}"#, "without readings"),
            (
                r#"{"readings":[{"node":"n","metric":"m","value":1}]}"#,
                "received_ns",
            ),
            (
                r#"{"received_ns":-1,"readings":[{"node":"n","metric":"m","value":1}]}"#,
                "after 1970",
            ),
            (
                r#"{"received_ns":5,"readings":[{"node":"n","metric":"m","value":"1"}]}"#,
                "reading 0: value",
            ),
            (
                r#"{"received_ns":5,"readings":[{"node":"","metric":"m","value":1}]}"#,
                "must not be empty",
            ),
            (
                r#"{"received_ns":5,"readings":[{"node":"n","metric":"m","unit":"furlong","value":1}]}"#,
                "unknown unit",
            ),
            (
                r#"{"received_ns":5,"readings":[{"node":"n","metric":"m","value":1e999}]}"#,
                "reading 0: value",
            ),
            (
                r#"{"received_ns":5,"extra":1,"readings":[{"node":"n","metric":"m","value":1}]}"#,
                "unknown field",
            ),
        ] {
            let e = decode(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
