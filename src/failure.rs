//! Why a far end (an MQTT broker, a database) cannot be reached or written to: the
//! [`Failure`] every sink and the MQTT source log, count and show by, and how a name that does
//! not resolve is told from any other connect failure.
//!
//! A leaf: it imports no other module of the gateway, so the MQTT client code, the sinks and
//! the sources can all use it.

/// Why `host` does not resolve, asked after a connect failed: a name the resolver does not
/// know is told apart by the step that fails, not by the wording of an error (each client
/// library words the resolver's failure its own way, inside a plain I/O error).
pub(crate) async fn resolution_failure(host: &str, port: u16) -> Option<String> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(_) => None,
            None => Some(format!("{host}: the name has no addresses")),
        },
        Err(e) => Some(format!("{host}: {e}")),
    }
}

/// Why a sink cannot reach or write to its far end. Each distinct failure is logged once and
/// named in `last_error`, `/readyz` and the outage event; `Display` gives those words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens at the address.
    ConnectionRefused,
    /// The host name does not resolve.
    NameResolution,
    /// An established connection broke.
    ConnectionLost,
    /// The MQTT broker answered CONNECT with a refusal (credentials, client id).
    RefusedByBroker,
    /// The far end stopped answering in time.
    Timeout,
    /// The TLS handshake failed (certificate, CA, host name).
    Tls,
    /// Any other failure to connect.
    ConnectionFailed,
    /// The far end broke the protocol (an acknowledgement never came).
    ProtocolError,
    /// Plaintext was sent to a TLS port.
    TlsRequired,
    /// The server could not be connected to.
    Unreachable,
    /// The HTTP request failed after connecting.
    RequestFailed,
    /// The server speaks another InfluxDB API than `[influxdb] api` says.
    WrongApi,
    /// Credentials refused (401/403).
    Authentication,
    /// The database or bucket does not exist (404).
    NotFound,
    /// Any other error status.
    ServerError,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::ConnectionRefused => "connection refused",
            Failure::NameResolution => "name resolution failed",
            Failure::ConnectionLost => "connection lost",
            Failure::RefusedByBroker => "refused by broker",
            Failure::Timeout => "timeout",
            Failure::Tls => "tls failure",
            Failure::ConnectionFailed => "connection failed",
            Failure::ProtocolError => "protocol error",
            Failure::TlsRequired => "tls required",
            Failure::Unreachable => "unreachable",
            Failure::RequestFailed => "request failed",
            Failure::WrongApi => "wrong API",
            Failure::Authentication => "authentication failed",
            Failure::NotFound => "database or bucket not found",
            Failure::ServerError => "server error",
        })
    }
}
