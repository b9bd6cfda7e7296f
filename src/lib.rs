//! iiot-gateway: carries telemetry from field sensor nodes to MQTT, InfluxDB and dashboards
//! through a durable SQLite outbox. Data flow, by module:
//!
//! `source` (lines) → `decode` (packets) → `ingest` + `outbox` (committed) → `sink::*`
//! (delivered, cursor moved) ; `web` serves what the outbox holds. `app` wires it all and
//! shuts it down in order; `config` validates everything before anything starts.

mod activity;
pub mod app;
mod backoff;
mod broker;
mod check;
mod checklist;
pub mod cli;
pub mod config;
pub mod decode;
pub mod events;
pub mod grafana;
mod ingest;
mod latest;
mod liveness;
mod malloc;
pub mod outbox;
pub mod panels;
mod quarantine;
pub mod reading;
pub mod sink;
pub mod source;
mod telemetry;
mod web;
