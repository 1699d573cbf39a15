//! The verdict on every version from a peer (PROTOCOL.md §7.4), and what follows from it.

use std::collections::BTreeMap;

use ed25519_zebra::VerificationKey;

use super::{
    EQUIVOCATIONS_PREFIX, MEMBERS_PREFIX, POLICY_PREFIX, RESERVED_PREFIX, WRITERS_PREFIX,
    acts::{act_of, author_of, context_of, judged_by_policy},
    keys::{
        Certifier, Endorsement, EndorsementError, Equivocation, audit_fields_fit,
        author_signed_bytes, differ,
    },
    policy::{Act, Book, Deed, Denial, Kind, Principal, covers},
    proof::Proof,
    sealed,
};
use crate::proto::{Applied, Dot, Key, Masked, Payload, Store, VClock, Version, WriterId};

/// The most versions kept waiting for one writer's endorsement: as many as in all, since a
/// catch-up's snapshot chunks may all arrive before the one holding the endorsements.
pub const MAX_DEFERRED_PER_WRITER: usize = MAX_DEFERRED;

/// The most versions kept waiting for endorsements in all (the bytes bound,
/// [`MAX_DEFERRED_BYTES`], usually comes first).
pub const MAX_DEFERRED: usize = 262_144;

/// The most bytes (of encoded versions, roughly) kept waiting for endorsements in all.
pub const MAX_DEFERRED_BYTES: usize = 64 << 20;

/// The most refused versions whose signed form is kept, to detect an equivocation that pairs
/// a refused variant with a granted one. Past it, refused versions leave only their dot.
pub const MAX_REFUSED_KEPT: usize = 65_536;

/// The most bytes (of encoded versions, roughly) of refused versions kept.
pub const MAX_REFUSED_BYTES: usize = 64 << 20;

/// The most versions kept waiting for versions their policy context names (PROTOCOL.md §8.3);
/// past it (or [`MAX_UNRIPE_BYTES`]) they are dropped, unseen, and anti-entropy brings them
/// again.
pub const MAX_UNRIPE: usize = 16_384;

/// The most bytes (of encoded versions, roughly) kept waiting for their contexts.
pub const MAX_UNRIPE_BYTES: usize = 16 << 20;

/// What a replica does with a version from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it (§1).
    Apply,
    /// Its dot was seen: nothing to do.
    Duplicate,
    /// Its writer's endorsement is not applied here yet: keep it, unseen, and judge it again
    /// when the endorsement is.
    Deferred,
    /// Its policy context names versions not seen here yet (PROTOCOL.md §8.3): keep it,
    /// unseen, and judge it again when they are.
    AwaitsContext,
    /// Not signed by its writer's key, or an endorsement that is not valid: drop it, unseen,
    /// and count it against the peer.
    Forged(Forgery),
    /// Validly signed but not allowed: record its dot as seen, with no value.
    Refused(Refusal),
    /// Malformed (§1 step 1, or audit fields over their limits): drop it, unseen.
    Malformed,
    /// Its writer signed another version with the same dot: here is the proof.
    Equivocation(Box<Equivocation>),
    /// The replica holds this very version unsigned (a node of protocol 2 relayed it without
    /// its seal), and this copy is signed by its writer: the stored copy gains the seal.
    Reseal,
}

/// How a version was forged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// Its signature is not its writer's over its content.
    BadSignature,
    /// It carries no signature, and this replica enforces signing (PROTOCOL.md §7.5).
    Unsigned,
    /// It is an endorsement, and not a valid one.
    BadEndorsement(EndorsementError),
}

/// Why a validly signed version is refused (Trust I's rules, quarantine, and the grant rule
/// of Trust II).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A key under `_confmesh/` that no writer may write.
    #[error("a reserved key no writer may write")]
    Reserved,
    /// An endorsement key written other than as the writer's own first version.
    #[error("an endorsement key not written as its writer's first version")]
    NotAnEndorsement,
    /// Another writer's member record.
    #[error("another writer's member record")]
    NotOwnRecord,
    /// Its writer was proven to equivocate at or before this sequence number.
    #[error("its writer equivocated")]
    Quarantined,
    /// A version under `_confmesh/equivocations/` that is not a valid proof published by its
    /// own writer (a tombstone, another writer's proof key, a proof that does not hold).
    #[error("not a valid proof of equivocation")]
    NotAProof,
    /// A version under `_confmesh/policy/` that is not a policy entry: its key does not name
    /// its dot, it supersedes something, it is a tombstone, or its payload is not a rule.
    #[error("not a policy entry")]
    NotAPolicyEntry,
    /// A policy entry whose author does not prove it, or a write made for a token that does
    /// not carry the token's proof (PROTOCOL.md §8.7).
    #[error("its author does not prove it")]
    Unproven,
    /// The grant rule denies it in its own context (PROTOCOL.md §8.4).
    #[error("{0}")]
    Denied(Denial),
    /// A value under a secret prefix, written in a context that holds the prefix's keyring,
    /// that is not sealed to one of its generations there (PROTOCOL.md §9.3).
    #[error("a value under a secret prefix that is not sealed to one of its generations")]
    NotSealed,
}

