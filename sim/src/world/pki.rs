//! The simulated public-key infrastructure of signed versions (docs/PROTOCOL.md §7): a CA,
//! one certificate and one writer key per data directory, and the [`Certifier`] every node of
//! a run judges endorsements and signatures with.
//!
//! Every key is drawn from the run's seed, from a generator of its own (so a run with
//! `--no-signing` draws the same network and faults). A "certificate" is a node key's public
//! half followed by the CA's signature over it; an endorsement is signed by that node key, as
//! the runtime's is by the key of its X.509 certificate (`src/runtime/certifier.rs`).
//!
//! A run of N nodes judges every version N times, and every endorsement N times (N² checks of
//! a certificate and of a public key, which cost a scalar multiplication each). The certifier
//! answers repeated questions from a cache shared by every node of the run, keyed by a
//! SHA-256 digest of everything the answer depends on (for a signature: the key, the
//! signature, and the signed bytes; for an endorsement: the writer and the payload), so a
//! cached answer is the answer the check gives, and a version altered under a valid signature
//! is a new question. Certificates never expire here: the time of an endorsement is not
//! asked, so it is not part of the question.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use confmesh::proto::{
    AuthorProof, Key, Payload, VClock, Version, WriterId,
    node::Signer,
    trust::{
        Certifier, Endorsement, EndorsementError, WriterKey, author_signed_bytes, verifies,
        version_signed_bytes,
    },
};
use ed25519_zebra::{Signature, SigningKey, VerificationKey};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use sha2::{Digest as _, Sha256};

/// Mixed into the run's seed for the generator of keys.
const KEYS_SEED: u64 = 0x7472_7573_745f_6b65;

/// What the CA signs: a domain tag, then the node key.
const CERTIFICATE_TAG: &[u8] = b"confmesh-sim certificate v1";

/// The domain tags of the cache's kinds of question.
const VERSION_QUESTION: &[u8] = b"version";
const CERTIFICATE_QUESTION: &[u8] = b"certificate";
const ENDORSEMENT_QUESTION: &[u8] = b"endorsement";

/// A certificate: the node key (32 bytes), then the CA's signature over it (64 bytes).
const CERTIFICATE_LEN: usize = 32 + 64;

/// The most verdicts the cache holds; past it, it starts again empty.
pub const CACHE_LIMIT: usize = 1 << 20;

/// A writer's identity as a new data directory gets it: its key, with the payload of its
/// endorsement.
pub struct Issued {
    /// The key and its endorsement, for the node's [`TrustConfig`](confmesh::proto::node::TrustConfig).
    pub signer: Arc<Signer>,
    /// The endorsement's payload (what the writer's first version holds).
    pub endorsement: Bytes,
    /// The writer id the key writes under.
    writer: WriterId,
}

impl Issued {
    /// The writer id the key writes under.
    pub fn writer(&self) -> WriterId {
        self.writer
    }
}

/// The CA of a run, and the generator it draws keys from.
pub struct Pki {
    ca: SigningKey,
    rng: Xoshiro256PlusPlus,
    certifier: Arc<SimCertifier>,
}

impl Pki {
    /// The CA of the run with this seed.
    pub fn new(seed: u64) -> Pki {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ KEYS_SEED);
        let ca = SigningKey::from(draw(&mut rng));
        let certifier = Arc::new(SimCertifier::new(VerificationKey::from(&ca)));
        Pki { ca, rng, certifier }
    }

    /// A writer key and a certified node key for a new data directory, and the endorsement
    /// that binds them, all drawn.
    pub fn issue(&mut self) -> Issued {
        let key = WriterKey::from_seed(draw(&mut self.rng));
        let node = SigningKey::from(draw(&mut self.rng));
        let node_public: [u8; 32] = VerificationKey::from(&node).into();
        let mut certificate = node_public.to_vec();
        certificate.extend_from_slice(&self.ca.sign(&certified_bytes(&node_public)).to_bytes());
        let (public, writer): ([u8; 32], WriterId) = (key.public().into(), key.id());
        let signature = node.sign(&Endorsement::signed_bytes(&public, writer));
        let endorsement = key
            .endorsement(certificate, signature.to_bytes().to_vec())
            .encode();
        Issued {
            writer,
            signer: Arc::new(Signer::new(key, endorsement.clone())),
            endorsement,
        }
    }

    /// The certifier every node of the run shares.
    pub fn certifier(&self) -> Arc<SimCertifier> {
        Arc::clone(&self.certifier)
    }

    /// An admin certificate for `name` and its key, drawn (docs/PROTOCOL.md §8.7).
    pub fn admin(&mut self, name: &str) -> SimAdmin {
        let key = SigningKey::from(draw(&mut self.rng));
        let public: [u8; 32] = VerificationKey::from(&key).into();
        let mut certificate = admin_bytes(name, &public);
        certificate.extend_from_slice(&self.ca.sign(&certificate).to_bytes());
        SimAdmin {
            certificate: Bytes::from(certificate),
            key,
            principal: format!("admin:{name}"),
        }
    }
}

