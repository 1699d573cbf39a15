//! The agent's configuration: a TOML file, then environment variables, then flags, each
//! overriding the one before. Every option is documented in `confmesh.example.toml`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::server::Limits;
use crate::runtime::{DEFAULT_CACHE_BYTES, DEFAULT_HISTORY_LEN, DEFAULT_WATCH_LOG_LEN, Preset};

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

/// Paths of the TLS material (PEM).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: Option<PathBuf>,
    /// This node's certificate chain.
    pub cert: Option<PathBuf>,
    /// This node's private key.
    pub key: Option<PathBuf>,
}

/// The configuration file, as written. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the replica is kept.
    pub data_dir: Option<PathBuf>,
    /// The QUIC (UDP) address peers reach this node at.
    pub gossip_addr: Option<String>,
    /// The HTTP API address.
    pub http_addr: Option<String>,
    /// Members to join through (`host:port`, DNS names allowed).
    #[serde(default)]
    pub join: Vec<String>,
    /// The name other members see.
    pub name: Option<String>,
    /// Tags other members see.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `lan` or `wan`.
    pub preset: Option<String>,
    /// About how many nodes the cluster has.
    pub expected_members: Option<usize>,
    /// Versions kept per key for history and rollback.
    pub history_len: Option<usize>,
    /// Changes kept for resumable watches.
    pub watch_log_len: Option<u64>,
    /// A bearer token the HTTP API requires.
    pub api_token: Option<String>,
    /// The most memory, in MiB, the data directory's page cache may take.
    pub cache_mb: Option<usize>,
    /// How long requests in flight get to finish at shutdown (`5s`, `500ms`).
    pub shutdown_grace: Option<String>,
    /// The most HTTP connections open at once.
    pub http_max_connections: Option<usize>,
    /// How long a client may take to send a request's headers (also the keep-alive idle time).
    pub http_header_timeout: Option<String>,
    /// How long a client may take to send a request's body.
    pub http_body_timeout: Option<String>,
    /// How long a response may wait for a client that stopped reading it.
    pub http_write_timeout: Option<String>,
    /// The TLS material.
    #[serde(default)]
    pub tls: TlsFiles,
}

/// Flags given on the command line; they override the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--gossip-addr`.
    pub gossip_addr: Option<String>,
    /// `--http-addr`.
    pub http_addr: Option<String>,
    /// `--join` (repeatable); replaces the file's list when given.
    pub join: Vec<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `--tag k=v` (repeatable); added to the file's tags.
    pub tags: Vec<String>,
    /// `--dev`.
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
}

/// Reads `path` (if any), applies `env` (`CONFMESH_*` variables) and `flags`, and checks the
/// result.
///
/// # Errors
///
/// [`ConfigError`] naming the first option that is unreadable or invalid.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Overrides,
) -> Result<AgentConfig, ConfigError> {
    let mut file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            toml::from_str::<FileConfig>(&text).map_err(|e| {
                ConfigError::new(
                    "--config",
                    format!("{}: {}", path.display(), e.message().trim()),
                )
            })?
        }
        None => FileConfig::default(),
    };
    apply_env(&mut file, env)?;
    resolve(file, flags)
}

fn apply_env(
    file: &mut FileConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(option) = name.strip_prefix("CONFMESH_") else {
            continue;
        };
        match option {
            "DATA_DIR" => file.data_dir = Some(value.into()),
            "GOSSIP_ADDR" => file.gossip_addr = Some(value),
            "HTTP_ADDR" => file.http_addr = Some(value),
            "JOIN" => {
                file.join = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
            "NAME" => file.name = Some(value),
            "PRESET" => file.preset = Some(value),
            "API_TOKEN" => file.api_token = Some(value),
            "TLS_CA" => file.tls.ca = Some(value.into()),
            "TLS_CERT" => file.tls.cert = Some(value.into()),
            "TLS_KEY" => file.tls.key = Some(value.into()),
            "EXPECTED_MEMBERS" => {
                file.expected_members = Some(parse_number("CONFMESH_EXPECTED_MEMBERS", &value)?);
            }
            "HISTORY_LEN" => {
                file.history_len = Some(parse_number("CONFMESH_HISTORY_LEN", &value)?);
            }
            "WATCH_LOG_LEN" => {
                file.watch_log_len = Some(parse_number("CONFMESH_WATCH_LOG_LEN", &value)?);
            }
            "CACHE_MB" => file.cache_mb = Some(parse_number("CONFMESH_CACHE_MB", &value)?),
            "SHUTDOWN_GRACE" => file.shutdown_grace = Some(value),
            "HTTP_MAX_CONNECTIONS" => {
                file.http_max_connections =
                    Some(parse_number("CONFMESH_HTTP_MAX_CONNECTIONS", &value)?);
            }
            "HTTP_HEADER_TIMEOUT" => file.http_header_timeout = Some(value),
            "HTTP_BODY_TIMEOUT" => file.http_body_timeout = Some(value),
            "HTTP_WRITE_TIMEOUT" => file.http_write_timeout = Some(value),
            // Other CONFMESH_ variables (such as the CLI's) are not the agent's.
            _ => {}
        }
    }
    Ok(())
}

