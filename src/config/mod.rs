//! Configuration: the TOML file (or built-in defaults), the command-line overrides and the
//! environment, validated once into the runtime types before anything starts. Nothing else
//! reads the file or the environment.
//!
//! Rules (docs/ARCHITECTURE.md, "Configuration"):
//! - No config file at all: simulator, embedded MQTT broker, SQLite store, dashboard.
//! - With a file: a sink runs when its section is there (`[mqtt]` without `broker_url`
//!   publishes to the embedded broker); `[source]` defaults to the simulator, or to probe-rs
//!   when the hardware project's `[gateway]` section names a probe.
//! - Command-line flags ([`Overrides`]) replace their key in the file before validation, and
//!   are refused where they would do nothing.
//! - Secrets come from the file, a `*_file` key, or the environment (`MQTT_PASSWORD`,
//!   `INFLUXDB_TOKEN`, `INFLUXDB_PASSWORD`, `HTTP_TOKEN`), the environment winning.
//! - Unknown keys and bad values are errors naming the key and the file; a value out of
//!   range is refused, never clamped.
//!
//! Layout: `raw` (the file as written, serde), [`defaults`] (every default and bound),
//! `overrides` (the command line merged into `raw`), `validate` (raw → runtime, one file
//! per section), `types` (the runtime types; an MQTT connection is `crate::mqtt::Connection`), `tls` (PEM
//! and broker-URL helpers). Secrets are `crate::secret::Secret` from the moment they are read.

pub mod defaults;
mod overrides;
mod raw;
mod tls;
mod types;
mod validate;

use std::path::Path;

pub use defaults::default_client_id;
pub use overrides::Overrides;
pub use types::{
    CommandNodes, Config, DownlinkConfig, FileConfig, FullPolicy, HomeAssistantConfig, HttpConfig,
    InfluxApi, InfluxConfig, InfluxTls, IngestConfig, MqttConfig, MqttSourceConfig, NodeAuth,
    PacketEvents, ProcessConfig, ProcessKind, RadioNode, Rylr998Config, SerialConfig,
    SimulatorConfig, SourceConfig, StorageConfig, SyncMode,
};

use raw::RawConfig;
pub(crate) use validate::validate_node_name;
use validate::Validator;

/// How [`Config::origin`] and errors name a config that comes from no file.
const BUILT_IN: &str = "built-in defaults";

/// A config problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The config file (or "built-in defaults" / "environment").
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Reads the environment variable `name` (a seam so tests need not touch the process env).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Loads `path`, or `./config.toml` when it exists, or the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, &Overrides::default())
    }

    /// [`Config::load`] with command-line `overrides` merged in before validation.
    pub fn load_with(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        match path {
            Some(path) => Self::read_file(path, &env, overrides),
            None if Path::new(defaults::CONFIG_FILE).exists() => {
                Self::read_file(Path::new(defaults::CONFIG_FILE), &env, overrides)
            }
            None => Self::build(RawConfig::default(), BUILT_IN, false, &env, overrides),
        }
    }

    /// Loads and validates one file.
    pub fn from_file(path: &Path, env: EnvLookup) -> Result<Config, ConfigError> {
        Self::read_file(path, env, &Overrides::default())
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str, env: EnvLookup) -> Result<Config, ConfigError> {
        Self::parse(text, file, env, &Overrides::default())
    }

    /// The embedded defaults: simulator, embedded broker, SQLite store, dashboard.
    pub fn built_in(env: EnvLookup) -> Result<Config, ConfigError> {
        Self::build(
            RawConfig::default(),
            BUILT_IN,
            false,
            env,
            &Overrides::default(),
        )
    }

    /// Reads, parses and validates `path`; warns when it holds a secret others can read.
    fn read_file(
        path: &Path,
        env: EnvLookup,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let file = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let config = Self::parse(&text, &file, env, overrides)?;
        if let Some(key) = inline_secret(&text) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file,
                    key,
                    mode = format!("{:o}", mode & 0o777),
                    "config file holds a secret and other users can read it: chmod 600 it, or move the secret to the environment or a *_file key"
                );
            }
        }
        Ok(config)
    }

    /// Parses TOML text and validates it with `overrides`.
    fn parse(
        text: &str,
        file: &str,
        env: EnvLookup,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            message: parse_error(text, &e),
        })?;
        Self::build(raw, file, true, env, overrides)
    }

    /// `overrides` merged into `raw`, then the whole validated. `from_file`: `raw` is a
    /// config file's (else the built-in defaults').
    fn build(
        mut raw: RawConfig,
        file: &str,
        from_file: bool,
        env: EnvLookup,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        overrides
            .merge_into(&mut raw, from_file)
            .map_err(|(flag, why)| ConfigError {
                file: file.to_string(),
                message: format!("{flag}: {why}"),
            })?;
        Validator {
            file,
            env,
            move_corrupt_aside: overrides.move_corrupt_aside,
        }
        .validate(raw, from_file)
    }
}

