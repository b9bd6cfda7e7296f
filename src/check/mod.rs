//! `iiot-gateway check`: validates the config (already done when we get here) and probes
//! every configured server and port, printing one line per item; exits non-zero on any
//! problem so it can gate a deployment.

pub(crate) mod checklist;

use std::process::ExitCode;

use crate::config::Config;
use crate::mqtt::BrokerTarget;
use crate::outbox::Outbox;
use checklist::Item;

/// The storage dir, without creating or changing anything: an existing outbox is read, a
/// missing one means the dir (or the parent it would be made in) must be writable.
fn storage(cfg: &crate::config::StorageConfig) -> (bool, String) {
    let dir = cfg.dir.clone();
    let db = dir.join(crate::outbox::DB_FILE);
    let running = match Outbox::holder(&dir) {
        Some(pid) => format!("; in use by a running gateway, PID {pid}"),
        None => String::new(),
    };
    if db.is_file() {
        return match crate::outbox::OutboxReader::open_existing(&db).and_then(|r| r.last_seq()) {
            Ok(seq) => (
                true,
                format!("{} ({seq} readings ever stored{running})", db.display()),
            ),
            Err(e) => (false, e.to_string()),
        };
    }
    let existing = dir.ancestors().find(|p| p.is_dir()).unwrap_or(&dir);
    let probe = existing.join(format!(".iiot-gateway-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            (
                true,
                format!(
                    "{} writable (no outbox yet: the gateway creates it)",
                    dir.display()
                ),
            )
        }
        Err(e) => (
            false,
            format!(
                "cannot write in {}: {e} (check its permissions, or set [storage] dir)",
                existing.display()
            ),
        ),
    }
}

/// Runs the checks for `cfg`.
pub async fn run(cfg: &Config) -> ExitCode {
    let mut items = vec![Item::new(
        true,
        "config",
        format!("{} is valid", cfg.origin),
    )];
    items.push(checklist::source(&cfg.source).await);
    if let crate::config::SourceConfig::Rylr998(r) = &cfg.source {
        items.push(checklist::radio_nodes(r));
    }
    let (ok, detail) = storage(&cfg.storage);
    items.push(Item::new(ok, "storage", detail));
    if let Some(m) = &cfg.mqtt {
        if let BrokerTarget::Embedded(addr) = &m.connection.target {
            items.push(match std::net::TcpListener::bind(addr) {
                Ok(_) => Item::new(true, "mqtt", format!("embedded broker can listen on {addr}")),
                Err(e) => Item::new(false, "mqtt", format!("embedded broker cannot listen on {addr}: {e} (change [mqtt] embedded_listen or --mqtt-listen)")),
            });
        }
    }
    items.extend(checklist::servers(cfg).await);
    if let Some(h) = &cfg.http {
        items.push(match std::net::TcpListener::bind(h.listen) {
            Ok(_) => Item::new(true, "http", format!("can listen on {}", h.listen)),
            Err(e) => Item::new(
                false,
                "http",
                format!(
                    "cannot listen on {}: {e} (change [http] listen or --http-listen)",
                    h.listen
                ),
            ),
        });
    }
    let problems = items.iter().filter(|i| !i.ok).count();
    for item in &items {
        item.print_check();
    }
    if problems == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{problems} problem(s) found");
        ExitCode::FAILURE
    }
}
