//! Load tool for the end-to-end scripts in `bench/` (see BENCHMARKS.md). Not a test, not
//! part of the gateway: built as a Cargo example so CI compiles it.
//!
//!   benchtool lines   --count N [--rate R]          firmware lines on stdout (R/s, 0 = flat out)
//!   benchtool publish --port P --lines FILE         the broker-alone ceiling: one QoS 1
//!                                                   publisher, same topics/payloads/window
//!   benchtool latency --port P --vm URL --gateway BIN --config FILE --rate R --seconds S
//!                                                   line in -> MQTT subscriber, and -> database
//!   benchtool decode  --file F --iters N            decode F's lines N times (a fixed amount
//!                                                   of work, for callgrind instruction counts)
//!   benchtool commits --dir D --count N [--rate R]  what the ingest thread does per line at a
//!                                                   low rate (budget check + one-packet
//!                                                   commit), timed one by one: p50/p99/max
//!   benchtool radio-acks --gateway BIN --config FILE --rate R --seconds S
//!                                                   a RYLR998 modem on a pty: `+RCV` frames
//!                                                   in, time to each ACK's `AT+SEND` (sent
//!                                                   only after the commit)
//!   benchtool command-latency --gateway BIN --interval-ms I --count N
//!                                                   a modem and node 1 on a pty: each
//!                                                   command's POST to its confirmation
//!
//! Every line is the design's firmware line (9 readings) with `sts.rx` = its index, so the
//! database leg can tell which packets are visible.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod command_latency;
use iiot_gateway::decode::{decode, Decoded};
use iiot_gateway::mqtt::topic::reading_topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print firmware lines (probe-rs form), paced.
    Lines {
        #[arg(long)]
        count: u64,
        /// Lines per second; 0 = as fast as the reader takes them.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Publish every reading of the lines in FILE at QoS 1 with at most `inflight` awaiting
    /// PUBACK; time from the first publish to the last PUBACK.
    Publish {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        lines: std::path::PathBuf,
        #[arg(long, default_value_t = 100)]
        inflight: usize,
        #[arg(long, default_value = "iiot")]
        prefix: String,
    },
    /// Node 1 behind a modem on a pty, uplinks every `interval_ms`: the time from each of
    /// `count` commands' POST to its confirmation.
    CommandLatency {
        #[arg(long)]
        gateway: std::path::PathBuf,
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 50)]
        count: u32,
        /// The node confirms in its next regular uplink, not in an extra one at once (what
        /// our Node 1 does).
        #[arg(long)]
        confirm_in_next_uplink: bool,
    },
    /// Run the gateway with stdin piped, feed it `rate` lines/s for `seconds`, and time each
    /// MQTT message (subscriber on `port`) and each packet's visibility in VictoriaMetrics.
    Latency {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        vm: String,
        #[arg(long)]
        gateway: std::path::PathBuf,
        #[arg(long)]
        config: std::path::PathBuf,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Poll period of the database leg.
        #[arg(long, default_value_t = 50)]
        poll_ms: u64,
        /// `sts.rx` of the first packet (distinct per run when runs share one database).
        #[arg(long, default_value_t = 0)]
        base: u64,
    },
    /// Commit `count` one-packet batches to a fresh outbox in DIR (budget check + append,
    /// as the ingest thread does for each line at low rates), `rate` per second (0 = flat
    /// out), and report the time each took.
    Commits {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 3000)]
        count: u64,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// `sync = "full"` instead of the default `normal`.
        #[arg(long)]
        full: bool,
    },
    /// Be a RYLR998 modem on a pseudo-terminal: run the gateway with FILE plus a `rylr998`
    /// source on it, answer its set-up, send Node 1 frames at `rate` per second for `seconds`,
    /// and time each packet from its `+RCV` to its ACK's `AT+SEND` (after the commit).
    RadioAcks {
        #[arg(long)]
        gateway: std::path::PathBuf,
        /// A config without `[source]` (sinks, storage).
        #[arg(long)]
        config: std::path::PathBuf,
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Decode every line of FILE `iters` times (for `valgrind --tool=callgrind`: instructions
    /// per line = difference of two runs with different `iters`).
    Decode {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        iters: u64,
    },
}

/// The design's firmware line: 9 readings, `sts.rx` = `i`.
fn line(i: u64) -> String {
    let t = 20.0 + (i % 100) as f64 / 10.0;
    format!(
        "[INFO] JSON sent via VCP: {{\"ts\":{ts},\"id\":\"N2\",\"n1\":{{\"t\":{t:.1},\"h\":53.7,\"g\":82447}},\"n2\":{{\"t\":26.5,\"h\":48.4}},\"sig\":{{\"rssi\":-33,\"snr\":11}},\"sts\":{{\"rx\":{i},\"err\":0}}}}\\n (node2_firmware src/main.rs:600)",
        ts = 10_000 + i * 10
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lines { count, rate } => lines(count, rate),
        Cmd::Publish {
            port,
            lines,
            inflight,
            prefix,
        } => rt().block_on(publish(port, &lines, inflight, &prefix)),
        Cmd::Latency {
            port,
            vm,
            gateway,
            config,
            rate,
            seconds,
            poll_ms,
            base,
        } => rt().block_on(latency(
            port, &vm, &gateway, &config, rate, seconds, poll_ms, base,
        )),
        Cmd::Commits {
            dir,
            count,
            rate,
            full,
        } => commits(&dir, count, rate, full),
        Cmd::RadioAcks {
            gateway,
            config,
            rate,
            seconds,
        } => radio_acks(&gateway, &config, rate, seconds),
        Cmd::CommandLatency {
            gateway,
            interval_ms,
            count,
            confirm_in_next_uplink,
        } => command_latency::run(
            &gateway,
            Duration::from_millis(interval_ms),
            count,
            !confirm_in_next_uplink,
        ),
        Cmd::Decode { file, iters } => {
            let text = std::fs::read_to_string(file)?;
            let lines: Vec<&str> = text.lines().collect();
            let mut readings = 0usize;
            for _ in 0..iters {
                for (i, l) in lines.iter().enumerate() {
                    if let Decoded::Packet { packet, .. } =
                        decode(std::hint::black_box(l), i as i64)
                    {
                        readings += packet.readings.len();
                    }
                }
            }
            println!("lines={} readings={readings}", lines.len() as u64 * iters);
            Ok(())
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn lines(count: u64, rate: f64) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let start = Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                out.flush()?;
                std::thread::sleep(due - now);
            }
        }
        writeln!(out, "{}", line(i))?;
        if rate > 0.0 {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

fn mqtt_options(id: &str, port: u16, inflight: usize) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(u16::try_from(inflight * 2).unwrap_or(u16::MAX))
        .set_max_packet_size(1 << 20, 1 << 20);
    opts
}

async fn publish(
    port: u16,
    path: &std::path::Path,
    inflight: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    // The messages the gateway would publish for these lines, built before the clock starts.
    let mut msgs: Vec<(String, Vec<u8>)> = Vec::new();
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    for (i, l) in file.lines().enumerate() {
        if let Decoded::Packet { packet, .. } = decode(&l?, i as i64) {
            for r in packet.readings {
                msgs.push((
                    reading_topic(prefix, &r.node, &r.metric),
                    r.value.as_bytes().to_vec(),
                ));
            }
        }
    }
    let mut opts = mqtt_options("bench-broker-alone", port, inflight);
    opts.set_clean_session(false);
    let (client, mut ev) = AsyncClient::new(opts, inflight + 8);
    // Connect first: the clock starts at the first publish.
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = ev.poll().await? {
            break;
        }
    }
    let n = msgs.len();
    let start = Instant::now();
    let (mut next, mut outstanding, mut acked) = (0usize, 0usize, 0usize);
    while acked < n {
        while outstanding < inflight && next < n {
            let (topic, payload) = &msgs[next];
            if client
                .try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                .is_err()
            {
                break;
            }
            next += 1;
            outstanding += 1;
        }
        if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await? {
            outstanding -= 1;
            acked += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "broker_alone messages={n} seconds={secs:.3} messages_per_s={:.0} inflight={inflight}",
        n as f64 / secs
    );
    Ok(())
}

fn commits(dir: &std::path::Path, count: u64, rate: f64, full: bool) -> anyhow::Result<()> {
    use iiot_gateway::config::{FullPolicy, StorageConfig, SyncMode};
    use iiot_gateway::outbox::Outbox;
    let cfg = StorageConfig {
        dir: dir.to_path_buf(),
        retention: Duration::from_secs(7 * 24 * 3600),
        sync: if full {
            SyncMode::Full
        } else {
            SyncMode::Normal
        },
        max_bytes: 1 << 30,
        on_full: FullPolicy::DropOldest,
        move_corrupt_aside: false,
    };
    let mut outbox = Outbox::open(&cfg)?;
    outbox.track_sinks(&["mqtt", "influxdb"])?;
    let mut took = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let Decoded::Packet { packet, .. } = decode(&line(i), i as i64) else {
            anyhow::bail!("the bench line did not decode");
        };
        let t0 = Instant::now();
        outbox.enforce_budget(cfg.max_bytes, true)?;
        outbox.append(std::slice::from_ref(&packet))?;
        took.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let over = |ms: f64| took.iter().filter(|t| **t > ms).count();
    println!(
        "commits: sync={} rate={rate}/s over_1ms={} over_5ms={}",
        if full { "full" } else { "normal" },
        over(1.0),
        over(5.0)
    );
    summary("commit", took);
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

#[allow(clippy::too_many_arguments)]
async fn latency(
    port: u16,
    vm: &str,
    gateway: &std::path::Path,
    config: &std::path::Path,
    rate: f64,
    seconds: u64,
    poll_ms: u64,
    base: u64,
) -> anyhow::Result<()> {
    let count = (rate * seconds as f64) as u64;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let mqtt_lat: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));

    // Subscriber: the k-th message on a topic belongs to packet k (one QoS 1 publisher,
    // in order per topic).
    let (sub, mut ev) = AsyncClient::new(mqtt_options("bench-latency-sub", port, 100), 64);
    sub.subscribe("iiot/+/+", QoS::AtLeastOnce).await?;
    let online = Arc::new(tokio::sync::Notify::new());
    {
        let (sent, lat, online) = (sent.clone(), mqtt_lat.clone(), online.clone());
        tokio::spawn(async move {
            let mut per_topic: HashMap<String, usize> = HashMap::new();
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        if p.topic.ends_with("/gateway/status") {
                            if &p.payload[..] == b"online" {
                                online.notify_one();
                            }
                            continue;
                        }
                        let k = per_topic.entry(p.topic.clone()).or_default();
                        if let Some(t) = sent.lock().unwrap().get(*k) {
                            lat.lock()
                                .unwrap()
                                .push(now.duration_since(*t).as_secs_f64() * 1e3);
                        }
                        *k += 1;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut child = tokio::process::Command::new(gateway)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    tokio::time::timeout(Duration::from_secs(30), online.notified()).await?;
    println!(
        "startup_to_mqtt_online_ms={:.1}",
        started.elapsed().as_secs_f64() * 1e3
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Database leg: poll the packets_received{node="stats"} series (value = packet index).
    let http = reqwest::Client::new();
    let db_lat: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let db_task = {
        let (sent, db_lat, vm, http) = (sent.clone(), db_lat.clone(), vm.to_string(), http.clone());
        tokio::spawn(async move {
            // Highest packet index (value - base) seen in the database so far.
            let mut visible: i64 = -1;
            loop {
                tokio::time::sleep(Duration::from_millis(poll_ms)).await;
                let _ = http.get(format!("{vm}/internal/force_flush")).send().await;
                let url = format!("{vm}/api/v1/export");
                let end = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    + 86_400)
                    .to_string();
                let Ok(resp) = http
                    .get(&url)
                    .query(&[
                        ("match[]", "packets_received_value{node=\"stats\"}"),
                        ("start", "0"),
                        ("end", end.as_str()),
                    ])
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(body) = resp.text().await else {
                    continue;
                };
                let now = Instant::now();
                let mut max = visible;
                for l in body.lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                        for x in v["values"].as_array().into_iter().flatten() {
                            if let Some(x) = x.as_f64() {
                                // Values below `base` are earlier runs' packets.
                                max = max.max(x as i64 - base as i64);
                            }
                        }
                    }
                }
                let sent = sent.lock().unwrap();
                for i in (visible + 1)..=max {
                    if let Some(t) = sent.get(i as usize) {
                        db_lat
                            .lock()
                            .unwrap()
                            .push(now.duration_since(*t).as_secs_f64() * 1e3);
                    }
                }
                visible = max;
                if visible + 1 >= count as i64 {
                    return;
                }
            }
        })
    };

    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let mut text = line(base + i);
        text.push('\n');
        sent.lock().unwrap().push(Instant::now());
        stdin.write_all(text.as_bytes()).await?;
        stdin.flush().await?;
    }
    drop(stdin);
    let status = child.wait().await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), db_task).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("gateway_exit={status} packets={count} rate={rate}/s");
    let m = mqtt_lat.lock().unwrap().clone();
    println!("mqtt_messages_expected={} received={}", count * 9, m.len());
    summary("line_to_subscriber", m);
    summary(
        &format!("line_to_database_visible(poll {poll_ms} ms)"),
        db_lat.lock().unwrap().clone(),
    );
    Ok(())
}

