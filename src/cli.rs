//! The command line: `iiot-gateway [run]`, `check`, `simulate`. Parses arguments, sets up
//! logging and signals, and hands a validated [`Config`] to [`crate::app`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{self, Exit, Signals};
use crate::config::{Config, ConfigError, Overrides, SimulatorConfig};

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
  iiot-gateway keys new greenhouse --address 1 >> radio.toml
      A fresh key for radio node 1, as its [source.nodes.1] table (the gateway's config and
      scripts/firmware --keys both read it).
  socat pty,raw,echo=0,link=/tmp/ttyLORA exec:'iiot-gateway simulate --radio --config radio.toml --interval 2s'
      A simulated RYLR998 modem on /tmp/ttyLORA hearing radio.toml's nodes, each sending
      secure frames under its key, for a gateway running radio.toml ([source] kind = \"rylr998\").
  probe-rs run --chip STM32F446RETx fw.elf | iiot-gateway --config stdin.toml
      Feed a real board's output through stdin.

Environment:
  INFLUXDB_TOKEN, INFLUXDB_PASSWORD, MQTT_PASSWORD,
  MQTT_SOURCE_PASSWORD, HTTP_TOKEN,
  IIOT_NODE_KEY_<address>                            secrets (override the config file; a
                                                     program the source starts gets none)
  RUST_LOG                                           log filter, e.g. debug or iiot_gateway=trace";

/// Durable telemetry gateway: field sensor nodes to MQTT, InfluxDB and live dashboards.
#[derive(Debug, Parser)]
#[command(name = "iiot-gateway", version, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The options of `run` and `check` (given before the subcommand, they apply to running).
#[derive(Debug, Default, Clone, clap::Args)]
struct RunArgs {
    /// Config file [default: ./config.toml when present, else built-in defaults]
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address of the dashboard and API (overrides [http] listen)
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Listen address of the embedded MQTT broker (overrides [mqtt] embedded_listen; the
    /// embedded broker runs only without [mqtt] broker_url)
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<SocketAddr>,
    /// Directory of the outbox and history (overrides [storage] dir)
    #[arg(long, value_name = "DIR")]
    storage_dir: Option<PathBuf>,
    /// If the outbox database is corrupt, rename it aside (kept, never deleted) and start an
    /// empty one instead of refusing to start (run only)
    #[arg(long)]
    move_corrupt_outbox: bool,
    /// Log level when RUST_LOG is unset [default: info]
    #[arg(
        long,
        value_name = "LEVEL",
        value_parser = ["error", "warn", "info", "debug", "trace"]
    )]
    log_level: Option<String>,
}

impl RunArgs {
    /// These options, each taken from `sub` when given there, else from `self`.
    fn merged(&self, sub: &RunArgs) -> RunArgs {
        RunArgs {
            config: sub.config.clone().or_else(|| self.config.clone()),
            http_listen: sub.http_listen.or(self.http_listen),
            mqtt_listen: sub.mqtt_listen.or(self.mqtt_listen),
            storage_dir: sub.storage_dir.clone().or_else(|| self.storage_dir.clone()),
            move_corrupt_outbox: sub.move_corrupt_outbox || self.move_corrupt_outbox,
            log_level: sub.log_level.clone().or_else(|| self.log_level.clone()),
        }
    }

