//! The agent: a [`Mesh`] node with an HTTP/JSON API, for services in any language (feature
//! `agent`, on by default). `confmesh agent` runs it; [`crate::api`] holds the API's types
//! and the client the command line uses to talk to it.
//!
//! - [`config`]: the TOML file, environment and flags, checked into an [`AgentConfig`].
//! - `http`: the routes (axum).
//! - `server`: the listener: connection cap, timeouts, JSON for hyper's own errors, drain.
//! - `metrics`: Prometheus text.
//! - `fuzz`: the HTTP fuzz target's server ([`crate::fuzzing::HttpServer`]).

pub mod config;
pub(crate) mod fuzz;
mod http;
mod metrics;
mod server;

use std::{path::Path, sync::Arc, time::Duration};

use tokio::sync::watch;

pub use self::{
    config::{AgentConfig, ConfigError, Options},
    server::Limits,
};
use crate::runtime::{
    Mesh, MeshError, StorageError, TransportError,
    tls::{DevCa, TlsConfig, TlsError},
    wall_clock_ms,
};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// An option names something unusable: a port in use, a data directory that cannot be
    /// opened, TLS files that cannot be read or do not fit. Nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Generating the `--dev` certificates failed.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Writing the `--dev` certificates failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The node could not start.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The agent could not listen for SIGINT or SIGTERM; nothing was started.
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    /// A second SIGINT or SIGTERM came while shutting down: the agent stopped without
    /// finishing (peers see a failure instead of a leave; the replica is safe on disk).
    #[error("interrupted while shutting down")]
    Interrupted,
}

impl AgentError {
    /// Whether the configuration is at fault (the command exits 2), rather than the run.
    pub fn is_config(&self) -> bool {
        matches!(self, AgentError::Config(_))
    }
}

/// The longest leaving the cluster may take at shutdown, after HTTP has drained.
const LEAVE_LIMIT: Duration = Duration::from_secs(5);

/// Runs an agent until SIGINT or SIGTERM, then shuts down: the API stops accepting, event
/// streams and blocking queries end with a last answer, the requests in flight finish (for at
/// most the configured grace period), and the node leaves the cluster (which the node bounds
/// to about 3 s). A second signal stops at once with [`AgentError::Interrupted`].
///
/// # Errors
///
/// [`AgentError::Config`] naming the option if the node or the API cannot start with it,
/// [`AgentError::Interrupted`] on a second signal.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let mut signals = Signals::new()?;
    let mesh = start_mesh(&config).await?;
    let listener = match tokio::net::TcpListener::bind(config.http_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            mesh.shutdown().await;
            return Err(ConfigError::new(
                "http_addr",
                format!("cannot listen on {}: {e}", config.http_addr),
            )
            .into());
        }
    };
    let https = match config.http_tls {
        false => None,
        true => match load_tls(&config).and_then(|tls| {
            tls.https_server_config()
                .map_err(|e| ConfigError::new("http_tls", e.to_string()).into())
        }) {
            Ok(server) => Some(tokio_rustls::TlsAcceptor::from(server)),
            Err(e) => {
                mesh.shutdown().await;
                return Err(e);
            }
        },
    };
    let http_addr = listener.local_addr().unwrap_or(config.http_addr);
    let limits = config.http_limits.fitted_to_fd_limit();
    let (stop, stopping) = watch::channel(false);
    let api = http::Api::new(http::ApiState {
        mesh: mesh.clone(),
        token: config.api_token.as_deref().map(Arc::from),
        metrics: Arc::new(metrics::Metrics::default()),
        limits,
        stop: stopping.clone(),
    });
    tokio::spawn(measure_lag(mesh.clone(), Arc::clone(&api.metrics)));
    announce(&config, &mesh, http_addr);
    // Said at every start: without a root, any certified node may write every key.
    if let Ok(health) = mesh.health().await {
        if health.policy_root {
            say(format_args!("  policy:  rooted (confmesh acl show)"));
        } else {
            say(format_args!(
                "  policy:  none: every certified node may write every key (confmesh acl init)"
            ));
        }
    }
    let grace = config.shutdown_grace;
    let server = tokio::spawn(server::serve(
        listener,
        https,
        http::router(api),
        limits,
        stopping,
        grace,
    ));
    signals.next().await;
    tracing::info!(
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "shutting down: draining HTTP, then leaving the cluster (a second signal stops at once)"
    );
    let _ = stop.send(true);
    let graceful = async {
        let _ = server.await;
        // The node bounds its leave (about 3 s at most); this only guards against a stuck disk.
        if tokio::time::timeout(LEAVE_LIMIT, mesh.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("leaving the cluster did not finish; stopping anyway");
        } else {
            tracing::info!("left the cluster");
        }
    };
    tokio::select! {
        () = graceful => {
            tracing::info!("stopped");
            Ok(())
        }
        () = signals.next() => {
            tracing::warn!("second signal: stopping at once");
            Err(AgentError::Interrupted)
        }
    }
}

