//! Writer keys, writer ids, endorsements and signed versions (PROTOCOL.md §7.2, §7.3).

use bytes::Bytes;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_zebra::{Signature, SigningKey, VerificationKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{
    MAX_AUTHOR_BYTES, MAX_MESSAGE_BYTES, MAX_PROOF_CERTIFICATE_BYTES, WRITERS_PREFIX,
    policy::MAX_CLOCK_WRITERS,
};
use crate::proto::{
    Dot, Grounds, HlcTimestamp, Key, KeyError, Payload, Seal, VClock, Version, WriterId,
};

/// The domain tag of writer ids.
const WRITER_ID_TAG: &[u8] = b"confmesh writer id v1";
/// The domain tag of signed versions without grounds (protocol 3's).
const VERSION_TAG: &[u8] = b"confmesh version v1";
/// The domain tag of signed versions with grounds (protocol 4).
const GROUNDED_VERSION_TAG: &[u8] = b"confmesh version v2";
/// The domain tag of endorsements (what a node's certificate key signs).
pub const ENDORSE_TAG: &[u8] = b"confmesh endorse v1";

/// The writer id of a public key: the first 8 bytes, big-endian, of
/// SHA-256(`"confmesh writer id v1"` ‖ key).
pub fn writer_id(public: &VerificationKey) -> WriterId {
    let digest = Sha256::new()
        .chain_update(WRITER_ID_TAG)
        .chain_update(public.as_ref())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    WriterId(u64::from_be_bytes(first))
}

/// The key a writer's endorsement is written under.
///
/// # Errors
///
/// None in practice: the prefix and 16 hex digits always make a valid key.
pub fn endorsement_key(writer: WriterId) -> Result<Key, KeyError> {
    Key::new(&format!("{WRITERS_PREFIX}{writer}"))
}

/// The bytes a version's signature covers: a domain tag, then the bincode encoding of every
/// field of the version but the signature. Without grounds these are protocol 3's bytes
/// (tag `confmesh version v1`); with grounds the tag is `confmesh version v2` and the grounds
/// follow the audit fields (docs/PROTOCOL.md §7.3, §8.3).
pub fn signed_bytes(
    version: &Version,
    author: Option<&str>,
    message: Option<&str>,
    grounds: Option<&Grounds>,
) -> Vec<u8> {
    let fields: (
        &Key,
        &Dot,
        &VClock,
        &HlcTimestamp,
        &Payload,
        Option<&str>,
        Option<&str>,
    ) = (
        &version.key,
        &version.dot,
        &version.supersedes,
        &version.timestamp,
        &version.payload,
        author,
        message,
    );
    let config = bincode::config::standard();
    // Encoding into a Vec cannot fail for these types.
    match grounds {
        None => {
            let mut bytes = VERSION_TAG.to_vec();
            let _ = bincode::serde::encode_into_std_write(fields, &mut bytes, config);
            bytes
        }
        Some(grounds) => {
            let mut bytes = GROUNDED_VERSION_TAG.to_vec();
            let _ = bincode::serde::encode_into_std_write((fields, grounds), &mut bytes, config);
            bytes
        }
    }
}

/// Whether `public` signed exactly `version`, audit fields included, by the rules of ZIP 215
/// (under which a batch of signatures verifies exactly when each one does, so a verdict does
/// not depend on what else arrived with it). An unsealed version verifies under no key.
pub fn verifies(version: &Version, public: &VerificationKey) -> bool {
    version.seal.as_ref().is_some_and(|seal| {
        public
            .verify(
                &Signature::from_bytes(&seal.signature),
                &version_signed_bytes(version),
            )
            .is_ok()
    })
}

/// The bytes `version`'s signature covers (its seal's audit fields included).
pub fn version_signed_bytes(version: &Version) -> Vec<u8> {
    let seal = version.seal.as_deref();
    signed_bytes(
        version,
        seal.and_then(|s| s.author.as_deref()),
        seal.and_then(|s| s.message.as_deref()),
        seal.and_then(|s| s.grounds.as_deref()),
    )
}

/// Whether `version`'s audit fields and grounds are within their limits, and its grounds,
/// if any, name something (an empty one must be carried as none: one version, one encoding).
pub fn audit_fields_fit(version: &Version) -> bool {
    version.seal.as_ref().is_none_or(|seal| {
        seal.author
            .as_ref()
            .is_none_or(|a| a.len() <= MAX_AUTHOR_BYTES)
            && seal
                .message
                .as_ref()
                .is_none_or(|m| m.len() <= MAX_MESSAGE_BYTES)
            && seal.grounds.as_deref().is_none_or(|g| {
                !g.is_empty()
                    && g.context.dots.len() <= MAX_CLOCK_WRITERS
                    && g.proof.as_ref().is_none_or(|p| {
                        p.certificate
                            .as_ref()
                            .is_none_or(|c| c.len() <= MAX_PROOF_CERTIFICATE_BYTES)
                    })
            })
    })
}

/// Whether two versions with one dot differ in anything their signatures cover.
pub fn differ(a: &Version, b: &Version) -> bool {
    let audit = |v: &Version| {
        v.seal
            .as_deref()
            .map(|s| (s.author.clone(), s.message.clone(), s.grounds.clone()))
    };
    (&a.key, &a.dot, &a.supersedes, &a.timestamp, &a.payload)
        != (&b.key, &b.dot, &b.supersedes, &b.timestamp, &b.payload)
        || audit(a).unwrap_or_default() != audit(b).unwrap_or_default()
}

/// A writer's signing key, held by one data directory.
///
/// Ed25519 signing is deterministic (RFC 8032): every correct implementation makes the same
/// signature of the same message under the same key, so which one signs is this node's
/// choice and invisible to its peers, which verify with ed25519-zebra whatever signed. With
/// the `fast-signing` feature (part of `runtime`) AWS-LC signs: about half the CPU per
/// signature of ed25519-zebra (BENCHMARKS.md, `cargo bench --bench signatures`), and a
/// signed PUT's signature is the largest cost it adds. Without it ed25519-zebra signs, and
/// the core stays pure Rust (the simulator builds it so).
pub struct WriterKey {
    signing: SigningKey,
    /// The same key in AWS-LC, checked at construction to have the same public key; `None`
    /// only if AWS-LC refused the seed, and then ed25519-zebra signs.
    #[cfg(feature = "fast-signing")]
    fast: Option<aws_lc_rs::signature::Ed25519KeyPair>,
}

impl WriterKey {
    /// The key made from 32 random bytes (the caller draws them from the OS, or a seeded
    /// generator in tests).
    pub fn from_seed(seed: [u8; 32]) -> WriterKey {
        let signing = SigningKey::from(seed);
        #[cfg(feature = "fast-signing")]
        let fast = {
            let public: [u8; 32] = VerificationKey::from(&signing).into();
            aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&seed, &public)
                .inspect_err(|e| {
                    tracing::warn!(cause = %e, "AWS-LC refused the writer key; ed25519-zebra signs");
                })
                .ok()
        };
        WriterKey {
            signing,
            #[cfg(feature = "fast-signing")]
            fast,
        }
    }

    /// The Ed25519 signature of `bytes` (the same bytes whichever implementation signs).
    fn signature(&self, bytes: &[u8]) -> [u8; 64] {
        #[cfg(feature = "fast-signing")]
        if let Some(signature) = self.fast_signature(bytes) {
            return signature;
        }
        self.zebra_signature(bytes)
    }

    /// ed25519-zebra's signature of `bytes`.
    fn zebra_signature(&self, bytes: &[u8]) -> [u8; 64] {
        self.signing.sign(bytes).to_bytes()
    }

    /// AWS-LC's signature of `bytes`, `None` if AWS-LC refused the key or failed.
    #[cfg(feature = "fast-signing")]
    fn fast_signature(&self, bytes: &[u8]) -> Option<[u8; 64]> {
        let signature = self.fast.as_ref()?.try_sign(bytes).ok()?;
        <[u8; 64]>::try_from(signature.as_ref()).ok()
    }

    /// Both signatures of `bytes`, AWS-LC's and ed25519-zebra's: for the test that they agree.
    #[cfg(all(test, feature = "fast-signing"))]
    pub(super) fn both_signatures(&self, bytes: &[u8]) -> (Option<[u8; 64]>, [u8; 64]) {
        (self.fast_signature(bytes), self.zebra_signature(bytes))
    }

    /// Its public key.
    pub fn public(&self) -> VerificationKey {
        VerificationKey::from(&self.signing)
    }

    /// The writer id it writes under.
    pub fn id(&self) -> WriterId {
        writer_id(&self.public())
    }

    /// Signs `version` with its audit fields: the version sealed.
    pub fn sign(
        &self,
        version: Version,
        author: Option<String>,
        message: Option<String>,
    ) -> Version {
        self.sign_grounded(version, author, message, Grounds::default())
    }

    /// Signs `version` with its audit fields and its grounds (carried as none if empty).
    pub fn sign_grounded(
        &self,
        mut version: Version,
        author: Option<String>,
        message: Option<String>,
        grounds: Grounds,
    ) -> Version {
        let grounds = (!grounds.is_empty()).then(|| Box::new(grounds));
        let bytes = signed_bytes(
            &version,
            author.as_deref(),
            message.as_deref(),
            grounds.as_deref(),
        );
        version.seal = Some(Box::new(Seal {
            author,
            message,
            signature: self.signature(&bytes),
            grounds,
        }));
        version
    }

    /// The payload of this writer's endorsement, given the node's certificate and the
    /// node's signature over [`Endorsement::signed_bytes`] (made with the certificate's key,
    /// by the caller, which holds it).
    pub fn endorsement(&self, certificate: Vec<u8>, signature: Vec<u8>) -> Endorsement {
        Endorsement {
            public_key: self.public().into(),
            certificate,
            signature,
        }
    }
}

