//! Garbage collection of tombstones once causally stable.

use crdts::CvRDT;

use super::{Digest, Store, Touched, apply::unindex};
use crate::proto::ids::VClock;

impl Store {
    /// Collects the tombstones every member has seen, given each member's version vector
    /// ([`Digest::version_vector`]). This replica's own vector is always included. Returns the
    /// number of tombstones removed.
    ///
    /// The stable vector is the pointwise minimum of those vectors. A tombstone is removed when
    /// its dot and every entry of its clock are at or below it: every member has applied the
    /// delete, and every version the delete superseded is a dot every member has seen, so a
    /// late copy is dropped on sight. The stable vector joins the collection floor: a peer
    /// whose digest lacks a dot at or below the floor is answered with a snapshot, never a
    /// delta that could resurrect a deleted key.
    ///
    /// Clocks of stored versions are never pruned (see `docs/PROTOCOL.md`, "Garbage
    /// collection", for the counterexample that rules it out).
    ///
    /// Passing vectors of only some members is the caller's error and can resurrect deleted
    /// keys on the others; a node that is not a member when this runs catches up by snapshot.
    pub fn collect_garbage<'a>(
        &mut self,
        member_vectors: impl IntoIterator<Item = &'a VClock>,
    ) -> usize {
        let mut stable = self.context.version_vector();
        for vector in member_vectors {
            stable.glb(vector);
        }
        if stable.is_empty() {
            return 0;
        }
        let mut collected = 0;
        let by_dot = &mut self.by_dot;
        let touched = &mut self.touched;
        self.keys.retain(|key, siblings| {
            let before = siblings.len();
            siblings.retain(|version| {
                // Policy entries are never collected, masked or not (PROTOCOL.md §8.2): a
                // policy context names them, and every replica must be able to fetch them.
                let stable_here = version.is_tombstone()
                    && !key.as_str().starts_with(crate::proto::trust::POLICY_PREFIX)
                    && version.dot.counter <= stable.get(&version.dot.actor)
                    && version
                        .supersedes
                        .dots
                        .iter()
                        .all(|(writer, &seq)| seq <= stable.get(writer));
                if stable_here {
                    unindex(by_dot, version);
                    collected += 1;
                }
                !stable_here
            });
            if siblings.len() != before
                && let Some(touched) = touched.as_mut()
            {
                touched.entry(key.clone()).or_insert(Touched::Existing);
            }
            !siblings.is_empty()
        });
        self.collected.merge(stable);
        tracing::debug!(tombstones = collected, "collected garbage");
        collected
    }

    /// The garbage-collection floor: dots at or below it may belong to collected tombstones.
    pub fn collected_floor(&self) -> &VClock {
        &self.collected
    }

    /// This replica's causal context, to send to a peer for anti-entropy.
    pub fn digest(&self) -> &Digest {
        &self.context
    }
}
