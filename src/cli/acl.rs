//! `confmesh acl show|init|grant|revoke`: the policy every replica enforces
//! (docs/PROTOCOL.md §8), made by an admin whose certificate proves each entry.
//!
//! The admin's key stays with this command: it asks the agent for the policy context, signs
//! the entry with the admin key, and hands the agent the entry and the proof only.

use std::path::PathBuf;

use base64::Engine as _;
use clap::Subcommand;
use confmesh::{
    api::{AclRequest, ClientError, parse_clock},
    proto::{
        Key, Payload,
        trust::policy::{Principal, Right, Rule},
    },
    runtime::certifier::AdminKey,
};

use super::{Failure, Target, output};

/// The admin certificate and key that prove an entry.
#[derive(clap::Args)]
pub(crate) struct AdminArgs {
    /// The admin certificate (`confmesh cert admin`).
    #[arg(long, env = "CONFMESH_ADMIN_CERT", value_name = "PATH")]
    admin_cert: PathBuf,
    /// The admin certificate's key.
    #[arg(long, env = "CONFMESH_ADMIN_KEY", value_name = "PATH")]
    admin_key: PathBuf,
    /// Why, shown in history and audit.
    #[arg(long, short = 'm')]
    message: Option<String>,
}

impl AdminArgs {
    pub(crate) fn key(&self) -> Result<AdminKey, Failure> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
        };
        AdminKey::from_pem(&read(&self.admin_cert)?, &read(&self.admin_key)?)
            .map_err(|e| Failure::usage(e.to_string()))
    }
}

