//! The agent: a [`Mesh`] node with an HTTP/JSON API, for services in any language (feature
//! `agent`, on by default). `confmesh agent` runs it; [`client`] is what the command line
//! uses to talk to it.
//!
//! - [`config`]: the TOML file, environment and flags, checked into an [`AgentConfig`].
//! - `http`: the routes (axum).
//! - `metrics`: Prometheus text.
//! - [`version`]: versions as text.

pub mod client;
pub mod config;
mod http;
mod metrics;
pub mod version;

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicU64},
};

pub use self::config::{AgentConfig, ConfigError, Overrides};
use crate::runtime::{
    Mesh, MeshError,
    tls::{DevCa, TlsConfig, TlsError},
    wall_clock_ms,
};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The TLS material could not be read or made.
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
    /// The HTTP address could not be bound or served.
    #[error("HTTP API on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// Runs an agent until SIGINT or SIGTERM, then leaves the cluster gracefully.
///
/// # Errors
///
/// [`AgentError`] if the node or the API cannot start.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    if config.dev {
        ensure_dev_certificates(&config)?;
    }
    let tls = TlsConfig::from_files(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let mut builder = Mesh::builder()
        .bind(config.gossip_addr)
        .seeds(config.join.clone())
        .tls(tls)
        .data_dir(&config.data_dir)
        .preset(config.preset)
        .expected_members(config.expected_members)
        .history_len(config.history_len)
        .watch_log_len(config.watch_log_len);
    if let Some(name) = &config.name {
        builder = builder.name(name.clone());
    }
    for (k, v) in &config.tags {
        builder = builder.tag(k.clone(), v.clone());
    }
    let mesh = builder.start().await?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| AgentError::Http {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AgentError::Http {
        addr: config.http_addr,
        source,
    })?;
    let api = http::Api {
        mesh: mesh.clone(),
        token: config.api_token.as_deref().map(Arc::from),
        metrics: Arc::new(metrics::Metrics::default()),
        requests: Arc::new(AtomicU64::new(0)),
    };
    tokio::spawn(measure_lag(mesh.clone(), Arc::clone(&api.metrics)));
    println!(
        "confmesh agent {}\n  node:    {} (writer {:016x})\n  gossip:  {} (QUIC)\n  http:    http://{http_addr}\n  data:    {}\n  tls:     ca {}, cert {}, key {}",
        env!("CARGO_PKG_VERSION"),
        config.name.as_deref().unwrap_or("(unnamed)"),
        mesh.id().writer.0,
        mesh.id().addr,
        config.data_dir.display(),
        config.tls.ca.display(),
        config.tls.cert.display(),
        config.tls.key.display(),
    );
    if config.join.is_empty() {
        println!(
            "  cluster: new (no --join); others join through {}",
            mesh.id().addr
        );
    } else {
        println!("  joining: {}", config.join.join(", "));
    }
    tracing::info!(%http_addr, gossip = %mesh.id().addr, "agent started");
    axum::serve(listener, http::router(api))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| AgentError::Http {
            addr: http_addr,
            source,
        })?;
    tracing::info!("shutting down: leaving the cluster");
    mesh.shutdown().await;
    Ok(())
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

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// `--dev`: a throwaway CA and node certificate in `<data_dir>/tls`, made once and reused.
fn ensure_dev_certificates(config: &AgentConfig) -> Result<(), AgentError> {
    let tls = &config.tls;
    if tls.ca.exists() && tls.cert.exists() && tls.key.exists() {
        return Ok(());
    }
    let ca = DevCa::generate("confmesh dev CA")?;
    let node = ca.issue(config.name.as_deref().unwrap_or("dev"))?;
    let dir = tls.ca.parent().unwrap_or(Path::new("."));
    write_private_file(&dir.join("ca.key"), &ca.key_pem())?;
    write_private_file(&tls.ca, &ca.cert_pem())?;
    write_private_file(&tls.cert, &node.chain_pem)?;
    write_private_file(&tls.key, &node.key_pem)?;
    println!(
        "--dev: created a throwaway CA and node certificate in {}",
        dir.display()
    );
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
