//! System tests: the real `iiot-gateway` binary against real servers (Mosquitto,
//! VictoriaMetrics, InfluxDB 1.x) started on free loopback ports by `support`.

#[path = "../support/mod.rs"]
mod support;

mod certs;
mod chaos;
mod cli;
mod commands;
mod dashboard;
mod delivery;
mod deploy;
mod firmware;
mod firmware_commands;
mod firmware_faults;
mod fleet;
mod gateway;
mod grafana;
mod influx_security;
mod modem_emulator;
mod monitoring;
mod operator;
mod pipeline;
mod protocol;
mod radio;
mod radio_emulator;
mod radio_security;
mod security;
mod sources;
