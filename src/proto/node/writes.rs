//! Local writes: prepared, made durable by the runtime, and only then applied.
//!
//! A write is numbered and given its clock when it is made ([`Node::put`]), then waits in the
//! pending layer until the runtime reports it durable ([`Node::handle_persisted`]). Until then
//! it is neither readable nor sent to any peer, so a crash can only lose a write nobody saw,
//! and a node never reissues a version id it pushed (nor, while it runs, one it handed to the
//! runtime). Writes prepared while earlier ones are
//! still pending take the next numbers, and a write to a key with a pending write supersedes
//! that write too (their clocks chain), so the order of local writes to a key holds whatever
//! arrives from peers in between.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Audit, Node};
use crate::proto::{
    Applied, AuthorProof, Dot, Grounds, Key, Payload, Store, VClock, Version, WriteError,
    trust::{
        POLICY_PREFIX, Refusal, Verdict,
        policy::{Book, Rule, entry_key, entry_position},
    },
};

/// The pending layer: local writes prepared and not yet durable.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// In sequence order.
    writes: VecDeque<Version>,
    /// How many of `writes` were handed to the runtime by [`Node::poll_persist`].
    handed_out: usize,
    /// The latest pending write of each key with one.
    latest: BTreeMap<Key, Version>,
    /// The bytes of the values pending.
    bytes: usize,
    /// The highest number ever given to a local write by this node (refused ones included):
    /// never given again, since a refused write may have reached the file after all.
    burned: u64,
}

impl Pending {
    /// The number the next local write takes: above every number this writer used, pending
    /// or stored.
    fn next_seq(&self, store: &Store) -> u64 {
        let pending = self.writes.back().map_or(0, |v| v.dot.counter);
        // Saturating: a peer may claim this writer's dots up to the last number (an insider's
        // claim, docs/PROTOCOL.md §7.1); writes then fail as duplicates rather than wrap to 0.
        store
            .last_local_seq()
            .max(pending)
            .max(self.burned)
            .saturating_add(1)
    }

    /// The key's winner as a read after every pending write is applied would see it, as far
    /// as local writes decide it: the latest pending write's dot if there is one (`None` for a
    /// pending delete), else the stored winner's.
    fn winner(&self, store: &Store, key: &Key) -> Option<Dot> {
        match self.latest.get(key) {
            Some(pending) => (!pending.is_tombstone()).then_some(pending.dot),
            None => store.get(key).map(|v| v.dot),
        }
    }

    /// Whether a delete would change anything once the pending writes are applied: the
    /// latest pending write of the key is a value, or a stored value it does not supersede
    /// (a peer's, arrived meanwhile) would stay live.
    fn deletable(&self, store: &Store, key: &Key) -> bool {
        match self.latest.get(key) {
            Some(pending) if pending.is_tombstone() => store
                .versions(key)
                .iter()
                .any(|v| !v.is_tombstone() && !pending.supersedes(&v.dot)),
            Some(_) => true,
            None => store.deletable(key),
        }
    }

    fn push(&mut self, version: Version) {
        self.bytes += value_len(&version);
        self.burned = self.burned.max(version.dot.counter);
        self.latest.insert(version.key.clone(), version.clone());
        self.writes.push_back(version);
    }

    /// Takes the pending writes numbered up to `seq`, in order.
    fn take_through(&mut self, seq: u64) -> Vec<Version> {
        let mut done = Vec::new();
        while self.writes.front().is_some_and(|v| v.dot.counter <= seq) {
            let Some(version) = self.writes.pop_front() else {
                break;
            };
            self.handed_out = self.handed_out.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(value_len(&version));
            if self.latest.get(&version.key).map(|v| v.dot) == Some(version.dot) {
                self.latest.remove(&version.key);
            }
            done.push(version);
        }
        done
    }

    /// Drops every pending write; returns the range of numbers they held.
    fn clear(&mut self) -> Option<(u64, u64)> {
        let range = self
            .writes
            .front()
            .zip(self.writes.back())
            .map(|(first, last)| (first.dot.counter, last.dot.counter));
        *self = Pending {
            burned: self.burned,
            ..Pending::default()
        };
        range
    }
}

fn value_len(version: &Version) -> usize {
    version.payload.value().map_or(0, Bytes::len)
}

impl Node {
    /// Writes `value` under `key`. Returns the new version, which is **pending**: it is
    /// neither readable nor sent to peers until the runtime has made it durable (drain
    /// [`Node::poll_persist`], then report [`Node::handle_persisted`]).
    ///
    /// # Errors
    ///
    /// [`WriteError`] if the value is over the limit; nothing changes.
    pub fn put(&mut self, now: Instant, key: Key, value: Bytes) -> Result<Version, WriteError> {
        self.write(now, key, Payload::Value(value), Audit::default())
    }

    /// Like [`Node::put`], with audit fields signed with the version.
    ///
    /// # Errors
    ///
    /// As [`Node::put`].
    pub fn put_audited(
        &mut self,
        now: Instant,
        key: Key,
        value: Bytes,
        audit: Audit,
    ) -> Result<Version, WriteError> {
        self.write(now, key, Payload::Value(value), audit)
    }