/// What the CA signs for an admin: a domain tag, the name's length and the name, the key.
/// The certificate is these bytes followed by the CA's signature.
fn admin_bytes(name: &str, public: &[u8; 32]) -> Vec<u8> {
    let mut bytes = ADMIN_TAG.to_vec();
    bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(public);
    bytes
}

/// What the CA signs for an admin (then its name and key).
const ADMIN_TAG: &[u8] = b"confmesh-sim admin v1";

/// An admin of a run: its certificate and key, which prove the policy entries it makes.
pub struct SimAdmin {
    certificate: Bytes,
    key: SigningKey,
    principal: String,
}

impl SimAdmin {
    /// Its principal, `admin:NAME`.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Its proof of a policy entry under `key` with `payload`, asked for in `context`.
    pub fn prove_rule(&self, key: &Key, payload: &Payload, context: &VClock) -> AuthorProof {
        let message = author_signed_bytes(key.as_str(), payload, &self.principal, context);
        AuthorProof {
            signature: self.key.sign(&message).to_bytes(),
            certificate: Some(self.certificate.clone()),
        }
    }
}

fn draw(rng: &mut Xoshiro256PlusPlus) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill(&mut seed[..]);
    seed
}

fn certified_bytes(node_public: &[u8; 32]) -> Vec<u8> {
    let mut bytes = CERTIFICATE_TAG.to_vec();
    bytes.extend_from_slice(node_public);
    bytes
}

/// Certifies the node keys the run's CA signed; checks signatures with a cache shared by
/// every node of the run.
pub struct SimCertifier {
    ca: VerificationKey,
    cache: Mutex<Cache>,
    /// The most verdicts cached ([`CACHE_LIMIT`]).
    limit: usize,
}

/// Answers by the digest of their question, and how often each path was taken.
#[derive(Default)]
struct Cache {
    /// Signatures of versions, and certificates with the signatures they made.
    verdicts: Answers<bool>,
    /// Endorsements: the writer's key, or what is wrong.
    endorsements: Answers<Result<VerificationKey, EndorsementError>>,
    stats: CacheStats,
}

type Answers<T> = HashMap<Question, T, BuildHasherDefault<FirstWord>>;

/// How the certifier answered, over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Checks made (signatures of versions, and certificates with their signatures).
    pub checked: u64,
    /// Answers from the cache.
    pub cached: u64,
    /// Times the cache was full and started again.
    pub cleared: u64,
}

/// A SHA-256 digest of a question: uniform already, so its first word is its hash.
#[derive(PartialEq, Eq)]
struct Question([u8; 32]);

impl Hash for Question {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// The hasher of [`Question`]s: passes their first word through. Seeded by nothing, so the
/// cache behaves the same in every run (std's default hasher draws its keys from the OS).
#[derive(Default)]
struct FirstWord(u64);

impl Hasher for FirstWord {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

impl SimCertifier {
    fn new(ca: VerificationKey) -> SimCertifier {
        SimCertifier::with_limit(ca, CACHE_LIMIT)
    }

    fn with_limit(ca: VerificationKey, limit: usize) -> SimCertifier {
        SimCertifier {
            ca,
            cache: Mutex::new(Cache::default()),
            limit,
        }
    }

    /// How it answered so far.
    pub fn stats(&self) -> CacheStats {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
    }

