//! Sources with real processes and devices: a probe-rs stand-in (the real one needs a
//! board) proving restart with backoff and no orphaned child, the serial source over a
//! pseudo-terminal pair that disappears and comes back, and a real Node 2's byte stream (no
//! newline byte at all) through stdin and a pty.

use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::gateway::{
    assert_mqtt_exactly, dashboard_url, expected_packets, fixture, plain, run_stdin, Expected,
    TestGateway,
};
use crate::support::{get_text, wait_until, Mosquitto, Subscriber};

fn config(dir: &Path, source: &str, mosquitto: &Mosquitto, client_id: &str) -> String {
    format!(
        "{source}\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n\n[mqtt]\nbroker_url = \"{}\"\nclient_id = \"{client_id}\"\n",
        dir.join("data").display(),
        mosquitto.url()
    )
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Pids and start times (ns) the stand-in recorded, one line per start.
fn starts(path: &Path) -> Vec<(i32, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, t) = l.split_once(' ')?;
            Some((pid.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

/// A fake `probe-rs`: records its pid, start time and arguments and exits; it prints the
/// fixture on its first start, nothing on the second and third (no board), and from the
/// fourth start on prints it and stays running (like a board that is attached).
fn stand_in(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("probe-rs");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe-rs-session.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {dir}/args\necho \"$$ $(date +%s%N)\" >> {dir}/starts\necho 'probe-rs: attaching' >&2\nn=$(wc -l < {dir}/starts)\nif [ $n -eq 1 ] || [ $n -ge 4 ]; then cat {fixture}; fi\nif [ $n -ge 4 ]; then exec sleep 300; fi\nexit 3\n",
            dir = dir.display(),
            fixture = fixture.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_rs_source_restarts_with_backoff_and_leaves_no_child_behind() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-probe", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let script = stand_in(dir.path());
    // The hardware project's own keys, in its [gateway] section.
    let source = format!(
        "[source]\nprobe_rs = \"{}\"\nrestart_initial = \"200ms\"\nrestart_max = \"800ms\"\n\n[gateway]\nprobe_id = \"0483:374b:0001\"\nchip = \"STM32F446RETx\"\nfirmware_path = \"fw.elf\"\nchannel_capacity = 100\n",
        script.display()
    );
    let mut gw = TestGateway::start(
        dir.path(),
        &config(dir.path(), &source, &mosquitto, "gw-probe"),
        Stdio::null(),
    );
    let starts_file = dir.path().join("starts");
    wait_until(
        "four starts of the stand-in",
        Duration::from_secs(20),
        || async { starts(&starts_file).len() >= 4 },
    )
    .await;
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    // The firmware path is made absolute against the working directory (the test's dir).
    assert_eq!(
        args.trim(),
        format!(
            "run --probe 0483:374b:0001 --chip STM32F446RETx {}",
            dir.path().join("fw.elf").display()
        )
    );

    // Restarts are logged and spaced by a growing, capped backoff.
    let s = starts(&starts_file);
    let gaps: Vec<f64> = s
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) as f64 / 1e9)
        .collect();
    assert!(
        gaps[0] >= 0.1,
        "first restart after at least initial/2: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < 1.5),
        "capped at restart_max: {gaps:?}"
    );
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");
    let log = gw.log();
    assert!(
        log.matches("source process exited; restarting").count() >= 3,
        "{log}"
    );
    assert!(
        log.contains("probe-rs: attaching"),
        "stderr goes to the log: {log}"
    );

    // The telemetry of the two starts that printed it was delivered.
    let per_run: Vec<Expected> = expected_packets(&fixture("probe-rs-session.log"))
        .into_iter()
        .flatten()
        .collect();
    let n = per_run.len() * 2;
    wait_readings(&sub, n, Duration::from_secs(20)).await;

    // Shutdown terminates the running child.
    let child = s[3].0;
    assert!(alive(child));
    gw.signal(libc::SIGTERM);
    let status = gw.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    wait_until(
        "the probe-rs child to be gone",
        Duration::from_secs(5),
        || async { !alive(child) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_gateway_takes_its_source_process_with_it() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("long-runner");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}/pid\nexec sleep 300\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = format!(
        "[source]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        script.display()
    );
    let mut gw = TestGateway::start(
        dir.path(),
        &config(dir.path(), &source, &mosquitto, "gw-kill"),
        Stdio::null(),
    );
    let pid_file = dir.path().join("pid");
    wait_until("the command to start", Duration::from_secs(10), || async {
        pid_file.exists()
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    gw.signal(libc::SIGKILL);
    gw.wait(Duration::from_secs(5));
    wait_until("the orphan to be gone", Duration::from_secs(5), || async {
        !alive(pid)
    })
    .await;
}

/// The gateway's secrets stay the gateway's: a program its source starts (probe-rs, a
/// `command`) gets none of them in its environment, while the rest of it passes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_process_gets_none_of_the_gateways_secrets() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("print-env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > {d}/env.part && mv {d}/env.part {d}/env\nexec sleep 300\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = format!(
        "[source]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        script.display()
    );
    let secrets = [
        ("INFLUXDB_TOKEN", "influx-token-not-for-children"),
        ("INFLUXDB_PASSWORD", "influx-password-not-for-children"),
        ("MQTT_SOURCE_PASSWORD", "source-password-not-for-children"),
        ("IIOT_NODE_KEY_7", "000102030405060708090a0b0c0d0e0f"),
    ];
    let mut env = secrets.to_vec();
    env.push(("IIOT_TEST_PASSED_ON", "kept"));
    let mut gw = TestGateway::start_with_env(
        dir.path(),
        &config(dir.path(), &source, &mosquitto, "gw-env"),
        Stdio::null(),
        &env,
    );
    let env_file = dir.path().join("env");
    wait_until("the command to start", Duration::from_secs(10), || async {
        env_file.exists()
    })
    .await;
    let seen = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        seen.lines().any(|l| l == "IIOT_TEST_PASSED_ON=kept"),
        "the rest of the environment passes on: {seen}"
    );
    for (name, value) in secrets {
        assert!(
            !seen.contains(name) && !seen.contains(value),
            "{name} reached the source's program"
        );
    }
    gw.signal(libc::SIGTERM);
    gw.wait(Duration::from_secs(10));
}

/// A child killed by a signal it did not raise is not the child's doing: the gateway logs it
/// as an error naming the signal and counts it apart from exits in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_killed_by_a_signal_is_an_error_counted_apart_from_exits() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flaky");
    // Run 1 exits with 3, run 2 is SIGTERMed from outside (here: itself), run 3 stays.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho x >> {d}/runs\nn=$(wc -l < {d}/runs)\n\
             case $n in 1) exit 3;; 2) kill -TERM $$; sleep 5;; esac\nexec sleep 300\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "[source]\nkind = \"command\"\ncommand = [\"{}\"]\nrestart_initial = \"100ms\"\nrestart_max = \"200ms\"\n\n\
         [storage]\ndir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [mqtt]\nbroker_url = \"{}\"\nclient_id = \"gw-killed\"\n",
        script.display(),
        dir.path().join("data").display(),
        mosquitto.url()
    );
    let gw = TestGateway::start(dir.path(), &config, Stdio::null());
    let runs = dir.path().join("runs");
    wait_until("the third run", Duration::from_secs(20), || async {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
    })
    .await;
    gw.wait_log("✓ dashboard", Duration::from_secs(10)).await;
    let log = plain(&gw.log());
    let url = dashboard_url(&log);
    let killed = log
        .lines()
        .find(|l| l.contains("killed by a signal it did not raise"))
        .unwrap_or_else(|| panic!("no error line for the kill:\n{log}"));
    assert!(killed.contains("ERROR"), "{killed}");
    assert!(
        killed.contains("signal=SIGTERM") || killed.contains("signal=\"SIGTERM\""),
        "{killed}"
    );
    assert_eq!(
        log.matches("source process exited; restarting").count(),
        1,
        "{log}"
    );

    let text = get_text(&format!("{url}/metrics")).await;
    let sample = |cause: &str| {
        let series = format!("iiot_source_restarts_total{{kind=\"command\",cause=\"{cause}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(sample("exited"), "1");
    assert_eq!(sample("killed"), "1");
    assert_eq!(sample("crashed"), "0");
}

/// A pseudo-terminal pair: (master fd, slave path). The master is opened close-on-exec
/// atomically, so no process spawned meanwhile by a parallel test inherits it (which would
/// keep the "device" alive after the test unplugs it).
pub(crate) fn pty() -> (i32, String) {
    // SAFETY: plain libc pty calls on a fd we own; ptsname's buffer is copied at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let name = CStr::from_ptr(libc::ptsname(master))
            .to_string_lossy()
            .into_owned();
        (master, name)
    }
}