    /// Like [`Node::put`], only if the key's winner is the version `expected` (`None`: only if
    /// the key holds no live value). Pending local writes count: a write to a key with one
    /// pending is checked against it.
    ///
    /// # Errors
    ///
    /// [`WriteError::Conflict`] with the current winner if it is another;
    /// [`WriteError::ValueTooLarge`]. Nothing changes.
    pub fn put_if(
        &mut self,
        now: Instant,
        key: Key,
        value: Bytes,
        expected: Option<Dot>,
    ) -> Result<Version, WriteError> {
        self.put_if_audited(now, key, value, expected, Audit::default())
    }

    /// Like [`Node::put_if`], with audit fields signed with the version.
    ///
    /// # Errors
    ///
    /// As [`Node::put_if`].
    pub fn put_if_audited(
        &mut self,
        now: Instant,
        key: Key,
        value: Bytes,
        expected: Option<Dot>,
        audit: Audit,
    ) -> Result<Version, WriteError> {
        let current = self.pending.winner(&self.store, &key);
        if current != expected {
            return Err(WriteError::Conflict { current });
        }
        self.put_audited(now, key, value, audit)
    }

    /// Deletes `key`: a pending tombstone, as [`Node::put`] writes a pending value. `None` if
    /// there is nothing to delete (counting pending writes).
    pub fn delete(&mut self, now: Instant, key: Key) -> Option<Version> {
        self.delete_audited(now, key, Audit::default())
    }

    /// Like [`Node::delete`], with audit fields signed with the tombstone.
    pub fn delete_audited(&mut self, now: Instant, key: Key, audit: Audit) -> Option<Version> {
        self.try_delete_audited(now, key, audit).ok().flatten()
    }

    /// Like [`Node::delete_audited`], saying why a delete was not made: `Ok(None)` when there
    /// is nothing to delete.
    ///
    /// # Errors
    ///
    /// [`WriteError::Denied`] if the policy does not let this node delete the key; an audit
    /// field over its limit. Nothing changes.
    pub fn try_delete_audited(
        &mut self,
        now: Instant,
        key: Key,
        audit: Audit,
    ) -> Result<Option<Version>, WriteError> {
        if !self.pending.deletable(&self.store, &key) {
            return Ok(None);
        }
        self.write(now, key, Payload::Tombstone, audit).map(Some)
    }

    pub(super) fn write(
        &mut self,
        now: Instant,
        key: Key,
        payload: Payload,
        audit: Audit,
    ) -> Result<Version, WriteError> {
        audit.check()?;
        let seq = self.pending.next_seq(&self.store);
        let wall = self.wall_ms(now);
        let after = self.pending.latest.get(&key);
        let version = self.store.local_version(wall, key, payload, seq, after)?;
        let version = self.seal(version, audit)?;
        tracing::trace!(key = %version.key, seq, "local write pending");
        self.pending.push(version.clone());
        Ok(version)
    }

    /// Writes a policy entry (docs/PROTOCOL.md §8.2): `rule` under `key` (this node's next
    /// entry key, [`Node::next_entry_key`]), asked for by `author`, who proved it with `proof`,
    /// a signature over [`author_signed_bytes`](crate::proto::trust::author_signed_bytes) of
    /// the entry's key, payload and `context` (one this node handed out,
    /// [`Node::policy_context`], or an older one). The entry is judged here as every replica
    /// will judge it before it is written: pending, as [`Node::put`]'s writes are.
    ///
    /// # Errors
    ///
    /// [`WriteError::EntryKeyTaken`] if `key` is not this node's next entry key (another entry
    /// took it since it was handed out), [`WriteError::Refused`] if the entry would be refused
    /// (not proven, not granted in its context: [`Refusal::Denied`] names the missing grant),
    /// [`WriteError::ContextUnknown`] if the context names entries this node does not hold,
    /// [`WriteError::Unsigned`] on a node that does not sign. Nothing changes.
    pub fn write_rule(
        &mut self,
        now: Instant,
        key: &Key,
        rule: &Rule,
        audit: Audit,
        context: VClock,
        proof: AuthorProof,
    ) -> Result<Version, WriteError> {
        audit.check()?;
        let Some(signer) = self.config.trust.signer.clone() else {
            return Err(WriteError::Unsigned);
        };
        let next = self.next_entry_key();
        if *key != next {
            return Err(WriteError::EntryKeyTaken {
                next: next.as_str().to_owned(),
            });
        }
        let key = next;
        let seq = self.pending.next_seq(&self.store);
        let wall = self.wall_ms(now);
        let mut version =
            self.store
                .local_version(wall, key, Payload::Value(rule.encode()), seq, None)?;
        // An entry supersedes nothing: its key is new.
        version.supersedes = VClock::new();
        let grounds = Grounds {
            context,
            proof: Some(proof),
        };
        let version = signer
            .key()
            .sign_grounded(version, audit.author, audit.message, grounds);
        let certifier = Arc::clone(&self.config.trust.certifier);
        match self.judge.judge(&self.store, &version, certifier.as_ref()) {
            Verdict::Apply => {}
            Verdict::Refused(refusal) => return Err(WriteError::Refused(refusal)),
            Verdict::AwaitsContext | Verdict::Deferred => return Err(WriteError::ContextUnknown),
            other => {
                tracing::error!(verdict = ?other, "a local policy entry judged neither granted nor refused");
                return Err(WriteError::Refused(Refusal::NotAPolicyEntry));
            }
        }
        tracing::info!(key = %version.key, %rule, "policy entry pending");
        self.pending.push(version.clone());
        Ok(version)
    }

