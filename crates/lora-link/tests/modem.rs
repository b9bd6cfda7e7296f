//! Property tests of the modem parser: any bytes in any chunking give the same events and
//! never a panic; a stream of well-formed modem output gives back exactly what was written,
//! whatever bytes the frames hold and however the stream is cut.

use lora_link::modem::{error_meaning, Event, Malformed, ModemParser, WINDOW};
use proptest::prelude::*;

/// An owned event, for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Frame(u16, Vec<u8>, i16, i16),
    Ok,
    Error(u16),
    Ready,
    Value(String, String),
    Garbage(Vec<u8>),
    Malformed(Malformed, Vec<u8>),
}

fn owned(e: Event<'_>) -> Owned {
    match e {
        Event::Frame(f) => Owned::Frame(f.sender, f.data.to_vec(), f.rssi, f.snr),
        Event::Ok => Owned::Ok,
        Event::Error(n) => Owned::Error(n),
        Event::Ready => Owned::Ready,
        Event::Value { key, value } => Owned::Value(key.into(), value.into()),
        Event::Garbage(b) => Owned::Garbage(b.to_vec()),
        Event::Malformed { reason, bytes } => Owned::Malformed(reason, bytes.to_vec()),
    }
}

/// Events of `input` cut at `cuts` (sorted offsets), flushed at the end.
fn events(input: &[u8], cuts: &[usize]) -> Vec<Owned> {
    let mut p = ModemParser::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        let mut piece = &input[at..end.max(at)];
        at = end.max(at);
        while !piece.is_empty() {
            let n = p.feed(piece);
            piece = &piece[n..];
            while let Some(e) = p.next_event() {
                out.push(owned(e));
            }
            assert!(p.held() <= WINDOW);
        }
    }
    while let Some(e) = p.flush() {
        out.push(owned(e));
    }
    assert_eq!(p.held(), 0);
    out
}

/// Events of `input` fed in chunks of `chunk` bytes.
fn events_chunked(input: &[u8], chunk: usize) -> Vec<Owned> {
    let cuts: Vec<usize> = (1..input.len()).filter(|i| i % chunk.max(1) == 0).collect();
    events(input, &cuts)
}

