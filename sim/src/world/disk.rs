//! The simulated disk: what a crash keeps, as the runtime's storage keeps it.
//!
//! The runtime (`src/runtime/storage`) commits a local write with an fsync before the write
//! takes effect, and what arrives from peers without one; that is made durable by the next
//! commit of local writes or by the checkpoint every second. A simulated crash is a power
//! cut (harsher than `kill -9`, which keeps what reached the page cache): the node restarts
//! from its last durable commit. So:
//!
//! - a local write is acknowledged (and applied, and sent) when its commit completes, a
//!   latency drawn per commit up to `--disk-ms` after it was submitted (0: at once); at most
//!   one such commit is under way, and writes made meanwhile wait for the next one (group
//!   commit);
//! - the commit holds the replica as it was when submitted, plus its local writes;
//! - every [`CHECKPOINT_EVERY`], when no commit is under way, the replica as it is becomes
//!   durable.
//!
//! A crash loses what was not durable: remote state since the last durable commit, and local
//! writes not yet acknowledged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use confmesh::proto::{Store, Version, node::Signer};

/// How often the runtime makes what arrived from peers durable (its driver's checkpoint).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// One node's disk.
#[derive(Default)]
pub struct Disk {
    /// The data directory's writer key, with its endorsement (PROTOCOL.md §7.2), unless
    /// the run does not sign: drawn with the directory, kept by crashes and stops.
    pub writer: Option<Arc<Signer>>,
    /// The replica as of the last durable commit: what a restart starts from.
    pub durable: Option<Store>,
    /// The revision of the running store `durable` was copied from, if it was.
    durable_revision: Option<u64>,
    /// When the next checkpoint is due.
    next_checkpoint: Option<Instant>,
    /// Local writes handed out by the node and not yet in a commit, in sequence order.
    queued: Vec<Version>,
    /// The commit of local writes under way: the replica when submitted, and the writes.
    in_flight: Option<(Store, Vec<Version>)>,
    /// Bumped at each crash, so that a completion scheduled before it is ignored.
    pub epoch: u64,
}

impl Disk {
    /// The node handed out a local write to make durable.
    pub fn queue(&mut self, version: Version) {
        self.queued.push(version);
    }

    /// With an instant disk: the queued writes, whose commit completes at once. Once the node
    /// applied them, [`Disk::durable_now`] records the commit.
    pub fn take_queued(&mut self) -> Vec<Version> {
        std::mem::take(&mut self.queued)
    }

    /// `store`, as it is, is durable (an instant commit of local writes).
    pub fn durable_now(&mut self, store: &Store) {
        self.durable = Some(store.clone());
        self.durable_revision = Some(store.revision());
    }

    /// Starts a commit of the queued writes with `store` if none is under way; returns
    /// whether it started (the caller schedules its completion).
    pub fn submit(&mut self, store: &Store) -> bool {
        if self.in_flight.is_some() || self.queued.is_empty() {
            return false;
        }
        self.in_flight = Some((store.clone(), std::mem::take(&mut self.queued)));
        true
    }

    /// The commit under way completed: what it held is durable. Returns its local writes,
    /// for the node to apply and acknowledge.
    pub fn complete(&mut self) -> Vec<Version> {
        let Some((mut durable, locals)) = self.in_flight.take() else {
            return Vec::new();
        };
        for version in &locals {
            let _ = durable.apply(version.clone());
        }
        self.durable = Some(durable);
        self.durable_revision = None;
        locals
    }

    /// The checkpoint: if it is due and no commit is under way, `store` becomes durable.
    pub fn checkpoint(&mut self, now: Instant, store: &Store) {
        let due = self.next_checkpoint.get_or_insert(now + CHECKPOINT_EVERY);
        if now < *due || self.in_flight.is_some() {
            return;
        }
        *due = now + CHECKPOINT_EVERY;
        if self.durable_revision != Some(store.revision()) {
            self.durable = Some(store.clone());
            self.durable_revision = Some(store.revision());
        }
    }

    /// A graceful stop: everything the node holds is made durable (the runtime's last
    /// checkpoint), except local writes not yet acknowledged.
    pub fn stop(&mut self, store: &Store) {
        self.durable = Some(store.clone());
        self.lose_pending();
    }

    /// A crash: only what was durable is kept.
    pub fn crash(&mut self) {
        self.lose_pending();
    }

    fn lose_pending(&mut self) {
        self.queued.clear();
        self.in_flight = None;
        self.next_checkpoint = None;
        self.durable_revision = None;
        self.epoch += 1;
    }
}
