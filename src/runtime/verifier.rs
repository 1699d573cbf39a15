//! Signatures checked ahead of time, in ZIP 215 batches on every core (docs/PROTOCOL.md
//! §7.10): the runtime's side of [`Certifier::prepare`](crate::proto::trust::Certifier).
//!
//! A batch of versions from a peer (a push, a delta, a snapshot chunk) is split across the
//! machine's cores; each core checks its share in batches of [`BATCH`] signatures (one
//! multiscalar multiplication each) and, when a batch fails, each of its signatures alone,
//! by halves down to a few, so a forgery costs its sender, not the honest versions beside it. Under ZIP 215 a batch
//! verifies exactly when each of its signatures does, so the verdicts are those of checking
//! one by one. Results are kept, by a digest of key, signature and signed bytes, until the
//! judge asks for each as it judges the batch (a bounded number).

use std::{collections::HashMap, sync::Mutex};

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};
use rand::{SeedableRng, rngs::StdRng};
use sha2::{Digest as _, Sha256};

use crate::proto::{
    Version,
    trust::{verifies, version_signed_bytes},
};

/// Signatures per batch verification.
const BATCH: usize = 256;
/// The most results kept (about 80 bytes each).
const MAX_HELD: usize = 262_144;
/// A failed batch this small or smaller is checked one signature at a time.
const ONE_BY_ONE: usize = 4;
/// Below this many signatures, one core checks them all.
const PARALLEL_FROM: usize = 2 * BATCH;

/// What a digest names: one signature by one key over one message.
type Check = [u8; 32];

/// Results of the last batch checked ahead of time.
#[derive(Debug, Default)]
pub(crate) struct Prechecked {
    results: Mutex<HashMap<Check, bool>>,
}

impl Prechecked {
    /// Checks every item's signature, in batches across the cores, and keeps the results
    /// until asked for.
    pub(crate) fn prepare(&self, items: &[(VerificationKey, &Version)]) {
        let jobs: Vec<Job> = items
            .iter()
            .filter_map(|(public, version)| {
                let seal = version.seal.as_deref()?;
                let message = version_signed_bytes(version);
                Some(Job {
                    check: check_of(public, &seal.signature, &message),
                    public: VerificationKeyBytes::from(*public),
                    signature: Signature::from_bytes(&seal.signature),
                    message,
                })
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let share = if jobs.len() < PARALLEL_FROM {
            jobs.len().max(1)
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
        let mut held = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Each result is taken when the judge asks for it; those never asked for (a version
        // judged on other grounds first) are dropped once too many gather.
        if held.len() + results.len() > MAX_HELD {
            held.clear();
        }
        held.extend(results);
    }

    /// Whether `public` signed `version`: from the last batch if it was in it, else checked
    /// now.
    pub(crate) fn verify(&self, public: &VerificationKey, version: &Version) -> bool {
        let Some(seal) = version.seal.as_deref() else {
            return false;
        };
        let check = check_of(public, &seal.signature, &version_signed_bytes(version));
        let found = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&check);
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
    use crate::proto::{Key, Store, StoreConfig, trust::WriterKey};

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