/// What a replica does with versions that carry no signature (PROTOCOL.md §7.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Unsigned versions of writers without an endorsement (legacy writers, of nodes of
    /// protocol 2) are judged by the rules that need no signature (malformed, duplicate, grant,
    /// quarantine) and applied; unsigned versions of endorsed writers are forged. For the time
    /// of an upgrade: an insider can still write as a legacy writer, and, at a replica that
    /// has not yet received a writer's endorsement, as that writer (PROTOCOL.md §7.5).
    #[default]
    Permissive,
    /// Unsigned versions are forged.
    Enforcing,
    /// Every well-formed version is applied, unchecked, as nodes of protocol 2 did: for a node
    /// that emulates one in mixed-version tests. Never for production.
    #[doc(hidden)]
    Unchecked,
}

/// One replica's trust state: the endorsed writers' keys, the equivocations proven, the
/// signed forms of refused versions (to detect equivocation; applied ones are in the store),
/// and the versions waiting for their writer's endorsement.
#[derive(Default)]
pub struct Judge {
    mode: Mode,
    writers: BTreeMap<WriterId, VerificationKey>,
    /// The lowest sequence number each convicted writer equivocated at.
    convicted: BTreeMap<WriterId, u64>,
    /// How many times `convicted` changed: a new writer, or a lower number.
    convictions_revision: u64,
    /// Refused versions, by (writer, sequence number).
    refused: BTreeMap<(WriterId, u64), Version>,
    refused_bytes: usize,
    /// Per writer, by sequence number (several versions may claim one).
    deferred: BTreeMap<WriterId, BTreeMap<u64, Vec<Version>>>,
    /// How many versions wait per writer.
    deferred_counts: BTreeMap<WriterId, usize>,
    deferred_count: usize,
    deferred_bytes: usize,
    /// The node each endorsed writer signs for, when its certificate names one.
    nodes: BTreeMap<WriterId, Principal>,
    /// The policy entries granted here (PROTOCOL.md §8).
    book: Book,
    /// Whether a root or a revocation was admitted since [`Judge::newly_masked`] last ran.
    masks_stale: bool,
    /// Versions waiting for what their context names, by the first dot they wait for.
    unripe: BTreeMap<(WriterId, u64), Vec<Version>>,
    /// The dots of the versions in `unripe`.
    unripe_dots: std::collections::BTreeSet<(WriterId, u64)>,
    unripe_count: usize,
    unripe_bytes: usize,
}

/// What [`Judge::admit`] did with each version it judged: the one given, and any deferred ones
/// an endorsement released.
pub type Outcome = Vec<(Dot, Verdict)>;

/// What [`Judge::screen`] found in a batch.
#[derive(Debug, Default)]
pub struct Screened {
    /// The versions to apply, endorsements first; duplicates too (the store skips them, and
    /// a snapshot chunk's merge must know every version the chunk holds).
    pub apply: Vec<Version>,
    /// Every verdict given, in the order given ([`Verdict::Apply`] for those in `apply`):
    /// the batch's versions and any deferred ones an endorsement in it released.
    pub verdicts: Outcome,
}

impl Judge {
    /// An empty trust state, enforcing signatures.
    pub fn new() -> Judge {
        Judge::with_mode(Mode::Enforcing)
    }

    /// An empty trust state with the given treatment of unsigned versions.
    pub fn with_mode(mode: Mode) -> Judge {
        Judge {
            mode,
            ..Judge::default()
        }
    }

    /// How unsigned versions are treated.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Changes how unsigned versions are treated from now on (verdicts given stay).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The key of an endorsed writer.
    pub fn writer(&self, writer: WriterId) -> Option<&VerificationKey> {
        self.writers.get(&writer)
    }

    /// How many writers are endorsed here.
    pub fn writer_count(&self) -> usize {
        self.writers.len()
    }

    /// The node `writer` signs for, if its endorsement's certificate names one.
    pub fn node_of(&self, writer: WriterId) -> Option<&Principal> {
        self.nodes.get(&writer)
    }

    /// The policy entries granted here.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Versions waiting for what their policy context names.
    pub fn unripe(&self) -> usize {
        self.unripe_count
    }

    /// The policy context of a version this replica writes now (PROTOCOL.md §8.3): for every
    /// writer of a policy entry granted here, the number up to which all of its entries are
    /// held. Empty while there is no policy.
    pub fn context(&self) -> VClock {
        self.book.context()
    }