    /// The options given, as written on the command line (for "does nothing here").
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.config.is_some() {
            given.push("--config");
        }
        if self.http_listen.is_some() {
            given.push("--http-listen");
        }
        if self.mqtt_listen.is_some() {
            given.push("--mqtt-listen");
        }
        if self.storage_dir.is_some() {
            given.push("--storage-dir");
        }
        if self.move_corrupt_outbox {
            given.push("--move-corrupt-outbox");
        }
        if self.log_level.is_some() {
            given.push("--log-level");
        }
        given
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Run(RunArgs),
    /// Validate the config and probe each configured server; non-zero exit on problems
    Check(RunArgs),
    /// Print simulated firmware lines to stdout (for piping and demos)
    Simulate {
        /// Take interval, remote_nodes and seed from this config's [source] (kind =
        /// "simulator"); the options below override them
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Seed (same seed, same lines) [default: 1, or the config's; a config without one:
        /// a new seed each start]
        #[arg(long)]
        seed: Option<u64>,
        /// Time between lines, e.g. 10s, 100ms, 0s for as fast as possible [default: 10s]
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// Remote nodes per packet [default: 1]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        nodes: Option<u32>,
        /// Stop after this many lines [default: never]
        #[arg(long)]
        count: Option<u64>,
        /// Prefix lines like probe-rs output (`[INFO] JSON sent via VCP: ...`)
        #[arg(long, conflicts_with = "radio")]
        probe_rs: bool,
        /// Be a RYLR998 modem instead: print its `+RCV` frames (raw binary) from the simulated
        /// nodes, and answer `+OK` to every AT command read on stdin. Run it behind a pty to
        /// try [source] kind = "rylr998" without hardware (see README). With --config of a
        /// rylr998 gateway, the config's [source.nodes] send: each node with a key secure frames
        /// under its own key, a legacy node the original format; without, nodes n1, n2, ...
        /// send the original format from addresses 1, 2, ...
        #[arg(long)]
        radio: bool,
        /// With --radio: after each genuine frame, also send what an attacker would: forged
        /// (wrong key), replayed (the node's previous frame), tampered (a bit changed), legacy
        /// (the original format from a node with a key), unknown (an address not in the table)
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            requires = "radio",
            value_name = "KIND"
        )]
        attack: Vec<crate::source::simulator::Attack>,
    },
    /// Send a command to a node through the running gateway (its HTTP API: [http] listen and
    /// token from its config) and print its state; see docs/API.md, "Commands"
    #[command(name = "command")]
    Send {
        /// The node, e.g. node1
        node: String,
        /// interval, ping, identify or reboot
        command: String,
        /// The command's value, e.g. 30s for interval
        value: Option<String>,
        /// The command's id (the same id twice is one command) [default: made by the gateway]
        #[arg(long)]
        id: Option<String>,
        /// Print the state at every change until it is confirmed, expired or rejected
        #[arg(long)]
        wait: bool,
        /// The running gateway's config (its [http] listen and token) [default: ./config.toml
        /// when present, else built-in defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The gateway's URL instead of its config's [http] listen, e.g. http://pi:8080
        #[arg(long)]
        url: Option<String>,
    },
    /// Radio keys: `keys new <name> --address <n>` makes a node's key
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write the Grafana dashboards (generated from the panel definitions) as JSON files
    Dashboards {
        /// Query language of the InfluxDB datasource the dashboards use
        #[arg(long, value_enum)]
        flavor: crate::dashboards::grafana::Flavor,
        /// Directory to write them into (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `iiot-gateway keys ...`.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a fresh random key for a node as its [source.nodes.<address>] table (on stdout,
    /// nothing else there: append it to the gateway's config or to a keys file); how to use it
    /// goes to stderr
    New {
        /// The node's name in readings and topics (letters, digits, _ and -)
        name: String,
        /// The node's radio address (its AT+ADDRESS; Node 1 is 1)
        #[arg(long)]
        address: u16,
    },
}

/// Entry point of the binary.
/// Worker threads of the async runtime (see [`main`]).
const ASYNC_WORKERS: usize = 1;

