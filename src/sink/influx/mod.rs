//! The InfluxDB sink: batches of line protocol over HTTP, gzip-compressed.
//!
//! Delivery semantics: the cursor moves only after a 2xx. Network errors, 5xx, 429 and 503
//! (honouring `Retry-After`), 401/403 and 404 are retried with exponential backoff and
//! jitter; the readings stay in the outbox meanwhile. A 400/413/422 means the server refused
//! the data itself: the batch is split in halves until the refused lines are alone, and
//! those go to the quarantine file with the server's message, so one bad point never blocks
//! the rest. Every resend is the same point (same measurement, tags and timestamp), so the
//! database never holds a duplicate.
//!
//! Security: an `https://` URL is TLS only (rustls; `https_only`, so no redirect to http
//! either), verified against `[influxdb] ca_file` when set, else against the Mozilla roots
//! built into reqwest (webpki-roots). There is no plaintext fallback. A failed handshake is
//! the state `tls failure` with rustls' reason and the setting to check; a 401/403 is
//! `authentication failed` naming `[influxdb] username/password` (v1) or `token` (v2). Both
//! are logged once per state change (see `Link`) and retried with backoff, the readings
//! staying in the outbox. Credentials travel only in headers, never in the URL, so no error
//! text can carry them.

pub mod lineproto;

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::StatusCode;
use tracing::debug;

use super::{Cursor, Link, SinkContext, SinkError};
use crate::backoff::Backoff;
use crate::config::{InfluxApi, InfluxConfig};
use crate::failure::{resolution_failure, Failure};
use crate::outbox::StoredReading;
use crate::reading::Precision;
use lineproto::encode;

/// Cursor key in the outbox.
pub const NAME: &str = "influxdb";
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a write did not succeed.
#[derive(Debug)]
enum WriteError {
    /// The server refused the data itself (400/413/422): split and quarantine.
    Rejected(String),
    /// Try again later; `retry_after` when the server said when.
    Retry {
        kind: Failure,
        detail: String,
        retry_after: Option<Duration>,
    },
}

/// An HTTP client for one InfluxDB write endpoint.
pub struct Writer {
    /// `Err` when the TLS settings could not be applied (the config check makes that
    /// unlikely): every request then fails with the reason instead of trusting other roots.
    http: Result<reqwest::Client, String>,
    cfg: InfluxConfig,
}

impl Writer {
    /// A writer for `cfg`.
    pub fn new(cfg: InfluxConfig) -> Self {
        let http = client(&cfg);
        Writer { http, cfg }
    }

    fn http(&self) -> Result<&reqwest::Client, WriteError> {
        self.http.as_ref().map_err(|e| WriteError::Retry {
            kind: Failure::Tls,
            detail: e.clone(),
            retry_after: None,
        })
    }