/// What binds a writer key to a certified node: the payload of the writer's first version
/// (seq 1), under [`endorsement_key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// The writer's Ed25519 public key.
    pub public_key: [u8; 32],
    /// The node's certificate (DER), which must chain to the cluster CA.
    pub certificate: Vec<u8>,
    /// The certificate key's signature over [`Endorsement::signed_bytes`].
    pub signature: Vec<u8>,
}

/// Why an endorsement is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndorsementError {
    /// The payload does not decode.
    #[error("the endorsement does not decode")]
    Malformed,
    /// The public key is not a valid Ed25519 key.
    #[error("the endorsement's public key is not valid")]
    BadKey,
    /// The public key's writer id is not the version's writer.
    #[error("the endorsement's key belongs to another writer id")]
    WrongWriter,
    /// The certificate does not chain to the CA, or its key did not sign.
    #[error("the endorsement is not certified")]
    NotCertified,
}

impl Endorsement {
    /// What the node's certificate key signs: a domain tag, the public key, the writer id.
    pub fn signed_bytes(public_key: &[u8; 32], writer: WriterId) -> Vec<u8> {
        let mut bytes = ENDORSE_TAG.to_vec();
        bytes.extend_from_slice(public_key);
        bytes.extend_from_slice(&writer.0.to_be_bytes());
        bytes
    }

