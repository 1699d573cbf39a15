//! `confmesh agent`: runs a node with its HTTP API until SIGINT or SIGTERM.

use std::path::PathBuf;

use confmesh::agent::{self, AgentError, Options};

use super::Failure;

/// `agent`'s arguments: the file, and every option as a flag.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// A TOML configuration file (see confmesh.example.toml).
    #[arg(long, env = "CONFMESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: Options,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    init_logging();
    let config = agent::config::load(args.config.as_deref(), std::env::vars(), args.options)
        .map_err(|e| Failure::usage(format!("invalid configuration: {e}")))?;
    agent::run(config).await.map_err(|e| match e {
        AgentError::Interrupted => Failure {
            message: e.to_string(),
            code: 130,
        },
        e if e.is_config() => Failure::usage(format!("invalid configuration: {e}")),
        e => Failure::failed(e.to_string()),
    })
}

/// Logs to standard error, `RUST_LOG` choosing what; colours only on a terminal.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,rustls=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
