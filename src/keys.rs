//! `iiot-gateway keys new <name> --address <n>`: a fresh random key for a radio node, printed
//! as the node's `[source.nodes.<address>]` table on stdout and nothing else there, so that
//! `>> keys.toml` makes a file both the gateway's config and `scripts/firmware --keys` read.
//! How to use it goes to stderr. The key comes from the operating system's random source.

use std::io::Write as _;
use std::process::ExitCode;

use rand::TryRngCore as _;

/// Prints a new node table for `name` at `address`.
pub(crate) fn new(name: &str, address: u16) -> ExitCode {
    if let Err(e) = crate::config::validate_node_name(name) {
        eprintln!("error: keys new {name:?}: {e}");
        return ExitCode::from(2);
    }
    let mut key = [0u8; 16];
    if let Err(e) = rand::rngs::OsRng.try_fill_bytes(&mut key) {
        eprintln!("error: keys new: the operating system's random source failed: {e}");
        return ExitCode::FAILURE;
    }
    let table = table(name, address, &key);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(table.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    eprintln!(
        "A new key for {name} (address {address}) is above, on stdout only: keep it secret, \
         anyone who has it can speak as this node.\n\
         Gateway: put the table in the config (kind = \"rylr998\"), or keep the key out of \
         the config: key_file = \"<file readable by the gateway only>\" instead of key, or \
         IIOT_NODE_KEY_{address}=<key> in the service's environment.\n\
         Firmware: scripts/firmware --keys <file with this table> builds Node 1 with this key \
         and Node 2 with every node's key and legacy mark.\n\
         For example: iiot-gateway keys new {name} --address {address} >> keys.toml"
    );
    ExitCode::SUCCESS
}

/// The `[source.nodes.<address>]` table of a node with `key`.
fn table(name: &str, address: u16, key: &[u8; 16]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("[source.nodes.{address}]\nname = \"{name}\"\nkey = \"{hex}\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_what_the_config_reads_back() {
        let key: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        let text = format!(
            "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\n{}",
            table("barn", 7, &key)
        );
        let cfg = crate::config::Config::from_toml(&text, "keys.toml", &|_| None).unwrap();
        let crate::config::SourceConfig::Rylr998(r) = cfg.source else {
            panic!()
        };
        assert_eq!(r.nodes[&7].name, "barn");
        assert_eq!(
            r.nodes[&7].auth,
            crate::config::NodeAuth::Key(lora_link::secure::Key::new(key))
        );
    }
}
