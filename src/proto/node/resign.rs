//! The switch-over from unsigned versions (docs/PROTOCOL.md §7.5): [`Node::resign`] leaves
//! the replica with no unsigned version that a node enforcing signatures would refuse, once
//! what it writes has spread and the tombstones are collected.

use std::time::Instant;

use crdts::{CmRDT, CvRDT};

use super::{Audit, Node};
use crate::proto::{
    Dot, HlcTimestamp, Key, Payload, VClock, Version,
    trust::{MEMBERS_PREFIX, RESERVED_PREFIX},
};

/// What [`Node::resign`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resigned {
    /// Application keys written again, signed, with the value reads showed (or deleted
    /// again): pending local writes, made durable and spread like any.
    pub rewritten: Vec<Key>,
    /// Of those, the keys that held concurrent siblings: each is now one version, the value
    /// reads showed (the others are still in its history).
    pub siblings_resolved: Vec<Key>,
    /// Member records of legacy writers deleted, each by an unsigned tombstone under the
    /// legacy writer's own id, built the same at every node (so two nodes resigning at once
    /// write the same version); collected like any tombstone.
    pub records_retired: Vec<Key>,
    /// Reserved keys holding unsigned versions that no node may replace (another writer's
    /// signed record beside a legacy one, say): the operator's to look at.
    pub left: Vec<Key>,
}

/// Why [`Node::resign`] did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResignError {
    /// The node writes unsigned versions itself (it has no writer key, or speaks protocol 2).
    #[error("this node does not sign its writes: resign from a node of protocol 3")]
    NotSigning,
}

impl Node {
    /// Writes again, signed, every application key that holds an unsigned version (a legacy
    /// writer's, from protocol 2): one version with the value reads show, superseding every
    /// stored version of the key, so no unsigned version of it stays stored anywhere once the
    /// write has spread; and deletes each legacy writer's member record (PROTOCOL.md §7.5).
    /// Run it on one node, once no node of protocol 2 is left and before any node enforces
    /// signatures; unsigned tombstones are then collected as usual.
    ///
    /// # Errors
    ///
    /// [`ResignError::NotSigning`] if this node does not sign; nothing changes.
    pub fn resign(&mut self, now: Instant) -> Result<Resigned, ResignError> {
        if self.config.trust.signer.is_none() {
            return Err(ResignError::NotSigning);
        }
        let mut keys: Vec<Key> = self
            .store
            .versions_all()
            .filter(|v| v.seal.is_none())
            .map(|v| v.key.clone())
            .collect();
        keys.dedup();
        let mut done = Resigned::default();
        let mut retired = Vec::new();
        for key in keys {
            if key.as_str().starts_with(RESERVED_PREFIX) {
                match self.legacy_record_tombstone(&key) {
                    Some(Some(tombstone)) => {
                        done.records_retired.push(key);
                        retired.push(tombstone);
                    }
                    // Only tombstones: collected as they are.
                    Some(None) => {}
                    None => done.left.push(key),
                }
                continue;
            }
            let versions = self.store.versions(&key);
            let siblings = versions.len() > 1;
            let payload = self
                .store
                .get(&key)
                .map_or(Payload::Tombstone, |v| v.payload.clone());
            let audit = Audit {
                author: None,
                message: Some("signed again by resign: a legacy writer's version".into()),
                token: None,
            };
            match self.write(now, key.clone(), payload, audit) {
                Ok(_) => {
                    if siblings {
                        done.siblings_resolved.push(key.clone());
                    }
                    done.rewritten.push(key);
                }
                Err(e) => tracing::warn!(%key, cause = %e, "not signed again"),
            }
        }
        for tombstone in retired {
            let old = self.store.get(&tombstone.key).cloned();
            let key = tombstone.key.clone();
            match self.store.apply(tombstone.clone()) {
                Ok(_) => {
                    self.emit_change(&key, old);
                    self.disseminate(now, &[tombstone], None);
                }
                Err(e) => tracing::warn!(%key, cause = %e, "legacy member record not retired"),
            }
        }
        tracing::info!(
            rewritten = done.rewritten.len(),
            siblings_resolved = done.siblings_resolved.len(),
            records_retired = done.records_retired.len(),
            left = done.left.len(),
            "unsigned versions replaced"
        );
        Ok(done)
    }

    /// For a member record of a legacy writer `X` (`_confmesh/members/X`, every stored
    /// version unsigned, by `X`, and `X` not endorsed here): `Some(Some(t))`, the tombstone
    /// that deletes it, under `X`'s next number, its clock the versions' own, its timestamp
    /// one tick past theirs, so every node builds the same; `Some(None)` if the record is
    /// already deleted. `None` for any other reserved key: no node may replace it.
    fn legacy_record_tombstone(&self, key: &Key) -> Option<Option<Version>> {
        let id = key.as_str().strip_prefix(MEMBERS_PREFIX)?;
        let versions = self.store.versions(key);
        let writer = versions.first()?.dot.actor;
        let legacy = id == writer.to_string()
            && self.judge.writer(writer).is_none()
            && versions
                .iter()
                .all(|v| v.seal.is_none() && v.dot.actor == writer);
        if !legacy {
            return None;
        }
        if versions.iter().all(Version::is_tombstone) {
            return Some(None);
        }
        let mut supersedes = VClock::new();
        for v in versions {
            supersedes.merge(v.supersedes.clone());
            supersedes.apply(v.dot);
        }
        let timestamp = versions.iter().map(|v| v.timestamp).max()?;
        let seq = self.store.digest().seen(writer).max().saturating_add(1);
        Some(Some(Version {
            key: key.clone(),
            dot: Dot::new(writer, seq),
            supersedes,
            timestamp: HlcTimestamp(timestamp.0.saturating_add(1)),
            payload: Payload::Tombstone,
            seal: None,
            masked: Default::default(),
        }))
    }
}
