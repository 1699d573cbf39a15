//! The node: a sans-IO state machine that owns a replica, the membership layer, dissemination
//! and anti-entropy.
//!
//! Modelled on quinn-proto's `Connection`. Methods come in four kinds:
//!
//! - **input handlers** `handle_datagram`, `handle_stream_message`, `handle_timeout`,
//!   `handle_persisted`, each taking `now`, and `handle_persist_failed`;
//! - **commands** `put`, `put_if`, `delete`, `join`, `leave`;
//! - **output** drained with `poll_transmit`, `poll_event`, `poll_persist` (local writes to
//!   make durable, reported back with `handle_persisted`), and `poll_timeout` for when to
//!   call `handle_timeout` next;
//! - **getters** taking `&self`.
//!
//! Contract: after every input handler or command, drain `poll_transmit`, `poll_event` and
//! `poll_persist`, and re-read `poll_timeout`. A local write takes effect (becomes readable,
//! is sent to peers) only at `handle_persisted`: see the `writes` module. `now` must never go
//! backwards. The node reads no clock and draws randomness only from the seed in its
//! [`Config`].

mod dissemination;
mod identity;
mod membership;
mod peers;
mod resign;
mod sync;
mod timers;
mod trust;
mod writes;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rand::{SeedableRng, rngs::Xoshiro256PlusPlus};

pub use self::identity::NodeId;
pub use self::membership::{DEPARTED_LISTED_FOR, Departure};
pub use self::resign::{ResignError, Resigned};
pub use self::trust::{Audit, MAX_PEERS_COUNTED, Signer, TrustConfig, TrustStats};
use self::{
    dissemination::Link,
    membership::Lifecycle,
    timers::{Timer, TimerQueue},
};
use super::{
    Key, Store, StoreConfig, Version, WriterId,
    trust::Judge,
    wire::{self, Format, Message},
};

/// How changes spread on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dissemination {
    /// Eager push along a tree, lazy announcements, grafts (the default).
    Plumtree,
    /// Periodic gossip rounds, as memberlist does: every `interval`, send the versions learned
    /// recently to `fanout` random members; each version goes out `retransmits` times. Kept
    /// as the baseline the simulator compares against.
    Rounds {
        /// Time between rounds (memberlist: 200 ms).
        interval: Duration,
        /// Members sent to per round (memberlist: 3).
        fanout: usize,
        /// Rounds each version is sent in (memberlist: 4 × log10(N + 1)).
        retransmits: u32,
    },
}

impl Dissemination {
    /// The memberlist-like baseline for a cluster of `n` nodes: 200 ms rounds, fanout 3.
    pub fn baseline(n: usize) -> Dissemination {
        let retransmits = (4.0 * ((n + 1) as f64).log10()).ceil().max(1.0) as u32;
        Dissemination::Rounds {
            interval: Duration::from_millis(200),
            fanout: 3,
            retransmits,
        }
    }
}

