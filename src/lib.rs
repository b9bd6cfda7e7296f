//! iiot-gateway: carries telemetry from field sensor nodes to MQTT, InfluxDB and dashboards
//! through a durable SQLite outbox. Data flow, by module:
//!
//! `source` (lines) → `decode` (packets) → `ingest` + `outbox` (committed) → `sink::*`
//! (delivered, cursor moved) ; `web` serves what the outbox holds. `app` wires it all and
//! shuts it down in order; `config` validates everything before anything starts.

pub mod app;
mod backoff;
mod check;
pub mod cli;
pub mod config;
pub mod dashboards;
pub mod decode;
pub mod downlink;
pub mod events;
mod failure;
mod ingest;
mod keys;
mod live_view;
mod malloc;
pub mod mqtt;
mod nodes;
pub mod outbox;
mod quarantine;
pub mod reading;
mod secret;
mod self_stats;
pub mod sink;
pub mod source;
mod web;
