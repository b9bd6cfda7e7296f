//! `[source]` and the hardware project's `[gateway]`: which source runs with which settings,
//! and the ingest bounds (`channel_capacity`, `max_line_length`, `drain_timeout`). `[source]`
//! is read as its kind's struct ([`RawSource::from_table`]), so a key of another kind is
//! refused by construction; `[gateway]`'s probe keys act only for probe-rs, and never twice.

use std::path::Path;
use std::time::Duration;

use super::super::defaults::{self, default_client_id};
use super::super::raw::{self, RawGateway, RawSource};
use super::super::{
    ConfigError, FileConfig, IngestConfig, MqttSourceConfig, ProcessConfig, ProcessKind,
    Rylr998Config, SerialConfig, SimulatorConfig, SourceConfig,
};
use super::{absolute, absolute_text, positive, Validator};
use crate::mqtt::topic::packet_topic;
use crate::mqtt::{BrokerTarget, Connection};
use crate::reading::MAX_NAME_LEN;

/// What the sources' defaults depend on outside `[source]`.
pub(super) struct SourceEnv<'a> {
    /// The storage dir (the default client ids are made from it).
    pub storage_dir: &'a Path,
    /// `[mqtt] topic_prefix` or its default.
    pub topic_prefix: &'a str,
}

