//! InfluxDB security against a real InfluxDB 1.6 configured by the test: `https://` with a
//! private CA (certificates made with `openssl`), no plaintext fallback, v1 login with
//! `auth-enabled = true`, and secrets kept out of the log. The v2 token header is checked
//! against a fake server, as there is no InfluxDB 2 here.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::certs::certificates;
use crate::gateway::{expected_packets, fixture, Expected, BIN};
use crate::support::{InfluxDb1, Point};

const EXIT: Duration = Duration::from_secs(60);

/// (measurement, node, unit, value): what a stored point and an expected reading share.
type Key = (String, String, Option<String>, String);

fn point_key(p: &Point) -> Key {
    (
        p.measurement.clone(),
        p.tag("node").unwrap_or_default().to_string(),
        p.tag("unit").map(str::to_string),
        format!("{}", p.value),
    )
}

fn expected_keys(input: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = expected_packets(input)
        .into_iter()
        .flatten()
        .map(|e: Expected| {
            let value: f64 = e.value.parse().expect("numeric fixture value");
            (e.metric, e.node, e.unit, format!("{value}"))
        })
        .collect();
    keys.sort();
    keys
}

async fn stored_keys(influx: &InfluxDb1, db: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = influx.points(db).await.iter().map(point_key).collect();
    keys.sort();
    keys
}

/// A stdin-source config delivering only to InfluxDB, with fast retries.
fn config(dir: &Path, influxdb: &str) -> String {
    format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"3s\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n\
         [influxdb]\nflush_interval = \"50ms\"\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n{influxdb}",
        dir.join("data").display()
    )
}