    /// The bincode encoding, the version's payload.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let _ = bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard());
        Bytes::from(out)
    }

    /// The public key an endorsement's payload names, unchecked (`None` if it does not
    /// decode): for checking signatures ahead of the endorsement's own check.
    pub fn public_key(payload: &[u8]) -> Option<VerificationKey> {
        VerificationKey::try_from(Endorsement::decode(payload)?.public_key).ok()
    }

    /// An endorsement's payload, unchecked (`None` if it does not decode exactly).
    pub fn decode(payload: &[u8]) -> Option<Endorsement> {
        let config = bincode::config::standard().with_limit::<{ 64 * 1024 }>();
        let (endorsement, used): (Endorsement, usize) =
            bincode::serde::decode_from_slice(payload, config).ok()?;
        (used == payload.len()).then_some(endorsement)
    }

    /// Checks a version's payload as `writer`'s endorsement, written at `at_ms` (its
    /// timestamp's wall time, ms since the Unix epoch: the certificate must have been valid
    /// then); returns the writer's key.
    ///
    /// # Errors
    ///
    /// [`EndorsementError`] naming what is wrong.
    pub fn check<C: Certifier + ?Sized>(
        payload: &[u8],
        writer: WriterId,
        certifier: &C,
        at_ms: u64,
    ) -> Result<VerificationKey, EndorsementError> {
        let config = bincode::config::standard().with_limit::<{ 64 * 1024 }>();
        let (endorsement, used): (Endorsement, usize) =
            bincode::serde::decode_from_slice(payload, config)
                .map_err(|_| EndorsementError::Malformed)?;
        if used != payload.len() {
            return Err(EndorsementError::Malformed);
        }
        // A key of small order, or with a torsion component, could make signatures that hold
        // for many messages: only keys in the prime-order subgroup are endorsed.
        let point = CompressedEdwardsY(endorsement.public_key)
            .decompress()
            .ok_or(EndorsementError::BadKey)?;
        if point.is_small_order() || !point.is_torsion_free() {
            return Err(EndorsementError::BadKey);
        }
        let public = VerificationKey::try_from(endorsement.public_key)
            .map_err(|_| EndorsementError::BadKey)?;
        if writer_id(&public) != writer {
            return Err(EndorsementError::WrongWriter);
        }
        let signed = Endorsement::signed_bytes(&endorsement.public_key, writer);
        if !certifier.certifies(
            &endorsement.certificate,
            &signed,
            &endorsement.signature,
            at_ms,
        ) {
            return Err(EndorsementError::NotCertified);
        }
        Ok(public)
    }
}

