//! The MQTT client side both MQTT users share (the sink, which publishes, and the central
//! ingest source, which subscribes): where the brokers are and how to log in ([`Connection`]),
//! rumqttc's options for one broker, the event loop run in a task of its own
//! ([`EventDriver`]), a one-off connection for `check` ([`probe_all`]), and a connection
//! error sorted into a [`Failure`] ([`diagnose`]).
//!
//! What each user does with the connection (clean session or not, last will, window, manual
//! acknowledgements) stays with that user.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;

use crate::failure::{resolution_failure, Failure};
use crate::secret::Secret;

/// Largest MQTT packet sent or taken (rumqttc's default is 10 KiB: a packet event of 300
/// readings is 21 KB). A packet event of `READINGS_PER_EVENT` readings of the longest names
/// fits several times.
const MAX_PACKET_BYTES: usize = 4 << 20;

/// The broker(s) a connection goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerTarget {
    /// Brokers the user runs: one, or the nodes of a cluster, tried in turn (never empty).
    External(Vec<Broker>),
    /// The broker inside the gateway, listening here.
    Embedded(SocketAddr),
}

/// One broker of a `broker_url` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// TLS settings of an MQTT connection, files already read.
#[derive(Clone)]
pub struct MqttTls {
    /// PEM CA certificate(s); `None` = the system's trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key for mutual TLS.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// How to reach and log in to the brokers: what every connection of one MQTT user shares.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The broker(s).
    pub target: BrokerTarget,
    /// Fixed client id (persistent session).
    pub client_id: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// TLS (`mqtts://`); never a plaintext fallback.
    pub tls: Option<MqttTls>,
}

impl Connection {
    /// How many brokers can be tried.
    pub fn broker_count(&self) -> usize {
        match &self.target {
            BrokerTarget::External(brokers) => brokers.len(),
            BrokerTarget::Embedded(_) => 1,
        }
    }

    /// The `i`th broker (modulo their number) as host and port.
    pub fn broker(&self, i: usize) -> (String, u16) {
        match &self.target {
            BrokerTarget::External(brokers) => {
                let b = &brokers[i % brokers.len()];
                (b.host.clone(), b.port)
            }
            BrokerTarget::Embedded(addr) => (addr.ip().to_string(), addr.port()),
        }
    }

    /// The `i`th broker as a URL for logs and status (`mqtts://` with TLS).
    pub fn broker_url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        match &self.target {
            BrokerTarget::External(_) => {
                let (host, port) = self.broker(i);
                match host.contains(':') {
                    true => format!("{scheme}://[{host}]:{port}"),
                    false => format!("{scheme}://{host}:{port}"),
                }
            }
            BrokerTarget::Embedded(addr) => format!("{scheme}://{addr} (embedded)"),
        }
    }

    /// Every broker's URL, comma separated.
    pub fn broker_urls(&self) -> String {
        (0..self.broker_count())
            .map(|i| self.broker_url(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The embedded broker's login, when the gateway runs one with a username: every client
    /// must present it.
    pub fn login(&self) -> Option<(String, String)> {
        self.username.clone().map(|user| {
            let password = self.password.as_ref().map(|p| p.expose().to_string());
            (user, password.unwrap_or_default())
        })
    }

    /// The `broker`th broker's address, keep-alive, TLS and login, under `client_id`.
    pub fn options(&self, client_id: String, broker: usize) -> MqttOptions {
        let (host, port) = self.broker(broker);
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(self.keep_alive)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(tls) = &self.tls {
            opts.set_transport(Transport::tls_with_config(tls_config(tls)));
        }
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map(|p| p.expose()).unwrap_or("");
            opts.set_credentials(user.clone(), password);
        }
        opts
    }
}

/// The rustls configuration for `tls`: its CA (or the system's roots) and client certificate.
fn tls_config(tls: &MqttTls) -> TlsConfiguration {
    let client_auth = tls
        .client
        .as_ref()
        .map(|(cert, key)| (cert.clone(), key.expose().as_bytes().to_vec()));
    match &tls.ca_pem {
        Some(ca) => TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth,
        },
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
            // Both files were checked when the config was loaded.
            let config = match client_auth.and_then(|(c, k)| client_identity(&c, &k)) {
                Some((certs, key)) => match builder.clone().with_client_auth_cert(certs, key) {
                    Ok(config) => config,
                    Err(error) => {
                        tracing::error!(%error, "client certificate unusable; connecting without it");
                        builder.with_no_client_auth()
                    }
                },
                None => builder.with_no_client_auth(),
            };
            TlsConfiguration::Rustls(std::sync::Arc::new(config))
        }
    }
}

type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

fn client_identity(cert: &[u8], key: &[u8]) -> Option<Identity> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key).ok()?;
    Some((certs, key))
}

