//! The node's table of active members: who they are, whom to sync with next, and the
//! stability round that decides when tombstones may be collected.
//!
//! Every node holds one entry per member, so at N members the cluster holds N² entries; a
//! 10,000-node simulation holds 10⁸ of them in one process. Entries are therefore kept small:
//! a sorted vector rather than a tree (56 bytes a member), no per-member version vectors (a
//! running minimum instead) and no per-member queue entry (a cursor walking the table).

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::identity::NodeId;
use crate::proto::{VClock, WriterId};

/// Members never synced with, kept to be synced first. Beyond this many (a join storm),
/// the round-robin reaches the rest.
const MAX_NEVER_SYNCED: usize = 64;

/// One active member. The address is the table's key.
#[derive(Clone, Copy, Debug)]
struct Peer {
    writer: WriterId,
    generation: u64,
    /// The stability round in which it last reported its version vector (0: never).
    reported_round: u32,
}

impl Peer {
    fn id(&self, addr: SocketAddr) -> NodeId {
        NodeId {
            addr,
            writer: self.writer,
            generation: self.generation,
        }
    }
}

/// What [`PeerTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inserted {
    /// A member not in the table before.
    New,
    /// A new generation at a known address: the member restarted.
    Restarted,
    /// Already known under this identity.
    Known,
}

/// The pointwise minimum of the version vectors members reported since the round started.
/// Once every current member has reported, it is below every member's vector: a stable
/// vector for garbage collection.
#[derive(Debug)]
struct StabilityRound {
    number: u32,
    started: Instant,
    min: Option<VClock>,
    reported: usize,
}

/// A map from address to member, as a vector sorted by address: lookups by binary search,
/// iteration in address order, no per-entry allocation. Inserting in address order (as a
/// restored list does) appends.
#[derive(Debug, Default)]
struct SortedPeers(Vec<(SocketAddr, Peer)>);

impl SortedPeers {
    fn find(&self, addr: &SocketAddr) -> Result<usize, usize> {
        self.0.binary_search_by(|(a, _)| a.cmp(addr))
    }

    fn get(&self, addr: &SocketAddr) -> Option<&Peer> {
        self.find(addr).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut Peer> {
        self.find(addr).ok().map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, addr: &SocketAddr) -> bool {
        self.find(addr).is_ok()
    }

    fn insert(&mut self, addr: SocketAddr, peer: Peer) {
        match self.find(&addr) {
            Ok(i) => self.0[i].1 = peer,
            Err(i) => self.0.insert(i, (addr, peer)),
        }
    }

    fn remove(&mut self, addr: &SocketAddr) -> Option<Peer> {
        self.find(addr).ok().map(|i| self.0.remove(i).1)
    }

    /// The first entry after `addr` in address order, wrapping around.
    fn next_after(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        let i = self.0.partition_point(|(a, _)| a <= addr);
        self.0.get(i).or_else(|| self.0.first()).map(|(a, _)| *a)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &Peer)> + '_ {
        self.0.iter().map(|(a, p)| (a, p))
    }

    fn keys(&self) -> impl Iterator<Item = &SocketAddr> + '_ {
        self.0.iter().map(|(a, _)| a)
    }
}

/// The active members, this node excluded.
#[derive(Debug)]
pub(super) struct PeerTable {
    peers: SortedPeers,
    /// Order-independent hash of the member set, this node included.
    hash: u64,
    /// The last member synced with; the next sync goes to the one after it in address order.
    sync_cursor: SocketAddr,
    never_synced: VecDeque<SocketAddr>,
    /// When we last asked each member for its digest, kept for half an anti-entropy period.
    requested: BTreeMap<SocketAddr, Instant>,
    round: StabilityRound,
}

impl PeerTable {
    /// An empty table for the node `me`, whose first sync goes to the member after it in
    /// address order, so that nodes starting together do not all pick the same member.
    pub(super) fn new(me: NodeId, now: Instant) -> PeerTable {
        PeerTable {
            peers: SortedPeers::default(),
            hash: member_hash(&me),
            sync_cursor: me.addr,
            never_synced: VecDeque::new(),
            requested: BTreeMap::new(),
            round: StabilityRound {
                number: 1,
                started: now,
                min: None,
                reported: 0,
            },
        }
    }

    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(super) fn contains(&self, addr: &SocketAddr) -> bool {
        self.peers.contains_key(addr)
    }

    /// Whether `id`, generation included, is a current member.
    pub(super) fn contains_id(&self, id: &NodeId) -> bool {
        self.peers
            .get(&id.addr)
            .is_some_and(|p| p.id(id.addr) == *id)
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.iter().map(|(&addr, p)| p.id(addr))
    }

    /// Gives back the spare capacity a burst of inserts left (a restored member list).
    pub(super) fn compact(&mut self) {
        let len = self.peers.0.len();
        self.peers.0.shrink_to(len + len / 8 + 8);
    }

