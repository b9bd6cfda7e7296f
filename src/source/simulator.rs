//! The `simulator` source (the default): the model of `simulator_model` driven by a clock.
//! Its lines are exactly the firmware's JSON and go through the same decoder as a real
//! device's. Also used by `iiot-gateway simulate` to print lines for piping and demos.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::simulator_model::{SimConfig, SimModel};
use super::SourceEnd;
use crate::config::SimulatorConfig;
use crate::reading::{now_ns, Line};

/// The model for `cfg`, with a seed from the clock when none is configured.
pub(crate) fn model(cfg: &SimulatorConfig) -> (SimModel, u64) {
    let seed = cfg
        .seed
        .unwrap_or_else(|| now_ns().unsigned_abs() ^ u64::from(std::process::id()));
    let interval_ms = u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX);
    let model = SimModel::new(SimConfig {
        seed,
        remote_nodes: cfg.remote_nodes,
        interval_ms: interval_ms.max(500),
        ..SimConfig::default()
    });
    (model, seed)
}

/// Emits one simulated packet per interval (the first at once) until cancelled.
pub async fn run(
    cfg: SimulatorConfig,
    tx: mpsc::Sender<Line>,
    token: CancellationToken,
) -> SourceEnd {
    let (mut model, seed) = model(&cfg);
    info!(seed, remote_nodes = cfg.remote_nodes, interval = ?cfg.interval, "simulator started");
    let mut ticker = tokio::time::interval(cfg.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = token.cancelled() => return SourceEnd::Cancelled,
        }
        let Some(text) = model.step() else { continue };
        let line = Line {
            text,
            received_ns: now_ns(),
            cut: false,
            decoded: None,
        };
        if tx.send(line).await.is_err() {
            return SourceEnd::Cancelled;
        }
    }
}
