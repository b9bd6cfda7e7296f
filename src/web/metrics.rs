//! `GET /metrics`: the gateway's counters in the Prometheus text exposition format (0.0.4).
//!
//! Built on `metrics-exporter-prometheus` with an explicit recorder (no global recorder, no
//! listener of its own): the HTTP server enables it at bind time, and each scrape renders it
//! here. Why this crate and not `prometheus-client`: the latter writes OpenMetrics text,
//! whose `_total` samples under a `TYPE` line without the suffix `promtool check metrics`
//! (Prometheus 2.42) rejects; this one writes the classic format every Prometheus and
//! promtool accept.
//!
//! Where the numbers come from, and what it costs:
//! - Counters are the atomics of [`Stats`] and [`SinkStatus`], incremented where the events
//!   happen (ingest thread, sinks) and copied into the registry at scrape time: the hot path
//!   pays one relaxed atomic add per event, as it did before `/metrics` existed.
//! - The delivery latency histogram (receive → confirmed by the far end) is recorded by the
//!   sinks per confirmed reading through a handle of the registry. Samples are folded into
//!   buckets at each scrape and by [`upkeep`] every few seconds, so memory stays bounded
//!   even when nobody scrapes. Without the HTTP server the handle is a no-op.
//! - Backlogs and outbox bytes are read from the outbox at scrape time (two index lookups per
//!   sink, see `outbox::backlog`), process metrics from `/proc/self`.
//!
//! No secret is in any of these structures, so none can reach a label.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::decode::ErrorClass;
use crate::reading::now_ns;
use crate::self_stats::process::{self, Process};
use crate::self_stats::{metadata, Metrics, RestartCause, Snapshot, Stats, LATENCY};

/// The Content-Type of the classic text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, kind and help text.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

const LINES_READ: &str = "iiot_lines_read_total";
const PACKETS_DECODED: &str = "iiot_packets_decoded_total";
const DECODE_ERRORS: &str = "iiot_decode_errors_total";
const FIELDS_REJECTED: &str = "iiot_decode_rejected_fields_total";
const LINES_CUT: &str = "iiot_lines_cut_total";
const READINGS_COMMITTED: &str = "iiot_readings_committed_total";
const READINGS_DROPPED: &str = "iiot_readings_dropped_total";
const OUTBOX_BYTES: &str = "iiot_outbox_bytes";
const BACKLOG: &str = "iiot_outbox_backlog_readings";
const OLDEST_AGE: &str = "iiot_outbox_oldest_undelivered_age_seconds";
const SOURCE_RUNNING: &str = "iiot_source_running";
const SOURCE_RESTARTS: &str = "iiot_source_restarts_total";
const PACKETS_SHIFTED: &str = "iiot_packets_time_shifted_total";
const SERIES_REFUSED: &str = "iiot_latest_series_refused_total";
const SINK_CONNECTED: &str = "iiot_sink_connected";
const SINK_ENDPOINT: &str = "iiot_sink_endpoint";
const DELIVERED: &str = "iiot_sink_readings_delivered_total";
const FAILURES: &str = "iiot_sink_delivery_failures_total";
const RETRIED: &str = "iiot_sink_readings_retried_total";
const RECONNECTS: &str = "iiot_sink_reconnects_total";
const LAST_SUCCESS: &str = "iiot_sink_last_success_timestamp_seconds";
const RADIO_ACCEPTED: &str = "iiot_radio_frames_accepted_total";
const RADIO_REJECTED: &str = "iiot_radio_frames_rejected_total";
const COMMANDS: &str = "iiot_commands";
const NODE_RESETS: &str = "iiot_node_resets_total";
const BUILD_INFO: &str = "iiot_build_info";
const RSS: &str = "process_resident_memory_bytes";
const VSIZE: &str = "process_virtual_memory_bytes";
const CPU: &str = "process_cpu_seconds_total";
const OPEN_FDS: &str = "process_open_fds";
const MAX_FDS: &str = "process_max_fds";
const START_TIME: &str = "process_start_time_seconds";