    pub(super) fn addrs(&self) -> impl Iterator<Item = &SocketAddr> + '_ {
        self.peers.keys()
    }

    /// The member-set hash exchanged on anti-entropy probes.
    pub(super) fn hash(&self) -> u64 {
        self.hash
    }

    /// This node's own identity changed (it rejoined under a new generation).
    pub(super) fn rename_self(&mut self, old: &NodeId, new: &NodeId) {
        self.hash ^= member_hash(old) ^ member_hash(new);
    }

    /// Adds or refreshes a member. `eager_sync` puts a new member first in line for
    /// anti-entropy (a member restored from a saved list was known before, so it is not).
    pub(super) fn insert(&mut self, id: NodeId, eager_sync: bool) -> Inserted {
        let fresh = Peer {
            writer: id.writer,
            generation: id.generation,
            reported_round: 0,
        };
        let outcome = match self.peers.get_mut(&id.addr) {
            Some(peer) if peer.id(id.addr) == id => return Inserted::Known,
            Some(peer) => {
                // Forget what the old generation reported: its store may be another one.
                let old = peer.id(id.addr);
                if peer.reported_round == self.round.number {
                    self.round.reported -= 1;
                }
                *peer = fresh;
                self.hash ^= member_hash(&old) ^ member_hash(&id);
                Inserted::Restarted
            }
            None => {
                self.peers.insert(id.addr, fresh);
                self.hash ^= member_hash(&id);
                Inserted::New
            }
        };
        if eager_sync && self.never_synced.len() < MAX_NEVER_SYNCED {
            self.never_synced.push_back(id.addr);
        }
        outcome
    }

    /// Removes `id` if it is the current member at its address; returns whether it was.
    pub(super) fn remove(&mut self, id: &NodeId) -> bool {
        if !self.contains_id(id) {
            return false;
        }
        if let Some(peer) = self.peers.remove(&id.addr)
            && peer.reported_round == self.round.number
        {
            self.round.reported -= 1;
        }
        self.hash ^= member_hash(id);
        self.requested.remove(&id.addr);
        true
    }

    /// The member to sync with next: one never synced with, else the next in address order
    /// after the previous one, wrapping around. Every member comes up once per cycle.
    pub(super) fn next_sync_target(&mut self) -> Option<SocketAddr> {
        while let Some(addr) = self.never_synced.pop_front() {
            if self.peers.contains_key(&addr) {
                return Some(addr);
            }
        }
        let next = self.peers.next_after(&self.sync_cursor)?;
        self.sync_cursor = next;
        Some(next)
    }

    /// Notes that we asked `addr` for its digest at `now`.
    pub(super) fn note_request(&mut self, addr: SocketAddr, now: Instant) {
        if self.peers.contains_key(&addr) {
            self.requested.insert(addr, now);
        }
    }

    /// Whether we asked `addr` for its digest less than `window` ago.
    pub(super) fn requested_within(
        &self,
        addr: &SocketAddr,
        now: Instant,
        window: Duration,
    ) -> bool {
        self.requested
            .get(addr)
            .is_some_and(|&at| now.saturating_duration_since(at) < window)
    }

    /// Drops request times older than `window`, keeping the map as small as the set of
    /// recent requests.
    pub(super) fn forget_requests_before(&mut self, now: Instant, window: Duration) {
        self.requested
            .retain(|_, &mut at| now.saturating_duration_since(at) < window);
    }

    /// Whether `addr` is a member that has not reported a vector in the current round (so
    /// its vector is worth computing).
    pub(super) fn wants_vector(&self, addr: &SocketAddr) -> bool {
        self.peers
            .get(addr)
            .is_some_and(|p| p.reported_round != self.round.number)
    }

    /// Records the version vector `addr` reported. Only its first report in a round counts:
    /// vectors only grow, so a later one cannot lower the minimum.
    pub(super) fn report_vector(&mut self, addr: &SocketAddr, vector: &VClock) {
        let round = &mut self.round;
        let Some(peer) = self.peers.get_mut(addr) else {
            return;
        };
        if peer.reported_round == round.number {
            return;
        }
        peer.reported_round = round.number;
        round.reported += 1;
        match &mut round.min {
            Some(min) => min.glb(vector),
            None => round.min = Some(vector.clone()),
        }
    }

    /// The stable vector, if every current member reported within `horizon` of the round's
    /// start; a new round starts then. A round older than `horizon` is abandoned and
    /// restarted, so a stale report never stands in for a member's current state for long.
    pub(super) fn take_stable_vector(&mut self, now: Instant, horizon: Duration) -> Option<VClock> {
        let complete = !self.peers.is_empty() && self.round.reported == self.peers.len();
        let expired = now.saturating_duration_since(self.round.started) > horizon;
        if !complete && !expired {
            return None;
        }
        let min = self.round.min.take();
        self.round = StabilityRound {
            number: self.round.number.wrapping_add(1).max(1),
            started: now,
            min: None,
            reported: 0,
        };
        if complete { min } else { None }
    }
}