    /// The policy context this node writes in now (docs/PROTOCOL.md §8.3): what an author
    /// signs a policy entry in ([`Node::write_rule`]). Empty while there is no policy.
    pub fn policy_context(&self) -> VClock {
        self.judge.context()
    }

    /// The key of the next policy entry this node writes (docs/PROTOCOL.md §8.2): its writer
    /// and the number after the highest of its entries stored or pending. An author proves an
    /// entry over it ([`Node::write_rule`]).
    pub fn next_entry_key(&self) -> Key {
        let writer = self.id.writer;
        let own = format!("{POLICY_PREFIX}{writer}-");
        let last = self
            .store
            .list(&own)
            .map(|v| &v.key)
            .chain(self.pending.latest.keys())
            .filter_map(|key| entry_position(key.as_str()))
            .filter(|p| p.actor == writer)
            .map(|p| p.counter)
            .max()
            .unwrap_or(0);
        entry_key(Dot::new(writer, last + 1))
    }

    /// The policy entries granted here (docs/PROTOCOL.md §8).
    pub fn policy(&self) -> &Book {
        self.judge.book()
    }

    /// The key's latest version as local writes see it: its latest pending write, else its
    /// stored winner.
    pub(super) fn pending_or_stored(&self, key: &Key) -> Option<Version> {
        self.pending
            .latest
            .get(key)
            .or_else(|| self.store.get(key))
            .cloned()
    }

    /// The next local write to make durable, in sequence order; each is handed out once.
    /// Once it (and every write before it) is durable, report [`Node::handle_persisted`].
    pub fn poll_persist(&mut self) -> Option<Version> {
        let next = self.pending.writes.get(self.pending.handed_out).cloned();
        if next.is_some() {
            self.pending.handed_out += 1;
        }
        next
    }

    /// How many local writes wait to be made durable (handed out or not).
    pub fn pending_writes(&self) -> usize {
        self.pending.writes.len()
    }

    /// The bytes of the values of the local writes waiting to be made durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes
    }

    /// The runtime made every local write numbered up to `seq` durable: apply them, in
    /// order, as any version is applied, tell the application, and push them to the mesh.
    /// Returns the numbers of those that could not be applied (a peer already holds a version
    /// of this writer with that number, which only a data directory restored or copied from
    /// another node's can cause): they did not take effect, and their callers must be told.
    pub fn handle_persisted(&mut self, now: Instant, seq: u64) -> Vec<u64> {
        let durable = self.pending.take_through(seq);
        let mut refused = Vec::new();
        let mut spread = Vec::with_capacity(durable.len());
        for version in durable {
            let old = self.store.get(&version.key).cloned();
            match self.store.apply(version.clone()) {
                Ok(Applied::Duplicate) => {
                    tracing::error!(key = %version.key, seq = version.dot.counter, "local write numbered as a version already seen; refused");
                    refused.push(version.dot.counter);
                    continue;
                }
                Ok(_) => self.own(&version),
                Err(e) => {
                    tracing::error!(key = %version.key, cause = %e, "local write not applicable");
                    refused.push(version.dot.counter);
                    continue;
                }
            }
            self.emit_change(&version.key, old);
            spread.push(version);
        }
        // In pushes of about a sync chunk each: a burst of large values must not make one
        // message over the stream limit.
        let budget = self.config.sync_chunk_bytes.max(1);
        let mut start = 0;
        let mut size = 0;
        for (i, version) in spread.iter().enumerate() {
            size += version.approx_encoded_len();
            if size >= budget {
                self.disseminate(now, &spread[start..=i], None);
                start = i + 1;
                size = 0;
            }
        }
        self.disseminate(now, &spread[start..], None);
        if !spread.is_empty() {
            self.hurry_anti_entropy(now, false);
        }
        refused
    }

    /// Making the pending local writes durable failed: every pending write is dropped, as if
    /// never made (none was readable or sent). Their numbers are not given again: the failed
    /// commit may have reached the file after all. Returns the range of numbers dropped (first,
    /// last), for the runtime to remove from its write-ahead log; it refuses each write to its
    /// caller.
    pub fn handle_persist_failed(&mut self) -> Option<(u64, u64)> {
        self.pending.clear()
    }
}