impl Validator<'_> {
    /// `[source]` and `[gateway]`: the source, and the bounds between it and the outbox.
    pub(super) fn source(
        &self,
        table: Option<toml::Table>,
        legacy: Option<RawGateway>,
        env: &SourceEnv<'_>,
    ) -> Result<(SourceConfig, IngestConfig), ConfigError> {
        let legacy = legacy.unwrap_or_default();
        // Without `kind`: the hardware project's [gateway] probe keys mean probe-rs.
        let default_kind = if legacy.probe_id.is_some() || legacy.firmware_path.is_some() {
            defaults::GATEWAY_SOURCE_KIND
        } else {
            defaults::SOURCE_KIND
        };
        let (kind, source_raw) = RawSource::from_table(table.unwrap_or_default(), default_kind)
            .map_err(|e| self.source_table_error(e))?;
        let (max_line_length, drain_timeout) = source_raw.common();
        let ingest = IngestConfig {
            channel_capacity: positive(
                legacy
                    .channel_capacity
                    .unwrap_or(defaults::CHANNEL_CAPACITY),
            )
            .filter(|n| *n <= defaults::MAX_CHANNEL_CAPACITY)
            .ok_or_else(|| {
                self.err(
                    "[gateway] channel_capacity",
                    format!("must be between 1 and {}", defaults::MAX_CHANNEL_CAPACITY),
                )
            })?,
            max_line_length: self.at_least(
                "[source] max_line_length",
                max_line_length.unwrap_or(defaults::MAX_LINE_LENGTH),
                defaults::MIN_LINE_LENGTH,
            )?,
            drain_timeout: drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT),
        };
        self.gateway_keys(&kind, &source_raw, &legacy)?;
        let source = self.source_kind(source_raw, legacy, env)?;
        Ok((source, ingest))
    }

    /// `kind = "mqtt"`: the broker connection, checked like `[mqtt]`'s, and the subscription.
    fn mqtt_source(
        &self,
        s: raw::RawMqttSource,
        env: &SourceEnv<'_>,
    ) -> Result<MqttSourceConfig, ConfigError> {
        let urls = s.url.ok_or_else(|| {
            self.err(
                "[source] url",
                "required for kind = \"mqtt\", e.g. \"mqtt://broker:1883\" or the nodes of a cluster",
            )
        })?;
        let (brokers, tls_wanted) = self.brokers("[source] url", &urls.0)?;
        let topic = s
            .topic
            .unwrap_or_else(|| packet_topic(env.topic_prefix, "+"));
        if topic.is_empty() || topic.starts_with("$share/") || topic.contains('\0') {
            return Err(self.err(
                "[source] topic",
                format!(
                    "{topic:?}: give the topic filter alone (share_group adds $share/<group>/)"
                ),
            ));
        }
        let subscription = match s.share_group {
            Some(group) if group.is_empty() || group.contains(['/', '+', '#']) => {
                return Err(self.err(
                    "[source] share_group",
                    format!("{group:?}: use a name without / + #"),
                ))
            }
            Some(group) => format!("$share/{group}/{topic}"),
            None => topic,
        };
        let client_id = s
            .client_id
            .unwrap_or_else(|| format!("{}-in", default_client_id(env.storage_dir)));
        if client_id.is_empty() {
            return Err(self.err(
                "[source] client_id",
                "must not be empty (the persistent session is kept under it)",
            ));
        }
        let keep_alive = self.at_least_duration(
            "[source] keep_alive",
            s.keep_alive.unwrap_or(defaults::KEEP_ALIVE),
            defaults::MIN_KEEP_ALIVE,
        )?;
        let password = self.secret(
            s.password,
            s.password_file,
            "MQTT_SOURCE_PASSWORD",
            "[source] password_file",
        )?;
        let tls = self.mqtt_tls(
            "[source]",
            "url",
            tls_wanted,
            s.ca_file,
            s.client_cert_file,
            s.client_key_file,
        )?;
        Ok(MqttSourceConfig {
            connection: Connection {
                target: BrokerTarget::External(brokers),
                client_id,
                keep_alive,
                reconnect_initial: s.reconnect_initial.unwrap_or(defaults::RECONNECT_INITIAL),
                reconnect_max: s.reconnect_max.unwrap_or(defaults::RECONNECT_MAX),
                username: s.username,
                password,
                tls,
            },
            subscription,
        })
    }

    /// `[source]` that could not be read as its kind, named.
    fn source_table_error(&self, e: raw::SourceTableError) -> ConfigError {
        match e {
            raw::SourceTableError::UnknownKind(kind) => self.err(
                "[source] kind",
                format!("unknown kind {kind:?}: use one of {}", raw::SOURCE_KINDS.join(", ")),
            ),
            raw::SourceTableError::NotAKey { kind, key, keys } => self.err(
                &format!("[source] {key}"),
                format!(
                    "not a key of kind = {kind:?}, which uses {}: remove it, or set the kind it belongs to",
                    keys.join(", ")
                ),
            ),
            raw::SourceTableError::Other(message) => ConfigError {
                file: self.file.to_string(),
                message: format!("[source] {message}"),
            },
        }
    }

    /// `[gateway]`'s probe keys act only for the probe-rs source, and not twice.
    fn gateway_keys(
        &self,
        kind: &str,
        source: &RawSource,
        legacy: &RawGateway,
    ) -> Result<(), ConfigError> {
        let set = [
            ("probe_id", legacy.probe_id.is_some()),
            ("chip", legacy.chip.is_some()),
            ("firmware_path", legacy.firmware_path.is_some()),
        ];
        for (key, is_set) in set {
            if !is_set {
                continue;
            }
            let key_name = format!("[gateway] {key}");
            let RawSource::ProbeRs(p) = source else {
                let why = if matches!(source, RawSource::Simulator(_))
                    && legacy.probe_id.is_none()
                    && legacy.firmware_path.is_none()
                {
                    "selects the probe-rs source only with firmware_path (or probe_id): add firmware_path, or remove it".to_string()
                } else {
                    format!("only the probe-rs source uses it, and [source] kind is {kind:?}: remove it")
                };
                return Err(self.err(&key_name, why));
            };
            let twice = match key {
                "probe_id" => p.probe_id.is_some(),
                "chip" => p.chip.is_some(),
                _ => p.firmware_path.is_some(),
            };
            if twice {
                return Err(self.err(
                    &key_name,
                    "also set in [source], which wins: keep one of the two",
                ));
            }
        }
        Ok(())
    }

    /// The source `kind` names, with its settings (`[gateway]`'s probe keys filling in).
    fn source_kind(
        &self,
        source: RawSource,
        legacy: RawGateway,
        env: &SourceEnv<'_>,
    ) -> Result<SourceConfig, ConfigError> {
        let restart = |initial: Option<Duration>, max: Option<Duration>| {
            (
                initial.unwrap_or(defaults::RESTART_INITIAL),
                max.unwrap_or(defaults::RESTART_MAX),
            )
        };
        Ok(match source {
            RawSource::ProbeRs(s) => {
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Process(ProcessConfig {
                    kind: ProcessKind::ProbeRs,
                    argv: self.probe_rs_argv(s, legacy)?,
                    restart_initial,
                    restart_max,
                })
            }
            RawSource::Command(s) => {
                let argv = s.command.unwrap_or_default();
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(self.err(
                        "[source] command",
                        "required for kind = \"command\": a list like [\"program\", \"arg\"]",
                    ));
                }
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Process(ProcessConfig {
                    kind: ProcessKind::Command,
                    argv,
                    restart_initial,
                    restart_max,
                })
            }
            RawSource::Serial(s) => {
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Serial(SerialConfig {
                    path: absolute(s.path.ok_or_else(|| {
                        self.err(
                            "[source] path",
                            "required for kind = \"serial\", e.g. \"/dev/ttyACM0\"",
                        )
                    })?),
                    baud: s.baud.unwrap_or(defaults::BAUD),
                    restart_initial,
                    restart_max,
                })
            }
            RawSource::Rylr998(s) => {
                let (restart_initial, restart_max) = restart(s.restart_initial, s.restart_max);
                SourceConfig::Rylr998(self.rylr998(s, restart_initial, restart_max)?)
            }
            RawSource::Mqtt(s) => SourceConfig::Mqtt(Box::new(self.mqtt_source(s, env)?)),
            RawSource::Stdin(_) => SourceConfig::Stdin,
            RawSource::File(s) => SourceConfig::File(self.file(s)?),
            RawSource::Simulator(s) => {
                let interval = self.at_least_duration(
                    "[source] interval",
                    s.interval.unwrap_or(defaults::SIM_INTERVAL),
                    defaults::MIN_SIM_INTERVAL,
                )?;
                let remote_nodes = s.remote_nodes.unwrap_or(defaults::SIM_REMOTE_NODES);
                if remote_nodes == 0 {
                    return Err(self.err("[source] remote_nodes", "must be at least 1"));
                }
                SourceConfig::Simulator(SimulatorConfig {
                    interval,
                    remote_nodes,
                    seed: s.seed,
                })
            }
        })
    }

    /// `kind = "probe-rs"`: the command line, `[gateway]`'s probe keys filling in.
    fn probe_rs_argv(
        &self,
        s: raw::RawProbeRs,
        legacy: RawGateway,
    ) -> Result<Vec<String>, ConfigError> {
        let need = |value: Option<String>, fallback: Option<String>, key: &str| {
            value.or(fallback).ok_or_else(|| {
                self.err(
                    &format!("[source] {key}"),
                    "required for kind = \"probe-rs\" (or set it in [gateway])",
                )
            })
        };
        // probe-rs picks the only attached probe by itself: the selector is optional.
        let probe = s.probe_id.or(legacy.probe_id);
        let chip = need(s.chip, legacy.chip, "chip")?;
        let firmware = absolute_text(&need(
            s.firmware_path,
            legacy.firmware_path,
            "firmware_path",
        )?);
        let program = s
            .probe_rs
            .unwrap_or_else(|| defaults::PROBE_RS_PROGRAM.to_string());
        // A program named by a path is run from that path, whatever the working directory; a
        // bare name is looked up on PATH.
        let program = if program.contains('/') {
            absolute_text(&program)
        } else {
            program
        };
        let mut argv = vec![program, "run".into()];
        if let Some(probe) = probe {
            argv.extend(["--probe".into(), probe]);
        }
        argv.extend(["--chip".into(), chip, firmware]);
        Ok(argv)
    }

    /// `kind = "file"`: the recording and the replay speed.
    fn file(&self, s: raw::RawFile) -> Result<FileConfig, ConfigError> {
        let speed = s.speed.unwrap_or(defaults::REPLAY_SPEED);
        if !(speed == 0.0
            || (defaults::MIN_REPLAY_SPEED..=defaults::MAX_REPLAY_SPEED).contains(&speed))
        {
            return Err(self.err(
                "[source] speed",
                format!(
                    "must be 0 (as fast as possible) or between {} and {} (got {speed})",
                    defaults::MIN_REPLAY_SPEED,
                    defaults::MAX_REPLAY_SPEED
                ),
            ));
        }
        Ok(FileConfig {
            path: absolute(
                s.path
                    .ok_or_else(|| self.err("[source] path", "required for kind = \"file\""))?,
            ),
            speed,
        })
    }

    /// `kind = "rylr998"`: the modem's setup, checked against what the RYLR998 takes.
    fn rylr998(
        &self,
        s: raw::RawRylr998,
        restart_initial: Duration,
        restart_max: Duration,
    ) -> Result<Rylr998Config, ConfigError> {
        let path = absolute(s.path.ok_or_else(|| {
            self.err(
                "[source] path",
                "required for kind = \"rylr998\": the modem's serial device, e.g. \"/dev/ttyUSB0\" or \"/dev/serial0\"",
            )
        })?);
        let network_id = s.network_id.unwrap_or(defaults::NETWORK_ID);
        if !((3..=15).contains(&network_id) || network_id == 18) {
            return Err(self.err(
                "[source] network_id",
                format!("the RYLR998 takes 3 to 15 or 18 (got {network_id}); every node of the link needs the same"),
            ));
        }
        let region = match s.region.as_deref() {
            None => lora_link::at::Region::Us915,
            Some(name) => lora_link::at::Region::parse(name).ok_or_else(|| {
                self.err(
                    "[source] region",
                    format!("\"{name}\" is not a region: us915 (the Americas, 915 MHz) or eu868 (Europe, 869.525 MHz), as the nodes' firmware was built (scripts/firmware --region)"),
                )
            })?,
        };
        let settings = region.settings();
        let band = s.band.unwrap_or(settings.band_hz);
        if !(820_000_000..=960_000_000).contains(&band) {
            return Err(self.err(
                "[source] band",
                format!("the RYLR998 tunes 820000000 to 960000000 Hz (got {band}): 915000000 in the Americas, 868000000 in Europe"),
            ));
        }
        // The region's parameters pass the same checks (the preamble rule depends on the
        // network id).
        let p = settings.parameters;
        let region_parameters = format!(
            "{},{},{},{}",
            p.spreading_factor, p.bandwidth, p.coding_rate, p.preamble
        );
        let parameter = parse_radio_parameters(
            s.parameter.as_deref().unwrap_or(&region_parameters),
            network_id,
        )
        .map_err(|e| self.err("[source] parameter", e))?;
        let power = s.power.unwrap_or(settings.power_dbm);
        if power > 22 {
            return Err(self.err(
                "[source] power",
                format!("the RYLR998 takes 0 to 22 dBm (got {power}); the region's rules may allow less (docs/PROTOCOL.md, \"Regions\")"),
            ));
        }
        let nodes = self.radio_nodes(s.nodes, defaults::RYLR998_NODES)?;
        Ok(Rylr998Config {
            path,
            baud: s.baud.unwrap_or(defaults::BAUD),
            address: s.address.unwrap_or(defaults::MODEM_ADDRESS),
            network_id,
            region,
            band,
            power,
            parameter,
            ack: s.ack.unwrap_or(defaults::RYLR998_ACK),
            nodes,
            restart_initial,
            restart_max,
        })
    }
}

