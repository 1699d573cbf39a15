//! Signed versions at the node (docs/PROTOCOL.md §7): what it signs its writes with, how it
//! judges every version from a peer before applying it, and what it counts.
//!
//! Every path a version arrives by (push, anti-entropy delta, snapshot chunk) passes its
//! versions through [`Node::screen`] first; only what the [`Judge`] lets through is applied, by
//! that path's own merge. Signatures are checked through the [`Certifier`]: the simulator's
//! checks them one by one, the runtime's answers from batches it verified ahead of time.

use std::{fmt, net::SocketAddr, sync::Arc};

use bytes::Bytes;

use super::{Node, timers::Timer};
use crate::proto::{
    AuthorProof, Dot, Grounds, Key, Payload, Version, WriteError,
    trust::{
        Certifier, Equivocation, Judge, MAX_AUTHOR_BYTES, MAX_MESSAGE_BYTES, Mode, Proof, Refusal,
        Screened, Verdict, WriterKey, author_signed_bytes, endorsement_key, is_endorsement,
        policy::{Kind, Principal, covers},
        proof_key,
        token::TokenSecret,
    },
    wire::Message,
};

/// The most equivocations found here that wait to be published (each convicts a writer; more
/// than this at once is an attack by many certified nodes, and the first suffice).
const MAX_PROOFS_TO_PUBLISH: usize = 64;

/// The most writers whose endorsement is asked for at once (see
/// [`Node::ask_for_endorsements`]).
pub(super) const MAX_ENDORSEMENTS_ASKED: usize = 1_024;
/// The most endorsements asked for in one message.
const MAX_ENDORSEMENTS_ASKED_AT_ONCE: usize = 64;

/// A data directory's writer key, with its endorsement's payload (the certified binding of
/// the key to the node, PROTOCOL.md §7.2): what a node signs its writes with.
pub struct Signer {
    key: WriterKey,
    endorsement: Bytes,
}

impl Signer {
    /// A signer from the writer key and its endorsement's encoded payload.
    pub fn new(key: WriterKey, endorsement: Bytes) -> Signer {
        Signer { key, endorsement }
    }

    /// The writer key.
    pub fn key(&self) -> &WriterKey {
        &self.key
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("writer", &self.key.id())
            .finish_non_exhaustive()
    }
}

/// Certifies nothing: the certifier of a node configured without one, which then applies
/// only unsigned versions (in [`Mode::Permissive`]).
struct NoCertifier;

impl Certifier for NoCertifier {
    fn certifies(&self, _: &[u8], _: &[u8], _: &[u8], _: u64) -> bool {
        false
    }
}

/// What a node trusts, in its [`Config`](super::Config).
#[derive(Clone)]
pub struct TrustConfig {
    /// Signs local writes; `None`: the node writes unsigned versions (a legacy writer).
    pub signer: Option<Arc<Signer>>,
    /// Checks endorsements' certificates, and signatures.
    pub certifier: Arc<dyn Certifier + Send + Sync>,
    /// What to do with unsigned versions.
    pub mode: Mode,
}

impl Default for TrustConfig {
    /// No signer, a certifier that certifies nothing, permissive: a node of protocol 2.
    fn default() -> Self {
        TrustConfig {
            signer: None,
            certifier: Arc::new(NoCertifier),
            mode: Mode::Permissive,
        }
    }
}

impl fmt::Debug for TrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustConfig")
            .field("signer", &self.signer)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The audit fields of a local write (PROTOCOL.md §7.8), signed with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// The principal the write is made for.
    pub author: Option<String>,
    /// Why.
    pub message: Option<String>,
    /// The API token the write is made with, if any (docs/PROTOCOL.md §8.7): the write's
    /// author is then the token, and the key derived from its secret signs the author's proof.
    /// Held only until the write is signed; never stored nor sent.
    pub token: Option<TokenSecret>,
}

