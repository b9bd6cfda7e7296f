//! Decoding one device line into a [`Packet`]: pure, no I/O, never panics.
//!
//! The Node 2 firmware writes one JSON object per received LoRa packet. Through `probe-rs`
//! it follows the marker `JSON sent via VCP: ` anywhere in a defmt log line, possibly with
//! ANSI colours, a defmt timestamp before it and a literal `\n` plus a location suffix after
//! it; on the virtual COM port it is a bare JSON line. Everything else is not telemetry and is
//! skipped without complaint.
//!
//! Mapping (docs/ARCHITECTURE.md, "Decoding"): `nK` → node `nodeK` (any K), with `t`/`h`/`g`/`p` →
//! temperature/humidity/gas_resistance/pressure and their units; `sig` → node `signal`
//! (rssi dBm, snr dB); `sts` → node `stats` (packets_received, crc_errors). Unknown keys
//! inside a node pass through under their own (sanitized) name with no unit; an unknown
//! top-level key holding an object passes through as a node of that name.
//!
//! Values keep the text the firmware wrote: they are validated as finite JSON numbers but
//! never converted, so `27.6` stays `27.6` in every sink.
//!
//! Names are sanitized here, once, so every sink sees the same names: any character outside
//! `[A-Za-z0-9_-]` becomes `_` (so `n1/+#` can never add MQTT topic levels or wildcards, and
//! spaces, commas, `=` or quotes never reach line protocol), names are cut to
//! [`MAX_NAME_LEN`] bytes, and an empty name rejects the field.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::reading::{CompactString, Packet, Reading, MAX_NAME_LEN};

mod fast;
pub mod packet_event;

/// The text the firmware logs right before the JSON.
pub const MARKER: &str = "JSON sent via VCP: ";

/// What one line turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Not telemetry (defmt logs, probe-rs progress, blank lines): skip silently.
    Skip,
    /// Telemetry. `rejected` names fields that were dropped and why (the rest flows).
    Packet {
        /// The readings that were accepted.
        packet: Packet,
        /// One reason per dropped field, e.g. `n1.t: expected a number, got "hot"`.
        rejected: Vec<String>,
    },
    /// The line carries telemetry (marker or bare JSON object) but none of it is usable.
    Invalid(InvalidLine),
}

/// Why a telemetry line is unusable: typed, so nobody classifies the decoder's prose.
/// `Display` gives the quarantine's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidLine {
    /// Not parseable as JSON; serde_json's words, with the position.
    InvalidJson(String),
    /// JSON, but not an object.
    NotObject,
    /// An object without any reading.
    NoReadings,
    /// Every field was refused; one reason per field.
    FieldsRejected(Vec<String>),
}

impl InvalidLine {
    /// Its class, for `iiot_decode_errors_total`.
    pub fn class(&self) -> ErrorClass {
        match self {
            InvalidLine::InvalidJson(_) => ErrorClass::InvalidJson,
            InvalidLine::NotObject => ErrorClass::NotObject,
            InvalidLine::NoReadings => ErrorClass::NoReadings,
            InvalidLine::FieldsRejected(_) => ErrorClass::FieldRejected,
        }
    }
}

impl std::fmt::Display for InvalidLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidLine::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            InvalidLine::NotObject => f.write_str("expected a JSON object"),
            InvalidLine::NoReadings => f.write_str("telemetry object without any reading"),
            InvalidLine::FieldsRejected(reasons) => f.write_str(&reasons.join("; ")),
        }
    }
}

/// The classes of unusable telemetry: the `reason` label of `iiot_decode_errors_total`.
/// Every line counted as invalid has exactly one class other than `FieldRejected`;
/// `FieldRejected` also counts the lines whose packet was committed without some fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not parseable as JSON.
    InvalidJson = 0,
    /// JSON, but not an object.
    NotObject = 1,
    /// An object without any reading.
    NoReadings = 2,
    /// Fields refused (non-numeric, out of range, bad names, duplicates).
    FieldRejected = 3,
    /// Longer than `[source] max_line_length` (the reader cut it).
    LineTooLong = 4,
    /// A piece of a record without its start (the reader's verdict).
    Fragment = 5,
    /// An MQTT message that is not a packet event (`kind = "mqtt"`, docs/API.md).
    BadPacketEvent = 6,
}

