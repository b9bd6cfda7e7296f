//! Fuzzes the decoder with arbitrary bytes, read as lossy UTF-8 as the sources read them: it
//! must never panic, must be deterministic, and every reading it accepts must be safe for
//! every sink (names `[A-Za-z0-9_-]{1,64}`, value text a finite number), and its one-pass
//! fast path must decide exactly like the decoder that explains.
#![no_main]

use iiot_gateway::decode::{decode, decode_explained, Decoded};
use iiot_gateway::reading::MAX_NAME_LEN;
use libfuzzer_sys::fuzz_target;

fn is_safe_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let decoded = decode(&line, 0);
    if let Decoded::Packet { packet, .. } = &decoded {
        assert!(!packet.readings.is_empty(), "a packet without readings");
        for r in &packet.readings {
            assert!(is_safe_name(&r.node), "unsafe node name in {r:?}");
            assert!(is_safe_name(&r.metric), "unsafe metric name in {r:?}");
            assert!(
                r.value.parse::<f64>().is_ok_and(f64::is_finite),
                "value is not a finite number in {r:?}"
            );
        }
    }
    assert_eq!(decoded, decode(&line, 0), "not deterministic");
    assert_eq!(decoded, decode_explained(&line, 0), "fast path differs");
});