/// [`probe`] of every broker of the list: the URLs that accepted, and each failure with its
/// URL.
pub async fn probe_all(conn: &Connection, timeout: Duration) -> (Vec<String>, Vec<String>) {
    let mut accepted = Vec::new();
    let mut failed = Vec::new();
    for i in 0..conn.broker_count() {
        let url = conn.broker_url(i);
        match probe(conn, i, timeout).await {
            Ok(()) => accepted.push(url),
            Err(e) => failed.push(format!("{url}: {e}")),
        }
    }
    (accepted, failed)
}

/// Connects once to the `broker`th broker as its user would (TLS, login), under a separate
/// client id, without a last will and with a clean session so a running gateway's session is
/// untouched; for `check`.
async fn probe(conn: &Connection, broker: usize, timeout: Duration) -> Result<(), String> {
    // A short id of its own (23 characters at most suit every MQTT 3.1.1 broker).
    let id = fnv1a(conn.client_id.as_bytes());
    let mut opts = conn.options(format!("iiot-check-{id:08x}"), broker);
    opts.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(opts, 4);
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(err) => return Err(diagnose(&err, conn, broker).await),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err((kind, detail))) => Err(format!("{kind}: {detail}")),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// FNV-1a, 32 bits: small, and stable across versions and platforms (client ids are made
/// from it).
pub(crate) fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// [`classify`], with an I/O failure of a broker whose name does not resolve (any more)
/// named as such.
pub(crate) async fn diagnose(
    err: &ConnectionError,
    conn: &Connection,
    broker: usize,
) -> (Failure, String) {
    let (kind, detail) = classify(err);
    let external = matches!(conn.target, BrokerTarget::External(_));
    if external && kind == Failure::ConnectionLost {
        if let ConnectionError::Io(_) = err {
            let (host, port) = conn.broker(broker);
            if let Some(why) = resolution_failure(&host, port).await {
                return (Failure::NameResolution, why);
            }
        }
    }
    (kind, detail)
}

/// Sorts a connection error into a state for the log (one line per state change).
fn classify(err: &ConnectionError) -> (Failure, String) {
    use ConnectionError as E;
    let kind = match err {
        E::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Failure::ConnectionRefused,
        E::Io(_) => Failure::ConnectionLost,
        E::ConnectionRefused(code) => {
            let detail = format!("broker refused the connection: {code:?} (check [mqtt] username/password and client_id)");
            return (Failure::RefusedByBroker, detail);
        }
        E::NetworkTimeout | E::FlushTimeout => Failure::Timeout,
        E::Tls(e) => {
            let detail = format!("TLS: {e} (check [mqtt] ca_file, client_cert_file and client_key_file, and that the broker's certificate names this host)");
            return (Failure::Tls, detail);
        }
        E::MqttState(_) => Failure::ConnectionLost,
        _ => Failure::ConnectionFailed,
    };
    (kind, err.to_string())
}

/// Runs rumqttc's event loop in its own task and hands its events over a channel.
///
/// `EventLoop::poll` must not be cancelled: a poll dropped while it is connecting (as a
/// `select!` does whenever another branch wins) leaves a half-made connection behind and the
/// next poll opens a second one, which makes the broker publish our last will. Only the
/// channel receiver is ever raced; the task is aborted when the session ends.
pub(crate) struct EventDriver {
    rx: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventDriver {
    pub(crate) fn spawn(mut event_loop: EventLoop, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let failed = event.is_err();
                if tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        EventDriver { rx, task }
    }

    /// The next event; a closed channel reads as a lost connection.
    // rumqttc's own error type is large; it is passed on once per connection, not per event.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn next(&mut self) -> Result<Event, ConnectionError> {
        self.rx.recv().await.unwrap_or_else(|| {
            Err(ConnectionError::Io(std::io::Error::other(
                "mqtt event loop ended",
            )))
        })
    }
}

impl Drop for EventDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(target: BrokerTarget, tls: bool) -> Connection {
        Connection {
            target,
            client_id: "c".into(),
            keep_alive: Duration::from_secs(30),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            username: None,
            password: None,
            tls: tls.then_some(MqttTls {
                ca_pem: None,
                client: None,
            }),
        }
    }

    #[test]
    fn broker_urls_name_each_broker_with_its_scheme() {
        let brokers = vec![
            Broker {
                host: "a.example".into(),
                port: 1883,
            },
            Broker {
                host: "::1".into(),
                port: 8883,
            },
        ];
        let c = conn(BrokerTarget::External(brokers), true);
        assert_eq!(c.broker_count(), 2);
        assert_eq!(c.broker_url(0), "mqtts://a.example:1883");
        assert_eq!(c.broker_url(3), "mqtts://[::1]:8883", "modulo their number");
        assert_eq!(
            c.broker_urls(),
            "mqtts://a.example:1883, mqtts://[::1]:8883"
        );
        let embedded = conn(
            BrokerTarget::Embedded("127.0.0.1:1883".parse().unwrap()),
            false,
        );
        assert_eq!(embedded.broker_url(0), "mqtt://127.0.0.1:1883 (embedded)");
        assert_eq!(embedded.broker(5), ("127.0.0.1".to_string(), 1883));
    }
}
