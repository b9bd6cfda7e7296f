//! MQTT topic building: pure, no I/O.
//!
//! `<prefix>/<node>/<metric>`, e.g. `iiot/node1/temperature`. Node and metric names were
//! sanitized by the decoder (no `/`, `+`, `#`, NUL or empty names can reach here).

/// The topic of one reading.
pub fn reading_topic(prefix: &str, node: &str, metric: &str) -> String {
    let mut t = String::with_capacity(prefix.len() + node.len() + metric.len() + 2);
    if !prefix.is_empty() {
        t.push_str(prefix);
        t.push('/');
    }
    t.push_str(node);
    t.push('/');
    t.push_str(metric);
    t
}

/// The gateway availability topic: `online` (retained) / `offline` (last will).
pub fn status_topic(prefix: &str) -> String {
    reading_topic(prefix, "gateway", "status")
}

/// The topic of gateway `id`'s packet events: `<prefix>/gateway/<id>/packets`.
pub fn packet_topic(prefix: &str, id: &str) -> String {
    format!("{prefix}/gateway/{id}/packets")
}

/// Whether one topic could match both filters (level by level: `+` matches any one level,
/// `#` the rest, its parent included).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(l), Some(r)) if l == "+" || r == "+" || l == r => {}
            _ => return false,
        }
    }
}

/// Checks a configured topic prefix: no wildcards, NUL, empty levels or leading `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['+', '#', '\0']) {
        return Err("must not contain MQTT wildcards (+, #) or NUL".into());
    }
    if !prefix.is_empty() && prefix.split('/').any(str::is_empty) {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    Ok(())
}

/// `<prefix>/<node>/commands`: where command requests for `node` arrive (`docs/API.md`,
/// "Commands"); `+` as the node: all of them.
pub fn commands_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/{node}/commands")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_design_topics() {
        assert_eq!(
            reading_topic("iiot", "node1", "temperature"),
            "iiot/node1/temperature"
        );
        assert_eq!(
            reading_topic("site/a", "stats", "crc_errors"),
            "site/a/stats/crc_errors"
        );
        assert_eq!(reading_topic("", "signal", "rssi"), "signal/rssi");
        assert_eq!(status_topic("iiot"), "iiot/gateway/status");
    }

    #[test]
    fn prefix_validation_rejects_wildcards_and_empty_levels() {
        assert!(validate_prefix("iiot").is_ok());
        assert!(validate_prefix("plant/line1").is_ok());
        assert!(validate_prefix("").is_ok());
        for bad in ["iiot/#", "a/+/b", "/iiot", "iiot/", "a//b", "a\0"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_overlap_when_one_topic_could_match_both() {
        assert!(filters_overlap(
            "iiot/gateway/+/packets",
            "iiot/gateway/edge-1/packets"
        ));
        assert!(filters_overlap("iiot/#", "iiot/node1/temperature"));
        assert!(filters_overlap("iiot/#", "iiot"));
        assert!(filters_overlap("+/+/+", "iiot/gateway/status"));
        assert!(!filters_overlap("iiot/gateway/+/packets", "iiot/+/+"));
        assert!(!filters_overlap(
            "iiot/gateway/+/packets",
            "iiot/gateway/status"
        ));
        assert!(!filters_overlap(
            "plant/gateway/+/packets",
            "iiot/gateway/+/packets"
        ));
    }
}
