//! `[mqtt]` and `[homeassistant]`: the broker the MQTT sink publishes to (an external one
//! from `broker_url`, or the embedded broker on `embedded_listen`), its TLS files read and
//! checked, and Home Assistant discovery. A `mqtts://` URL or an embedded broker with a
//! certificate means TLS with no plaintext fallback; TLS keys without it are refused.

use std::path::{Path, PathBuf};

use super::super::defaults::{self, default_client_id};
use super::super::raw::{RawHomeAssistant, RawMqtt};
use super::super::tls::{parse_broker_url, pem_certificates, pem_has_private_key};
use super::super::{ConfigError, HomeAssistantConfig, MqttConfig, PacketEvents};
use super::Validator;
use crate::mqtt::topic::{packet_topic, validate_prefix};
use crate::mqtt::{Broker, BrokerTarget, Connection, MqttTls};
use crate::secret::Secret;

/// `[gateway] id` and `site`, for the packet events.
#[derive(Debug, Default)]
pub(super) struct GatewayIdentity {
    pub id: Option<String>,
    pub site: Option<String>,
}

impl Validator<'_> {
    /// `[mqtt] broker_url`'s brokers, and whether they speak TLS: at least one, one scheme,
    /// none twice.
    pub(super) fn brokers(
        &self,
        key: &str,
        urls: &[String],
    ) -> Result<(Vec<Broker>, bool), ConfigError> {
        let mut brokers: Vec<Broker> = Vec::with_capacity(urls.len());
        let mut scheme_tls = None;
        for url in urls {
            let (host, port, tls) = parse_broker_url(url).map_err(|e| self.err(key, e))?;
            if scheme_tls.is_some_and(|t| t != tls) {
                return Err(self.err(
                    key,
                    "mixes mqtt:// and mqtts://: every broker of the list must speak the same (there is no plaintext fallback)",
                ));
            }
            scheme_tls = Some(tls);
            let broker = Broker { host, port };
            if brokers.contains(&broker) {
                return Err(self.err(key, format!("names {url:?} twice")));
            }
            brokers.push(broker);
        }
        match scheme_tls {
            Some(tls) => Ok((brokers, tls)),
            None => Err(self.err(key, "is an empty array: name at least one broker")),
        }
    }

    /// `[mqtt]`; an unset `client_id` is [`default_client_id`] of `storage_dir`.
    pub(super) fn mqtt(
        &self,
        m: RawMqtt,
        storage_dir: &Path,
        identity: &GatewayIdentity,
    ) -> Result<MqttConfig, ConfigError> {
        let mut tls_wanted = false;
        let target = match m.broker_url {
            Some(urls) => {
                let (brokers, tls) = self.brokers("[mqtt] broker_url", &urls.0)?;
                tls_wanted = tls;
                BrokerTarget::External(brokers)
            }
            None => {
                let listen = m
                    .embedded_listen
                    .unwrap_or_else(|| defaults::EMBEDDED_LISTEN.to_string());
                BrokerTarget::Embedded(self.socket_addr("[mqtt] embedded_listen", &listen)?)
            }
        };
        let embedded_tls = self.embedded_tls(&target, m.embedded_cert_file, m.embedded_key_file)?;
        // The gateway's own sink connects to a TLS embedded broker over TLS too, trusting
        // `ca_file` or, by default, the broker's (self-signed) certificate itself.
        tls_wanted |= embedded_tls.is_some();
        let qos = m.qos.unwrap_or(defaults::QOS);
        if qos > 2 {
            return Err(self.err("[mqtt] qos", format!("must be 0, 1 or 2 (got {qos})")));
        }
        let topic_prefix = m
            .topic_prefix
            .unwrap_or_else(|| defaults::TOPIC_PREFIX.to_string());
        validate_prefix(&topic_prefix).map_err(|e| self.err("[mqtt] topic_prefix", e))?;
        // Unset: made per install from the storage dir (`--storage-dir` included), so two
        // gateways on one host never share the broker's persistent session.
        let client_id = m
            .client_id
            .unwrap_or_else(|| default_client_id(storage_dir));
        if client_id.is_empty() {
            return Err(self.err(
                "[mqtt] client_id",
                "must not be empty (the persistent session is kept under it)",
            ));
        }
        let inflight = m.inflight.unwrap_or(defaults::INFLIGHT);
        if inflight == 0 {
            return Err(self.err("[mqtt] inflight", "must be at least 1"));
        }
        let keep_alive = self.at_least_duration(
            "[mqtt] keep_alive",
            m.keep_alive.unwrap_or(defaults::KEEP_ALIVE),
            defaults::MIN_KEEP_ALIVE,
        )?;
        let ack_timeout = self.at_least_duration(
            "[mqtt] ack_timeout",
            m.ack_timeout.unwrap_or(defaults::ACK_TIMEOUT),
            defaults::MIN_ACK_TIMEOUT,
        )?;
        let password = self.secret(
            m.password,
            m.password_file,
            "MQTT_PASSWORD",
            "[mqtt] password_file",
        )?;
        let ca_file = m
            .ca_file
            .or_else(|| embedded_tls.as_ref().map(|(cert, _)| cert.clone()));
        let tls = self.mqtt_tls(
            "[mqtt]",
            "broker_url",
            tls_wanted,
            ca_file,
            m.client_cert_file,
            m.client_key_file,
        )?;
        let packet_events = match m.packet_events {
            Some(true) => Some(self.packet_events(identity, &client_id, &topic_prefix)?),
            _ => None,
        };
        Ok(MqttConfig {
            connection: Connection {
                target,
                client_id,
                keep_alive,
                reconnect_initial: m.reconnect_initial.unwrap_or(defaults::RECONNECT_INITIAL),
                reconnect_max: m.reconnect_max.unwrap_or(defaults::RECONNECT_MAX),
                username: m.username,
                password,
                tls,
            },
            topic_prefix,
            qos,
            retain: m.retain.unwrap_or(defaults::RETAIN),
            inflight,
            ack_timeout,
            embedded_tls,
            homeassistant: None,
            packet_events,
        })
    }

    /// `[mqtt] embedded_cert_file` and `embedded_key_file`: both or neither, readable, and
    /// only for the embedded broker.
    fn embedded_tls(
        &self,
        target: &BrokerTarget,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        Ok(match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                if !matches!(target, BrokerTarget::Embedded(_)) {
                    return Err(self.err(
                        "[mqtt] embedded_cert_file",
                        "is for the embedded broker, but broker_url names another broker",
                    ));
                }
                for (path, key_name) in [(&cert, "embedded_cert_file"), (&key, "embedded_key_file")]
                {
                    if !path.is_file() {
                        return Err(self.err(
                            &format!("[mqtt] {key_name}"),
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(self.err(
                    "[mqtt] embedded_key_file",
                    "required with embedded_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "[mqtt] embedded_cert_file",
                    "required with embedded_key_file",
                ))
            }
        })
    }

    /// `[mqtt] packet_events = true`: the topic, and what the events say about this gateway
    /// (`[gateway] id`, by default the client id, and `site`).
    fn packet_events(
        &self,
        identity: &GatewayIdentity,
        client_id: &str,
        topic_prefix: &str,
    ) -> Result<PacketEvents, ConfigError> {
        let gateway_id = identity.id.clone().unwrap_or_else(|| client_id.to_string());
        if gateway_id.is_empty()
            || gateway_id.len() > 64
            || gateway_id.contains(['/', '+', '#', '\0'])
        {
            return Err(self.err(
                "[gateway] id",
                format!(
                    "{gateway_id:?}: use 1 to 64 characters without / + # (it is a topic level)"
                ),
            ));
        }
        if identity
            .site
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 256)
        {
            return Err(self.err("[gateway] site", "use 1 to 256 characters"));
        }
        Ok(PacketEvents {
            topic: packet_topic(topic_prefix, &gateway_id),
            gateway_id,
            site: identity.site.clone(),
        })
    }

    /// Refuses `[gateway] id` and `site` when no packet event would carry them.
    pub(super) fn identity_unused(&self, identity: &GatewayIdentity) -> Result<(), ConfigError> {
        let unused = "only packet events carry it: set [mqtt] packet_events = true, or remove it";
        match identity {
            GatewayIdentity { id: Some(_), .. } => Err(self.err("[gateway] id", unused)),
            GatewayIdentity { site: Some(_), .. } => Err(self.err("[gateway] site", unused)),
            _ => Ok(()),
        }
    }

    /// The TLS settings of the MQTT connection, when `wanted` (`mqtts://`, or the embedded
    /// broker with a certificate); its keys set without TLS are refused.
    pub(super) fn mqtt_tls(
        &self,
        section: &str,
        url_key: &str,
        wanted: bool,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<MqttTls>, ConfigError> {
        if !wanted {
            if let Some((key, _)) = [
                ("ca_file", &ca),
                ("client_cert_file", &cert),
                ("client_key_file", &key),
            ]
            .into_iter()
            .find(|(_, v)| v.is_some())
            {
                return Err(self.err(
                    &format!("{section} {key}"),
                    format!("is set but {url_key} is not mqtts://; use mqtts://host:8883 (there is no plaintext fallback)"),
                ));
            }
            return Ok(None);
        }
        let read = |path: &PathBuf, key: &str| {
            std::fs::read(path).map_err(|e| {
                self.err(
                    &format!("{section} {key}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        let ca_pem = ca.as_ref().map(|p| read(p, "ca_file")).transpose()?;
        if let Some(pem) = &ca_pem {
            if pem_certificates(pem) == 0 {
                return Err(self.err(&format!("{section} ca_file"), "holds no PEM certificate"));
            }
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => {
                let key_pem = read(&key, "client_key_file")?;
                let key_pem = String::from_utf8(key_pem).map_err(|_| {
                    self.err(
                        &format!("{section} client_key_file"),
                        "is not a PEM text file",
                    )
                })?;
                let cert_pem = read(&cert, "client_cert_file")?;
                if pem_certificates(&cert_pem) == 0 {
                    return Err(self.err(
                        &format!("{section} client_cert_file"),
                        "holds no PEM certificate",
                    ));
                }
                if !pem_has_private_key(key_pem.as_bytes()) {
                    return Err(self.err(
                        &format!("{section} client_key_file"),
                        "holds no PEM private key",
                    ));
                }
                Some((cert_pem, Secret::new(key_pem)))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err(
                    &format!("{section} client_key_file"),
                    "required with client_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(
                    &format!("{section} client_cert_file"),
                    "required with client_key_file",
                ))
            }
        };
        Ok(Some(MqttTls { ca_pem, client }))
    }

    /// `[homeassistant]`: discovery, published through the MQTT sink (`mqtt`), when enabled.
    pub(super) fn homeassistant(
        &self,
        ha: RawHomeAssistant,
        mqtt: Option<&mut MqttConfig>,
    ) -> Result<(), ConfigError> {
        if !ha.enabled.unwrap_or(defaults::HOMEASSISTANT_ENABLED) {
            return Ok(());
        }
        let Some(m) = mqtt else {
            return Err(self.err(
                "[homeassistant] enabled",
                "needs an [mqtt] section: discovery is published to the MQTT broker",
            ));
        };
        let gateway_id = ha
            .gateway_id
            .unwrap_or_else(|| defaults::HOMEASSISTANT_GATEWAY_ID.to_string());
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !valid(&gateway_id) {
            return Err(self.err(
                "[homeassistant] gateway_id",
                "use letters, digits, _ and - only",
            ));
        }
        let discovery_prefix = ha
            .discovery_prefix
            .unwrap_or_else(|| defaults::HOMEASSISTANT_DISCOVERY_PREFIX.to_string());
        validate_prefix(&discovery_prefix)
            .map_err(|e| self.err("[homeassistant] discovery_prefix", e))?;
        m.homeassistant = Some(HomeAssistantConfig {
            discovery_prefix,
            gateway_id,
            command_nodes: Default::default(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::default_client_id;
    use super::super::super::test_load as load;

    #[test]
    fn the_default_client_id_is_stable_per_install_and_short() {
        let a = default_client_id(Path::new("/var/lib/iiot-gateway"));
        assert_eq!(a, default_client_id(Path::new("/var/lib/iiot-gateway")));
        assert_ne!(a, default_client_id(Path::new("/srv/other")));
        assert!(a.starts_with("iiot-") && a.len() <= 22, "{a}");
        assert!(
            a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{a}"
        );
        let c = load("[mqtt]\nbroker_url = \"mqtt://h:1883\"\n[storage]\ndir = \"/var/lib/x\"\n")
            .unwrap();
        assert_eq!(
            c.mqtt.unwrap().connection.client_id,
            default_client_id(Path::new("/var/lib/x"))
        );
        let c = load("[mqtt]\nbroker_url = \"mqtt://h:1883\"\nclient_id = \"mine\"\n").unwrap();
        assert_eq!(c.mqtt.unwrap().connection.client_id, "mine");
    }

    #[test]
    fn broker_url_takes_one_url_or_the_nodes_of_a_cluster_in_one_scheme() {
        let c =
            load("[mqtt]\nbroker_url = [\"mqtt://n1:1883\", \"n2:1884\", \"tcp://[::1]:1885\"]\n")
                .unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.connection.broker_count(), 3);
        assert_eq!(m.connection.broker_url(0), "mqtt://n1:1883");
        assert_eq!(m.connection.broker_url(1), "mqtt://n2:1884");
        assert_eq!(m.connection.broker_url(2), "mqtt://[::1]:1885");
        assert_eq!(
            m.connection.broker(3),
            ("n1".to_string(), 1883),
            "tried in turn"
        );
        let one = load("[mqtt]\nbroker_url = \"mqtt://n1\"\n").unwrap();
        assert_eq!(one.mqtt.unwrap().connection.broker_count(), 1);

        let refused = |text: &str| load(text).unwrap_err().to_string();
        let e = refused("[mqtt]\nbroker_url = [\"mqtt://n1\", \"mqtts://n2\"]\n");
        assert!(
            e.contains("[mqtt] broker_url") && e.contains("mixes mqtt:// and mqtts://"),
            "{e}"
        );
        let e = refused("[mqtt]\nbroker_url = []\n");
        assert!(
            e.contains("[mqtt] broker_url") && e.contains("empty array"),
            "{e}"
        );
        let e = refused("[mqtt]\nbroker_url = [\"mqtt://n1:1883\", \"n1\"]\n");
        assert!(e.contains("names \"n1\" twice"), "{e}");
        let e = refused("[mqtt]\nbroker_url = 1883\n");
        assert!(
            e.contains("broker_url") && e.contains("a URL or an array of URLs"),
            "{e}"
        );
        let e = refused("[mqtt]\nbroker_url = [\"mqtt://n1\", 2]\n");
        assert!(e.contains("broker_url"), "{e}");
    }

    #[test]
    fn packet_events_name_the_gateway_and_its_site_only_when_on() {
        let c = load(
            "[mqtt]\nbroker_url = \"mqtt://h\"\nclient_id = \"edge-7\"\npacket_events = true\n",
        )
        .unwrap();
        let pe = c.mqtt.unwrap().packet_events.unwrap();
        assert_eq!(
            pe.topic, "iiot/gateway/edge-7/packets",
            "the client id by default"
        );
        assert_eq!(pe.site, None);
        let c = load("[gateway]\nid = \"e1\"\nsite = \"plant a\"\n[mqtt]\nbroker_url = \"mqtt://h\"\ntopic_prefix = \"f/x\"\npacket_events = true\n")
            .unwrap();
        let pe = c.mqtt.unwrap().packet_events.unwrap();
        assert_eq!(
            (
                pe.topic.as_str(),
                pe.gateway_id.as_str(),
                pe.site.as_deref()
            ),
            ("f/x/gateway/e1/packets", "e1", Some("plant a"))
        );

        let refused = |text: &str| load(text).unwrap_err().to_string();
        let e = refused("[gateway]\nsite = \"s\"\n[mqtt]\nbroker_url = \"mqtt://h\"\n");
        assert!(
            e.contains("[gateway] site: only packet events carry it"),
            "{e}"
        );
        let e = refused(
            "[gateway]\nid = \"a/b\"\n[mqtt]\nbroker_url = \"mqtt://h\"\npacket_events = true\n",
        );
        assert!(
            e.contains("[gateway] id") && e.contains("topic level"),
            "{e}"
        );
        let e = refused("[gateway]\nid = \"e\"\n[source]\nkind = \"stdin\"\n");
        assert!(
            e.contains("[gateway] id: only packet events carry it"),
            "{e}"
        );
    }
}
