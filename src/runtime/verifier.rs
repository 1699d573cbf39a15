//! Signatures checked ahead of time, in ZIP 215 batches on every core (docs/PROTOCOL.md
//! §7.10): the runtime's side of [`Certifier::prepare`](crate::proto::trust::Certifier).
//!
//! Two callers hand signatures over before the judge asks for them:
//!
//! - the connection readers, for every large message as it arrives ([`Prechecked::precheck`]),
//!   off the node task: the node merges one snapshot chunk while the next one's signatures
//!   are checked, on the other cores;
//! - the judge itself, for the rest of a batch ([`Prechecked::prepare`]), split across the
//!   cores.
//!
//! Each checks in batches of [`BATCH`] signatures (one multiscalar multiplication each) and,
//! when a batch fails, each half again, down to a few checked alone, so a forgery costs its
//! sender, not the honest versions beside it. Under ZIP 215 a batch verifies exactly when
//! each of its signatures does, so the verdicts are those of checking one by one. Results are
//! kept, by a digest of key, signature and signed bytes, until the judge asks for each (a
//! bounded number): a result is only ever a cache of [`verifies`], whoever computed it.
//!
//! The readers know a writer's key from its endorsement, in the message or seen before. They
//! take a key only if the writer id derives from it (PROTOCOL.md §7.2), without checking the
//! endorsement's certificate: that is the judge's work, and a key that turns out not endorsed
//! only means results nobody asks for.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError, RwLock},
};

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};
use rand::{SeedableRng, rngs::StdRng};
use sha2::{Digest as _, Sha256};

use crate::proto::{
    Version, WriterId,
    trust::{Endorsement, is_endorsement, verifies, version_signed_bytes, writer_id},
};

/// Signatures per batch verification.
const BATCH: usize = 1024;
/// The most results kept (about 80 bytes each).
const MAX_HELD: usize = 262_144;
/// The most writer keys the readers remember (about 72 bytes each).
const MAX_KEYS: usize = 65_536;
/// A failed batch this small or smaller is checked one signature at a time.
const ONE_BY_ONE: usize = 4;
/// Below this many signatures, one core checks them all.
const PARALLEL_FROM: usize = 2 * BATCH;

/// What a digest names: one signature by one key over one message.
type Check = [u8; 32];

/// Results of signatures checked ahead of time, and the writer keys seen.
#[derive(Debug, Default)]
pub(crate) struct Prechecked {
    results: Mutex<HashMap<Check, bool>>,
    keys: RwLock<HashMap<WriterId, VerificationKey>>,
}

impl Prechecked {
    /// Checks every item's signature not checked yet, in batches across the cores, and keeps
    /// the results until asked for.
    pub(crate) fn prepare(&self, items: &[(VerificationKey, &Version)]) {
        // Once per run of one writer's versions (a batch is mostly a few writers').
        let mut last = None;
        for (public, version) in items {
            if last != Some(version.dot.actor) {
                self.learn(version.dot.actor, *public);
                last = Some(version.dot.actor);
            }
        }
        self.check(items, true);
    }

    /// Checks the signatures of `versions` (one message, as it arrives) whose writer's key is
    /// known, here or from an endorsement among them, on this thread; keeps the results until
    /// the judge asks for them.
    pub(crate) fn precheck(&self, versions: &[Version]) {
        for version in versions {
            if is_endorsement(version.key.as_str(), version.dot)
                && let Some(public) = version
                    .payload
                    .value()
                    .and_then(|p| Endorsement::public_key(p))
            {
                self.learn(version.dot.actor, public);
            }
        }
        let signed: Vec<&Version> = versions.iter().filter(|v| v.seal.is_some()).collect();
        let (items, unknown) = self.keyed(&signed);
        self.check(&items, false);
        // A message read beside the one with the endorsements (the next snapshot chunk) may
        // have started before those keys were learned: its versions whose key is known now
        // are checked too.
        if !unknown.is_empty() {
            let (items, _) = self.keyed(&unknown);
            self.check(&items, false);
        }
    }

    /// `versions` with their writer's key where known, and those whose key is not.
    fn keyed<'a>(
        &self,
        versions: &[&'a Version],
    ) -> (Vec<(VerificationKey, &'a Version)>, Vec<&'a Version>) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let mut known = Vec::with_capacity(versions.len());
        let mut unknown = Vec::new();
        for version in versions {
            match keys.get(&version.dot.actor) {
                Some(public) => known.push((*public, *version)),
                None => unknown.push(*version),
            }
        }
        (known, unknown)
    }