/// A TOML error as `line L, column C, <key>: what`, naming the key of that line but never
/// showing its value: the value may be a secret (a password or a node key with a typo).
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    match key {
        Some(key) => format!("line {line}, column {column}, {key}: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The first secret written inline in a config file (`[mqtt] password`, `[influxdb] token`,
/// `[influxdb] password` or a radio node's `key`), if any.
fn inline_secret(text: &str) -> Option<&'static str> {
    let raw: RawConfig = toml::from_str(text).ok()?;
    let mqtt = raw.mqtt.as_ref();
    let influx = raw.influxdb.as_ref();
    let node_key = raw
        .source
        .as_ref()
        .and_then(|s| s.get("nodes"))
        .and_then(toml::Value::as_table)
        .is_some_and(|nodes| {
            nodes
                .values()
                .any(|n| n.as_table().is_some_and(|t| t.contains_key("key")))
        });
    if node_key {
        Some("[source.nodes] key")
    } else if mqtt.is_some_and(|m| m.password.is_some()) {
        Some("[mqtt] password")
    } else if influx.is_some_and(|i| i.token.is_some()) {
        Some("[influxdb] token")
    } else if influx.is_some_and(|i| i.password.is_some()) {
        Some("[influxdb] password")
    } else {
        None
    }
}

/// `text` loaded as a config file named `test.toml`, with no environment.
#[cfg(test)]
fn test_load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", &|_| None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mqtt::BrokerTarget;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        test_load(text)
    }

    #[test]
    fn built_in_defaults_run_everything_embedded() {
        let c = Config::built_in(&no_env).expect("defaults");
        assert!(matches!(c.source, SourceConfig::Simulator(_)));
        let mqtt = c.mqtt.expect("mqtt on");
        assert_eq!(
            mqtt.connection.target,
            BrokerTarget::Embedded("127.0.0.1:1883".parse().unwrap())
        );
        assert_eq!(mqtt.topic_prefix, "iiot");
        assert_eq!(mqtt.qos, 1);
        assert!(c.influx.is_none());
        let http = c.http.expect("http");
        assert_eq!(http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(http.ready_max_backlog_age, Duration::from_secs(60));
        assert_eq!(c.storage.retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let e = load("[mqtt]\nbrokr_url = \"mqtt://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:"), "{e}");
        assert!(e.contains("brokr_url"), "{e}");
        let e = load("[sauce]\n").unwrap_err().to_string();
        assert!(e.contains("sauce"), "{e}");
    }

    #[test]
    fn example_config_loads_and_documents_every_key() {
        let example = include_str!("../../config.example.toml");
        let c = load(example).expect("config.example.toml must load");
        assert!(matches!(c.source, SourceConfig::Simulator(_)));
        for line in include_str!("raw.rs").lines() {
            let Some(field) = line.trim().strip_prefix("pub ") else {
                continue;
            };
            let Some((name, _)) = field.split_once(':') else {
                continue;
            };
            if name.contains(' ') {
                continue;
            }
            let documented = example.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{name} ="))
            });
            let section = example.contains(&format!("[{name}]"));
            assert!(
                documented || section,
                "{name} is not documented in config.example.toml"
            );
        }
    }

    #[test]
    fn inline_secrets_are_found_for_the_permission_warning() {
        assert_eq!(
            inline_secret("[mqtt]\npassword = \"x\"\n"),
            Some("[mqtt] password")
        );
        assert_eq!(
            inline_secret("[influxdb]\nurl = \"http://x\"\ntoken = \"t\"\n"),
            Some("[influxdb] token")
        );
        assert_eq!(inline_secret("[mqtt]\npassword_file = \"/run/pw\"\n"), None);
    }

    fn with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &no_env, overrides)
    }

    fn built_in_with(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::build(RawConfig::default(), BUILT_IN, false, &no_env, overrides)
    }

    #[test]
    fn command_line_overrides_replace_their_keys_before_validation() {
        let http: std::net::SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let mqtt: std::net::SocketAddr = "[::1]:1884".parse().unwrap();
        let o = Overrides {
            http_listen: Some(http),
            mqtt_listen: Some(mqtt),
            storage_dir: Some("/srv/gw".into()),
            move_corrupt_aside: true,
        };
        let c = with(
            "[mqtt]\nembedded_listen = \"127.0.0.1:1\"\n[http]\nlisten = \"127.0.0.1:2\"\n[storage]\ndir = \"/elsewhere\"\n",
            &o,
        )
        .unwrap();
        assert_eq!(c.http.unwrap().listen, http);
        assert_eq!(c.storage.dir, Path::new("/srv/gw"));
        assert!(c.storage.move_corrupt_aside);
        let m = c.mqtt.unwrap();
        assert_eq!(m.connection.target, BrokerTarget::Embedded(mqtt));
        // The default client id follows the storage dir the gateway really uses.
        assert_eq!(
            m.connection.client_id,
            default_client_id(Path::new("/srv/gw"))
        );

        // Without a file the embedded broker runs, so --mqtt-listen has one to move.
        let c = built_in_with(&o).unwrap();
        assert_eq!(
            c.mqtt.unwrap().connection.target,
            BrokerTarget::Embedded(mqtt)
        );
        assert_eq!(c.origin, "built-in defaults");

        // A relative --storage-dir is made absolute, like [storage] dir; a set client_id stays.
        let o = Overrides {
            storage_dir: Some("data".into()),
            ..Overrides::default()
        };
        let c = with("[mqtt]\nclient_id = \"mine\"\n", &o).unwrap();
        assert_eq!(c.storage.dir, std::path::absolute("data").unwrap());
        assert_eq!(c.mqtt.unwrap().connection.client_id, "mine");
        assert!(!c.storage.move_corrupt_aside);
    }

    #[test]
    fn overrides_that_would_do_nothing_are_refused() {
        let addr = Some("127.0.0.1:9".parse().unwrap());
        let http = Overrides {
            http_listen: addr,
            ..Overrides::default()
        };
        let mqtt = Overrides {
            mqtt_listen: addr,
            ..Overrides::default()
        };
        let cases = [
            (
                "[http]\nenabled = false\n",
                &http,
                "test.toml: --http-listen: the HTTP server is off ([http] enabled = false): remove one of the two",
            ),
            (
                "[mqtt]\nbroker_url = \"mqtt://h\"\n",
                &mqtt,
                "test.toml: --mqtt-listen: no embedded broker runs: [mqtt] broker_url names an external one (remove one of the two)",
            ),
            (
                "[source]\nkind = \"stdin\"\n",
                &mqtt,
                "test.toml: --mqtt-listen: no embedded broker runs: the config has no [mqtt] section",
            ),
        ];
        for (text, overrides, expected) in cases {
            let e = with(text, overrides).unwrap_err().to_string();
            assert_eq!(e, expected, "{text:?}");
        }
    }

    #[test]
    fn a_syntax_error_says_where_without_showing_the_line() {
        let text = "[source]\nkind = \"rylr998\"\npath = \"/dev/x\"\n[source.nodes.1]\nname = \"a\"\nkey = 00aa11bb22cc33dd44ee55ff66778899\n";
        let e = test_load(text).unwrap_err().to_string();
        assert!(e.contains("line 6, column 8, key: "), "{e}");
        assert!(
            !e.contains("00aa11bb"),
            "the line (a key) is in the error: {e}"
        );
        assert_eq!(
            inline_secret("[source.nodes.1]\nname = \"a\"\nkey = \"00\"\n"),
            Some("[source.nodes] key")
        );
    }
}