/// `"7,9,1,7"`: spreading factor 5-11, bandwidth 7-9, coding rate 1-4, preamble 4-24 (12 when
/// the network id is not 18, per the vendor's guide).
fn parse_radio_parameters(
    text: &str,
    network_id: u8,
) -> Result<lora_link::at::RadioParameters, String> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    let [sf, bw, cr, preamble] = fields[..] else {
        return Err(format!(
            "expected four numbers \"<spreading factor>,<bandwidth>,<coding rate>,<preamble>\" like \"7,9,1,7\" (got {text:?})"
        ));
    };
    let number = |what: &str, v: &str, range: std::ops::RangeInclusive<u8>| {
        v.parse::<u8>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                format!(
                    "{what} must be {} to {} (got {v:?} in {text:?})",
                    range.start(),
                    range.end()
                )
            })
    };
    let p = lora_link::at::RadioParameters {
        spreading_factor: number("the spreading factor", sf, 5..=11)?,
        bandwidth: number(
            "the bandwidth (7 = 125 kHz, 8 = 250 kHz, 9 = 500 kHz)",
            bw,
            7..=9,
        )?,
        coding_rate: number("the coding rate (1 = 4/5 ... 4 = 4/8)", cr, 1..=4)?,
        preamble: number("the preamble", preamble, 4..=24)?,
    };
    if network_id != 18 && p.preamble != 12 {
        return Err(format!(
            "the preamble must be 12 unless network_id is 18 (got {})",
            p.preamble
        ));
    }
    Ok(p)
}

