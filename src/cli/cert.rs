//! `confmesh cert ca|node|admin`: certificates for a cluster.

use std::{net::IpAddr, path::PathBuf};

use confmesh::{agent, runtime::tls::DevCa};

use super::Failure;

/// `cert`'s subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum Command {
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
    /// Issue an admin certificate: <out>/admin-<name>.pem and <out>/admin-<name>.key (an
    /// Ed25519 key). Its holder proves policy entries (`confmesh acl`); keep it offline.
    Admin {
        /// The admin's name: the principal `admin:<name>`.
        #[arg(long)]
        name: String,
        /// The directory holding ca.pem and ca.key.
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        /// The directory to write to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

pub(crate) fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Ca { out, name } => {
            let ca = DevCa::generate(&name).map_err(|e| Failure::failed(e.to_string()))?;
            write(out.join("ca.key"), &ca.key_pem())?;
            write(out.join("ca.pem"), &ca.cert_pem())
        }
        Command::Node {
            name,
            ip,
            dns,
            ca_dir,
            out,
        } => {
            let issued = read_ca(&ca_dir)?
                .issue_with(&name, &ip, &dns)
                .map_err(|e| Failure::usage(e.to_string()))?;
            write(out.join(format!("{name}.pem")), &issued.chain_pem)?;
            write(out.join(format!("{name}.key")), &issued.key_pem)
        }
        Command::Admin { name, ca_dir, out } => {
            let issued = read_ca(&ca_dir)?
                .issue_admin(&name)
                .map_err(|e| Failure::usage(e.to_string()))?;
            write(out.join(format!("admin-{name}.pem")), &issued.chain_pem)?;
            write(out.join(format!("admin-{name}.key")), &issued.key_pem)
        }
    }
}

/// The CA in `ca_dir` (ca.pem and ca.key).
fn read_ca(ca_dir: &std::path::Path) -> Result<DevCa, Failure> {
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read_to_string(&path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
    };
    DevCa::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(|e| Failure::usage(e.to_string()))
}

/// Writes a key or certificate, readable by the owner only, and says so.
fn write(path: PathBuf, contents: &str) -> Result<(), Failure> {
    agent::write_private_file(&path, contents).map_err(|e| Failure::failed(e.to_string()))?;
    println!("wrote {}", path.display());
    Ok(())
}
