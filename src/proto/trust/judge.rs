//! The verdict on every version from a peer (PROTOCOL.md §7.4), and what follows from it.

use std::collections::BTreeMap;

use ed25519_zebra::VerificationKey;

use super::{
    EQUIVOCATIONS_PREFIX, MEMBERS_PREFIX, RESERVED_PREFIX, WRITERS_PREFIX,
    keys::{Certifier, Endorsement, EndorsementError, Equivocation, SignedVersion},
};
use crate::proto::{Applied, Dot, Key, Payload, Store, WriterId};

/// The most versions kept waiting for one writer's endorsement.
pub const MAX_DEFERRED_PER_WRITER: usize = 1_024;

/// The most versions kept waiting for endorsements in all.
pub const MAX_DEFERRED: usize = 16_384;

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
    /// Not signed by its writer's key, or an endorsement that is not valid: drop it, unseen,
    /// and count it against the peer.
    Forged(Forgery),
    /// Validly signed but not allowed: record its dot as seen, with no value.
    Refused(Refusal),
    /// Malformed (§1 step 1, or audit fields over their limits): drop it, unseen.
    Malformed,
    /// Its writer signed another version with the same dot: here is the proof.
    Equivocation(Box<Equivocation>),
}

/// How a version was forged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// Its signature is not its writer's over its content.
    BadSignature,
    /// It is an endorsement, and not a valid one.
    BadEndorsement(EndorsementError),
}

/// Why a validly signed version is refused (Trust I's grant rule, and quarantine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A key under `_confmesh/` that no writer may write.
    Reserved,
    /// An endorsement key written other than as the writer's own first version.
    NotAnEndorsement,
    /// Another writer's member record.
    NotOwnRecord,
    /// Its writer was proven to equivocate at or before this sequence number.
    Quarantined,
}

/// One replica's trust state: the endorsed writers' keys, the equivocations proven, the
/// signed versions it applied (to detect equivocation), and the versions waiting for their
/// writer's endorsement.
#[derive(Default)]
pub struct Judge {
    writers: BTreeMap<WriterId, VerificationKey>,
    /// The lowest sequence number each convicted writer equivocated at.
    convicted: BTreeMap<WriterId, u64>,
    /// By (writer, sequence number).
    signed: BTreeMap<(WriterId, u64), SignedVersion>,
    deferred: BTreeMap<WriterId, Vec<SignedVersion>>,
    deferred_count: usize,
    proofs_waiting: Vec<Equivocation>,
}

/// What [`Judge::admit`] did with each version it judged: the one given, and any deferred ones
/// an endorsement released.
pub type Outcome = Vec<(Dot, Verdict)>;

impl Judge {
    /// An empty trust state.
    pub fn new() -> Judge {
        Judge::default()
    }

    /// The key of an endorsed writer.
    pub fn writer(&self, writer: WriterId) -> Option<&VerificationKey> {
        self.writers.get(&writer)
    }

    /// The lowest sequence number `writer` was proven to equivocate at.
    pub fn convicted(&self, writer: WriterId) -> Option<u64> {
        self.convicted.get(&writer).copied()
    }

    /// The signed form of a version this replica applied or wrote, by its dot.
    pub fn signed_version(&self, dot: Dot) -> Option<&SignedVersion> {
        self.signed.get(&(dot.actor, dot.counter))
    }

    /// Versions waiting for their writer's endorsement.
    pub fn deferred(&self) -> usize {
        self.deferred_count
    }

    /// Records a version this replica wrote itself (already applied to its store): kept to
    /// detect equivocation, and, for its endorsement, its key registered.
    pub fn own(&mut self, signed: &SignedVersion, certifier: &dyn Certifier) {
        let dot = signed.version.dot;
        if is_endorsement(signed.version.key.as_str(), dot)
            && let Some(payload) = signed.version.payload.value()
            && let Ok(public) = Endorsement::check(
                payload,
                dot.actor,
                certifier,
                signed.version.timestamp.wall_ms(),
            )
        {
            self.writers.insert(dot.actor, public);
        }
        self.signed.insert((dot.actor, dot.counter), signed.clone());
    }

