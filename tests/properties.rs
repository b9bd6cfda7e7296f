//! Property tests for hostile input: whatever a device line holds, the decoder must not panic,
//! every reading it accepts must be safe for every sink, and what the line-protocol encoder
//! writes must read back, through an independent parser, as exactly the point it was given.
//!
//! Case counts are moderate so the whole file runs in seconds in a debug build on two cores;
//! `PROPTEST_CASES=5000 cargo test --test properties` runs every property harder. Failing
//! inputs are shrunk and printed, not persisted (`failure_persistence: None`): paste a printed
//! case into a unit test next to the code it breaks.

use std::fmt::Write as _;

use iiot_gateway::decode::{decode, decode_explained, Decoded, MARKER};
use iiot_gateway::mqtt::topic::{reading_topic, validate_prefix};
use iiot_gateway::outbox::{Seq, StoredReading, EVENT_UNIT};
use iiot_gateway::reading::MAX_NAME_LEN;
use iiot_gateway::reading::{Packet, Precision};
use iiot_gateway::sink::influx::lineproto;
use influxdb_line_protocol::{parse_lines, FieldValue};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        // The line-protocol round trip filters out about a third of its names; let large
        // PROPTEST_CASES runs through.
        max_local_rejects: 1_000_000,
        ..default
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Keys the decoder treats specially, plus the marker itself (a key may contain it).
const KNOWN_KEYS: &[&str] = &[
    "ts",
    "id",
    "sig",
    "sts",
    "n1",
    "n2",
    "n17",
    "n0",
    "n000000001",
    "n1234567890",
    "t",
    "h",
    "g",
    "p",
    "rssi",
    "snr",
    "rx",
    "err",
    MARKER,
];

/// Pieces that mean something to MQTT, line protocol, JSON, terminals or C strings.
const HOSTILE: &[&str] = &[
    "/", "+", "#", "\0", " ", ",", "=", "\"", "'", "\\", "\\n", "\n", "\r", "\t", "\u{1b}",
    "\u{7f}", "é", "€", "𝄞", "😀", "\u{202e}", "\u{feff}", "\u{fffd}", "\u{85}", "\u{2028}", "{",
    "}", "[", "]", ":", "%", "$", "*", ".", "..", "-", "_",
];

/// Text mixing plain name characters, [`HOSTILE`] pieces and arbitrary chars.
fn hostile_text(max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[A-Za-z0-9_-]{1,4}",
            3 => select(HOSTILE).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ],
        0..=max_pieces,
    )
    .prop_map(|pieces| pieces.concat())
}

/// A JSON object key or string content, hostile or meaningful.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(KNOWN_KEYS).prop_map(str::to_string),
        4 => hostile_text(8),
        1 => Just(String::new()),
        1 => "n[0-9]{1,12}",
        1 => "[a-z_]{60,90}",
        1 => "[é€😀a/]{20,70}",
    ]
}

/// How a string is written into the JSON text.
#[derive(Debug, Clone, Copy)]
enum Quoting {
    /// Standard JSON escaping.
    Json,
    /// Every UTF-16 unit as `\uXXXX`: `"\u006e\u0031"` is the key `n1`.
    UnicodeEscapes,
    /// Between quotes, unescaped (invalid JSON when it holds `"`, `\` or control chars).
    Raw,
    /// Valid escaping plus a lone surrogate `\ud800` (invalid).
    LoneSurrogate,
}

fn quote(s: &str, how: Quoting) -> String {
    match how {
        Quoting::Json => serde_json::to_string(s).expect("a str always serializes"),
        Quoting::UnicodeEscapes => {
            let mut out = String::from("\"");
            for unit in s.encode_utf16() {
                let _ = write!(out, "\\u{unit:04x}");
            }
            out.push('"');
            out
        }
        Quoting::Raw => format!("\"{s}\""),
        Quoting::LoneSurrogate => {
            let quoted = serde_json::to_string(s).expect("a str always serializes");
            format!("{}\\ud800\"", &quoted[..quoted.len() - 1])
        }
    }
}

