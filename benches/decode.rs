//! Decoder throughput on the recorded fixtures (docs/ARCHITECTURE.md, "Performance budget": ≥ 1,000,000 lines/s on
//! one core). Criterion reports lines/s (`Throughput::Elements`, one element per line).
//!
//!   cargo bench --bench decode                 (full run, ~1 min)
//!   cargo test --bench decode                  (each benchmark once, as CI does)
//!
//! Groups:
//! - `probe_rs_session`: every line of `tests/fixtures/probe-rs-session.log` as recorded
//!   (flash progress and defmt log lines that are skipped, plus the telemetry lines);
//! - `probe_rs_marker`: only its telemetry lines (`[INFO] JSON sent via VCP: {...}\n (loc)`);
//! - `vcp_bare_json`: every line of `tests/fixtures/vcp-serial.jsonl` (bare JSON objects).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iiot_gateway::decode::{decode, Decoded, MARKER};

const SESSION: &str = include_str!("../tests/fixtures/probe-rs-session.log");
const VCP: &str = include_str!("../tests/fixtures/vcp-serial.jsonl");

/// Decodes every line once; returns the readings produced (so nothing is optimized away).
fn decode_all(lines: &[&str]) -> usize {
    let mut readings = 0;
    for (i, line) in lines.iter().enumerate() {
        if let Decoded::Packet { packet, .. } = decode(black_box(line), i as i64) {
            readings += packet.readings.len();
        }
    }
    readings
}

fn bench(c: &mut Criterion) {
    let session: Vec<&str> = SESSION.lines().collect();
    let marker: Vec<&str> = session
        .iter()
        .copied()
        .filter(|l| l.contains(MARKER))
        .collect();
    let vcp: Vec<&str> = VCP.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !marker.is_empty() && !vcp.is_empty(),
        "fixtures hold telemetry"
    );

    let mut group = c.benchmark_group("decode");
    for (name, lines) in [
        ("probe_rs_session", &session),
        ("probe_rs_marker", &marker),
        ("vcp_bare_json", &vcp),
    ] {
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_all(lines)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
