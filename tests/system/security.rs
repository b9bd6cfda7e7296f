//! MQTT security against a Mosquitto configured by the test: TLS with a private CA, mutual
//! TLS, no plaintext fallback, username/password with an ACL, and secrets kept out of every
//! output.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::certs::certificates;
use crate::gateway::{assert_mqtt_exactly, expected_packets, fixture, run_stdin, Expected};
use crate::support::{free_port, Mosquitto, Subscriber};

const EXIT: Duration = Duration::from_secs(60);

/// Mosquitto with a TLS listener (the harness port) and a plaintext one for the watcher.
fn tls_broker(dir: &Path, require_certificate: bool) -> (Mosquitto, u16) {
    let plain = free_port();
    let d = dir.display();
    let broker = Mosquitto::start_with(&format!(
        "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate {require_certificate}\nlistener {plain} 127.0.0.1"
    ));
    (broker, plain)
}

/// `iiot-gateway check` on the config a test run left in `dir`; its stdout and stderr.
fn check(dir: &Path) -> String {
    let out = Command::new(crate::gateway::BIN)
        .args([
            "check",
            "--config",
            dir.join("config.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "check must fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config(dir: &Path, mqtt: &str) -> String {
    format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"3s\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n[mqtt]\nclient_id = \"gw-secure\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"500ms\"\n{mqtt}",
        dir.join("data").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_a_private_ca_and_mutual_tls_delivers() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let (broker, plain) = tls_broker(certs.path(), true);
    let sub = Subscriber::connect(plain, "watcher-tls", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let c = certs.path().display();
    let mqtt = format!(
        "broker_url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{c}/ca.crt\"\nclient_cert_file = \"{c}/client.crt\"\nclient_key_file = \"{c}/client.key\"\n",
        broker.port
    );
    let input = fixture("vcp-serial.jsonl");
    let (status, log) = run_stdin(
        dir.path(),
        &config(dir.path(), &mqtt),
        input.as_bytes(),
        EXIT,
    );
    assert!(status.success(), "{log}");
    let all: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    assert_mqtt_exactly(&sub, "iiot", &all).await;
    assert!(!log.contains("BEGIN"), "no key material in the log");
}

/// Runs the gateway against a broker that must refuse it; returns its log.
fn refused_run(dir: &Path, mqtt: &str) -> String {
    let (status, log) = run_stdin(
        dir,
        &config(dir, mqtt),
        fixture("legacy-bmp280.log").as_bytes(),
        EXIT,
    );
    assert_eq!(status.code(), Some(1), "nothing may be delivered: {log}");
    assert!(log.contains("9 readings stay buffered"), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_failures_are_named_and_never_fall_back_to_plaintext() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let (broker, plain) = tls_broker(certs.path(), true);
    let sub = Subscriber::connect(plain, "watcher-tls-fail", "iiot/#", true).await;
    let c = certs.path().display();

    // The wrong CA: the broker's certificate is refused, once per state, naming the setting.
    let dir = tempfile::tempdir().unwrap();
    let log = refused_run(
        dir.path(),
        &format!(
            "broker_url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{c}/other-ca.crt\"\n",
            broker.port
        ),
    );
    assert_eq!(log.matches("sink tls failure").count(), 1, "{log}");
    assert!(
        log.contains("UnknownIssuer") && log.contains("[mqtt] ca_file"),
        "{log}"
    );
    // `check` says the same before the service starts.
    let out = check(dir.path());
    assert!(
        out.contains("FAIL mqtt") && out.contains("UnknownIssuer") && out.contains("ca_file"),
        "{out}"
    );

    // No client certificate where the broker requires one: refused and reported.
    let dir = tempfile::tempdir().unwrap();
    let log = refused_run(
        dir.path(),
        &format!(
            "broker_url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{c}/ca.crt\"\n",
            broker.port
        ),
    );
    assert!(
        log.contains("sink tls failure") || log.contains("sink connection lost"),
        "{log}"
    );
    assert!(
        log.contains("client_cert_file") || log.contains("CertificateRequired"),
        "{log}"
    );

    // mqtts:// to a plaintext listener: a TLS error, never a plaintext CONNECT.
    let dir = tempfile::tempdir().unwrap();
    let log = refused_run(
        dir.path(),
        &format!("broker_url = \"mqtts://127.0.0.1:{plain}\"\nca_file = \"{c}/ca.crt\"\n"),
    );
    assert!(
        log.contains("sink tls failure") || log.contains("sink connection lost"),
        "{log}"
    );
    assert!(
        !broker.log().contains("as gw-secure"),
        "no MQTT session was ever opened"
    );
    assert!(sub.messages().is_empty(), "{:?}", sub.messages());

    // TLS keys without mqtts:// are a config error, not a silent plaintext connection.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("broker_url = \"mqtt://127.0.0.1:{plain}\"\nca_file = \"{c}/ca.crt\"\n"),
    );
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    let out = Command::new(crate::gateway::BIN)
        .args(["--config", dir.path().join("config.toml").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("[mqtt] ca_file: is set but broker_url is not mqtts://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn username_password_and_acl_work_and_a_wrong_password_backs_off_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (i, (user, pw)) in [("gateway", "s3cret-gw-pass"), ("watcher", "watch-pass")]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg(&passwd)
            .arg(user)
            .arg(pw)
            .output()
            .expect("mosquitto_passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(
        dir.path().join("acl"),
        "user gateway\ntopic write iiot/#\n\nuser watcher\ntopic read iiot/#\n",
    )
    .unwrap();
    let d = dir.path().display();
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl"
    ));
    let sub = Subscriber::connect_as(
        broker.port,
        "watcher-auth",
        "iiot/#",
        true,
        Some(("watcher", "watch-pass")),
    )
    .await;

    // Right password, from the environment-free password_file: delivered under the ACL.
    let pw_file = dir.path().join("mqtt_password");
    std::fs::write(&pw_file, "s3cret-gw-pass\n").unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let mqtt = format!(
        "broker_url = \"{}\"\nusername = \"gateway\"\npassword_file = \"{}\"\n",
        broker.url(),
        pw_file.display()
    );
    let input = fixture("vcp-serial.jsonl");
    let (status, log) = run_stdin(
        run_dir.path(),
        &config(run_dir.path(), &mqtt),
        input.as_bytes(),
        EXIT,
    );
    assert!(status.success(), "{log}");
    let all: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    assert_mqtt_exactly(&sub, "iiot", &all).await;

    // Wrong password: a clear error once, retries with backoff, the secret never printed.
    let run_dir = tempfile::tempdir().unwrap();
    let mqtt = format!(
        "broker_url = \"{}\"\nusername = \"gateway\"\npassword = \"wrong-pass-xyzzy\"\n",
        broker.url()
    );
    let mut cfg = config(run_dir.path(), &mqtt);
    cfg = cfg
        .replace("drain_timeout = \"3s\"", "drain_timeout = \"4s\"")
        .replace("gw-secure", "gw-wrong-password");
    let (status, log) = run_stdin(
        run_dir.path(),
        &cfg,
        fixture("legacy-bmp280.log").as_bytes(),
        EXIT,
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(log.matches("sink refused by broker").count(), 1, "{log}");
    assert!(log.contains("check [mqtt] username/password"), "{log}");
    let out = check(run_dir.path());
    assert!(
        out.contains("FAIL mqtt")
            && out.contains("refused by broker")
            && out.contains("username/password"),
        "{out}"
    );
    assert!(!out.contains("wrong-pass-xyzzy"), "{out}");
    let attempts = broker.log().matches("disconnected, not authorised").count();
    assert!(
        (3..=20).contains(&attempts),
        "backoff, no storm: {attempts} attempts in ~4 s"
    );
    for secret in ["wrong-pass-xyzzy", "s3cret-gw-pass"] {
        assert!(!log.contains(secret), "secret {secret} leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_broker_requires_the_configured_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\nusername = \"plant\"\npassword = \"embedded-pw-123\"\n",
        dir.path().join("data").display()
    );
    let mut gw = crate::gateway::TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("password required", Duration::from_secs(20))
        .await;
    gw.wait_log("sink connected", Duration::from_secs(10)).await;
    let sub = Subscriber::connect_as(
        port,
        "watcher-embedded",
        "iiot/#",
        true,
        Some(("plant", "embedded-pw-123")),
    )
    .await;
    let mut stdin = gw.stdin();
    let input = fixture("vcp-serial.jsonl");
    use std::io::Write as _;
    stdin.write_all(input.as_bytes()).unwrap();
    let all: Vec<Expected> = expected_packets(&input).into_iter().flatten().collect();
    // Input stays open until the subscriber has everything: the broker lives in the gateway,
    // and a gateway that exits at the end of its input takes messages still on their way to
    // the subscriber with it.
    assert_mqtt_exactly(&sub, "iiot", &all).await;
    drop(stdin);
    assert!(gw.wait(EXIT).success(), "{}", gw.log());
    assert!(!gw.log().contains("embedded-pw-123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_broker_refuses_clients_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\nusername = \"plant\"\npassword = \"embedded-pw-123\"\n",
        dir.path().join("data").display()
    );
    let gw = crate::gateway::TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("password required", Duration::from_secs(20))
        .await;
    let mut opts = rumqttc::MqttOptions::new("intruder", "127.0.0.1", port);
    opts.set_credentials("plant", "guess");
    let (_client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
    match outcome {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
            assert_ne!(
                ack.code,
                rumqttc::ConnectReturnCode::Success,
                "a wrong password was accepted"
            );
        }
        Ok(Ok(other)) => panic!("unexpected first event {other:?}"),
        Ok(Err(_)) | Err(_) => {} // refused or dropped: not connected either way
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_host_is_one_clear_line_per_sink_not_one_per_retry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"3s\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"mqtt://no-such-host.invalid:1883\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"400ms\"\n\
         [influxdb]\nurl = \"http://no-such-host.invalid:8086\"\nbucket = \"b\"\nretry_initial = \"100ms\"\nretry_max = \"400ms\"\n",
        dir.path().join("data").display()
    );
    let (status, log) = run_stdin(
        dir.path(),
        &cfg,
        fixture("legacy-bmp280.log").as_bytes(),
        EXIT,
    );
    assert_eq!(status.code(), Some(1), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sink name resolution failed"))
        .collect();
    assert_eq!(lines.len(), 2, "one per sink: {log}");
    assert!(
        lines.iter().any(|l| l.contains("sink=\"mqtt\""))
            && lines.iter().any(|l| l.contains("sink=\"influxdb\"")),
        "{lines:?}"
    );
    assert!(
        log.contains("✗ mqtt") && log.contains("✗ influxdb"),
        "the checklist says so too: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_any_output_even_at_trace_level() {
    const MQTT_SECRET: &str = "mqtt-secret-Zq81";
    const TOKEN: &str = "influx-token-Kx27";
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with_login(dir.path(), "gateway", "the-right-one");
    let vm = crate::support::VictoriaMetrics::start();
    // A wrong MQTT password (failing authentication) and a database token, both in the
    // config file, with every log target at trace.
    let cfg = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"3s\"\n[storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [mqtt]\nbroker_url = \"{}\"\nusername = \"gateway\"\npassword = \"{MQTT_SECRET}\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"300ms\"\n\
         [influxdb]\nurl = \"{}\"\nbucket = \"b\"\ntoken = \"{TOKEN}\"\nflush_interval = \"50ms\"\n",
        dir.path().join("data").display(),
        broker.url(),
        vm.url()
    );
    std::fs::write(dir.path().join("config.toml"), &cfg).unwrap();
    let config = dir.path().join("config.toml");
    let mut gw = crate::gateway::TestGateway::spawn_logging(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        Stdio::piped(),
        "trace",
    );
    gw.wait_log("✓ dashboard", Duration::from_secs(20)).await;
    gw.wait_log("sink refused by broker", Duration::from_secs(10))
        .await;
    let url = gw
        .log()
        .lines()
        .find_map(|l| l.split("✓ dashboard").nth(1).map(|u| u.trim().to_string()))
        .unwrap();
    let mut pages = String::new();
    for path in [
        "/api/status",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/latest",
    ] {
        let body = crate::support::get_text(&format!("{url}{path}")).await;
        pages.push_str(&body);
    }
    let mut stdin = gw.stdin();
    use std::io::Write as _;
    stdin
        .write_all(fixture("legacy-bmp280.log").as_bytes())
        .unwrap();
    drop(stdin);
    gw.wait(EXIT);
    let check = Command::new(crate::gateway::BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let help = Command::new(crate::gateway::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let everything = format!(
        "{}\n{pages}\n{}{}\n{}",
        gw.log(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&help.stdout)
    );
    assert!(
        everything.contains("sink refused by broker"),
        "the failing login was exercised"
    );
    assert!(gw.log().lines().count() > 50, "trace logging was on");
    for secret in [MQTT_SECRET, TOKEN] {
        assert!(!everything.contains(secret), "secret {secret} leaked");
    }
    // The config file holding them is readable by others (tempdir default umask): warned.
    assert!(
        gw.log()
            .contains("config file holds a secret and other users can read it"),
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_token_guards_the_dashboard_and_api_but_not_health() {
    const TOKEN: &str = "dashboard-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    let config = dir.path().join("config.toml");
    let mut cmd = std::process::Command::new(crate::gateway::BIN);
    let log_path = dir.path().join("gateway.log");
    let mut child = cmd
        .args(["--config", config.to_str().unwrap()])
        .env("HTTP_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    crate::support::wait_until("the dashboard line", Duration::from_secs(20), || async {
        log().contains("✓ dashboard")
    })
    .await;
    let url = log()
        .lines()
        .find_map(|l| l.split("✓ dashboard").nth(1).map(|u| u.trim().to_string()))
        .unwrap();
    // reqwest with no redirects followed, to see the cookie being set.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |r: reqwest::Response| r.status().as_u16();
    for path in ["/", "/api/latest", "/api/stream", "/d/iiot-signal"] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(status(r), 401, "{path} without a token");
    }
    let r = http
        .get(format!("{url}/api/latest"))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 401, "a wrong token");
    let r = http
        .get(format!("{url}/api/latest"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200, "the right token");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_ne!(status(r), 401, "{path} stays open by default");
    }
    // A browser: /?token= sets a cookie, then every page and API call works with it alone.
    let r = http
        .get(format!("{url}/?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("iiot_token="));
    let r = http
        .get(format!("{url}/api/nodes"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(!log().contains(TOKEN), "the token never reaches the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_broker_can_listen_with_tls_only() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let c = certs.path().display();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\nembedded_cert_file = \"{c}/server.crt\"\nembedded_key_file = \"{c}/server.key\"\nca_file = \"{c}/ca.crt\"\n",
        dir.path().join("data").display()
    );
    let mut gw = crate::gateway::TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("embedded MQTT broker on", Duration::from_secs(20))
        .await;
    gw.wait_log("sink connected", Duration::from_secs(10)).await;
    assert!(gw.log().contains(", TLS"), "{}", gw.log());

    // A TLS subscriber trusting the CA receives what the gateway publishes.
    let mut opts = rumqttc::MqttOptions::new("tls-watcher", "127.0.0.1", port);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(certs.path().join("ca.crt")).unwrap(),
            alpn: None,
            client_auth: None,
        },
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    client
        .subscribe("iiot/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sink, acked) = (received.clone(), subscribed.clone());
    let watcher = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    acked.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    sink.lock().unwrap().push(p.topic.clone());
                }
                Ok(_) => {}
                Err(e) => panic!("TLS subscriber: {e}"),
            }
        }
    });
    // Feed only once the subscription is in place (nothing before it is retained).
    crate::support::wait_until("the TLS subscription", Duration::from_secs(10), || async {
        subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let mut stdin = gw.stdin();
    use std::io::Write as _;
    stdin
        .write_all(fixture("legacy-bmp280.log").as_bytes())
        .unwrap();
    crate::support::wait_until("readings over TLS", Duration::from_secs(10), || async {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.as_str() != "iiot/gateway/status")
            .count()
            >= 9
    })
    .await;

    // A plaintext client gets no MQTT session from the TLS-only listener.
    let (_plain, mut plain_events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("plain", "127.0.0.1", port), 4);
    let outcome = tokio::time::timeout(Duration::from_secs(3), plain_events.poll()).await;
    assert!(
        !matches!(
            outcome,
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
        ),
        "a plaintext client was accepted: {outcome:?}"
    );
    watcher.abort();
    drop(stdin);
    assert!(gw.wait(EXIT).success(), "{}", gw.log());
}