/// A JSON string literal of hostile text: well-formed, or (when `strict` is false) sometimes
/// not (raw control characters and quotes, lone surrogates).
fn string_literal(strict: bool) -> BoxedStrategy<String> {
    let quoting = if strict {
        prop_oneof![3 => Just(Quoting::Json), 1 => Just(Quoting::UnicodeEscapes)].boxed()
    } else {
        prop_oneof![
            6 => Just(Quoting::Json),
            2 => Just(Quoting::UnicodeEscapes),
            1 => Just(Quoting::Raw),
            1 => Just(Quoting::LoneSurrogate),
        ]
        .boxed()
    };
    (json_text(), quoting)
        .prop_map(|(s, how)| quote(&s, how))
        .boxed()
}

/// Valid JSON numbers of every shape, including ones no f64 holds.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<i64>().prop_map(|v| v.to_string()),
        3 => "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
        1 => select(&["1e999", "-1e999", "1E+400", "1e-400", "-0", "-0.0", "27.6"][..])
            .prop_map(str::to_string),
    ]
}

/// Number-ish tokens: valid JSON numbers of every shape, out-of-range ones, and near misses.
fn number_token() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:?}")),
        1 => any::<f64>().prop_map(|v| format!("{v:e}")),
        3 => "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
        2 => select(&[
            "1e999", "-1e999", "1E+400", "2.5e308", "1e-400", "-0", "-0.0", "0", "27.6",
            "123456789012345678901234567890", "-123456789012345678901234567890.5e-3", "01",
            "-", "1.", "+1", ".5", "1e", "0x10", "1_000", "NaN", "Infinity", "-Infinity",
        ][..])
        .prop_map(str::to_string),
    ]
}

/// JSON values: numbers, strings, literals, arrays and objects, nested. Unless `strict`, some
/// are only JSON-ish (near-miss numbers, broken strings, `nul`).
fn json_value(strict: bool) -> BoxedStrategy<String> {
    let leaf = if strict {
        prop_oneof![
            3 => json_number(),
            2 => string_literal(true),
            1 => select(&["null", "true", "false", "[]", "{}"][..]).prop_map(str::to_string),
        ]
        .boxed()
    } else {
        prop_oneof![
            3 => number_token(),
            2 => string_literal(false),
            1 => select(&["null", "true", "false", "nul", "[]", "{}"][..]).prop_map(str::to_string),
        ]
        .boxed()
    };
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((string_literal(strict), inner), 0..6).prop_map(object),
        ]
    })
    .boxed()
}

fn object(entries: Vec<(String, String)>) -> String {
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// An object shaped like a node: keys mapped to (mostly) numbers.
fn node_object(strict: bool) -> BoxedStrategy<String> {
    let value = if strict {
        prop_oneof![6 => json_number(), 1 => json_value(true)].boxed()
    } else {
        prop_oneof![5 => number_token(), 1 => json_value(false)].boxed()
    };
    prop::collection::vec((string_literal(strict), value), 0..6)
        .prop_map(object)
        .boxed()
}

/// An object shaped like a telemetry packet: keys mapped to (mostly) node objects. `strict`
/// keeps it well-formed JSON (hostile names, any numbers) so that most of it is accepted.
fn telemetry_object(strict: bool) -> BoxedStrategy<String> {
    prop::collection::vec(
        (
            string_literal(strict),
            prop_oneof![5 => node_object(strict), 1 => json_value(strict)],
        ),
        0..6,
    )
    .prop_map(object)
    .boxed()
}

/// Objects or arrays nested up to 2000 deep, closed or not, at the top or inside a node.
fn deep_nesting() -> impl Strategy<Value = String> {
    (1usize..2000, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(depth, arrays, in_node, closed)| {
            let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
            let (head, tail) = if in_node {
                ("{\"n1\":{\"t\":", "}}")
            } else {
                ("{\"x\":", "}")
            };
            let mut s = format!("{head}{}1", open.repeat(depth));
            if closed {
                s.push_str(&close.repeat(depth));
                s.push_str(tail);
            }
            s
        },
    )
}

/// `text` cut at some char boundary (a line cut short by `max_line_length` or a lost byte).
fn cut(text: &str, at: Index) -> String {
    let ends: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    if ends.is_empty() {
        return String::new();
    }
    text[..ends[at.index(ends.len())]].to_string()
}

fn insert_at(text: &mut String, at: Index, what: &str) {
    let positions: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    text.insert_str(positions[at.index(positions.len())], what);
}

/// What comes after the marker or stands alone on the line.
fn json_body() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => telemetry_object(true),
        3 => telemetry_object(false),
        2 => json_value(false),
        1 => deep_nesting(),
        2 => (telemetry_object(true), any::<Index>()).prop_map(|(t, at)| cut(&t, at)),
    ]
}

