//! `confmesh secret init|rotate|recipients`: secret prefixes (docs/PROTOCOL.md §9), whose
//! values agents seal to a key only the prefix's readers can open.
//!
//! `init` and `rotate` make a new generation of the prefix's key here, seal its private half
//! to the readers' age recipients (which the agent reports from their signed member records),
//! and write it as a keyring entry the admin's certificate proves. The private key reaches no
//! agent in plaintext: only the readers open it, each with its own identity.

use bytes::Bytes;
use clap::Subcommand;
use confmesh::{
    api::{AclKeyring, AclResponse, ClientError, PutParams},
    proto::trust::policy::{Kind, Principal, Rule},
    runtime::secrets::PrefixKey,
};

use super::{
    Failure, Target,
    acl::{AdminArgs, principal, prove_and_write},
    output,
};

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Make PREFIX secret: values written under it from now on are sealed to a new key that
    /// only the readers named can open. Run it against one of the readers' agents.
    Init {
        /// The keys it covers (those that start with it).
        prefix: String,
        /// A node that may read the values (`node:NAME`, as its certificate names it); repeat
        /// for each.
        #[arg(long = "reader", value_name = "node:NAME", required = true)]
        readers: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
    /// A new generation of PREFIX's key, which new values are sealed to (after a reader is
    /// revoked or added), then every current value written again under it: read through this
    /// agent (which must read the old generation) and written back with its author, unless
    /// it changed meanwhile. Keys with concurrent siblings, and keys this agent cannot read,
    /// are reported and left as they are.
    Rotate {
        /// The secret prefix.
        prefix: String,
        /// The readers of the new generation (default: those of the current one).
        #[arg(long = "reader", value_name = "node:NAME")]
        readers: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Writes every current value under PREFIX again, sealed to its current generation, as
    /// `rotate` does after making one: run it against an agent that reads the older
    /// generations (a rotation that replaced every reader leaves values only they can read).
    Reseal {
        /// The secret prefix.
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// Who can read PREFIX: each generation of its key, its readers, and which one is current.
    Recipients {
        /// The secret prefix.
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Init {
            prefix,
            readers,
            admin,
            target,
        } => {
            let acl = target.client()?.acl().await?;
            if acl.keyrings.iter().any(|k| k.prefix == prefix) {
                return Err(Failure::failed(format!(
                    "{prefix:?} is already a secret prefix; make a new key with `secret rotate`"
                )));
            }
            // Values written before the prefix was secret stay as they were written.
            let plain = target.client()?.list(&prefix, None).await?;
            if let Some(first) = plain.keys.first() {
                return Err(Failure::failed(format!(
                    "{prefix:?} already holds values in plaintext ({} first): they would stay so; delete them (and purge their history), or choose an empty prefix",
                    first.key
                )));
            }
            make_generation(&target, &admin, &prefix, &names(&readers)?)
                .await
                .map(drop)
        }
        Command::Rotate {
            prefix,
            readers,
            admin,
            target,
        } => {
            let acl = target.client()?.acl().await?;
            let current = current_generation(&acl, &prefix)?;
            let readers = if readers.is_empty() {
                current.readers.clone()
            } else {
                readers
            };
            let generation = make_generation(&target, &admin, &prefix, &names(&readers)?).await?;
            let by = admin.key()?.principal();
            let report = reseal(&target, &prefix, &generation, Some(&by)).await?;
            output::print(&target, &report, Resealed::text)
        }
        Command::Reseal { prefix, target } => {
            let acl = target.client()?.acl().await?;
            let current = current_generation(&acl, &prefix)?;
            let report = reseal(&target, &prefix, &current.generation, None).await?;
            output::print(&target, &report, Resealed::text)
        }
        Command::Recipients { prefix, target } => {
            let acl = target.client()?.acl().await?;
            let generations: Vec<_> = acl
                .keyrings
                .into_iter()
                .filter(|k| k.prefix == prefix)
                .collect();
            if generations.is_empty() {
                return Err(Failure::failed(format!(
                    "{prefix:?} is not a secret prefix here"
                )));
            }
            output::print(&target, &generations, |all| {
                all.iter()
                    .map(|k| {
                        let current = if k.current { "current" } else { "old" };
                        format!("{}\t{current}\t{}", k.generation, k.readers.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

/// The current generation of `prefix` as the agent holds it.
fn current_generation<'a>(acl: &'a AclResponse, prefix: &str) -> Result<&'a AclKeyring, Failure> {
    acl.keyrings
        .iter()
        .find(|k| k.prefix == prefix && k.current)
        .ok_or_else(|| {
            Failure::failed(format!(
                "{prefix:?} is not a secret prefix here; make it one with `secret init`"
            ))
        })
}

/// The readers as node principals (no patterns, no other kind), without repeats.
fn names(readers: &[String]) -> Result<Vec<Principal>, Failure> {
    let mut out: Vec<Principal> = Vec::new();
    for reader in readers {
        let p = principal(reader)?;
        if p.kind() != Kind::Node || p.is_pattern() {
            return Err(Failure::usage(format!(
                "a reader is a node, named `node:NAME`, not {reader:?}"
            )));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Makes a generation of `prefix`'s key, sealed to `readers`, and writes it through the
/// agent; returns its name.
async fn make_generation(
    target: &Target,
    admin: &AdminArgs,
    prefix: &str,
    readers: &[Principal],
) -> Result<String, Failure> {
    let client = target.client()?;
    let acl = client.acl().await?;
    let recipients = recipients_of(&acl, readers)?;
    if let Some(node) = &acl.node
        && !readers.iter().any(|r| &r.to_string() == node)
    {
        return Err(Failure::failed(format!(
            "the agent's node ({node}) is not among the readers: only a reader writes a key; run this against a reader's agent"
        )));
    }
    // The generation's name is its entry's position, known once written; the key does not
    // depend on it.
    let key = PrefixKey::generate("new").map_err(|e| Failure::failed(e.to_string()))?;
    let sealed = key
        .seal_for(&recipients)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let admin_key = admin.key()?;
    let rule = Rule::Keyring {
        prefix: prefix.to_string(),
        recipient: key.recipient(),
        readers: readers.to_vec(),
        sealed,
    };
    let (written, rule) = prove_and_write(&client, admin, &admin_key, |_| Ok(rule.clone())).await?;
    let generation = written
        .key
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    output::print(target, &written, |_| format!("{generation}\t{rule}"))?;
    Ok(generation)
}

/// What `secret rotate` did with the prefix's current values.
#[derive(Debug, Default, serde::Serialize)]
struct Resealed {
    /// The new generation.
    generation: String,
    /// Keys written again under it.
    resealed: Vec<String>,
    /// Keys with concurrent siblings: resolve them (write the value you want), then rotate
    /// again.
    with_siblings: Vec<String>,
    /// Keys this agent's node cannot read (not a reader of their generation).
    unreadable: Vec<String>,
    /// Keys written by someone else while rotating (already under the new generation, or
    /// to rotate again).
    changed: Vec<String>,
}

impl Resealed {
    fn text(&self) -> String {
        let mut lines = vec![format!(
            "resealed {} values under {}",
            self.resealed.len(),
            self.generation
        )];
        for (what, keys) in [
            ("with siblings, not resolved", &self.with_siblings),
            (
                "unreadable through this agent (run `secret reseal` against a reader of their generation)",
                &self.unreadable,
            ),
            ("changed while rotating", &self.changed),
        ] {
            if !keys.is_empty() {
                lines.push(format!("{what}: {}", keys.join(" ")));
            }
        }
        lines.join("\n")
    }
}

/// How long `rotate` waits for the agent to seal to the generation it wrote.
const CURRENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes every current value under `prefix` again, sealed to `generation` (PROTOCOL.md
/// §9.7): read through the agent, written back on the condition that it is still the winner,
/// with its author (a token's writes cannot be claimed for it: they are written with none)
/// and a message naming the rotation.
async fn reseal(
    target: &Target,
    prefix: &str,
    generation: &str,
    by: Option<&str>,
) -> Result<Resealed, Failure> {
    let client = target.client()?;
    let deadline = tokio::time::Instant::now() + CURRENT_WAIT;
    loop {
        let acl = client.acl().await?;
        if acl
            .keyrings
            .iter()
            .any(|k| k.generation == generation && k.current)
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "the agent does not seal to {generation} yet; run `secret rotate` again later to reseal"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut report = Resealed {
        generation: generation.to_string(),
        ..Resealed::default()
    };
    for entry in client.list_all(prefix).await? {
        let got = match client.get(&entry.key).await {
            Ok(got) => got,
            Err(ClientError::Refused { status: 403, .. }) => {
                report.unreadable.push(entry.key);
                continue;
            }
            Err(ClientError::Refused { status: 404, .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if !got.siblings.is_empty() {
            report.with_siblings.push(entry.key);
            continue;
        }
        if got.winner.sealed.as_deref() == Some(generation) {
            continue;
        }
        let params = PutParams {
            if_version: Some(got.winner.version.clone()),
            author: got
                .winner
                .author
                .clone()
                .filter(|a| !a.starts_with("token:")),
            message: Some(match by {
                Some(admin) => format!("rotated to {generation} by {admin}"),
                None => format!("resealed under {generation}"),
            }),
        };
        match client
            .put_with(&entry.key, Bytes::from(got.winner.bytes()), &params)
            .await
        {
            Ok(_) => report.resealed.push(entry.key),
            Err(ClientError::Conflict { .. }) => report.changed.push(entry.key),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Each reader's age recipient, as the agent knows it from the readers' member records.
fn recipients_of(acl: &AclResponse, readers: &[Principal]) -> Result<Vec<String>, Failure> {
    readers
        .iter()
        .map(|r| {
            acl.recipients.get(&r.to_string()).cloned().ok_or_else(|| {
                Failure::failed(format!(
                    "no age recipient known for {r}: is it a member, on a build with secrets, and has its member record reached this agent? (`confmesh members --json`)"
                ))
            })
        })
        .collect()
}
