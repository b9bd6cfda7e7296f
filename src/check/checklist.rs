//! The start-up checklist: one code path for `run` (printed with ✓/✗ before the gateway
//! starts; a failure is reported and the gateway runs on, buffering) and `check` (printed with
//! ok/FAIL; any failure is a non-zero exit). Each item is probed the same way for both:
//!
//! - the MQTT broker with a connection of our own (TLS, login: what the sink will meet), not
//!   a bare TCP probe;
//! - InfluxDB with `/health` (v2) or `/ping` (v1) and an empty write (credentials, bucket or
//!   database), naming a 1.x server met with a v2 config;
//! - the source: what must exist before it can run (the program on PATH, the firmware file,
//!   the serial device, the modem answering its set-up).
//!
//! What only one of them does is theirs: `run` opens the outbox, starts the embedded broker
//! and the HTTP server and reports the running source's first set-up; `check` only looks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ProcessKind, SourceConfig};
use crate::mqtt::BrokerTarget;

/// Longest wait for one server.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub ok: bool,
    pub what: &'static str,
    pub detail: String,
}

impl Item {
    pub(crate) fn new(ok: bool, what: &'static str, detail: impl Into<String>) -> Self {
        Item {
            ok,
            what,
            detail: detail.into(),
        }
    }

    /// `run`'s form, on stderr.
    pub(crate) fn print_run(&self) {
        eprintln!(
            "  {} {:<10} {}",
            if self.ok { "✓" } else { "✗" },
            self.what,
            self.detail
        );
    }

    /// `check`'s form, on stdout.
    pub(crate) fn print_check(&self) {
        println!(
            "{} {:<10} {}",
            if self.ok { "ok  " } else { "FAIL" },
            self.what,
            self.detail
        );
    }
}

/// The radio node table of a `rylr998` source: how many nodes have a key, which are legacy,
/// which have none (their frames will be refused: not ok, with the command that fixes it).
pub(crate) fn radio_nodes(cfg: &crate::config::Rylr998Config) -> Item {
    use crate::config::NodeAuth;
    let (mut keyed, mut legacy, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (address, node) in &cfg.nodes {
        let name = node.name.as_str();
        match node.auth {
            NodeAuth::Key(_) => keyed.push(name.to_string()),
            NodeAuth::Legacy => legacy.push(name.to_string()),
            NodeAuth::Missing => missing.push(format!(
                "{name} (iiot-gateway keys new {name} --address {address})"
            )),
        }
    }
    let mut parts = vec![format!("{} with a key", keyed.len())];
    if !keyed.is_empty() {
        parts[0] = format!("{} with a key ({})", keyed.len(), keyed.join(", "));
    }
    if !legacy.is_empty() {
        parts.push(format!("legacy, unauthenticated: {}", legacy.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("no key, frames refused: {}", missing.join(", ")));
    }
    Item::new(missing.is_empty(), "nodes", parts.join("; "))
}

/// The external servers the config names, each probed for real.
pub(crate) async fn servers(cfg: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(m) = &cfg.mqtt {
        if let BrokerTarget::External(_) = &m.connection.target {
            // Every node of a cluster, so a dead one is known before it is needed; the sink
            // can run while at least one accepts.
            let (accepted, failed) = crate::mqtt::probe_all(&m.connection, PROBE_TIMEOUT).await;
            let detail = match (accepted.is_empty(), failed.is_empty()) {
                (false, true) => format!("{} accepted our connection", accepted.join(", ")),
                (false, false) => format!(
                    "{} accepted our connection; not reachable: {}",
                    accepted.join(", "),
                    failed.join("; ")
                ),
                (true, _) => failed.join("; "),
            };
            items.push(Item::new(!accepted.is_empty(), "mqtt", detail));
        }
    }
    if let Some(i) = &cfg.influx {
        let writer = crate::sink::influx::Writer::new(i.clone());
        let reached = match writer.probe().await {
            Ok(()) => writer.check_write().await,
            Err(e) => Err(e),
        };
        items.push(match reached {
            Ok(()) => Item::new(true, "influxdb", format!("{} accepts our writes", i.url)),
            Err(e) => Item::new(false, "influxdb", e),
        });
    }
    items
}

/// What the source needs before it can run, checked without running it (`probe-rs run`
/// would flash the board): the program and the firmware file, the serial device, the modem's
/// set-up.
pub(crate) async fn source(cfg: &SourceConfig) -> Item {
    match cfg {
        SourceConfig::Process(p) => {
            let program = &p.argv[0];
            let Some(found) = find_program(program) else {
                let hint = if p.kind == ProcessKind::ProbeRs {
                    "install probe-rs (https://probe.rs) or set [source] probe_rs to its path"
                } else {
                    "check [source] command"
                };
                return Item::new(
                    false,
                    "source",
                    format!("{program}: not found or not executable ({}): {hint}", search_where(program)),
                );
            };
            if p.kind == ProcessKind::ProbeRs {
                if let Some(firmware) = p.argv.last() {
                    if !Path::new(firmware).is_file() {
                        return Item::new(
                            false,
                            "source",
                            format!("firmware {firmware}: no such file (check [source] firmware_path)"),
                        );
                    }
                }
            }
            Item::new(true, "source", format!("{}: {} ({})", p.kind, p.argv.join(" "), found.display()))
        }
        SourceConfig::Serial(s) => match tokio_serial::SerialStream::open(&tokio_serial::new(
            s.path.display().to_string(),
            s.baud,
        )) {
            Ok(_) => Item::new(
                true,
                "source",
                format!("serial: {} opens at {} baud", s.path.display(), s.baud),
            ),
            Err(e) => Item::new(
                false,
                "source",
                format!("serial: cannot open {}: {e} (is the board plugged in? check [source] path, and that this user may open it, e.g. the dialout group)", s.path.display()),
            ),
        },
        SourceConfig::File(f) => {
            if f.path.is_file() {
                Item::new(true, "source", format!("file: {}", f.path.display()))
            } else {
                Item::new(false, "source", format!("file {}: no such file (check [source] path)", f.path.display()))
            }
        }
        other => match crate::source::probe(other).await {
            Some(Ok(answer)) => Item::new(true, "source", answer),
            Some(Err(problem)) => Item::new(false, "source", problem),
            None => Item::new(true, "source", other.kind()),
        },
    }
}

/// `program` as it would be run: a path as given, else the first executable of that name
/// on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

fn search_where(program: &str) -> String {
    if program.contains('/') {
        "as given".to_string()
    } else {
        "searched PATH".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_as_given() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("no-such-program-iiot").is_none());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "x").unwrap();
        assert!(
            find_program(plain.to_str().unwrap()).is_none(),
            "not executable"
        );
    }
}
