//! Home Assistant MQTT discovery: pure, no I/O.
//!
//! For every series the MQTT sink publishes, a retained config at
//! `<discovery_prefix>/sensor/<gateway_id>_<node>_<metric>/config` tells Home Assistant the
//! state topic, unit, device class and state class, groups the sensors of one node into one
//! device (via the gateway), and uses the gateway status topic for availability. The sink
//! publishes a config the first time it sees a series in a connection and again when Home
//! Assistant announces `online` on `<discovery_prefix>/status`.

use serde_json::json;

use crate::config::HomeAssistantConfig;
use crate::mqtt::topic::{reading_topic, status_topic};

/// Home Assistant's own availability topic.
pub fn ha_status_topic(cfg: &HomeAssistantConfig) -> String {
    format!("{}/status", cfg.discovery_prefix)
}

/// (discovery topic, retained JSON payload) for one series.
pub fn discovery(
    cfg: &HomeAssistantConfig,
    topic_prefix: &str,
    node: &str,
    metric: &str,
    unit: Option<&str>,
) -> (String, String) {
    let object_id = format!("{}_{node}_{metric}", cfg.gateway_id);
    let topic = format!("{}/sensor/{object_id}/config", cfg.discovery_prefix);
    let (unit_of_measurement, device_class) = match unit {
        Some("celsius") => (Some("°C"), Some("temperature")),
        Some("percent") => (Some("%"), Some("humidity")),
        Some("hpa") => (Some("hPa"), Some("atmospheric_pressure")),
        Some("dbm") => (Some("dBm"), Some("signal_strength")),
        Some("db") => (Some("dB"), None),
        Some("ohms") => (Some("Ω"), None),
        Some(_) | None => (None, None),
    };
    // Counters restart at 0 when a node reboots: Home Assistant's total_increasing handles it.
    let state_class = match metric {
        "packets_received" | "crc_errors" => "total_increasing",
        _ => "measurement",
    };
    let mut payload = json!({
        "name": format!("{node} {}", metric.replace('_', " ")),
        "unique_id": object_id,
        "object_id": object_id,
        "state_topic": reading_topic(topic_prefix, node, metric),
        "state_class": state_class,
        "availability_topic": status_topic(topic_prefix),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [format!("{}_{node}", cfg.gateway_id)],
            "name": node,
            "manufacturer": "iiot-gateway",
            "model": "field sensor node",
            "via_device": cfg.gateway_id,
        },
    });
    if let Some(u) = unit_of_measurement {
        payload["unit_of_measurement"] = json!(u);
    }
    if let Some(c) = device_class {
        payload["device_class"] = json!(c);
    }
    (topic, payload.to_string())
}

/// (discovery topic, retained JSON payload) of a node's controls, for a node the source can
/// send commands to (`docs/API.md`, "Commands"): a `number` for its uplink interval (seconds)
/// and `button`s for `ping` and `identify`, each publishing a command request on
/// `<prefix>/<node>/commands`.
pub fn command_entities(
    cfg: &HomeAssistantConfig,
    topic_prefix: &str,
    node: &str,
) -> Vec<(String, String)> {
    let device = json!({
        "identifiers": [format!("{}_{node}", cfg.gateway_id)],
        "name": node,
        "manufacturer": "iiot-gateway",
        "model": "field sensor node",
        "via_device": cfg.gateway_id,
    });
    let command_topic = crate::mqtt::topic::commands_topic(topic_prefix, node);
    let entity = |component: &str, what: &str, name: &str, extra: serde_json::Value| {
        let object_id = format!("{}_{node}_{what}", cfg.gateway_id);
        let mut payload = json!({
            "name": format!("{node} {name}"),
            "unique_id": object_id,
            "object_id": object_id,
            "command_topic": command_topic,
            "availability_topic": status_topic(topic_prefix),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        });
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        (
            format!("{}/{component}/{object_id}/config", cfg.discovery_prefix),
            payload.to_string(),
        )
    };
    vec![
        entity(
            "number",
            "interval",
            "interval",
            json!({
                "command_template": "{\"command\": \"interval\", \"value\": \"{{ value | int }}s\"}",
                "min": 1,
                "max": 86_400,
                "step": 1,
                "mode": "box",
                "unit_of_measurement": "s",
                "optimistic": true,
            }),
        ),
        entity(
            "button",
            "ping",
            "ping",
            json!({"payload_press": "{\"command\": \"ping\"}"}),
        ),
        entity(
            "button",
            "identify",
            "identify",
            json!({"payload_press": "{\"command\": \"identify\"}", "device_class": "identify"}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HomeAssistantConfig {
        HomeAssistantConfig {
            discovery_prefix: "homeassistant".into(),
            gateway_id: "iiot_gateway".into(),
            command_nodes: Default::default(),
        }
    }

    #[test]
    fn a_node_that_takes_commands_gets_an_interval_number_and_two_buttons() {
        let entities = command_entities(&cfg(), "iiot", "node1");
        let topics: Vec<&str> = entities.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/number/iiot_gateway_node1_interval/config",
                "homeassistant/button/iiot_gateway_node1_ping/config",
                "homeassistant/button/iiot_gateway_node1_identify/config",
            ]
        );
        let number: serde_json::Value = serde_json::from_str(&entities[0].1).unwrap();
        assert_eq!(number["command_topic"], "iiot/node1/commands");
        assert_eq!(
            number["command_template"],
            "{\"command\": \"interval\", \"value\": \"{{ value | int }}s\"}"
        );
        assert_eq!(
            (&number["min"], &number["max"]),
            (&1.into(), &86_400.into())
        );
        assert_eq!(number["device"]["identifiers"][0], "iiot_gateway_node1");
        let ping: serde_json::Value = serde_json::from_str(&entities[1].1).unwrap();
        assert_eq!(ping["payload_press"], "{\"command\": \"ping\"}");
        assert_eq!(ping["command_topic"], "iiot/node1/commands");
    }

    #[test]
    fn temperature_is_a_temperature_sensor_of_its_node() {
        let (topic, payload) = discovery(&cfg(), "iiot", "node1", "temperature", Some("celsius"));
        assert_eq!(
            topic,
            "homeassistant/sensor/iiot_gateway_node1_temperature/config"
        );
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v["state_topic"], "iiot/node1/temperature");
        assert_eq!(v["unique_id"], "iiot_gateway_node1_temperature");
        assert_eq!(v["device_class"], "temperature");
        assert_eq!(v["unit_of_measurement"], "°C");
        assert_eq!(v["state_class"], "measurement");
        assert_eq!(v["availability_topic"], "iiot/gateway/status");
        assert_eq!(v["device"]["identifiers"][0], "iiot_gateway_node1");
    }

    #[test]
    fn counters_are_total_increasing_and_unknown_units_have_no_class() {
        let (_, p) = discovery(&cfg(), "iiot", "stats", "crc_errors", None);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["state_class"], "total_increasing");
        assert!(v.get("device_class").is_none() && v.get("unit_of_measurement").is_none());
        assert_eq!(ha_status_topic(&cfg()), "homeassistant/status");
    }
}