    /// Remembers `public` as `writer`'s key if the id derives from it.
    fn learn(&self, writer: WriterId, public: VerificationKey) {
        if writer_id(&public) != writer {
            return;
        }
        let known = |keys: &HashMap<WriterId, VerificationKey>| keys.contains_key(&writer);
        if known(&self.keys.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() < MAX_KEYS {
            keys.insert(writer, public);
        }
    }

    /// Checks the items not checked yet; across the cores if `split`.
    fn check(&self, items: &[(VerificationKey, &Version)], split: bool) {
        let jobs: Vec<Job> = {
            let held = self.held();
            items
                .iter()
                .filter_map(|(public, version)| {
                    let seal = version.seal.as_deref()?;
                    let message = version_signed_bytes(version);
                    let check = check_of(public, &seal.signature, &message);
                    (!held.contains_key(&check)).then(|| Job {
                        check,
                        public: VerificationKeyBytes::from(*public),
                        signature: Signature::from_bytes(&seal.signature),
                        message,
                    })
                })
                .collect()
        };
        if jobs.is_empty() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let share = if !split || jobs.len() < PARALLEL_FROM {
            jobs.len()
        } else {
            jobs.len().div_ceil(cores).max(BATCH)
        };
        let results: Vec<(Check, bool)> = std::thread::scope(|scope| {
            let mut parts = jobs.chunks(share);
            let here = parts.next();
            let others: Vec<_> = parts
                .map(|part| scope.spawn(|| verify_part(part)))
                .collect();
            let mut results = here.map(verify_part).unwrap_or_default();
            for handle in others {
                // A panicking verifier thread leaves its share unchecked: those signatures
                // are checked one by one when asked for.
                if let Ok(part) = handle.join() {
                    results.extend(part);
                }
            }
            results
        });
        let mut held = self.held();
        // Each result is taken when the judge asks for it; those never asked for (a version
        // judged on other grounds first) are dropped once too many gather.
        if held.len() + results.len() > MAX_HELD {
            held.clear();
        }
        held.extend(results);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Check, bool>> {
        self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `public` signed `version`: from a batch checked ahead of time if it was in
    /// one, else checked now.
    pub(crate) fn verify(&self, public: &VerificationKey, version: &Version) -> bool {
        let Some(seal) = version.seal.as_deref() else {
            return false;
        };
        let check = check_of(public, &seal.signature, &version_signed_bytes(version));
        let found = self.held().remove(&check);
        found.unwrap_or_else(|| verifies(version, public))
    }
}

struct Job {
    check: Check,
    public: VerificationKeyBytes,
    signature: Signature,
    message: Vec<u8>,
}

fn check_of(public: &VerificationKey, signature: &[u8; 64], message: &[u8]) -> Check {
    Sha256::new()
        .chain_update(public.as_ref())
        .chain_update(signature)
        .chain_update(message)
        .finalize()
        .into()
}

/// Verifies one core's share, [`BATCH`] at a time.
fn verify_part(part: &[Job]) -> Vec<(Check, bool)> {
    let mut out = Vec::with_capacity(part.len());
    // The batch's random coefficients must be unpredictable to whoever made the signatures.
    let mut seed = [0u8; 32];
    let Ok(()) = getrandom::fill(&mut seed) else {
        return out;
    };
    let mut rng = StdRng::from_seed(seed);
    for chunk in part.chunks(BATCH) {
        verify_batch(chunk, &mut rng, &mut out);
    }
    out
}

/// Verifies `jobs` as one batch; if it fails, each half as a batch, down to
/// [`ONE_BY_ONE`] signatures checked alone: a forgery costs its sender a few batches, not a
/// batch's worth of single checks.
fn verify_batch(jobs: &[Job], rng: &mut StdRng, out: &mut Vec<(Check, bool)>) {
    if jobs.len() <= ONE_BY_ONE {
        out.extend(jobs.iter().map(|job| {
            let ok = VerificationKey::try_from(job.public)
                .is_ok_and(|key| key.verify(&job.signature, &job.message).is_ok());
            (job.check, ok)
        }));
        return;
    }
    let mut verifier = batch::Verifier::new();
    for job in jobs {
        verifier.queue((job.public, job.signature, &job.message));
    }
    if verifier.verify(&mut *rng).is_ok() {
        out.extend(jobs.iter().map(|job| (job.check, true)));
    } else {
        let (first, second) = jobs.split_at(jobs.len() / 2);
        verify_batch(first, rng, out);
        verify_batch(second, rng, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::{Key, Store, StoreConfig, WriterId, trust::WriterKey};

    fn signed(key: &WriterKey, n: usize) -> Vec<Version> {
        let mut store = Store::new(key.id(), StoreConfig::default());
        (1..=n as u64)
            .map(|seq| {
                let version = store
                    .local_version(
                        1_000 + seq,
                        Key::new(&format!("app/k{seq}")).expect("key"),
                        crate::proto::Payload::Value(Bytes::from(vec![seq as u8; 20])),
                        seq,
                        None,
                    )
                    .expect("small");
                key.sign(version, None, None)
            })
            .collect()
    }

    /// `writer`'s endorsement version carrying `public` (its certificate is not checked here).
    fn endorsement(writer: WriterId, public: &WriterKey) -> Version {
        let mut store = Store::new(writer, StoreConfig::default());
        let payload = public.endorsement(vec![1, 2, 3], vec![4, 5, 6]).encode();
        let version = store
            .local_version(
                1_000,
                crate::proto::trust::endorsement_key(writer).expect("key"),
                crate::proto::Payload::Value(payload),
                1,
                None,
            )
            .expect("small");
        public.sign(version, None, None)
    }

    #[test]
    fn a_message_is_checked_ahead_only_with_keys_its_writer_ids_derive_from() {
        let (a, b) = (WriterKey::from_seed([1; 32]), WriterKey::from_seed([2; 32]));
        // A message with a's endorsement then a's versions: checked ahead, all of them.
        let mut message = vec![endorsement(a.id(), &a)];
        message.extend(signed(&a, 40).into_iter().skip(1));
        if let Some(seal) = message[5].seal.as_mut() {
            seal.signature[0] ^= 1;
        }
        let checked = Prechecked::default();
        checked.precheck(&message);
        assert_eq!(checked.held().len(), message.len());
        for (i, version) in message.iter().enumerate() {
            assert_eq!(checked.verify(&a.public(), version), i != 5, "version {i}");
        }
        assert!(checked.held().is_empty(), "each result is answered once");

        // An endorsement claiming a's id with b's key teaches nothing: b's versions under
        // a's id are not checked ahead (the judge checks them, and finds them forged).
        let forger = Prechecked::default();
        let mut forged = vec![endorsement(a.id(), &b)];
        forged.extend(signed(&b, 10).into_iter().map(|mut v| {
            v.dot.actor = a.id();
            v
        }));
        forger.precheck(&forged);
        assert!(forger.held().is_empty());
        assert!(forger.keys.read().expect("lock").is_empty());
        // A key the judge hands over is remembered the same way: only under its own id.
        forger.prepare(&[(b.public(), &forged[1])]);
        assert!(forger.keys.read().expect("lock").is_empty());
        assert!(!forger.verify(&b.public(), &forged[1]));
        let own = signed(&b, 3);
        forger.prepare(&[(b.public(), &own[0]), (b.public(), &own[1])]);
        forger.precheck(&own[2..]);
        assert_eq!(
            forger.held().len(),
            3,
            "b's key learned from the judge's batch"
        );
        assert!(own.iter().all(|v| forger.verify(&b.public(), v)));
        assert!(forger.held().is_empty());
    }

    #[test]
    fn a_batch_gives_each_signature_its_own_verdict() {
        let (a, b) = (WriterKey::from_seed([1; 32]), WriterKey::from_seed([2; 32]));
        let mut versions = signed(&a, 150);
        versions.extend(signed(&b, 150));
        // One noise signature, one value changed under a valid signature, one signed by
        // the other writer's key: each must fail, and only it.
        if let Some(seal) = versions[7].seal.as_mut() {
            seal.signature = [7; 64];
        }
        versions[100].payload = crate::proto::Payload::Tombstone;
        let stolen = versions[200].seal.clone();
        versions[20].seal = stolen;
        let items: Vec<(VerificationKey, &Version)> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| (if i < 150 { a.public() } else { b.public() }, v))
            .collect();
        let checked = Prechecked::default();
        checked.prepare(&items);
        for (i, (public, version)) in items.iter().enumerate() {
            let expected = verifies(version, public);
            assert_eq!(expected, ![7, 20, 100].contains(&i), "version {i}");
            assert_eq!(checked.verify(public, version), expected, "version {i}");
        }
        // Each result is answered once; asked again, it is checked anew, to the same verdict.
        assert!(checked.verify(&items[0].0, items[0].1));
        assert!(!checked.verify(&items[7].0, items[7].1));
    }
}
