//! The panel definitions: the one description of the two dashboards (Environmental sensors,
//! Signal quality & statistics) that the built-in dashboard, the Grafana Flux flavour and the
//! Grafana InfluxQL flavour are all generated from, so the three can never drift.
//!
//! A panel names the measurement(s) it shows, which node (or every node that reports), its
//! unit and its thresholds. Pure data, no I/O.

/// A colour step: from `from` upwards (the first step starts at minus infinity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Lower bound of the step; `None` for the base step.
    pub from: Option<f64>,
    /// Colour name (Grafana's names: green, yellow, red, blue, light-green).
    pub color: &'static str,
}

const fn base(color: &'static str) -> Step {
    Step { from: None, color }
}

const fn at(from: f64, color: &'static str) -> Step {
    Step {
        from: Some(from),
        color,
    }
}

/// Temperature: green, ≥ 30 yellow, ≥ 35 red.
pub const TEMPERATURE_STEPS: &[Step] = &[base("green"), at(30.0, "yellow"), at(35.0, "red")];
/// Humidity: < 30 red, 30–40 yellow, 40–70 green, 70–80 yellow, ≥ 80 red.
pub const HUMIDITY_STEPS: &[Step] = &[
    base("red"),
    at(30.0, "yellow"),
    at(40.0, "green"),
    at(70.0, "yellow"),
    at(80.0, "red"),
];
/// RSSI: red below −70, yellow to −50, green to −30, blue above.
pub const RSSI_STEPS: &[Step] = &[
    base("red"),
    at(-70.0, "yellow"),
    at(-50.0, "green"),
    at(-30.0, "blue"),
];
/// SNR: red < 0, yellow < 5, light green < 10, green < 15, blue.
pub const SNR_STEPS: &[Step] = &[
    base("red"),
    at(0.0, "yellow"),
    at(5.0, "light-green"),
    at(10.0, "green"),
    at(15.0, "blue"),
];
/// Packet error rate in %: < 5 green, 5–15 yellow, > 15 red.
pub const PER_STEPS: &[Step] = &[base("green"), at(5.0, "yellow"), at(15.0, "red")];

/// How a panel draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The latest value, coloured by the thresholds.
    Stat,
    /// Values over time, one line per series.
    TimeSeries,
}

/// Which nodes a query covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// Exactly this node.
    One(&'static str),
    /// Every node that reports this measurement (a new node gets its own series).
    All,
}

/// One measurement shown by a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Measurement name (the metric), field `value`.
    pub measurement: &'static str,
    /// Which nodes.
    pub nodes: Nodes,
}

/// What a panel computes from its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    /// Show the values as they are.
    Values,
    /// Packet error rate in % from the `crc_errors` and `packets_received` counters:
    /// Δerr / (Δrx + Δerr) × 100 over the window, where a counter going back (a node reboot)
    /// counts from zero again instead of as a negative step.
    PacketErrorRate,
}

/// One panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panel {
    /// Stable id (used for Grafana panel ids and HTML element ids).
    pub id: u32,
    /// Title.
    pub title: &'static str,
    /// Stat or time series.
    pub kind: Kind,
    /// The data.
    pub queries: &'static [Query],
    /// What is computed from it.
    pub compute: Compute,
    /// Unit: Grafana unit id (`celsius`, `humidity`, `ohm`, `dBm`, `dB`, `percent`, `short`).
    pub unit: &'static str,
    /// Colour thresholds (empty: none).
    pub steps: &'static [Step],
}

/// One dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dashboard {
    /// Stable uid (Grafana) and URL slug (built-in).
    pub uid: &'static str,
    /// Title.
    pub title: &'static str,
    /// Panels in reading order.
    pub panels: &'static [Panel],
}

const fn q(measurement: &'static str, nodes: Nodes) -> Query {
    Query { measurement, nodes }
}

/// Environmental sensors: 4 stats and 3 time series.
pub const ENVIRONMENT: Dashboard = Dashboard {
    uid: "iiot-environment",
    title: "Environmental sensors",
    panels: &[
        Panel {
            id: 1,
            title: "Node 1 temperature",
            kind: Kind::Stat,
            queries: &[q("temperature", Nodes::One("node1"))],
            compute: Compute::Values,
            unit: "celsius",
            steps: TEMPERATURE_STEPS,
        },
        Panel {
            id: 2,
            title: "Node 1 humidity",
            kind: Kind::Stat,
            queries: &[q("humidity", Nodes::One("node1"))],
            compute: Compute::Values,
            unit: "humidity",
            steps: HUMIDITY_STEPS,
        },
        Panel {
            id: 3,
            title: "Node 2 temperature",
            kind: Kind::Stat,
            queries: &[q("temperature", Nodes::One("node2"))],
            compute: Compute::Values,
            unit: "celsius",
            steps: TEMPERATURE_STEPS,
        },
        Panel {
            id: 4,
            title: "Node 2 humidity",
            kind: Kind::Stat,
            queries: &[q("humidity", Nodes::One("node2"))],
            compute: Compute::Values,
            unit: "humidity",
            steps: HUMIDITY_STEPS,
        },
        Panel {
            id: 5,
            title: "Temperature: Node 1 vs Node 2",
            kind: Kind::TimeSeries,
            queries: &[q("temperature", Nodes::All)],
            compute: Compute::Values,
            unit: "celsius",
            steps: TEMPERATURE_STEPS,
        },
        Panel {
            id: 6,
            title: "Humidity: Node 1 vs Node 2",
            kind: Kind::TimeSeries,
            queries: &[q("humidity", Nodes::All)],
            compute: Compute::Values,
            unit: "humidity",
            steps: HUMIDITY_STEPS,
        },
        Panel {
            id: 7,
            title: "Gas resistance (Node 1, air quality)",
            kind: Kind::TimeSeries,
            queries: &[q("gas_resistance", Nodes::One("node1"))],
            compute: Compute::Values,
            unit: "ohm",
            steps: &[],
        },
    ],
};