    /// With `api = "v2"` and a write or health check refused with `status`, whether the server
    /// is an InfluxDB 1.x (its `/ping` says `X-Influxdb-Version: 1.…`): then what to set.
    async fn wrong_api(&self, status: StatusCode) -> Option<String> {
        let InfluxApi::V2 { bucket, .. } = &self.cfg.api else {
            return None;
        };
        let http = self.http.as_ref().ok()?;
        let resp = http
            .get(format!("{}/ping", self.cfg.url))
            .send()
            .await
            .ok()?;
        let version = resp
            .headers()
            .get("X-Influxdb-Version")?
            .to_str()
            .ok()?
            .to_string();
        let minor: u32 = version
            .strip_prefix("1.")?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        let url = &self.cfg.url;
        let fix = format!(
            "set api = \"v1\", database = \"{bucket}\" (or the database to write to) and, with authentication on, username and password in [influxdb]"
        );
        Some(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "{url} is InfluxDB {version}, which logs in with a username and password, not a 2.x token: {fix}"
            ),
            _ if minor < 8 => format!(
                "{url} is InfluxDB {version}, which has no v2 API (org, bucket and token are for 2.x and 3.x): {fix}"
            ),
            _ => format!(
                "{url} is InfluxDB {version}: its v2 write takes the bucket as a database, and {bucket:?} is none: create that database, or {fix}"
            ),
        })
    }

    /// Checks that the server answers (`/health` for v2, `/ping` for v1).
    pub async fn probe(&self) -> Result<(), String> {
        let path = match self.cfg.api {
            InfluxApi::V2 { .. } => "/health",
            InfluxApi::V1 { .. } => "/ping",
        };
        let url = format!("{}{path}", self.cfg.url);
        let http = self.http.as_ref().map_err(|e| format!("{url}: {e}"))?;
        match http.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                match self.wrong_api(resp.status()).await {
                    Some(wrong) => Err(wrong),
                    None => Err(format!("{url} answered {}", resp.status())),
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                match classify_status(status, &text, &self.cfg) {
                    WriteError::Retry {
                        kind: Failure::TlsRequired,
                        detail,
                        ..
                    } => Err(format!("{url}: {detail}")),
                    _ => Err(format!("{url} answered {status}")),
                }
            }
            Err(e) => match tls_problem(&e, &self.cfg) {
                Some(detail) => Err(format!("{url}: {detail}")),
                None => Err(format!("{url}: {}", error_chain(&e))),
            },
        }
    }

    /// Sends an empty write: proves the credentials and that the database or bucket exists,
    /// without writing a point (an empty body refused as bad data still passed both).
    pub async fn check_write(&self) -> Result<(), String> {
        match self.write("").await {
            Ok(()) | Err(WriteError::Rejected(_)) => Ok(()),
            Err(WriteError::Retry { kind, detail, .. }) => Err(format!("{kind}: {detail}")),
        }
    }

    async fn write(&self, body: &str) -> Result<(), WriteError> {
        let http = self.http()?;
        let mut req = match &self.cfg.api {
            InfluxApi::V2 { org, bucket, token } => {
                let req = http.post(format!("{}/api/v2/write", self.cfg.url)).query(&[
                    ("org", org.as_str()),
                    ("bucket", bucket.as_str()),
                    ("precision", self.cfg.precision.as_str()),
                ]);
                match token {
                    Some(token) => req.header("Authorization", format!("Token {}", token.expose())),
                    None => req,
                }
            }
            InfluxApi::V1 {
                database,
                username,
                password,
            } => {
                let req = http.post(format!("{}/write", self.cfg.url)).query(&[
                    ("db", database.as_str()),
                    ("precision", v1_precision(self.cfg.precision)),
                ]);
                match username {
                    Some(user) => req.basic_auth(user, password.as_ref().map(|p| p.expose())),
                    None => req,
                }
            }
        };
        req = req.header("Content-Type", "text/plain; charset=utf-8");
        req = match request_body(body, self.cfg.gzip) {
            (bytes, true) => req.header("Content-Encoding", "gzip").body(bytes),
            (bytes, false) => req.body(bytes),
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.request_failure(&e).await),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = resp.text().await.unwrap_or_default();
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            if let Some(wrong) = self.wrong_api(status).await {
                return Err(WriteError::Retry {
                    kind: Failure::WrongApi,
                    detail: wrong,
                    retry_after,
                });
            }
        }
        Err(match classify_status(status, &text, &self.cfg) {
            WriteError::Retry { kind, detail, .. } => WriteError::Retry {
                kind,
                detail,
                retry_after,
            },
            rejected => rejected,
        })
    }
}

impl Writer {
    /// Sorts a request that got no answer: TLS, a name that does not resolve, nothing
    /// listening, or a failure after connecting.
    async fn request_failure(&self, e: &reqwest::Error) -> WriteError {
        if let Some(detail) = tls_problem(e, &self.cfg) {
            return WriteError::Retry {
                kind: Failure::Tls,
                detail,
                retry_after: None,
            };
        }
        let unresolved = match e
            .url()
            .and_then(|u| Some((u.host_str()?, u.port_or_known_default()?)))
        {
            Some((host, port)) if e.is_connect() => resolution_failure(host, port).await,
            _ => None,
        };
        let kind = match unresolved {
            Some(_) => Failure::NameResolution,
            None if e.is_connect() => Failure::Unreachable,
            None => Failure::RequestFailed,
        };
        WriteError::Retry {
            kind,
            detail: error_chain(e),
            retry_after: None,
        }
    }
}