/// How a node behaves. [`Config::lan`] is the starting point.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who this node is.
    pub id: NodeId,
    /// Seed of every random choice the node makes (peer selection, foca's probe order).
    pub rng_seed: u64,
    /// Limits of the replica.
    pub store: StoreConfig,
    /// The SWIM parameters, passed to foca.
    pub swim: foca::Config,
    /// How changes spread on the fast path. Default [`Dissemination::Plumtree`].
    pub dissemination: Dissemination,
    /// How often a node starts an anti-entropy round with the member it synced least
    /// recently. Default 500 ms. Bounds how long a lost change can stay lost. An idle node
    /// stretches it up to 16 times (at most 8 s), and comes back to it at the first change
    /// (docs/PROTOCOL.md §4).
    pub anti_entropy_interval: Duration,
    /// How many peers a node keeps in its dissemination view (eager plus lazy). Default 6.
    /// The view is symmetric: a peer that pushes to us joins our view, up to twice this.
    pub view_size: usize,
    /// Duplicates never prune a node below this many eager links. Default 3. One shared tree
    /// serves every writer badly (its diameter makes most nodes wait for a graft); a graph of
    /// degree 3 has a diameter of about log2(N) hops for about 2 copies per node per change.
    pub eager_min: usize,
    /// How long after a lazy peer had a version a node that lacks it asks that peer for it
    /// (a graft): the wait from the announcement's arrival is this less
    /// [`lazy_interval`](Config::lazy_interval), which the announcer waited already. Default
    /// 20 ms: above a LAN round trip, so the eager copy usually wins. Keep it above
    /// `lazy_interval`, and both the same across the cluster.
    pub graft_timeout: Duration,
    /// How long a node collects the announcements (`IHave`) for each lazy peer before it
    /// sends them in one message. Default 10 ms. The push to eager peers goes at once; the
    /// announcements, which only matter where a push was lost, wait, so they neither compete
    /// with the push for CPU nor announce what the peer already showed it holds (it pushed
    /// or announced the version meanwhile). The receiver's graft wait is shortened by as
    /// much, so a lost push is repaired as soon as with no queue. Zero announces at once.
    pub lazy_interval: Duration,
    /// How often a joining node re-announces to its seeds until it is active. Default 1 s.
    pub announce_interval: Duration,
    /// How often to try collecting stable tombstones. Default 10 s.
    pub gc_interval: Duration,
    /// The largest stream message accepted. Default 16 MiB.
    pub max_stream_message_bytes: usize,
    /// The size budget of one anti-entropy delta or snapshot chunk. Default 1 MiB.
    pub sync_chunk_bytes: usize,
    /// What the node signs with and how it judges versions from peers (PROTOCOL.md §7).
    /// Default: no signer, nothing certified, unsigned versions applied (protocol 2's rules).
    /// With a signer, the node's writer id is its key's.
    pub trust: TrustConfig,
}

impl Config {
    /// Defaults for a LAN of about `expected_members` nodes (it tunes the SWIM timers).
    pub fn lan(id: NodeId, expected_members: usize, rng_seed: u64) -> Config {
        Config {
            id,
            rng_seed,
            store: StoreConfig::default(),
            swim: membership::lan_config(expected_members),
            dissemination: Dissemination::Plumtree,
            anti_entropy_interval: Duration::from_millis(500),
            view_size: 6,
            eager_min: 3,
            graft_timeout: Duration::from_millis(20),
            lazy_interval: Duration::from_millis(10),
            announce_interval: Duration::from_secs(1),
            gc_interval: Duration::from_secs(10),
            max_stream_message_bytes: DEFAULT_MAX_STREAM_MESSAGE_BYTES,
            sync_chunk_bytes: 1 << 20,
            trust: TrustConfig::default(),
        }
    }
}

impl Config {
    /// Defaults for members spread over a WAN (round trips of tens to hundreds of
    /// milliseconds, more loss): slower failure detection that tolerates it (foca's WAN
    /// preset), anti-entropy every 2 s, and a graft timeout above a WAN round trip.
    pub fn wan(id: NodeId, expected_members: usize, rng_seed: u64) -> Config {
        Config {
            swim: membership::wan_config(expected_members),
            anti_entropy_interval: Duration::from_secs(2),
            graft_timeout: Duration::from_millis(250),
            lazy_interval: Duration::from_millis(50),
            announce_interval: Duration::from_secs(2),
            ..Config::lan(id, expected_members, rng_seed)
        }
    }
}

/// The default of [`Config::max_stream_message_bytes`]: 16 MiB.
pub const DEFAULT_MAX_STREAM_MESSAGE_BYTES: usize = 16 << 20;

/// How long a leaving node spreads its leave notice before announcing itself down, so that
/// members see the notice first and report a leave rather than a failure.
pub const LEAVE_NOTICE_LEAD: Duration = Duration::from_millis(300);

/// Which QUIC facility carries a [`Transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// An unreliable datagram (SWIM packets).
    Datagram,
    /// One message on a reliable stream (everything else).
    Stream,
}