impl ErrorClass {
    /// Every class, in index order.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::InvalidJson,
        ErrorClass::NotObject,
        ErrorClass::NoReadings,
        ErrorClass::FieldRejected,
        ErrorClass::LineTooLong,
        ErrorClass::Fragment,
        ErrorClass::BadPacketEvent,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::NotObject => "not_object",
            ErrorClass::NoReadings => "no_readings",
            ErrorClass::FieldRejected => "field_rejected",
            ErrorClass::LineTooLong => "line_too_long",
            ErrorClass::Fragment => "fragment",
            ErrorClass::BadPacketEvent => "bad_packet_event",
        }
    }
}

/// Decodes one line received at `received_ns`.
pub fn decode(line: &str, received_ns: i64) -> Decoded {
    telemetry_json(line, |json| match fast::packet(json, received_ns) {
        Some(packet) => Decoded::Packet {
            packet,
            rejected: Vec::new(),
        },
        None => explained(json, received_ns),
    })
}

/// [`decode`] without its one-pass fast path: every line goes through the decoder that
/// explains. Exists so tests and the fuzzer can check that the two always agree.
#[doc(hidden)]
pub fn decode_explained(line: &str, received_ns: i64) -> Decoded {
    telemetry_json(line, |json| explained(json, received_ns))
}

/// Runs `decode_json` on the JSON text of a telemetry line; [`Decoded::Skip`] for any other
/// line.
fn telemetry_json(line: &str, decode_json: impl FnOnce(&str) -> Decoded) -> Decoded {
    let cleaned;
    let line = if line.contains('\u{1b}') {
        cleaned = strip_ansi(line);
        cleaned.as_str()
    } else {
        line
    };
    let json = match find_marker(line) {
        Some(at) => &line[at + MARKER.len()..],
        None => {
            let trimmed = line.trim_start();
            if !trimmed.starts_with('{') {
                return Decoded::Skip;
            }
            trimmed
        }
    };
    decode_json(json)
}

/// The decoder that explains itself: every dropped field gets a reason. It parses each node
/// object twice (once as a raw value, once as an object), which is fine for the rare line
/// the one-pass [`fast`] decoder hands over: every line with something to reject.
fn explained(json: &str, received_ns: i64) -> Decoded {
    let entries = match first_object(json) {
        Ok(entries) => entries,
        Err(reason) => return Decoded::Invalid(reason),
    };
    let mut packet = Packet {
        received_ns,
        origin: None,
        device_ts: None,
        link: None,
        readings: Vec::new(),
    };
    let mut rejected = Vec::new();
    for (i, (key, raw)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(earlier, _)| earlier == key) {
            rejected.push(format!("{key}: duplicate key, first value kept"));
            continue;
        }
        let key: &str = key;
        match key {
            "ts" => match raw.get().parse::<u64>() {
                Ok(ts) => packet.device_ts = Some(ts),
                Err(_) => rejected.push(format!(
                    "ts: expected a non-negative integer, got {}",
                    shorten(raw.get())
                )),
            },
            "id" => {}
            "sig" => node_readings(
                key,
                &CompactString::const_new(SIGNAL),
                raw,
                signal_metric,
                &mut packet,
                &mut rejected,
            ),
            "sts" => node_readings(
                key,
                &CompactString::const_new(STATS),
                raw,
                stats_metric,
                &mut packet,
                &mut rejected,
            ),
            _ => {
                if let Some(node) = remote_node_name(key) {
                    node_readings(key, &node, raw, sensor_metric, &mut packet, &mut rejected);
                } else if raw.get().starts_with('{') {
                    match sanitize(key) {
                        Some(node) => {
                            node_readings(key, &node, raw, |_| None, &mut packet, &mut rejected)
                        }
                        None => rejected.push(format!("{}: empty node name", shorten(key))),
                    }
                }
            }
        }
    }
    if packet.readings.is_empty() {
        return Decoded::Invalid(if rejected.is_empty() {
            InvalidLine::NoReadings
        } else {
            InvalidLine::FieldsRejected(rejected)
        });
    }
    Decoded::Packet { packet, rejected }
}