/// Checks that a certificate chains to the cluster CA, was valid at a given time, and that
/// its key made `signature` over `message`. The runtime's uses webpki and the CA certificate.
/// It must not read the clock: a verdict must be the same at every replica and every time, so
/// the time is the endorsement's own (revocation is policy, PROTOCOL.md §7.4).
pub trait Certifier {
    /// Whether `certificate` is the CA's, was valid at `at_ms` (ms since the Unix epoch), and
    /// signed `message`.
    fn certifies(&self, certificate: &[u8], message: &[u8], signature: &[u8], at_ms: u64) -> bool;

    /// Whether `public` signed `version` ([`verifies`]). A replica that checks signatures
    /// ahead of time, in batches on several cores, answers from what it found; the answer must
    /// be [`verifies`]'s, which ZIP 215 makes the same one by one and in any batch.
    fn verify_version(&self, public: &VerificationKey, version: &Version) -> bool {
        verifies(version, public)
    }

    /// The signatures a batch is about to need, each with its writer's key as far as known:
    /// a certifier that checks them ahead of time (in batches, on several cores) does it
    /// here, and answers [`Certifier::verify_version`] from what it found. Default: nothing.
    fn prepare(&self, items: &[(VerificationKey, &Version)]) {
        let _ = items;
    }

    /// `writer`'s key, if `payload` is its endorsement, written at `at_ms`
    /// ([`Endorsement::check`], through which every replica checks every endorsement). A
    /// replica that checks the same endorsements many times (the simulator, whose N nodes each
    /// check N of them) may answer from what it found before; the answer must be
    /// [`Endorsement::check`]'s.
    ///
    /// # Errors
    ///
    /// [`EndorsementError`] naming what is wrong.
    fn check_endorsement(
        &self,
        payload: &[u8],
        writer: WriterId,
        at_ms: u64,
    ) -> Result<VerificationKey, EndorsementError> {
        Endorsement::check(payload, writer, self, at_ms)
    }

    /// The name of the node `certificate` names (docs/PROTOCOL.md §8.1), asked of the
    /// certificate of a valid endorsement: its writer's versions act as `node:<name>`.
    /// Default: none (a certifier that names no node: under a policy, its writers may write
    /// nothing).
    fn node_name(&self, certificate: &[u8]) -> Option<String> {
        let _ = certificate;
        None
    }

    /// The name of the admin `certificate` names, if it is an admin certificate of the CA,
    /// valid at `at_ms`, and its key made `signature` over `message` (an author's proof,
    /// docs/PROTOCOL.md §8.7). Default: none (a certifier that knows no admins: no policy can
    /// be made).
    fn admin(
        &self,
        certificate: &[u8],
        message: &[u8],
        signature: &[u8; 64],
        at_ms: u64,
    ) -> Option<String> {
        let _ = (certificate, message, signature, at_ms);
        None
    }
}

/// The domain tag of authors' proofs.
const AUTHOR_TAG: &[u8] = b"confmesh author v1";

/// The bytes an author's proof signs (docs/PROTOCOL.md §8.7): a domain tag, then the bincode
/// encoding of `(subject, payload, author, context)`, where `subject` is the key written, or
/// [`POLICY_PREFIX`](super::POLICY_PREFIX) for a policy entry (whose key names its dot, which
/// the author cannot know ahead). The proof binds what is asked, by whom, and the policy it
/// was asked under; not the dot, so a node can only repeat a proven act as it was made.
pub fn author_signed_bytes(
    subject: &str,
    payload: &Payload,
    author: &str,
    context: &VClock,
) -> Vec<u8> {
    let mut bytes = AUTHOR_TAG.to_vec();
    // Encoding into a Vec cannot fail for these types.
    let _ = bincode::serde::encode_into_std_write(
        (subject, payload, author, context),
        &mut bytes,
        bincode::config::standard(),
    );
    bytes
}

/// Proof that a writer's key signed two different versions with one dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// One of them.
    pub first: Version,
    /// The other: same dot, different content.
    pub second: Version,
}

impl Equivocation {
    /// The writer and sequence number it convicts.
    pub fn dot(&self) -> Dot {
        self.first.dot
    }
}
