//! Proofs of equivocation published as versions (PROTOCOL.md §7.6).
//!
//! A replica that finds two different versions signed for one dot writes the proof under
//! `_confmesh/equivocations/<convicted writer>/<its own writer>`, so it spreads like any
//! version and every replica convicts the writer, not only those that held both versions.
//! The proof carries what checking it needs (both versions and, unless they are
//! endorsements themselves, the convicted writer's endorsement), so its verdict reads nothing
//! but the proof and the CA: the same at every replica, in any order.

use bytes::Bytes;

use super::{
    EQUIVOCATIONS_PREFIX,
    judge::{endorsed_key, is_endorsement},
    keys::{Certifier, Equivocation, differ},
};
use crate::proto::{
    Dot, Key, KeyError, Version, WriterId,
    wire::{self, EncodeError, Format, Message},
};

/// The key a proof convicting `convicted`, published by `publisher`, is written under.
///
/// # Errors
///
/// None in practice: the prefix and two ids of 16 hex digits always make a valid key.
pub fn proof_key(convicted: WriterId, publisher: WriterId) -> Result<Key, KeyError> {
    Key::new(&format!("{EQUIVOCATIONS_PREFIX}{convicted}/{publisher}"))
}

/// A published proof: the two versions, and the endorsement their key is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The two versions with one dot.
    pub equivocation: Equivocation,
    /// The convicted writer's endorsement (its first version), unless both versions are
    /// endorsements, each checked with the key in its own payload.
    pub endorsement: Option<Version>,
}

impl Proof {
    /// The payload of a proof version: a format-3 [`Message::Push`] of the two versions,
    /// then the endorsement if there is one, each with its seal (the wire codec, so a proof
    /// decodes under the same limits as any message).
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if it encodes to more than [`wire::MAX_MESSAGE_BYTES`].
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut versions = vec![
            self.equivocation.first.clone(),
            self.equivocation.second.clone(),
        ];
        versions.extend(self.endorsement.clone());
        wire::encode_as(
            &Message::Push { versions },
            Format::Sealed,
            wire::MAX_MESSAGE_BYTES,
        )
    }

    /// The proof in a version's payload; `None` if it is not one (a proof's validity is
    /// [`Proof::holds`]).
    pub fn decode(payload: &[u8]) -> Option<Proof> {
        let Ok(Message::Push { versions }) = wire::decode(payload, wire::MAX_MESSAGE_BYTES) else {
            return None;
        };
        let mut versions = versions.into_iter();
        let (first, second) = (versions.next()?, versions.next()?);
        let endorsement = versions.next();
        if versions.next().is_some() {
            return None;
        }
        Some(Proof {
            equivocation: Equivocation { first, second },
            endorsement,
        })
    }

    /// The writer and sequence number it convicts.
    pub fn dot(&self) -> Dot {
        self.equivocation.dot()
    }

    /// Whether it proves that its writer's key signed two different versions with one dot:
    /// one dot, different contents, each signed with the writer's key (an endorsement with the
    /// key in its own payload, if that endorsement is valid; any other version with the key of
    /// the proof's endorsement, which must be the writer's valid, signed first version).
    pub fn holds(&self, certifier: &dyn Certifier) -> bool {
        let Equivocation { first, second } = &self.equivocation;
        if first.dot != second.dot || !differ(first, second) {
            return false;
        }
        let endorsed = self
            .endorsement
            .as_ref()
            .filter(|e| e.dot == Dot::new(first.dot.actor, 1) && e.seal.is_some())
            .and_then(|e| {
                endorsed_key(e, certifier).filter(|public| certifier.verify_version(public, e))
            });
        [first, second].into_iter().all(|version| {
            if version.seal.is_none() {
                return false;
            }
            let public = if is_endorsement(version.key.as_str(), version.dot) {
                endorsed_key(version, certifier)
            } else {
                endorsed
            };
            public.is_some_and(|public| certifier.verify_version(&public, version))
        })
    }

    /// The proof a version holds, if its key is a proof key naming its own writer as the
    /// publisher and its payload a proof against the writer the key names (not yet checked
    /// with [`Proof::holds`]).
    pub fn in_version(version: &Version) -> Option<Proof> {
        let rest = version.key.as_str().strip_prefix(EQUIVOCATIONS_PREFIX)?;
        let proof = Proof::decode(version.payload.value()?)?;
        let expected = format!("{}/{}", proof.dot().actor, version.dot.actor);
        (rest == expected).then_some(proof)
    }
}
