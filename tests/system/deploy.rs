//! The compose stack (deploy/) and the Dockerfile, checked without Docker (no engine runs on
//! these machines): every file the stack mounts or builds from exists, the gateway's config
//! loads and points at the compose services on the ports they listen on, and names (org,
//! bucket, secrets' variables, datasource uids) agree across the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use iiot_gateway::config::{Config, InfluxApi};
use iiot_gateway::mqtt::{Broker, BrokerTarget};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `deploy/` in the repository.
pub fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// A YAML file (one document) as JSON, for easy indexing. Panics naming the file.
pub fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    yaml_to_json(&docs[0], path)
}

fn yaml_to_json(y: &Yaml, path: &Path) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(|i| yaml_to_json(i, path)).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("{}: unsupported key {other:?}", path.display()),
                    };
                    (key, yaml_to_json(v, path))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("{}: unsupported YAML {y:?}", path.display()),
    }
}

/// `deploy/.env.example` as variable → value.
fn env_example() -> BTreeMap<String, String> {
    let path = deploy().join(".env.example");
    let text = std::fs::read_to_string(&path).expect("deploy/.env.example");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: not KEY=VALUE: {l:?}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// Names of the `${NAME...}` variables a text interpolates.
fn interpolated(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        rest = &rest[at + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_object(), "docker-compose.yml: no service {name:?}");
    s
}

/// Container ports a service publishes (`"host:container"`).
fn container_ports(svc: &Value) -> Vec<u16> {
    svc["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let p = p.as_str().expect("ports as quoted strings");
            let container = p.rsplit(':').next().expect("a port");
            container
                .split('/')
                .next()
                .unwrap_or(container)
                .parse()
                .unwrap_or_else(|_| panic!("bad port mapping {p:?}"))
        })
        .collect()
}

/// Bind mounts of a service: (host path resolved against deploy/, container path).
fn bind_mounts(svc: &Value) -> Vec<(PathBuf, String)> {
    volumes(svc)
        .into_iter()
        .filter(|(src, _)| src.starts_with('.') || src.starts_with('/'))
        .map(|(src, dst)| (deploy().join(src), dst))
        .collect()
}

/// Every `source:target[:mode]` volume entry of a service.
fn volumes(svc: &Value) -> Vec<(String, String)> {
    svc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let v = v.as_str().expect("short volume syntax");
            let mut parts = v.split(':');
            let src = parts.next().expect("source").to_string();
            let dst = parts
                .next()
                .unwrap_or_else(|| panic!("volume {v:?} has no target"))
                .to_string();
            (src, dst)
        })
        .collect()
}

fn env_var<'a>(svc: &'a Value, name: &str) -> &'a str {
    svc["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("service environment has no {name}: {svc}"))
}

/// `http://host:port` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url}: expected http://"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url}: no port"));
    (host.to_string(), port.parse().expect("numeric port"))
}

