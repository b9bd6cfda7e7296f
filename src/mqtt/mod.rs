//! MQTT as both MQTT users of the gateway need it: the topic rules ([`topic`], pure), the
//! client's connection (brokers, login, TLS, the event loop's task, `check`'s probe and the
//! diagnosis of a failed connection: [`client`]) and the embedded broker ([`broker`]).
//!
//! The sink (`sink::mqtt`, publishing) and the central ingest source (`source::mqtt`,
//! subscribing) both build on this; this module uses neither, nor the config: the config
//! builds a [`Connection`] and checks topics with these rules.

pub(crate) mod broker;
mod client;
pub mod topic;

pub(crate) use client::{diagnose, fnv1a, probe_all, EventDriver};
pub use client::{Broker, BrokerTarget, Connection, MqttTls};