/// A node name from `[source.nodes]`: what the decoder would keep unchanged, and not one of
/// the names the link's own readings use.
pub(crate) fn validate_node_name(name: &str) -> Result<(), String> {
    let safe = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !safe {
        return Err(format!(
            "node names use 1 to {} letters, digits, _ and - (got {name:?})",
            MAX_NAME_LEN
        ));
    }
    // `unknown` names the senders not in [source.nodes] in the radio metrics.
    if matches!(name, "signal" | "stats" | "gateway" | "unknown") {
        return Err(format!(
            "{name:?} is taken by the link's own readings; choose another name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::test_load as load;
    use super::super::super::{InfluxApi, SourceConfig};
    use crate::mqtt::{Broker, BrokerTarget};

    #[test]
    fn hardware_project_config_means_probe_rs() {
        let c = load(
            r#"
[mqtt]
broker_url = "mqtt://localhost:1883"
client_id = "wk7-gateway"
topic_prefix = "iiot"
qos = 1

[influxdb]
url = "http://localhost:8086"
org = "my-org"
bucket = "sensors"
token = "my-super-secret-token"

[gateway]
probe_id = "0483:374b:066DFF555185754867143848"
chip = "STM32F446RETx"
firmware_path = "../wk5-gateway-firmware/target/thumbv7em-none-eabihf/release/wk5-gateway-firmware"
channel_capacity = 100
"#,
        )
        .expect("seed config loads");
        let SourceConfig::Process(p) = &c.source else {
            panic!("expected probe-rs, got {:?}", c.source)
        };
        assert_eq!(p.kind, crate::config::ProcessKind::ProbeRs);
        assert_eq!(
            p.argv[..6],
            [
                "probe-rs",
                "run",
                "--probe",
                "0483:374b:066DFF555185754867143848",
                "--chip",
                "STM32F446RETx"
            ]
        );
        assert_eq!(c.ingest.channel_capacity, 100);
        let m = c.mqtt.expect("mqtt");
        assert_eq!(
            m.connection.target,
            BrokerTarget::External(vec![Broker {
                host: "localhost".into(),
                port: 1883
            }])
        );
        let i = c.influx.expect("influx");
        assert!(matches!(i.api, InfluxApi::V2 { ref bucket, .. } if bucket == "sensors"));
        assert!(!format!("{i:?}").contains("my-super-secret-token"));
    }

    #[test]
    fn probe_rs_without_a_probe_id_lets_probe_rs_pick_the_probe() {
        let c = load(
            "[source]\nkind = \"probe-rs\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"/fw.elf\"\n",
        )
        .unwrap();
        let SourceConfig::Process(p) = c.source else {
            panic!()
        };
        assert_eq!(
            p.argv,
            ["probe-rs", "run", "--chip", "STM32F446RETx", "/fw.elf"]
        );
    }

    #[test]
    fn rylr998_region_sets_band_parameters_and_power_unless_set_one_by_one() {
        let rylr = |extra: &str| {
            let text = format!("[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\n{extra}");
            match load(&text).map(|c| c.source) {
                Ok(SourceConfig::Rylr998(r)) => Ok(r),
                Ok(other) => panic!("not rylr998: {other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let eu = rylr("region = \"eu868\"\n").unwrap();
        let want = lora_link::at::Region::Eu868.settings();
        assert_eq!(
            (eu.band, eu.parameter, eu.power),
            (869_525_000, want.parameters, 14)
        );
        let own = rylr("region = \"eu868\"\nband = 868100000\npower = 10\n").unwrap();
        assert_eq!((own.band, own.power), (868_100_000, 10));
        assert_eq!(own.parameter, want.parameters);
        let e = rylr("region = \"EU\"\n").unwrap_err();
        assert!(
            e.contains("[source] region") && e.contains("us915") && e.contains("eu868"),
            "{e}"
        );
        let e = rylr("power = 30\n").unwrap_err();
        assert!(e.contains("[source] power") && e.contains("0 to 22"), "{e}");
    }

    #[test]
    fn rylr998_defaults_are_the_hardware_projects() {
        let c = load("[source]\nkind = \"rylr998\"\npath = \"/dev/ttyUSB0\"\n").unwrap();
        let SourceConfig::Rylr998(r) = c.source else {
            panic!("not rylr998: {:?}", c.source)
        };
        assert_eq!(r.baud, 115_200);
        assert_eq!(r.address, 2);
        assert_eq!(r.network_id, 18);
        assert_eq!(r.band, 915_000_000);
        assert_eq!(r.parameter, lora_link::at::RadioParameters::PROJECT);
        assert_eq!((r.region, r.power), (lora_link::at::Region::Us915, 22));
        assert!(r.ack);
        assert_eq!(
            r.nodes[&1],
            crate::config::RadioNode {
                name: "node1".into(),
                auth: crate::config::NodeAuth::Missing
            }
        );
        let c = load(
            "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\nnetwork_id = 5\nparameter = \"9, 7, 4, 12\"\nack = false\n[source.nodes]\n1 = \"greenhouse\"\n7 = \"barn\"\n",
        )
        .unwrap();
        let SourceConfig::Rylr998(r) = c.source else {
            panic!()
        };
        assert_eq!(
            (r.parameter.spreading_factor, r.parameter.preamble, r.ack),
            (9, 12, false)
        );
        assert_eq!(r.nodes.get(&7).map(|n| n.name.as_str()), Some("barn"));
    }

    #[test]
    fn the_mqtt_source_subscribes_to_packet_events_shared_or_not_and_never_to_its_own() {
        let c = load("[source]\nkind = \"mqtt\"\nurl = [\"mqtt://a\", \"mqtt://b:1884\"]\nshare_group = \"ingest\"\n[storage]\ndir = \"/var/lib/x\"\n")
            .unwrap();
        let SourceConfig::Mqtt(m) = c.source else {
            panic!("{:?}", c.source)
        };
        assert_eq!(m.subscription, "$share/ingest/iiot/gateway/+/packets");
        assert_eq!(m.connection.broker_count(), 2);
        assert!(
            m.connection.client_id.ends_with("-in"),
            "not the sink's session: {}",
            m.connection.client_id
        );
        let c = load("[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\ntopic = \"plant/gateway/+/packets\"\nclient_id = \"in-1\"\n[mqtt]\nenabled = false\nbroker_url = \"mqtt://a\"\n")
            .unwrap();
        let SourceConfig::Mqtt(m) = c.source else {
            panic!()
        };
        assert_eq!(
            (m.subscription.as_str(), m.connection.client_id.as_str()),
            ("plant/gateway/+/packets", "in-1")
        );
        assert!(c.mqtt.is_none(), "[mqtt] enabled = false");

        let refused = |text: &str| load(text).unwrap_err().to_string();
        let e = refused("[source]\nkind = \"mqtt\"\n");
        assert!(e.contains("[source] url: required"), "{e}");
        let e = refused("[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\nshare_group = \"a/b\"\n");
        assert!(e.contains("[source] share_group"), "{e}");
        let e = refused("[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\nca_file = \"/x\"\n");
        assert!(
            e.contains("[source] ca_file: is set but url is not mqtts://"),
            "{e}"
        );
        // Its own packet events would come back: a loop.
        let e = refused("[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\n[mqtt]\nbroker_url = \"mqtt://a\"\npacket_events = true\n");
        assert!(e.contains("[source] topic") && e.contains("a loop"), "{e}");
        let e = refused("[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\ntopic = \"iiot/#\"\n[mqtt]\nbroker_url = \"mqtt://a\"\n");
        assert!(e.contains("a loop"), "{e}");
        // Per-reading topics do not overlap the packet events': both run.
        assert!(load(
            "[source]\nkind = \"mqtt\"\nurl = \"mqtt://a\"\n[mqtt]\nbroker_url = \"mqtt://a\"\n"
        )
        .is_ok());
    }
}
