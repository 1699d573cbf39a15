//! The `confmesh` command: the agent, a client of its API, and certificate issuing.
//!
//! Exit codes: 0 success; 1 the operation failed (not found, conflict, unreachable agent);
//! 2 invalid usage or configuration (a start-up failure names the option at fault); 130 the
//! agent was stopped by a second signal while shutting down.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use confmesh::{
    agent::{
        self, Overrides,
        client::{Client, ClientError, Reply, encode_path, encode_query},
    },
    runtime::tls::DevCa,
};
use hyper::{Method, StatusCode};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "confmesh",
    version,
    about = "A gossip-based, leaderless configuration mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the client commands find the agent.
#[derive(clap::Args)]
struct Target {
    /// The agent's HTTP address.
    #[arg(long, env = "CONFMESH_ADDR", default_value = agent::config::DEFAULT_HTTP_ADDR, global = true)]
    addr: String,
    /// The agent's API token, if it requires one.
    #[arg(long, env = "CONFMESH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the agent's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with its HTTP API.
    Agent {
        /// A TOML configuration file (see confmesh.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Development mode: a throwaway CA, localhost, ./confmesh-dev-data unless --data-dir.
        #[arg(long)]
        dev: bool,
        /// Where the replica is kept.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The QUIC (UDP) address to listen on.
        #[arg(long)]
        gossip_addr: Option<String>,
        /// The HTTP API address (default 127.0.0.1:7947).
        #[arg(long)]
        http_addr: Option<String>,
        /// A member to join through, `host:port` (repeatable; DNS names allowed).
        #[arg(long)]
        join: Vec<String>,
        /// The name other members see.
        #[arg(long)]
        name: Option<String>,
        /// A tag other members see, `key=value` (repeatable).
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Write a value (from the argument, or standard input when it is `-` or absent).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
        /// Only if the current version is this one (`none`: only if absent).
        #[arg(long)]
        if_version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Read a value.
    Get {
        /// The key.
        key: String,
        /// Print only the value's bytes.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// List keys under a prefix.
    Ls {
        /// The prefix (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print changes under a prefix as they happen (Ctrl-C to stop).
    Watch {
        /// The prefix (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Resume after this cursor (printed with each change).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the members.
    Members {
        #[command(flatten)]
        target: Target,
    },
    /// The versions the agent has seen of a key.
    History {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Restore the value a key had at a version (from `history`).
    Rollback {
        /// The key.
        key: String,
        /// The version to restore.
        version: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make certificates for a cluster.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create a cluster CA: <out>/ca.pem and <out>/ca.key (keep the key offline).
    Ca {
        /// The directory to write to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "confmesh cluster CA")]
        name: String,
    },
    /// Issue a node certificate: <out>/<name>.pem and <out>/<name>.key.
    Node {
        /// The node's name (also a DNS name in the certificate).
        #[arg(long)]
        name: String,
        /// An IP address the node is reached at (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// A DNS name the node is reached at (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// The directory holding ca.pem and ca.key.
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        /// The directory to write to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// A failed command: what to print and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

fn fail(message: impl Into<String>, code: u8) -> Failure {
    Failure {
        message: message.into(),
        code,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("confmesh: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Tasks still running (a connection the grace period cut off, a second signal) are not
    // waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("confmesh: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent {
            config,
            dev,
            data_dir,
            gossip_addr,
            http_addr,
            join,
            name,
            tag,
        } => {
            init_logging();
            let flags = Overrides {
                data_dir,
                gossip_addr,
                http_addr,
                join,
                name,
                tags: tag,
                dev,
            };
            let config = agent::config::load(config.as_deref(), std::env::vars(), flags)
                .map_err(|e| fail(format!("invalid configuration: {e}"), 2))?;
            agent::run(config).await.map_err(|e| match e {
                agent::AgentError::Interrupted => fail(e.to_string(), 130),
                e if e.is_config() => fail(format!("invalid configuration: {e}"), 2),
                e => fail(e.to_string(), 1),
            })
        }
        Command::Put {
            key,
            value,
            if_version,
            target,
        } => {
            let value = match value.as_deref() {
                Some("-") | None => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .map_err(|e| fail(format!("cannot read standard input: {e}"), 1))?;
                    Bytes::from(buf)
                }
                Some(v) => Bytes::from(v.to_string()),
            };
            let query = if_version
                .map(|v| format!("?if_version={}", encode_query(&v)))
                .unwrap_or_default();
            let path = format!("/v1/kv/{}{query}", encode_path(&key));
            let reply = call(&target, Method::PUT, &path, value).await?;
            print(&target, &reply, |v| {
                format!("{} = version {}", field(v, "key"), field(v, "version"))
            })
        }
        Command::Get { key, raw, target } => {
            let query = if raw { "?raw" } else { "" };
            let reply = call(
                &target,
                Method::GET,
                &format!("/v1/kv/{}{query}", encode_path(&key)),
                Bytes::new(),
            )
            .await?;
            if raw {
                std::io::Write::write_all(&mut std::io::stdout(), &reply.body)
                    .map_err(|e| fail(e.to_string(), 1))?;
                return Ok(());
            }
            print(&target, &reply, |v| {
                let mut out = format!(
                    "{}\n(version {}, writer {}, time {} ms)",
                    value_text(v),
                    field(v, "version"),
                    field(v, "writer"),
                    field(v, "time_ms")
                );
                for sibling in v["siblings"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\nsibling: {} (version {})",
                        value_text(sibling),
                        field(sibling, "version")
                    ));
                }
                out
            })
        }
        Command::Del { key, target } => {
            let reply = call(
                &target,
                Method::DELETE,
                &format!("/v1/kv/{}", encode_path(&key)),
                Bytes::new(),
            )
            .await?;
            print(&target, &reply, |v| {
                if v["deleted"].as_bool() == Some(true) {
                    format!(
                        "deleted {} (version {})",
                        field(v, "key"),
                        field(v, "version")
                    )
                } else {
                    format!("{} was not there", field(v, "key"))
                }
            })
        }
        Command::Ls { prefix, target } => {
            let mut after: Option<String> = None;
            let mut all = Vec::new();
            loop {
                let mut path = format!("/v1/kv?prefix={}", encode_query(&prefix));
                if let Some(after) = &after {
                    path.push_str(&format!("&after={}", encode_query(after)));
                }
                let reply = call(&target, Method::GET, &path, Bytes::new()).await?;
                let page: Value = json(&reply)?;
                all.extend(page["keys"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
            if target.json {
                println!("{}", Value::Array(all));
            } else {
                for entry in all {
                    println!("{}\t{}", field(&entry, "key"), field(&entry, "version"));
                }
            }
            Ok(())
        }
        Command::Watch {
            prefix,
            from,
            target,
        } => watch(&target, &prefix, from).await,
        Command::Members { target } => {
            let reply = call(&target, Method::GET, "/v1/members", Bytes::new()).await?;
            print(&target, &reply, |v| {
                v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        format!(
                            "{}\t{}\t{}\t{}",
                            field(m, "name"),
                            field(m, "addr"),
                            field(m, "state"),
                            m["tags"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::History { key, target } => {
            let reply = call(
                &target,
                Method::GET,
                &format!("/v1/history/{}", encode_path(&key)),
                Bytes::new(),
            )
            .await?;
            print(&target, &reply, |v| {
                v["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        format!(
                            "{}\t{}\t{}",
                            field(h, "version"),
                            field(h, "time_ms"),
                            if h["deleted"].as_bool() == Some(true) {
                                "<deleted>".to_string()
                            } else {
                                value_text(h)
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Rollback {
            key,
            version,
            target,
        } => {
            let path = format!(
                "/v1/rollback/{}?version={}",
                encode_path(&key),
                encode_query(&version)
            );
            let reply = call(&target, Method::POST, &path, Bytes::new()).await?;
            print(&target, &reply, |v| {
                format!(
                    "{} restored to {} (new version {})",
                    field(v, "key"),
                    field(v, "restored"),
                    field(v, "version")
                )
            })
        }
        Command::Cert(cert) => run_cert(cert),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,rustls=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn call(target: &Target, method: Method, path: &str, body: Bytes) -> Result<Reply, Failure> {
    let client =
        Client::new(&target.addr, target.token.clone()).map_err(|e| fail(e.to_string(), 2))?;
    let reply = client.send(method, path, body).await?;
    if reply.status.is_success() {
        Ok(reply)
    } else {
        let code = if reply.status == StatusCode::BAD_REQUEST {
            2
        } else {
            1
        };
        Err(fail(
            format!("{} ({})", reply.error_message(), reply.status),
            code,
        ))
    }
}

fn json(reply: &Reply) -> Result<Value, Failure> {
    serde_json::from_slice(&reply.body).map_err(|e| fail(format!("unexpected answer: {e}"), 1))
}

fn print(target: &Target, reply: &Reply, human: impl Fn(&Value) -> String) -> Result<(), Failure> {
    let value = json(reply)?;
    if target.json {
        println!("{value}");
    } else {
        println!("{}", human(&value));
    }
    Ok(())
}

fn field(v: &Value, name: &str) -> String {
    match &v[name] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn value_text(v: &Value) -> String {
    match v["value"].as_str() {
        Some(text) => text.to_string(),
        None => format!(
            "<{} bytes, base64 {}>",
            v["value_base64"].as_str().map_or(0, |b| b.len() * 3 / 4),
            field(v, "value_base64")
        ),
    }
}

async fn watch(target: &Target, prefix: &str, from: Option<String>) -> Result<(), Failure> {
    use http_body_util::BodyExt;

    let client =
        Client::new(&target.addr, target.token.clone()).map_err(|e| fail(e.to_string(), 2))?;
    let headers: Vec<(&str, &str)> = from
        .as_deref()
        .map(|c| ("last-event-id", c))
        .into_iter()
        .collect();
    let path = format!("/v1/watch?prefix={}", encode_query(prefix));
    let response = client
        .open(Method::GET, &path, Bytes::new(), &headers)
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reply = Reply { status, body };
        return Err(fail(format!("{} ({status})", reply.error_message()), 1));
    }
    let mut body = response.into_body();
    let mut buffer = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(format!("watch interrupted: {e}"), 1))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            handle_sse_event(target, &event)?;
        }
    }
    Ok(())
}

fn handle_sse_event(target: &Target, event: &str) -> Result<(), Failure> {
    let mut kind = "message";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    if data.is_empty() {
        return Ok(());
    }
    let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
    match kind {
        "change" if target.json => println!("{value}"),
        "change" => {
            let new = &value["new"];
            let text = if new.is_null() {
                "<deleted>".to_string()
            } else {
                value_text(new)
            };
            println!(
                "{} = {}\t(cursor {})",
                field(&value, "key"),
                text,
                field(&value, "cursor")
            );
        }
        _ => return Err(fail(field(&value, "error"), 1)),
    }
    Ok(())
}

fn run_cert(command: CertCommand) -> Result<(), Failure> {
    let write = |path: PathBuf, contents: &str| {
        agent::write_private_file(&path, contents).map_err(|e| fail(e.to_string(), 1))?;
        println!("wrote {}", path.display());
        Ok::<(), Failure>(())
    };
    match command {
        CertCommand::Ca { out, name } => {
            let ca = DevCa::generate(&name).map_err(|e| fail(e.to_string(), 1))?;
            write(out.join("ca.key"), &ca.key_pem())?;
            write(out.join("ca.pem"), &ca.cert_pem())
        }
        CertCommand::Node {
            name,
            ip,
            dns,
            ca_dir,
            out,
        } => {
            let read = |file: &str| {
                let path = ca_dir.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display()), 2))
            };
            let ca = DevCa::from_pem(&read("ca.pem")?, &read("ca.key")?)
                .map_err(|e| fail(e.to_string(), 2))?;
            let issued = ca
                .issue_with(&name, &ip, &dns)
                .map_err(|e| fail(e.to_string(), 2))?;
            write(out.join(format!("{name}.pem")), &issued.chain_pem)?;
            write(out.join(format!("{name}.key")), &issued.key_pem)
        }
    }
}
