//! Puts `memory.x` where the linker finds it (cortex-m-rt's `link.x` includes it), writes
//! the node table the images are built with into `$OUT_DIR/keys.rs` (`src/keys.rs` includes
//! it): Node 1's key and, for Node 2, every node's key or legacy mark; and the radio region
//! (`IIOT_FIRMWARE_REGION`, `scripts/firmware --region`) into `$OUT_DIR/region.rs`.
//!
//! The table comes from the TOML file named by `IIOT_FIRMWARE_KEYS` (`scripts/firmware
//! --keys <file>` sets it), whose `[source.nodes.<address>]` tables are those of the gateway's
//! config: `name`, and one of `key = "<32 hex digits>"`, `key_file = "<path>"` (relative to the
//! keys file's directory; the file holds the 32 hex digits) or `legacy = true`. As for the
//! gateway, `IIOT_NODE_KEY_<address>` in the environment, when set, is the node's key and wins
//! over `key` and `key_file`. A table without any of them (or the older
//! `nodes = { <address> = "<name>" }`) is a node without a key: Node 2 refuses its frames.
//! Node 1 is address 1 (`lora_link::node1::ADDRESS`) and must have a key.
//!
//! Without `IIOT_FIRMWARE_KEYS`, an emulator image (feature `qemu`) gets the published test
//! key of docs/PROTOCOL.md for node 1; a board image is not built. A board image never gets
//! the published test key. Errors name the file and the node, never a key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, process};

/// The variable `scripts/firmware` sets to the keys file.
const KEYS_ENV: &str = "IIOT_FIRMWARE_KEYS";
/// Node 1's address (`lora_link::node1::ADDRESS`).
const NODE1: u16 = 1;
/// The key of docs/PROTOCOL.md's test vectors: published, for emulator images and tests only.
const TEST_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// What a node of the table may send.
enum Peer {
    Keyed([u8; 16]),
    Legacy,
    NoKey,
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={KEYS_ENV}");

    let board = env::var_os("CARGO_FEATURE_QEMU").is_none();
    let (source, nodes) = match env::var_os(KEYS_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            match read_table(&path) {
                Ok(nodes) => (path.display().to_string(), nodes),
                Err(e) => fail(&format!("{}: {e}", path.display())),
            }
        }
        None if board => fail(&format!(
            "a board image needs the nodes' keys: build it with `scripts/firmware` (it makes \
             target/firmware/keys.toml when no --keys file is given) or set {KEYS_ENV} to a \
             keys file ([source.nodes.<address>] tables, see firmware/README.md)"
        )),
        None => (
            "the published test key (emulator image)".to_string(),
            BTreeMap::from([(NODE1, Peer::Keyed(TEST_KEY))]),
        ),
    };
    if let Err(e) = check(&nodes, board) {
        fail(&format!("{source}: {e}"));
    }
    fs::write(out.join("keys.rs"), generate(&source, &nodes)).expect("write keys.rs");
    write_region(&out);
}

/// The variable `scripts/firmware --region` sets.
const REGION_ENV: &str = "IIOT_FIRMWARE_REGION";
/// The regions `lora_link::at::Region` knows, by name, and their variants.
const REGIONS: [(&str, &str); 2] = [("us915", "Us915"), ("eu868", "Eu868")];

/// `$OUT_DIR/region.rs`: the `lora_link::at::Region` named by `IIOT_FIRMWARE_REGION`
/// (`us915` when unset), which `src/lib.rs` includes.
fn write_region(out: &Path) {
    println!("cargo:rerun-if-env-changed={REGION_ENV}");
    let name = env::var(REGION_ENV).unwrap_or_default();
    let name = if name.is_empty() { "us915" } else { &name };
    let Some((_, variant)) = REGIONS.iter().find(|(n, _)| *n == name) else {
        eprintln!("error: firmware region {name:?}: choose us915 or eu868");
        process::exit(1);
    };
    fs::write(
        out.join("region.rs"),
        format!("lora_link::at::Region::{variant}\n"),
    )
    .expect("write region.rs");
}

/// Stops the build with `message` (cargo shows it under the build script's stderr).
fn fail(message: &str) -> ! {
    eprintln!("error: firmware keys: {message}");
    process::exit(1);
}

/// The `[source.nodes]` of the keys file at `path`.
fn read_table(path: &Path) -> Result<BTreeMap<u16, Peer>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("not TOML: {e}"))?;
    let nodes = doc
        .get("source")
        .and_then(|s| s.get("nodes"))
        .and_then(toml::Value::as_table)
        .ok_or("no [source.nodes.<address>] tables")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut table = BTreeMap::new();
    for (address, entry) in nodes {
        let at = format!("[source.nodes.{address}]");
        let number: u16 = address
            .parse()
            .ok()
            .filter(|a| *a != 0)
            .ok_or_else(|| format!("{at}: `{address}` is not a node address (1 to 65535)"))?;
        let peer = node(number, entry, dir).map_err(|e| format!("{at}: {e}"))?;
        table.insert(number, peer);
    }
    Ok(table)
}