impl Audit {
    /// Whether the fields are within their limits.
    ///
    /// # Errors
    ///
    /// [`WriteError::AuditTooLarge`] naming the field over its limit.
    pub fn check(&self) -> Result<(), WriteError> {
        for (field, value, max) in [
            ("author", &self.author, MAX_AUTHOR_BYTES),
            ("message", &self.message, MAX_MESSAGE_BYTES),
        ] {
            if let Some(len) = value.as_ref().map(String::len).filter(|&len| len > max) {
                return Err(WriteError::AuditTooLarge { field, len, max });
            }
        }
        Ok(())
    }
}

/// Counters of verdicts on versions from peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrustStats {
    /// Versions not signed by their writer's key, or endorsements not valid: dropped.
    pub forged: u64,
    /// Validly signed versions the grant rule refused: recorded as seen, without value.
    pub refused: u64,
    /// Versions that waited for their writer's endorsement.
    pub deferred: u64,
    /// Equivocations detected (two signed versions with one dot).
    pub equivocations: u64,
}

impl TrustStats {
    fn add(&mut self, other: &TrustStats) {
        self.forged += other.forged;
        self.refused += other.refused;
        self.deferred += other.deferred;
        self.equivocations += other.equivocations;
    }
}

/// The most peers [`Node::trust_by_peer`] counts separately.
pub const MAX_PEERS_COUNTED: usize = 1_024;

impl Node {
    /// Judges a batch of versions `from` sent (PROTOCOL.md §7.4) and returns those to apply;
    /// counts and logs the rest. The caller applies them at once, by its path's merge.
    pub(super) fn screen(
        &mut self,
        now: std::time::Instant,
        from: SocketAddr,
        versions: Vec<Version>,
    ) -> Screened {
        let certifier = Arc::clone(&self.config.trust.certifier);
        let convictions = self.judge.convictions_revision();
        let screened = self
            .judge
            .screen(&mut self.store, versions, certifier.as_ref());
        // Granted in their contexts, masked by the policy held here as they arrive.
        self.stats.versions_masked += screened.apply.iter().filter(|v| v.masked.0).count() as u64;
        for (_, verdict) in &screened.verdicts {
            if let Verdict::Equivocation(proof) = verdict
                && self.proofs_to_publish.len() < MAX_PROOFS_TO_PUBLISH
            {
                self.proofs_to_publish.push((**proof).clone());
            }
        }
        // Acted on once the caller has applied the batch: what it applied of a writer convicted
        // by its last versions is tainted too.
        if (convictions != self.judge.convictions_revision() || !self.proofs_to_publish.is_empty())
            && !self.timers.contains(&Timer::Equivocation)
        {
            self.timers.set(now, Timer::Equivocation);
        }
        // One line per kind and batch, naming the first: a peer cannot flood the log with a
        // message of many forgeries (and it is banned after a few).
        let mut by_peer = TrustStats::default();
        let mut first: [Option<(crate::proto::Dot, String)>; 3] = [None, None, None];
        for (dot, verdict) in &screened.verdicts {
            let (slot, why) = match verdict {
                Verdict::Apply | Verdict::Duplicate | Verdict::Reseal => continue,
                Verdict::Deferred | Verdict::AwaitsContext => {
                    by_peer.deferred += 1;
                    continue;
                }
                Verdict::Malformed => {
                    self.stats.malformed += 1;
                    continue;
                }
                Verdict::Forged(how) => {
                    by_peer.forged += 1;
                    (0, format!("{how:?}"))
                }
                Verdict::Refused(why) => {
                    by_peer.refused += 1;
                    (1, format!("{why:?}"))
                }
                Verdict::Equivocation(_) => {
                    by_peer.equivocations += 1;
                    (2, String::new())
                }
            };
            first[slot].get_or_insert((*dot, why));
        }
        if let Some((dot, how)) = &first[0] {
            tracing::warn!(peer = %from, count = by_peer.forged, first.writer = %dot.actor, first.seq = dot.counter, first.how = %how, "forged versions dropped");
        }
        if let Some((dot, why)) = &first[1] {
            tracing::warn!(peer = %from, count = by_peer.refused, first.writer = %dot.actor, first.seq = dot.counter, first.why = %why, "versions refused");
        }
        if let Some((dot, _)) = &first[2] {
            tracing::error!(
                peer = %from, count = by_peer.equivocations, writer = %dot.actor, seq = dot.counter,
                "writer equivocated: two signed versions with one id; its later versions are refused"
            );
        }
        if by_peer.deferred > 0 {
            self.ask_for_endorsements(now, from, &screened.verdicts);
        }
        if by_peer != TrustStats::default() {
            self.stats.trust.add(&by_peer);
            let known = self.trust_by_peer.len() < MAX_PEERS_COUNTED
                || self.trust_by_peer.contains_key(&from);
            if known {
                self.trust_by_peer.entry(from).or_default().add(&by_peer);
            }
        }
        screened
    }