/// The HTTP client for `cfg`: TLS settings applied, or the reason they could not be.
fn client(cfg: &InfluxConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)));
    if let Some(tls) = &cfg.tls {
        // Never plaintext, not even after a redirect.
        builder = builder.https_only(true);
        if let Some(pem) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("[influxdb] ca_file unusable: {}", error_chain(&e)))?;
            // The private CA replaces the built-in roots, as `[mqtt] ca_file` does.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    builder.build().map_err(|e| {
        format!(
            "TLS setup failed: {} (check [influxdb] ca_file)",
            error_chain(&e)
        )
    })
}

/// rustls' error somewhere in `e`'s chain. `io::Error::source` skips the error it wraps, and
/// hyper-rustls wraps tokio-rustls' `io::Error(rustls::Error)` in another `io::Error`, so
/// wrapped I/O errors are opened with `get_ref`.
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        if let Some(tls) = rustls_cause(inner) {
            return Some(tls);
        }
    }
    e.source().and_then(rustls_cause)
}

/// Sorts a non-2xx answer (no I/O). `retry_after` is left for the caller to fill in.
fn classify_status(status: StatusCode, text: &str, cfg: &InfluxConfig) -> WriteError {
    let message = format!("{status}: {}", text.trim());
    match status {
        // Go's HTTP server answers a plaintext request on its TLS port with this 400. It is
        // not the data's fault: quarantining it would lose every reading.
        StatusCode::BAD_REQUEST if text.contains("HTTP request to an HTTPS server") => {
            WriteError::Retry {
                kind: Failure::TlsRequired,
                detail: format!(
                    "{message} (the server speaks HTTPS: use https:// in [influxdb] url, with ca_file for a private CA)"
                ),
                retry_after: None,
            }
        }
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY => WriteError::Rejected(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let check = match (&cfg.api, status) {
                (InfluxApi::V1 { .. }, StatusCode::UNAUTHORIZED) => {
                    "check [influxdb] username/password; INFLUXDB_PASSWORD or password_file override password"
                }
                (InfluxApi::V1 { .. }, _) => {
                    "check that [influxdb] username may write to [influxdb] database"
                }
                (InfluxApi::V2 { .. }, StatusCode::UNAUTHORIZED) => {
                    "check [influxdb] token; INFLUXDB_TOKEN or token_file override it"
                }
                (InfluxApi::V2 { .. }, _) => {
                    "check that [influxdb] token may write to [influxdb] bucket"
                }
            };
            WriteError::Retry {
                kind: Failure::Authentication,
                detail: format!("{message} ({check})"),
                retry_after: None,
            }
        }
        StatusCode::NOT_FOUND => WriteError::Retry {
            kind: Failure::NotFound,
            detail: format!("{message} (create it, or fix [influxdb] bucket / database / org)"),
            retry_after: None,
        },
        _ => WriteError::Retry {
            kind: Failure::ServerError,
            detail: message,
            retry_after: None,
        },
    }
}