/// Signal quality & statistics: 4 panels.
pub const SIGNAL: Dashboard = Dashboard {
    uid: "iiot-signal",
    title: "Signal quality & statistics",
    panels: &[
        Panel {
            id: 11,
            title: "RSSI",
            kind: Kind::TimeSeries,
            queries: &[q("rssi", Nodes::All)],
            compute: Compute::Values,
            unit: "dBm",
            steps: RSSI_STEPS,
        },
        Panel {
            id: 12,
            title: "SNR",
            kind: Kind::TimeSeries,
            queries: &[q("snr", Nodes::All)],
            compute: Compute::Values,
            unit: "dB",
            steps: SNR_STEPS,
        },
        Panel {
            id: 13,
            title: "Packets received, CRC errors and rejected frames",
            kind: Kind::TimeSeries,
            queries: &[
                q("packets_received", Nodes::All),
                q("crc_errors", Nodes::All),
                // Secure radio link (rylr998 source): forged, replayed, unknown senders.
                q("frames_rejected", Nodes::All),
            ],
            compute: Compute::Values,
            unit: "short",
            steps: &[],
        },
        Panel {
            id: 14,
            title: "Packet error rate",
            kind: Kind::Stat,
            queries: &[
                q("packets_received", Nodes::All),
                q("crc_errors", Nodes::All),
            ],
            compute: Compute::PacketErrorRate,
            unit: "percent",
            steps: PER_STEPS,
        },
    ],
};

/// Both dashboards, in menu order.
pub const DASHBOARDS: &[Dashboard] = &[ENVIRONMENT, SIGNAL];

/// The colour of `value` under `steps` (the last step whose lower bound it reaches).
pub fn color(steps: &[Step], value: f64) -> Option<&'static str> {
    steps
        .iter()
        .rev()
        .find(|s| s.from.is_none_or(|from| value >= from))
        .map(|s| s.color)
}

/// Packet error rate in % from one node's counter samples `(rx, err)` in time order.
/// A counter going back (reboot) restarts from zero: its new value is the increase.
pub fn packet_error_rate(samples: &[(f64, f64)]) -> Option<f64> {
    let mut rx = 0.0;
    let mut err = 0.0;
    for pair in samples.windows(2) {
        let ((rx0, err0), (rx1, err1)) = (pair[0], pair[1]);
        rx += if rx1 >= rx0 { rx1 - rx0 } else { rx1 };
        err += if err1 >= err0 { err1 - err0 } else { err1 };
    }
    let total = rx + err;
    (total > 0.0).then(|| err / total * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_dashboards_have_the_eleven_panels_of_the_hardware_project() {
        assert_eq!(ENVIRONMENT.panels.len(), 7);
        assert_eq!(SIGNAL.panels.len(), 4);
        let stats = ENVIRONMENT
            .panels
            .iter()
            .filter(|p| p.kind == Kind::Stat)
            .count();
        assert_eq!(stats, 4);
        let mut ids: Vec<u32> = DASHBOARDS
            .iter()
            .flat_map(|d| d.panels)
            .map(|p| p.id)
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 11, "unique panel ids");
    }

    #[test]
    fn thresholds_colour_as_specified() {
        assert_eq!(color(TEMPERATURE_STEPS, 29.9), Some("green"));
        assert_eq!(color(TEMPERATURE_STEPS, 30.0), Some("yellow"));
        assert_eq!(color(TEMPERATURE_STEPS, 35.0), Some("red"));
        let h: Vec<_> = [29.0, 35.0, 55.0, 75.0, 80.0]
            .iter()
            .map(|v| color(HUMIDITY_STEPS, *v).unwrap())
            .collect();
        assert_eq!(h, ["red", "yellow", "green", "yellow", "red"]);
        let r: Vec<_> = [-80.0, -60.0, -40.0, -20.0]
            .iter()
            .map(|v| color(RSSI_STEPS, *v).unwrap())
            .collect();
        assert_eq!(r, ["red", "yellow", "green", "blue"]);
        let s: Vec<_> = [-1.0, 3.0, 7.0, 12.0, 20.0]
            .iter()
            .map(|v| color(SNR_STEPS, *v).unwrap())
            .collect();
        assert_eq!(s, ["red", "yellow", "light-green", "green", "blue"]);
        assert_eq!(color(PER_STEPS, 16.0), Some("red"));
    }

    #[test]
    fn packet_error_rate_survives_a_reboot() {
        // 10 frames, 2 of them bad, then the node reboots and counts from 0 again.
        let samples = [
            (10.0, 1.0),
            (15.0, 2.0),
            (20.0, 3.0),
            (2.0, 1.0),
            (7.0, 1.0),
        ];
        // Increases: rx 5+5+2+5 = 17, err 1+1+1+0 = 3 → 3 / 20.
        assert_eq!(packet_error_rate(&samples), Some(15.0));
        assert_eq!(packet_error_rate(&[(1.0, 0.0)]), None);
    }
}