#[test]
fn compose_stack_mounts_existing_files_and_interpolates_only_env_example_variables() {
    let path = deploy().join("docker-compose.yml");
    let compose = yaml(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    for name in ["mosquitto", "influxdb", "grafana", "gateway"] {
        service(&compose, name);
    }
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .expect("top-level volumes")
        .keys()
        .map(String::as_str)
        .collect();
    for (name, svc) in compose["services"].as_object().unwrap() {
        for (host, target) in bind_mounts(svc) {
            assert!(
                host.exists(),
                "service {name} mounts {} at {target}, which does not exist",
                host.display()
            );
        }
        for (src, _) in volumes(svc) {
            if !(src.starts_with('.') || src.starts_with('/')) {
                assert!(
                    declared.contains(src.as_str()),
                    "{name}: volume {src} is not declared"
                );
            }
        }
    }
    let build = &service(&compose, "gateway")["build"];
    let context = deploy().join(build["context"].as_str().expect("build.context"));
    let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    assert_eq!(
        context.canonicalize().unwrap(),
        repo().canonicalize().unwrap()
    );

    // Secrets only through deploy/.env (a copy of .env.example); every variable defined there.
    let env = env_example();
    let used = interpolated(&text);
    let defined: BTreeSet<String> = env.keys().cloned().collect();
    assert_eq!(
        used, defined,
        "variables docker-compose.yml interpolates vs. those deploy/.env.example defines"
    );
    for (k, v) in &env {
        assert!(
            v.starts_with("replace"),
            ".env.example must hold placeholders only, not {k}={v}"
        );
    }
    let ignore = std::fs::read_to_string(deploy().join(".gitignore")).expect("deploy/.gitignore");
    assert!(
        ignore.lines().any(|l| l.trim() == ".env"),
        "deploy/.env must be git-ignored"
    );
}

#[test]
fn gateway_config_loads_and_points_at_the_compose_services() {
    let compose = yaml(&deploy().join("docker-compose.yml"));
    let env = env_example();
    let lookup = |name: &str| env.get(name).cloned();
    let path = deploy().join("gateway/config.toml");
    let cfg = Config::from_file(&path, &lookup)
        .unwrap_or_else(|e| panic!("deploy/gateway/config.toml does not load: {e}"));

    // MQTT: the mosquitto service, on the port its config listens on and compose publishes.
    let mqtt = cfg.mqtt.expect("[mqtt] on");
    let BrokerTarget::External(brokers) = mqtt.connection.target else {
        panic!("the gateway must publish to the mosquitto service, not an embedded broker");
    };
    let [Broker { host, port }] = &brokers[..] else {
        panic!("one broker: {brokers:?}");
    };
    let (host, port) = (host.clone(), *port);
    assert_eq!(host, "mosquitto");
    let mosquitto = service(&compose, &host);
    assert!(container_ports(mosquitto).contains(&port), "{port}");
    let conf = bind_mounts(mosquitto)
        .into_iter()
        .find(|(_, dst)| dst == "/mosquitto/config/mosquitto.conf")
        .expect("mosquitto.conf mounted");
    let conf = std::fs::read_to_string(conf.0).unwrap();
    assert!(
        conf.lines().any(|l| l.trim() == format!("listener {port}")),
        "mosquitto.conf listens on {port}"
    );
    assert!(conf.contains("persistence true"));
    let data = volumes(mosquitto)
        .into_iter()
        .find(|(src, _)| src == "mosquitto-data")
        .expect("mosquitto persistence volume");
    assert!(conf.contains(&format!("persistence_location {}/", data.1)));

    // InfluxDB 2: the influxdb service, its init org/bucket, the token from INFLUXDB_TOKEN.
    let influx = cfg.influx.expect("[influxdb] on");
    let (host, port) = host_port(&influx.url);
    assert_eq!(host, "influxdb");
    let influxdb = service(&compose, &host);
    assert!(container_ports(influxdb).contains(&port), "{port}");
    let InfluxApi::V2 { org, bucket, token } = &influx.api else {
        panic!("the compose stack runs InfluxDB 2: api = \"v2\"");
    };
    assert_eq!(org, env_var(influxdb, "DOCKER_INFLUXDB_INIT_ORG"));
    assert_eq!(bucket, env_var(influxdb, "DOCKER_INFLUXDB_INIT_BUCKET"));
    assert_eq!(env_var(influxdb, "DOCKER_INFLUXDB_INIT_MODE"), "setup");
    assert_eq!(
        token.as_ref().map(|t| t.expose().to_string()),
        env.get("INFLUXDB_TOKEN").cloned(),
        "the token comes from INFLUXDB_TOKEN"
    );
    let admin_token = interpolated(env_var(influxdb, "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"));
    let gateway = service(&compose, "gateway");
    assert_eq!(
        interpolated(env_var(gateway, "INFLUXDB_TOKEN")),
        admin_token,
        "the gateway gets InfluxDB's admin token as INFLUXDB_TOKEN"
    );

    // HTTP on all interfaces, published, and exposed by the image.
    let http = cfg.http.expect("[http] on");
    assert_eq!(http.listen.to_string(), "0.0.0.0:8080");
    assert!(container_ports(gateway).contains(&http.listen.port()));
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile
        .lines()
        .any(|l| l.trim() == format!("EXPOSE {}", http.listen.port())));

    // Storage in the volume; the config mounted where the image's CMD reads it.
    let storage = cfg.storage.dir.to_str().unwrap().to_string();
    assert!(
        volumes(gateway)
            .iter()
            .any(|(src, dst)| *dst == storage && !src.starts_with('.')),
        "[storage] dir {storage} must be a named volume of the gateway service"
    );
    assert!(dockerfile.contains(&format!("VOLUME [\"{storage}\"]")));
    let (host_cfg, cfg_target) = bind_mounts(gateway)
        .into_iter()
        .find(|(host, _)| host.ends_with("gateway/config.toml"))
        .expect("gateway config mounted");
    assert_eq!(host_cfg, path);
    assert!(dockerfile.contains(&format!("CMD [\"--config\", \"{cfg_target}\"]")));

    // Grafana's datasources: the same server, org and bucket, the same token variable.
    let grafana = service(&compose, "grafana");
    let (prov, prov_target) = bind_mounts(grafana)
        .into_iter()
        .find(|(_, dst)| dst == "/etc/grafana/provisioning")
        .expect("provisioning mounted");
    assert_eq!(prov, deploy().join("./grafana/provisioning"));
    assert_eq!(
        interpolated(env_var(grafana, "INFLUXDB_TOKEN")),
        admin_token,
        "Grafana gets the token as INFLUXDB_TOKEN"
    );
    let sources = yaml(&prov.join("datasources/influxdb.yaml"));
    let sources = sources["datasources"].as_array().expect("datasources");
    assert_eq!(sources.len(), 2);
    for ds in sources {
        assert_eq!(ds["type"], "influxdb");
        assert_eq!(ds["url"].as_str(), Some(influx.url.as_str()));
        match ds["jsonData"]["version"].as_str() {
            Some("Flux") => {
                assert_eq!(
                    ds["uid"],
                    iiot_gateway::dashboards::grafana::FLUX_DATASOURCE_UID
                );
                assert_eq!(ds["jsonData"]["organization"].as_str(), Some(org.as_str()));
                assert_eq!(
                    ds["jsonData"]["defaultBucket"].as_str(),
                    Some(bucket.as_str())
                );
                assert_eq!(ds["secureJsonData"]["token"], "$INFLUXDB_TOKEN");
            }
            Some("InfluxQL") => {
                assert_eq!(
                    ds["uid"],
                    iiot_gateway::dashboards::grafana::INFLUXQL_DATASOURCE_UID
                );
                // InfluxDB 2's virtual DBRP mapping: database = bucket name.
                assert_eq!(ds["jsonData"]["dbName"].as_str(), Some(bucket.as_str()));
                assert_eq!(ds["jsonData"]["httpHeaderName1"], "Authorization");
                assert_eq!(
                    ds["secureJsonData"]["httpHeaderValue1"],
                    "Token $INFLUXDB_TOKEN"
                );
            }
            other => panic!("unexpected datasource version {other:?}"),
        }
    }

    // Dashboard providers read folders that exist under the mount and hold the dashboards.
    let providers = yaml(&prov.join("dashboards/iiot.yaml"));
    let providers = providers["providers"].as_array().expect("providers");
    assert_eq!(providers.len(), 2);
    for p in providers {
        let inside = p["options"]["path"].as_str().expect("options.path");
        let rel = inside
            .strip_prefix(&prov_target)
            .unwrap_or_else(|| panic!("{inside} is outside the mounted {prov_target}"));
        let dir = prov.join(rel.trim_start_matches('/'));
        let files = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert_eq!(
            files,
            iiot_gateway::dashboards::panels::DASHBOARDS.len(),
            "{}",
            dir.display()
        );
    }
}