/// Writes `config` to `dir/config.toml`, runs the gateway on `input` through stdin with the
/// extra environment `env`, and returns its exit status and log (stderr).
fn run(dir: &Path, config: &str, input: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let log_path = dir.join(format!("gateway-{}.log", crate::support::unique_suffix()));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start iiot-gateway");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + EXIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gateway did not exit within {EXIT:?}; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

/// Runs a config that must be refused at load time; returns stderr.
fn config_error(dir: &Path, influxdb: &str) -> String {
    std::fs::write(dir.join("config.toml"), config(dir, influxdb)).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_over_https_trusts_only_the_configured_ca_and_never_falls_back_to_http() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let c = certs.path().display();
    let influx = InfluxDb1::start_with(&format!(
        "https-enabled = true\nhttps-certificate = \"{c}/server.crt\"\nhttps-private-key = \"{c}/server.key\""
    ));
    assert!(influx.url().starts_with("https://"));
    for db in ["telemetry", "wrong_ca", "plaintext"] {
        influx.create_database(db);
    }
    let input = fixture("legacy-bmp280.log");
    let v1 = |db: &str, extra: &str| {
        format!(
            "url = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\n{extra}",
            influx.url()
        )
    };

    // The private CA: delivered over TLS.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &v1("telemetry", &format!("ca_file = \"{c}/ca.crt\"\n")),
    );
    let (status, log) = run(dir.path(), &cfg, &input, &[]);
    assert!(status.success(), "{log}");
    assert_eq!(
        stored_keys(&influx, "telemetry").await,
        expected_keys(&input)
    );
    assert!(!log.contains("BEGIN"), "no certificate text in the log");

    // Another CA: one clear line naming rustls' reason and the setting, data kept.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &v1("wrong_ca", &format!("ca_file = \"{c}/other-ca.crt\"\n")),
    );
    let (status, log) = run(dir.path(), &cfg, &input, &[]);
    assert_eq!(status.code(), Some(1), "nothing may be delivered: {log}");
    assert!(log.contains("9 readings stay buffered"), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sink tls failure"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "once per state change, not per retry: {log}"
    );
    assert!(
        lines[0].contains("UnknownIssuer") && lines[0].contains("[influxdb] ca_file"),
        "{}",
        lines[0]
    );
    assert!(influx.points("wrong_ca").await.is_empty());
    // Every attempt was a TLS handshake the gateway aborted; none went to an http:// URL.
    assert!(!log.contains("http://"), "{log}");
    assert!(
        influx.log().contains("tls: unknown certificate authority"),
        "{}",
        influx.log()
    );

    // http:// to the TLS port: Go answers 400; retried and kept, not quarantined as bad data.
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("http://127.0.0.1:{}", influx.port);
    let cfg = config(
        dir.path(),
        &format!("url = \"{plain}\"\napi = \"v1\"\ndatabase = \"plaintext\"\n"),
    );
    let (status, log) = run(dir.path(), &cfg, &input, &[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("9 readings stay buffered"), "{log}");
    assert_eq!(log.matches("sink tls required").count(), 1, "{log}");
    assert!(log.contains("use https:// in [influxdb] url"), "{log}");
    let quarantine = dir.path().join("data").join("quarantine.log");
    assert!(
        std::fs::read_to_string(&quarantine)
            .unwrap_or_default()
            .is_empty(),
        "nothing quarantined"
    );

    // ca_file with http:// is a config error, not a silent plaintext connection; a ca_file
    // without a certificate is refused at load time, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let err = config_error(
        dir.path(),
        &format!("url = \"{plain}\"\napi = \"v1\"\ndatabase = \"d\"\nca_file = \"{c}/ca.crt\"\n"),
    );
    assert!(
        err.contains("[influxdb] ca_file: is set but url is not https://"),
        "{err}"
    );
    let err = config_error(
        dir.path(),
        &v1("d", &format!("ca_file = \"{c}/server.key\"\n")),
    );
    assert!(
        err.contains("[influxdb] ca_file: holds no PEM certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_v1_login_delivers_and_a_wrong_password_is_one_line_retried_and_kept() {
    const ADMIN_PW: &str = "admin-pw-Qd81";
    const GW_PW: &str = "gw-pass-Vn42";
    const WRONG_PW: &str = "wrong-pass-Hx07";
    let mut influx = InfluxDb1::start_with("auth-enabled = true\nlog-enabled = true");
    influx.create_admin("admin", ADMIN_PW);
    for db in ["telemetry", "buffered"] {
        influx.create_database(db);
    }
    for q in [
        format!("CREATE USER gateway WITH PASSWORD '{GW_PW}'"),
        "GRANT WRITE ON telemetry TO gateway".to_string(),
        "GRANT WRITE ON buffered TO gateway".to_string(),
    ] {
        let res = influx.query("", &q).await;
        assert!(res["results"][0].get("error").is_none(), "{q}: {res}");
    }
    let input = fixture("legacy-bmp280.log");
    let v1 = |db: &str, login: &str| {
        format!(
            "url = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\nusername = \"gateway\"\n{login}",
            influx.url()
        )
    };

    // The right password, from password_file: delivered.
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("influxdb_password");
    std::fs::write(&pw_file, format!("{GW_PW}\n")).unwrap();
    let login = format!("password_file = \"{}\"\n", pw_file.display());
    let cfg = config(dir.path(), &v1("telemetry", &login));
    let (status, log) = run(dir.path(), &cfg, &input, &[]);
    assert!(status.success(), "{log}");
    assert_eq!(
        stored_keys(&influx, "telemetry").await,
        expected_keys(&input)
    );

    // A wrong password: one line naming the settings, backoff, the data kept, no secret shown.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &v1("buffered", &format!("password = \"{WRONG_PW}\"\n")),
    )
    .replace("drain_timeout = \"3s\"", "drain_timeout = \"4s\"");
    let refused_before = influx.log().matches("\" 401 ").count();
    let (status, log) = run(dir.path(), &cfg, &input, &[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("9 readings stay buffered"), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sink authentication failed"))
        .collect();
    assert_eq!(lines.len(), 1, "once per state change: {log}");
    assert!(
        log.contains("✗ influxdb") && log.contains("authentication failed: 401"),
        "the start-up checklist already says it: {log}"
    );
    assert!(
        lines[0].contains("401") && lines[0].contains("check [influxdb] username/password"),
        "{}",
        lines[0]
    );
    let attempts = influx.log().matches("\" 401 ").count() - refused_before;
    assert!(
        (3..=40).contains(&attempts),
        "backoff, no storm: {attempts} refused writes in ~4 s"
    );
    assert!(influx.points("buffered").await.is_empty());
    for secret in [WRONG_PW, GW_PW, ADMIN_PW] {
        assert!(!log.contains(secret), "secret {secret} leaked into the log");
    }

    // INFLUXDB_PASSWORD wins over the file's wrong password: the kept readings arrive.
    let (status, log) = run(dir.path(), &cfg, "", &[("INFLUXDB_PASSWORD", GW_PW)]);
    assert!(status.success(), "{log}");
    assert!(!log.contains("sink authentication failed"), "{log}");
    assert_eq!(
        stored_keys(&influx, "buffered").await,
        expected_keys(&input)
    );
    assert!(!log.contains(GW_PW), "{log}");
}

/// A FAKE InfluxDB v2 write endpoint (there is no InfluxDB 2 here): it records each request's
/// `Authorization` header, answers the first two writes 401 and every later one 204.
fn fake_influxdb_v2() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut writes = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut request_line, mut auth, mut length) = (String::new(), None, 0usize);
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                match name.trim().to_ascii_lowercase().as_str() {
                    "authorization" => auth = Some(value.trim().to_string()),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if request_line.contains("/api/v2/write") {
                record.lock().unwrap().push(auth.unwrap_or_default());
                writes += 1;
                // The first two: the start-up check's empty write and the sink's first batch.
                if writes <= 2 {
                    "401 Unauthorized"
                } else {
                    "204 No Content"
                }
            } else {
                "200 OK"
            };
            let body = if status.starts_with("401") {
                r#"{"code":"unauthorized","message":"unauthorized access"}"#
            } else {
                ""
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_v2_sends_the_token_header_and_a_401_names_the_token_setting() {
    const TOKEN: &str = "v2-token-Pm55";
    let (port, seen) = fake_influxdb_v2();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("url = \"http://127.0.0.1:{port}\"\norg = \"plant\"\nbucket = \"b\"\n"),
    );
    let input = fixture("legacy-bmp280.log");
    let (status, log) = run(dir.path(), &cfg, &input, &[("INFLUXDB_TOKEN", TOKEN)]);
    assert!(status.success(), "{log}");
    let headers = seen.lock().unwrap().clone();
    assert!(headers.len() >= 2, "{headers:?}");
    assert!(
        headers.iter().all(|h| *h == format!("Token {TOKEN}")),
        "{headers:?}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sink authentication failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("check [influxdb] token"), "{}", lines[0]);
    assert!(
        log.contains("sink connected"),
        "recovered after the 401: {log}"
    );
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}