pub fn main() -> ExitCode {
    crate::malloc::tune();
    let cli = Cli::parse();
    let level = match &cli.command {
        Some(Command::Run(sub) | Command::Check(sub)) => cli.run.merged(sub).log_level,
        _ => cli.run.log_level.clone(),
    };
    if let Err(e) = init_logging(level.as_deref().unwrap_or("info")) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker thread for the async side (sinks, web server): the outbox has its own
    // threads, and the web server's queries go to the blocking pool. A second worker only
    // handed tasks back and forth (18 % of the CPU at 1,000 packets/s, measured, BENCHMARKS.md);
    // one kept 45,000 messages/s. TOKIO_WORKER_THREADS still sets another count.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(ASYNC_WORKERS);
    }
    let runtime = match builder.enable_all().build() {
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
    // Options for running, given before a subcommand that does not run: refused, not ignored.
    let refuse = |sub: &str| {
        let given = cli.run.given();
        (!given.is_empty()).then(|| {
            eprintln!(
                "error: {} {} nothing for `{sub}` (they are for running the gateway and for `check`)",
                given.join(", "),
                if given.len() == 1 { "does" } else { "do" }
            );
            ExitCode::from(2)
        })
    };
    let (args, check) = match cli.command {
        Some(Command::Dashboards { flavor, out }) => {
            if let Some(code) = refuse("dashboards") {
                return code;
            }
            return crate::dashboards::grafana::command(flavor, &out);
        }
        Some(Command::Simulate {
            config,
            seed,
            interval,
            nodes,
            count,
            probe_rs,
            radio,
            attack,
        }) => {
            if let Some(code) = refuse("simulate") {
                return code;
            }
            let format = match (radio, probe_rs) {
                (true, _) => Format::Radio,
                (false, true) => Format::ProbeRs,
                (false, false) => Format::Json,
            };
            let settings = simulator_settings(config.as_deref(), radio, seed, interval, nodes);
            let (sim, table) = match settings {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if format == Format::Radio && table.is_empty() {
                eprintln!(
                    "note: frames of the original, unauthenticated format from addresses 1, 2, ...: a gateway takes them only from nodes marked legacy = true. For secure frames give --config <the gateway's config> (its [source.nodes] keys)."
                );
            }
            let radio = crate::source::simulator::RadioFrames::with_nodes(table, attack);
            return simulate(sim, count, format, radio).await;
        }
        Some(Command::Send {
            node,
            command,
            value,
            id,
            wait,
            config,
            url,
        }) => {
            if let Some(code) = refuse("command") {
                return code;
            }
            let cfg = match Config::load(config.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let invocation = crate::downlink::client::Invocation {
                node,
                command,
                value,
                id,
                wait,
                url,
            };
            return crate::downlink::client::run(&cfg, invocation).await;
        }
        Some(Command::Keys {
            command: KeysCommand::New { name, address },
        }) => {
            if let Some(code) = refuse("keys") {
                return code;
            }
            return crate::keys::new(&name, address);
        }
        Some(Command::Check(sub)) => {
            let args = cli.run.merged(&sub);
            if args.move_corrupt_outbox {
                eprintln!("error: --move-corrupt-outbox does nothing for `check` (it looks, and changes nothing); it is for running");
                return ExitCode::from(2);
            }
            (args, true)
        }
        Some(Command::Run(sub)) => (cli.run.merged(&sub), false),
        None => (cli.run.clone(), false),
    };
    let cfg = match load(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        crate::check::run(&cfg).await
    } else {
        run(cfg).await
    }
}

/// The simulator `simulate` runs: the config's `[source]` (a simulator) when given, each
/// option overriding it.
fn simulator_settings(
    config: Option<&std::path::Path>,
    radio: bool,
    seed: Option<u64>,
    interval: Option<Duration>,
    nodes: Option<u32>,
) -> Result<(SimulatorConfig, RadioTable), String> {
    // Without a config the lines are the same on every run (seed 1); a config's simulator
    // without a seed gets a new one each start, as it does when the gateway runs it.
    let fixed = SimulatorConfig {
        interval: Duration::from_secs(10),
        remote_nodes: 1,
        seed: Some(1),
    };
    let (base, table) = match config {
        None => (fixed, Vec::new()),
        Some(path) => {
            let cfg = Config::load(Some(path)).map_err(|e| e.to_string())?;
            match cfg.source {
                crate::config::SourceConfig::Simulator(s) => (s, Vec::new()),
                crate::config::SourceConfig::Rylr998(r) if radio => {
                    let table = radio_table(&r);
                    if table.is_empty() {
                        return Err(format!(
                            "simulate --radio --config {}: no node in [source.nodes] has a key or legacy = true, so the gateway would refuse every frame; add one (iiot-gateway keys new <name> --address <n>)",
                            path.display()
                        ));
                    }
                    if table.iter().any(|(_, k)| k.as_ref().is_some_and(|k| *k != TEST_KEY)) {
                        eprintln!(
                            "warning: simulate seals frames with {}'s node keys: run it only against a test gateway. A gateway that stores these simulated counters refuses the real node's lower ones (give the node a new key then), and two simulator runs less than a tenth of a second apart per frame reuse counters.",
                            path.display()
                        );
                    }
                    let remote_nodes = u32::try_from(table.len()).unwrap_or(u32::MAX);
                    (SimulatorConfig { remote_nodes, ..fixed }, table)
                }
                other => {
                    return Err(format!(
                        "simulate --config {}: its [source] kind is {:?}; simulate takes interval, remote_nodes and seed from kind = \"simulator\", and with --radio the nodes and keys of kind = \"rylr998\"",
                        path.display(),
                        other.kind()
                    ))
                }
            }
        }
    };
    if !table.is_empty() && nodes.is_some() {
        return Err("simulate --nodes: the nodes are the config's [source.nodes] with --radio and a rylr998 config; remove one of the two".into());
    }
    let sim = SimulatorConfig {
        interval: interval.unwrap_or(base.interval),
        remote_nodes: nodes.unwrap_or(base.remote_nodes),
        seed: seed.or(base.seed),
    };
    Ok((sim, table))
}

/// The published key of docs/PROTOCOL.md's vectors (tests and demos only).
const TEST_KEY: lora_link::secure::Key = lora_link::secure::Key::new([
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
]);

/// The simulated radio nodes: address, and key (`None`: the original format).
type RadioTable = Vec<(u16, Option<lora_link::secure::Key>)>;

/// The nodes of a rylr998 config that can be heard: those with a key, and legacy ones.
fn radio_table(cfg: &crate::config::Rylr998Config) -> RadioTable {
    use crate::config::NodeAuth;
    cfg.nodes
        .iter()
        .filter_map(|(address, node)| match &node.auth {
            NodeAuth::Key(key) => Some((*address, Some(key.clone()))),
            NodeAuth::Legacy => Some((*address, None)),
            NodeAuth::Missing => None,
        })
        .collect()
}

/// The config `cli` names, with its overriding options merged in before validation (an
/// option that would do nothing with this config is refused there).
fn load(cli: &RunArgs) -> Result<Config, ConfigError> {
    let overrides = Overrides {
        http_listen: cli.http_listen,
        mqtt_listen: cli.mqtt_listen,
        storage_dir: cli.storage_dir.clone(),
        move_corrupt_aside: cli.move_corrupt_outbox,
    };
    Config::load_with(cli.config.as_deref(), &overrides)
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

/// Prints `sim`'s lines, one per `sim.interval` of real time (`0s`: as fast as possible; the
/// model's own time still moves at least 500 ms per line, the firmware's `ts` grid).
async fn simulate(
    sim: SimulatorConfig,
    count: Option<u64>,
    format: Format,
    mut radio: crate::source::simulator::RadioFrames,
) -> ExitCode {
    use std::io::Write as _;
    let interval = sim.interval;
    let cfg = SimulatorConfig {
        interval: interval.max(Duration::from_millis(500)),
        ..sim
    };
    let (mut model, _) = crate::source::simulator::model(&cfg);
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    if format == Format::Radio {
        answer_commands(stdout.clone());
    }
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

/// The log filter: `RUST_LOG` when set, else `--log-level`. A `RUST_LOG` that would hide
/// everything by mistake (a bare word that is no level, e.g. `verbose`, which reads as a
/// target name) is refused like any bad setting.
fn init_logging(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let default = format!("{level},rumqttd=off,rumqttc=warn,hyper=warn,reqwest=warn");
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            let bare_words = value
                .split(',')
                .map(str::trim)
                .filter(|d| !d.contains('=') && !d.is_empty())
                .find(|d| !LEVELS.contains(&d.to_ascii_lowercase().as_str()));
            if let Some(word) = bare_words {
                return Err(format!(
                    "RUST_LOG: {word:?} is not a level: use one of {}, or target=level (e.g. iiot_gateway=trace)",
                    LEVELS.join(", ")
                ));
            }
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(&default).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    Ok(())
}