const LINE_PREFIXES: &[&str] = &[
    "",
    "   ",
    MARKER,
    "[INFO] JSON sent via VCP: ",
    "0.500000 [INFO ] JSON sent via VCP: ",
    "\u{1b}[32m0.512345 \u{1b}[1mINFO \u{1b}[0m JSON sent via VCP: ",
    "JSON sent via VCP:",
    "JSON sent via VCP: JSON sent via VCP: ",
];

/// What may stand before a telemetry object without changing it: nothing, indentation, or the
/// marker after a defmt / probe-rs prefix.
const FRAMING_PREFIXES: &[&str] = &[
    "",
    "   ",
    MARKER,
    "[INFO] JSON sent via VCP: ",
    "0.500000 [INFO ] JSON sent via VCP: ",
    "\u{1b}[32m0.512345 \u{1b}[1mINFO \u{1b}[0m JSON sent via VCP: ",
];

/// The firmware's location suffix and other tails.
const LINE_SUFFIXES: &[&str] = &[
    "",
    "\\n (wk5_gateway_firmware wk5-gateway-firmware/src/main.rs:573)",
    "\\n",
    "\r",
    "\u{1b}[0m",
];

/// Colour codes as a terminal writes them: stripping them restores the line.
const COMPLETE_ANSI: &[&str] = &[
    "\u{1b}[0m",
    "\u{1b}[32m",
    "\u{1b}[1;31m",
    "\u{1b}[2K",
    "\u{1b}[38;5;208m",
];

/// Broken escape sequences: a lone ESC, an unterminated CSI, a two-byte escape.
const BROKEN_ANSI: &[&str] = &["\u{1b}", "\u{1b}[", "\u{1b}[12", "\u{1b}(B", "\u{1b}\u{1b}"];

/// A whole line as a source may hand it over: prefix, JSON, suffix, escapes anywhere.
fn hostile_line() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        4 => select(LINE_PREFIXES).prop_map(str::to_string),
        1 => hostile_text(6).prop_map(|garbage| format!("{garbage}{MARKER}")),
    ];
    let suffix = prop_oneof![
        4 => select(LINE_SUFFIXES).prop_map(str::to_string),
        1 => hostile_text(6),
    ];
    let escape = prop_oneof![3 => select(COMPLETE_ANSI), 1 => select(BROKEN_ANSI)];
    let escapes = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec((any::<Index>(), escape), 1..4),
    ];
    (prefix, json_body(), suffix, escapes).prop_map(|(prefix, body, suffix, escapes)| {
        let mut line = format!("{prefix}{body}{suffix}");
        for (at, code) in escapes {
            insert_at(&mut line, at, code);
        }
        line
    })
}

/// A topic prefix that `validate_prefix` accepts: 0 to 3 non-empty levels.
fn topic_prefix() -> impl Strategy<Value = String> {
    prop::collection::vec("[^/+#\\x00]{1,6}", 0..4).prop_map(|levels| levels.join("/"))
}

// ---------------------------------------------------------------------------------------------
// Checks shared by several properties
// ---------------------------------------------------------------------------------------------

/// `^[A-Za-z0-9_-]{1,64}$`.
fn is_safe_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn encode(r: &StoredReading) -> String {
    let mut out = String::new();
    lineproto::encode(r, Precision::Ns, &mut out);
    out
}