/// Node name of the `sig` object.
const SIGNAL: &str = "signal";
/// Node name of the `sts` object.
const STATS: &str = "stats";

/// A known short key: metric name and unit.
type Known = Option<(&'static str, Option<&'static str>)>;

/// Every unit the decoders give (the firmware's metrics and the radio frame's).
const UNITS: [&str; 6] = ["celsius", "percent", "ohms", "hpa", "dbm", "db"];

/// `unit` as one of [`UNITS`] (readings keep units as static names).
pub(crate) fn known_unit(unit: &str) -> Option<&'static str> {
    UNITS.into_iter().find(|u| *u == unit)
}

fn sensor_metric(key: &str) -> Known {
    Some(match key {
        "t" => ("temperature", Some("celsius")),
        "h" => ("humidity", Some("percent")),
        "g" => ("gas_resistance", Some("ohms")),
        "p" => ("pressure", Some("hpa")),
        _ => return None,
    })
}

fn signal_metric(key: &str) -> Known {
    Some(match key {
        "rssi" => ("rssi", Some("dbm")),
        "snr" => ("snr", Some("db")),
        _ => return None,
    })
}

fn stats_metric(key: &str) -> Known {
    Some(match key {
        "rx" => ("packets_received", None),
        "err" => ("crc_errors", None),
        _ => return None,
    })
}

/// `n1` → `node1`, `n42` → `node42`; anything else is not a remote node key.
fn remote_node_name(key: &str) -> Option<CompactString> {
    let digits = key.strip_prefix('n')?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // At most 13 bytes: stored inline, no allocation.
    let mut name = CompactString::with_capacity(4 + digits.len());
    name.push_str("node");
    name.push_str(digits);
    Some(name)
}

fn node_readings(
    key: &str,
    node: &CompactString,
    raw: &RawValue,
    known: impl Fn(&str) -> Known,
    packet: &mut Packet,
    rejected: &mut Vec<String>,
) {
    // `key` is shortened only for messages: the common path allocates nothing for it.
    let fields = match object_entries(raw.get()) {
        Ok(fields) => fields,
        Err(_) => {
            rejected.push(format!(
                "{}: expected an object, got {}",
                shorten(key),
                shorten(raw.get())
            ));
            return;
        }
    };
    for (i, (field, value)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(earlier, _)| earlier == field) {
            rejected.push(format!(
                "{}.{}: duplicate key, first value kept",
                shorten(key),
                shorten(field)
            ));
            continue;
        }
        let (metric, unit) = match known(field) {
            Some((metric, unit)) => (CompactString::const_new(metric), unit),
            None => match sanitize(field) {
                Some(metric) => (metric, None),
                None => {
                    rejected.push(format!(
                        "{}.{}: empty metric name",
                        shorten(key),
                        shorten(field)
                    ));
                    continue;
                }
            },
        };
        match number_text(value.get()) {
            Ok(text) => packet.readings.push(Reading {
                node: node.clone(),
                metric,
                unit,
                value: CompactString::new(text),
            }),
            Err(reason) => rejected.push(format!("{}.{}: {reason}", shorten(key), shorten(field))),
        }
    }
}

/// Longest JSON number text without an exponent that is certainly finite as an f64: a sign
/// and 308 integer digits is below f64::MAX (1.797…e308, 309 digits).
const FINITE_WITHOUT_EXPONENT: usize = 300;

/// Checks that `raw` is a finite JSON number and returns its text unchanged.
pub(crate) fn number_text(raw: &str) -> Result<&str, String> {
    let is_number = raw
        .as_bytes()
        .first()
        .is_some_and(|b| *b == b'-' || b.is_ascii_digit());
    if !is_number {
        return Err(format!("expected a number, got {}", shorten(raw)));
    }
    // `raw` is a valid JSON number (serde_json checked it): without an exponent and with
    // fewer than 309 digits it is below f64::MAX (~1.8e308), so finite. Skips the float
    // parse for every ordinary reading (measured, see BENCHMARKS.md).
    if raw.len() <= FINITE_WITHOUT_EXPONENT && !raw.bytes().any(|b| b == b'e' || b == b'E') {
        return Ok(raw);
    }
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(raw),
        _ => Err(format!("number out of range: {}", shorten(raw))),
    }
}