/// Bytes for the runtime to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer's address.
    pub to: SocketAddr,
    /// Datagram or stream.
    pub channel: Channel,
    /// One encoded [`Message`].
    pub bytes: Bytes,
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The winner of a key changed, by a local write or by one from a peer.
    KeyChanged {
        /// The key.
        key: Key,
        /// The previous winner, `None` if the key was absent or deleted.
        old: Option<Version>,
        /// The new winner, `None` if the key is now deleted.
        new: Option<Version>,
        /// The writer of the highest-ranked version now stored for the key (the new winner,
        /// or the tombstone that deleted it).
        origin: WriterId,
    },
    /// A member joined or came back.
    MemberUp(NodeId),
    /// A member was declared down: it failed, or is unreachable.
    MemberDown(NodeId),
    /// A member left gracefully ([`Node::leave`]). A member whose leave notice arrives after
    /// it was already declared down is reported as down only.
    MemberLeft(NodeId),
    /// This node was declared down and rejoined under a new generation.
    Rejoined(NodeId),
}

/// What this node's membership layer believes of one member: see [`Node::membership_view`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The identity it holds for the member.
    pub id: NodeId,
    /// Alive, suspected, or declared down.
    pub state: MemberState,
    /// The member's incarnation as last heard: a suspected member refutes by raising it.
    pub incarnation: u16,
}

/// A member's state in SWIM terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes (or not yet found otherwise).
    Alive,
    /// A probe failed; declared down unless it refutes within the suspicion timeout.
    Suspect,
    /// Declared down; it must rejoin under a new generation.
    Down,
}

impl From<foca::State> for MemberState {
    fn from(state: foca::State) -> MemberState {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

/// A SWIM packet taken apart: see [`describe_membership_datagram`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipPacket {
    /// The SWIM message (ping, ack, gossip, ...), as foca prints it.
    pub kind: String,
    /// The sender's identity.
    pub src: NodeId,
    /// The sender's incarnation: a raised one refutes a suspicion of the sender.
    pub src_incarnation: u16,
    /// The identity the sender addressed.
    pub dst: NodeId,
    /// The member updates piggybacked on the packet.
    pub updates: Vec<MemberView>,
}

/// Takes apart a datagram [`Node`]s exchange, if it is a SWIM packet (`None` otherwise, or
/// if it does not decode). For diagnostics, such as the simulator's `--follow`.
pub fn describe_membership_datagram(bytes: &[u8]) -> Option<MembershipPacket> {
    match wire::decode(bytes, wire::MAX_DATAGRAM_BYTES) {
        Ok(Message::Membership(packet)) => membership::describe_packet(&packet),
        _ => None,
    }
}

/// Upper bounds, in milliseconds, of [`NodeStats::sync_duration_buckets`].
pub const SYNC_DURATION_BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000];

