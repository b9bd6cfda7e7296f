//! The command line: `iiot-gateway [run]`, `check`, `simulate`. Parses arguments, sets up
//! logging and signals, and hands a validated [`Config`] to [`crate::app`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{self, Exit, Signals};
use crate::config::{BrokerTarget, Config, ConfigError, SimulatorConfig};

const EXAMPLES: &str = "\
Examples:
  iiot-gateway
      Run on embedded defaults: simulated nodes, embedded MQTT broker on 127.0.0.1:1883,
      SQLite store in ./iiot-data, live page on http://127.0.0.1:8080.
      Watch it: mosquitto_sub -h 127.0.0.1 -t 'iiot/#' -v
  iiot-gateway --config /etc/iiot-gateway/config.toml
      Run with a config file (see config.example.toml for every key).
  iiot-gateway check --config config.toml
      Validate the config and probe every configured server, then exit.
  iiot-gateway simulate --interval 1s | iiot-gateway --config stdin.toml
      Pipe simulated firmware lines into a gateway reading [source] kind = \"stdin\".
  socat pty,raw,echo=0,link=/tmp/ttyLORA exec:'iiot-gateway simulate --radio --interval 2s'
      A simulated RYLR998 modem on /tmp/ttyLORA for [source] kind = \"rylr998\".
  probe-rs run --chip STM32F446RETx fw.elf | iiot-gateway --config stdin.toml
      Feed a real board's output through stdin.

Environment:
  INFLUXDB_TOKEN, INFLUXDB_PASSWORD, MQTT_PASSWORD,
  HTTP_TOKEN                                         secrets (override the config file)
  RUST_LOG                                           log filter, e.g. debug or iiot_gateway=trace";

/// Durable telemetry gateway: field sensor nodes to MQTT, InfluxDB and live dashboards.
#[derive(Debug, Parser)]
#[command(name = "iiot-gateway", version, after_help = EXAMPLES)]
struct Cli {
    /// Config file [default: ./config.toml when present, else built-in defaults]
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address of the dashboard and API (overrides [http] listen)
    #[arg(long, global = true, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Listen address of the embedded MQTT broker (overrides [mqtt] embedded_listen)
    #[arg(long, global = true, value_name = "ADDR")]
    mqtt_listen: Option<SocketAddr>,
    /// Directory of the outbox and history (overrides [storage] dir)
    #[arg(long, global = true, value_name = "DIR")]
    storage_dir: Option<PathBuf>,
    /// If the outbox database is corrupt, rename it aside (kept, never deleted) and start an
    /// empty one instead of refusing to start
    #[arg(long, global = true)]
    move_corrupt_outbox: bool,
    /// Log level when RUST_LOG is unset
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        default_value = "info",
        value_parser = ["error", "warn", "info", "debug", "trace"]
    )]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Run,
    /// Validate the config and probe each configured server; non-zero exit on problems
    Check,
    /// Print simulated firmware lines to stdout (for piping and demos)
    Simulate {
        /// Seed (same seed, same lines)
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Time between lines, e.g. 10s, 100ms, 0s for as fast as possible
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Remote nodes per packet
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Stop after this many lines [default: never]
        #[arg(long)]
        count: Option<u64>,
        /// Prefix lines like probe-rs output (`[INFO] JSON sent via VCP: ...`)
        #[arg(long, conflicts_with = "radio")]
        probe_rs: bool,
        /// Be a RYLR998 modem instead: print its `+RCV` frames (raw binary) from the simulated
        /// nodes, and answer `+OK` to every AT command read on stdin. Run it behind a pty to
        /// try [source] kind = "rylr998" without hardware (see README)
        #[arg(long)]
        radio: bool,
    },
    /// Write the Grafana dashboards (generated from the panel definitions) as JSON files
    Dashboards {
        /// Query language of the InfluxDB datasource the dashboards use
        #[arg(long, value_enum)]
        flavor: crate::grafana::Flavor,
        /// Directory to write them into (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::malloc::tune();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(dispatch(cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn dispatch(cli: Cli) -> ExitCode {
    if let Some(Command::Dashboards { flavor, out }) = &cli.command {
        return crate::grafana::command(*flavor, out);
    }
    if let Some(Command::Simulate {
        seed,
        interval,
        nodes,
        count,
        probe_rs,
        radio,
    }) = cli.command
    {
        let format = match (radio, probe_rs) {
            (true, _) => Format::Radio,
            (false, true) => Format::ProbeRs,
            (false, false) => Format::Json,
        };
        return simulate(seed, interval, nodes, count, format).await;
    }
    let cfg = match load(&cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Check) => crate::check::run(&cfg).await,
        _ => run(cfg).await,
    }
}

fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(addr) = cli.http_listen {
        if let Some(http) = cfg.http.as_mut() {
            http.listen = addr;
        }
    }
    if let Some(addr) = cli.mqtt_listen {
        if let Some(m) = cfg.mqtt.as_mut() {
            if let BrokerTarget::Embedded(listen) = &mut m.target {
                *listen = addr;
            }
        }
    }
    if let Some(dir) = &cli.storage_dir {
        cfg.storage.dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        if let Some(m) = cfg.mqtt.as_mut() {
            if m.client_id_is_default {
                m.client_id = crate::config::default_client_id(&cfg.storage.dir);
            }
        }
    }
    cfg.storage.move_corrupt_aside = cli.move_corrupt_outbox;
    Ok(cfg)
}

async fn run(cfg: Config) -> ExitCode {
    let signals = Signals::default();
    spawn_signal_handler(signals.clone());
    match app::run(cfg, signals).await {
        Ok(Exit::Clean) => ExitCode::SUCCESS,
        Ok(Exit::Undelivered(_) | Exit::SourceFailed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Another gateway on the same storage dir is a setting to change, like a bad
            // config value.
            let locked = matches!(
                e.downcast_ref::<crate::outbox::OutboxError>(),
                Some(crate::outbox::OutboxError::Locked { .. })
            );
            if locked {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// First SIGINT/SIGTERM: drain and stop. Second: stop now.
fn spawn_signal_handler(signals: Signals) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for token in [&signals.shutdown, &signals.abort] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            token.cancel();
        }
    });
}

/// What `simulate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Bare JSON lines, as on the virtual COM port.
    Json,
    /// probe-rs defmt lines.
    ProbeRs,
    /// A RYLR998 modem's output.
    Radio,
}

async fn simulate(
    seed: u64,
    interval: Duration,
    nodes: u32,
    count: Option<u64>,
    format: Format,
) -> ExitCode {
    use std::io::Write as _;
    let cfg = SimulatorConfig {
        interval: interval.max(Duration::from_millis(500)),
        remote_nodes: nodes.max(1),
        seed: Some(seed),
    };
    let (mut model, _) = crate::source::simulator::model(&cfg);
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    if format == Format::Radio {
        answer_commands(stdout.clone());
    }
    let mut radio = crate::source::simulator::RadioFrames::default();
    let mut emitted = 0;
    while count.is_none_or(|c| emitted < c) {
        let Some(line) = model.step() else { continue };
        let bytes = match format {
            Format::Json => format!("{line}\n").into_bytes(),
            Format::ProbeRs => {
                format!("[INFO] JSON sent via VCP: {line}\\n (node2_firmware src/main.rs:600)\n")
                    .into_bytes()
            }
            Format::Radio => radio.frames(&line),
        };
        let written = match stdout.lock() {
            Ok(mut out) => out.write_all(&bytes).and_then(|()| out.flush()),
            Err(_) => return ExitCode::FAILURE,
        };
        if written.is_err() {
            return ExitCode::SUCCESS; // reader went away
        }
        emitted += 1;
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    ExitCode::SUCCESS
}

/// `simulate --radio`: answers `+OK` to every AT command on stdin, as the modem does (an
/// `AT+SEND` is cut by its length field). Ends with stdin.
fn answer_commands(stdout: std::sync::Arc<std::sync::Mutex<std::io::Stdout>>) {
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let mut stdin = std::io::stdin().lock();
        let mut pending = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                return;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(len) = lora_link::at::command_len(&pending) {
                pending.drain(..len);
                if let Ok(mut out) = stdout.lock() {
                    let _ = out.write_all(b"+OK\r\n").and_then(|()| out.flush());
                }
            }
            if pending.len() > 4096 {
                pending.clear();
            }
        }
    });
}

fn init_logging(level: &str) {
    let default = format!("{level},rumqttd=off,rumqttc=warn,hyper=warn,reqwest=warn");
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
