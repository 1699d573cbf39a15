//! The agent's configuration: a TOML file, then environment variables, then flags, each
//! overriding the one before. Every option is documented in `confmesh.example.toml`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
    value::{Dict, Value},
};
use serde::{Deserialize, Serialize};

use super::server::Limits;
use crate::{
    proto::trust::Mode,
    runtime::{DEFAULT_CACHE_BYTES, DEFAULT_HISTORY_LEN, DEFAULT_WATCH_LOG_LEN, Preset},
};

/// How long a shutdown may take by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The default gossip (QUIC) address.
pub const DEFAULT_GOSSIP_ADDR: &str = "127.0.0.1:7946";
/// The default HTTP API address: this host only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:7947";
/// The data directory `--dev` uses when none is given.
pub const DEV_DATA_DIR: &str = "confmesh-dev-data";

/// A configuration that cannot be used, naming the option at fault.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {message}")]
pub struct ConfigError {
    /// The option, as spelled in the file (`tls.ca`, `http_addr`, ...).
    pub option: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(option: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            option: option.to_string(),
            message: message.into(),
        }
    }
}

/// Paths of the TLS material (PEM): `[tls]` in the file, `CONFMESH_TLS_*`, `--tls-*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// The cluster CA certificate (during a CA rotation, a PEM bundle of the old and the
    /// new CA).
    #[arg(long = "tls-ca", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This node's certificate chain.
    #[arg(long = "tls-cert", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long = "tls-key", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CAs retired by a rotation (PEM, one or more): their peers are refused, but the
    /// writers their node certificates endorsed keep verifying (docs/PROTOCOL.md §8.8).
    #[arg(long = "tls-retired-ca", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_ca: Option<PathBuf>,
}

impl TlsOptions {
    fn is_empty(&self) -> bool {
        self == &TlsOptions::default()
    }
}

/// Every option of the agent, declared once: a field here is a key of the TOML file, a
/// `CONFMESH_*` environment variable (its name in capitals; `[tls] ca` is `CONFMESH_TLS_CA`)
/// and a flag (`--http-addr`), each layer overriding the one before. Every field is optional;
/// [`load`] fills in the defaults and checks the whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Where the replica is kept.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The QUIC (UDP) address peers reach this node at [default: 127.0.0.1:7946].
    #[arg(long, value_name = "IP:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<String>,
    /// The HTTP API address [default: 127.0.0.1:7947].
    #[arg(long, value_name = "IP:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// A member to join through, `host:port`, DNS names allowed (repeatable; the
    /// environment takes a comma-separated list). Replaces the file's list.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "list::deserialize"
    )]
    pub join: Vec<String>,
    /// The name other members see.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A tag other members see, `key=value` (repeatable; the environment takes
    /// `k=v,k2=v2`). Added to the file's tags.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tags::parse_one)]
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "tags")]
    pub tags: Vec<(String, String)>,
    /// Failure-detector timers: `lan` or `wan` [default: lan].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Unsigned versions from peers: `enforcing` (refused) or `permissive` (accepted from
    /// writers without an endorsement, while upgrading from protocol 2) [default: enforcing].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_mode: Option<String>,
    /// About how many nodes the cluster has [default: 16].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_members: Option<usize>,
    /// Versions kept per key for history and rollback [default: 16].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_len: Option<usize>,
    /// Changes kept for resumable watches [default: 100000].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_log_len: Option<u64>,
    /// A bearer token the HTTP API requires (file or environment only: a flag would show
    /// in the process list).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// The most memory, in MiB, the data directory's page cache may take [default: 64].
    #[arg(long, value_name = "MIB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<usize>,
    /// How long requests in flight get to finish at shutdown (`5s`, `500ms`) [default: 5s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    /// The most HTTP connections open at once [default: 1024].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,
    /// How long a client may take to send a request's headers, also the keep-alive idle
    /// time [default: 10s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_timeout: Option<String>,
    /// How long a client may take to send a request's body [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_body_timeout: Option<String>,
    /// How long a response may wait for a client that stopped reading it [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_write_timeout: Option<String>,
    /// Serve the HTTP API over TLS with this node's certificate and key (`[tls]`); clients
    /// check it against the cluster CA. Required to listen beyond loopback, unless `--dev`.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_tls: bool,
    /// The TLS material.
    #[command(flatten)]
    #[serde(default, skip_serializing_if = "TlsOptions::is_empty")]
    pub tls: TlsOptions,
    /// Development mode: a throwaway CA, localhost, ./confmesh-dev-data unless a data
    /// directory is given.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