/// Every family `/metrics` exposes (the names follow the Prometheus conventions: base units
/// in the name, `_total` on counters; checked by a test).
const FAMILIES: &[Family] = &[
    family(LINES_READ, Kind::Counter, "Lines received from the source."),
    family(PACKETS_DECODED, Kind::Counter, "Telemetry packets decoded and committed to the outbox."),
    family(DECODE_ERRORS, Kind::Counter, "Telemetry lines that were unusable (quarantined), by reason; field_rejected also counts lines committed without some fields."),
    family(FIELDS_REJECTED, Kind::Counter, "Fields dropped from telemetry lines (quarantined)."),
    family(LINES_CUT, Kind::Counter, "Lines longer than [source] max_line_length, cut."),
    family(READINGS_COMMITTED, Kind::Counter, "Readings committed to the outbox."),
    family(READINGS_DROPPED, Kind::Counter, "Undelivered readings dropped at the outbox disk budget (on_full = drop_oldest)."),
    family(OUTBOX_BYTES, Kind::Gauge, "Bytes of outbox database pages in use (what [storage] max_bytes limits)."),
    family(BACKLOG, Kind::Gauge, "Readings in the outbox the sink has not delivered yet."),
    family(OLDEST_AGE, Kind::Gauge, "Age of the sink's oldest undelivered reading (0 when none)."),
    family(SOURCE_RUNNING, Kind::Gauge, "1 while the source runs and can deliver (its process running, its device open, its modem set up)."),
    family(SOURCE_RESTARTS, Kind::Counter, "Restarts of the source process or reopenings of its device, by cause: exited, crashed, killed (by a signal it did not raise: never expected), device_lost."),
    family(PACKETS_SHIFTED, Kind::Counter, "Packets stamped at or before the previous one at [influxdb] precision, moved to the previous time + 1 unit so no two packets become one point."),
    family(SERIES_REFUSED, Kind::Counter, "Readings of new series the dashboard's newest-value map had no room for (it keeps 100,000 series at most; the readings are still stored and delivered)."),
    family(SINK_CONNECTED, Kind::Gauge, "1 while the sink reaches its far end (MQTT connected, last InfluxDB request succeeded)."),
    family(SINK_ENDPOINT, Kind::Gauge, "1 for the far end the sink is connected to now, by url (of a broker cluster: which node); absent while connected to none."),
    family(DELIVERED, Kind::Counter, "Readings the far end confirmed (PUBACK/PUBCOMP, HTTP 2xx)."),
    family(FAILURES, Kind::Counter, "Failed delivery attempts: connections lost or refused, writes that failed."),
    family(RETRIED, Kind::Counter, "Readings sent again after a failure (at-least-once resends)."),
    family(RECONNECTS, Kind::Counter, "Times the sink reached its far end again after a failure."),
    family(LAST_SUCCESS, Kind::Gauge, "When the far end last confirmed readings, Unix time (0: not yet)."),
    family(LATENCY, Kind::Histogram, "Time from receiving a reading to its confirmation by the far end."),
    family(RADIO_ACCEPTED, Kind::Counter, "Radio frames accepted (rylr998 source), by node and security: secure (authenticated and encrypted) or legacy (the original firmware's unauthenticated format, [source.nodes] legacy = true)."),
    family(RADIO_REJECTED, Kind::Counter, "Radio frames refused and not acknowledged (rylr998 source), by node (unknown: not in [source.nodes]) and reason: bad_tag, replay, unknown_node, no_key, legacy_format, bad_format, crc."),
    family(NODE_RESETS, Kind::Counter, "Starts of the nodes the gateway heard of (each node's info after a boot), by node and reason: power_on, software, watchdog, panic, unknown."),
    family(COMMANDS, Kind::Gauge, "Commands to the nodes in the outbox, by state: queued, sent, confirmed, expired, rejected."),
    family(BUILD_INFO, Kind::Gauge, "Always 1; the version is a label."),
    family(RSS, Kind::Gauge, "Resident memory size in bytes."),
    family(VSIZE, Kind::Gauge, "Virtual memory size in bytes."),
    family(CPU, Kind::Counter, "Total user and system CPU time spent in seconds."),
    family(OPEN_FDS, Kind::Gauge, "Number of open file descriptors."),
    family(MAX_FDS, Kind::Gauge, "Maximum number of open file descriptors."),
    family(START_TIME, Kind::Gauge, "Start time of the process since unix epoch in seconds."),
];

