//! The Prometheus registry behind `/metrics`, built on `metrics-exporter-prometheus` with an
//! explicit recorder (no global recorder, no listener of its own): off, every handle a no-op,
//! until the HTTP server enables it. The sinks record delivery latencies through it; the web
//! layer copies the counters into it and renders it at each scrape.

use std::sync::OnceLock;

use metrics::{Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The delivery latency histogram's name.
pub const LATENCY: &str = "iiot_sink_delivery_latency_seconds";

/// Upper bounds (seconds) of the delivery latency buckets: milliseconds on a healthy link up
/// to an hour of outage.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The registry behind `/metrics`; off (every handle a no-op) until [`Metrics::enable`].
#[derive(Debug, Default)]
pub struct Metrics {
    recorder: OnceLock<Registry>,
}

#[derive(Debug)]
struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    /// Turns the registry on (idempotent); `describe` names its families the first time.
    /// Sinks registered afterwards record latencies.
    pub fn enable(&self, describe: impl FnOnce(&PrometheusRecorder)) {
        self.recorder.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.to_string()), &LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            describe(&recorder);
            let handle = recorder.handle();
            Registry { recorder, handle }
        });
    }

    /// The recorder to set values in and the handle that renders them, once enabled.
    pub fn parts(&self) -> Option<(&PrometheusRecorder, &PrometheusHandle)> {
        self.recorder.get().map(|r| (&r.recorder, &r.handle))
    }

    /// The delivery latency histogram of `sink` (a no-op while the registry is off).
    pub fn latency(&self, sink: &'static str) -> Latency {
        match self.recorder.get() {
            Some(r) => Latency(r.recorder.register_histogram(
                &Key::from_parts(LATENCY, vec![Label::new("sink", sink)]),
                &metadata(),
            )),
            None => Latency::default(),
        }
    }

    /// Folds recorded samples into buckets (bounded memory between scrapes).
    pub fn upkeep(&self) {
        if let Some(r) = self.recorder.get() {
            r.handle.run_upkeep();
        }
    }
}

/// The metadata every handle of ours carries.
pub fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

/// A sink's delivery latency histogram handle.
#[derive(Debug, Clone)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::noop())
    }
}

impl Latency {
    /// Records one reading's receive → confirmed time.
    pub fn record_ns(&self, ns: i64) {
        self.0.record(ns.max(0) as f64 / 1e9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_a_no_op_until_the_registry_is_enabled() {
        let m = Metrics::default();
        m.latency("mqtt").record_ns(1);
        assert!(m.recorder.get().is_none());
    }
}