/// A pseudo-terminal's master side: (fd, the slave's path).
fn open_pty() -> anyhow::Result<(i32, String)> {
    // SAFETY: plain libc pty calls on a fd we own; ptsname's buffer is copied at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        anyhow::ensure!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::grantpt(master) == 0 && libc::unlockpt(master) == 0,
            "grantpt"
        );
        let name = std::ffi::CStr::from_ptr(libc::ptsname(master))
            .to_string_lossy()
            .into_owned();
        Ok((master, name))
    }
}

fn pty_write(fd: i32, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: fd is our pty master; the buffer outlives the call.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n <= 0 {
            return;
        }
        off += n as usize;
    }
}

fn radio_acks(
    gateway: &std::path::Path,
    config: &std::path::Path,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<()> {
    use lora_link::packet::{AckPacket, SensorDataPacket};
    use lora_link::secure;
    // Node 1 with the published test key of docs/PROTOCOL.md: secure frames, as a gateway
    // takes them by default.
    const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f";
    let key = secure::Key::from_hex(TEST_KEY).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (master, path) = open_pty()?;
    let radio_config = config.with_extension("radio.toml");
    std::fs::write(
        &radio_config,
        format!(
            "[source]\nkind = \"rylr998\"\npath = \"{path}\"\n\
             [source.nodes.1]\nname = \"node1\"\nkey = \"{TEST_KEY}\"\n{}",
            std::fs::read_to_string(config)?
        ),
    )?;
    // The ACK expected for a frame -> when its +RCV was written; the delays of the ACKs seen.
    let sent: Arc<Mutex<HashMap<Vec<u8>, Instant>>> = Arc::default();
    let delays: Arc<Mutex<Vec<f64>>> = Arc::default();
    let set_up = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (sent, delays, set_up) = (sent.clone(), delays.clone(), set_up.clone());
        std::thread::spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into our buffer from our fd.
                let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let now = Instant::now();
                pending.extend_from_slice(&buf[..n as usize]);
                while let Some(len) = lora_link::at::command_len(&pending) {
                    let command: Vec<u8> = pending.drain(..len).collect();
                    if command.starts_with(b"AT+SEND=") {
                        let data_at = command
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b',')
                            .nth(1)
                            .map_or(command.len(), |(i, _)| i + 1);
                        let data = &command[data_at..command.len().saturating_sub(2)];
                        if let Some(t) = sent.lock().unwrap().remove(data) {
                            delays
                                .lock()
                                .unwrap()
                                .push(now.duration_since(t).as_secs_f64() * 1e3);
                        }
                    } else {
                        set_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    pty_write(master, b"+OK\r\n");
                }
            }
        });
    }
    let mut child = std::process::Command::new(gateway)
        .arg("--config")
        .arg(&radio_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // AT, ADDRESS, NETWORKID, BAND, PARAMETER.
    while set_up.load(std::sync::atomic::Ordering::Relaxed) < 5 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway never set the modem up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let count = (rate * seconds as f64) as u64;
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let seq = (i % 65_535) as u16 + 1;
        let packet = SensorDataPacket {
            seq_num: seq,
            temperature: (200 + i % 100) as i16,
            humidity: 5000,
            gas_resistance: 80_000,
        };
        let counter = i as u32 + 1;
        let mut frame = [0u8; secure::MAX_UPLINK_LEN];
        let n = secure::seal_uplink(&key, 1, counter, &packet, &mut frame)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut ack = [0u8; secure::MAX_ACK_FRAME_LEN];
        let a = secure::seal_ack(&key, 1, counter, &AckPacket::ack(seq), &mut ack)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut rcv = format!("+RCV=1,{n},").into_bytes();
        rcv.extend_from_slice(&frame[..n]);
        rcv.extend_from_slice(b",-40,9\r\n");
        sent.lock()
            .unwrap()
            .insert(ack[..a].to_vec(), Instant::now());
        pty_write(master, &rcv);
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let delays = delays.lock().unwrap().clone();
    println!(
        "radio_acks: rate={rate}/s sent={count} acked={} unacked={}",
        delays.len(),
        sent.lock().unwrap().len()
    );
    summary("rcv_to_ack", delays);
    Ok(())
}