    /// Asks `from`, which sent versions that wait for their writers' endorsements, for those
    /// endorsements: a peer that applied a signed version holds its writer's endorsement, the
    /// writer's first version (`Graft` for dot (writer, 1)). Without this a version pushed
    /// ahead of its writer's endorsement waited for an anti-entropy round to bring the
    /// endorsement; with the WAN preset's slower rounds, most writes of a cold-started
    /// cluster took tens of seconds to be applied everywhere (BENCHMARKS.md, "WAN preset").
    /// A writer is asked for at most once per graft timeout, at most 64 in one message and
    /// 1,024 at a time; past that the next anti-entropy round brings them, as before (a peer
    /// that sends versions of made-up writers can fill the table, which only slows genuine
    /// endorsements back to that). The asked peer keeps its push links as they are.
    fn ask_for_endorsements(
        &mut self,
        now: std::time::Instant,
        from: SocketAddr,
        verdicts: &[(Dot, Verdict)],
    ) {
        let again_after = self.config.graft_timeout;
        self.endorsements_asked
            .retain(|_, at| now.saturating_duration_since(*at) < again_after);
        let mut dots = Vec::new();
        for (dot, verdict) in verdicts {
            if dots.len() >= MAX_ENDORSEMENTS_ASKED_AT_ONCE
                || self.endorsements_asked.len() >= MAX_ENDORSEMENTS_ASKED
            {
                break;
            }
            if !matches!(verdict, Verdict::Deferred)
                || self.endorsements_asked.contains_key(&dot.actor)
            {
                continue;
            }
            self.endorsements_asked.insert(dot.actor, now);
            dots.push(Dot::new(dot.actor, 1));
        }
        if !dots.is_empty() {
            self.send(from, &Message::Graft { dots });
        }
    }

    /// What the peer at `peer` sent that was not applied (zeros if nothing, or if it is past
    /// the first [`MAX_PEERS_COUNTED`]).
    pub fn trust_of(&self, peer: SocketAddr) -> TrustStats {
        self.trust_by_peer.get(&peer).copied().unwrap_or_default()
    }