/// A checked configuration, ready to start an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where the replica is kept.
    pub data_dir: PathBuf,
    /// The QUIC (UDP) address.
    pub gossip_addr: SocketAddr,
    /// The HTTP API address.
    pub http_addr: SocketAddr,
    /// Members to join through.
    pub join: Vec<String>,
    /// The node's name.
    pub name: Option<String>,
    /// The node's tags.
    pub tags: BTreeMap<String, String>,
    /// LAN or WAN timers.
    pub preset: Preset,
    /// What the node does with unsigned versions.
    pub trust_mode: Mode,
    /// About how many nodes the cluster has.
    pub expected_members: usize,
    /// Versions kept per key.
    pub history_len: usize,
    /// Changes kept for watches.
    pub watch_log_len: u64,
    /// The bearer token the API requires, if any.
    pub api_token: Option<String>,
    /// The most memory the data directory's page cache may take.
    pub cache_bytes: usize,
    /// How long requests in flight get to finish at shutdown, before the node leaves the
    /// cluster.
    pub shutdown_grace: Duration,
    /// What HTTP clients may hold: connections and timeouts.
    pub http_limits: Limits,
    /// Whether the HTTP API is served over TLS, with the node's certificate.
    pub http_tls: bool,
    /// The TLS files; in `--dev` mode, written into the data directory at start.
    pub tls: ResolvedTls,
    /// Whether this is a `--dev` agent.
    pub dev: bool,
}

/// The TLS material's paths, all present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedTls {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// CAs retired by a rotation, if any.
    pub retired_ca: Option<PathBuf>,
}

/// The `CONFMESH_*` variables that belong to the command line's client commands or select
/// the file, not options of the agent.
const NOT_OPTIONS: [&str; 5] = [
    "CONFMESH_ADDR",
    "CONFMESH_TOKEN",
    "CONFMESH_TOKEN_FILE",
    "CONFMESH_CONFIG",
    "CONFMESH_CA_CERT",
];

/// Reads `path` (if any), then the `CONFMESH_*` variables of `env`, then `flags`, each
/// overriding the one before, and checks the result.
///
/// # Errors
///
/// [`ConfigError`] naming the first option that is unreadable or invalid, or an unknown file
/// key or `CONFMESH_*` variable.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Options,
) -> Result<AgentConfig, ConfigError> {
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            Figment::from(Toml::string(&text))
                .extract_lossy::<Options>()
                .map_err(|e| {
                    ConfigError::new("--config", format!("{}: {}", path.display(), e.kind))
                })?
        }
        None => Options::default(),
    };
    let env = env_options(env)?;
    let merged = Figment::from(Serialized::defaults(file))
        .merge(Serialized::defaults(env))
        .merge(Serialized::defaults(flags))
        .extract::<Options>()
        .map_err(|e| ConfigError::new(&e.path.join("."), e.kind.to_string()))?;
    resolve(merged)
}

/// The options the `CONFMESH_*` variables of `env` set; an unknown one is an error naming it.
fn env_options(env: impl IntoIterator<Item = (String, String)>) -> Result<Options, ConfigError> {
    let mut dict = Dict::new();
    for (name, value) in env {
        if !name.starts_with("CONFMESH_") || NOT_OPTIONS.contains(&name.as_str()) {
            continue;
        }
        let key = name["CONFMESH_".len()..].to_ascii_lowercase();
        let value = Value::from(value);
        match key.strip_prefix("tls_") {
            Some(field) => {
                let tls = dict
                    .entry("tls".to_string())
                    .or_insert_with(|| Value::from(Dict::new()));
                if let Value::Dict(_, tls) = tls {
                    tls.insert(field.to_string(), value);
                }
            }
            None => {
                dict.insert(key, value);
            }
        }
    }
    Figment::from(Serialized::defaults(dict))
        .extract_lossy::<Options>()
        .map_err(|e| {
            let mut keys = e.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind
                && keys.last() != Some(field)
            {
                keys.push(field.clone());
            }
            let name = format!("CONFMESH_{}", keys.join("_").to_ascii_uppercase());
            match &e.kind {
                figment::error::Kind::UnknownField(..) => ConfigError::new(
                    &name,
                    "not an option of the agent (see confmesh.example.toml)",
                ),
                kind => ConfigError::new(&name, kind.to_string()),
            }
        })
}

