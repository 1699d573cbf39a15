//! Trust I: self-certifying writers and signed versions (docs/PROTOCOL.md §7); Trust II's grant
//! rule over policy entries held in the mesh ([`policy`], §8).
//!
//! The rules every replica applies to every version from a peer, as pure functions over the
//! version, the writers' endorsements and the equivocation proofs seen: [`Judge`]. Nothing here
//! does I/O or reads a clock; keys are made from bytes the caller draws. `Node` judges every
//! version from a peer with it; `tests/trust_model.rs` checks the rules over arbitrary
//! delivery orders against a certified attacker.

mod acts;
mod judge;
mod keys;
pub mod policy;
mod proof;
pub mod sealed;
pub mod token;

pub use self::{
    judge::{
        Forgery, Judge, MAX_DEFERRED, MAX_DEFERRED_BYTES, MAX_DEFERRED_PER_WRITER,
        MAX_REFUSED_BYTES, MAX_REFUSED_KEPT, MAX_UNRIPE, MAX_UNRIPE_BYTES, Mode, Outcome, Refusal,
        Screened, Verdict, is_endorsement,
    },
    keys::{
        Certifier, ENDORSE_TAG, Endorsement, EndorsementError, Equivocation, WriterKey,
        audit_fields_fit, author_signed_bytes, differ, endorsement_key, signed_bytes, verifies,
        version_signed_bytes, writer_id,
    },
    proof::{Proof, proof_key},
};

/// The reserved prefix of endorsements: `_confmesh/writers/<writer id, 16 hex digits>`.
pub const WRITERS_PREFIX: &str = "_confmesh/writers/";

/// The reserved prefix of member records: `_confmesh/members/<writer id, 16 hex digits>`.
pub const MEMBERS_PREFIX: &str = "_confmesh/members/";

/// The reserved prefix of equivocation proofs:
/// `_confmesh/equivocations/<convicted writer id>/<publishing writer id>`.
pub const EQUIVOCATIONS_PREFIX: &str = "_confmesh/equivocations/";

/// The reserved prefix of policy entries (Trust II): `_confmesh/policy/<writer id>-<position>`,
/// one key per entry, written once.
pub const POLICY_PREFIX: &str = "_confmesh/policy/";

/// Everything under it belongs to confmesh.
pub const RESERVED_PREFIX: &str = "_confmesh/";

/// The longest `author` a version may carry, in bytes.
pub const MAX_AUTHOR_BYTES: usize = 256;

/// The longest change `message` a version may carry, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The longest certificate an author's proof may carry, in bytes (DER).
pub const MAX_PROOF_CERTIFICATE_BYTES: usize = 4096;

#[cfg(test)]
mod tests;