    /// The verdict on `signed` for a replica holding `store` (PROTOCOL.md §7.4, in order).
    pub fn judge(
        &self,
        store: &Store,
        signed: &SignedVersion,
        certifier: &dyn Certifier,
    ) -> Verdict {
        let version = &signed.version;
        let dot = version.dot;
        if store.check(version).is_err() || !signed.audit_fields_fit() {
            return Verdict::Malformed;
        }
        if store.digest().contains(&dot) {
            // The signed form of what was applied or refused with this dot is kept, so a
            // second version signed for it is caught whichever arrived first.
            return match self.signed.get(&(dot.actor, dot.counter)) {
                Some(held)
                    if held.differs_from(signed) && self.signed_by_writer(signed, certifier) =>
                {
                    Verdict::Equivocation(Box::new(Equivocation {
                        first: held.clone(),
                        second: signed.clone(),
                    }))
                }
                _ => Verdict::Duplicate,
            };
        }
        if is_endorsement(version.key.as_str(), dot) {
            let Payload::Value(payload) = &version.payload else {
                return Verdict::Forged(Forgery::BadEndorsement(EndorsementError::Malformed));
            };
            return match Endorsement::check(
                payload,
                dot.actor,
                certifier,
                signed.version.timestamp.wall_ms(),
            ) {
                Err(e) => Verdict::Forged(Forgery::BadEndorsement(e)),
                Ok(public) if !signed.verifies(&public) => Verdict::Forged(Forgery::BadSignature),
                Ok(_) => Verdict::Apply,
            };
        }
        let Some(public) = self.writers.get(&dot.actor) else {
            return Verdict::Deferred;
        };
        if !signed.verifies(public) {
            return Verdict::Forged(Forgery::BadSignature);
        }
        if self
            .convicted
            .get(&dot.actor)
            .is_some_and(|&s| dot.counter >= s)
        {
            return Verdict::Refused(Refusal::Quarantined);
        }
        match granted(&version.key, dot.actor) {
            Some(refusal) => Verdict::Refused(refusal),
            None => Verdict::Apply,
        }
    }

    /// Judges `signed` and acts on the verdict against `store`: applies it, records a refused
    /// dot as seen, keeps a deferred version, records an equivocation. An applied endorsement
    /// releases the versions that waited for it, judged in turn. Returns every verdict given.
    pub fn admit(
        &mut self,
        store: &mut Store,
        signed: SignedVersion,
        certifier: &dyn Certifier,
    ) -> Outcome {
        let mut outcome = Vec::new();
        let mut queue = vec![signed];
        while let Some(signed) = queue.pop() {
            let dot = signed.version.dot;
            let mut verdict = self.judge(store, &signed, certifier);
            match &verdict {
                Verdict::Apply => {
                    let at_ms = signed.version.timestamp.wall_ms();
                    let endorsement = is_endorsement(signed.version.key.as_str(), dot)
                        .then(|| signed.version.payload.value().cloned())
                        .flatten();
                    match store.apply(signed.version.clone()) {
                        Ok(Applied::Duplicate) => verdict = Verdict::Duplicate,
                        Ok(_) => {
                            if let Some(payload) = endorsement
                                && let Ok(public) =
                                    Endorsement::check(&payload, dot.actor, certifier, at_ms)
                            {
                                self.writers.insert(dot.actor, public);
                                queue.extend(self.release(dot.actor, certifier));
                            }
                            self.signed.insert((dot.actor, dot.counter), signed);
                        }
                        Err(_) => verdict = Verdict::Malformed,
                    }
                }
                Verdict::Refused(_) => {
                    store.record_refused(dot);
                    self.signed.insert((dot.actor, dot.counter), signed);
                }
                Verdict::Deferred => self.defer(signed),
                Verdict::Equivocation(proof) => {
                    self.convict(proof);
                }
                Verdict::Duplicate | Verdict::Forged(_) | Verdict::Malformed => {}
            }
            outcome.push((dot, verdict));
        }
        outcome
    }

