//! Helpers the validator uses for the TLS and broker keys: counting the certificates and
//! finding the private key in a PEM file, and splitting `[mqtt] broker_url` into host, port
//! and whether it asks for TLS. Pure functions of their input, no file access.

use super::defaults;

/// Number of certificates in a PEM file.
pub(super) fn pem_certificates(pem: &[u8]) -> usize {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter(Result::is_ok)
        .count()
}

/// Whether a PEM file holds a private key (PKCS#1, PKCS#8 or SEC1).
pub(super) fn pem_has_private_key(pem: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).is_ok()
}

/// `mqtt://host:port`, `mqtts://host:port`, `tcp://host:port`, `host:port` or `host` →
/// (host, port, tls). Default port 1883, or 8883 for `mqtts://`.
pub(super) fn parse_broker_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(format!(
            "unsupported scheme {scheme:?} in {url:?}; use mqtt://host:port or mqtts://host:port"
        ))
        }
        None => (url, false),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err("credentials in the URL would be printed with it: use [mqtt] username and password (or MQTT_PASSWORD) instead".to_string());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("bad port {port:?} in {url:?}"))?;
            (host, port)
        }
        _ => (
            rest,
            if tls {
                defaults::MQTTS_PORT
            } else {
                defaults::MQTT_PORT
            },
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in {url:?}; use mqtt://host:port"));
    }
    Ok((host.to_string(), port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://h:1884").unwrap(),
            ("h".into(), 1884, false)
        );
        assert_eq!(
            parse_broker_url("tcp://h").unwrap(),
            ("h".into(), 1883, false)
        );
        assert_eq!(
            parse_broker_url("mqtts://h").unwrap(),
            ("h".into(), 8883, true)
        );
        assert_eq!(parse_broker_url("h:1").unwrap(), ("h".into(), 1, false));
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883, false)
        );
        assert!(parse_broker_url("http://h").is_err());
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(parse_broker_url("mqtt://").is_err());
    }
}
