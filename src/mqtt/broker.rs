//! The embedded MQTT broker (rumqttd): started when `[mqtt]` has no `broker_url`, so a
//! newcomer sees topics with nothing else installed. It binds 127.0.0.1:1883 by default.
//! When `[mqtt] username`/`password` are set, it requires exactly those credentials from
//! every client (the gateway's own sink logs in with them too); with
//! `embedded_cert_file`/`embedded_key_file` it listens with TLS only.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

/// Time allowed for the broker to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} for the embedded MQTT broker: {cause} (another broker running? change [mqtt] embedded_listen or --mqtt-listen, or set [mqtt] broker_url to use that broker)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// The broker thread did not come up.
    #[error("the embedded MQTT broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Starts the broker on its own threads; returns once it accepts connections.
/// `login` = (username, password) every client must present; `tls` = (certificate, key)
/// PEM files for a TLS-only listener.
pub fn start(
    addr: SocketAddr,
    login: Option<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(), BrokerError> {
    // rumqttd only logs a bind failure from its own thread: check the port first so the
    // user gets an error naming it.
    drop(TcpListener::bind(addr).map_err(|cause| BrokerError::Bind { addr, cause })?);
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: tls.map(|(cert, key)| TlsConfig::Rustls {
            capath: None,
            certpath: cert.display().to_string(),
            keypath: key.display().to_string(),
        }),
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 500,
            auth: login.map(|(user, password)| HashMap::from([(user, password)])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded MQTT broker stopped");
            }
        })
        .map_err(|cause| BrokerError::Bind { addr, cause })?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}
