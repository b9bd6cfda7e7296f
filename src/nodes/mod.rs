//! The sensor nodes as the gateway sees them: whether each is online ([`liveness`], the one
//! rule the dashboard and the log share), and what the log says about them ([`activity`]:
//! first packet, silent, back, and the periodic summary).

pub(crate) mod activity;
pub(crate) mod liveness;