/// `join`: a list, or (from the environment) a comma-separated string.
mod list {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        List(Vec<String>),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Either::deserialize(d)? {
            Either::List(list) => list,
            Either::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

/// `tags`: a table in the file, `k=v,k2=v2` in the environment, `--tag k=v` flags.
mod tags {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Table(BTreeMap<String, String>),
        Text(String),
    }

    /// One `key=value`.
    pub(super) fn parse_one(tag: &str) -> Result<(String, String), String> {
        tag.split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .ok_or_else(|| format!("{tag:?} is not `key=value`"))
    }

    pub(super) fn serialize<S: Serializer>(
        tags: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(tags.iter().map(|(k, v)| (k, v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        match Either::deserialize(d)? {
            Either::Table(table) => Ok(table.into_iter().collect()),
            Either::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|tag| parse_one(tag).map_err(D::Error::custom))
                .collect(),
        }
    }
}

fn parse_addr(option: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            option,
            format!("{value:?} is not an `ip:port` address (such as 127.0.0.1:7946)"),
        )
    })
}

/// A positive duration such as `10s`, `500ms` or `2m`, or `default` if absent.
fn parse_duration(
    option: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match humantime::parse_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ConfigError::new(option, "must be more than zero")),
        Err(e) => Err(ConfigError::new(
            option,
            format!("{value:?} is not a duration such as 10s, 500ms or 2m ({e})"),
        )),
    }
}

fn resolve(file: Options) -> Result<AgentConfig, ConfigError> {
    let dev = file.dev;
    let data_dir = file
        .data_dir
        .clone()
        .or_else(|| dev.then(|| PathBuf::from(DEV_DATA_DIR)))
        .ok_or_else(|| ConfigError::new("data_dir", "required (or use --dev)"))?;
    let http_addr = parse_addr(
        "http_addr",
        file.http_addr.as_deref().unwrap_or(DEFAULT_HTTP_ADDR),
    )?;
    let api_token = file.api_token.clone().filter(|t| !t.is_empty());
    if !http_addr.ip().is_loopback() && api_token.is_none() {
        return Err(ConfigError::new(
            "http_addr",
            format!("{http_addr} is reachable from other hosts; set api_token to serve there"),
        ));
    }
    if !http_addr.ip().is_loopback() && !file.http_tls && !dev {
        return Err(ConfigError::new(
            "http_addr",
            format!(
                "{http_addr} is reachable from other hosts, and without TLS the API token \
                 crosses the network in clear; set http_tls = true (the API then uses this \
                 node's certificate, which must name the address clients use) or use --dev"
            ),
        ));
    }
    Ok(AgentConfig {
        gossip_addr: parse_addr(
            "gossip_addr",
            file.gossip_addr.as_deref().unwrap_or(DEFAULT_GOSSIP_ADDR),
        )?,
        http_addr,
        join: checked_seeds(&file.join)?,
        name: file.name.clone().filter(|n| !n.is_empty()),
        tags: file.tags.iter().cloned().collect(),
        preset: match file.preset.as_deref().unwrap_or("lan") {
            "lan" => Preset::Lan,
            "wan" => Preset::Wan,
            other => {
                return Err(ConfigError::new(
                    "preset",
                    format!("{other:?} is neither \"lan\" nor \"wan\""),
                ));
            }
        },
        trust_mode: match file.trust_mode.as_deref().unwrap_or("enforcing") {
            "enforcing" => Mode::Enforcing,
            "permissive" => Mode::Permissive,
            other => {
                return Err(ConfigError::new(
                    "trust_mode",
                    format!("{other:?} is neither \"enforcing\" nor \"permissive\""),
                ));
            }
        },
        expected_members: at_least_one("expected_members", file.expected_members, 16)?,
        history_len: at_least_one("history_len", file.history_len, DEFAULT_HISTORY_LEN)?,
        watch_log_len: at_least_one("watch_log_len", file.watch_log_len, DEFAULT_WATCH_LOG_LEN)?,
        api_token,
        cache_bytes: cache_bytes(file.cache_mb)?,
        shutdown_grace: parse_duration(
            "shutdown_grace",
            file.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        )?,
        http_limits: http_limits(&file)?,
        http_tls: file.http_tls,
        tls: tls_paths(&file.tls, dev.then_some(data_dir.as_path()))?,
        data_dir,
        dev,
    })
}