/// Counters a node keeps; the runtime exports them as metrics and the simulator reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages that failed to decode or were of the wrong kind for their channel; dropped.
    pub malformed: u64,
    /// Versions received in pushes, duplicates included.
    pub pushed_versions_received: u64,
    /// Of those, versions already seen.
    pub duplicate_versions: u64,
    /// Grafts sent (a lazy peer's announcement arrived before the version).
    pub grafts_sent: u64,
    /// Anti-entropy rounds started.
    pub sync_rounds: u64,
    /// Sync exchanges this node asked for that completed: from its digest sent to the last
    /// of what the peer had merged (an untruncated delta, or every snapshot chunk).
    pub syncs_completed: u64,
    /// Of those, how many took at most [`SYNC_DURATION_BUCKETS_MS`]`[i]` milliseconds
    /// (cumulative, as a Prometheus histogram counts).
    pub sync_duration_buckets: [u64; SYNC_DURATION_BUCKETS_MS.len()],
    /// The summed duration of the completed exchanges, in milliseconds.
    pub sync_duration_ms_total: u64,
    /// Deltas and snapshot chunks applied.
    pub sync_applied: u64,
    /// Tombstones collected.
    pub tombstones_collected: u64,
    /// Bytes handed to the runtime, per channel.
    pub datagram_bytes_sent: u64,
    /// Bytes handed to the runtime on streams.
    pub stream_bytes_sent: u64,
    /// Bytes of stream messages received (a catch-up's cost).
    pub stream_bytes_received: u64,
    /// Suspicions this node raised (a probe failed) that the member refuted before the
    /// timeout: it was not declared down, nor told it was (docs/PROTOCOL.md §4, Membership).
    pub suspicions_refuted: u64,
    /// Proofs of equivocation this node published (PROTOCOL.md §7.6).
    pub proofs_published: u64,
    /// Keys this node wrote again because a convicted writer had written them (§7.6).
    pub tainted_keys_rewritten: u64,
    /// Versions this node masked: granted when made, then undone by a revocation or a policy
    /// root that had not seen them (PROTOCOL.md §8.5). Counted when masked, not at restart.
    pub versions_masked: u64,
    /// Members another node declared down while this one had reason to believe them alive
    /// (never or only lately suspected here, or heard from lately), kept listed while they
    /// rejoined under a new generation (docs/PROTOCOL.md §4, Held downs).
    pub downs_held: u64,
    /// Verdicts on versions from peers other than applied (PROTOCOL.md §7.4).
    pub trust: TrustStats,
}

/// One confmesh node. See the module documentation for the calling contract.
pub struct Node {
    config: Config,
    id: NodeId,
    epoch: Instant,
    epoch_wall_ms: u64,
    store: Store,
    /// Local writes not yet durable (`writes.rs`).
    pending: writes::Pending,
    /// SWIM through foca, and where this node is in its life as a member (`membership.rs`).
    membership: membership::Membership,
    /// The member table every concern reads (`peers.rs`).
    peers: peers::PeerTable,
    /// The fast path's view and what lazy peers announced (`dissemination.rs`).
    spread: dissemination::Spread,
    /// Anti-entropy exchanges under way (`sync.rs`).
    sync: sync::SyncState,
    timers: TimerQueue,
    rng: Xoshiro256PlusPlus,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: NodeStats,
    /// The verdicts on versions from peers (`trust.rs`).
    judge: Judge,
    /// What each peer sent that was not applied.
    trust_by_peer: std::collections::BTreeMap<SocketAddr, TrustStats>,
    /// Equivocations found here, to publish as proofs (`trust.rs`).
    proofs_to_publish: Vec<super::trust::Equivocation>,
    /// Writers whose endorsement this node asked a peer for, and when (see
    /// [`Node::ask_for_endorsements`]); at most `MAX_ENDORSEMENTS_ASKED` (`trust.rs`).
    endorsements_asked: std::collections::BTreeMap<WriterId, Instant>,
}

impl Node {
    /// A node that has not joined anything yet, with an empty replica. `now` and
    /// `now_wall_ms` (ms since the Unix epoch) pin the node's wall clock: wall time at a later
    /// `now` is `now_wall_ms` plus the time elapsed.
    pub fn new(config: Config, now: Instant, now_wall_ms: u64) -> Node {
        Node::with_store(config, now, now_wall_ms, None)
    }