    /// What each peer sent that was not applied (forged, refused, deferred, equivocations),
    /// for the first [`MAX_PEERS_COUNTED`] peers that sent any (the totals are in
    /// [`NodeStats::trust`](super::NodeStats::trust)).
    pub fn trust_by_peer(&self) -> impl Iterator<Item = (SocketAddr, TrustStats)> + '_ {
        self.trust_by_peer.iter().map(|(&a, &s)| (a, s))
    }

    /// Signs a local version, if this node signs, in the policy context this node holds
    /// (PROTOCOL.md §8.3), after checking that the policy lets it write the version: a version
    /// every replica would refuse or mask is not made.
    ///
    /// # Errors
    ///
    /// [`WriteError::Denied`] naming the missing grant.
    pub(super) fn seal(&self, version: Version, audit: Audit) -> Result<Version, WriteError> {
        let Some(signer) = &self.config.trust.signer else {
            return Ok(version);
        };
        // A token is the author of what is written with it, and proves it.
        let author = match &audit.token {
            Some(token) => Some(token.principal().to_string()),
            None => audit.author,
        };
        self.check_token_proof(author.as_deref(), audit.token.as_ref())?;
        self.judge
            .permits(
                &self.store,
                version.dot.counter,
                &version.key,
                author.as_deref(),
            )
            .map_err(WriteError::Denied)?;
        let context = self.judge.context();
        // A value under a secret prefix is sealed before it gets here (the runtime seals it
        // to the prefix's current generation): plaintext is never signed there.
        if !self.judge.sealed_as_required(&version, &context) {
            return Err(WriteError::Refused(Refusal::NotSealed));
        }
        let proof = match (&audit.token, &author) {
            (Some(token), Some(author)) => {
                let message =
                    author_signed_bytes(version.key.as_str(), &version.payload, author, &context);
                Some(AuthorProof {
                    signature: token.signing_key().sign(&message).into(),
                    certificate: None,
                })
            }
            _ => None,
        };
        let grounds = Grounds { context, proof };
        Ok(signer
            .key
            .sign_grounded(version, author, audit.message, grounds))
    }

    /// Refuses a write for a token that every replica would refuse (docs/PROTOCOL.md §8.7):
    /// one naming a token as its author without the token's secret (an operator's `author`),
    /// or whose token entry is not in this node's policy context yet.
    fn check_token_proof(
        &self,
        author: Option<&str>,
        token: Option<&TokenSecret>,
    ) -> Result<(), WriteError> {
        let Some(author) = author else {
            return Ok(());
        };
        let Some(principal) = Principal::parse(author)
            .ok()
            .filter(|p| p.kind() == Kind::Token)
        else {
            return Ok(());
        };
        let unproven = || WriteError::TokenUnproven {
            author: author.to_owned(),
        };
        let (Some(token), Some(id)) = (token, principal.name()) else {
            return Err(unproven());
        };
        let context = self.judge.context();
        let public = token.public();
        let held = self
            .judge
            .book()
            .token_entries(id)
            .iter()
            .any(|entry| entry.public == public && covers(&context, entry.position));
        if held { Ok(()) } else { Err(unproven()) }
    }

    /// Masks the stored versions the policy masks now and did not before (after a root or a
    /// revocation arrived), and reports the keys whose values change as it does.
    pub(super) fn apply_masks(&mut self) {
        let certifier = Arc::clone(&self.config.trust.certifier);
        for dot in self.judge.newly_masked(&self.store, certifier.as_ref()) {
            let Some(key) = self.store.version_by_dot(&dot).map(|v| v.key.clone()) else {
                continue;
            };
            let old = self.store.get(&key).cloned();
            if self.store.mask(dot).is_some() {
                self.stats.versions_masked += 1;
                tracing::warn!(%key, writer = %dot.actor, seq = dot.counter, "version masked by the policy");
                self.emit_change(&key, old);
            }
        }
    }

    /// Registers a local version applied (its endorsement's key, for the first).
    pub(super) fn own(&mut self, version: &Version) {
        let certifier = Arc::clone(&self.config.trust.certifier);
        self.judge.own(version, certifier.as_ref());
        self.apply_masks();
    }

    /// Writes this node's endorsement as its writer's first version, if it signs and has not
    /// written one: a new writer key's first act.
    pub(super) fn endorse_if_new(&mut self, now: std::time::Instant) {
        let Some(signer) = self.config.trust.signer.clone() else {
            return;
        };
        let writer = signer.key.id();
        if self.store.digest().seen(writer).max() > 0 || self.pending_writes() > 0 {
            return;
        }
        let key: Key = match endorsement_key(writer) {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(cause = %e, "no endorsement key");
                return;
            }
        };
        if let Err(e) = self.put(now, key, signer.endorsement.clone()) {
            tracing::error!(cause = %e, "endorsement not written");
        }
    }

    /// Acts on the writers convicted of equivocation (PROTOCOL.md §7.6): publishes the proofs
    /// found here, so that every replica convicts, and writes again every key a convicted
    /// writer tainted here (the newest value among its siblings the writer did not write from
    /// the number it equivocated at, else a delete), superseding the tainted versions, so
    /// that every replica ends with the same siblings whichever of them it took. A node that
    /// does not sign does neither: its versions would be forged at enforcing replicas.
    pub(super) fn act_on_convictions(&mut self, now: std::time::Instant) {
        let proofs = std::mem::take(&mut self.proofs_to_publish);
        if self.config.trust.signer.is_none() {
            tracing::warn!(
                "this node does not sign: it publishes no proof and rewrites no tainted key"
            );
            return;
        }
        for proof in proofs {
            self.publish_proof(now, proof);
        }
        for key in self.judge.tainted_keys(&self.store) {
            let (tainted, clean): (Vec<&Version>, Vec<&Version>) = self
                .store
                .versions(&key)
                .iter()
                .partition(|v| self.judge.tainted(v.dot));
            // Siblings come winner first: the newest value the convicted writer did not make.
            let clean = clean
                .iter()
                .find(|v| !v.is_tombstone())
                .and_then(|v| v.payload.value().cloned());
            let convicted: Vec<String> = tainted
                .iter()
                .map(|v| crate::proto::DotText(v.dot).to_string())
                .collect();
            let audit = Audit {
                author: None,
                message: Some(format!(
                    "written again: {} by a writer convicted of equivocation",
                    convicted.join(", ")
                )),
                token: None,
            };
            let payload = clean.map_or(Payload::Tombstone, Payload::Value);
            match self.write(now, key.clone(), payload, audit) {
                Ok(_) => {
                    self.stats.tainted_keys_rewritten += 1;
                    tracing::warn!(%key, versions = %convicted.join(", "), "key written again over a convicted writer's versions");
                }
                Err(e) => tracing::error!(%key, cause = %e, "tainted key not written again"),
            }
        }
    }

    /// Publishes a proof found here under `_confmesh/equivocations/<writer>/<this writer>`,
    /// unless this node already published one convicting that writer as early.
    fn publish_proof(&mut self, now: std::time::Instant, equivocation: Equivocation) {
        let convicted = equivocation.dot();
        let Ok(key) = proof_key(convicted.actor, self.id.writer) else {
            return;
        };
        let published = self
            .pending_or_stored(&key)
            .and_then(|v| Proof::in_version(&v))
            .map(|p| p.dot().counter);
        if published.is_some_and(|seq| seq <= convicted.counter) {
            return;
        }
        let endorsement = [&equivocation.first, &equivocation.second]
            .iter()
            .any(|v| !is_endorsement(v.key.as_str(), v.dot))
            .then(|| {
                self.store
                    .version_by_dot(&Dot::new(convicted.actor, 1))
                    .cloned()
            })
            .flatten();
        let proof = Proof {
            equivocation,
            endorsement,
        };
        let payload = match proof.encode() {
            Ok(payload) if payload.len() <= self.config.store.max_value_bytes => payload,
            Ok(payload) => {
                tracing::warn!(writer = %convicted.actor, len = payload.len(), "proof of equivocation too large to publish; convicted here only");
                return;
            }
            Err(e) => {
                tracing::warn!(writer = %convicted.actor, cause = %e, "proof of equivocation not encoded");
                return;
            }
        };
        let audit = Audit {
            author: None,
            message: Some(format!(
                "writer {} signed two versions numbered {}",
                convicted.actor, convicted.counter
            )),
            token: None,
        };
        match self.write(now, key, Payload::Value(payload), audit) {
            Ok(_) => {
                self.stats.proofs_published += 1;
                tracing::warn!(writer = %convicted.actor, seq = convicted.counter, "proof of equivocation published");
            }
            Err(e) => tracing::error!(cause = %e, "proof of equivocation not written"),
        }
    }

    /// The trust state: endorsed writers, convictions, deferred versions.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }

    /// Changes how unsigned versions from peers are treated from now on.
    pub fn set_trust_mode(&mut self, mode: Mode) {
        self.judge.set_mode(mode);
    }
}