/// Runs [`Metrics`] upkeep every few seconds until `stop`.
pub(super) async fn upkeep(stats: Arc<Stats>, stop: CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => stats.metrics.upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// `GET /metrics`.
pub(super) async fn api_metrics(State(state): State<AppState>) -> Response {
    let stats = state.stats.clone();
    let history = state.history.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let snap = crate::self_stats::snapshot(&stats, &history);
        let used = history.used_bytes().ok();
        render(
            &stats.metrics,
            &snap,
            used,
            process::read().as_ref(),
            now_ns(),
        )
    })
    .await;
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering metrics failed: {error}\n"),
        )
            .into_response(),
    }
}

/// Turns the registry on, with every family's help text.
pub(super) fn enable(metrics: &Metrics) {
    metrics.enable(describe);
}

fn describe(recorder: &PrometheusRecorder) {
    for f in FAMILIES {
        let help = f.help.into();
        match f.kind {
            Kind::Counter => recorder.describe_counter(f.name.into(), None, help),
            Kind::Gauge => recorder.describe_gauge(f.name.into(), None, help),
            Kind::Histogram => recorder.describe_histogram(f.name.into(), None, help),
        }
    }
}

/// The exposition text of `snap` (with the outbox's size and the process figures), through
/// the registry. Pure but for the registry it writes to.
fn render(
    metrics: &Metrics,
    snap: &Snapshot,
    outbox_bytes: Option<u64>,
    process: Option<&Process>,
    now: i64,
) -> String {
    enable(metrics);
    let Some((recorder, handle)) = metrics.parts() else {
        return String::new();
    };
    let set = Setter { recorder };
    let c = &snap.counts;
    set.counter(LINES_READ, &[], c.lines);
    set.counter(PACKETS_DECODED, &[], c.packets);
    for class in ErrorClass::ALL {
        set.counter(
            DECODE_ERRORS,
            &[("reason", class.label())],
            c.decode_errors[class as usize],
        );
    }
    set.counter(FIELDS_REJECTED, &[], c.rejected_fields);
    set.counter(LINES_CUT, &[], c.cut_lines);
    set.counter(READINGS_COMMITTED, &[], c.readings);
    set.counter(READINGS_DROPPED, &[], c.dropped_readings);
    set.counter(PACKETS_SHIFTED, &[], c.shifted_packets);
    set.counter(SERIES_REFUSED, &[], c.latest_series_refused);
    set.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    let kind = snap.source_kind.as_deref().unwrap_or("unknown");
    // Running means delivering or able to: a source that reports a problem (a program that
    // cannot start, a device that cannot be opened) does not run.
    let running = snap.source_running && snap.source_problem.is_none();
    set.gauge(
        SOURCE_RUNNING,
        &[("kind", kind)],
        f64::from(u8::from(running)),
    );
    for cause in RestartCause::ALL {
        set.counter(
            SOURCE_RESTARTS,
            &[("kind", kind), ("cause", cause.label())],
            c.source_restarts[cause as usize],
        );
    }
    for (node, security, n) in &snap.radio_accepted {
        set.counter(
            RADIO_ACCEPTED,
            &[("node", node), ("security", security)],
            *n,
        );
    }
    for (node, reason, n) in &snap.radio_rejected {
        set.counter(RADIO_REJECTED, &[("node", node), ("reason", reason)], *n);
    }
    for (node, reason, n) in &snap.node_resets {
        set.counter(NODE_RESETS, &[("node", node), ("reason", reason)], *n);
    }
    if let Some(commands) = &snap.commands {
        for state in crate::downlink::command::State::ALL {
            let n = commands
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n);
            set.gauge(COMMANDS, &[("state", state.as_str())], n as f64);
        }
    }
    if let Some(bytes) = outbox_bytes {
        set.gauge(OUTBOX_BYTES, &[], bytes as f64);
    }
    for s in &snap.sinks {
        let labels = [("sink", s.name)];
        set.counter(DELIVERED, &labels, s.delivered);
        set.counter(FAILURES, &labels, s.failures);
        set.counter(RETRIED, &labels, s.retried);
        set.counter(RECONNECTS, &labels, s.reconnects);
        set.gauge(SINK_CONNECTED, &labels, f64::from(u8::from(s.connected)));
        if let Some(url) = &s.endpoint {
            set.gauge(SINK_ENDPOINT, &[("sink", s.name), ("url", url)], 1.0);
        }
        set.gauge(
            LAST_SUCCESS,
            &labels,
            s.last_success_ns.map_or(0.0, |ns| ns as f64 / 1e9),
        );
        if let Some(backlog) = s.backlog {
            set.gauge(BACKLOG, &labels, backlog.readings as f64);
            set.gauge(
                OLDEST_AGE,
                &labels,
                s.oldest_age_seconds(now).unwrap_or(0.0),
            );
        }
    }
    if let Some(p) = process {
        set.gauge(RSS, &[], p.rss_bytes as f64);
        set.gauge(VSIZE, &[], p.vsize_bytes as f64);
        // CPU time is fractional; the registry's counters are integers, so it is a gauge
        // handle rendered with the counter type (fixed up below).
        set.gauge(CPU, &[], p.cpu_seconds);
        set.gauge(START_TIME, &[], p.start_time_seconds);
        if let Some(fds) = p.open_fds {
            set.gauge(OPEN_FDS, &[], fds as f64);
        }
        if let Some(max) = p.max_fds {
            set.gauge(MAX_FDS, &[], max as f64);
        }
    }
    tidy(&handle.render())
}

