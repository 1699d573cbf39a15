//! What a version asks of the grant rule (docs/PROTOCOL.md §8.4): its [`Act`], read from the
//! version, its writer's node and its author's proof.

use super::{
    POLICY_PREFIX, RESERVED_PREFIX,
    judge::Refusal,
    keys::{Certifier, author_signed_bytes},
    policy::{Act, Deed, Denial, Kind, Principal, Rule, entry_position},
};
use crate::proto::{Grounds, Payload, VClock, Version};

/// The policy context `version` names (empty without grounds).
pub(super) fn context_of(version: &Version) -> &VClock {
    static EMPTY: std::sync::OnceLock<VClock> = std::sync::OnceLock::new();
    grounds_of(version).map_or_else(|| EMPTY.get_or_init(VClock::new), |g| &g.context)
}

fn grounds_of(version: &Version) -> Option<&Grounds> {
    version.seal.as_deref().and_then(|s| s.grounds.as_deref())
}

/// The principal a version's author field names, if it names one (and not a pattern). An
/// author that names no principal is free text, an audit field only: it asks for nothing.
pub(super) fn author_of(version: &Version) -> Option<Principal> {
    let author = version.seal.as_deref()?.author.as_deref()?;
    Principal::parse(author).ok().filter(|p| !p.is_pattern())
}

/// Whether the grant rule judges versions of `key`: application keys and policy entries. Other
/// reserved keys (endorsements, member records, proofs) follow Trust I's rules only.
pub(super) fn judged_by_policy(key: &str) -> bool {
    !key.starts_with(RESERVED_PREFIX) || key.starts_with(POLICY_PREFIX)
}

/// The act `version` is, made by the node `node` (its writer's, if its certificate names
/// one; else a node no rule can name). A policy entry must be one (its key names a position of
/// its own writer, it supersedes nothing, its payload is a rule) and its author must prove it.
///
/// # Errors
///
/// The refusal, final for the version.
pub(super) fn act_of(
    version: &Version,
    node: Option<&Principal>,
    certifier: &dyn Certifier,
) -> Result<Act, Refusal> {
    let key = version.key.as_str();
    let context = context_of(version).clone();
    let node = node.cloned().unwrap_or_else(Principal::nameless_node);
    if !key.starts_with(POLICY_PREFIX) {
        return Ok(Act {
            dot: version.dot,
            position: None,
            node,
            author: author_of(version),
            context,
            deed: Deed::Write {
                key: key.to_owned(),
            },
        });
    }
    let position = entry_position(key)
        .filter(|p| p.actor == version.dot.actor)
        .ok_or(Refusal::NotAPolicyEntry)?;
    let rule = match &version.payload {
        Payload::Value(bytes) if version.supersedes.is_empty() => {
            Rule::decode(bytes).ok_or(Refusal::NotAPolicyEntry)?
        }
        _ => return Err(Refusal::NotAPolicyEntry),
    };
    let Some(author) = author_of(version) else {
        return Err(Refusal::Denied(Denial::NoAuthor));
    };
    if !proven(version, &author, &context, certifier) {
        return Err(Refusal::Unproven);
    }
    Ok(Act {
        dot: version.dot,
        position: Some(position),
        node,
        author: Some(author),
        context,
        deed: Deed::Rule(rule),
    })
}

/// Whether `version` carries its author's proof (docs/PROTOCOL.md §8.7): for an admin, a
/// signature by the key of an admin certificate of the CA that names it, valid when the
/// version was written, over the entry's key (its writer and position), payload and context,
/// so no node can replay it elsewhere. Tokens prove nothing yet: no token can author a policy
/// entry.
fn proven(
    version: &Version,
    author: &Principal,
    context: &VClock,
    certifier: &dyn Certifier,
) -> bool {
    let Some(proof) = grounds_of(version).and_then(|g| g.proof.as_ref()) else {
        return false;
    };
    let (Kind::Admin, Some(certificate)) = (author.kind(), proof.certificate.as_ref()) else {
        return false;
    };
    let message = author_signed_bytes(
        version.key.as_str(),
        &version.payload,
        &author.to_string(),
        context,
    );
    certifier
        .admin(
            certificate,
            &message,
            &proof.signature,
            version.timestamp.wall_ms(),
        )
        .is_some_and(|name| author.name() == Some(name.as_str()))
}