    /// Accepts a proof of equivocation (as received from a peer, or found here) if it holds:
    /// one dot, different contents, each signed by its writer's key (for two endorsements, each
    /// with the key in its own payload: two keys with one writer id). A proof about a writer
    /// not endorsed here yet waits for it. Returns whether the proof convicted the writer now.
    pub fn accept_proof(&mut self, proof: Equivocation, certifier: &dyn Certifier) -> bool {
        let writer = proof.dot().actor;
        let holds = proof.first.version.dot == proof.second.version.dot
            && proof.first.differs_from(&proof.second)
            && self.signed_by_writer(&proof.first, certifier)
            && self.signed_by_writer(&proof.second, certifier);
        match self.writers.get(&writer) {
            Some(_) if holds => self.convict(&proof),
            Some(_) => false,
            None => {
                if self.proofs_waiting.len() < MAX_DEFERRED {
                    self.proofs_waiting.push(proof);
                }
                false
            }
        }
    }

    /// Whether `signed` is signed by its writer: an endorsement with the key in its own
    /// payload (if that endorsement is valid), any other version with the writer's endorsed key.
    fn signed_by_writer(&self, signed: &SignedVersion, certifier: &dyn Certifier) -> bool {
        let dot = signed.version.dot;
        if is_endorsement(signed.version.key.as_str(), dot) {
            return signed.version.payload.value().is_some_and(|payload| {
                Endorsement::check(
                    payload,
                    dot.actor,
                    certifier,
                    signed.version.timestamp.wall_ms(),
                )
                .is_ok_and(|public| signed.verifies(&public))
            });
        }
        self.writers
            .get(&dot.actor)
            .is_some_and(|public| signed.verifies(public))
    }

    /// The keys `store` holds versions of convicted writers on, at or after the sequence
    /// number they equivocated at: the keys this replica must write again (PROTOCOL.md §7.6).
    /// Reserved keys are not among them: no replica could write another writer's record.
    pub fn tainted_keys(&self, store: &Store) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .signed
            .keys()
            .filter(|(writer, seq)| self.convicted.get(writer).is_some_and(|&s| *seq >= s))
            .filter_map(|&(writer, seq)| {
                store
                    .version_by_dot(&Dot::new(writer, seq))
                    .map(|v| v.key.clone())
            })
            .filter(|key| !key.as_str().starts_with(RESERVED_PREFIX))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn convict(&mut self, proof: &Equivocation) -> bool {
        let dot = proof.dot();
        let lowest = self.convicted.entry(dot.actor).or_insert(dot.counter);
        let changed = dot.counter <= *lowest;
        *lowest = (*lowest).min(dot.counter);
        changed
    }

    fn defer(&mut self, signed: SignedVersion) {
        let waiting = self.deferred.entry(signed.version.dot.actor).or_default();
        if waiting.len() < MAX_DEFERRED_PER_WRITER
            && self.deferred_count < MAX_DEFERRED
            && !waiting.contains(&signed)
        {
            waiting.push(signed);
            self.deferred_count += 1;
        }
    }

    /// The versions that waited for `writer`'s endorsement, and its waiting proofs accepted.
    fn release(&mut self, writer: WriterId, certifier: &dyn Certifier) -> Vec<SignedVersion> {
        let waiting = self.deferred.remove(&writer).unwrap_or_default();
        self.deferred_count -= waiting.len();
        let (now, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.proofs_waiting)
            .into_iter()
            .partition(|p| p.dot().actor == writer);
        self.proofs_waiting = still;
        for proof in now {
            self.accept_proof(proof, certifier);
        }
        waiting
    }
}

/// Whether a version with this key and dot is its writer's endorsement: its first version,
/// under its own endorsement key.
fn is_endorsement(key: &str, dot: Dot) -> bool {
    dot.counter == 1
        && key
            .strip_prefix(WRITERS_PREFIX)
            .is_some_and(|id| id == dot.actor.to_string())
}

/// Trust I's grant rule: `None` if `writer` may write `key`, else why not.
fn granted(key: &Key, writer: WriterId) -> Option<Refusal> {
    let key = key.as_str();
    if !key.starts_with(RESERVED_PREFIX) {
        return None;
    }
    if key.starts_with(WRITERS_PREFIX) {
        return Some(Refusal::NotAnEndorsement);
    }
    if let Some(id) = key.strip_prefix(MEMBERS_PREFIX) {
        return (id != writer.to_string()).then_some(Refusal::NotOwnRecord);
    }
    if key.starts_with(EQUIVOCATIONS_PREFIX) {
        return None;
    }
    Some(Refusal::Reserved)
}