    /// Like [`Node::new`], with a replica restored from storage.
    pub fn with_store(
        config: Config,
        now: Instant,
        now_wall_ms: u64,
        store: Option<Store>,
    ) -> Node {
        let mut id = config.id;
        if let Some(signer) = &config.trust.signer {
            id.writer = signer.key().id();
        }
        let store = store.unwrap_or_else(|| Store::new(id.writer, config.store.clone()));
        let mut judge = Judge::with_mode(config.trust.mode);
        judge.restore(&store, config.trust.certifier.as_ref());
        let swim_rng = Xoshiro256PlusPlus::seed_from_u64(config.rng_seed ^ 0x5157_494d);
        let leave_notices = membership::LeaveNotices::default();
        let swim = membership::Swim::with_custom_broadcast(
            id,
            config.swim.clone(),
            swim_rng,
            membership::BincodeCodec::default(),
            leave_notices.handle(),
        );
        let mut node = Node {
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            config,
            id,
            epoch: now,
            epoch_wall_ms: now_wall_ms,
            store,
            pending: writes::Pending::default(),
            membership: membership::Membership::new(swim, leave_notices, now),
            timers: TimerQueue::default(),
            peers: peers::PeerTable::new(id, now),
            spread: dissemination::Spread::default(),
            sync: sync::SyncState::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: NodeStats::default(),
            judge,
            trust_by_peer: std::collections::BTreeMap::new(),
            proofs_to_publish: Vec::new(),
            endorsements_asked: std::collections::BTreeMap::new(),
        };
        // The policy's masks, made again from the entries held (never stored).
        let certifier = std::sync::Arc::clone(&node.config.trust.certifier);
        for dot in node.judge.newly_masked(&node.store, certifier.as_ref()) {
            node.store.mask(dot);
        }
        node.endorse_if_new(now);
        if node.judge.convictions().next().is_some() {
            // Convicted before a restart: what they tainted may not be written again yet.
            node.timers.set(now, Timer::Equivocation);
        }
        let first_round = node.jitter(node.config.anti_entropy_interval);
        node.schedule_anti_entropy(now + first_round);
        node.timers
            .set(now + node.config.gc_interval, Timer::CollectGarbage);
        if let Dissemination::Rounds { interval, .. } = node.config.dissemination {
            node.timers.set(now + interval, Timer::GossipRound);
        }
        node
    }

    // ---- getters ----

