//! InfluxDB line protocol encoding: pure, no I/O.
//!
//! One point per reading: measurement = metric, tags `node` and `unit` (omitted when the
//! reading has none), and for a packet forwarded by an edge gateway its `gateway` and `site`, field `value` (float), and the gateway's receive timestamp in the
//! configured precision (rounded down; packet times are already whole units, see
//! `ingest.rs`). The same reading always encodes to the same point, so a retry or a restart overwrites instead
//! of duplicating (invariant 4).

use std::fmt::Write as _;

use crate::outbox::StoredReading;
use crate::reading::Precision;

/// Appends one line (with trailing `\n`) for `r` to `out`. A gateway event becomes
/// `events,kind=<kind>,node=<node> text="<text>" <ts>` (the Grafana annotation source).
pub fn encode(r: &StoredReading, precision: Precision, out: &mut String) {
    let ts = precision.from_ns(r.ts_ns);
    if r.is_event() {
        out.push_str("events,kind=");
        escape(&r.metric, &[',', ' ', '='], out);
        out.push_str(",node=");
        escape(&r.node, &[',', ' ', '='], out);
        out.push_str(" text=\"");
        for c in r.value.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' | '\r' => out.push(' '),
                c => out.push(c),
            }
        }
        let _ = writeln!(out, "\" {ts}");
        return;
    }
    escape(&r.metric, &[',', ' '], out);
    let origin = r.origin.as_deref();
    // Tags in key order (what InfluxDB stores them in).
    if let Some(gateway) = origin.and_then(|o| o.gateway.as_deref()) {
        out.push_str(",gateway=");
        escape(gateway, &[',', ' ', '='], out);
    }
    out.push_str(",node=");
    escape(&r.node, &[',', ' ', '='], out);
    if let Some(site) = origin.and_then(|o| o.site.as_deref()) {
        out.push_str(",site=");
        escape(site, &[',', ' ', '='], out);
    }
    if let Some(unit) = &r.unit {
        out.push_str(",unit=");
        escape(unit, &[',', ' ', '='], out);
    }
    out.push_str(" value=");
    out.push_str(&r.value);
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {ts}");
}

/// Escapes `special` characters and backslashes with a backslash; newlines (which line
/// protocol cannot carry in names) become spaces, escaped.
fn escape(s: &str, special: &[char], out: &mut String) {
    for c in s.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if special.contains(&c) || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(metric: &str, node: &str, unit: Option<&str>, value: &str) -> StoredReading {
        StoredReading {
            seq: crate::outbox::Seq::new(1),
            ts_ns: 1764230400000000000,
            node: node.into(),
            metric: metric.into(),
            unit: unit.map(Into::into),
            value: value.into(),
            origin: None,
        }
    }

    fn line(r: &StoredReading) -> String {
        let mut s = String::new();
        encode(r, Precision::Ns, &mut s);
        s
    }

    #[test]
    fn timestamps_are_written_in_the_precision_rounded_down() {
        let mut r = reading("t", "n", None, "1");
        r.ts_ns = 1_764_230_400_123_456_789;
        let at = |p| {
            let mut s = String::new();
            encode(&r, p, &mut s);
            s.rsplit(' ').next().unwrap().trim_end().to_string()
        };
        assert_eq!(at(Precision::Ns), "1764230400123456789");
        assert_eq!(at(Precision::Us), "1764230400123456");
        assert_eq!(at(Precision::Ms), "1764230400123");
        assert_eq!(at(Precision::S), "1764230400");
    }

    #[test]
    fn matches_the_design_schema() {
        assert_eq!(
            line(&reading("temperature", "node1", Some("celsius"), "27.6")),
            "temperature,node=node1,unit=celsius value=27.6 1764230400000000000\n"
        );
        assert_eq!(
            line(&reading("crc_errors", "stats", None, "0")),
            "crc_errors,node=stats value=0 1764230400000000000\n"
        );
    }

    #[test]
    fn a_forwarded_reading_is_tagged_with_its_edge_gateway_and_site() {
        let mut r = reading("temperature", "node1", Some("celsius"), "27.6");
        r.origin = Some(Box::new(crate::reading::Origin {
            gateway: Some("edge-1".into()),
            site: Some("plant a".into()),
        }));
        assert_eq!(
            line(&r),
            "temperature,gateway=edge-1,node=node1,site=plant\\ a,unit=celsius value=27.6 1764230400000000000\n"
        );
        r.origin = Some(Box::new(crate::reading::Origin {
            gateway: Some("edge-1".into()),
            site: None,
        }));
        assert_eq!(
            line(&r),
            "temperature,gateway=edge-1,node=node1,unit=celsius value=27.6 1764230400000000000\n"
        );
    }

    #[test]
    fn escapes_commas_spaces_equals_and_backslashes() {
        assert_eq!(
            line(&reading("a b,c=d", "n o,d=e\\", Some("u n"), "1")),
            "a\\ b\\,c=d,node=n\\ o\\,d\\=e\\\\,unit=u\\ n value=1 1764230400000000000\n"
        );
    }

    #[test]
    fn events_are_string_fields_of_the_events_measurement() {
        let e = reading(
            "node_reboot",
            "stats",
            Some("event"),
            "ts went \"back\"\nto 0",
        );
        assert_eq!(
            line(&e),
            "events,kind=node_reboot,node=stats text=\"ts went \\\"back\\\" to 0\" 1764230400000000000\n"
        );
    }

    #[test]
    fn newlines_in_names_cannot_split_the_line() {
        let l = line(&reading("a\nb", "x\r\ny", None, "1"));
        assert_eq!(l.matches('\n').count(), 1, "{l:?}");
    }
}