/// The TLS failure behind a request error, as a log detail naming the setting to check;
/// `None` when the request failed for another reason.
fn tls_problem(e: &(dyn std::error::Error + 'static), cfg: &InfluxConfig) -> Option<String> {
    let reason = rustls_cause(e)?.to_string();
    let check = match cfg.tls.as_ref().and_then(|t| t.ca_pem.as_ref()) {
        Some(_) => "check that [influxdb] ca_file holds the CA that signed the server's certificate and that the certificate names this host",
        None => "the server's certificate must chain to the built-in Mozilla roots: for a private CA set [influxdb] ca_file; the certificate must name this host",
    };
    Some(format!("TLS: {reason} ({check})"))
}

/// Runs the sink until finished or aborted.
pub async fn run(cfg: InfluxConfig, ctx: &SinkContext) -> Result<(), SinkError> {
    let mut cursor = Cursor::load(NAME, ctx)?;
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
    let mut link = Link::new(ctx.events.clone());
    let target = cfg.url.clone();
    let batch_size = cfg.batch_size;
    let flush_interval = cfg.flush_interval;
    let writer = Writer::new(cfg);
    // A known state before the first write (for `/readyz`): the server answers or not.
    tokio::select! {
        probe = writer.probe() => ctx.status.set_error(probe.err().map(|e| format!("unreachable: {e}"))),
        () = ctx.abort.cancelled() => return Ok(()),
    }
    let mut committed = ctx.committed.clone();
    loop {
        committed.borrow_and_update();
        let finishing = ctx.finish.is_cancelled();
        let mut batch = ctx.outbox.read_after(cursor.value, batch_size)?;
        if batch.is_empty() {
            if finishing {
                cursor.persist(ctx);
                return Ok(());
            }
            tokio::select! {
                () = ctx.abort.cancelled() => return Ok(()),
                () = ctx.finish.cancelled() => continue,
                changed = committed.changed() => {
                    if changed.is_err() {
                        // The ingest stage ended; `finish` follows.
                        ctx.finish.cancelled().await;
                    }
                    continue;
                }
                // A cursor move is stored at most every CURSOR_PERSIST_EVERY (a write per
                // request was a sixth of the CPU at 1,000 packets/s), and never waits long.
                () = tokio::time::sleep(cursor.persist_due()), if cursor.unpersisted() => {
                    cursor.persist(ctx);
                }
            }
            continue;
        }
        // No timer on the data path: a batch goes out as soon as there is one and no request
        // is in flight; what arrives meanwhile is the next batch (natural batching).
        // `flush_interval`, when set, is a minimum batching delay.
        if batch.len() < batch_size && !finishing && !flush_interval.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(flush_interval) => {}
                () = ctx.finish.cancelled() => {}
                () = ctx.abort.cancelled() => return Ok(()),
            }
            batch = ctx.outbox.read_after(cursor.value, batch_size)?;
        }
        loop {
            for r in &batch {
                cursor.sending(r.seq, r.ts_ns, r.is_event(), ctx);
            }
            match deliver(&writer, &batch, ctx).await {
                Ok(()) => {
                    backoff.reset();
                    link.up(NAME, &target);
                    if !ctx
                        .status
                        .connected
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        ctx.status.set_endpoint(Some(target.clone()));
                    }
                    ctx.status.set_error(None);
                    if let Some(last) = batch.last() {
                        cursor.advance(last.seq, ctx);
                    }
                    break;
                }
                Err((kind, detail, retry_after)) => {
                    // The batch is read again after the wait: holding it meanwhile would keep
                    // a whole batch (~1 MB at the default size) for the length of an outage.
                    drop(std::mem::take(&mut batch));
                    let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
                    ctx.status.set_error(Some(format!("{kind}: {detail}")));
                    ctx.status.set_endpoint(None);
                    link.down(NAME, &target, kind, &detail, delay);
                    debug!(attempt = backoff.attempts(), retry_in = ?delay, "influxdb retry scheduled");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = ctx.abort.cancelled() => return Ok(()),
                    }
                    // Read the batch again: during the outage the disk budget may have
                    // dropped some of it (on_full = "drop_oldest", counted as dropped), and
                    // those readings must not reach the database after all.
                    batch = ctx.outbox.read_after(cursor.value, batch_size)?;
                    if batch.is_empty() {
                        break;
                    }
                }
            }
        }
    }
}

/// Writes `batch`, splitting refused batches down to the refused lines (quarantined).
async fn deliver(
    writer: &Writer,
    batch: &[StoredReading],
    ctx: &SinkContext,
) -> Result<(), (Failure, String, Option<Duration>)> {
    let mut pending = vec![batch];
    while let Some(part) = pending.pop() {
        let mut body = String::with_capacity(part.len() * 64);
        for r in part {
            encode(r, writer.cfg.precision, &mut body);
        }
        match writer.write(&body).await {
            Ok(()) => {}
            Err(WriteError::Rejected(message)) if part.len() == 1 => {
                ctx.quarantine.add("influxdb", &message, body.trim_end());
            }
            Err(WriteError::Rejected(_)) => {
                let (left, right) = part.split_at(part.len() / 2);
                pending.push(right);
                pending.push(left);
            }
            Err(WriteError::Retry {
                kind,
                detail,
                retry_after,
            }) => return Err((kind, detail, retry_after)),
        }
    }
    Ok(())
}

/// Bodies shorter than this go uncompressed even with `gzip = true`: a compressor costs
/// ~300 KB of tables to set up, more CPU than sending a few hundred bytes (a packet's points,
/// which is what a request holds when the sink keeps up; measured, BENCHMARKS.md).
const GZIP_MIN_BYTES: usize = 4096;

/// The bytes to send for `body`, and whether they are gzipped.
fn request_body(body: &str, gzip: bool) -> (Vec<u8>, bool) {
    if !gzip || body.len() < GZIP_MIN_BYTES {
        return (body.as_bytes().to_vec(), false);
    }
    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(body.as_bytes());
    (gz.finish().unwrap_or_default(), true)
}