pub(crate) fn write_fd(fd: i32, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: fd is our open pty master; the buffer outlives the call.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        assert!(n > 0, "write to pty: {}", std::io::Error::last_os_error());
        off += n as usize;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_source_reads_the_vcp_lines_and_reopens_a_device_that_came_back() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-serial", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyACM0");
    let (master, slave) = pty();
    std::os::unix::fs::symlink(&slave, &link).unwrap();
    let source = format!(
        "[source]\nkind = \"serial\"\npath = \"{}\"\nbaud = 115200\nrestart_initial = \"100ms\"\nrestart_max = \"300ms\"\n",
        link.display()
    );
    let gw = TestGateway::start(
        dir.path(),
        &config(dir.path(), &source, &mosquitto, "gw-serial"),
        Stdio::null(),
    );
    gw.wait_log("serial port opened", Duration::from_secs(10))
        .await;

    let text = fixture("vcp-serial.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(5);
    let to_bytes = |ls: &[&str]| ls.iter().map(|l| format!("{l}\r\n")).collect::<String>();
    write_fd(master, to_bytes(first).as_bytes());
    let expected_first: Vec<Expected> = expected_packets(&first.join("\n"))
        .into_iter()
        .flatten()
        .collect();
    let n1 = expected_first.len();
    wait_readings(&sub, n1, Duration::from_secs(10)).await;

    // Unplug: the pty goes away; plug back in: a new pty behind the same path.
    // SAFETY: closing our pty master.
    unsafe { libc::close(master) };
    gw.wait_log("serial port unavailable", Duration::from_secs(10))
        .await;
    let (master2, slave2) = pty();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&slave2, &link).unwrap();
    wait_until(
        "the port to be reopened",
        Duration::from_secs(10),
        || async { gw.log().matches("serial port opened").count() >= 2 },
    )
    .await;
    write_fd(master2, to_bytes(second).as_bytes());
    let expected: Vec<Expected> = expected_packets(&text).into_iter().flatten().collect();
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    // SAFETY: closing our pty master.
    unsafe { libc::close(master2) };
}

