//! The radio link crate's throughput (issue: at least 1 M frames/s on one core). Criterion
//! reports frames/s (`Throughput::Elements`, one element per frame).
//!
//!   cargo bench --bench link                   (full run)
//!   cargo test --bench link                    (each benchmark once, as CI does)
//!
//! Groups:
//! - `modem_parse`: a modem byte stream of 4,096 `+RCV` frames (10-byte sensor frames with
//!   varied values, some holding 0x0A, RSSI/SNR of varied width) fed in 4 KiB chunks, every
//!   event taken;
//! - `frame_decode`: CRC check and postcard decoding of each frame's bytes;
//! - `parse_and_decode`: both, as the `rylr998` source does per frame;
//! - `secure_open`: checking the tag of and decrypting each of the frames sealed as secure
//!   uplinks (AES-128-CCM, `lora_link::secure`), one key, counters 1..=4096;
//! - `secure_seal`: sealing them, as a node does.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lora_link::modem::{Event, ModemParser};
use lora_link::packet::{SensorDataPacket, MAX_FRAME_LEN};
use lora_link::secure::{open_uplink, seal_uplink, Key, MAX_UPLINK_LEN};

const FRAMES: usize = 4096;

/// The sensor frames and the modem stream carrying them.
fn stream() -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut frames = Vec::with_capacity(FRAMES);
    let mut bytes = Vec::new();
    for i in 0..FRAMES {
        let p = SensorDataPacket {
            seq_num: i as u16,
            temperature: (200 + (i % 150)) as i16 - 100,
            humidity: (3000 + i * 7 % 4000) as u16,
            gas_resistance: 50_000 + (i as u32 * 13) % 70_000,
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = p.encode_frame(&mut buf).unwrap();
        let frame = buf[..n].to_vec();
        bytes.extend_from_slice(format!("+RCV={},{},", 1 + i % 3, n).as_bytes());
        bytes.extend_from_slice(&frame);
        bytes.extend_from_slice(
            format!(",{},{}\r\n", -20 - (i % 100) as i32, (i % 25) as i32 - 12).as_bytes(),
        );
        frames.push(frame);
    }
    (frames, bytes)
}

/// Parses `bytes` in 4 KiB chunks; with `decode`, also decodes each frame. Returns a sum of
/// what was found (so nothing is optimized away).
fn parse(bytes: &[u8], decode: bool) -> u64 {
    let mut p = ModemParser::new();
    let mut found = 0u64;
    for mut chunk in bytes.chunks(4096) {
        while !chunk.is_empty() {
            let n = p.feed(chunk);
            chunk = &chunk[n..];
            while let Some(event) = p.next_event() {
                if let Event::Frame(f) = event {
                    found += u64::from(f.sender);
                    if decode {
                        if let Ok(packet) = SensorDataPacket::decode_frame(f.data) {
                            found += u64::from(packet.seq_num);
                        }
                    }
                }
            }
        }
    }
    found
}

fn bench(c: &mut Criterion) {
    let (frames, bytes) = stream();
    assert_eq!(
        parse(&bytes, true),
        (0..FRAMES as u64).map(|i| 1 + i % 3 + i).sum::<u64>(),
        "every frame parsed and decoded"
    );
    let mut group = c.benchmark_group("link");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("modem_parse", |b| {
        b.iter(|| parse(black_box(&bytes), false))
    });
    group.bench_function("frame_decode", |b| {
        b.iter(|| {
            frames
                .iter()
                .filter_map(|f| SensorDataPacket::decode_frame(black_box(f)).ok())
                .map(|p| u64::from(p.seq_num))
                .sum::<u64>()
        })
    });
    group.bench_function("parse_and_decode", |b| {
        b.iter(|| parse(black_box(&bytes), true))
    });
    // Secure uplinks of the same packets (a benchmark key).
    let key = Key::new([0x5A; 16]);
    let packets: Vec<SensorDataPacket> = frames
        .iter()
        .map(|f| SensorDataPacket::decode_frame(f).unwrap())
        .collect();
    let sealed: Vec<Vec<u8>> = packets
        .iter()
        .zip(1u32..)
        .map(|(p, counter)| {
            let mut out = [0u8; MAX_UPLINK_LEN];
            let n = seal_uplink(&key, 1, counter, p, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect();
    let open_all = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter_map(|f| open_uplink(&key, 1, black_box(f)).ok())
            .map(|u| u64::from(u.packet.seq_num))
            .sum::<u64>()
    };
    assert_eq!(
        open_all(&sealed),
        packets.iter().map(|p| u64::from(p.seq_num)).sum::<u64>(),
        "every secure frame opens"
    );
    group.bench_function("secure_open", |b| b.iter(|| open_all(&sealed)));
    group.bench_function("secure_seal", |b| {
        b.iter(|| {
            let mut out = [0u8; MAX_UPLINK_LEN];
            packets
                .iter()
                .zip(1u32..)
                .map(|(p, counter)| seal_uplink(&key, 1, counter, black_box(p), &mut out).unwrap())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