/// `value`, or `default` if absent; zero is refused.
fn at_least_one<T: Copy + PartialEq + From<u8>>(
    option: &str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(n) if n == T::from(0) => Err(ConfigError::new(option, "must be at least 1")),
        n => Ok(n.unwrap_or(default)),
    }
}

/// Every seed is `host:port`.
fn checked_seeds(join: &[String]) -> Result<Vec<String>, ConfigError> {
    for seed in join {
        if seed
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(ConfigError::new(
                "join",
                format!("{seed:?} is not `host:port` (a DNS name or an address)"),
            ));
        }
    }
    Ok(join.to_vec())
}

/// `cache_mb` in bytes.
fn cache_bytes(cache_mb: Option<usize>) -> Result<usize, ConfigError> {
    match cache_mb {
        None => Ok(DEFAULT_CACHE_BYTES),
        Some(0) => Err(ConfigError::new("cache_mb", "must be at least 1")),
        Some(mb) => mb.checked_mul(1 << 20).ok_or_else(|| {
            ConfigError::new(
                "cache_mb",
                format!("{mb} MiB is more than this machine can address"),
            )
        }),
    }
}

/// The HTTP connection cap and timeouts.
fn http_limits(file: &Options) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    Ok(Limits {
        max_connections: at_least_one(
            "http_max_connections",
            file.http_max_connections,
            defaults.max_connections,
        )?,
        header_timeout: parse_duration(
            "http_header_timeout",
            file.http_header_timeout.as_deref(),
            defaults.header_timeout,
        )?,
        body_timeout: parse_duration(
            "http_body_timeout",
            file.http_body_timeout.as_deref(),
            defaults.body_timeout,
        )?,
        write_timeout: parse_duration(
            "http_write_timeout",
            file.http_write_timeout.as_deref(),
            defaults.write_timeout,
        )?,
    })
}