/// One node's entry: a table, or the older form, a name alone; `IIOT_NODE_KEY_<address>`
/// wins over its key.
fn node(address: u16, entry: &toml::Value, dir: &Path) -> Result<Peer, String> {
    let var = format!("IIOT_NODE_KEY_{address}");
    println!("cargo:rerun-if-env-changed={var}");
    let from_env = match env::var(&var) {
        Ok(hex) if !hex.is_empty() => {
            Some(parse_key(hex.trim()).map_err(|e| format!("{var} (environment): {e}"))?)
        }
        Ok(_) | Err(env::VarError::NotPresent) => None,
        Err(env::VarError::NotUnicode(_)) => {
            return Err(format!("{var} (environment): a key holds only 0-9 and a-f"))
        }
    };
    let peer = entry_peer(entry, dir)?;
    match (from_env, peer) {
        (None, peer) => Ok(peer),
        (Some(_), Peer::Legacy) => Err(format!("{var} gives a key, but the node is legacy")),
        (Some(key), Peer::Keyed(_) | Peer::NoKey) => Ok(Peer::Keyed(key)),
    }
}

/// What the entry itself says.
fn entry_peer(entry: &toml::Value, dir: &Path) -> Result<Peer, String> {
    let fields = match entry {
        toml::Value::String(_) => return Ok(Peer::NoKey),
        toml::Value::Table(fields) => fields,
        _ => return Err("expected a table (name, and key, key_file or legacy)".into()),
    };
    let (mut key, mut legacy) = (None, false);
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("name", toml::Value::String(_)) => {}
            ("key", toml::Value::String(hex)) => {
                key = Some(parse_key(hex).map_err(|e| format!("key: {e}"))?);
            }
            ("key_file", toml::Value::String(file)) => {
                let path = dir.join(file);
                println!("cargo:rerun-if-changed={}", path.display());
                let text = fs::read_to_string(&path)
                    .map_err(|e| format!("key_file {}: cannot read it: {e}", path.display()))?;
                key = Some(
                    parse_key(text.trim())
                        .map_err(|e| format!("key_file {}: {e}", path.display()))?,
                );
            }
            ("legacy", toml::Value::Boolean(b)) => legacy = *b,
            ("name" | "key" | "key_file", _) => return Err(format!("{field}: expected a string")),
            ("legacy", _) => return Err("legacy: expected true or false".into()),
            _ => {
                return Err(format!(
                    "unknown field `{field}` (a node has name, and key, key_file or legacy)"
                ))
            }
        }
    }
    if fields.contains_key("key") && fields.contains_key("key_file") {
        return Err("give either key or key_file, not both".into());
    }
    match (key, legacy) {
        (Some(_), true) => Err("a node has a key or is legacy, not both".into()),
        (Some(key), false) => Ok(Peer::Keyed(key)),
        (None, true) => Ok(Peer::Legacy),
        (None, false) => Ok(Peer::NoKey),
    }
}

/// 32 hexadecimal digits, as 16 bytes. The error never quotes the text.
fn parse_key(text: &str) -> Result<[u8; 16], String> {
    let digits = text.as_bytes();
    if digits.len() != 32 {
        return Err(format!(
            "a key is 32 hexadecimal digits, not {} characters",
            digits.len()
        ));
    }
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| "a key holds only 0-9 and a-f")?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| "a key holds only 0-9 and a-f")?;
    }
    Ok(key)
}

/// The rules every table keeps: node 1 has a key, and a board image has no published key.
fn check(nodes: &BTreeMap<u16, Peer>, board: bool) -> Result<(), String> {
    match nodes.get(&NODE1) {
        Some(Peer::Keyed(_)) => {}
        Some(Peer::Legacy) => {
            return Err(format!(
                "[source.nodes.{NODE1}] is marked legacy, but this firmware's Node 1 sends \
                 secure frames: give it a key"
            ))
        }
        Some(Peer::NoKey) => {
            return Err(format!(
                "[source.nodes.{NODE1}] has no key (key = \"<32 hex digits>\", key_file, or \
                 IIOT_NODE_KEY_{NODE1} in the environment); Node 1 needs one"
            ))
        }
        None => {
            return Err(format!(
                "no [source.nodes.{NODE1}] table: Node 1 (address {NODE1}) needs a key"
            ))
        }
    }
    if board {
        for (address, peer) in nodes {
            if matches!(peer, Peer::Keyed(k) if *k == TEST_KEY) {
                return Err(format!(
                    "[source.nodes.{address}] has the published test key of docs/PROTOCOL.md: \
                     board images never use it (make a fresh key: scripts/firmware makes one \
                     when run without --keys)"
                ));
            }
        }
    }
    Ok(())
}

/// `keys.rs`: `NODE1_KEY` and `NODES`.
fn generate(source: &str, nodes: &BTreeMap<u16, Peer>) -> String {
    let bytes = |k: &[u8; 16]| {
        k.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let source = source.replace(['\n', '\r'], " ");
    let _ = writeln!(
        out,
        "// Generated by build.rs from {source}. Holds keys: never commit it."
    );
    if let Some(Peer::Keyed(k)) = nodes.get(&NODE1) {
        let _ = writeln!(out, "/// Node 1's key (address {NODE1}).");
        let _ = writeln!(out, "pub const NODE1_KEY: Key = Key::new([{}]);", bytes(k));
    }
    let _ = writeln!(out, "/// Node 2's node table: every node of the keys file.");
    let _ = writeln!(out, "pub static NODES: [Node; {}] = [", nodes.len());
    for (address, peer) in nodes {
        let peer = match peer {
            Peer::Keyed(k) => format!("Peer::Keyed(Key::new([{}]))", bytes(k)),
            Peer::Legacy => "Peer::Legacy".into(),
            Peer::NoKey => "Peer::NoKey".into(),
        };
        let _ = writeln!(out, "    Node {{ address: {address}, peer: {peer} }},");
    }
    let _ = writeln!(out, "];");
    out
}