fn parse_number<T: std::str::FromStr>(option: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(option, format!("{value:?} is not a number")))
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

fn resolve(file: FileConfig, flags: Overrides) -> Result<AgentConfig, ConfigError> {
    let dev = flags.dev;
    let data_dir = flags
        .data_dir
        .or(file.data_dir)
        .or_else(|| dev.then(|| PathBuf::from(DEV_DATA_DIR)))
        .ok_or_else(|| ConfigError::new("data_dir", "required (or use --dev)"))?;
    let gossip_addr = parse_addr(
        "gossip_addr",
        flags
            .gossip_addr
            .or(file.gossip_addr)
            .as_deref()
            .unwrap_or(DEFAULT_GOSSIP_ADDR),
    )?;
    let http_addr = parse_addr(
        "http_addr",
        flags
            .http_addr
            .or(file.http_addr)
            .as_deref()
            .unwrap_or(DEFAULT_HTTP_ADDR),
    )?;
    let api_token = file.api_token.filter(|t| !t.is_empty());
    if !http_addr.ip().is_loopback() && api_token.is_none() {
        return Err(ConfigError::new(
            "http_addr",
            format!("{http_addr} is reachable from other hosts; set api_token to serve there"),
        ));
    }
    let join = if flags.join.is_empty() {
        file.join
    } else {
        flags.join
    };
    for seed in &join {
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
    let mut tags = file.tags;
    for tag in flags.tags {
        let (k, v) = tag
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ConfigError::new("--tag", format!("{tag:?} is not `key=value`")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let preset = match file.preset.as_deref().unwrap_or("lan") {
        "lan" => Preset::Lan,
        "wan" => Preset::Wan,
        other => {
            return Err(ConfigError::new(
                "preset",
                format!("{other:?} is neither \"lan\" nor \"wan\""),
            ));
        }
    };
    let expected_members = file.expected_members.unwrap_or(16);
    if expected_members == 0 {
        return Err(ConfigError::new("expected_members", "must be at least 1"));
    }
    let history_len = file.history_len.unwrap_or(DEFAULT_HISTORY_LEN);
    if history_len == 0 {
        return Err(ConfigError::new("history_len", "must be at least 1"));
    }
    let watch_log_len = file.watch_log_len.unwrap_or(DEFAULT_WATCH_LOG_LEN);
    if watch_log_len == 0 {
        return Err(ConfigError::new("watch_log_len", "must be at least 1"));
    }
    let cache_bytes = match file.cache_mb {
        None => DEFAULT_CACHE_BYTES,
        Some(0) => return Err(ConfigError::new("cache_mb", "must be at least 1")),
        Some(mb) => mb.checked_mul(1 << 20).ok_or_else(|| {
            ConfigError::new(
                "cache_mb",
                format!("{mb} MiB is more than this machine can address"),
            )
        })?,
    };
    let defaults = Limits::default();
    let http_limits = Limits {
        max_connections: match file.http_max_connections {
            Some(0) => {
                return Err(ConfigError::new(
                    "http_max_connections",
                    "must be at least 1",
                ));
            }
            n => n.unwrap_or(defaults.max_connections),
        },
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
    };
    let shutdown_grace = parse_duration(
        "shutdown_grace",
        file.shutdown_grace.as_deref(),
        DEFAULT_SHUTDOWN_GRACE,
    )?;
    let tls = if dev {
        let dir = data_dir.join("tls");
        ResolvedTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        }
    } else {
        let need = |path: Option<PathBuf>, option: &str| {
            path.ok_or_else(|| ConfigError::new(option, "required (or use --dev)"))
        };
        ResolvedTls {
            ca: need(file.tls.ca, "tls.ca")?,
            cert: need(file.tls.cert, "tls.cert")?,
            key: need(file.tls.key, "tls.key")?,
        }
    };
    Ok(AgentConfig {
        data_dir,
        gossip_addr,
        http_addr,
        join,
        name: flags.name.or(file.name).filter(|n| !n.is_empty()),
        tags,
        preset,
        expected_members,
        history_len,
        watch_log_len,
        api_token,
        cache_bytes,
        shutdown_grace,
        http_limits,
        tls,
        dev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(
        toml: &str,
        env: &[(&str, &str)],
        flags: Overrides,
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
        let config = load_str(example, &[], Overrides::default()).expect("example parses");
        assert_eq!(config.name.as_deref(), Some("node-1"));
    }

    #[test]
    fn defaults_bind_localhost() {
        let config = load_str(MINIMAL, &[], Overrides::default()).expect("valid");
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR.parse().expect("addr"));
        assert_eq!(
            config.gossip_addr,
            DEFAULT_GOSSIP_ADDR.parse().expect("addr")
        );
        assert_eq!(config.preset, Preset::Lan);
    }

    #[test]
    fn flags_override_env_which_overrides_the_file() {
        let toml = format!("name = \"from-file\"\n{MINIMAL}");
        let env = [("CONFMESH_NAME", "from-env"), ("CONFMESH_JOIN", "a:1, b:2")];
        let config = load_str(&toml, &env, Overrides::default()).expect("valid");
        assert_eq!(config.name.as_deref(), Some("from-env"));
        assert_eq!(config.join, ["a:1", "b:2"]);
        let flags = Overrides {
            name: Some("from-flag".into()),
            join: vec!["c:3".into()],
            tags: vec!["zone=eu".into()],
            ..Overrides::default()
        };
        let config = load_str(&toml, &env, flags).expect("valid");
        assert_eq!(config.name.as_deref(), Some("from-flag"));
        assert_eq!(config.join, ["c:3"]);
        assert_eq!(config.tags.get("zone").map(String::as_str), Some("eu"));
    }

    #[test]
    fn errors_name_the_option() {
        let cases: [(&str, Overrides, &str); 6] = [
            ("", Overrides::default(), "data_dir"),
            ("data_dir = \"d\"", Overrides::default(), "tls.ca"),
            (
                &format!("http_addr = \"nope\"\n{MINIMAL}"),
                Overrides::default(),
                "http_addr",
            ),
            (
                &format!("http_addr = \"0.0.0.0:7947\"\n{MINIMAL}"),
                Overrides::default(),
                "http_addr",
            ),
            (
                &format!("preset = \"moon\"\n{MINIMAL}"),
                Overrides::default(),
                "preset",
            ),
            (
                MINIMAL,
                Overrides {
                    join: vec!["no-port".into()],
                    ..Overrides::default()
                },
                "join",
            ),
        ];
        for (toml, flags, option) in cases {
            let err = load_str(toml, &[], flags).expect_err(option);
            assert_eq!(err.option, option, "{err}");
        }
        let unknown =
            load_str("colour = \"blue\"", &[], Overrides::default()).expect_err("unknown");
        assert!(unknown.message.contains("colour"), "{unknown}");
    }

    #[test]
    fn limits_and_timeouts_have_defaults_and_can_be_set() {
        let config = load_str(MINIMAL, &[], Overrides::default()).expect("valid");
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
        let config = load_str(&toml, &env, Overrides::default()).expect("valid");
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
            let err = load_str(&format!("{line}\n{MINIMAL}"), &[], Overrides::default())
                .expect_err(option);
            assert_eq!(err.option, option, "{err}");
        }
    }

    #[test]
    fn dev_needs_nothing_else() {
        let config = load(
            None,
            [],
            Overrides {
                dev: true,
                ..Overrides::default()
            },
        )
        .expect("dev");
        assert!(config.dev);
        assert_eq!(config.data_dir, PathBuf::from(DEV_DATA_DIR));
        assert!(config.tls.ca.starts_with(DEV_DATA_DIR));
    }
}