    /// The answer to `question` in the answers `pick` selects: from the cache, or `check`'s,
    /// then cached. The cache is not held while `check` runs (it may ask other questions).
    fn answer<T: Copy>(
        &self,
        pick: fn(&mut Cache) -> &mut Answers<T>,
        question: Question,
        check: impl FnOnce() -> T,
    ) -> T {
        let lock = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut cache = lock();
            if let Some(&answer) = pick(&mut cache).get(&question) {
                cache.stats.cached += 1;
                return answer;
            }
        }
        let answer = check();
        let mut cache = lock();
        cache.stats.checked += 1;
        let answers = pick(&mut cache);
        let full = answers.len() >= self.limit;
        if full {
            answers.clear();
        }
        answers.insert(question, answer);
        cache.stats.cleared += u64::from(full);
        answer
    }

    /// The uncached check of [`Certifier::certifies`].
    fn check_certificate(&self, certificate: &[u8], message: &[u8], signature: &[u8]) -> bool {
        if certificate.len() != CERTIFICATE_LEN {
            return false;
        }
        let (node_public, ca_signature) = certificate.split_at(32);
        let (Ok(node_public), Ok(ca_signature), Ok(signature)) = (
            <[u8; 32]>::try_from(node_public),
            <[u8; 64]>::try_from(ca_signature),
            <[u8; 64]>::try_from(signature),
        ) else {
            return false;
        };
        self.ca
            .verify(
                &Signature::from_bytes(&ca_signature),
                &certified_bytes(&node_public),
            )
            .is_ok()
            && VerificationKey::try_from(node_public).is_ok_and(|node| {
                node.verify(&Signature::from_bytes(&signature), message)
                    .is_ok()
            })
    }
}

impl Certifier for SimCertifier {
    fn certifies(&self, certificate: &[u8], message: &[u8], signature: &[u8], _at_ms: u64) -> bool {
        let length = |bytes: &[u8]| (bytes.len() as u64).to_be_bytes();
        let digest = Sha256::new()
            .chain_update(CERTIFICATE_QUESTION)
            .chain_update(length(certificate))
            .chain_update(certificate)
            .chain_update(length(signature))
            .chain_update(signature)
            .chain_update(message)
            .finalize();
        self.answer(
            |c| &mut c.verdicts,
            Question(digest.into()),
            || self.check_certificate(certificate, message, signature),
        )
    }

    fn verify_version(&self, public: &VerificationKey, version: &Version) -> bool {
        let Some(seal) = version.seal.as_deref() else {
            return false;
        };
        // The key and the signature have fixed lengths: the concatenation is unambiguous.
        let digest = Sha256::new()
            .chain_update(VERSION_QUESTION)
            .chain_update(public.as_ref())
            .chain_update(seal.signature)
            .chain_update(version_signed_bytes(version))
            .finalize();
        self.answer(
            |c| &mut c.verdicts,
            Question(digest.into()),
            || verifies(version, public),
        )
    }

    /// A node is named by its certificate's key: `n` and its first 6 bytes in hex.
    fn node_name(&self, certificate: &[u8]) -> Option<String> {
        let key = certificate.get(..6)?;
        (certificate.len() == CERTIFICATE_LEN)
            .then(|| key.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .map(|hex| format!("n{hex}"))
    }

    fn admin(
        &self,
        certificate: &[u8],
        message: &[u8],
        signature: &[u8; 64],
        _at_ms: u64,
    ) -> Option<String> {
        let (body, ca_signature) =
            certificate.split_at_checked(certificate.len().checked_sub(64)?)?;
        let rest = body.strip_prefix(ADMIN_TAG)?;
        let (&len, rest) = rest.split_first()?;
        let (name, public) = rest.split_at_checked(usize::from(len))?;
        let public: [u8; 32] = public.try_into().ok()?;
        let ca_signature: [u8; 64] = ca_signature.try_into().ok()?;
        self.ca
            .verify(&Signature::from_bytes(&ca_signature), body)
            .ok()?;
        VerificationKey::try_from(public)
            .ok()?
            .verify(&Signature::from_bytes(signature), message)
            .ok()?;
        String::from_utf8(name.to_vec()).ok()
    }

    fn check_endorsement(
        &self,
        payload: &[u8],
        writer: WriterId,
        at_ms: u64,
    ) -> Result<VerificationKey, EndorsementError> {
        let digest = Sha256::new()
            .chain_update(ENDORSEMENT_QUESTION)
            .chain_update(writer.0.to_be_bytes())
            .chain_update(payload)
            .finalize();
        self.answer(
            |c| &mut c.endorsements,
            Question(digest.into()),
            || Endorsement::check(payload, writer, self, at_ms),
        )
    }
}

#[cfg(test)]
mod tests;
