//! System tests: the real `iiot-gateway` binary against real servers (Mosquitto,
//! VictoriaMetrics, InfluxDB 1.x) started on free loopback ports by `support`.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod delivery;
mod gateway;
mod pipeline;
mod sources;
