//! The node's timers: a heap ordered by (deadline, sequence), so equal deadlines fire in the
//! order they were set and a run replays exactly.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    time::Instant,
};

use super::identity::NodeId;

/// What a timer is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// A timer the membership layer (foca) asked for; handed back to it.
    Swim(foca::Timer<NodeId>),
    /// Announce to the seeds again, until the membership layer reports us active.
    Announce,
    /// Exchange the whole member list with a random member.
    PushPull,
    /// Start an anti-entropy round with the member synced least recently.
    AntiEntropy,
    /// Ask for versions announced by a lazy peer that have not arrived by now.
    Graft,
    /// Send the lazy peers what was queued for them (one `IHave` each).
    LazyFlush,
    /// Collect stable tombstones if every member's version vector is known.
    CollectGarbage,
    /// Rounds mode: send recently learned versions to a few random members.
    GossipRound,
    /// A leaving node's notice has had its head start: announce the leave.
    Leave,
    /// A writer was convicted of equivocation: publish the proofs found here and write again
    /// the keys it tainted (after the batch that convicted it is applied).
    Equivocation,
    /// A member declared down elsewhere but heard from here may be reported down now.
    HeldDowns,
}

#[derive(Debug, Default)]
pub(super) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: BTreeMap<u64, Timer>,
    seq: u64,
}

impl TimerQueue {
    pub(super) fn set(&mut self, at: Instant, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.timers.insert(self.seq, timer);
    }

    /// The earliest deadline, if any timer is set.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest timer due at `now`, with its deadline.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let Reverse((at, seq)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.timers.remove(&seq).map(|timer| (at, timer))
    }

    /// Whether a timer of this kind is set (for the few kinds kept unique).
    pub(super) fn contains(&self, timer: &Timer) -> bool {
        self.timers.values().any(|t| t == timer)
    }
}
