//! The `confmesh` command line: one file per command, each parsing its arguments, calling the
//! agent through [`confmesh::api::Client`] (or the library) and printing the answer.

mod acl;
mod agent;
mod audit;
mod cert;
mod del;
mod get;
mod history;
mod ls;
mod members;
mod output;
mod put;
mod rollback;
mod secret;
mod token;
mod trust;
mod watch;

use clap::{Parser, Subcommand};
use confmesh::api::{Client, ClientError};

/// The command line.
#[derive(Parser)]
#[command(
    name = "confmesh",
    version,
    about = "A gossip-based, leaderless configuration mesh"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with its HTTP API.
    Agent(Box<agent::Args>),
    /// Write a value (from the argument, or standard input when it is `-` or absent).
    Put(put::Args),
    /// Read a value.
    Get(get::Args),
    /// Delete a key.
    Del(del::Args),
    /// List keys under a prefix.
    Ls(ls::Args),
    /// Print changes under a prefix as they happen (Ctrl-C to stop).
    Watch(watch::Args),
    /// List the members.
    Members(members::Args),
    /// The versions the agent has seen of a key.
    History(history::Args),
    /// Restore the value a key had at a version (from `history`).
    Rollback(rollback::Args),
    /// Recent changes under a prefix, newest first: time (ms), key, version, written or
    /// deleted, author, message (this agent's own bounded history).
    Audit(audit::Args),
    /// Make certificates for a cluster.
    #[command(subcommand)]
    Cert(cert::Command),
    /// The policy every replica enforces: who may write which keys (an admin certificate
    /// proves each entry).
    #[command(subcommand)]
    Acl(acl::Command),
    /// API tokens: what a client presents to an agent, with the rights the policy grants it.
    #[command(subcommand)]
    Token(token::Command),
    /// Secret prefixes: values sealed to a key only the nodes named can open (an admin
    /// certificate proves each key).
    #[command(subcommand)]
    Secret(secret::Command),
    /// Signed versions: the node's trust state, and the switch-over from unsigned versions.
    #[command(subcommand)]
    Trust(trust::Command),
}

/// Who asks for a change and why: signed with it, shown in every replica's history.
#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// Who asks for the change (at most 256 bytes).
    #[arg(long)]
    author: Option<String>,
    /// Why (at most 1 KiB).
    #[arg(long, short = 'm')]
    message: Option<String>,
}

/// Where the client commands find the agent, and how they print.
#[derive(clap::Args)]
pub(crate) struct Target {
    /// The agent's HTTP address.
    #[arg(long, env = "CONFMESH_ADDR", default_value = confmesh::agent::config::DEFAULT_HTTP_ADDR, global = true)]
    addr: String,
    /// The agent's API token, if it requires one. Prefer `CONFMESH_TOKEN` or `--token-file`:
    /// a flag shows in the process list.
    #[arg(long, env = "CONFMESH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the agent's API token (its first line).
    #[arg(
        long,
        env = "CONFMESH_TOKEN_FILE",
        value_name = "PATH",
        global = true,
        conflicts_with = "token"
    )]
    token_file: Option<std::path::PathBuf>,
    /// The cluster CA certificate (PEM), to check an `https://` agent (one with `http_tls`).
    #[arg(long, env = "CONFMESH_CA_CERT", value_name = "PATH", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Print the agent's JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Target {
    /// A client of the agent.
    pub(crate) fn client(&self) -> Result<Client, Failure> {
        let ca = match &self.ca_cert {
            None => None,
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
            ),
        };
        let token = match &self.token_file {
            None => self.token.clone(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    return Err(Failure::usage(format!(
                        "{} holds no token on its first line",
                        path.display()
                    )));
                }
                Some(token)
            }
        };
        Client::with_ca(&self.addr, token, ca.as_deref()).map_err(Failure::from)
    }
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl Failure {
    /// Exit code 1: the operation failed.
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    /// Exit code 2: invalid usage or configuration.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        if e.is_usage() {
            Failure::usage(e.to_string())
        } else {
            Failure::failed(e.to_string())
        }
    }
}

impl Cli {
    /// Runs the command.
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self.command {
            Command::Agent(args) => agent::run(*args).await,
            Command::Put(args) => put::run(args).await,
            Command::Get(args) => get::run(args).await,
            Command::Del(args) => del::run(args).await,
            Command::Ls(args) => ls::run(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Members(args) => members::run(args).await,
            Command::History(args) => history::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Rollback(args) => rollback::run(args).await,
            Command::Cert(command) => cert::run(command),
            Command::Acl(command) => acl::run(command).await,
            Command::Token(command) => token::run(command).await,
            Command::Secret(command) => secret::run(command).await,
            Command::Trust(command) => trust::run(command).await,
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the whole command line (conflicting names, bad defaults), which it
    /// otherwise makes only when a command is parsed in a debug build.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
