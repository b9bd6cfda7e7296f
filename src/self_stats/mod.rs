//! The gateway's own statistics (not the nodes' telemetry it carries): the counters the ingest thread, the sources and the
//! sinks increment ([`counters`]), the Prometheus registry the sinks record latencies in
//! ([`registry`]), the process figures ([`process`]), and [`Snapshot`], the one picture of
//! all of it that `/api/status`, `/healthz`/`/readyz` and `/metrics` render.
//!
//! Nothing here depends on the web layer: the web layer reads this.

mod counters;
pub(crate) mod process;
mod registry;
mod snapshot;

pub use counters::{RestartCause, SinkStatus, Stats};
pub use registry::{metadata, Metrics, LATENCY};
pub(crate) use snapshot::{snapshot, Snapshot};
#[cfg(test)]
pub(crate) use snapshot::{Counts, SinkSnapshot};