/// The v1 API's name of `p`: InfluxDB 1.x knows microseconds only as `u` and takes any name
/// it does not know as nanoseconds, silently (VictoriaMetrics and InfluxDB 3 take `u` too).
fn v1_precision(p: Precision) -> &'static str {
    match p {
        Precision::Us => "u",
        p => p.as_str(),
    }
}

/// An error and its causes, `a: b: c`, without secrets (URLs here carry none).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(influx: &str) -> InfluxConfig {
        Config::from_toml(&format!("[influxdb]\n{influx}"), "t.toml", &|_| None)
            .expect("config")
            .influx
            .expect("influx")
    }

    fn retry(e: WriteError) -> (Failure, String) {
        match e {
            WriteError::Retry { kind, detail, .. } => (kind, detail),
            WriteError::Rejected(m) => panic!("rejected: {m}"),
        }
    }

    #[test]
    fn big_bodies_are_gzipped_and_a_packets_points_are_sent_plain() {
        let line = "temperature,node=node1,unit=celsius value=21.5 1700000000000000000\n";
        let small = line.repeat(9);
        assert_eq!(
            request_body(&small, true),
            (small.as_bytes().to_vec(), false)
        );
        let big = line.repeat(1000);
        let (bytes, gzipped) = request_body(&big, true);
        assert!(
            gzipped && bytes.len() < big.len() / 10,
            "{} bytes",
            bytes.len()
        );
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut unzipped)
            .unwrap();
        assert_eq!(unzipped, big);
        assert_eq!(request_body(&big, false), (big.as_bytes().to_vec(), false));
    }

    #[test]
    fn a_refused_login_names_the_setting_of_its_api() {
        let v1 = cfg("url = \"http://x\"\napi = \"v1\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw-Secret-1\"\n");
        let body = r#"{"error":"authorization failed"}"#;
        let (kind, detail) = retry(classify_status(StatusCode::UNAUTHORIZED, body, &v1));
        assert_eq!(kind, Failure::Authentication);
        assert!(detail.contains("[influxdb] username/password"), "{detail}");
        assert!(!detail.contains("pw-Secret-1"));
        let v2 = cfg("url = \"http://x\"\nbucket = \"b\"\ntoken = \"tok\"\n");
        let (kind, detail) = retry(classify_status(StatusCode::UNAUTHORIZED, body, &v2));
        assert_eq!(kind, Failure::Authentication);
        assert!(detail.contains("check [influxdb] token"), "{detail}");
        let (_, detail) = retry(classify_status(StatusCode::FORBIDDEN, "", &v2));
        assert!(
            detail.contains("may write to [influxdb] bucket"),
            "{detail}"
        );
    }

    #[test]
    fn plaintext_to_a_tls_port_is_retried_not_quarantined() {
        let c = cfg("url = \"http://x\"\nbucket = \"b\"\n");
        let body = "Client sent an HTTP request to an HTTPS server.\n";
        let (kind, detail) = retry(classify_status(StatusCode::BAD_REQUEST, body, &c));
        assert_eq!(kind, Failure::TlsRequired);
        assert!(
            detail.contains("use https:// in [influxdb] url"),
            "{detail}"
        );
        let bad_line = r#"{"error":"unable to parse 'x': missing fields"}"#;
        assert!(matches!(
            classify_status(StatusCode::BAD_REQUEST, bad_line, &c),
            WriteError::Rejected(_)
        ));
    }

    /// An error wrapping another, as reqwest and hyper wrap the connector's I/O error.
    #[derive(Debug)]
    struct Wrapped(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        let unknown_issuer =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // hyper-rustls: io::Error::other(tokio-rustls' io::Error(InvalidData, rustls::Error)).
        let err = Wrapped(Box::new(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            unknown_issuer,
        ))));
        let https = cfg("url = \"https://x\"\nbucket = \"b\"\n");
        let detail = tls_problem(&err, &https).expect("a TLS problem");
        assert!(
            detail.starts_with("TLS: invalid peer certificate: UnknownIssuer"),
            "{detail}"
        );
        assert!(detail.contains("set [influxdb] ca_file"), "{detail}");
        let refused = Wrapped(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(tls_problem(&refused, &https), None);
    }
}