/// Waits until `sub` received at least `n` readings (the gateway status not counted).
async fn wait_readings(sub: &Subscriber, n: usize, timeout: Duration) {
    sub.wait_for(
        |m| {
            m.iter()
                .filter(|m| m.topic != "iiot/gateway/status")
                .count()
                >= n
        },
        timeout,
    )
    .await;
}

/// What a real Node 2 writes to its virtual COM port (`tests/fixtures/vcp-node2-original.raw`):
/// JSON objects each followed by a literal backslash-n, no newline byte anywhere.
fn node2_raw() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vcp-node2-original.raw"),
    )
    .unwrap()
}

/// The raw stream's packets, one record per line, for `expected_packets`.
fn node2_records() -> String {
    String::from_utf8(node2_raw())
        .unwrap()
        .replace("}\\n", "}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_node2_stream_through_stdin_yields_every_packet() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-raw-stdin", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n",
        &mosquitto,
        "gw-raw-stdin",
    );
    let (status, log) = run_stdin(dir.path(), &config, &node2_raw(), Duration::from_secs(60));
    assert!(status.success(), "{status}\n{log}");
    let packets = expected_packets(&node2_records());
    assert_eq!(packets.len(), 10);
    let expected: Vec<Expected> = packets.into_iter().flatten().collect();
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    assert!(
        !dir.path().join("data/quarantine.log").exists(),
        "nothing quarantined"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_node2_stream_through_a_pty_yields_every_packet_as_it_arrives() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-raw-pty", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let (master, slave) = pty();
    let source = format!("[source]\nkind = \"serial\"\npath = \"{slave}\"\nbaud = 115200\n");
    let gw = TestGateway::start(
        dir.path(),
        &config(dir.path(), &source, &mosquitto, "gw-raw-pty"),
        Stdio::null(),
    );
    gw.wait_log("serial port opened", Duration::from_secs(10))
        .await;
    let raw = node2_raw();
    let packets = expected_packets(&node2_records());
    // Each record on its own, in 7-byte writes: a record is delivered once it is complete,
    // without waiting for the next one.
    let mut expected: Vec<Expected> = Vec::new();
    let text = String::from_utf8(raw).unwrap();
    for (record, packet) in text.split_inclusive("}\\n").zip(&packets) {
        for piece in record.as_bytes().chunks(7) {
            write_fd(master, piece);
        }
        expected.extend(packet.iter().cloned());
        let n = expected.len();
        wait_readings(&sub, n, Duration::from_secs(10)).await;
    }
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    drop(gw);
    // SAFETY: closing our pty master.
    unsafe { libc::close(master) };
}

/// A serial port opened in the middle of a record, with line noise before the next one: the
/// piece is quarantined as a fragment, and every whole record after it arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_joined_mid_record_with_noise_quarantines_the_piece_and_loses_no_record() {
    let mosquitto = Mosquitto::start();
    let sub = Subscriber::connect(mosquitto.port, "watcher-midway", "iiot/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"20s\"\n",
        &mosquitto,
        "gw-midway",
    );
    let raw = String::from_utf8(node2_raw()).unwrap();
    let (first, rest) = raw.split_at(raw.find("\"sig\"").unwrap());
    let mut input = rest.as_bytes().to_vec();
    input.splice(0..0, b"\x00\xff".iter().copied());
    let cut = input.len() - rest.len() + rest.find("}\\n").unwrap() + 3;
    input.splice(cut..cut, b"\x00\xfe".iter().copied());
    let (status, log) = run_stdin(dir.path(), &config, &input, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{log}");
    let whole = String::from_utf8_lossy(&input[cut + 2..]).replace("}\\n", "}\n");
    let packets = expected_packets(&whole);
    assert_eq!(packets.len(), 9, "{first}");
    let expected: Vec<Expected> = packets.into_iter().flatten().collect();
    assert_mqtt_exactly(&sub, "iiot", &expected).await;
    let q = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    assert_eq!(q.lines().count(), 1, "{q}");
    assert!(q.contains("a piece of a telemetry record"), "{q}");
}

/// 10 MB of records back to back with no separator at all, some of them broken: every good
/// record is committed, every broken one quarantined, and memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn ten_megabytes_without_a_separator_lose_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::with_capacity(10_500_000);
    let (mut good, mut broken) = (0u64, 0u64);
    let mut i = 0u64;
    while input.len() < 10_000_000 {
        let record = format!(
            "{{\"ts\":{},\"id\":\"N2\",\"n1\":{{\"t\":2{}.5,\"h\":5{}.1,\"g\":{}}},\"sig\":{{\"rssi\":-40,\"snr\":9}},\"sts\":{{\"rx\":{i},\"err\":0}}}}",
            i * 500,
            i % 10,
            i % 7,
            80_000 + i
        );
        match i % 997 {
            // A record cut short (the next one starts right after it)...
            13 => {
                input.push_str(&record[..record.len() / 2]);
                input.push('}');
                broken += 1;
            }
            // ... and one that lost a quote.
            500 => {
                input.push_str(&record.replacen("\"id\":\"N2\"", "\"id\":\"N2", 1));
                broken += 1;
            }
            _ => {
                input.push_str(&record);
                good += 1;
            }
        }
        i += 1;
    }
    let config = format!(
        "[source]\nkind = \"stdin\"\ndrain_timeout = \"60s\"\n\n[storage]\ndir = \"{}\"\n\n[http]\nenabled = false\n",
        dir.path().join("data").display()
    );
    let mut gw = TestGateway::start(dir.path(), &config, Stdio::piped());
    let pid = gw.pid();
    let mut stdin = gw.stdin();
    let mut peak_kib = 0u64;
    for piece in input.as_bytes().chunks(64 * 1024) {
        use std::io::Write as _;
        stdin.write_all(piece).unwrap();
        peak_kib = peak_kib.max(hwm_kib(pid));
    }
    drop(stdin);
    let status = gw.wait(Duration::from_secs(300));
    let log = plain(&gw.log());
    assert!(status.success(), "{status}\n{log}");
    let committed: u64 = log
        .lines()
        .find(|l| l.contains("gateway stopped"))
        .and_then(|l| l.split("packets=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in:\n{log}"));
    let quarantine = std::fs::read_to_string(dir.path().join("data/quarantine.log")).unwrap();
    let quarantined = quarantine.lines().filter(|l| l.contains("\"ts\":")).count() as u64;
    eprintln!("10 MB stream: {i} records, {good} good committed={committed}, {broken} broken quarantined={quarantined}, peak RSS {peak_kib} KiB");
    assert_eq!(committed, good);
    assert!(
        quarantined >= broken,
        "{quarantined} of {broken} broken records quarantined"
    );
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
}

/// Peak resident memory of `pid` (VmHWM), KiB.
fn hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