/// Makes the `--dev` certificates if needed, reads the TLS files and starts the node.
async fn start_mesh(config: &AgentConfig) -> Result<Mesh, AgentError> {
    if config.dev {
        ensure_dev_certificates(config).map_err(|e| match e {
            AgentError::Write { .. } => ConfigError::new("data_dir", e.to_string()).into(),
            e => e,
        })?;
    }
    let tls = load_tls(config)?;
    let mut builder = Mesh::builder()
        .bind(config.gossip_addr)
        .seeds(config.join.clone())
        .tls(tls)
        .data_dir(&config.data_dir)
        .preset(config.preset)
        .trust_mode(config.trust_mode)
        .expected_members(config.expected_members)
        .history_len(config.history_len)
        .watch_log_len(config.watch_log_len)
        .cache_bytes(config.cache_bytes);
    if let Some(name) = &config.name {
        builder = builder.name(name.clone());
    }
    for (k, v) in &config.tags {
        builder = builder.tag(k.clone(), v.clone());
    }
    builder.start().await.map_err(start_error)
}

/// Tells whoever started the agent where it listens and what it uses.
fn announce(config: &AgentConfig, mesh: &Mesh, http_addr: std::net::SocketAddr) {
    say(format_args!(
        "confmesh agent {}\n  node:    {} (writer {:016x})\n  gossip:  {} (QUIC)\n  http:    {scheme}://{http_addr}\n  data:    {}\n  tls:     ca {}, cert {}, key {}",
        env!("CARGO_PKG_VERSION"),
        config.name.as_deref().unwrap_or("(unnamed)"),
        mesh.id().writer.0,
        mesh.id().addr,
        config.data_dir.display(),
        config.tls.ca.display(),
        config.tls.cert.display(),
        config.tls.key.display(),
        scheme = if config.http_tls { "https" } else { "http" },
    ));
    if config.join.is_empty() {
        say(format_args!(
            "  cluster: new (no --join); others join through {}",
            mesh.id().addr
        ));
    } else {
        say(format_args!("  joining: {}", config.join.join(", ")));
    }
    tracing::info!(%http_addr, gossip = %mesh.id().addr, "agent started");
}

/// Prints a line on standard output for whoever started the agent; a closed output (a
/// reader that went away) is not a reason to stop serving, so errors are ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Reads the TLS files, naming the option of the one at fault.
fn load_tls(config: &AgentConfig) -> Result<TlsConfig, AgentError> {
    let tls = &config.tls;
    let read = |path: &Path, option: &str| {
        std::fs::read(path)
            .map_err(|e| ConfigError::new(option, format!("cannot read {}: {e}", path.display())))
    };
    let (ca, cert, key) = (
        read(&tls.ca, "tls.ca")?,
        read(&tls.cert, "tls.cert")?,
        read(&tls.key, "tls.key")?,
    );
    let retired = match &tls.retired_ca {
        Some(path) => Some(read(path, "tls.retired_ca")?),
        None => None,
    };
    let loaded = TlsConfig::from_pem(&ca, &cert, &key).and_then(|t| match &retired {
        Some(pem) => t.with_retired_ca(pem),
        None => Ok(t),
    });
    loaded.map_err(|e| {
        let option = match &e {
            TlsError::Pem {
                what: "CA certificate",
                ..
            } => "tls.ca",
            TlsError::Pem {
                what: "private key",
                ..
            } => "tls.key",
            TlsError::Pem {
                what: "retired CA certificate",
                ..
            } => "tls.retired_ca",
            _ => "tls.cert",
        };
        ConfigError::new(option, e.to_string()).into()
    })
}