/// Replaces every character outside `[A-Za-z0-9_-]` with `_`; `None` when empty.
fn sanitize(name: &str) -> Option<CompactString> {
    if name.is_empty() {
        return None;
    }
    let mut out = CompactString::with_capacity(name.len().min(MAX_NAME_LEN));
    for c in name.chars() {
        if out.len() >= MAX_NAME_LEN {
            break;
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        });
    }
    Some(out)
}

/// Byte offset of [`MARKER`] in `line`. Same result as `line.find(MARKER)`, without building
/// a substring searcher for every line (measured, see BENCHMARKS.md): jump from one `J` to
/// the next (memchr) and compare there.
fn find_marker(line: &str) -> Option<usize> {
    let first = char::from(MARKER.as_bytes()[0]);
    let mut from = 0;
    // `first` is ASCII, so `at + 1` is always a char boundary.
    while let Some(i) = line[from..].find(first) {
        let at = from + i;
        if line[at..].starts_with(MARKER) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Cuts long input for error messages (on a char boundary).
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // CSI: skip to the final byte; any other escape: skip the one byte after ESC.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Key/value pairs of a JSON object, in order, duplicates kept, values unparsed. Keys borrow
/// from the line unless they contain escapes (no allocation per key: measured, see
/// BENCHMARKS.md).
type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Parses the first JSON value in `text` (ignoring whatever follows it) as an object.
fn first_object(text: &str) -> Result<Entries<'_>, InvalidLine> {
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_map(EntriesVisitor) {
        Ok(entries) => Ok(entries),
        Err(err) if err.is_data() => Err(InvalidLine::NotObject),
        Err(err) => Err(InvalidLine::InvalidJson(err.to_string())),
    }
}

/// Parses `text` (a whole JSON value) as an object.
fn object_entries(text: &str) -> Result<Entries<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(EntriesVisitor)
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            entries.push((key, value));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_marker_agrees_with_str_find() {
        for line in [
            "",
            "J",
            "JSON sent via VCP:",
            "JSON sent via VCP: {}",
            "[INFO] JSON sent via VCP: {\"n1\":{\"t\":1}}",
            "JJSON sent via VCP: x",
            "Jé JSON sent JSON sent via VCP: y JSON sent via VCP: z",
            "no marker here, Just text",
        ] {
            assert_eq!(find_marker(line), line.find(MARKER), "{line:?}");
        }
    }

    #[test]
    fn numbers_without_exponent_skip_the_float_parse_only_when_surely_finite() {
        let digits = |n| "9".repeat(n);
        assert_eq!(number_text("27.6"), Ok("27.6"));
        assert_eq!(number_text(&digits(300)), Ok(digits(300).as_str()));
        assert!(number_text(&digits(308)).is_ok());
        assert!(number_text(&digits(309)).is_err(), "above f64::MAX");
        assert!(number_text("1e308").is_ok());
        assert!(number_text("1e999").is_err());
        assert!(number_text("-1E999").is_err());
    }

    const FIRMWARE: &str = r#"[INFO] JSON sent via VCP: {"ts":12000,"id":"N2","n1":{"t":27.6,"h":54.1,"g":84190},"n2":{},"sig":{"rssi":-39,"snr":13},"sts":{"rx":1,"err":0}}\n (wk5_gateway_firmware wk5-gateway-firmware/src/main.rs:573)"#;

    fn packet(line: &str) -> (Packet, Vec<String>) {
        match decode(line, 7) {
            Decoded::Packet { packet, rejected } => (packet, rejected),
            other => panic!("expected a packet from {line:?}, got {other:?}"),
        }
    }

    fn triples(p: &Packet) -> Vec<(String, String, Option<&'static str>, String)> {
        p.readings
            .iter()
            .map(|r| {
                (
                    r.node.to_string(),
                    r.metric.to_string(),
                    r.unit,
                    r.value.to_string(),
                )
            })
            .collect()
    }

    fn t(
        node: &str,
        metric: &str,
        unit: Option<&'static str>,
        value: &str,
    ) -> (String, String, Option<&'static str>, String) {
        (node.into(), metric.into(), unit, value.into())
    }

    #[test]
    fn firmware_line_maps_to_the_nine_readings_of_the_design() {
        let (p, rejected) = packet(FIRMWARE);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(p.received_ns, 7);
        assert_eq!(p.device_ts, Some(12000));
        assert_eq!(
            triples(&p),
            vec![
                t("node1", "temperature", Some("celsius"), "27.6"),
                t("node1", "humidity", Some("percent"), "54.1"),
                t("node1", "gas_resistance", Some("ohms"), "84190"),
                t("signal", "rssi", Some("dbm"), "-39"),
                t("signal", "snr", Some("db"), "13"),
                t("stats", "packets_received", None, "1"),
                t("stats", "crc_errors", None, "0"),
            ]
        );
    }

    #[test]
    fn bare_json_with_crlf_decodes_like_the_marker_line() {
        let bare = r#"{"ts":12000,"id":"N2","n1":{"t":27.6,"h":54.1,"g":84190},"n2":{},"sig":{"rssi":-39,"snr":13},"sts":{"rx":1,"err":0}}"#;
        let (a, _) = packet(&format!("{bare}\r"));
        let (b, _) = packet(FIRMWARE);
        assert_eq!(a, b);
    }

    #[test]
    fn ansi_colours_and_defmt_timestamps_are_tolerated() {
        let line = "\u{1b}[32m0.512345 \u{1b}[1mINFO \u{1b}[0m JSON sent via VCP: {\"n2\":{\"t\":26.5,\"h\":48.4}}\u{1b}[0m";
        let (p, _) = packet(line);
        assert_eq!(
            triples(&p),
            vec![
                t("node2", "temperature", Some("celsius"), "26.5"),
                t("node2", "humidity", Some("percent"), "48.4"),
            ]
        );
    }

    #[test]
    fn defmt_two_line_format_location_line_is_skipped() {
        assert_eq!(
            decode("└─ node2_firmware src/main.rs:600 @ 0.5", 0),
            Decoded::Skip
        );
        let (p, _) = packet(r#"0.500000 [INFO ] JSON sent via VCP: {"n1":{"t":1.5}}\n"#);
        assert_eq!(p.readings.len(), 1);
    }

    #[test]
    fn non_telemetry_lines_are_skipped() {
        for line in [
            "",
            "   ",
            "[INFO] SHT3x read: T=27.8°C, H=48.8% (node2_firmware src/main.rs:417)",
            "      Erasing ✔ [00:00:01] [####] 128.00 KiB/128.00 KiB",
            "[WARN] CRC mismatch: expected 0x3A1F, got 0x3A0F",
        ] {
            assert_eq!(decode(line, 0), Decoded::Skip, "{line:?}");
        }
    }

    #[test]
    fn any_node_number_and_unknown_keys_pass_through() {
        let (p, rejected) =
            packet(r#"{"n17":{"t":20.25,"co2":415,"p":1013.25},"ext":{"lux":300}}"#);
        assert!(rejected.is_empty());
        assert_eq!(
            triples(&p),
            vec![
                t("node17", "temperature", Some("celsius"), "20.25"),
                t("node17", "co2", None, "415"),
                t("node17", "pressure", Some("hpa"), "1013.25"),
                t("ext", "lux", None, "300"),
            ]
        );
    }

    #[test]
    fn every_unit_the_decoders_give_is_a_known_unit() {
        let sensors = ["t", "h", "g", "p"].map(sensor_metric);
        let signal = ["rssi", "snr"].map(signal_metric);
        for known in sensors.iter().chain(&signal) {
            let unit = known.and_then(|(_, unit)| unit).expect("a unit");
            assert_eq!(known_unit(unit), Some(unit));
        }
        assert_eq!(known_unit("furlong"), None);
    }

    #[test]
    fn number_text_is_kept_exactly() {
        let (p, _) = packet(r#"{"n1":{"t":27.600,"h":1e2,"g":-0.0}}"#);
        let values: Vec<_> = p.readings.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, ["27.600", "1e2", "-0.0"]);
    }

    #[test]
    fn bad_values_are_rejected_one_by_one_and_the_rest_flows() {
        let (p, rejected) =
            packet(r#"{"n1":{"t":"hot","h":null,"g":1e999,"x":[1]},"sig":{"rssi":-40}}"#);
        assert_eq!(triples(&p), vec![t("signal", "rssi", Some("dbm"), "-40")]);
        assert_eq!(
            rejected,
            vec![
                "n1.t: expected a number, got \"hot\"",
                "n1.h: expected a number, got null",
                "n1.g: number out of range: 1e999",
                "n1.x: expected a number, got [1]",
            ]
        );
    }

    #[test]
    fn marker_with_broken_json_is_invalid_with_a_reason() {
        let Decoded::Invalid(reason) = decode("[INFO] JSON sent via VCP: {\"ts\":1,", 0) else {
            panic!("expected invalid");
        };
        assert_eq!(reason.class(), ErrorClass::InvalidJson);
        assert!(reason.to_string().starts_with("invalid JSON"), "{reason}");
        assert_eq!(
            decode("JSON sent via VCP: [1,2]", 0),
            Decoded::Invalid(InvalidLine::NotObject)
        );
        assert_eq!(
            decode(r#"{"ts":1,"id":"N2","n2":{}}"#, 0),
            Decoded::Invalid(InvalidLine::NoReadings)
        );
        let invalid = decode(r#"{"n1":5}"#, 0);
        assert_eq!(
            invalid,
            Decoded::Invalid(InvalidLine::FieldsRejected(vec![
                "n1: expected an object, got 5".into()
            ]))
        );
        let Decoded::Invalid(reason) = invalid else {
            unreachable!()
        };
        assert_eq!(reason.to_string(), "n1: expected an object, got 5");
        assert_eq!(reason.class(), ErrorClass::FieldRejected);
    }

    #[test]
    fn hostile_names_are_sanitized_identically_for_every_sink() {
        let (p, _) = packet(r#"{"n1/+#":{"a b,c=\"d\"\n":1},"n1":{"te/mp":2}}"#);
        assert_eq!(
            triples(&p),
            vec![
                t("n1___", "a_b_c__d__", None, "1"),
                t("node1", "te_mp", None, "2")
            ]
        );
        let long = "x".repeat(200);
        let (p, _) = packet(&format!(r#"{{"n1":{{"{long}":1}}}}"#));
        assert_eq!(p.readings[0].metric.len(), MAX_NAME_LEN);
    }

    #[test]
    fn duplicate_keys_keep_the_first_value_and_say_so() {
        let (p, rejected) = packet(r#"{"n1":{"t":1,"t":2}}"#);
        assert_eq!(p.readings[0].value, "1");
        assert_eq!(rejected, vec!["n1.t: duplicate key, first value kept"]);
    }

    #[test]
    fn legacy_pressure_firmware_decodes() {
        let line = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/legacy-bmp280.log"
        ))
        .expect("fixture");
        let (p, _) = packet(line.lines().next().expect("one line"));
        assert!(p.readings.contains(&Reading {
            node: "node2".into(),
            metric: "pressure".into(),
            unit: Some("hpa"),
            value: "1013.25".into()
        }));
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "JSON sent via VCP: ",
            "JSON sent via VCP: {",
            "{\"n1\":{\"t\":1",
            "\u{1b}",
            "\u{1b}[",
            "{}}}}}",
            "{\"n99999999999999999999\":{\"t\":1}}",
            "\u{0}\u{1}{\u{fffd}",
        ];
        for input in inputs {
            let _ = decode(input, 0);
        }
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        let _ = decode(&deep, 0);
    }
}
