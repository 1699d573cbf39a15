//! `confmesh token`: API tokens held in the policy (docs/PROTOCOL.md §8.7). An admin
//! certificate proves each entry, as for `confmesh acl`; the token's secret is drawn here and
//! shown once, and the mesh keeps only its hash.

use std::{io::Write as _, path::PathBuf, time::Duration};

use clap::Subcommand;
use confmesh::{
    api::parse_clock,
    proto::trust::{
        policy::{Right, Rule},
        token::{TokenSecret, token_principal},
    },
};
use serde::Serialize;

use super::{
    Failure, Target,
    acl::{AdminArgs, principal, prove_and_write, right_of},
    output,
};

/// `token`'s subcommands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an API token with the rights given, and print it once (or write it to `--out`).
    /// Clients present it as `Authorization: Bearer cmt_...`, or to this command line in
    /// `CONFMESH_TOKEN` or `--token-file`.
    Create {
        /// A name for people: 1 to 64 letters, digits, `.`, `-`, `_`, `@`.
        #[arg(long)]
        name: String,
        /// A right it holds, `RIGHT:PREFIX` (`read:app/`, `write:app/web/`, `read:` for every
        /// key); repeatable. Without one it may do nothing yet: `acl grant token:ID ...` later.
        #[arg(long = "grant", value_name = "RIGHT:PREFIX")]
        grants: Vec<String>,
        /// How long agents accept it (`90d`, `12h`); without it, until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
    /// The tokens the policy holds (never their secrets), with the entries that name them.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token outright: every agent refuses it (401) once the revocation reaches it.
    Revoke {
        /// The token: `token:ID` or `ID`.
        #[arg(value_name = "TOKEN")]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
}

/// What `token create` made.
#[derive(Serialize)]
struct Created {
    principal: String,
    /// The secret, unless it went to a file.
    token: Option<String>,
    /// The entries written: the token's, then its grants.
    versions: Vec<String>,
}

/// Runs a `token` subcommand.
pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Create {
            name,
            grants,
            expires_in,
            out,
            admin,
            target,
        } => {
            let key = admin.key()?;
            let grants = grants
                .iter()
                .map(|g| {
                    let (right, prefix) = g.split_once(':').ok_or_else(|| {
                        Failure::usage(format!("--grant {g:?} is not RIGHT:PREFIX"))
                    })?;
                    Ok((right_of(right)?, prefix.to_owned()))
                })
                .collect::<Result<Vec<(Right, String)>, Failure>>()?;
            let expires_ms = expires_in
                .map(|d| {
                    #[allow(clippy::disallowed_methods, reason = "an expiry is from now")]
                    let at = std::time::SystemTime::now() + d;
                    at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        .map_err(|_| Failure::usage("--expires-in is before 1970"))
                })
                .transpose()?;
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| Failure::failed(format!("the OS's random source: {e}")))?;
            let secret = TokenSecret::from_bytes(bytes);
            let token = Rule::Token {
                id: secret.id(),
                name,
                hash: secret.hash(),
                public: secret.public(),
                expires_ms,
            };
            if Rule::decode(&token.encode()).is_none() {
                return Err(Failure::usage(
                    "--name must be 1 to 64 letters, digits, '.', '-', '_', '@'",
                ));
            }
            // The file first: a token nobody can read is of no use.
            if let Some(path) = &out {
                write_secret(path, &secret)?;
            }
            let client = target.client()?;
            let (written, _) =
                prove_and_write(&client, &admin, &key, |_| Ok(token.clone())).await?;
            let mut versions = vec![written.version];
            let grantee = secret.principal();
            for (right, prefix) in grants {
                let rule = Rule::Grant {
                    grantee: grantee.clone(),
                    right,
                    prefix,
                };
                let (written, _) =
                    prove_and_write(&client, &admin, &key, |_| Ok(rule.clone())).await?;
                versions.push(written.version);
            }
            let created = Created {
                principal: grantee.to_string(),
                token: out.is_none().then(|| secret.to_string()),
                versions,
            };
            output::print(&target, &created, |c| match &c.token {
                Some(token) => format!(
                    "{token}\n{}: shown once, keep it secret (clients read it from CONFMESH_TOKEN or --token-file)",
                    c.principal
                ),
                None => format!("{} written to {}", c.principal, path_text(out.as_ref())),
            })
        }
        Command::List { target } => {
            let acl = target.client()?.acl().await?;
            output::print(&target, &acl.tokens, |tokens| {
                if tokens.is_empty() {
                    return "no token".to_string();
                }
                let mut lines = Vec::new();
                for t in tokens {
                    let expires = t.expires_ms.map_or("never expires".to_string(), |ms| {
                        let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
                        format!("expires {}", humantime::format_rfc3339_seconds(at))
                    });
                    let state = if t.live { "" } else { ", revoked" };
                    lines.push(format!(
                        "{}\t{}\t{expires}{state}\tmade by {}",
                        t.principal, t.name, t.author
                    ));
                    let named = format!(" {} ", t.principal);
                    for entry in &acl.entries {
                        if format!("{} ", entry.rule).contains(&named) {
                            lines.push(format!("  {}\t{}", entry.version, entry.rule));
                        }
                    }
                }
                lines.join("\n")
            })
        }
        Command::Revoke { id, admin, target } => {
            let key = admin.key()?;
            let token = id;
            let id = token.strip_prefix("token:").unwrap_or(&token);
            let grantee = principal(&token_principal(id).to_string())?;
            if grantee.name() != Some(id) {
                return Err(Failure::usage(format!("{token:?} is not a token id")));
            }
            let client = target.client()?;
            let (written, rule) = prove_and_write(&client, &admin, &key, |acl| {
                let cutoff = parse_clock(&acl.version_vector).map_err(Failure::failed)?;
                Ok(Rule::Revoke {
                    grantee: grantee.clone(),
                    right: Right::Read,
                    prefix: String::new(),
                    cutoff,
                })
            })
            .await?;
            output::print(&target, &written, |w| format!("{}\t{rule}", w.version))
        }
    }
}

fn path_text(path: Option<&PathBuf>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

/// Writes the token to a new file only its owner may read.
fn write_secret(path: &PathBuf, secret: &TokenSecret) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", path.display())))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))
}