    /// This node's identity (its generation changes when it rejoins).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The replica.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The active members, this node excluded.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.ids()
    }

    /// How many active members there are, this node excluded.
    pub fn member_count(&self) -> usize {
        self.peers.len()
    }

    /// What the membership layer believes of the member at `addr` (`None`: not in its
    /// table). A linear scan of the table, for diagnostics such as the simulator's
    /// `--follow`, not for hot paths.
    pub fn membership_view(&self, addr: SocketAddr) -> Option<MemberView> {
        self.membership
            .swim
            .iter_membership_state()
            .find(|m| m.id().addr == addr)
            .map(|m| MemberView {
                id: *m.id(),
                state: MemberState::from(m.state()),
                incarnation: m.incarnation(),
            })
    }

    /// How many membership updates wait to ride on outgoing SWIM packets.
    pub fn membership_backlog(&self) -> usize {
        self.membership.swim.updates_backlog()
    }

    /// Whether the membership layer considers this node part of a cluster.
    pub fn is_active(&self) -> bool {
        self.membership.lifecycle.is_active()
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// When an anti-entropy probe last showed a peer holding exactly what this replica holds
    /// (`None`: never). How stale this is bounds how far the replica may be behind.
    pub fn last_in_sync(&self) -> Option<Instant> {
        self.sync.last_in_sync
    }

    // ---- commands ----

    /// Starts recording the keys whose stored versions change; see
    /// [`Store::take_touched_keys`].
    pub fn track_touched_keys(&mut self) {
        self.store.track_touched_keys();
    }

    /// The keys whose stored versions changed since the last call.
    pub fn take_touched_keys(&mut self) -> crate::proto::store::TouchedKeys {
        self.store.take_touched_keys()
    }

    /// Joins the cluster through `seeds` (addresses of any members). Re-announces every
    /// [`Config::announce_interval`] until the membership layer reports this node active.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        self.membership.seeds = seeds
            .iter()
            .copied()
            .filter(|&s| s != self.id.addr)
            .collect();
        self.announce();
        if !self.timers.contains(&Timer::Announce) {
            self.timers
                .set(now + self.config.announce_interval, Timer::Announce);
        }
        self.after_swim(now);
    }

    /// Seeds the member table with members known from before, such as the list saved before
    /// a restart: the membership layer probes them at once instead of rediscovering a large
    /// cluster one gossip packet at a time. Members that are gone are detected and removed as
    /// failed ones are. Call before [`Node::join`]. Ignores this node's own address.
    ///
    /// Restored members are not reported as [`Event::MemberUp`]: the caller supplied them.
    pub fn restore_members(&mut self, now: Instant, members: impl IntoIterator<Item = NodeId>) {
        let me = self.id.addr;
        // In address order, the member table appends rather than inserts.
        let mut members: Vec<NodeId> = members.into_iter().filter(|m| m.addr != me).collect();
        // The latest generation at each address first, and kept.
        members.sort_unstable_by(|a, b| a.addr.cmp(&b.addr).then(b.generation.cmp(&a.generation)));
        members.dedup_by_key(|m| m.addr);
        self.membership.table_restored = true;
        self.membership.restoring = true;
        // In chunks, so the notifications of a 10,000-member list never pile up.
        for chunk in members.chunks(256) {
            let updates = chunk.iter().copied().map(foca::Member::alive);
            if let Err(e) =
                self.membership
                    .swim
                    .apply_many(updates, false, &mut self.membership.out)
            {
                tracing::debug!(cause = %e, "restored members refused");
            }
            self.after_swim(now);
        }
        self.membership.restoring = false;
        self.peers.compact();
    }

    /// Leaves the cluster gracefully: members learn it left rather than failed
    /// ([`Event::MemberLeft`]).
    ///
    /// The leave notice spreads first; [`LEAVE_NOTICE_LEAD`] later (on a
    /// [`Node::handle_timeout`]) the membership layer announces this node down and it stops
    /// being a member. Keep driving the node until [`Node::has_left`].
    pub fn leave(&mut self, now: Instant) {
        if matches!(
            self.membership.lifecycle,
            Lifecycle::Leaving { .. } | Lifecycle::Left
        ) {
            return;
        }
        self.membership.lifecycle = Lifecycle::Leaving {
            active: self.membership.lifecycle.is_active(),
        };
        let notice = membership::LeaveNotices::encode(&self.id);
        if let Err(e) = self.membership.swim.add_broadcast(&notice) {
            tracing::debug!(cause = %e, "leave notice not queued");
        }
        if let Err(e) = self.membership.swim.gossip(&mut self.membership.out) {
            tracing::debug!(cause = %e, "leave notice not gossiped");
        }
        self.timers.set(now + LEAVE_NOTICE_LEAD, Timer::Leave);
        self.after_swim(now);
    }

    /// Whether a [`Node::leave`] has completed: the node is no longer a member.
    pub fn has_left(&self) -> bool {
        self.membership.lifecycle == Lifecycle::Left
    }

    fn finish_leave(&mut self, now: Instant) {
        // The notice again, so the packets that announce this node down carry it too: a
        // member that missed it in the lead time still reads it before the down, and reports
        // a leave, not a failure (after_swim reads notices before foca's notifications).
        let notice = membership::LeaveNotices::encode(&self.id);
        if let Err(e) = self.membership.swim.add_broadcast(&notice) {
            tracing::debug!(cause = %e, "leave notice not queued again");
        }
        if let Err(e) = self.membership.swim.leave_cluster(&mut self.membership.out) {
            tracing::debug!(cause = %e, "leave failed");
        }
        self.after_swim(now);
        self.membership.lifecycle = Lifecycle::Left;
        // A node that left reports no member down any more.
        self.membership.held_downs.clear();
    }

    // ---- inputs ----

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match wire::decode(bytes, wire::MAX_DATAGRAM_BYTES) {
            Ok(Message::Membership(packet)) => {
                self.note_suspicions(now, membership::suspicion_updates(&packet));
                self.heard_from(now, from);
                if let Err(e) = self
                    .membership
                    .swim
                    .handle_data(&packet, &mut self.membership.out)
                {
                    tracing::trace!(%from, cause = %e, "membership packet refused");
                }
                self.after_swim(now);
                self.membership.unsuspected.clear();
            }
            Ok(_) | Err(_) => self.malformed(from, "datagram"),
        }
    }

    /// A complete message arrived on a stream from `from`.
    pub fn handle_stream_message(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let decoded = wire::decode(bytes, self.config.max_stream_message_bytes);
        self.handle_decoded_stream_message(now, from, bytes.len(), decoded);
    }

    /// A message of `len` bytes arrived on a stream from `from`, decoded by the caller (with
    /// [`wire::decode`] and [`Config::max_stream_message_bytes`]): the runtime decodes large
    /// ones off the node task, and checks their signatures there too.
    pub fn handle_decoded_stream_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        decoded: Result<Message, wire::DecodeError>,
    ) {
        self.stats.stream_bytes_received += len as u64;
        let message = match decoded {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(%from, cause = %e, "undecodable stream message");
                return self.malformed(from, "stream");
            }
        };
        match message {
            Message::Push { versions } => self.on_push(now, from, versions),
            Message::IHave { dots } => self.on_ihave(now, from, dots),
            Message::Graft { dots } => self.on_graft(from, dots),
            Message::Prune => self.set_link(from, Link::Lazy),
            Message::SyncProbe { hash, members } => self.on_sync_probe(now, from, hash, members),
            Message::SyncRequest { digest } => self.on_sync_request(now, from, digest),
            Message::SyncDelta(delta) => self.on_sync_delta(now, from, delta),
            Message::SyncSnapshot(chunk) => self.on_sync_snapshot(now, from, chunk),
            Message::MembershipState { members, reply } => {
                self.on_membership_state(now, from, &members, reply)
            }
            Message::Membership(_) => self.malformed(from, "membership packet on a stream"),
        }
    }

    /// Time passed: fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((deadline, timer)) = self.timers.pop_due(now) {
            self.note_lateness(now.saturating_duration_since(deadline));
            match timer {
                Timer::Swim(t) if self.is_refuted_suspicion(&t) => {
                    self.stats.suspicions_refuted += 1;
                    tracing::debug!(?t, "suspicion refuted in time");
                }
                Timer::Swim(t) if self.is_idle_gossip(&t) => {
                    self.membership.held_gossip = Some((t, deadline));
                }
                Timer::Swim(t) => {
                    if let Err(e) = self
                        .membership
                        .swim
                        .handle_timer(t, &mut self.membership.out)
                    {
                        tracing::trace!(cause = %e, "membership timer");
                    }
                    self.after_swim(now);
                }
                Timer::Announce if self.membership.lifecycle == Lifecycle::Idle => {
                    self.announce();
                    self.timers
                        .set(now + self.config.announce_interval, Timer::Announce);
                    self.after_swim(now);
                }
                Timer::Announce => {}
                Timer::PushPull => self.push_pull(),
                Timer::AntiEntropy => self.anti_entropy_round(now, deadline),
                Timer::Graft => self.graft_due(now),
                Timer::LazyFlush => self.flush_lazy_queue(now),
                Timer::CollectGarbage => self.collect_garbage(now),
                Timer::GossipRound => self.gossip_round(now),
                Timer::Leave => self.finish_leave(now),
                Timer::Equivocation => self.act_on_convictions(now),
                Timer::HeldDowns => self.held_downs_due(now),
            }
        }
    }

    // ---- outputs ----

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let next = self.outbox.pop_front();
        release_if_drained(&mut self.outbox);
        next
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.events.pop_front();
        release_if_drained(&mut self.events);
        next
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    // ---- helpers shared by the submodules ----

    /// The fingerprint of the store's digest (what anti-entropy probes carry: equal on two
    /// nodes exactly when they have seen the same versions), recomputed only when the store
    /// changed.
    pub fn fingerprint(&self) -> u64 {
        let (revision, hash) = self.sync.fingerprint.get();
        if revision == self.store.revision() {
            return hash;
        }
        let hash = self.store.digest().fingerprint();
        self.sync.fingerprint.set((self.store.revision(), hash));
        hash
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_wall_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// The format a message is written in: versions travel with their seals (format 3, or 4
    /// for versions with grounds); the runtime rewrites a message for a peer of an older
    /// protocol ([`wire::downgrade`]).
    fn format(message: &Message) -> Format {
        if message.versions().next().is_some() {
            Format::Sealed
        } else {
            Format::Plain
        }
    }

    fn send(&mut self, to: SocketAddr, message: &Message) {
        match wire::encode_as(
            message,
            Node::format(message),
            self.config.max_stream_message_bytes,
        ) {
            Ok(bytes) => self.send_bytes(to, Channel::Stream, bytes),
            Err(e) => tracing::warn!(%to, cause = %e, "message not sent"),
        }
    }

    /// Sends one message to several peers, encoding it once.
    fn send_to_all(&mut self, peers: &[SocketAddr], message: &Message) {
        match wire::encode_as(
            message,
            Node::format(message),
            self.config.max_stream_message_bytes,
        ) {
            Ok(bytes) => {
                for &to in peers {
                    self.send_bytes(to, Channel::Stream, bytes.clone());
                }
            }
            Err(e) => tracing::warn!(cause = %e, "message not sent"),
        }
    }

    fn send_bytes(&mut self, to: SocketAddr, channel: Channel, bytes: Bytes) {
        let len = bytes.len() as u64;
        match channel {
            Channel::Datagram => self.stats.datagram_bytes_sent += len,
            Channel::Stream => self.stats.stream_bytes_sent += len,
        }
        self.outbox.push_back(Transmit { to, channel, bytes });
    }

    fn malformed(&mut self, from: SocketAddr, what: &str) {
        self.stats.malformed += 1;
        tracing::debug!(%from, what, "dropped malformed message");
    }

    /// Records a winner change of `key` whose previous winner was `old`.
    fn emit_change(&mut self, key: &Key, old: Option<Version>) {
        let new = self.store.get(key).cloned();
        if old.as_ref().map(|v| v.dot) == new.as_ref().map(|v| v.dot) {
            return;
        }
        let origin = self
            .store
            .versions(key)
            .first()
            .map_or(self.id.writer, |v| v.dot.actor);
        self.events.push_back(Event::KeyChanged {
            key: key.clone(),
            old,
            new,
            origin,
        });
    }

    /// A duration drawn uniformly from `[base/2, base*3/2)`, to keep nodes out of step.
    fn jitter(&mut self, base: Duration) -> Duration {
        use rand::RngExt;
        let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(self.rng.random_range(ms / 2..ms + ms / 2))
    }

    /// A node that misses its own deadlines (overloaded, paused) cannot trust its own view of
    /// who is slow: like Lifeguard, it stretches its suspicion timeout while late.
    fn note_lateness(&mut self, late: Duration) {
        let late_now = late > self.config.swim.probe_rtt / 2;
        let health = if late_now {
            (self.membership.local_health + 1).min(8)
        } else {
            self.membership.local_health.saturating_sub(u32::from(
                self.membership.local_health > 0 && late.is_zero(),
            ))
        };
        if health != self.membership.local_health {
            self.membership.local_health = health;
            let mut swim = self.config.swim.clone();
            swim.suspect_to_down_after = self.suspect_to_down_after();
            if let Err(e) = self.membership.swim.set_config(swim) {
                tracing::warn!(cause = %e, "cannot scale the suspicion timeout");
            }
            tracing::debug!(health, "local health changed");
        }
    }

    /// The current suspicion timeout: the configured one, stretched while this node is late.
    pub fn suspect_to_down_after(&self) -> Duration {
        self.config.swim.suspect_to_down_after * (1 + self.membership.local_health)
    }
}

/// A queue that a burst (a restored member list, a big snapshot) grew keeps its capacity;
/// once drained, give most of it back. Every node of a large simulation holds such queues.
fn release_if_drained<T>(queue: &mut VecDeque<T>) {
    const KEEP: usize = 64;
    if queue.is_empty() && queue.capacity() > 16 * KEEP {
        queue.shrink_to(KEEP);
    }
}

#[cfg(test)]
mod tests;