/// One piece of well-formed modem output and the event it must give.
fn piece() -> impl Strategy<Value = (Vec<u8>, Owned)> {
    prop_oneof![
        (
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 1..=240),
            -150i16..=0,
            -20i16..=20
        )
            .prop_map(|(sender, data, rssi, snr)| {
                let mut bytes = format!("+RCV={sender},{},", data.len()).into_bytes();
                bytes.extend_from_slice(&data);
                bytes.extend_from_slice(format!(",{rssi},{snr}\r\n").as_bytes());
                (bytes, Owned::Frame(sender, data, rssi, snr))
            }),
        Just((b"+OK\r\n".to_vec(), Owned::Ok)),
        Just((b"+READY\r\n".to_vec(), Owned::Ready)),
        (0u16..100).prop_map(|n| (format!("+ERR={n}\r\n").into_bytes(), Owned::Error(n))),
        // A query answer; `+RCV=` and `+ERR=` start a frame and an error instead.
        ("[A-Z]{1,10}", "[ -*,-~]{0,20}")
            .prop_filter("not a frame or error", |(k, _)| k != "RCV" && k != "ERR")
            .prop_map(|(k, v)| { (format!("+{k}={v}\r\n").into_bytes(), Owned::Value(k, v)) }),
        // Noise: no `+`, no line end inside, then a line end.
        proptest::collection::vec(
            any::<u8>().prop_filter("noise", |b| !b"+\r\n".contains(b)),
            1..50
        )
        .prop_map(|mut noise| {
            let event = {
                let mut g = noise.clone();
                g.extend_from_slice(b"\r\n");
                Owned::Garbage(g)
            };
            noise.extend_from_slice(b"\r\n");
            (noise, event)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn well_formed_output_gives_back_exactly_what_was_written(
        pieces in proptest::collection::vec(piece(), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let input: Vec<u8> = pieces.iter().flat_map(|(b, _)| b.clone()).collect();
        let want: Vec<Owned> = pieces.into_iter().map(|(_, e)| e).collect();
        prop_assert_eq!(events(&input, &cuts), want);
    }

    #[test]
    fn any_bytes_in_any_chunking_give_the_same_events(
        input in proptest::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                Just(b"+".to_vec()),
                Just(b",".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"1".to_vec()),
                Just(b"-".to_vec()),
                Just(b"+RCV=".to_vec()),
                Just(b"+RCV=1,10,".to_vec()),
                Just(b"+OK\r\n".to_vec()),
                Just(b"+ERR=".to_vec()),
            ],
            0..600,
        ).prop_map(|tokens| tokens.concat()),
        cuts in proptest::collection::vec(any::<usize>(), 0..60),
    ) {
        prop_assert_eq!(events(&input, &cuts), events(&input, &[]));
    }

    #[test]
    fn noise_spliced_into_a_stream_loses_no_frame_after_it(
        noise in proptest::collection::vec(any::<u8>(), 0..600),
        data in proptest::collection::vec(any::<u8>(), 1..=240),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        // Whatever came before (a cut frame, noise), a frame that starts after a line end
        // with a `+` the noise did not open is found.
        let mut input = noise.clone();
        input.extend_from_slice(b"\r\n");
        let mut frame = format!("+RCV=1,{},", data.len()).into_bytes();
        frame.extend_from_slice(&data);
        frame.extend_from_slice(b",-40,9\r\n");
        input.extend_from_slice(&frame);
        let got = events(&input, &cuts);
        let found = got.iter().any(|e| *e == Owned::Frame(1, data.clone(), -40, 9));
        // The noise can itself hold a `+RCV=` whose length field reaches into the frame; then
        // the frame's own bytes are re-parsed after that one fails, and it is still found.
        prop_assert!(found, "{:?}", got);
    }
}

const FRAME_1: [u8; 10] = [0x01, 0xA2, 0x04, 0xFF, 0x2D, 0xF3, 0xD5, 0x15, 0x93, 0x83];

fn rcv(sender: u16, data: &[u8], rssi: i16, snr: i16) -> Vec<u8> {
    let mut v = format!("+RCV={sender},{},", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(format!(",{rssi},{snr}\r\n").as_bytes());
    v
}

/// docs/PROTOCOL.md, test vectors: modem → Node 2, packet 1 (29 bytes).
#[test]
fn the_vector_frame_in_any_chunking() {
    let input = rcv(1, &FRAME_1, -27, 13);
    assert_eq!(input.len(), 29);
    for chunk in 1..=input.len() {
        assert_eq!(
            events_chunked(&input, chunk),
            [Owned::Frame(1, FRAME_1.to_vec(), -27, 13)],
            "chunks of {chunk}"
        );
    }
}

#[test]
fn data_holding_line_ends_commas_and_modem_text_is_cut_by_its_length() {
    let data = b"\n,\r\n+OK\r\n+RCV=1,2,";
    let mut input = rcv(7, data, -120, -5);
    input.extend(rcv(7, &[0x0A], 0, 0));
    assert_eq!(
        events_chunked(&input, 3),
        [
            Owned::Frame(7, data.to_vec(), -120, -5),
            Owned::Frame(7, vec![0x0A], 0, 0)
        ]
    );
}

#[test]
fn replies_and_query_answers() {
    let input =
        b"+OK\r\n+ERR=4\r\n+READY\r\n+ADDRESS=2\r\n+PARAMETER=7,9,1,7\r\n\r\n+NETWORKID=18\n";
    assert_eq!(
        events_chunked(input, 1),
        [
            Owned::Ok,
            Owned::Error(4),
            Owned::Ready,
            Owned::Value("ADDRESS".into(), "2".into()),
            Owned::Value("PARAMETER".into(), "7,9,1,7".into()),
            Owned::Value("NETWORKID".into(), "18".into()),
        ]
    );
    assert_eq!(error_meaning(4), "unknown command");
}

#[test]
fn noise_is_garbage_up_to_a_line_end_or_the_next_plus() {
    let mut input = b"\x00\xffnoise\r\nmore".to_vec();
    input.extend(rcv(1, &FRAME_1, -27, 13));
    assert_eq!(
        events_chunked(&input, 4),
        [
            Owned::Garbage(b"\x00\xffnoise\r\n".to_vec()),
            Owned::Garbage(b"more".to_vec()),
            Owned::Frame(1, FRAME_1.to_vec(), -27, 13),
        ]
    );
}

#[test]
fn a_cut_frame_does_not_swallow_the_next_one() {
    let mut input = b"+RCV=1,10,abc".to_vec();
    input.extend(rcv(1, &FRAME_1, -27, 13));
    let got = events_chunked(&input, 5);
    assert!(
        matches!(&got[0], Owned::Malformed(Malformed::BadTail, b) if b.starts_with(b"+RCV=1,10,abc")),
        "{got:?}"
    );
    assert_eq!(got[1], Owned::Garbage(b"RCV=1,10,abc".to_vec()));
    assert_eq!(got[2], Owned::Frame(1, FRAME_1.to_vec(), -27, 13));
    assert_eq!(got.len(), 3);
}

#[test]
fn bad_headers_lengths_and_codes_are_malformed() {
    for (input, reason) in [
        (&b"+RCV=x,1,a,0,0\r\n"[..], Malformed::BadHeader),
        (b"+RCV=70000,1,a,0,0\r\n", Malformed::BadHeader),
        (b"+RCV=1,241,", Malformed::BadLength),
        (b"+RCV=1,0,,0,0\r\n", Malformed::BadLength),
        (b"+RCV=1,1,a,-,0\r\n", Malformed::BadTail),
        (b"+RCV=1,1,a,0,99999\r\n", Malformed::BadTail),
        (b"+ERR=\r\n", Malformed::BadError),
        (b"+ERR=x\r\n", Malformed::BadError),
    ] {
        let got = events_chunked(input, 2);
        assert!(
            matches!(&got[0], Owned::Malformed(r, _) if *r == reason),
            "{:?}: {got:?}",
            core::str::from_utf8(input)
        );
    }
}

#[test]
fn a_frame_cut_at_the_end_of_input_is_truncated() {
    let input = rcv(1, &FRAME_1, -27, 13);
    for cut in 1..input.len() - 1 {
        let got = events_chunked(&input[..cut], 64);
        assert!(
            matches!(&got[0], Owned::Malformed(Malformed::Truncated, b) if b[..] == input[..cut]),
            "cut at {cut}: {got:?}"
        );
        // What follows the `+` is looked at again: never a frame here.
        assert!(
            got[1..].iter().all(|e| !matches!(e, Owned::Frame(..))),
            "cut at {cut}: {got:?}"
        );
    }
}

#[test]
fn a_frame_held_behind_a_cut_one_is_found_when_the_line_goes_quiet() {
    // The first frame's length (90) reaches past the end of what came: only a flush ends it.
    let mut input = b"+RCV=1,90,abc,-27,13\r\n".to_vec();
    input.extend(rcv(1, &FRAME_1, -27, 13));
    let got = events_chunked(&input, 7);
    assert!(
        matches!(&got[0], Owned::Malformed(Malformed::Truncated, _)),
        "{got:?}"
    );
    assert!(
        got.contains(&Owned::Frame(1, FRAME_1.to_vec(), -27, 13)),
        "{got:?}"
    );
}

#[test]
fn a_window_of_noise_never_stalls() {
    let noise = [b'x'; 3 * WINDOW];
    let got = events_chunked(&noise, 100);
    let total: usize = got
        .iter()
        .map(|e| match e {
            Owned::Garbage(b) => b.len(),
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(total, noise.len());
}
