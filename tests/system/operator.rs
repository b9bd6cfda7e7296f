//! What the operator is told: readiness that means it (a source that cannot run is not
//! ready), one start-up checklist for `run` and `check` (a broker that refuses the login is a
//! ✗, not "reachable"), a v2 config aimed at an InfluxDB 1.x named as such.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::gateway::{dashboard_url, plain, TestGateway, BIN};
use crate::support::{get_text, http, InfluxDb1, Mosquitto};

const WAIT: Duration = Duration::from_secs(20);

fn base(dir: &std::path::Path, rest: &str) -> String {
    format!(
        "[storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{rest}",
        dir.join("data").display()
    )
}

/// `check` with `config`: (exit success, stdout).
fn check(dir: &std::path::Path, config: &str) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The source line of `check`'s output.
fn source_line(said: &str) -> &str {
    said.lines()
        .find(|l| l.contains(" source "))
        .unwrap_or_else(|| panic!("no source line in:\n{said}"))
}

/// A probe-rs that is not installed, and a serial device that does not exist: `check` fails
/// naming what is missing, the checklist shows ✗, `/readyz` is 503 and `/metrics` says the
/// source does not run.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_cannot_run_is_not_ready_anywhere() {
    let mosquitto = Mosquitto::start();
    let mqtt = format!(
        "[mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-nosource\"\n",
        mosquitto.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("fw.elf");
    std::fs::write(&firmware, b"\x7fELF").unwrap();
    for (source, check_says, run_says) in [
        (
            format!(
                "[source]\nkind = \"probe-rs\"\nprobe_rs = \"probe-rs-not-installed\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"{}\"\nrestart_initial = \"100ms\"\nrestart_max = \"200ms\"\n",
                firmware.display()
            ),
            "probe-rs-not-installed: not found or not executable (searched PATH)",
            "probe-rs-not-installed: not found or not executable (searched PATH)",
        ),
        (
            "[source]\nkind = \"serial\"\npath = \"/dev/ttyNOPE0\"\nrestart_initial = \"100ms\"\nrestart_max = \"200ms\"\n".to_string(),
            "serial: cannot open /dev/ttyNOPE0",
            "serial: cannot open /dev/ttyNOPE0",
        ),
    ] {
        let cfg = base(dir.path(), &format!("{source}{mqtt}"));
        let (ok, said) = check(dir.path(), &cfg);
        assert!(!ok, "{said}");
        let line = source_line(&said);
        assert!(line.starts_with("FAIL") && line.contains(check_says), "{said}");

        let gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
        gw.wait_log("✓ dashboard", WAIT).await;
        gw.wait_log("source ", WAIT).await;
        let url = dashboard_url(&plain(&gw.log()));
        crate::support::wait_until("the source line of the checklist", WAIT, || async {
            plain(&gw.log()).contains("✗ source")
        })
        .await;
        let log = plain(&gw.log());
        assert!(log.contains(&format!("✗ source     {run_says}")), "{log}");
        // The source fails for good; the MQTT sink may still be connecting to the embedded
        // broker on a loaded machine: wait until only the source fails.
        crate::support::wait_until("only the source failing in /readyz", WAIT, || async {
            let resp = http().get(format!("{url}/readyz")).send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            status == 503 && body.contains("\"failing\":[\"source\"]")
        })
        .await;
        let metrics = get_text(&format!("{url}/metrics")).await;
        assert!(
            metrics.lines().any(|l| l.starts_with("iiot_source_running{") && l.ends_with(" 0")),
            "{metrics}"
        );
    }

    // And when it can run, it is ready: a firmware file that exists and a program on PATH.
    let cfg = base(
        dir.path(),
        &format!("[source]\nkind = \"command\"\ncommand = [\"sleep\", \"60\"]\n{mqtt}"),
    );
    let (ok, said) = check(dir.path(), &cfg);
    assert!(ok, "{said}");
    let gw = TestGateway::start(dir.path(), &cfg, Stdio::null());
    gw.wait_log("✓ source     command: sleep 60 (pid", WAIT)
        .await;
    let url = dashboard_url(&plain(&gw.log()));
    crate::support::wait_until("/readyz 200", WAIT, || async {
        http()
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// A firmware file that does not exist fails `check` (probe-rs would only say so on a board).
#[test]
fn check_names_a_missing_firmware_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base(
        dir.path(),
        "[source]\nkind = \"probe-rs\"\nprobe_rs = \"sh\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"/no/such/fw.elf\"\n",
    );
    let (ok, said) = check(dir.path(), &cfg);
    assert!(!ok, "{said}");
    assert!(
        source_line(&said)
            .contains("firmware /no/such/fw.elf: no such file (check [source] firmware_path)"),
        "{said}"
    );
}

/// A broker that refuses the login is a ✗ in the start-up checklist, as in `check`: both make
/// a real MQTT connection.
#[tokio::test(flavor = "multi_thread")]
async fn the_checklist_and_check_both_see_a_refused_login() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with_login(dir.path(), "gateway", "the-right-one");
    let cfg = base(
        dir.path(),
        &format!(
            "[source]\nkind = \"stdin\"\n[mqtt]\nbroker_url = \"{}\"\nusername = \"gateway\"\npassword = \"wrong\"\n",
            broker.url()
        ),
    );
    let (ok, said) = check(dir.path(), &cfg);
    assert!(!ok, "{said}");
    let mqtt = said.lines().find(|l| l.contains(" mqtt ")).unwrap();
    assert!(mqtt.starts_with("FAIL"), "{said}");
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("✓ source", WAIT).await;
    let log = plain(&gw.log());
    let line = log
        .lines()
        .find(|l| l.contains(" mqtt "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("✗ mqtt"), "{log}");
    // The same words in both.
    let detail = |l: &str| l.split("mqtt").nth(1).unwrap().trim().to_string();
    assert!(detail(line).starts_with(&detail(mqtt)), "{line} / {mqtt}");
    drop(gw.stdin());
}

/// A v2 config (org, bucket, token) aimed at an InfluxDB 1.x: the gateway recognizes the
/// server and says to use `api = "v1"` and `database`.
#[tokio::test(flavor = "multi_thread")]
async fn a_v2_config_against_influxdb_1x_says_to_use_v1() {
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = base(
        dir.path(),
        &format!(
            "[source]\nkind = \"stdin\"\n[influxdb]\nurl = \"{}\"\norg = \"iiot\"\nbucket = \"telemetry\"\ntoken = \"t0k3n\"\nretry_max = \"1s\"\n",
            influx.url()
        ),
    );
    let (ok, said) = check(dir.path(), &cfg);
    assert!(!ok, "{said}");
    let line = said.lines().find(|l| l.contains(" influxdb ")).unwrap();
    assert!(
        line.contains("is InfluxDB 1.")
            && line.contains("api = \"v1\"")
            && line.contains("database"),
        "{said}"
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("✓ source", WAIT).await;
    let log = plain(&gw.log());
    assert!(log.contains("is InfluxDB 1."), "{log}");
    drop(gw.stdin());

    // With authentication on, the same: the server is named, not "authentication failed".
    let secured = InfluxDb1::start_with("auth-enabled = true");
    let cfg = cfg.replace(&influx.url(), &secured.url());
    let (ok, said) = check(dir.path(), &cfg);
    assert!(!ok, "{said}");
    let line = said.lines().find(|l| l.contains(" influxdb ")).unwrap();
    assert!(
        line.contains("is InfluxDB 1.") && line.contains("username and password"),
        "{said}"
    );
}

/// Two gateways on one broker: with the default client ids (one per install) both stay
/// connected; with the same client id, the broker drops each right after accepting it and the
/// gateway says why.
#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_broker_do_not_collide_by_default_and_are_told_when_they_do() {
    let mosquitto = Mosquitto::start();
    let start = |client_id: &str| {
        let dir = tempfile::tempdir().unwrap();
        let id = if client_id.is_empty() {
            String::new()
        } else {
            format!("client_id = \"{client_id}\"\n")
        };
        let cfg = format!(
            "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
             [mqtt]\nbroker_url = \"{}\"\n{id}reconnect_initial = \"100ms\"\nreconnect_max = \"300ms\"\n",
            dir.path().join("data").display(),
            mosquitto.url()
        );
        let gw = TestGateway::start(dir.path(), &cfg, Stdio::piped());
        (gw, dir)
    };
    let (a, _da) = start("");
    let (b, _db) = start("");
    a.wait_log("sink connected", WAIT).await;
    b.wait_log("sink connected", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for gw in [&a, &b] {
        let log = gw.log();
        assert_eq!(log.matches("sink connected").count(), 1, "{log}");
        assert!(!log.contains("connection lost"), "{log}");
    }
    drop((a, b));

    let (c, _dc) = start("same-id");
    let (d, _dd) = start("same-id");
    crate::support::wait_until("the takeover warning", WAIT, || async {
        c.log()
            .contains("another client with the same client_id is the likely cause")
            || d.log()
                .contains("another client with the same client_id is the likely cause")
    })
    .await;
}

/// After start-up the log shows life: each node's first packet, a node going silent and
/// coming back, and a periodic summary that stays quiet while nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_shows_first_packets_silence_return_and_a_summary_only_when_something_changed() {
    use std::io::Write as _;
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[source]\nkind = \"stdin\"\n[storage]\ndir = \"{}\"\n[http]\nenabled = false\n\
         [mqtt]\nbroker_url = \"{}\"\n[log]\nsummary_interval = \"1s\"\n",
        dir.path().join("data").display(),
        mosquitto.url()
    );
    let mut gw = TestGateway::start(dir.path(), &cfg, Stdio::piped());
    gw.wait_log("✓ source", WAIT).await;
    let mut stdin = gw.stdin();
    let mut send = |i: u32| {
        writeln!(
            stdin,
            "{{\"ts\":{i}000,\"id\":\"N2\",\"n1\":{{\"t\":2{i}.5}},\"n2\":{{\"t\":20.1}},\"sig\":{{\"rssi\":-40,\"snr\":9}},\"sts\":{{\"rx\":{i},\"err\":0}}}}"
        )
        .unwrap();
        stdin.flush().unwrap();
    };
    send(1);
    gw.wait_log("first packet from node node=node2", WAIT).await;
    let log = plain(&gw.log());
    assert!(log.contains("first packet from node node=node1"), "{log}");
    assert!(
        !log.contains("node=signal") && !log.contains("node=stats"),
        "{log}"
    );
    gw.wait_log("what went through since the last summary", WAIT)
        .await;
    let log = plain(&gw.log());
    assert!(
        log.contains("+1 packets, +6 readings; mqtt +6 delivered, 0 waiting"),
        "{log}"
    );
    // Nothing changes: no more summaries.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let summaries = |log: &str| {
        log.matches("what went through since the last summary")
            .count()
    };
    assert_eq!(summaries(&gw.log()), 1, "{}", gw.log());
    // Two packets a second apart make the interval 1 s: silent after 3 s, back with the next.
    send(2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(3);
    gw.wait_log("node went silent", Duration::from_secs(15))
        .await;
    let log = plain(&gw.log());
    assert!(
        log.contains("node went silent: no packet for 3 of its intervals node=node1"),
        "{log}"
    );
    send(4);
    gw.wait_log("node is back", WAIT).await;
    drop(stdin);
    assert!(gw.wait(WAIT).success());
}
