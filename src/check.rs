//! `iiot-gateway check`: validates the config (already done when we get here) and probes
//! every configured server and port, printing one line per item; exits non-zero on any
//! problem so it can gate a deployment.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{BrokerTarget, Config};
use crate::outbox::Outbox;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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
    let mut problems = 0;
    let mut item = |ok: bool, what: &str, detail: String| {
        if !ok {
            problems += 1;
        }
        println!("{} {what:<10} {detail}", if ok { "ok  " } else { "FAIL" });
    };
    item(true, "config", format!("{} is valid", cfg.origin));
    match crate::source::probe(&cfg.source).await {
        None => item(true, "source", cfg.source.kind().to_string()),
        Some(Ok(answer)) => item(true, "source", answer),
        Some(Err(problem)) => item(false, "source", problem),
    }
    let (ok, detail) = storage(&cfg.storage);
    item(ok, "storage", detail);
    if let Some(m) = &cfg.mqtt {
        match &m.target {
            BrokerTarget::Embedded(addr) => match std::net::TcpListener::bind(addr) {
                Ok(_) => item(true, "mqtt", format!("embedded broker can listen on {addr}")),
                Err(e) => item(false, "mqtt", format!("embedded broker cannot listen on {addr}: {e} (change [mqtt] embedded_listen or --mqtt-listen)")),
            },
            BrokerTarget::External { host, port } => {
                // A real MQTT connection, with the configured TLS and login.
                match crate::sink::mqtt::probe(m, PROBE_TIMEOUT).await {
                    Ok(()) => item(true, "mqtt", format!("{host}:{port} accepted our connection")),
                    Err(e) => item(false, "mqtt", format!("{host}:{port}: {e}")),
                }
            }
        }
    }
    if let Some(i) = &cfg.influx {
        let writer = crate::sink::influx::Writer::new(i.clone());
        match writer.probe().await.and(writer.check_write().await) {
            Ok(()) => item(true, "influxdb", format!("{} accepts our writes", i.url)),
            Err(e) => item(false, "influxdb", format!("{e} (check [influxdb] url)")),
        }
    }
    if let Some(h) = &cfg.http {
        match std::net::TcpListener::bind(h.listen) {
            Ok(_) => item(true, "http", format!("can listen on {}", h.listen)),
            Err(e) => item(
                false,
                "http",
                format!(
                    "cannot listen on {}: {e} (change [http] listen or --http-listen)",
                    h.listen
                ),
            ),
        }
    }
    if problems == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{problems} problem(s) found");
        ExitCode::FAILURE
    }
}
