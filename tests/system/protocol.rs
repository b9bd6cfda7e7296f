//! docs/PROTOCOL.md's secure-frame test vectors, three ways: the bytes written in the doc,
//! what `lora_link::secure` seals, and what an implementation that is not ours computes from
//! the same key, nonce, header and plaintext (OpenSSL's AES-CCM, through Python's
//! `cryptography` package). A node written in C against the doc interoperates when the three
//! agree.

use std::process::Command;

use lora_link::packet::{AckPacket, SensorDataPacket};
use lora_link::secure::{self, Direction, Key, MAX_ACK_FRAME_LEN, MAX_UPLINK_LEN};

/// The doc's key: published, for tests only.
const KEY: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

/// The Python that has the `cryptography` package (Debian's python3-cryptography).
const PYTHON: &str = "/usr/bin/python3";
const INSTALL: &str = "apt-get install -y python3-cryptography";

/// One vector: what is sealed, and the frame the doc gives.
struct Vector {
    name: &'static str,
    direction: Direction,
    node: u16,
    counter: u32,
    /// The plaintext: the packet's postcard bytes.
    plain: Vec<u8>,
    /// The header, authenticated as associated data.
    header: Vec<u8>,
    frame: &'static str,
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn vectors() -> Vec<Vector> {
    let postcard = |p: &SensorDataPacket| {
        let mut buf = [0u8; 14];
        let n = p.encode(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let ack_bytes = |a: &AckPacket| {
        let mut buf = [0u8; 4];
        let n = a.encode(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let p1 = SensorDataPacket {
        seq_num: 1,
        temperature: 273,
        humidity: 5887,
        gas_resistance: 355_059,
    };
    let p2 = SensorDataPacket {
        seq_num: 300,
        temperature: -53,
        humidity: 8123,
        gas_resistance: 52_174,
    };
    let uplink_header = |counter: u32| {
        let mut h = vec![secure::VERSION];
        h.extend_from_slice(&counter.to_be_bytes());
        h
    };
    vec![
        Vector {
            name: "uplink 1",
            direction: Direction::Uplink,
            node: 1,
            counter: 7,
            plain: postcard(&p1),
            header: uplink_header(7),
            frame: "01 00 00 00 07 78 BE 47 0C CF BA BB 1F 7F 19 90 5C BE 38 52 78",
        },
        Vector {
            name: "uplink 2",
            direction: Direction::Uplink,
            node: 1,
            counter: 0x0100_0200,
            plain: postcard(&p2),
            header: uplink_header(0x0100_0200),
            frame: "01 01 00 02 00 1E 84 AD 3C 67 F2 44 84 1D 07 93 0A 38 AB 85 87",
        },
        Vector {
            name: "ACK of uplink 1",
            direction: Direction::Ack,
            node: 1,
            counter: 7,
            plain: ack_bytes(&AckPacket::ack(1)),
            header: vec![secure::VERSION],
            frame: "01 48 95 75 8A 10 6E 10 5B 41 AD",
        },
        Vector {
            name: "NACK of uplink 2",
            direction: Direction::Ack,
            node: 1,
            counter: 0x0100_0200,
            plain: ack_bytes(&AckPacket::nack(300)),
            header: vec![secure::VERSION],
            frame: "01 FD D8 26 2B DF ED C3 B8 95 EC ED",
        },
    ]
}

/// What OpenSSL makes of each vector: `header ‖ AES-CCM(key, nonce, plain, aad = header)`.
fn openssl_frames(vectors: &[Vector]) -> Vec<String> {
    let mut script = String::from(
        "from cryptography.hazmat.primitives.ciphers.aead import AESCCM\n\
         import sys\n\
         key = bytes.fromhex(sys.argv[1])\n\
         for line in sys.stdin:\n\
         \x20   nonce, header, plain = (bytes.fromhex(x) for x in line.split(','))\n\
         \x20   frame = header + AESCCM(key, tag_length=8).encrypt(nonce, plain, header)\n\
         \x20   print(frame.hex(' ').upper())\n",
    );
    script.push('\n');
    let input: String = vectors
        .iter()
        .map(|v| {
            let nonce = secure::nonce(v.direction, v.node, v.counter);
            let cat = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            format!("{},{},{}\n", cat(&nonce), cat(&v.header), cat(&v.plain))
        })
        .collect();
    let key: String = KEY.iter().map(|x| format!("{x:02x}")).collect();
    let mut child = Command::new(PYTHON)
        .args(["-c", &script, &key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON} ({e}); install with: {INSTALL}"));
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{PYTHON} failed ({}); the cryptography package is needed: {INSTALL}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn secure_frame_vectors_agree_in_the_doc_our_code_and_openssl() {
    let vectors = vectors();
    let theirs = openssl_frames(&vectors);
    assert_eq!(theirs.len(), vectors.len(), "{theirs:?}");
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md"),
    )
    .unwrap();
    let key = Key::new(KEY);
    for (v, theirs) in vectors.iter().zip(&theirs) {
        let ours = match v.direction {
            Direction::Uplink => {
                let (packet, _) = SensorDataPacket::decode(&v.plain).unwrap();
                let mut out = [0u8; MAX_UPLINK_LEN];
                let n = secure::seal_uplink(&key, v.node, v.counter, &packet, &mut out).unwrap();
                hex(&out[..n])
            }
            _ => {
                let (ack, _) = AckPacket::decode(&v.plain).unwrap();
                let mut out = [0u8; MAX_ACK_FRAME_LEN];
                let n = secure::seal_ack(&key, v.node, v.counter, &ack, &mut out).unwrap();
                hex(&out[..n])
            }
        };
        assert_eq!(&ours, theirs, "{}: ours vs OpenSSL", v.name);
        assert_eq!(ours, v.frame, "{}: ours vs the vector", v.name);
        let nonce = hex(&secure::nonce(v.direction, v.node, v.counter));
        for (what, text) in [
            ("frame", v.frame.to_string()),
            ("nonce", nonce),
            ("plaintext", hex(&v.plain)),
        ] {
            assert!(
                doc.contains(&text),
                "{}: docs/PROTOCOL.md does not give its {what} {text}",
                v.name
            );
        }
    }
}