/// The TLS files: given, or (`--dev`, with its data directory) made there at start.
fn tls_paths(tls: &TlsOptions, dev_data_dir: Option<&Path>) -> Result<ResolvedTls, ConfigError> {
    if let Some(data_dir) = dev_data_dir {
        let dir = data_dir.join("tls");
        return Ok(ResolvedTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            retired_ca: tls.retired_ca.clone(),
        });
    }
    let need = |path: &Option<PathBuf>, option: &str| {
        path.clone()
            .ok_or_else(|| ConfigError::new(option, "required (or use --dev)"))
    };
    Ok(ResolvedTls {
        ca: need(&tls.ca, "tls.ca")?,
        cert: need(&tls.cert, "tls.cert")?,
        key: need(&tls.key, "tls.key")?,
        retired_ca: tls.retired_ca.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(
        toml: &str,
        env: &[(&str, &str)],
        flags: Options,
    ) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::new("test", e.to_string()))?;
        let path = dir.path().join("confmesh.toml");
        std::fs::write(&path, toml).map_err(|e| ConfigError::new("test", e.to_string()))?;
        load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            flags,
        )
    }

    const MINIMAL: &str = r#"
        data_dir = "/var/lib/confmesh"
        [tls]
        ca = "ca.pem"
        cert = "node.pem"
        key = "node.key"
    "#;

    #[test]
    fn the_example_file_is_valid() {
        let example = include_str!("../../confmesh.example.toml");
        let config = load_str(example, &[], Options::default()).expect("example parses");
        assert_eq!(config.name.as_deref(), Some("node-1"));
    }

    #[test]
    fn defaults_bind_localhost() {
        let config = load_str(MINIMAL, &[], Options::default()).expect("valid");
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR.parse().expect("addr"));
        assert_eq!(
            config.gossip_addr,
            DEFAULT_GOSSIP_ADDR.parse().expect("addr")
        );
        assert_eq!(config.preset, Preset::Lan);
        assert_eq!(config.trust_mode, Mode::Enforcing);
    }

    #[test]
    fn flags_override_env_which_overrides_the_file() {
        let toml = format!("name = \"from-file\"\n{MINIMAL}");
        let env = [("CONFMESH_NAME", "from-env"), ("CONFMESH_JOIN", "a:1, b:2")];
        let config = load_str(&toml, &env, Options::default()).expect("valid");
        assert_eq!(config.name.as_deref(), Some("from-env"));
        assert_eq!(config.join, ["a:1", "b:2"]);
        let flags = Options {
            name: Some("from-flag".into()),
            join: vec!["c:3".into()],
            tags: vec![("zone".into(), "eu".into())],
            ..Options::default()
        };
        let config = load_str(&toml, &env, flags).expect("valid");
        assert_eq!(config.name.as_deref(), Some("from-flag"));
        assert_eq!(config.join, ["c:3"]);
        assert_eq!(config.tags.get("zone").map(String::as_str), Some("eu"));
    }

    #[test]
    fn the_api_beyond_loopback_needs_tls_unless_dev() {
        let toml = format!("http_addr = \"0.0.0.0:7947\"\napi_token = \"t\"\n{MINIMAL}");
        let err = load_str(&toml, &[], Options::default()).expect_err("plaintext beyond loopback");
        assert_eq!(err.option, "http_addr");
        assert!(err.message.contains("http_tls"), "{}", err.message);
        let config = load_str(&format!("http_tls = true\n{toml}"), &[], Options::default())
            .expect("TLS beyond loopback");
        assert!(config.http_tls);
        let env = [("CONFMESH_HTTP_TLS", "true")];
        assert!(
            load_str(&toml, &env, Options::default()).is_ok(),
            "from the environment"
        );
        let dev = Options {
            dev: true,
            ..Options::default()
        };
        assert!(
            load_str(&toml, &[], dev).is_ok(),
            "--dev may serve plaintext"
        );
        let local = load_str(MINIMAL, &[], Options::default()).expect("loopback");
        assert!(!local.http_tls, "plaintext on loopback by default");
    }

    #[test]
    fn errors_name_the_option() {
        let cases: [(&str, Options, &str); 7] = [
            ("", Options::default(), "data_dir"),
            ("data_dir = \"d\"", Options::default(), "tls.ca"),
            (
                &format!("http_addr = \"nope\"\n{MINIMAL}"),
                Options::default(),
                "http_addr",
            ),
            (
                &format!("http_addr = \"0.0.0.0:7947\"\n{MINIMAL}"),
                Options::default(),
                "http_addr",
            ),
            (
                &format!("preset = \"moon\"\n{MINIMAL}"),
                Options::default(),
                "preset",
            ),
            (
                &format!("trust_mode = \"lax\"\n{MINIMAL}"),
                Options::default(),
                "trust_mode",
            ),
            (
                MINIMAL,
                Options {
                    join: vec!["no-port".into()],
                    ..Options::default()
                },
                "join",
            ),
        ];
        for (toml, flags, option) in cases {
            let err = load_str(toml, &[], flags).expect_err(option);
            assert_eq!(err.option, option, "{err}");
        }
        let unknown = load_str("colour = \"blue\"", &[], Options::default()).expect_err("unknown");
        assert!(unknown.message.contains("colour"), "{unknown}");
    }

    #[test]
    fn limits_and_timeouts_have_defaults_and_can_be_set() {
        let config = load_str(MINIMAL, &[], Options::default()).expect("valid");
        assert_eq!(config.http_limits, Limits::default());
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(config.cache_bytes, DEFAULT_CACHE_BYTES);
        let toml = format!(
            "http_header_timeout = \"2s\"\nhttp_max_connections = 7\nshutdown_grace = \"1500ms\"\ncache_mb = 8\n{MINIMAL}"
        );
        let env = [
            ("CONFMESH_HTTP_BODY_TIMEOUT", "1m"),
            ("CONFMESH_HISTORY_LEN", "3"),
        ];
        let config = load_str(&toml, &env, Options::default()).expect("valid");
        assert_eq!(config.http_limits.header_timeout, Duration::from_secs(2));
        assert_eq!(config.http_limits.body_timeout, Duration::from_secs(60));
        assert_eq!(config.http_limits.max_connections, 7);
        assert_eq!(config.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(config.cache_bytes, 8 << 20);
        assert_eq!(config.history_len, 3);
        for (line, option) in [
            ("http_body_timeout = \"soon\"", "http_body_timeout"),
            ("shutdown_grace = \"0s\"", "shutdown_grace"),
            ("http_max_connections = 0", "http_max_connections"),
            ("cache_mb = 0", "cache_mb"),
        ] {
            let err =
                load_str(&format!("{line}\n{MINIMAL}"), &[], Options::default()).expect_err(option);
            assert_eq!(err.option, option, "{err}");
        }
    }

    #[test]
    fn dev_needs_nothing_else() {
        let config = load(
            None,
            [],
            Options {
                dev: true,
                ..Options::default()
            },
        )
        .expect("dev");
        assert!(config.dev);
        assert_eq!(config.data_dir, PathBuf::from(DEV_DATA_DIR));
        assert!(config.tls.ca.starts_with(DEV_DATA_DIR));
    }

    #[test]
    fn every_option_comes_from_the_environment_as_text() {
        let env = [
            ("CONFMESH_API_TOKEN", "0123"),
            ("CONFMESH_NAME", "1e10"),
            ("CONFMESH_HISTORY_LEN", "3"),
            ("CONFMESH_WATCH_LOG_LEN", "9"),
            ("CONFMESH_TAGS", "zone=eu, rack=r1"),
            ("CONFMESH_TLS_CA", "other-ca.pem"),
            ("CONFMESH_DEV", "false"),
            // The client commands' variables and the file's are not the agent's options.
            ("CONFMESH_ADDR", "127.0.0.1:1"),
            ("CONFMESH_TOKEN", "t"),
            ("CONFMESH_CONFIG", "x.toml"),
            ("OTHER_VARIABLE", "ignored"),
        ];
        let toml = format!("tags = {{ team = \"core\" }}\n{MINIMAL}");
        let flags = Options {
            tags: vec![("rack".into(), "r2".into())],
            ..Options::default()
        };
        let config = load_str(&toml, &env, flags).expect("valid");
        // A token of digits keeps its leading zero; a name that looks like a float stays text.
        assert_eq!(config.api_token.as_deref(), Some("0123"));
        assert_eq!(config.name.as_deref(), Some("1e10"));
        assert_eq!(config.history_len, 3);
        assert_eq!(config.watch_log_len, 9);
        assert_eq!(config.tls.ca, PathBuf::from("other-ca.pem"));
        assert_eq!(config.tls.cert, PathBuf::from("node.pem"));
        let tags: Vec<(&str, &str)> = config
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(tags, [("rack", "r2"), ("team", "core"), ("zone", "eu")]);
    }

    #[test]
    fn an_unknown_or_malformed_variable_is_refused_by_name() {
        for (name, value) in [
            ("CONFMESH_HISTORY_LENGTH", "3"),
            ("CONFMESH_TLS_CAFILE", "ca.pem"),
            ("CONFMESH_HISTORY_LEN", "many"),
            ("CONFMESH_TAGS", "no-equals-sign"),
        ] {
            let err = load_str(MINIMAL, &[(name, value)], Options::default()).expect_err(name);
            assert_eq!(err.option, name, "{err}");
        }
    }
}