#[test]
fn dockerfile_builds_locked_release_and_ships_only_the_binary_as_non_root() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "builder and runtime stages");
    assert!(
        lines[stages[0]].starts_with("FROM rust:1-slim")
            && lines[stages[0]].ends_with(" AS builder"),
        "{}",
        lines[stages[0]]
    );
    let builder = lines[stages[0]..stages[1]].join("\n");
    assert!(
        builder.contains("cargo build --release --locked"),
        "{builder}"
    );
    assert_eq!(lines[stages[1]], "FROM debian:bookworm-slim");
    let runtime = &lines[stages[1]..];
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies.len(),
        1,
        "the runtime gets the binary only: {copies:?}"
    );
    assert!(copies[0].starts_with("COPY --from=builder "));
    assert!(copies[0].ends_with("/iiot-gateway"));
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(!matches!(user.trim(), "root" | "0"), "runs as {user}");
    assert!(runtime.contains(&"EXPOSE 8080"));

    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for must in ["target", ".git", "deploy/.env"] {
        assert!(ignored.contains(must), ".dockerignore must exclude {must}");
    }
}

#[test]
fn systemd_unit_is_hardened_and_passes_systemd_analyze_verify() {
    let unit_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/iiot-gateway.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "User=iiot-gateway",
        "SupplementaryGroups=dialout plugdev",
        "StateDirectory=iiot-gateway",
        "EnvironmentFile=-/etc/iiot-gateway/secrets.env",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // The user it runs as is the one the package makes, in dialout.
    let sysusers = std::fs::read_to_string(repo().join("packaging/debian/iiot-gateway.sysusers"))
        .expect("packaging/debian/iiot-gateway.sysusers");
    let entries: Vec<Vec<&str>> = sysusers
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e.get(..2) == Some(&["u", "iiot-gateway"][..])),
        "{sysusers}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e[..] == ["m", "iiot-gateway", "dialout"]),
        "{sysusers}"
    );
    // The unit's ExecStart, pointed at the binary under test, must satisfy systemd itself.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("iiot-gateway.service");
    std::fs::write(
        &local,
        unit.replace("/usr/bin/iiot-gateway", crate::gateway::BIN),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        // The manual page the unit names comes with the package (scripts/package-test).
        .arg("--man=no")
        .arg(&local)
        .output()
        .expect("systemd-analyze (apt-get install -y systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("iiot-gateway.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze: {complaints:?}");
    // The flags it passes exist.
    let help = std::process::Command::new(crate::gateway::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--storage-dir") && help.contains("--config"));
}