/// What the encoder writes for a name: line protocol cannot carry `\n`/`\r` in a name, so
/// `lineproto::escape` turns each into a space (by design, documented there).
fn as_written(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// Parses `line` with the `influxdb-line-protocol` crate and checks it is exactly `r`.
fn assert_round_trips(r: &StoredReading) -> Result<(), TestCaseError> {
    let line = encode(r);
    prop_assert!(line.ends_with('\n'), "no trailing newline: {:?}", line);
    prop_assert_eq!(line.matches('\n').count(), 1, "not one line: {:?}", line);
    let parsed: Vec<_> = parse_lines(&line).collect();
    prop_assert_eq!(parsed.len(), 1, "not one point: {:?}", line);
    let point = match parsed.into_iter().next() {
        Some(Ok(point)) => point,
        other => return Err(TestCaseError::fail(format!("{other:?} from {line:?}"))),
    };
    prop_assert_eq!(point.series.measurement.as_str(), as_written(&r.metric));
    let tags: Vec<(String, String)> = point
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut want = vec![("node".to_string(), as_written(&r.node))];
    if let Some(unit) = &r.unit {
        want.push(("unit".to_string(), as_written(unit)));
    }
    prop_assert_eq!(tags, want, "tags of {:?}", line);
    prop_assert_eq!(point.field_set.len(), 1, "fields of {:?}", line);
    let (key, value) = &point.field_set[0];
    prop_assert_eq!(key.as_str(), "value");
    let expected: f64 = r.value.parse().expect("the value text is a float");
    match value {
        // Bit equality: -0 stays -0.
        FieldValue::F64(v) => prop_assert_eq!(v.to_bits(), expected.to_bits(), "{:?}", line),
        other => return Err(TestCaseError::fail(format!("{other:?} from {line:?}"))),
    }
    prop_assert_eq!(point.timestamp, Some(r.ts_ns));
    Ok(())
}

fn packet_of(decoded: &Decoded) -> Option<&Packet> {
    match decoded {
        Decoded::Packet { packet, .. } => Some(packet),
        _ => None,
    }
}

/// A line shaped like the firmware's, with the variations a real one may have: any node
/// numbers, unknown keys, whitespace, and now and then a duplicate key or a value that is
/// not a number (so both decoders' paths are taken).
fn firmware_like_line() -> impl Strategy<Value = String> {
    let field_key = select(
        &[
            "t", "h", "g", "p", "rssi", "snr", "rx", "err", "co2", "a b", "",
        ][..],
    );
    let field_value = prop_oneof![
        8 => json_number(),
        1 => select(&["null", "\"hot\"", "[1]", "{}", "true"][..]).prop_map(str::to_string),
    ];
    let ws = select(&["", " ", "\t"][..]);
    let node =
        prop::collection::vec((field_key, field_value, ws.clone()), 0..6).prop_map(|fields| {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                .collect();
            format!("{{{}}}", body.join(","))
        });
    let top_key = prop_oneof![
        4 => "n[0-9]{1,4}",
        1 => select(&["sig", "sts", "ext", "n", "nX", ""][..]).prop_map(str::to_string),
    ];
    let entry = prop_oneof![
        8 => (top_key, node).prop_map(|(k, v)| format!("\"{k}\":{v}")),
        1 => any::<u32>().prop_map(|ts| format!("\"ts\":{ts}")),
        1 => Just("\"id\":\"N2\"".to_string()),
        1 => json_value(true).prop_map(|v| format!("\"x\":{v}")),
    ];
    (
        prop::collection::vec(entry, 0..8),
        select(&["", "[INFO] JSON sent via VCP: "][..]),
    )
        .prop_map(|(entries, prefix)| format!("{prefix}{{{}}}", entries.join(",")))
}

// ---------------------------------------------------------------------------------------------
// The decoder
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn decoder_never_panics_on_arbitrary_strings(line in any::<String>(), ts in any::<i64>()) {
        let _ = decode(&line, ts);
    }

    #[test]
    fn decoder_never_panics_on_hostile_text(
        prefix in select(&["", "{", MARKER, "JSON sent via VCP: {"][..]),
        text in hostile_text(40),
    ) {
        let _ = decode(&format!("{prefix}{text}"), 0);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes_as_lossy_utf8(
        prefix in select(&["", "{", MARKER, "JSON sent via VCP: {\"n1\":"][..]),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let line = format!("{prefix}{}", String::from_utf8_lossy(&bytes));
        let _ = decode(&line, 0);
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// `decode` tries a one-pass decoder first and hands every line it cannot take without
    /// explanation to the decoder that explains: the two must never decide differently.
    #[test]
    fn the_fast_path_decides_exactly_like_the_explaining_decoder(
        line in prop_oneof![firmware_like_line(), hostile_line()],
        ts in any::<i64>(),
    ) {
        prop_assert_eq!(decode(&line, ts), decode_explained(&line, ts), "{:?}", line);
    }

    #[test]
    fn decoder_never_panics_on_hostile_json_lines(line in hostile_line(), ts in any::<i64>()) {
        match decode(&line, ts) {
            Decoded::Skip => {}
            Decoded::Packet { packet, .. } => prop_assert!(!packet.readings.is_empty()),
            Decoded::Invalid(reason) => prop_assert!(!reason.to_string().is_empty()),
        }
    }

    #[test]
    fn every_accepted_reading_has_safe_names_a_finite_value_and_a_valid_topic(
        line in hostile_line(),
        prefix in topic_prefix(),
    ) {
        prop_assert_eq!(MAX_NAME_LEN, 64);
        prop_assert!(validate_prefix(&prefix).is_ok(), "generator made a bad prefix {:?}", prefix);
        let prefix_levels = if prefix.is_empty() { 0 } else { prefix.split('/').count() };
        let decoded = decode(&line, 1);
        let Some(packet) = packet_of(&decoded) else { return Ok(()) };
        for r in &packet.readings {
            prop_assert!(is_safe_name(&r.node), "node {:?} from {:?}", r.node, line);
            prop_assert!(is_safe_name(&r.metric), "metric {:?} from {:?}", r.metric, line);
            prop_assert!(
                r.value.parse::<f64>().is_ok_and(f64::is_finite),
                "value {:?} from {:?}", r.value, line
            );
            if let Some(unit) = r.unit {
                prop_assert!(is_safe_name(unit), "unit {:?}", unit);
            }
            let topic = reading_topic(&prefix, &r.node, &r.metric);
            prop_assert!(!topic.contains(['+', '#', '\0']), "topic {:?}", topic);
            prop_assert!(topic.len() <= usize::from(u16::MAX), "topic too long");
            let levels: Vec<&str> = topic.split('/').collect();
            prop_assert!(levels.iter().all(|l| !l.is_empty()), "empty level in {:?}", topic);
            prop_assert_eq!(levels.len(), prefix_levels + 2, "levels of {:?}", topic);
            prop_assert_eq!(&levels[levels.len() - 2..], &[r.node.as_str(), r.metric.as_str()]);
        }
    }

    #[test]
    fn every_accepted_reading_round_trips_through_line_protocol(line in hostile_line()) {
        let decoded = decode(&line, 1_764_230_400_000_000_000);
        let Some(packet) = packet_of(&decoded) else { return Ok(()) };
        for (seq, r) in (1..).zip(&packet.readings) {
            assert_round_trips(&StoredReading {
                seq: Seq::new(seq),
                ts_ns: packet.received_ns,
                node: r.node.clone(),
                metric: r.metric.clone(),
                unit: r.unit.map(Into::into),
                value: r.value.clone(),
                origin: None,
            })?;
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decoding_is_deterministic_and_carries_the_receive_time(
        line in hostile_line(),
        ts in any::<i64>(),
        other_ts in any::<i64>(),
    ) {
        let first = decode(&line, ts);
        prop_assert_eq!(&first, &decode(&line, ts), "same line, same time, other result");
        let mut later = decode(&line, other_ts);
        if let Decoded::Packet { packet, .. } = &first {
            // One receive time per packet: the readings carry no time of their own, so every
            // reading of the line is stored with exactly this one.
            prop_assert_eq!(packet.received_ns, ts);
        }
        if let Decoded::Packet { packet, .. } = &mut later {
            prop_assert_eq!(packet.received_ns, other_ts);
            packet.received_ns = ts;
        }
        prop_assert_eq!(first, later, "the receive time changed more than received_ns");
    }

    #[test]
    fn complete_ansi_colour_codes_anywhere_do_not_change_the_decoding(
        body in json_body(),
        prefix in select(LINE_PREFIXES),
        codes in prop::collection::vec((any::<Index>(), select(COMPLETE_ANSI)), 1..4),
    ) {
        // A raw ESC already in the line may swallow part of an inserted code: take them out.
        let plain = format!("{prefix}{body}").replace('\u{1b}', "");
        // Codes go between the characters of the plain line, never inside one another.
        let boundaries: Vec<usize> = plain
            .char_indices()
            .map(|(i, _)| i)
            .chain([plain.len()])
            .collect();
        let mut at: Vec<(usize, &str)> = codes
            .into_iter()
            .map(|(i, code)| (boundaries[i.index(boundaries.len())], code))
            .collect();
        at.sort_unstable();
        let mut coloured = plain.clone();
        for (pos, code) in at.into_iter().rev() {
            coloured.insert_str(pos, code);
        }
        prop_assert_eq!(decode(&plain, 5), decode(&coloured, 5), "{:?}", coloured);
    }

    #[test]
    fn marker_prefix_and_location_suffix_do_not_change_an_accepted_packet(
        body in telemetry_object(true),
        prefix in select(FRAMING_PREFIXES),
        suffix in select(LINE_SUFFIXES),
    ) {
        // The bare form is looked for the marker too: keep the marker out of the JSON.
        let body = body.replace(MARKER, "marker");
        let bare = decode(&body, 5);
        let framed = decode(&format!("{prefix}{body}{suffix}"), 5);
        if packet_of(&bare).is_some() {
            prop_assert_eq!(bare, framed);
        } else {
            prop_assert_eq!(
                std::mem::discriminant(&bare),
                std::mem::discriminant(&framed),
                "{:?} vs {:?}", bare, framed
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Line protocol
// ---------------------------------------------------------------------------------------------

/// Characters that line protocol or its parsers treat specially, and some unicode.
const LP_SPECIAL: &[&str] = &[
    ",", " ", "=", "\\", "\"", "'", "\n", "\r", "\r\n", "\t", "\0", "#", "é", "😀", "\u{85}",
    "\u{2028}", "\u{feff}", "\u{1b}",
];

/// Any name, not only sanitized ones: the encoder must escape whatever reaches it. Empty only
/// when `pieces` allows 0 (or, rarely, from `any::<String>()`).
fn lp_name(pieces: std::ops::RangeInclusive<usize>) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::collection::vec(
            prop_oneof![
                2 => "[A-Za-z0-9_-]{1,3}",
                2 => select(LP_SPECIAL).prop_map(str::to_string),
                1 => any::<char>().prop_map(String::from),
            ],
            pieces,
        )
        .prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
    ]
    .boxed()
}

/// Finite float text in every form the firmware (JSON) or Rust may write.
fn finite_value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:e}")),
        any::<i64>().prop_map(|v| v.to_string()),
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?"
            .prop_filter("finite", |s| s.parse::<f64>().is_ok_and(f64::is_finite)),
    ]
}

fn stored_reading(
    name: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = StoredReading> {
    (
        any::<i64>(),
        any::<i64>(),
        name.clone(),
        name.clone(),
        prop::option::of(
            name.prop_filter("the event unit has an encoding of its own", |u| {
                u != EVENT_UNIT
            }),
        ),
        finite_value_text(),
    )
        .prop_map(|(seq, ts_ns, node, metric, unit, value)| StoredReading {
            seq: Seq::new(seq),
            ts_ns,
            node: node.into(),
            metric: metric.into(),
            unit: unit.map(Into::into),
            value: value.into(),
            origin: None,
        })
}

/// A gateway event (`unit` = [`EVENT_UNIT`]): any kind (`metric`), node and text (`value`).
fn stored_event(
    name: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = StoredReading> {
    (
        any::<i64>(),
        any::<i64>(),
        name.clone(),
        name,
        lp_name(0..=12),
    )
        .prop_map(|(seq, ts_ns, node, metric, value)| StoredReading {
            seq: Seq::new(seq),
            ts_ns,
            node: node.into(),
            metric: metric.into(),
            unit: Some(EVENT_UNIT.into()),
            value: value.into(),
            origin: None,
        })
}

/// A measurement or tag value, as written, that the IOx parser can read back: not empty, no
/// tab, no trailing backslash (a measurement has more rules, see [`iox_parser_can_read_back`]).
fn iox_name_ok(written: &str) -> bool {
    !written.is_empty() && !written.contains('\t') && !written.ends_with('\\')
}

/// Parses an event line with the `influxdb-line-protocol` crate and checks it is exactly `r`:
/// measurement `events`, tags `kind` and `node`, string field `text`, the timestamp.
fn assert_event_round_trips(r: &StoredReading) -> Result<(), TestCaseError> {
    let line = encode(r);
    prop_assert!(line.ends_with('\n'), "no trailing newline: {:?}", line);
    prop_assert_eq!(line.matches('\n').count(), 1, "not one line: {:?}", line);
    let parsed: Vec<_> = parse_lines(&line).collect();
    prop_assert_eq!(parsed.len(), 1, "not one point: {:?}", line);
    let point = match parsed.into_iter().next() {
        Some(Ok(point)) => point,
        other => return Err(TestCaseError::fail(format!("{other:?} from {line:?}"))),
    };
    prop_assert_eq!(point.series.measurement.as_str(), "events");
    let tags: Vec<(String, String)> = point
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let want = vec![
        ("kind".to_string(), as_written(&r.metric)),
        ("node".to_string(), as_written(&r.node)),
    ];
    prop_assert_eq!(tags, want, "tags of {:?}", line);
    prop_assert_eq!(point.field_set.len(), 1, "fields of {:?}", line);
    let (key, value) = &point.field_set[0];
    prop_assert_eq!(key.as_str(), "text");
    match value {
        // The text is a string field: `"` and `\` escaped, newlines become spaces.
        FieldValue::String(text) => prop_assert_eq!(text.as_str(), as_written(&r.value)),
        other => return Err(TestCaseError::fail(format!("{other:?} from {line:?}"))),
    }
    prop_assert_eq!(point.timestamp, Some(r.ts_ns));
    Ok(())
}

/// Names that the `influxdb-line-protocol` crate (the IOx parser, which InfluxDB 3 uses)
/// cannot read back whatever the escaping; each case has a test of its own below. Line
/// protocol also has no empty measurement or tag value; the decoder never produces an empty
/// name (`sanitize` returns `None`), and units are a fixed non-empty list.
fn iox_parser_can_read_back(r: &StoredReading) -> bool {
    let metric = as_written(&r.metric);
    iox_name_ok(&metric)
        && !metric.contains('\0')
        && !metric.starts_with('#')
        && iox_name_ok(&as_written(&r.node))
        && r.unit
            .as_deref()
            .map(as_written)
            .is_none_or(|u| iox_name_ok(&u))
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn line_protocol_round_trips_any_names_through_an_independent_parser(
        r in stored_reading(lp_name(1..=10)).prop_filter(
            "a name the IOx parser cannot read back (see the tests below)",
            iox_parser_can_read_back,
        ),
    ) {
        assert_round_trips(&r)?;
    }

    #[test]
    fn line_protocol_round_trips_any_event_as_a_string_field(
        r in stored_event(lp_name(1..=10)).prop_filter(
            "a tag the IOx parser cannot read back (see the tests below)",
            |r| iox_name_ok(&as_written(&r.metric)) && iox_name_ok(&as_written(&r.node)),
        ),
    ) {
        assert_event_round_trips(&r)?;
    }

    #[test]
    fn line_protocol_event_is_one_line_for_any_text(r in stored_event(lp_name(0..=10))) {
        let line = encode(&r);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "{:?}", line);
        prop_assert!(!line.contains('\r'), "{:?}", line);
    }

    #[test]
    fn line_protocol_is_one_line_of_three_parts_for_any_names(
        r in stored_reading(lp_name(0..=10)),
    ) {
        // Holds for every name, including those the IOx parser cannot read back: no name can
        // end the line, add a part (unescaped space) or a tag (unescaped comma or `=`).
        let line = encode(&r);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "{:?}", line);
        prop_assert!(!line.contains('\r'), "{:?}", line);
        let parts = split_unescaped(line.trim_end_matches('\n'), ' ');
        prop_assert_eq!(parts.len(), 3, "{:?}", line);
        let series = split_unescaped(&parts[0], ',');
        prop_assert_eq!(series.len(), 2 + usize::from(r.unit.is_some()), "{:?}", line);
        for tag in &series[1..] {
            prop_assert_eq!(split_unescaped(tag, '=').len(), 2, "{:?}", line);
        }
        prop_assert_eq!(&parts[1], &format!("value={}", r.value));
        prop_assert_eq!(&parts[2], &r.ts_ns.to_string());
    }
}

/// Splits at `sep` where it is not escaped by a backslash (escapes are kept).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let last = parts.last_mut().expect("never empty");
            last.push(c);
            if let Some(next) = chars.next() {
                last.push(next);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

fn reading(metric: &str, node: &str, unit: Option<&str>) -> StoredReading {
    StoredReading {
        seq: Seq::new(1),
        ts_ns: 1_764_230_400_000_000_000,
        node: node.into(),
        metric: metric.into(),
        unit: unit.map(Into::into),
        value: "1.5".into(),
        origin: None,
    }
}

/// The IOx parser's verdict on the encoding of `r`: `Ok(measurement, tags)` or the error.
fn iox_parse(r: &StoredReading) -> Result<(String, Vec<(String, String)>), String> {
    let line = encode(r);
    let mut points = parse_lines(&line);
    let first = match points.next() {
        None => Err("no point (comment or blank line)".into()),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(p)) => Ok((
            p.series.measurement.to_string(),
            p.series
                .tag_set
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
    };
    first
}

#[test]
fn empty_unit_is_written_as_an_empty_tag_value_which_line_protocol_rejects() {
    // Line protocol has no empty tag value. The gateway never stores an empty unit (units are
    // a fixed non-empty list, `None` when unknown), so the encoder does not special-case it:
    // it writes `unit=` and a parser refuses the line.
    let r = reading("temperature", "node1", Some(""));
    assert_eq!(
        encode(&r),
        "temperature,node=node1,unit= value=1.5 1764230400000000000\n"
    );
    assert!(iox_parse(&r).is_err(), "{:?}", iox_parse(&r));
    // No unit at all is the representable form: the tag is left out.
    assert_eq!(
        iox_parse(&reading("temperature", "node1", None)),
        Ok(("temperature".into(), vec![("node".into(), "node1".into())]))
    );
}

#[test]
fn empty_names_are_written_as_is_which_line_protocol_rejects() {
    // The decoder rejects empty names (`sanitize` returns `None`), so they cannot reach here.
    assert_eq!(
        encode(&reading("", "node1", None)),
        ",node=node1 value=1.5 1764230400000000000\n"
    );
    assert!(iox_parse(&reading("", "node1", None)).is_err());
    assert!(iox_parse(&reading("temperature", "", None)).is_err());
}

#[test]
fn newlines_in_names_become_spaces_and_the_line_stays_whole() {
    let r = reading("a\nb", "x\r\ny", Some("u\n"));
    assert_eq!(
        iox_parse(&r),
        Ok((
            "a b".into(),
            vec![("node".into(), "x  y".into()), ("unit".into(), "u ".into())]
        ))
    );
}

#[test]
fn tab_in_a_name_is_written_literally_which_the_iox_parser_reads_as_whitespace() {
    // The IOx parser ends a name at a tab and has no escape for it (`\<tab>` keeps the
    // backslash). Sanitized names never hold a tab.
    let r = reading("a\tb", "node1", None);
    assert_eq!(
        encode(&r),
        "a\tb,node=node1 value=1.5 1764230400000000000\n"
    );
    assert!(iox_parse(&r).is_err(), "{:?}", iox_parse(&r));
}

#[test]
fn nul_in_a_measurement_is_written_literally_which_the_iox_parser_rejects() {
    let r = reading("a\0b", "node1", None);
    assert_eq!(
        encode(&r),
        "a\0b,node=node1 value=1.5 1764230400000000000\n"
    );
    assert!(iox_parse(&r).is_err(), "{:?}", iox_parse(&r));
    // In a tag value it reads back.
    assert_eq!(
        iox_parse(&reading("m", "a\0b", None)),
        Ok(("m".into(), vec![("node".into(), "a\0b".into())]))
    );
}

#[test]
fn measurement_starting_with_hash_is_read_as_a_comment_line() {
    // Line protocol has no escape for a leading `#`: parsers skip the line as a comment.
    // Sanitized names never hold `#`.
    let r = reading("#temp", "node1", None);
    assert_eq!(
        encode(&r),
        "#temp,node=node1 value=1.5 1764230400000000000\n"
    );
    assert_eq!(
        iox_parse(&r),
        Err("no point (comment or blank line)".into())
    );
    // Anywhere else `#` is an ordinary character.
    assert_eq!(
        iox_parse(&reading("te#mp", "no#de", None)),
        Ok(("te#mp".into(), vec![("node".into(), "no#de".into())]))
    );
}

#[test]
fn trailing_backslash_is_escaped_but_the_iox_parser_rejects_it() {
    // The encoder doubles it (`a\\`), which is correct line protocol; the IOx parser refuses
    // any name whose value ends with a backslash. Sanitized names never hold `\`.
    let r = reading("a\\", "node1", None);
    assert_eq!(
        encode(&r),
        "a\\\\,node=node1 value=1.5 1764230400000000000\n"
    );
    assert!(iox_parse(&r).is_err(), "{:?}", iox_parse(&r));
    assert_eq!(
        iox_parse(&reading("a\\b", "c\\d", None)),
        Ok(("a\\b".into(), vec![("node".into(), "c\\d".into())]))
    );
}
