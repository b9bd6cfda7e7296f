//! Outbox commit throughput (docs/ARCHITECTURE.md, "Performance budget": ≥ 200,000 readings/s committed with the
//! default durability). Criterion reports readings/s (`Throughput::Elements`, one element
//! per reading) and the time per commit.
//!
//!   cargo bench --bench outbox                 (full run, ~2 min)
//!   cargo test --bench outbox                  (each benchmark once, as CI does)
//!
//! Each iteration is one `Outbox::append` (one transaction), as the ingest thread does it,
//! with `batchN` = N packets of 9 readings per commit, N = 1, 16, 64, 256, 1024, 4096:
//! - `batch1`: one packet (9 readings) per commit (a slow source: every line is its own
//!   transaction), which is the per-commit cost behind the latency at low rates;
//! - `batch16` to `batch1024`: what the ingest thread takes when that many lines are queued
//!   (1024 is its `MAX_BATCH_LINES` and the default `channel_capacity`: what a fast source
//!   fills), 9,216 readings per commit at most;
//! - `batch4096`: a larger batch, to show where the rate levels off (it does not gain);
//!
//! for `sync = "normal"` (WAL + synchronous=NORMAL, the default) and `sync = "full"`. Each
//! case has its own database in a temp dir under `$BENCH_TMPDIR` (default: the system temp
//! dir; put it on the disk the gateway's `[storage] dir` will use), which keeps growing during
//! the case like a real outbox whose sinks keep up (nothing is pruned).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iiot_gateway::config::{FullPolicy, StorageConfig, SyncMode};
use iiot_gateway::decode::{decode, Decoded};
use iiot_gateway::outbox::Outbox;
use iiot_gateway::reading::Packet;

/// The firmware line of the design: 9 readings (n1 t/h/g, n2 t/h, sig rssi/snr, sts rx/err).
const LINE: &str = r#"[INFO] JSON sent via VCP: {"ts":40500,"id":"N2","n1":{"t":27.3,"h":53.7,"g":82447},"n2":{"t":26.5,"h":48.4},"sig":{"rssi":-33,"snr":11},"sts":{"rx":4,"err":0}}\n (node2_firmware src/main.rs:600)"#;

fn packets(n: usize, start_ns: i64) -> Vec<Packet> {
    (0..n)
        .map(|i| match decode(LINE, start_ns + i as i64) {
            Decoded::Packet { packet, .. } => packet,
            other => panic!("fixture line did not decode: {other:?}"),
        })
        .collect()
}

fn open(dir: &std::path::Path, sync: SyncMode) -> Outbox {
    Outbox::open(&StorageConfig {
        dir: dir.to_path_buf(),
        retention: Duration::from_secs(7 * 24 * 3600),
        sync,
        max_bytes: 1 << 30,
        on_full: FullPolicy::DropOldest,
        move_corrupt_aside: false,
    })
    .expect("open outbox")
}

fn bench(c: &mut Criterion) {
    let base = std::env::var_os("BENCH_TMPDIR").map(std::path::PathBuf::from);
    let mut group = c.benchmark_group("outbox_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (mode, sync) in [("normal", SyncMode::Normal), ("full", SyncMode::Full)] {
        for batch in [1usize, 16, 64, 256, 1024, 4096] {
            let dir = match &base {
                Some(b) => tempfile::tempdir_in(b),
                None => tempfile::tempdir(),
            }
            .expect("temp dir");
            let mut outbox = open(dir.path(), sync);
            let template = packets(batch, 0);
            let readings: usize = template.iter().map(|p| p.readings.len()).sum();
            group.throughput(Throughput::Elements(readings as u64));
            let mut ts = 1_764_230_400_000_000_000i64;
            group.bench_function(BenchmarkId::new(mode, format!("batch{batch}")), |b| {
                b.iter_batched_ref(
                    || {
                        let mut p = template.clone();
                        for packet in &mut p {
                            ts += 1;
                            packet.received_ns = ts;
                        }
                        p
                    },
                    |p| black_box(outbox.append(p).expect("append")),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
