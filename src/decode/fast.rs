//! The one-pass decoder for the lines that need no explanation (nearly all of them): one
//! walk over the JSON, keys borrowed from the line, readings pushed as their values are
//! seen, no per-reading allocation. At the first thing it would have to reject or explain
//! (a duplicate key, a value that is not a number, an escaped key, a node that is not an
//! object, ...) it gives up, and the caller runs the decoder that explains. So it never
//! decides anything the explaining decoder would decide differently: a property test checks
//! that both agree on every line this one accepts.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess};
use serde::de::{Unexpected, Visitor};
use serde_json::value::RawValue;

use super::{
    number_text, remote_node_name, sanitize, sensor_metric, signal_metric, stats_metric, Key,
    Known, SIGNAL, STATS,
};
use crate::reading::{CompactString, Packet, Reading};

/// The packet of `json` when it decodes with nothing rejected; `None` otherwise (then the
/// explaining decoder decides).
pub(super) fn packet(json: &str, received_ns: i64) -> Option<Packet> {
    let mut packet = Packet {
        received_ns,
        origin: None,
        device_ts: None,
        link: None,
        // ~16 bytes of JSON per reading (`"t":27.55,` plus the node's share of its key).
        readings: Vec::with_capacity(json.len() / 16 + 1),
    };
    let mut fields = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Top {
        packet: &mut packet,
        fields: &mut fields,
    })
    .ok()?;
    (!packet.readings.is_empty()).then_some(packet)
}

/// The error that hands the line over to the explaining decoder; its text is never shown.
fn give_up<E: serde::de::Error>() -> E {
    E::custom("needs the explaining decoder")
}

/// Keys seen so far in one object: a short list, a set once the object is large (a line of
/// 10,000 nodes would otherwise cost 50 million comparisons).
struct Seen<'de> {
    few: Vec<&'de str>,
    many: Option<HashSet<&'de str>>,
}

impl<'de> Seen<'de> {
    const FEW: usize = 16;

    fn new() -> Self {
        Seen {
            few: Vec::new(),
            many: None,
        }
    }

    /// Records `key`; false when it was already there.
    fn insert(&mut self, key: &'de str) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::FEW {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// The next key of `map`, borrowed from the line; gives up on escaped keys.
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<&'de str>, A::Error> {
    match map.next_key::<Key<'de>>()? {
        None => Ok(None),
        Some(Key(Cow::Borrowed(key))) => Ok(Some(key)),
        Some(Key(Cow::Owned(_))) => Err(give_up()),
    }
}

/// The top-level object.
struct Top<'p, 'de> {
    packet: &'p mut Packet,
    /// Scratch list of one node's field keys, reused from node to node.
    fields: &'p mut Vec<&'de str>,
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Top { packet, fields } = self;
        let mut seen = Seen::new();
        while let Some(key) = next_key(&mut map)? {
            if !seen.insert(key) {
                return Err(give_up());
            }
            let (node, known): (CompactString, fn(&str) -> Known) = match key {
                "ts" => {
                    let raw: &RawValue = map.next_value()?;
                    packet.device_ts = Some(raw.get().parse().map_err(|_| give_up())?);
                    continue;
                }
                "id" => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                "sig" => (CompactString::const_new(SIGNAL), signal_metric),
                "sts" => (CompactString::const_new(STATS), stats_metric),
                _ => match remote_node_name(key) {
                    Some(node) => (node, sensor_metric),
                    None => {
                        let node = Node {
                            node: CompactString::default(),
                            known: |_| None,
                            packet: &mut *packet,
                            fields: &mut *fields,
                        };
                        map.next_value_seed(Other { key, node })?;
                        continue;
                    }
                },
            };
            map.next_value_seed(Node {
                node,
                known,
                packet: &mut *packet,
                fields: &mut *fields,
            })?;
        }
        Ok(())
    }
}

/// A node object: its fields become readings of `node`.
struct Node<'p, 'de> {
    node: CompactString,
    known: fn(&str) -> Known,
    packet: &'p mut Packet,
    fields: &'p mut Vec<&'de str>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a node object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.fields.clear();
        while let Some(field) = next_key(&mut map)? {
            // Node objects are small (a handful of sensors): a list scan is cheapest.
            if self.fields.contains(&field) {
                return Err(give_up());
            }
            self.fields.push(field);
            let raw: &RawValue = map.next_value()?;
            let (metric, unit) = match (self.known)(field) {
                Some((metric, unit)) => (CompactString::const_new(metric), unit),
                None => (sanitize(field).ok_or_else(give_up)?, None),
            };
            let value = number_text(raw.get()).map_err(|_| give_up())?;
            self.packet.readings.push(Reading {
                node: self.node.clone(),
                metric,
                unit,
                value: CompactString::new(value),
            });
        }
        Ok(())
    }
}

/// The value of an unknown top-level key: an object is a node of that (sanitized) name,
/// anything else is ignored.
struct Other<'p, 'de> {
    key: &'de str,
    node: Node<'p, 'de>,
}

impl<'de> DeserializeSeed<'de> for Other<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Other<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let node = sanitize(self.key).ok_or_else(give_up)?;
        Node { node, ..self.node }.visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        Err(E::invalid_type(Unexpected::Bytes(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_explained, find_marker, Decoded, MARKER};

    /// Every telemetry line of the recorded fixtures that decodes without a rejection takes the
    /// fast path, with the same packet.
    #[test]
    fn clean_fixture_lines_take_the_fast_path() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut fast = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
            for line in text.lines().filter(|l| !l.contains('\u{1b}')) {
                let Decoded::Packet {
                    packet: p,
                    rejected,
                } = decode_explained(line, 1)
                else {
                    continue;
                };
                if !rejected.is_empty() {
                    continue;
                }
                let json = match find_marker(line) {
                    Some(at) => &line[at + MARKER.len()..],
                    None => line.trim_start(),
                };
                assert_eq!(packet(json, 1).as_ref(), Some(&p), "{line}");
                fast += 1;
            }
        }
        assert!(
            fast >= 40,
            "only {fast} clean telemetry lines in the fixtures"
        );
    }

    #[test]
    fn anything_to_explain_is_left_to_the_explaining_decoder() {
        for json in [
            r#"{"n1":{"t":1,"t":2}}"#,
            r#"{"n1":{"t":"hot"}}"#,
            r#"{"n1":5}"#,
            r#"{"\u006e1":{"t":1}}"#,
            r#"{"n1":{"t":1},"n1":{"t":2}}"#,
            r#"{"ts":-1,"n1":{"t":1}}"#,
            r#"{"":{"t":1}}"#,
            r#"{"n2":{}}"#,
            r#"{"n1":{"t":1e999}}"#,
            r#"{"n1":{"t":1}"#,
        ] {
            assert_eq!(packet(json, 0), None, "{json}");
        }
    }

    #[test]
    fn a_line_of_many_nodes_finds_a_late_duplicate() {
        let mut json: String = (0..100).map(|i| format!(r#""n{i}":{{"t":1}},"#)).collect();
        json.insert(0, '{');
        let unique = format!("{}}}", json.trim_end_matches(','));
        assert_eq!(packet(&unique, 0).map(|p| p.readings.len()), Some(100));
        let duplicate = format!(r#"{json}"n3":{{"t":2}}}}"#);
        assert_eq!(packet(&duplicate, 0), None);
    }
}
