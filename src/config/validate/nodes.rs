//! `[source.nodes]` of `kind = "rylr998"`: the radio nodes by sender address, each with its
//! name and how its frames are checked.
//!
//! ```toml
//! [source.nodes.1]
//! name = "greenhouse"
//! key_file = "/etc/iiot-gateway/greenhouse.key"   # or key = "<32 hex digits>", or legacy = true
//! ```
//!
//! A key comes from `IIOT_NODE_KEY_<address>` in the environment, else `key_file` (relative
//! to the config file's directory, as `scripts/firmware --keys` reads it), else `key`, like
//! the other secrets. The older form `nodes = { 1 = "greenhouse" }` still loads: its nodes
//! have no key, and the source refuses their frames and says at start-up how to add one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lora_link::secure::Key;

use super::Validator;
use crate::config::{ConfigError, NodeAuth, RadioNode};

/// The environment variable that gives the key of the node at `address`.
fn key_env(address: u16) -> String {
    format!("IIOT_NODE_KEY_{address}")
}

/// The keys an entry may have.
const ENTRY_KEYS: [&str; 4] = ["name", "key", "key_file", "legacy"];

impl Validator<'_> {
    /// The node table: `table` as written, or the default when `[source.nodes]` is unset.
    pub(super) fn radio_nodes(
        &self,
        table: Option<BTreeMap<String, toml::Value>>,
        default: &[(u16, &str)],
    ) -> Result<BTreeMap<u16, RadioNode>, ConfigError> {
        let Some(table) = table else {
            return default
                .iter()
                .map(|(address, name)| {
                    let auth = self.node_key(*address, None, None, false, "[source.nodes]")?;
                    Ok((
                        *address,
                        RadioNode {
                            name: (*name).to_string(),
                            auth,
                        },
                    ))
                })
                .collect();
        };
        let mut nodes = BTreeMap::new();
        let mut names = BTreeMap::new();
        for (address, entry) in table {
            let where_ = format!("[source.nodes.{address}]");
            let address: u16 = address.parse().map_err(|_| {
                self.err(
                    &where_,
                    "the key is a sender address, 0 to 65535 ([source.nodes.1])",
                )
            })?;
            let node = self.radio_node(address, entry, &where_)?;
            if let Some(other) = names.insert(node.name.clone(), address) {
                return Err(self.err(
                    &where_,
                    format!(
                        "the name {:?} is also address {other}'s: each node needs its own",
                        node.name
                    ),
                ));
            }
            nodes.insert(address, node);
        }
        Ok(nodes)
    }

    /// One entry: a name (the older form) or a table.
    fn radio_node(
        &self,
        address: u16,
        entry: toml::Value,
        where_: &str,
    ) -> Result<RadioNode, ConfigError> {
        let (name, key, key_file, legacy) = match entry {
            toml::Value::String(name) => (name, None, None, false),
            toml::Value::Table(t) => {
                if let Some(unknown) = t.keys().find(|k| !ENTRY_KEYS.contains(&k.as_str())) {
                    return Err(self.err(
                        &format!("{where_} {unknown}"),
                        "not a key of a node entry, which takes name, and one of key, key_file or legacy",
                    ));
                }
                let text = |key: &str| match t.get(key) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(self.err(&format!("{where_} {key}"), "expected a string")),
                };
                let name = text("name")?.unwrap_or_else(|| format!("node{address}"));
                let key = text("key")?;
                let key_file = text("key_file")?.map(PathBuf::from);
                let legacy = match t.get("legacy") {
                    None => false,
                    Some(toml::Value::Boolean(b)) => *b,
                    Some(_) => {
                        return Err(self.err(&format!("{where_} legacy"), "expected true or false"))
                    }
                };
                (name, key, key_file, legacy)
            }
            _ => {
                return Err(self.err(
                    where_,
                    "expected a table (name = \"...\", key_file = \"...\") or a name",
                ))
            }
        };
        super::source::validate_node_name(&name).map_err(|e| self.err(where_, e))?;
        let auth = self.node_key(address, key, key_file, legacy, where_)?;
        Ok(RadioNode { name, auth })
    }

    /// How the node at `address` is checked: its key from the environment, `key_file` or
    /// `key`, or `legacy`; exactly one of them.
    fn node_key(
        &self,
        address: u16,
        key: Option<String>,
        key_file: Option<PathBuf>,
        legacy: bool,
        where_: &str,
    ) -> Result<NodeAuth, ConfigError> {
        let env_name = key_env(address);
        let from_env = (self.env)(&env_name).filter(|v| !v.trim().is_empty());
        let given = [
            from_env.is_some(),
            key_file.is_some(),
            key.is_some(),
            legacy,
        ];
        if key.is_some() && key_file.is_some() {
            return Err(self.err(where_, "give key or key_file, not both"));
        }
        if legacy && given.iter().filter(|g| **g).count() > 1 {
            let with = if from_env.is_some() {
                env_name.as_str()
            } else {
                "a key"
            };
            return Err(self.err(
                where_,
                format!(
                    "legacy = true means the node has no key, but {with} is given too: remove one"
                ),
            ));
        }
        if legacy {
            return Ok(NodeAuth::Legacy);
        }
        let (text, what) = if let Some(text) = from_env {
            (text, env_name)
        } else if let Some(path) = key_file {
            let path = self.beside_config(&path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.err(
                    &format!("{where_} key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (text, format!("{where_} key_file {}", path.display()))
        } else if let Some(text) = key {
            (text, format!("{where_} key"))
        } else {
            return Ok(NodeAuth::Missing);
        };
        // The error never shows the text: it is (meant to be) a secret.
        Key::from_hex(text.trim()).map(NodeAuth::Key).map_err(|e| {
            self.err(
                &what,
                format!("{e} (make one with: iiot-gateway keys new <name> --address {address})"),
            )
        })
    }

    /// A relative path as seen from the config file's directory.
    fn beside_config(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match Path::new(self.file).parent() {
            Some(dir) if Path::new(self.file).is_file() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_load as load;
    use crate::config::{NodeAuth, Rylr998Config, SourceConfig};

    const HEAD: &str = "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\n";
    const KEY: &str = "000102030405060708090a0b0c0d0e0f";

    fn rylr998(text: &str) -> Result<Rylr998Config, String> {
        match load(&format!("{HEAD}{text}")) {
            Ok(c) => match c.source {
                SourceConfig::Rylr998(r) => Ok(r),
                other => panic!("not rylr998: {other:?}"),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_node_table_gives_names_keys_and_legacy_marks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("barn.key");
        std::fs::write(&file, format!("{}\n", KEY.to_uppercase())).unwrap();
        let r = rylr998(&format!(
            "[source.nodes.1]\nname = \"greenhouse\"\nkey = \"{KEY}\"\n\
             [source.nodes.7]\nname = \"barn\"\nkey_file = {:?}\n\
             [source.nodes.9]\nname = \"old\"\nlegacy = true\n\
             [source.nodes.12]\nname = \"bare\"\n",
            file.display().to_string()
        ))
        .unwrap();
        let key = lora_link::secure::Key::from_hex(KEY).unwrap();
        assert_eq!(r.nodes[&1].name, "greenhouse");
        assert_eq!(r.nodes[&1].auth, NodeAuth::Key(key.clone()));
        assert_eq!(r.nodes[&7].auth, NodeAuth::Key(key));
        assert_eq!(r.nodes[&9].auth, NodeAuth::Legacy);
        assert_eq!(r.nodes[&12].auth, NodeAuth::Missing);
        assert!(!format!("{r:?}").contains(KEY), "a key in Debug: {r:?}");
    }

    #[test]
    fn the_older_names_only_form_loads_as_nodes_without_keys() {
        let r = rylr998("nodes = { 1 = \"greenhouse\", 7 = \"barn\" }\n").unwrap();
        assert_eq!(r.nodes[&7].name, "barn");
        assert_eq!(r.nodes[&1].auth, NodeAuth::Missing);
        // Unset: node1 at address 1, without a key.
        let r = rylr998("").unwrap();
        assert_eq!(r.nodes[&1].name, "node1");
        assert_eq!(r.nodes[&1].auth, NodeAuth::Missing);
    }

    #[test]
    fn bad_entries_are_named_and_keys_never_shown() {
        for (text, expected) in [
            ("[source.nodes.x]\nname = \"a\"\n", "[source.nodes.x]: the key is a sender address"),
            ("[source.nodes.1]\nname = \"a\"\nkey = \"00112233\"\n", "[source.nodes.1] key: a key is 32 hexadecimal digits, not 8 characters"),
            ("[source.nodes.1]\nname = \"a\"\nkey = \"zz0102030405060708090a0b0c0d0e0f\"\n", "[source.nodes.1] key: a key holds only hexadecimal digits"),
            ("[source.nodes.1]\nname = \"a\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\nlegacy = true\n", "[source.nodes.1]: legacy = true means the node has no key, but a key is given too"),
            ("[source.nodes.1]\nname = \"a\"\nkye = \"x\"\n", "[source.nodes.1] kye: not a key of a node entry"),
            ("[source.nodes.1]\nname = \"a\"\nkey_file = \"/nonexistent/k\"\n", "[source.nodes.1] key_file: cannot read /nonexistent/k"),
            ("[source.nodes.1]\nname = \"a\"\n[source.nodes.2]\nname = \"a\"\n", "[source.nodes.2]: the name \"a\" is also address 1's"),
            ("[source.nodes.1]\nname = \"stats\"\n", "[source.nodes.1]: \"stats\" is taken"),
            ("[source.nodes.1]\nname = \"a\"\nlegacy = \"yes\"\n", "[source.nodes.1] legacy: expected true or false"),
        ] {
            let e = rylr998(text).expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
            assert!(!e.contains("0102030405"), "a key in an error: {e}");
        }
    }

    #[test]
    fn the_environment_gives_a_key_and_wins() {
        let env = |name: &str| {
            (name == "IIOT_NODE_KEY_1").then(|| "ffeeddccbbaa99887766554433221100".to_string())
        };
        let c = crate::config::Config::from_toml(
            &format!("{HEAD}[source.nodes.1]\nname = \"a\"\nkey = \"{KEY}\"\n"),
            "test.toml",
            &env,
        )
        .unwrap();
        let SourceConfig::Rylr998(r) = c.source else {
            panic!()
        };
        let from_env = lora_link::secure::Key::from_hex("ffeeddccbbaa99887766554433221100");
        assert_eq!(r.nodes[&1].auth, NodeAuth::Key(from_env.unwrap()));
        let e = crate::config::Config::from_toml(
            &format!("{HEAD}[source.nodes.1]\nname = \"a\"\nlegacy = true\n"),
            "test.toml",
            &env,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("IIOT_NODE_KEY_1 is given too"),
            "{e}"
        );
    }
}
