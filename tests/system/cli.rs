//! The binary's face: embedded defaults, config errors, the hardware project's config.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::gateway::{TestGateway, BIN};
use crate::support::{http, wait_until, Subscriber};

#[tokio::test(flavor = "multi_thread")]
async fn embedded_defaults_publish_on_1883_and_serve_the_page_on_8080() {
    for port in [1883, 8080] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken on this machine: the embedded-defaults test needs it free"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn(dir.path(), &[], Stdio::null());
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    assert!(gw.log().contains("built-in defaults"), "{}", gw.log());
    let sub = Subscriber::connect(1883, "watcher-defaults", "iiot/#", true).await;
    // The retained status at once; the next simulated packet within an interval or two.
    let wanted = [
        "iiot/node1/temperature",
        "iiot/signal/rssi",
        "iiot/stats/packets_received",
    ];
    let msgs = sub
        .wait_for(
            |m| wanted.iter().all(|t| m.iter().any(|m| m.topic == *t)),
            // Two intervals: the simulator loses a packet now and then, like the real link.
            Duration::from_secs(25),
        )
        .await;
    assert!(msgs
        .iter()
        .any(|m| m.topic == "iiot/gateway/status" && m.payload == "online" && m.retain));
    let t: f64 = msgs
        .iter()
        .find(|m| m.topic == "iiot/node1/temperature")
        .unwrap()
        .payload
        .parse()
        .unwrap();
    assert!((15.0..=35.0).contains(&t), "{t}");
    for topic in ["iiot/signal/rssi", "iiot/stats/packets_received"] {
        assert!(
            msgs.iter().any(|m| m.topic == topic),
            "{topic} missing: {msgs:?}"
        );
    }
    let body = http()
        .get("http://127.0.0.1:8080/api/latest")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let latest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        latest
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["topic"] == "iiot/node1/temperature"),
        "{latest}"
    );
    let page = http()
        .get("http://127.0.0.1:8080/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/latest"));
    assert!(dir.path().join("iiot-data/outbox.db").exists());

    gw.signal(libc::SIGTERM);
    assert!(gw.wait(Duration::from_secs(20)).success(), "{}", gw.log());
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", 1883)).is_ok(),
        "the embedded broker stops with the gateway"
    );
}

#[test]
fn unknown_key_and_bad_value_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[mqtt]\nbrokr_url = \"mqtt://127.0.0.1:1\"\n", "brokr_url"),
        ("[mqtt]\nqos = 7\n", "[mqtt] qos: must be 0, 1 or 2 (got 7)"),
        (
            "[source]\nkind = \"telepathy\"\n",
            "[source] kind: unknown kind \"telepathy\"",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(expected), "names the key: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.toml"));
}

/// `keys new` prints only the node's table on stdout, a fresh key each time, which a gateway
/// config takes as it is; the hints go to stderr; a bad name is refused.
#[test]
fn keys_new_prints_only_a_fresh_node_table_on_stdout() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let (a, b) = (
        run(&["keys", "new", "greenhouse", "--address", "7"]),
        run(&["keys", "new", "greenhouse", "--address", "7"]),
    );
    assert!(a.status.success() && b.status.success());
    let (stdout_a, stdout_b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    let lines: Vec<&str> = stdout_a.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout_a}");
    assert_eq!(lines[..2], ["[source.nodes.7]", "name = \"greenhouse\""]);
    let key = lines[2]
        .strip_prefix("key = \"")
        .and_then(|k| k.strip_suffix('"'))
        .expect("key = \"<hex>\"");
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(stdout_a, stdout_b, "the same key twice");
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert!(stderr.contains("scripts/firmware --keys"), "{stderr}");
    assert!(!stderr.contains(key), "the key on stderr: {stderr}");
    // The table as written is a gateway config's node table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radio.toml");
    std::fs::write(
        &path,
        format!("[source]\nkind = \"rylr998\"\npath = \"/dev/null\"\n{stdout_a}"),
    )
    .unwrap();
    let sim = Command::new(BIN)
        .args([
            "simulate",
            "--radio",
            "--count",
            "1",
            "--interval",
            "0s",
            "--config",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(sim.stdout.starts_with(b"+RCV=7,21,"), "{:?}", sim.stdout);
    let bad = run(&["keys", "new", "a/b", "--address", "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("node names use"));
}

#[test]
fn the_hardware_projects_config_loads_unchanged_as_a_probe_rs_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[mqtt]\nbroker_url = \"mqtt://127.0.0.1:9\"\nclient_id = \"wk7-gateway\"\ntopic_prefix = \"iiot\"\nqos = 1\n\n\
         [influxdb]\nurl = \"http://127.0.0.1:9\"\norg = \"my-org\"\nbucket = \"sensors\"\ntoken = \"my-super-secret-token\"\n\n\
         [gateway]\nprobe_id = \"0483:374b:066DFF555185754867143848\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"fw.elf\"\nchannel_capacity = 100\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["check", "--storage-dir", "data"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config.toml is valid"), "{stdout}");
    assert!(stdout.contains("source     probe-rs"), "{stdout}");
    // Nothing listens on port 9: check reports it and fails, without leaking the token.
    assert!(stdout.contains("FAIL mqtt"), "{stdout}");
    assert!(stdout.contains("FAIL influxdb"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("my-super-secret-token"), "{all}");
}

#[test]
fn help_teaches_with_examples_and_version_prints() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "Examples:",
        "mosquitto_sub",
        "check",
        "simulate",
        "--config",
        "HTTP_TOKEN",
        "MQTT_PASSWORD",
        "INFLUXDB_TOKEN",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("iiot-gateway "));
}