/// `acl`'s subcommands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// The policy the agent's node holds: whether it is rooted, and every entry.
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Create the policy root: from then on nothing is allowed that no grant allows, and
    /// "allow all" never comes back. The admin (and any `--also` admins) hold admin over
    /// every key. Make the grants nodes need right after: writes made by nodes that had not
    /// heard of the root are masked once it reaches them.
    Init {
        #[command(flatten)]
        admin: AdminArgs,
        /// Another admin of the root (`admin:NAME`, repeatable).
        #[arg(long, value_name = "PRINCIPAL")]
        also: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Grant PRINCIPAL (`node:NAME`, `token:ID`, `admin:NAME`, or `node:*` for every node)
    /// RIGHT (`read`, `write` or `admin`) over the keys under PREFIX (`""` for every key).
    Grant {
        /// Who.
        principal: String,
        /// `read`, `write` or `admin`.
        right: String,
        /// The keys it covers: those starting with it.
        prefix: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke RIGHT (and every right above it) over PREFIX from PRINCIPAL: its versions this
    /// agent has not seen are masked everywhere, and grants that did not see the revocation
    /// stop giving it there.
    Revoke {
        /// Whom.
        principal: String,
        /// `read`, `write` or `admin`.
        right: String,
        /// The keys it covers.
        prefix: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Show { target } => {
            let answer = target.client()?.acl().await?;
            output::print(&target, &answer, |a| {
                let mut lines = vec![if a.rooted {
                    "rooted: nothing is allowed that no grant allows".to_string()
                } else {
                    "no policy root: every certified node may write every key".to_string()
                }];
                lines.extend(
                    a.entries
                        .iter()
                        .map(|e| format!("{}\t{}\t{}", e.version, e.author, e.rule)),
                );
                if a.masked > 0 || a.waiting > 0 {
                    lines.push(format!(
                        "masked {} versions; {} waiting for their policy",
                        a.masked, a.waiting
                    ));
                }
                lines.join("\n")
            })
        }
        Command::Init {
            admin,
            also,
            target,
        } => {
            let key = admin.key()?;
            let mut admins: Vec<Principal> = vec![principal(&key.principal())?];
            for other in &also {
                admins.push(principal(other)?);
            }
            write(&target, &admin, &key, |acl| {
                let cutoff = parse_clock(&acl.version_vector).map_err(Failure::failed)?;
                if acl.rooted {
                    return Err(Failure::failed(
                        "the cluster already has a policy root; make grants with `acl grant`",
                    ));
                }
                Ok(Rule::Root {
                    admins: admins.clone(),
                    cutoff,
                })
            })
            .await
        }
        Command::Grant {
            principal: grantee,
            right,
            prefix,
            admin,
            target,
        } => {
            let key = admin.key()?;
            let grantee = principal(&grantee)?;
            let right = right_of(&right)?;
            write(&target, &admin, &key, |_| {
                Ok(Rule::Grant {
                    grantee: grantee.clone(),
                    right,
                    prefix: prefix.clone(),
                })
            })
            .await
        }
        Command::Revoke {
            principal: grantee,
            right,
            prefix,
            admin,
            target,
        } => {
            let key = admin.key()?;
            let grantee = principal(&grantee)?;
            let right = right_of(&right)?;
            write(&target, &admin, &key, |acl| {
                let cutoff = parse_clock(&acl.version_vector).map_err(Failure::failed)?;
                Ok(Rule::Revoke {
                    grantee: grantee.clone(),
                    right,
                    prefix: prefix.clone(),
                    cutoff,
                })
            })
            .await
        }
    }
}

/// How many times an entry is proved again when another entry took its key meanwhile.
const ENTRY_KEY_ATTEMPTS: usize = 5;

/// [`prove_and_write`], then prints what was written.
async fn write(
    target: &Target,
    admin: &AdminArgs,
    key: &AdminKey,
    rule: impl Fn(&confmesh::api::AclResponse) -> Result<Rule, Failure>,
) -> Result<(), Failure> {
    let client = target.client()?;
    let (written, rule) = prove_and_write(&client, admin, key, rule).await?;
    output::print(target, &written, |w| format!("{}\t{rule}", w.version))
}

/// Asks the agent for its policy, makes the rule from it, proves it with the admin key over the
/// agent's next entry key and hands it to the agent; proves it again over the new next key if
/// another entry took that one meanwhile. Returns what was written, and the rule.
pub(crate) async fn prove_and_write(
    client: &confmesh::api::Client,
    admin: &AdminArgs,
    key: &AdminKey,
    rule: impl Fn(&confmesh::api::AclResponse) -> Result<Rule, Failure>,
) -> Result<(confmesh::api::AclWritten, Rule), Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let acl = client.acl().await?;
        let rule = rule(&acl)?;
        let context = parse_clock(&acl.context).map_err(Failure::failed)?;
        let entry_key = Key::new(&acl.next_key)
            .map_err(|e| Failure::failed(format!("the agent's next entry key: {e}")))?;
        let payload = Payload::Value(rule.encode());
        let proof = key
            .prove_rule(&entry_key, &payload, &context)
            .map_err(|e| Failure::failed(e.to_string()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let request = AclRequest {
            key: acl.next_key,
            payload: b64.encode(rule.encode()),
            author: key.principal(),
            message: admin.message.clone(),
            context: acl.context,
            signature: b64.encode(proof.signature),
            certificate: b64.encode(proof.certificate.unwrap_or_default()),
        };
        match client.acl_write(&request).await {
            Ok(written) => return Ok((written, rule)),
            Err(ClientError::Refused {
                status: 409,
                message,
            }) if message.contains("was taken by another entry")
                && attempt < ENTRY_KEY_ATTEMPTS =>
            {
                tracing::debug!(%message, "proving the entry again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn principal(text: &str) -> Result<Principal, Failure> {
    Principal::parse(text).map_err(|e| Failure::usage(e.to_string()))
}

pub(crate) fn right_of(text: &str) -> Result<Right, Failure> {
    match text {
        "read" => Ok(Right::Read),
        "write" => Ok(Right::Write),
        "admin" => Ok(Right::Admin),
        other => Err(Failure::usage(format!(
            "{other:?} is not a right: read, write or admin"
        ))),
    }
}
