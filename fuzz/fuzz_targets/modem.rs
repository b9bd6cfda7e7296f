//! Fuzzes the link crate's modem parser with arbitrary bytes in arbitrary chunks (the first
//! byte of the input picks the chunk size): it must never panic, must hold at most its
//! window, must give the same events whatever the chunking, and every frame it reports must
//! carry exactly as many bytes as its length field said (1 to 240). Each frame is also run
//! through the sensor frame decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_link::modem::{Event, ModemParser, MAX_DATA, WINDOW};
use lora_link::packet::SensorDataPacket;

fn run(input: &[u8], chunk: usize) -> Vec<String> {
    let mut p = ModemParser::new();
    let mut out = Vec::new();
    for mut piece in input.chunks(chunk) {
        while !piece.is_empty() {
            let n = p.feed(piece);
            piece = &piece[n..];
            while let Some(e) = p.next_event() {
                if let Event::Frame(f) = &e {
                    assert!((1..=MAX_DATA).contains(&f.data.len()));
                    let _ = SensorDataPacket::decode_frame(f.data);
                }
                out.push(format!("{e:?}"));
            }
            assert!(p.held() <= WINDOW);
        }
    }
    while let Some(e) = p.flush() {
        out.push(format!("{e:?}"));
    }
    assert_eq!(p.held(), 0);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    assert_eq!(
        run(input, chunk),
        run(input, input.len().max(1)),
        "chunking changed the events"
    );
});
