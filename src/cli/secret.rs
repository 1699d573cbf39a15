//! `confmesh secret init|rotate|recipients`: secret prefixes (docs/PROTOCOL.md §9), whose
//! values agents seal to a key only the prefix's readers can open.
//!
//! `init` and `rotate` make a new generation of the prefix's key here, seal its private half
//! to the readers' age recipients (which the agent reports from their signed member records),
//! and write it as a keyring entry the admin's certificate proves. The private key reaches no
//! agent in plaintext: only the readers open it, each with its own identity.

use clap::Subcommand;
use confmesh::{
    api::AclResponse,
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
    /// A new generation of PREFIX's key, which new values are sealed to: after a reader is
    /// revoked or added. Values written before stay sealed to the generations they name.
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
            make_generation(&target, &admin, &prefix, &names(&readers)?).await
        }
        Command::Rotate {
            prefix,
            readers,
            admin,
            target,
        } => {
            let acl = target.client()?.acl().await?;
            let Some(current) = acl
                .keyrings
                .iter()
                .find(|k| k.prefix == prefix && k.current)
            else {
                return Err(Failure::failed(format!(
                    "{prefix:?} is not a secret prefix here; make it one with `secret init`"
                )));
            };
            let readers = if readers.is_empty() {
                current.readers.clone()
            } else {
                readers
            };
            make_generation(&target, &admin, &prefix, &names(&readers)?).await
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
/// agent.
async fn make_generation(
    target: &Target,
    admin: &AdminArgs,
    prefix: &str,
    readers: &[Principal],
) -> Result<(), Failure> {
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
    output::print(target, &written, |_| format!("{generation}\t{rule}"))
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