/// The exporter's text made stable for people and diffs: families sorted by name (the
/// exporter's order changes from scrape to scrape). And the registry's counters hold
/// integers, so `process_cpu_seconds_total`, a fractional counter, is registered as a gauge:
/// its `TYPE` line is corrected to `counter` here.
fn tidy(text: &str) -> String {
    let mut families: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let name = |f: &str| {
        f.lines()
            .find_map(|l| l.strip_prefix("# TYPE "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or(f)
            .to_string()
    };
    families.sort_by_key(|f| name(f));
    let mut out = String::with_capacity(text.len());
    for f in families {
        if name(f) == CPU {
            out.push_str(&f.replace(
                &format!("# TYPE {CPU} gauge"),
                &format!("# TYPE {CPU} counter"),
            ));
        } else {
            out.push_str(f);
        }
        out.push_str("\n\n");
    }
    out
}

/// Sets values in the registry by name and labels.
struct Setter<'a> {
    recorder: &'a PrometheusRecorder,
}

impl Setter<'_> {
    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)], value: u64) {
        self.recorder
            .register_counter(&key(name, labels), &metadata())
            .absolute(value);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &metadata())
            .set(value);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::self_stats::{Counts, SinkSnapshot};

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn metric_names_follow_the_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FAMILIES {
            assert!(valid_name(f.name), "{}", f.name);
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(
                f.name.starts_with("iiot_") || f.name.starts_with("process_"),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "only counters end in _total: {}",
                f.name
            );
            // Base units: seconds and bytes, never ms or KiB.
            for bad in ["_ms", "_milliseconds", "_kb", "_kib", "_mb", "_minutes"] {
                assert!(!f.name.contains(bad), "{}", f.name);
            }
            assert!(f.help.ends_with('.'), "{}", f.name);
        }
        assert!(LATENCY.ends_with("_seconds"));
    }

    #[test]
    fn the_rendered_text_names_types_and_labels_every_family() {
        let metrics = Metrics::default();
        enable(&metrics);
        let latency = metrics.latency("mqtt");
        latency.record_ns(20_000_000);
        latency.record_ns(2_000_000_000);
        let mut counts = Counts {
            lines: 7,
            ..Counts::default()
        };
        counts.decode_errors[ErrorClass::InvalidJson as usize] = 1;
        let snap = Snapshot {
            counts,
            sinks: vec![SinkSnapshot {
                name: "mqtt",
                delivered: 5,
                backlog: Some(crate::outbox::Backlog::default()),
                endpoint: Some("mqtt://10.0.0.2:1883".into()),
                ..SinkSnapshot::default()
            }],
            radio_accepted: vec![("greenhouse".into(), "secure", 9)],
            radio_rejected: vec![("unknown".into(), "unknown_node", 2)],
            node_resets: vec![("greenhouse".into(), "panic", 1)],
            commands: Some(vec![("queued".into(), 2)]),
            ..Snapshot::default()
        };
        let text = render(&metrics, &snap, Some(4096), process::read().as_ref(), 0);
        for line in [
            "# TYPE iiot_lines_read_total counter",
            "iiot_lines_read_total 7",
            "iiot_decode_errors_total{reason=\"invalid_json\"} 1",
            "iiot_decode_errors_total{reason=\"line_too_long\"} 0",
            "iiot_sink_readings_delivered_total{sink=\"mqtt\"} 5",
            "iiot_outbox_backlog_readings{sink=\"mqtt\"} 0",
            "iiot_outbox_bytes 4096",
            "iiot_radio_frames_accepted_total{node=\"greenhouse\",security=\"secure\"} 9",
            "iiot_radio_frames_rejected_total{node=\"unknown\",reason=\"unknown_node\"} 2",
            "iiot_node_resets_total{node=\"greenhouse\",reason=\"panic\"} 1",
            "iiot_commands{state=\"queued\"} 2",
            "iiot_commands{state=\"expired\"} 0",
            "iiot_sink_endpoint{sink=\"mqtt\",url=\"mqtt://10.0.0.2:1883\"} 1",
            "# TYPE iiot_sink_delivery_latency_seconds histogram",
            "iiot_sink_delivery_latency_seconds_bucket{sink=\"mqtt\",le=\"0.025\"} 1",
            "iiot_sink_delivery_latency_seconds_bucket{sink=\"mqtt\",le=\"+Inf\"} 2",
            "iiot_sink_delivery_latency_seconds_count{sink=\"mqtt\"} 2",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        for f in FAMILIES {
            assert!(
                text.contains(&format!("# HELP {} ", f.name)),
                "no help for {} in:\n{text}",
                f.name
            );
        }
    }

    #[test]
    fn families_are_sorted_and_cpu_time_is_a_counter() {
        let text = "# TYPE b gauge\nb 1\n\n# TYPE process_cpu_seconds_total gauge\nprocess_cpu_seconds_total 0.5\n\n# HELP a A.\n# TYPE a_total counter\na_total 2\n\n";
        assert_eq!(
            tidy(text),
            "# HELP a A.\n# TYPE a_total counter\na_total 2\n\n# TYPE b gauge\nb 1\n\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.5\n\n"
        );
    }

    #[test]
    fn proc_stat_is_parsed_after_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel writes it.
        let text = "4242 (iiot (gw) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    150 50 0 0 20 0 9 0 12345 987654321 2500 18446744073709551615";
        assert_eq!(
            process::parse_stat(text),
            Some(process::Stat {
                cpu_ticks: 200,
                start_ticks: 12345,
                vsize: 987654321,
                rss_pages: 2500,
            })
        );
        assert_eq!(process::parse_stat("garbage"), None);
        assert_eq!(
            process::parse_btime("cpu 1 2 3\nbtime 1764230400\nprocesses 9\n"),
            Some(1764230400)
        );
        let me = process::read().expect("/proc/self is readable on Linux");
        assert!(me.rss_bytes > 0 && me.start_time_seconds > 1e9);
        assert!(me.open_fds.unwrap_or(0) > 0);
    }
}