/// A member's contribution to the member-set hash: a fixed mix of its identity.
fn member_hash(id: &NodeId) -> u64 {
    let mut x =
        id.writer.0 ^ id.generation.rotate_left(17) ^ u64::from(id.addr.port()).rotate_left(40);
    match id.addr.ip() {
        std::net::IpAddr::V4(ip) => x ^= u64::from(u32::from(ip)).rotate_left(8),
        std::net::IpAddr::V6(ip) => {
            let bits = u128::from(ip);
            x ^= (bits as u64) ^ ((bits >> 64) as u64).rotate_left(23);
        }
    }
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdts::CmRDT;

    fn id(port: u16, generation: u64) -> NodeId {
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            writer: WriterId(u64::from(port)),
            generation,
        }
    }

    /// An arbitrary origin for test time.
    #[allow(clippy::disallowed_methods, reason = "tests pick any origin")]
    fn origin() -> Instant {
        Instant::now()
    }

    fn vclock(entries: &[(u64, u64)]) -> VClock {
        let mut v = VClock::new();
        for &(writer, seq) in entries {
            v.apply(crdts::Dot::new(WriterId(writer), seq));
        }
        v
    }

    #[test]
    fn the_member_hash_depends_on_the_set_only() {
        let now = origin();
        let me = id(1, 1);
        let mut a = PeerTable::new(me, now);
        let mut b = PeerTable::new(me, now);
        for port in [2, 3, 4] {
            a.insert(id(port, 1), true);
        }
        for port in [4, 2, 5, 3] {
            b.insert(id(port, 1), true);
        }
        assert_ne!(a.hash(), b.hash());
        b.remove(&id(5, 1));
        assert_eq!(a.hash(), b.hash());
        // A restart changes the hash; a stale identity cannot remove the new one.
        assert_eq!(b.insert(id(3, 2), true), Inserted::Restarted);
        assert_ne!(a.hash(), b.hash());
        assert!(!b.remove(&id(3, 1)));
        assert!(b.contains_id(&id(3, 2)));
    }

    #[test]
    fn sync_targets_cycle_through_every_member_new_ones_first() {
        let now = origin();
        let mut table = PeerTable::new(id(3, 1), now);
        for port in [1, 2, 4, 5] {
            table.insert(id(port, 1), false);
        }
        table.insert(id(6, 1), true);
        let order: Vec<u16> = (0..6)
            .filter_map(|_| table.next_sync_target())
            .map(|a| a.port())
            .collect();
        // The new member first, then round-robin starting after this node's own address.
        assert_eq!(order, [6, 4, 5, 6, 1, 2]);
    }

    #[test]
    fn a_stable_vector_needs_a_report_from_every_current_member() {
        let now = origin();
        let horizon = Duration::from_secs(300);
        let mut table = PeerTable::new(id(1, 1), now);
        table.insert(id(2, 1), true);
        table.insert(id(3, 1), true);
        let (two, three) = (id(2, 1).addr, id(3, 1).addr);
        table.report_vector(&two, &vclock(&[(7, 5), (8, 2)]));
        assert!(table.take_stable_vector(now, horizon).is_none());
        // A second report in the round does not count twice.
        table.report_vector(&two, &vclock(&[(7, 9), (8, 9)]));
        assert!(table.take_stable_vector(now, horizon).is_none());
        // Member 3 restarts before reporting; then reports.
        table.insert(id(3, 2), true);
        assert!(table.wants_vector(&three));
        table.report_vector(&three, &vclock(&[(7, 3), (8, 4)]));
        assert!(!table.wants_vector(&three));
        let stable = table
            .take_stable_vector(now, horizon)
            .expect("complete round");
        assert_eq!(stable, vclock(&[(7, 3), (8, 2)]));
        // A new round has started: nothing is stable until everyone reports again.
        assert!(table.wants_vector(&two));
        assert!(table.take_stable_vector(now, horizon).is_none());
    }

    #[test]
    fn a_member_that_restarts_after_reporting_must_report_again() {
        let now = origin();
        let horizon = Duration::from_secs(300);
        let mut table = PeerTable::new(id(1, 1), now);
        table.insert(id(2, 1), true);
        table.report_vector(&id(2, 1).addr, &vclock(&[(7, 5)]));
        table.insert(id(2, 2), true);
        assert!(table.take_stable_vector(now, horizon).is_none());
        // A departed member's report no longer completes the round either.
        table.report_vector(&id(2, 2).addr, &vclock(&[(7, 1)]));
        table.insert(id(4, 1), true);
        table.remove(&id(2, 2));
        assert!(table.take_stable_vector(now, horizon).is_none());
    }

    #[test]
    fn an_expired_round_yields_nothing_and_restarts() {
        let now = origin();
        let horizon = Duration::from_secs(10);
        let mut table = PeerTable::new(id(1, 1), now);
        table.insert(id(2, 1), true);
        table.insert(id(3, 1), true);
        table.report_vector(&id(2, 1).addr, &vclock(&[(7, 5)]));
        let later = now + Duration::from_secs(11);
        assert!(table.take_stable_vector(later, horizon).is_none());
        assert!(table.wants_vector(&id(2, 1).addr));
        table.report_vector(&id(3, 1).addr, &vclock(&[(7, 1)]));
        assert!(table.take_stable_vector(later, horizon).is_none());
    }
}