/// An unknown log level would filter out every line, warnings included: it is refused like
/// any bad setting, with the levels there are.
#[test]
fn an_unknown_log_level_is_refused_with_the_levels() {
    let out = Command::new(BIN)
        .args(["--log-level", "verbose", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("verbose"), "{err}");
    for level in ["error", "warn", "info", "debug", "trace"] {
        assert!(err.contains(level), "{level} missing: {err}");
    }
    // The same word in RUST_LOG would read as a target name and hide every line.
    let out = Command::new(BIN)
        .args(["check"])
        .env("RUST_LOG", "verbose")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("RUST_LOG: \"verbose\" is not a level"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_prints_firmware_lines_that_the_gateway_accepts() {
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--interval",
            "0s",
            "--count",
            "50",
            "--seed",
            "7",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 50);
    let again = Command::new(BIN)
        .args([
            "simulate",
            "--interval",
            "0s",
            "--count",
            "50",
            "--seed",
            "7",
        ])
        .output()
        .unwrap();
    assert_eq!(again.stdout, out.stdout, "same seed, same lines");
    assert_eq!(
        crate::gateway::expected_packets(&text).len(),
        50,
        "every line is telemetry"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("data").display()
    );
    let (status, log) = crate::gateway::run_stdin(
        dir.path(),
        &config,
        text.as_bytes(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{log}");
    wait_until("outbox exists", Duration::from_secs(1), || async {
        dir.path().join("data/outbox.db").exists()
    })
    .await;
    assert!(!log.contains("telemetry quarantined"), "{log}");
}

/// One gateway per storage dir: the second exits 2 naming the PID of the first, which keeps
/// running; a crashed first one leaves no lock behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_on_the_same_storage_dir_exits_2_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n",
        dir.path().join("data").display()
    );
    let mut first = TestGateway::start(dir.path(), &cfg, Stdio::piped());
    first.wait_log("✓ source", Duration::from_secs(20)).await;
    let other = tempfile::tempdir().unwrap();
    let mut second = TestGateway::start(other.path(), &cfg, Stdio::piped());
    let status = second.wait(Duration::from_secs(20));
    let log = second.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "is in use by another iiot-gateway (PID {})",
            first.pid()
        )),
        "{log}"
    );
    // `check` says so without failing or touching anything.
    let cfg_path = other.path().join("config.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("in use by a running gateway, PID {}", first.pid())),
        "{said}"
    );
    // SIGKILL: the kernel drops the lock with the process.
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(5));
    let mut third = TestGateway::start(other.path(), &cfg, Stdio::piped());
    third.wait_log("✓ source", Duration::from_secs(20)).await;
    drop(third.stdin());
    assert!(
        third.wait(Duration::from_secs(20)).success(),
        "{}",
        third.log()
    );
}

/// `check` looks without touching: no outbox appears; and start-up output names absolute
/// paths.
#[tokio::test(flavor = "multi_thread")]
async fn check_creates_nothing_and_paths_are_printed_absolute() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"relative-data\"\n[http]\nenabled = false\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", "config.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let data = dir.path().join("relative-data");
    assert!(
        said.contains(&format!("{} writable (no outbox yet", data.display())),
        "{said}"
    );
    assert!(!data.exists(), "check created {}", data.display());
    let mut gw = TestGateway::spawn(dir.path(), &["--config", "config.toml"], Stdio::piped());
    gw.wait_log("✓ source", Duration::from_secs(20)).await;
    let log = gw.log();
    assert!(
        log.contains(&format!(
            "✓ config     {}",
            dir.path().join("config.toml").display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "✓ storage    {}",
            data.join("outbox.db").display()
        )),
        "{log}"
    );
    drop(gw.stdin());
    assert!(gw.wait(Duration::from_secs(20)).success());
}

/// Every option either acts or is refused: running options given to `simulate` or
/// `dashboards`, `--mqtt-listen` when no embedded broker runs, `simulate --nodes 0`; and
/// `simulate --config` takes the config's simulator settings.
#[test]
fn options_that_would_do_nothing_are_refused_and_simulate_reads_its_config() {
    let run = |args: &[&str], dir: &std::path::Path| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run(
        &["--http-listen", "127.0.0.1:0", "simulate", "--count", "1"],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--http-listen does nothing for `simulate`"),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "--storage-dir",
            "x",
            "dashboards",
            "--flavor",
            "flux",
            "--out",
            "o",
        ],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--storage-dir does nothing for `dashboards`"),
        "{err}"
    );
    let (_, help, _) = run(&["simulate", "--help"], d);
    assert!(
        !help.contains("--storage-dir") && !help.contains("--http-listen"),
        "{help}"
    );
    assert!(help.contains("--config"), "{help}");
    let (code, _, err) = run(&["simulate", "--nodes", "0"], d);
    assert_eq!(code, Some(2), "{err}");

    std::fs::write(
        d.join("sim.toml"),
        "[source]\nkind = \"simulator\"\nremote_nodes = 3\ninterval = \"1ms\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "simulate", "--config", "sim.toml", "--count", "3", "--seed", "7",
        ],
        d,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().any(|l| l.contains("\"n4\":")),
        "three remote nodes: {out}"
    );
    std::fs::write(
        d.join("serial.toml"),
        "[source]\nkind = \"serial\"\npath = \"/dev/x\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["simulate", "--config", "serial.toml", "--count", "1"], d);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("its [source] kind is \"serial\""), "{err}");

    std::fs::write(
        d.join("external.toml"),
        "[source]\nkind = \"stdin\"\n[mqtt]\nbroker_url = \"mqtt://127.0.0.1:1\"\n",
    )
    .unwrap();
    let (code, _, err) = run(
        &[
            "check",
            "--config",
            "external.toml",
            "--mqtt-listen",
            "127.0.0.1:1884",
        ],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--mqtt-listen: no embedded broker runs"),
        "{err}"
    );
}