    /// Whether this replica's writer may write `key` for `author` now, as its version number
    /// `seq` (its verdict in the context [`Judge::context`] gives, and no mask): the check a node makes before it writes,
    /// so that it never makes a version every replica refuses or masks.
    ///
    /// # Errors
    ///
    /// The denial, naming the missing grant.
    pub fn permits(
        &self,
        store: &Store,
        seq: u64,
        key: &Key,
        author: Option<&str>,
    ) -> Result<(), Denial> {
        if self.book.is_empty() || !judged_by_policy(key.as_str()) {
            return Ok(());
        }
        let writer = store.writer();
        let node = self
            .nodes
            .get(&writer)
            .cloned()
            .unwrap_or_else(Principal::nameless_node);
        let act = Act {
            dot: Dot::new(writer, seq),
            position: None,
            node,
            author: author
                .and_then(|a| Principal::parse(a).ok())
                .filter(|p| !p.is_pattern()),
            context: self.context(),
            deed: Deed::Write {
                key: key.as_str().to_owned(),
            },
        };
        self.book.judge(&act)?;
        match self.book.masked(&act) {
            Some(denial) => Err(denial),
            None => Ok(()),
        }
    }

    /// The lowest sequence number `writer` was proven to equivocate at.
    pub fn convicted(&self, writer: WriterId) -> Option<u64> {
        self.convicted.get(&writer).copied()
    }

    /// Changes whenever a writer is convicted, or convicted at a lower number: the node acts
    /// on convictions (rewriting tainted keys) when it does.
    pub fn convictions_revision(&self) -> u64 {
        self.convictions_revision
    }

    /// Whether `dot` is a convicted writer's at or after the number it equivocated at: a
    /// version refused if it arrives now, written over if it was applied before (§7.6).
    pub fn tainted(&self, dot: Dot) -> bool {
        self.convicted
            .get(&dot.actor)
            .is_some_and(|&s| dot.counter >= s)
    }

