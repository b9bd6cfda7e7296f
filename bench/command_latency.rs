//! `benchtool command-latency`: the time from a command's arrival at the gateway (its
//! `POST`) to its confirmation, through the `rylr998` source. benchtool is the modem on a
//! pseudo-terminal and node 1 behind it (the published test key): an uplink every
//! `interval`; a command found in an ACK is confirmed at once in an extra uplink, the slots
//! going on from it, as our Node 1 does (`at_once`), or in the next regular uplink. Commands are sent one at a time at a
//! random moment of the node's cycle; the gateway runs with its own config (HTTP with a
//! token, no sinks).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lora_link::downlink::Extras;
use lora_link::packet::SensorDataPacket;
use lora_link::secure::{self, Key};

const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const TOKEN: &str = "bench-token-0123456789";

/// Runs `count` commands against a gateway started from `gateway`; prints p50/p99/max.
pub fn run(
    gateway: &std::path::Path,
    interval: Duration,
    count: u32,
    at_once: bool,
) -> anyhow::Result<()> {
    let key = Key::from_hex(TEST_KEY).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (master, path) = super::open_pty()?;
    let dir = std::env::temp_dir().join(format!("bench-commands-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"rylr998\"\npath = \"{path}\"\n\
             [source.nodes.1]\nname = \"node1\"\nkey = \"{TEST_KEY}\"\n\
             [storage]\ndir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n",
            dir.join("data").display()
        ),
    )?;
    // The node: its counter, the counter in flight, and the numbers it applied.
    let counter = Arc::new(AtomicU32::new(0));
    let applied: Arc<Mutex<Vec<u16>>> = Arc::default();
    let (confirm_tx, confirm_rx) = mpsc::channel::<u16>();
    {
        let (counter, applied, key) = (counter.clone(), applied.clone(), key.clone());
        std::thread::spawn(move || modem(master, &key, &counter, &applied, &confirm_tx));
    }
    {
        let (counter, key) = (counter.clone(), key.clone());
        std::thread::spawn(move || node(master, &key, interval, at_once, &counter, &confirm_rx));
    }
    let mut child = std::process::Command::new(gateway)
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}/api/nodes/node1/commands");
    let rt = super::rt();
    let latencies = rt.block_on(commands(&url, interval, count));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let latencies = latencies?;
    println!(
        "command_latency: interval={interval:?} confirm_at_once={at_once} commands={} (bound: interval + 1 s = {:?})",
        latencies.len(),
        interval + Duration::from_secs(1)
    );
    super::summary("post_to_confirmed", latencies);
    Ok(())
}

/// Sends the commands one by one, each at a random moment, and times each to `confirmed`.
async fn commands(url: &str, interval: Duration, count: u32) -> anyhow::Result<Vec<f64>> {
    let client = reqwest::Client::new();
    // The gateway's first start and the node's first uplink.
    let ready = Instant::now();
    while client.get(url).bearer_auth(TOKEN).send().await.is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "the gateway never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut latencies = Vec::new();
    for i in 0..count {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let phase = interval.mul_f64((seed % 1000) as f64 / 1000.0);
        tokio::time::sleep(phase).await;
        let id = format!("b-{i}");
        let body = format!("{{\"id\": \"{id}\", \"command\": \"ping\"}}");
        let sent = Instant::now();
        let resp = client
            .post(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 202, "POST: {}", resp.status());
        loop {
            anyhow::ensure!(
                sent.elapsed() < interval * 10,
                "command {id} never confirmed"
            );
            let list: serde_json::Value = serde_json::from_slice(
                &client
                    .get(url)
                    .bearer_auth(TOKEN)
                    .send()
                    .await?
                    .bytes()
                    .await?,
            )?;
            let confirmed = list
                .as_array()
                .and_then(|l| l.iter().find(|c| c["id"] == id.as_str()))
                .is_some_and(|c| c["state"] == "confirmed");
            if confirmed {
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(latencies)
}

/// The modem: `+OK` to every command; an ACK for node 1 is opened with the counter in
/// flight, and a command in it is applied once and confirmed at once.
fn modem(
    master: i32,
    key: &Key,
    counter: &AtomicU32,
    applied: &Mutex<Vec<u16>>,
    confirm: &mpsc::Sender<u16>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: reading into our buffer from our fd.
        let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        pending.extend_from_slice(&buf[..n as usize]);
        while let Some(len) = lora_link::at::command_len(&pending) {
            let command: Vec<u8> = pending.drain(..len).collect();
            super::pty_write(master, b"+OK\r\n");
            let Some(data) = command.strip_prefix(b"AT+SEND=1,") else {
                continue;
            };
            let Some(at) = data.iter().position(|b| *b == b',') else {
                continue;
            };
            let frame = &data[at + 1..data.len().saturating_sub(2)];
            let in_flight = counter.load(Ordering::SeqCst);
            if let Ok((_, Some(c))) = secure::open_ack_with(key, 1, in_flight, frame) {
                let mut applied = applied.lock().unwrap();
                if !applied.contains(&c.number) {
                    applied.push(c.number);
                }
                let _ = confirm.send(c.number);
            }
        }
    }
}

/// Node 1: an uplink every `interval`, confirming what an ACK brought with `at_once` in an
/// extra uplink right away (the slots go on from it, as on our Node 1), else in the next one.
fn node(
    master: i32,
    key: &Key,
    interval: Duration,
    at_once: bool,
    counter: &AtomicU32,
    confirm: &mpsc::Receiver<u16>,
) {
    let mut next = Instant::now();
    let mut seq: u16 = 0;
    let mut owed: Option<u16> = None;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let confirming = match confirm.recv_timeout(wait) {
            Ok(number) if at_once => {
                next = Instant::now() + interval;
                Some(number)
            }
            Ok(number) => {
                owed = Some(number);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                next += interval;
                owed.take()
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        seq = seq.wrapping_add(1);
        let c = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let packet = SensorDataPacket {
            seq_num: seq,
            temperature: 215,
            humidity: 4000,
            gas_resistance: 1000,
        };
        let extras = Extras {
            confirm: confirming,
            info: None,
        };
        let mut frame = [0u8; secure::MAX_UPLINK_LEN];
        let Ok(n) = secure::seal_uplink_with(key, 1, c, &packet, &extras, &mut frame) else {
            continue;
        };
        let mut rcv = format!("+RCV=1,{n},").into_bytes();
        rcv.extend_from_slice(&frame[..n]);
        rcv.extend_from_slice(b",-40,9\r\n");
        super::pty_write(master, &rcv);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