/// A failed start, naming the option at fault where one is.
fn start_error(e: MeshError) -> AgentError {
    let option = match &e {
        MeshError::Storage(
            StorageError::Directory { .. }
            | StorageError::InUse(_)
            | StorageError::WriterMismatch { .. }
            | StorageError::Corrupt(_)
            | StorageError::NewerFormat { .. }
            | StorageError::Database(_),
        ) => "data_dir",
        // The age identity in the data directory (`age.key`).
        MeshError::Secret(_) => "data_dir",
        MeshError::Transport(TransportError::Bind { .. }) => "gossip_addr",
        // The certificate and key were read, but do not fit together.
        MeshError::Transport(TransportError::Tls(_)) => "tls.key",
        MeshError::Config(_) => "name/tags",
        _ => return AgentError::Mesh(e),
    };
    ConfigError::new(option, e.to_string()).into()
}

/// SIGINT (Ctrl-C) and SIGTERM, as many times as they come.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening, so that no signal is missed from now on.
    fn new() -> Result<Signals, AgentError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind| signal(kind).map_err(AgentError::Signals);
            Ok(Signals {
                interrupt: listen(SignalKind::interrupt())?,
                terminate: listen(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Feeds the replication-lag histogram from every change another node made.
async fn measure_lag(mesh: Mesh, metrics: Arc<metrics::Metrics>) {
    let me = mesh.id().writer;
    let Ok(mut watch) = mesh.watch("", None) else {
        return;
    };
    while let Some(Ok(change)) = watch.next().await {
        if change.origin == me {
            continue;
        }
        let stamped = change
            .new
            .as_ref()
            .or(change.old.as_ref())
            .map(|v| v.timestamp.wall_ms());
        if let Some(stamped) = stamped {
            metrics.record_remote_change(wall_clock_ms().saturating_sub(stamped));
        }
    }
}

/// `--dev`: a throwaway CA and node certificate in `<data_dir>/tls`, made once and reused.
fn ensure_dev_certificates(config: &AgentConfig) -> Result<(), AgentError> {
    let tls = &config.tls;
    if tls.ca.exists() && tls.cert.exists() && tls.key.exists() {
        return Ok(());
    }
    let ca = DevCa::generate("confmesh dev CA")?;
    // Named for this host too, so `--http-tls` serves clients of 127.0.0.1 and localhost.
    let loopback = [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    let node = ca.issue_with(
        config.name.as_deref().unwrap_or("dev"),
        &loopback,
        &["localhost".to_string()],
    )?;
    let dir = tls.ca.parent().unwrap_or(Path::new("."));
    write_private_file(&dir.join("ca.key"), &ca.key_pem())?;
    write_private_file(&tls.ca, &ca.cert_pem())?;
    write_private_file(&tls.cert, &node.chain_pem)?;
    write_private_file(&tls.key, &node.key_pem)?;
    say(format_args!(
        "--dev: created a throwaway CA and node certificate in {}",
        dir.display()
    ));
    Ok(())
}

/// Writes `contents` to `path` (creating its directory), readable by the owner only: for keys
/// and certificates.
///
/// # Errors
///
/// [`AgentError::Write`] naming the file.
pub fn write_private_file(path: &Path, contents: &str) -> Result<(), AgentError> {
    let error = |source| AgentError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(error)
}