    /// Every convicted writer, with the sequence number it equivocated at.
    pub fn convictions(&self) -> impl Iterator<Item = (WriterId, u64)> + '_ {
        self.convicted.iter().map(|(&w, &s)| (w, s))
    }

    /// The signed form of a version with `dot` held here: stored in `store`, or refused.
    pub fn signed_version<'a>(&'a self, store: &'a Store, dot: Dot) -> Option<&'a Version> {
        store
            .version_by_dot(&dot)
            .or_else(|| self.refused.get(&(dot.actor, dot.counter)))
    }

    /// Versions waiting for their writer's endorsement.
    pub fn deferred(&self) -> usize {
        self.deferred_count
    }

    /// Records every endorsement `store` holds (a replica restored from disk): their writers'
    /// keys, so their versions verify.
    pub fn restore(&mut self, store: &Store, certifier: &dyn Certifier) {
        for version in store.list(WRITERS_PREFIX) {
            self.register(version, certifier);
        }
        for version in store.list(EQUIVOCATIONS_PREFIX) {
            if let Some(proof) = Proof::in_version(version).filter(|p| p.holds(certifier)) {
                self.convict(&proof.equivocation);
            }
        }
        // Every policy entry stored was granted when applied; admitted again in an order where
        // each comes after the entries its context names (entries are never superseded): one
        // waits, like a live one, until the writer its context names first is held that far.
        let mut ready: Vec<Act> = store
            .versions_all()
            .filter(|v| v.key.as_str().starts_with(POLICY_PREFIX))
            .filter_map(|v| act_of(v, self.nodes.get(&v.dot.actor), certifier).ok())
            .collect();
        // Positions descending, so that popping admits each writer's entries in order.
        ready.sort_by_key(|act| std::cmp::Reverse(act.position.map(|p| (p.actor, p.counter))));
        let mut waiting: BTreeMap<(WriterId, u64), Vec<Act>> = BTreeMap::new();
        let mut left = 0usize;
        while let Some(act) = ready.pop() {
            if let Some(first) = missing(&self.book, &act.context) {
                waiting
                    .entry((first.actor, first.counter))
                    .or_default()
                    .push(act);
                left += 1;
                continue;
            }
            let _ = self.book.admit(&act);
            let Some(position) = act.position else {
                continue;
            };
            let through = self.book.held_through(position.actor);
            let woken: Vec<(WriterId, u64)> = waiting
                .range((position.actor, 0)..=(position.actor, through))
                .map(|(&at, _)| at)
                .collect();
            for at in woken {
                let acts = waiting.remove(&at).unwrap_or_default();
                left -= acts.len();
                ready.extend(acts);
            }
        }
        if left > 0 {
            tracing::warn!(
                entries = left,
                "policy entries whose contexts name entries not held are left out"
            );
        }
        self.masks_stale = !self.book.is_empty();
    }

    /// Records a version this replica wrote itself (already applied to its store): its
    /// endorsement's key registered, its proof of equivocation acted on, its policy entry
    /// admitted.
    pub fn own(&mut self, version: &Version, certifier: &dyn Certifier) {
        self.register(version, certifier);
        if let Some(proof) = Proof::in_version(version).filter(|p| p.holds(certifier)) {
            self.convict(&proof.equivocation);
        }
        self.admit_policy(version, certifier);
    }

    /// Registers the key (and the node) of a valid endorsement.
    fn register(
        &mut self,
        version: &Version,
        certifier: &dyn Certifier,
    ) -> Option<VerificationKey> {
        let public = endorsed_key(version, certifier)?;
        self.writers.insert(version.dot.actor, public);
        let node = version
            .payload
            .value()
            .and_then(|payload| Endorsement::decode(payload))
            .and_then(|e| certifier.node_name(&e.certificate))
            .and_then(|name| Principal::parse(&format!("node:{name}")).ok())
            .filter(|p| !p.is_pattern());
        match node {
            Some(node) => {
                self.nodes.insert(version.dot.actor, node);
            }
            None => {
                self.nodes.remove(&version.dot.actor);
            }
        }
        Some(public)
    }

    /// Admits `version` to the book if it is a policy entry granted in its context; notes that
    /// masks must be computed again if it is a root or a revocation. Returns whether it was
    /// admitted.
    fn admit_policy(&mut self, version: &Version, certifier: &dyn Certifier) -> bool {
        if !version.key.as_str().starts_with(POLICY_PREFIX) {
            return false;
        }
        let Ok(act) = act_of(version, self.nodes.get(&version.dot.actor), certifier) else {
            return false;
        };
        let before = (self.book.len(), self.book.revocations(), self.book.rooted());
        let admitted = self.book.admit(&act).is_ok();
        if admitted {
            let roots_or_revocations = matches!(
                act.deed,
                Deed::Rule(super::policy::Rule::Root { .. } | super::policy::Rule::Revoke { .. })
            );
            if roots_or_revocations
                && before != (self.book.len(), self.book.revocations(), self.book.rooted())
            {
                self.masks_stale = true;
            }
        }
        admitted
    }

    /// The versions `store` holds that the policy masks now and that are not masked yet
    /// (PROTOCOL.md §8.5), after a root or a revocation was admitted: the caller masks them
    /// ([`Store::mask`]). Empty, at no cost, otherwise. Reads every stored version the rule
    /// judges, so it costs about a microsecond per version per revocation.
    pub fn newly_masked(&mut self, store: &Store, certifier: &dyn Certifier) -> Vec<Dot> {
        if !std::mem::take(&mut self.masks_stale) {
            return Vec::new();
        }
        store
            .versions_all()
            .filter(|v| !v.masked.0 && judged_by_policy(v.key.as_str()))
            .filter(|v| self.masks(v, certifier))
            .map(|v| v.dot)
            .collect()
    }

    /// Whether the policy held here masks `version`, granted in its context.
    fn masks(&self, version: &Version, certifier: &dyn Certifier) -> bool {
        if !self.book.rooted() && self.book.revocations() == 0 {
            return false;
        }
        let key = version.key.as_str();
        if version.seal.is_none() || key.starts_with(POLICY_PREFIX) || !judged_by_policy(key) {
            // Unsigned versions (legacy writers, PROTOCOL.md §7.5) are outside the policy: a
            // cluster takes a root once none is left (`resign`). Policy entries are never
            // masked in the store: what a revocation does to a grant is the book's to say,
            // and an entry must stay readable for every replica to rebuild its book. Other
            // reserved keys (endorsements, member records, proofs) follow Trust I only.
            return false;
        }
        act_of(version, self.nodes.get(&version.dot.actor), certifier)
            .is_ok_and(|act| self.book.masked(&act).is_some())
    }

    /// The verdict on `version` for a replica holding `store` (PROTOCOL.md §7.4, in order).
    pub fn judge(&self, store: &Store, version: &Version, certifier: &dyn Certifier) -> Verdict {
        let dot = version.dot;
        if store.check(version).is_err() || !audit_fields_fit(version) {
            return Verdict::Malformed;
        }
        let sealed = version.seal.is_some();
        if self.mode == Mode::Unchecked {
            return if store.digest().contains(&dot) {
                Verdict::Duplicate
            } else {
                Verdict::Apply
            };
        }
        if store.digest().contains(&dot) {
            // The signed form of what was applied or refused with this dot is kept (while it
            // is stored), so a second version signed for it is caught whichever came first.
            return match self.signed_version(store, dot) {
                Some(held)
                    if sealed
                        && held.seal.is_some()
                        && differ(held, version)
                        && self.signed_by_writer(version, certifier) =>
                {
                    Verdict::Equivocation(Box::new(Equivocation {
                        first: held.clone(),
                        second: version.clone(),
                    }))
                }
                Some(held)
                    if sealed
                        && held.seal.is_none()
                        && !differ(held, version)
                        && self.signed_by_writer(version, certifier) =>
                {
                    Verdict::Reseal
                }
                _ => Verdict::Duplicate,
            };
        }
        // An unsigned version is a legacy writer's, applied only while permissive. An endorsed
        // writer always signs: its unsigned versions are forged, or copies a node of protocol
        // 2 relayed without their signatures (the signed ones come by anti-entropy).
        // Once a policy root is held, nothing unsigned is taken: an unsigned version proves no
        // node, and the policy judges nodes (PROTOCOL.md §8.4).
        if !sealed
            && (self.mode == Mode::Enforcing
                || self.book.rooted()
                || self.writers.contains_key(&dot.actor)
                || is_endorsement(version.key.as_str(), dot))
        {
            return Verdict::Forged(Forgery::Unsigned);
        }
        if is_endorsement(version.key.as_str(), dot) {
            let Payload::Value(payload) = &version.payload else {
                return Verdict::Forged(Forgery::BadEndorsement(EndorsementError::Malformed));
            };
            return match certifier.check_endorsement(
                payload,
                dot.actor,
                version.timestamp.wall_ms(),
            ) {
                Err(e) => Verdict::Forged(Forgery::BadEndorsement(e)),
                Ok(public) if sealed && !certifier.verify_version(&public, version) => {
                    Verdict::Forged(Forgery::BadSignature)
                }
                Ok(_) => Verdict::Apply,
            };
        }
        if sealed {
            let Some(public) = self.writers.get(&dot.actor) else {
                return Verdict::Deferred;
            };
            if !certifier.verify_version(public, version) {
                return Verdict::Forged(Forgery::BadSignature);
            }
        }
        // A convicted writer's policy entries are judged like any other: each is proven by
        // its author, not by its writer, and refusing them at the replicas that heard of the
        // conviction first would leave the others' contexts naming positions never held there.
        if self.tainted(dot) && !version.key.as_str().starts_with(POLICY_PREFIX) {
            return Verdict::Refused(Refusal::Quarantined);
        }
        if let Some(refusal) = granted(version, certifier) {
            return Verdict::Refused(refusal);
        }
        self.judge_by_policy(version, certifier)
    }

    /// Trust II's verdict (PROTOCOL.md §8.4) on a version that passed Trust I's rules: in its
    /// own context, once every entry the context names is held here.
    fn judge_by_policy(&self, version: &Version, certifier: &dyn Certifier) -> Verdict {
        let key = version.key.as_str();
        if !judged_by_policy(key) {
            return Verdict::Apply;
        }
        let entry = key.starts_with(POLICY_PREFIX);
        if version.seal.is_none() {
            // Unsigned versions of legacy writers (PROTOCOL.md §7.5) prove nothing and are
            // outside the policy: they cannot be policy entries.
            return if entry {
                Verdict::Refused(Refusal::Unproven)
            } else {
                Verdict::Apply
            };
        }
        let context = context_of(version);
        // (Not for a write made for a token: its proof is judged the same everywhere below.)
        let for_token = author_of(version).is_some_and(|a| a.kind() == Kind::Token);
        if !entry && !for_token && context.is_empty() && self.book.is_empty() {
            return Verdict::Apply;
        }
        let act = match act_of(version, self.nodes.get(&version.dot.actor), certifier) {
            Err(refusal) => return Verdict::Refused(refusal),
            Ok(act) => act,
        };
        if act.position.is_some_and(|p| act.saw(p)) {
            // It would wait for itself.
            return Verdict::Refused(Refusal::Denied(Denial::Malformed));
        }
        if missing(&self.book, context).is_some() {
            return Verdict::AwaitsContext;
        }
        if act.author.as_ref().is_some_and(|a| a.kind() == Kind::Token)
            && !self.token_proven(version, &act)
        {
            return Verdict::Refused(Refusal::Unproven);
        }
        if let Err(denial) = self.book.judge(&act) {
            return Verdict::Refused(Refusal::Denied(denial));
        }
        if !entry && !self.sealed_as_required(version, &act.context) {
            return Verdict::Refused(Refusal::NotSealed);
        }
        Verdict::Apply
    }

    /// Whether `version` (a write made in `context`) is sealed if its key is secret there
    /// (PROTOCOL.md §9.3): a value under a prefix that a keyring entry in the context covers
    /// names one of those entries' generations, and its own key (so a sealed value copied
    /// under another key is refused). Tombstones carry nothing to seal.
    pub fn sealed_as_required(&self, version: &Version, context: &VClock) -> bool {
        let Payload::Value(value) = &version.payload else {
            return true;
        };
        let key = version.key.as_str();
        let generations = self.book.generations_for(key, context);
        generations.is_empty()
            || sealed::header_of(value).is_some_and(|h| {
                generations.iter().any(|n| n == h.generation)
                    && h.key_digest == sealed::key_digest(key)
            })
    }

    /// Whether `version`, made for a token (`act`'s author), carries the token's proof
    /// (docs/PROTOCOL.md §8.7): a signature over its key, payload, author and context by the
    /// key derived from the token's secret, whose public half the token's entry holds, and
    /// that entry in the version's context (so every replica checks the same key).
    fn token_proven(&self, version: &Version, act: &Act) -> bool {
        let Some(author) = &act.author else {
            return false;
        };
        let Some(id) = author.name() else {
            return false;
        };
        let proof = version
            .seal
            .as_deref()
            .and_then(|s| s.grounds.as_deref())
            .and_then(|g| g.proof.as_ref());
        let Some(proof) = proof.filter(|p| p.certificate.is_none()) else {
            return false;
        };
        let message = author_signed_bytes(
            version.key.as_str(),
            &version.payload,
            &author.to_string(),
            &act.context,
        );
        let signature = ed25519_zebra::Signature::from(proof.signature);
        // Every entry for the id in the context (all held here, the same at every replica):
        // the proof holds if one of their keys checks it.
        self.book
            .token_entries(id)
            .iter()
            .filter(|entry| covers(&act.context, entry.position))
            .filter_map(|entry| VerificationKey::try_from(entry.public).ok())
            .any(|public| public.verify(&signature, &message).is_ok())
    }

    /// Keeps `version`, which waits until the entries of `first`'s writer are all held up to
    /// `first`'s number, within the bounds.
    fn park(&mut self, first: Dot, version: Version) {
        let size = version.approx_encoded_len();
        if self.unripe_count >= MAX_UNRIPE || self.unripe_bytes + size > MAX_UNRIPE_BYTES {
            return;
        }
        // One waiting version per dot (another with the same dot is judged when it comes
        // again, after this one).
        if !self
            .unripe_dots
            .insert((version.dot.actor, version.dot.counter))
        {
            return;
        }
        self.unripe
            .entry((first.actor, first.counter))
            .or_default()
            .push(version);
        self.unripe_count += 1;
        self.unripe_bytes += size;
    }

    /// The parked versions that waited for entries of `writer` now all held up to the one
    /// each waited for.
    fn ripe(&mut self, writer: WriterId) -> Vec<Version> {
        if self.unripe_count == 0 {
            return Vec::new();
        }
        let through = self.book.held_through(writer);
        let ripe: Vec<(WriterId, u64)> = self
            .unripe
            .range((writer, 0)..=(writer, through))
            .map(|(&k, _)| k)
            .collect();
        let mut released = Vec::new();
        for at in ripe {
            for version in self.unripe.remove(&at).unwrap_or_default() {
                self.unripe_dots
                    .remove(&(version.dot.actor, version.dot.counter));
                self.unripe_count -= 1;
                self.unripe_bytes -= version.approx_encoded_len();
                released.push(version);
            }
        }
        released
    }

    /// Judges `version` and acts on the verdict against `store` ([`Judge::screen`], then the
    /// versions to apply applied). Returns every verdict given.
    pub fn admit(
        &mut self,
        store: &mut Store,
        version: Version,
        certifier: &dyn Certifier,
    ) -> Outcome {
        let Screened {
            apply,
            mut verdicts,
        } = self.screen(store, vec![version], certifier);
        for version in apply {
            let dot = version.dot;
            let result = store.apply(version);
            // Only a version judged `Apply` can turn out a duplicate or malformed here.
            let Some(entry) = verdicts
                .iter_mut()
                .find(|(d, v)| *d == dot && *v == Verdict::Apply)
            else {
                continue;
            };
            match result {
                Ok(Applied::Duplicate) => entry.1 = Verdict::Duplicate,
                Ok(_) => {}
                Err(_) => entry.1 = Verdict::Malformed,
            }
        }
        verdicts
    }

    /// Judges a batch of versions from a peer (one message) and acts on every verdict but
    /// [`Verdict::Apply`]: a refused dot is recorded as seen in `store`, a deferred version
    /// kept, an equivocation's writer convicted. Endorsements are judged first, and one found
    /// valid registers its writer's key at once and releases the versions that waited for it,
    /// which are judged in turn. The caller applies [`Screened::apply`] to `store` next, by
    /// whichever path the batch came (push, delta, snapshot chunk), before anything else
    /// touches `store`.
    pub fn screen(
        &mut self,
        store: &mut Store,
        versions: Vec<Version>,
        certifier: &dyn Certifier,
    ) -> Screened {
        self.prepare(&versions, certifier);
        let (endorsements, rest): (Vec<_>, Vec<_>) = versions
            .into_iter()
            .partition(|v| is_endorsement(v.key.as_str(), v.dot));
        let mut queue: std::collections::VecDeque<Version> =
            endorsements.into_iter().chain(rest).collect();
        let mut screened = Screened::default();
        // The versions of this batch to apply, by dot: not in the store until the caller
        // applies them, so a second version with one of their dots is judged against them.
        let mut to_apply: BTreeMap<(WriterId, u64), usize> = BTreeMap::new();
        // Versions that waited for their context and whose context is now here.
        let writers: Vec<WriterId> = self.unripe.keys().map(|&(w, _)| w).collect();
        for writer in writers {
            queue.extend(self.ripe(writer));
        }
        while let Some(mut version) = queue.pop_front() {
            let dot = version.dot;
            let verdict = match to_apply.get(&(dot.actor, dot.counter)) {
                Some(&i) => self.judge_against(&screened.apply[i], &version, certifier),
                None => self.judge(store, &version, certifier),
            };
            match &verdict {
                Verdict::Apply => {
                    to_apply.insert((dot.actor, dot.counter), screened.apply.len());
                    if self.admit_policy(&version, certifier) {
                        queue.extend(self.ripe(dot.actor));
                    }
                    // Granted in its context, and masked already by what is held here: applied
                    // masked, so it supersedes what it superseded (PROTOCOL.md §8.5).
                    if self.masks(&version, certifier) {
                        version.masked = Masked(true);
                    }
                    // A proof is acted on when judged, whatever supersedes it later (§7.6).
                    if let Some(proof) = Proof::in_version(&version) {
                        self.convict(&proof.equivocation);
                    }
                    if self.register(&version, certifier).is_some() {
                        let Some(&public) = self.writers.get(&dot.actor) else {
                            continue;
                        };
                        let released = self.release(dot.actor);
                        // Checked together, as the batch's own were.
                        let items: Vec<(VerificationKey, &Version)> =
                            released.iter().map(|v| (public, v)).collect();
                        if items.len() >= 2 {
                            certifier.prepare(&items);
                        }
                        queue.extend(released);
                    }
                    screened.apply.push(version);
                }
                Verdict::Refused(refusal) => {
                    store.record_refused(dot);
                    let size = version.approx_encoded_len();
                    // A plaintext refused under a secret prefix is kept nowhere, not even to
                    // catch an equivocation (whose proof would carry it to every node).
                    if version.seal.is_some()
                        && *refusal != Refusal::NotSealed
                        && self.refused.len() < MAX_REFUSED_KEPT
                        && self.refused_bytes + size <= MAX_REFUSED_BYTES
                    {
                        self.refused_bytes += size;
                        self.refused.insert((dot.actor, dot.counter), version);
                    }
                }
                Verdict::Deferred => self.defer(version),
                Verdict::AwaitsContext => {
                    if let Some(first) = missing(&self.book, context_of(&version)) {
                        self.park(first, version);
                    }
                }
                Verdict::Equivocation(proof) => {
                    self.convict(proof);
                }
                // Kept for the caller's merge, which skips it: a snapshot chunk's merge must
                // know every version the chunk holds.
                Verdict::Duplicate => screened.apply.push(version),
                Verdict::Reseal => {
                    if let Some(seal) = version.seal.as_deref() {
                        store.attach_seal(dot, seal.clone());
                    }
                    // A duplicate to the merge, which must know what a chunk holds.
                    screened.apply.push(version);
                }
                Verdict::Forged(_) | Verdict::Malformed => {}
            }
            screened.verdicts.push((dot, verdict));
        }
        screened
    }

    /// Hands the certifier every signature of `versions` whose key is known (endorsed here,
    /// or in an endorsement of the batch itself), so it may check them together.
    fn prepare(&self, versions: &[Version], certifier: &dyn Certifier) {
        if versions.len() < 2 {
            return;
        }
        let in_batch: BTreeMap<WriterId, VerificationKey> = versions
            .iter()
            .filter(|v| is_endorsement(v.key.as_str(), v.dot))
            .filter_map(|v| {
                let payload = v.payload.value()?;
                let public = Endorsement::public_key(payload)?;
                Some((v.dot.actor, public))
            })
            .collect();
        let items: Vec<(VerificationKey, &Version)> = versions
            .iter()
            .filter(|v| v.seal.is_some())
            .filter_map(|v| {
                let key = in_batch
                    .get(&v.dot.actor)
                    .or_else(|| self.writers.get(&v.dot.actor))?;
                Some((*key, v))
            })
            .collect();
        if items.len() >= 2 {
            certifier.prepare(&items);
        }
    }

    /// The verdict on `version` when `held`, a version with its dot, is about to be applied:
    /// an equivocation if both are signed by their writer and differ, else a duplicate.
    fn judge_against(
        &self,
        held: &Version,
        version: &Version,
        certifier: &dyn Certifier,
    ) -> Verdict {
        if held.seal.is_some()
            && version.seal.is_some()
            && differ(held, version)
            && self.signed_by_writer(version, certifier)
        {
            Verdict::Equivocation(Box::new(Equivocation {
                first: held.clone(),
                second: version.clone(),
            }))
        } else {
            Verdict::Duplicate
        }
    }

    /// Whether `version` is signed by its writer: an endorsement with the key in its own
    /// payload (if that endorsement is valid), any other version with the writer's endorsed key.
    fn signed_by_writer(&self, version: &Version, certifier: &dyn Certifier) -> bool {
        if version.seal.is_none() {
            return false;
        }
        if is_endorsement(version.key.as_str(), version.dot) {
            return endorsed_key(version, certifier)
                .is_some_and(|public| certifier.verify_version(&public, version));
        }
        self.writers
            .get(&version.dot.actor)
            .is_some_and(|public| certifier.verify_version(public, version))
    }

    /// The keys `store` holds versions of convicted writers on, at or after the sequence
    /// number they equivocated at: the keys this replica must write again (PROTOCOL.md §7.6).
    /// Reserved keys are not among them: no replica could write another writer's record.
    pub fn tainted_keys(&self, store: &Store) -> Vec<Key> {
        if self.convicted.is_empty() {
            return Vec::new();
        }
        let mut keys: Vec<Key> = store
            .versions_all()
            .filter(|v| self.tainted(v.dot))
            .map(|v| v.key.clone())
            .filter(|key| !key.as_str().starts_with(RESERVED_PREFIX))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Convicts the proof's writer from its number on (or from a lower one than before).
    fn convict(&mut self, proof: &Equivocation) {
        let dot = proof.dot();
        let previous = self.convicted.get(&dot.actor).copied();
        let lowest = previous.map_or(dot.counter, |s| s.min(dot.counter));
        self.convicted.insert(dot.actor, lowest);
        if previous != Some(lowest) {
            self.convictions_revision += 1;
        }
    }

    fn defer(&mut self, version: Version) {
        let size = version.approx_encoded_len();
        let (writer, seq) = (version.dot.actor, version.dot.counter);
        let waiting = self.deferred.entry(writer).or_default();
        let writer_count = self.deferred_counts.get(&writer).copied().unwrap_or(0);
        let same_seq = waiting.entry(seq).or_default();
        if writer_count < MAX_DEFERRED_PER_WRITER
            && self.deferred_count < MAX_DEFERRED
            && self.deferred_bytes + size <= MAX_DEFERRED_BYTES
            && !same_seq.contains(&version)
        {
            same_seq.push(version);
            *self.deferred_counts.entry(writer).or_default() += 1;
            self.deferred_count += 1;
            self.deferred_bytes += size;
        } else if same_seq.is_empty() {
            waiting.remove(&seq);
            if waiting.is_empty() {
                self.deferred.remove(&writer);
            }
        }
    }

    /// The versions that waited for `writer`'s endorsement.
    fn release(&mut self, writer: WriterId) -> Vec<Version> {
        let waiting: Vec<Version> = self
            .deferred
            .remove(&writer)
            .unwrap_or_default()
            .into_values()
            .flatten()
            .collect();
        self.deferred_counts.remove(&writer);
        self.deferred_count -= waiting.len();
        self.deferred_bytes -= waiting
            .iter()
            .map(Version::approx_encoded_len)
            .sum::<usize>();
        waiting
    }
}

/// The writer key `version` endorses, if it is a valid endorsement (its seal not checked).
pub(super) fn endorsed_key(
    version: &Version,
    certifier: &dyn Certifier,
) -> Option<VerificationKey> {
    if !is_endorsement(version.key.as_str(), version.dot) {
        return None;
    }
    let payload = version.payload.value()?;
    certifier
        .check_endorsement(payload, version.dot.actor, version.timestamp.wall_ms())
        .ok()
}

/// Whether a version with this key and dot is its writer's endorsement: its first version,
/// under its own endorsement key.
pub fn is_endorsement(key: &str, dot: Dot) -> bool {
    dot.counter == 1
        && key
            .strip_prefix(WRITERS_PREFIX)
            .is_some_and(|id| id == dot.actor.to_string())
}

/// Trust I's grant rule: `None` if the version's writer may write its key, else why not.
fn granted(version: &Version, certifier: &dyn Certifier) -> Option<Refusal> {
    let (key, writer) = (version.key.as_str(), version.dot.actor);
    if !key.starts_with(RESERVED_PREFIX) {
        return None;
    }
    if key.starts_with(WRITERS_PREFIX) {
        return Some(Refusal::NotAnEndorsement);
    }
    if let Some(id) = key.strip_prefix(MEMBERS_PREFIX) {
        return (id != writer.to_string()).then_some(Refusal::NotOwnRecord);
    }
    if key.starts_with(POLICY_PREFIX) {
        // Judged by the grant rule (`Judge::judge_by_policy`).
        return None;
    }
    if key.starts_with(EQUIVOCATIONS_PREFIX) {
        // Only a valid proof, under its publisher's own key: never a tombstone, so no writer
        // can take a proof back or suppress one by writing over it (PROTOCOL.md §7.6).
        let holds = Proof::in_version(version).is_some_and(|p| p.holds(certifier));
        return (!holds).then_some(Refusal::NotAProof);
    }
    Some(Refusal::Reserved)
}

/// The first writer `context` names whose entries are not all held in `book` up to the number
/// it names: that writer and number, if any. A version waiting for it is judged again once
/// that writer's entries are held that far, not at each one before.
fn missing(book: &Book, context: &VClock) -> Option<Dot> {
    context.dots.iter().find_map(|(&writer, &number)| {
        (book.held_through(writer) < number).then(|| Dot::new(writer, number))
    })
}
