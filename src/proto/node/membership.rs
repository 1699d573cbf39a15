//! The membership layer: foca (SWIM) behind a small adapter.
//!
//! foca is used for membership only: failure detection, join, leave, incarnations. Its
//! packets travel as [`Message::Membership`] datagrams.

use std::{
    collections::{BTreeMap, VecDeque},
    num::{NonZeroU32, NonZeroUsize},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use foca::{AccumulatingRuntime, BroadcastHandler, Config, Foca, Header, Invalidates, Member};
use rand::rngs::Xoshiro256PlusPlus;
use serde::{Serialize, de::DeserializeOwned};

use super::identity::NodeId;

/// The foca instance type confmesh runs.
pub(super) type Swim = Foca<NodeId, BincodeCodec, Xoshiro256PlusPlus, LeaveNotices>;

/// foca's output queue, drained after every call into foca.
pub(super) type SwimRuntime = AccumulatingRuntime<NodeId>;

/// Where a node is in its life as a member: one state, where there were two flags
/// (`active`, `left`) whose combinations meant these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Not a member: not joined yet, or every member it knew is gone (it re-announces to
    /// its seeds).
    Idle,
    /// A member of a cluster.
    Active,
    /// [`Node::leave`] was called: the leave notice spreads until the leave timer, while the
    /// node is still a member (`active`) or not (the cluster went away meanwhile).
    Leaving {
        /// Whether the membership layer still counts this node in a cluster.
        active: bool,
    },
    /// Left: no longer a member, and never again.
    Left,
}

impl Lifecycle {
    /// Whether the membership layer counts this node in a cluster.
    pub(super) fn is_active(self) -> bool {
        matches!(
            self,
            Lifecycle::Active | Lifecycle::Leaving { active: true }
        )
    }

    /// The state after the membership layer reports the node active (`true`) or not.
    fn with_active(self, active: bool) -> Lifecycle {
        match self {
            Lifecycle::Idle | Lifecycle::Active if active => Lifecycle::Active,
            Lifecycle::Idle | Lifecycle::Active => Lifecycle::Idle,
            Lifecycle::Leaving { .. } => Lifecycle::Leaving { active },
            Lifecycle::Left => Lifecycle::Left,
        }
    }
}

/// The membership layer's state: foca and what drains from it, the leave notices, the seeds,
/// and this node's standing.
pub(super) struct Membership {
    pub(super) swim: Swim,
    /// foca's output, drained after each of its calls ([`Node::after_swim`]).
    pub(super) out: SwimRuntime,
    /// Leave notices received by the membership layer, read after each of its packets.
    pub(super) leave_notices: LeaveNotices,
    pub(super) lifecycle: Lifecycle,
    /// Whether the member table was restored from a saved list: becoming active then needs
    /// no immediate member-list exchange (the member hash on probes finds differences).
    pub(super) table_restored: bool,
    /// True only inside [`Node::restore_members`]: members coming up were known before, so
    /// they are neither reported nor put first in line for anti-entropy.
    pub(super) restoring: bool,
    /// Where to announce while not a member.
    pub(super) seeds: Vec<SocketAddr>,
    /// How late this node has been for its own deadlines (0 = on time; at most 8): it
    /// stretches the suspicion timeout.
    pub(super) local_health: u32,
    /// When a member last came or went; views are filled once this is a second old.
    pub(super) changed_at: Instant,
    /// Members gone recently, how and when: listed as such ([`Node::departed`]) for
    /// [`DEPARTED_LISTED_FOR`], at most [`MAX_DEPARTED`] of them.
    pub(super) departed: BTreeMap<NodeId, (Departure, Instant)>,
    /// Members the input being handled declares down whose declaration is held (see
    /// [`Node::note_suspicions`]): read by [`Node::declared_down`], cleared after each input.
    pub(super) unsuspected: Vec<NodeId>,
    /// Members foca held alive when this node first heard them suspected by another, and
    /// when; kept for half the base suspicion timeout (see [`Node::note_suspicions`]).
    pub(super) suspected_at: BTreeMap<NodeId, Instant>,
    /// When each member was last heard from directly (a SWIM packet from its address).
    pub(super) last_heard: BTreeMap<SocketAddr, Instant>,
    /// Members another node declared down whose declaration is held (never suspected here,
    /// suspected only lately, or heard from lately): kept listed until they come back under a
    /// new generation or [`Node::renewal_grace`] passes (see [`Node::declared_down`]).
    pub(super) held_downs: BTreeMap<NodeId, Instant>,
    /// foca's periodic gossip timer, held while foca has nothing to gossip (it would only set
    /// itself again), with the deadline it fired at: an idle node does not wake ten times a
    /// second for nothing. Handed back for the first tick of its period after foca has an
    /// update or a broadcast to send ([`Node::after_swim`]), so gossip goes out when it would
    /// have without the hold.
    pub(super) held_gossip: Option<(foca::Timer<NodeId>, Instant)>,
    /// This node's incarnation as of the last SWIM packet it sent (foca keeps its own
    /// private): the header of a suspicion notice ([`Node::tell_suspect`]).
    pub(super) incarnation: foca::Incarnation,
}

/// How long a member that left or went down is listed as such ([`Node::departed`]).
pub const DEPARTED_LISTED_FOR: Duration = Duration::from_secs(300);
/// The most departed members listed; past it the oldest departure is forgotten.
const MAX_DEPARTED: usize = 1_024;

/// How a member went ([`Node::departed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// Declared down: failed or unreachable.
    Down,
    /// Left gracefully.
    Left,
}

impl Membership {
    pub(super) fn new(swim: Swim, leave_notices: LeaveNotices, now: Instant) -> Membership {
        Membership {
            swim,
            out: SwimRuntime::new(),
            leave_notices,
            lifecycle: Lifecycle::Idle,
            table_restored: false,
            restoring: false,
            departed: BTreeMap::new(),
            unsuspected: Vec::new(),
            suspected_at: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            held_downs: BTreeMap::new(),
            held_gossip: None,
            incarnation: 0,
            seeds: Vec::new(),
            local_health: 0,
            changed_at: now,
        }
    }

    pub(super) fn set_active(&mut self, active: bool) {
        self.lifecycle = self.lifecycle.with_active(active);
    }
}

/// The largest foca packet; with its envelope it fits [`MAX_DATAGRAM_BYTES`](crate::proto::wire::MAX_DATAGRAM_BYTES).
pub(super) const MAX_SWIM_PACKET_BYTES: usize = 1_120;

const SWIM_PACKET: NonZeroUsize = match NonZeroUsize::new(MAX_SWIM_PACKET_BYTES) {
    Some(n) => n,
    None => panic!("packet size is not zero"),
};
const GOSSIP_FANOUT: NonZeroUsize = match NonZeroUsize::new(3) {
    Some(n) => n,
    None => panic!("fanout is not zero"),
};

const DOWN_FANOUT: NonZeroUsize = match NonZeroUsize::new(2) {
    Some(n) => n,
    None => panic!("fanout is not zero"),
};

/// foca configuration for a LAN of about `expected_members` nodes, tuned for detection within
/// a few seconds: foca's LAN preset with a shorter probe round trip and suspicion timeout,
/// and faster update gossip.
/// The fewest times a membership update is piggybacked, whatever the cluster's size.
const MIN_TRANSMISSIONS: std::num::NonZeroU8 = match std::num::NonZeroU8::new(6) {
    Some(n) => n,
    None => panic!("transmissions are not zero"),
};

/// The shortest [`Node::renewal_grace`]: a member cut off by a one-way split came back 2.1 s
/// after the heal in the simulator's smoke seed 42, so the grace does not shrink with a
/// suspicion timeout tuned shorter than that.
const MIN_RENEWAL_GRACE: Duration = Duration::from_millis(2_500);

pub(super) fn lan_config(expected_members: usize) -> Config {
    let n = u32::try_from(expected_members).unwrap_or(u32::MAX);
    let mut config = Config::new_lan(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
    // A dead member waits for its first probe about one probe period on average whatever the
    // cluster's size (N-1 members each probe it once per N periods), but the tail is long:
    // 4.6 periods at p99. At 1 s, that wait alone was past a 5 s detection at N=1000; at
    // 500 ms with a 1.5 s suspicion, detection p99 is under 5 s there with no false positive
    // at 1% loss (BENCHMARKS.md, "Failure detection at N=1000: the curve").
    config.probe_period = Duration::from_millis(500);
    config.probe_rtt = Duration::from_millis(150);
    config.suspect_to_down_after = Duration::from_millis(1_500);
    config.max_packet_size = SWIM_PACKET;
    // foca piggybacks each update 4·log10(N+1) times: twice in a cluster of 4, which can
    // miss the very member a suspicion is about (it then cannot refute, and is declared down
    // though alive). At least 6 copies reach every member of a small cluster.
    config.max_transmissions = config.max_transmissions.max(MIN_TRANSMISSIONS);
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: GOSSIP_FANOUT,
    });
    // A partition longer than the suspicion timeout leaves each side believing the other
    // down; re-announcing to down members is what heals it (the LAN preset's 65 s would
    // dominate heal time). Every 500 ms: detection twice as fast declares more of a split
    // down before it heals, and at 1 s heal took 0.5 s longer (BENCHMARKS.md, "Failure
    // detection at N=1000: the curve"). It sends nothing while no member is down (its timer
    // still fires: a wake-up that does nothing, twice a second).
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(500),
        num_members: DOWN_FANOUT,
    });
    config
}

/// SWIM parameters for members spread over a WAN: foca's WAN preset (5 s probes, 60 s
/// suspicion scaled by cluster size) with the LAN preset's packet size, gossip and re-announce.
pub(super) fn wan_config(expected_members: usize) -> Config {
    let n = u32::try_from(expected_members).unwrap_or(u32::MAX);
    let lan = lan_config(expected_members);
    let mut config = Config::new_wan(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
    config.max_packet_size = lan.max_packet_size;
    config.max_transmissions = config.max_transmissions.max(MIN_TRANSMISSIONS);
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: GOSSIP_FANOUT,
    });
    config.periodic_announce_to_down_members = lan.periodic_announce_to_down_members;
    config
}

/// foca's wire codec: bincode 2 with a byte limit, as every decode of peer bytes has.
#[derive(Debug, Default)]
pub(super) struct BincodeCodec {
    scratch: Vec<u8>,
}

/// Why foca could not encode or decode a header or member.
#[derive(Debug, thiserror::Error)]
pub(super) enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("no room in the packet")]
    NoSpace,
}

const SWIM_LIMIT: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 8 * MAX_SWIM_PACKET_BYTES }>,
> = bincode::config::standard().with_limit::<{ 8 * MAX_SWIM_PACKET_BYTES }>();

impl BincodeCodec {
    /// Encodes into scratch first: foca requires a failed encode to leave `buf` untouched.
    fn put<V: Serialize>(&mut self, value: &V, mut buf: impl BufMut) -> Result<(), CodecError> {
        self.scratch.clear();
        bincode::serde::encode_into_std_write(value, &mut self.scratch, SWIM_LIMIT)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        if buf.remaining_mut() < self.scratch.len() {
            return Err(CodecError::NoSpace);
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }

    /// foca hands over a contiguous buffer, so `chunk()` is all of it.
    fn take<V: DeserializeOwned>(mut buf: impl Buf) -> Result<V, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(buf.chunk(), SWIM_LIMIT)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        buf.advance(used);
        Ok(value)
    }
}

impl foca::Codec<NodeId> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, CodecError> {
        Self::take(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, CodecError> {
        Self::take(buf)
    }
}

/// A SWIM packet's header and the member updates it carries, as foca lays them out (`None` if
/// any part does not decode: foca refuses such a packet too).
fn take_packet(packet: &[u8]) -> Option<(Header<NodeId>, Vec<Member<NodeId>>)> {
    let mut buf = packet;
    let header: Header<NodeId> = BincodeCodec::take(&mut buf).ok()?;
    let mut updates = Vec::new();
    if buf.remaining() >= 2 && header.message != foca::Message::Broadcast {
        for _ in 0..buf.get_u16() {
            updates.push(BincodeCodec::take(&mut buf).ok()?);
        }
    }
    Some((header, updates))
}

/// Decodes a SWIM packet's header and the member updates it carries, for diagnostics.
pub(super) fn describe_packet(packet: &[u8]) -> Option<super::MembershipPacket> {
    let (header, members) = take_packet(packet)?;
    let updates = members
        .iter()
        .map(|member| super::MemberView {
            id: *member.id(),
            state: super::MemberState::from(member.state()),
            incarnation: member.incarnation(),
        })
        .collect();
    Some(super::MembershipPacket {
        kind: format!("{:?}", header.message),
        src: header.src,
        src_incarnation: header.src_incarnation,
        dst: header.dst,
        updates,
    })
}

/// What a SWIM packet's updates say of members other than alive (nothing if it does not
/// decode).
pub(super) fn suspicion_updates(packet: &[u8]) -> Suspicions {
    let mut found = Suspicions::default();
    for member in take_packet(packet)
        .map(|(_, members)| members)
        .unwrap_or_default()
    {
        found.add(&member);
    }
    found
}

/// The members an input to foca declares down or suspects (see [`Node::declared_down`]).
#[derive(Debug, Default)]
pub(super) struct Suspicions {
    pub(super) down: Vec<NodeId>,
    pub(super) suspect: Vec<NodeId>,
}

impl Suspicions {
    pub(super) fn add(&mut self, member: &Member<NodeId>) {
        match member.state() {
            foca::State::Down => self.down.push(*member.id()),
            foca::State::Suspect => self.suspect.push(*member.id()),
            foca::State::Alive => {}
        }
    }
}

/// foca's custom broadcasts, used for one thing: "I am leaving", so members can tell a
/// graceful leave from a failure. A leaving node adds its notice before foca gossips its
/// `Down` update, so both travel in the same packets; the node reads the notices after each
/// packet, before foca's notifications.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaveNotices {
    /// Notices not yet read by the node.
    unread: Arc<Mutex<Vec<NodeId>>>,
    /// Notices seen recently, so a repeated one is not disseminated again.
    seen: VecDeque<NodeId>,
}

/// How many leave notices [`LeaveNotices`] remembers.
const LEAVE_NOTICES_REMEMBERED: usize = 256;

/// The dissemination key of a leave notice: the leaving identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LeaveKey(NodeId);

impl Invalidates for LeaveKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

impl LeaveNotices {
    /// A handle to the notices that shares the unread list with foca's copy.
    pub(super) fn handle(&self) -> LeaveNotices {
        LeaveNotices {
            unread: Arc::clone(&self.unread),
            seen: VecDeque::new(),
        }
    }

    /// Takes the notices received since the last call.
    pub(super) fn take_unread(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.unread.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The encoded notice for `id`.
    pub(super) fn encode(id: &NodeId) -> Vec<u8> {
        bincode::serde::encode_to_vec(id, bincode::config::standard()).unwrap_or_default()
    }
}

impl BroadcastHandler<NodeId> for LeaveNotices {
    type Key = LeaveKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<LeaveKey>, CodecError> {
        let (id, _) = crate::proto::wire::decode_limited::<NodeId>(data)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        // A notice heard before is not spread again; this node's own (no sender) is queued
        // each time it adds it, to ride on the packets that announce it down.
        if sender.is_some() && self.seen.contains(&id) {
            return Ok(None);
        }
        if self.seen.contains(&id) {
            return Ok(Some(LeaveKey(id)));
        }
        if self.seen.len() >= LEAVE_NOTICES_REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back(id);
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        Ok(Some(LeaveKey(id)))
    }
}

/// Encodes a member list for push-pull (bincode, no limit needed on encode).
pub(super) fn encode_members(members: &[Member<NodeId>]) -> Vec<u8> {
    bincode::serde::encode_to_vec(members, bincode::config::standard()).unwrap_or_default()
}

/// Decodes a member list from a peer, with a limit proportional to its length.
pub(super) fn decode_members(bytes: &[u8]) -> Option<Vec<Member<NodeId>>> {
    crate::proto::wire::decode_limited::<Vec<Member<NodeId>>>(bytes)
        .ok()
        .filter(|(_, used)| *used == bytes.len())
        .map(|(m, _)| m)
}

use std::{net::SocketAddr, time::Instant};

use foca::OwnedNotification;

use super::{Channel, Event, Node, Timer};
use crate::proto::wire::{self, Message};

impl Node {
    /// Announces to every seed (foca accepts an announce by address alone).
    pub(super) fn announce(&mut self) {
        for seed in self.membership.seeds.clone() {
            if let Err(e) = self
                .membership
                .swim
                .announce(NodeId::seed(seed), &mut self.membership.out)
            {
                tracing::debug!(%seed, cause = %e, "announce failed");
            }
        }
    }

    /// Whether foca has anything for its periodic gossip to send: an update or a broadcast.
    pub(super) fn has_gossip(&self) -> bool {
        self.membership.swim.updates_backlog() > 0
            || self.membership.swim.custom_broadcast_backlog() > 0
    }

    /// Whether `timer` is foca's periodic gossip timer firing with nothing to gossip: the
    /// node holds it instead of handing it to foca ([`Membership::held_gossip`]), and
    /// [`Node::after_swim`] hands it back once there is something.
    pub(super) fn is_idle_gossip(&self, timer: &foca::Timer<NodeId>) -> bool {
        matches!(timer, foca::Timer::PeriodicGossip(_)) && !self.has_gossip()
    }

    /// The first tick at or after `now` of the gossip period that had a tick at `held_at`.
    fn next_gossip_tick(&self, held_at: Instant, now: Instant) -> Instant {
        let period = self
            .config
            .swim
            .periodic_gossip
            .as_ref()
            .map_or(Duration::ZERO, |p| p.frequency);
        let since = now.saturating_duration_since(held_at);
        if period.is_zero() || since.is_zero() {
            return now.max(held_at);
        }
        let ticks = since.as_nanos().div_ceil(period.as_nanos());
        let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        held_at + period.saturating_mul(ticks)
    }

    /// Drains foca's output: packets become datagrams, timers join the queue, notifications
    /// update the member table.
    pub(super) fn after_swim(&mut self, now: Instant) {
        while let Some((to, packet)) = self.membership.out.to_send() {
            // An older identity of this node (see `member_up`) is never probed alive by
            // this node answering itself: it goes unanswered, and foca declares it down.
            if to.addr == self.id.addr {
                continue;
            }
            self.send_swim(to, packet);
        }
        while let Some((after, timer)) = self.membership.out.to_schedule() {
            self.timers.set(now + after, Timer::Swim(timer));
        }
        if self.membership.held_gossip.is_some()
            && self.has_gossip()
            && let Some((timer, held_at)) = self.membership.held_gossip.take()
        {
            self.timers
                .set(self.next_gossip_tick(held_at, now), Timer::Swim(timer));
        }
        for id in self.membership.leave_notices.take_unread() {
            if self.peers.remove(&id) {
                self.forget_member(now, id);
                self.note_departure(now, id, Departure::Left);
                self.events.push_back(Event::MemberLeft(id));
            }
        }
        let mut failed_probes = Vec::new();
        while let Some(notification) = self.membership.out.to_notify() {
            match notification {
                OwnedNotification::DataSent(header) => {
                    self.membership.incarnation = header.src_incarnation;
                }
                OwnedNotification::ProbeFailed(_, id) => failed_probes.push(id),
                OwnedNotification::MemberUp(id) => {
                    self.release_held(id);
                    self.member_up(now, id);
                    self.hurry_anti_entropy(now, true);
                }
                OwnedNotification::MemberDown(id) if self.declared_down(now, id) => {}
                OwnedNotification::MemberDown(id) => {
                    self.member_down(now, id);
                    self.hurry_anti_entropy(now, false);
                }
                // A held member whose newer identity is news only as down (it rejoined and
                // left, or failed, before this node saw it alive): foca reports the rename
                // and nothing else, for neither identity is alive; its hold ends as a down.
                OwnedNotification::Rename(old, new)
                    if self.membership.held_downs.contains_key(&old) && !self.swim_alive(&new) =>
                {
                    self.membership.held_downs.remove(&old);
                    self.member_down(now, old);
                    self.hurry_anti_entropy(now, false);
                }
                // A member rejoined under a new generation at the same address (it restarted,
                // or was declared down elsewhere and renewed itself): the table replaces the
                // old identity. Not a failure, so no MemberDown.
                OwnedNotification::Rename(_old, new) => {
                    self.release_held(new);
                    self.member_up(now, new);
                    self.hurry_anti_entropy(now, true);
                }
                OwnedNotification::Active if !self.membership.lifecycle.is_active() => {
                    self.membership.set_active(true);
                    tracing::debug!(node = %self.id, "active");
                    // Push-pull at once: a Feed reply to an announce holds one packet of
                    // members, far from all of a big cluster. Later differences are found
                    // by the member hash on anti-entropy probes. A restored member table
                    // needs no such exchange.
                    if !self.membership.table_restored {
                        self.timers.set(now, Timer::PushPull);
                    }
                    // And catch up on data at once rather than at the first periodic round.
                    self.schedule_anti_entropy(now);
                }
                OwnedNotification::Active => {}
                OwnedNotification::Idle => {
                    self.membership.set_active(false);
                    // Alone: every member is down here (a partition cut this node off, or
                    // it was declared down everywhere). Announce to the seeds again until one
                    // answers, as at the first join; else a small cluster whose members all
                    // lost each other stays apart for good. Found by the simulator's swarm
                    // (seed 8354: three nodes, a one-way partition, none rejoined).
                    if self.membership.lifecycle == Lifecycle::Idle
                        && !self.membership.seeds.is_empty()
                        && !self.timers.contains(&Timer::Announce)
                    {
                        self.timers
                            .set(now + self.config.announce_interval, Timer::Announce);
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    self.peers.rename_self(&self.id, &id);
                    self.id = id;
                    self.events.push_back(Event::Rejoined(id));
                }
                OwnedNotification::Defunct => {
                    self.membership.set_active(false);
                    if !matches!(
                        self.membership.lifecycle,
                        Lifecycle::Leaving { .. } | Lifecycle::Left
                    ) {
                        tracing::warn!(node = %self.id, "declared down and cannot rejoin");
                    }
                }
                #[allow(unreachable_patterns, reason = "variants behind foca features")]
                _ => {}
            }
        }
        for id in failed_probes {
            self.tell_suspect(id);
        }
    }

    /// This node's probe of `id` failed and foca now suspects it: tell `id` at once, in a
    /// SWIM packet of one update, as Lifeguard's "buddy system" does. Otherwise the suspect
    /// learns of the suspicion only when gossip happens to pick it (about a second in a
    /// cluster of a thousand), and a live member that a lossy link made fail one probe has
    /// less of the 1.5 s suspicion left to refute it in. Nothing is sent if foca does not hold
    /// `id` suspected (it answered meanwhile, or was already down).
    fn tell_suspect(&mut self, id: NodeId) {
        if id.addr == self.id.addr {
            return;
        }
        let Some(incarnation) = self
            .membership_view(id.addr)
            .filter(|m| m.id == id && m.state == super::MemberState::Suspect)
            .map(|m| m.incarnation)
        else {
            return;
        };
        let header = Header {
            src: *self.membership.swim.identity(),
            src_incarnation: self.membership.incarnation,
            dst: id,
            message: foca::Message::Gossip,
        };
        let mut packet = Vec::with_capacity(128);
        let mut codec = BincodeCodec::default();
        let encoded = foca::Codec::encode_header(&mut codec, &header, &mut packet).and_then(|()| {
            packet.put_u16(1);
            foca::Codec::encode_member(
                &mut codec,
                &Member::new(id, incarnation, foca::State::Suspect),
                &mut packet,
            )
        });
        if let Err(e) = encoded {
            tracing::warn!(to = %id, cause = %e, "cannot encode a suspicion notice");
            return;
        }
        self.send_swim(id, Bytes::from(packet));
    }

    /// Sends a SWIM packet as a datagram.
    fn send_swim(&mut self, to: NodeId, packet: Bytes) {
        match wire::encode(&Message::Membership(packet), wire::MAX_DATAGRAM_BYTES) {
            Ok(bytes) => self.send_bytes(to.addr, Channel::Datagram, bytes),
            Err(e) => tracing::warn!(to = %to, cause = %e, "membership packet too large"),
        }
    }

    /// Whether `timer` is the end of a suspicion that the member refuted meanwhile: foca
    /// holds the same identity and would not declare it down (it is neither down already
    /// nor still suspected at the incarnation the timer names).
    ///
    /// foca 2.0 then declares nothing but still sends the member its "you are down" notice
    /// (`TurnUndead`): in its `ChangeSuspectToDown` handler the notice follows any lookup of
    /// the member, not only a change to down. The member believes the cluster declared it
    /// down and rejoins under a new generation, so every refuted suspicion would end as a
    /// false "down". Such a timer is not handed to foca; nothing else in it has an effect.
    pub(super) fn is_refuted_suspicion(&self, timer: &foca::Timer<NodeId>) -> bool {
        let foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        self.membership.swim.iter_membership_state().any(|m| {
            m.id() == member_id
                && match m.state() {
                    foca::State::Down => false,
                    foca::State::Suspect => m.incarnation() != *incarnation,
                    foca::State::Alive => true,
                }
        })
    }

    /// Records a member that joined or came back: reported, and first in line for
    /// anti-entropy, unless it is being restored from a saved list.
    pub(super) fn member_up(&mut self, now: Instant, id: NodeId) {
        // An older identity of this node itself (after it rejoined under a new generation,
        // a peer that had not yet heard of the new one gossiped the old one as alive): not a
        // member. Found by the simulator's swarm (seed 950), where such a ghost stayed listed
        // for good, answered by the node's own replies to the probes sent to it.
        if id.addr == self.id.addr {
            tracing::debug!(node = %self.id, ghost = %id, "an older identity of this node is not a member");
            return;
        }
        let fresh = !self.membership.restoring;
        if self.peers.insert(id, fresh) == super::peers::Inserted::Known {
            return;
        }
        // Back, or restarted at the same address: no longer listed as gone.
        self.membership
            .departed
            .retain(|gone, _| gone.addr != id.addr);
        if fresh {
            self.events.push_back(Event::MemberUp(id));
        }
        self.membership.changed_at = now;
        self.fill_view(now);
    }

    /// Before foca reads an input from another node: notes the members it declares down that
    /// this node never saw suspected, or saw suspected only lately (less than half the base
    /// suspicion timeout ago, so the suspicion was raised elsewhere long before it arrived
    /// here), or heard from directly less than the base suspicion timeout ago (which a member
    /// that failed cannot have done: the node that declared it waited that long after its
    /// failed probe); and when members foca holds alive were first heard suspected (see
    /// [`Node::declared_down`]).
    pub(super) fn note_suspicions(&mut self, now: Instant, mut heard: Suspicions) {
        self.membership.unsuspected.clear();
        if heard.down.is_empty() && heard.suspect.is_empty() {
            return;
        }
        let me = self.id.addr;
        heard.down.retain(|id| id.addr != me);
        heard.down.sort_unstable();
        heard.suspect.sort_unstable();
        let lately = self.config.swim.suspect_to_down_after / 2;
        let heard_within = self.config.swim.suspect_to_down_after;
        let suspected_at = &mut self.membership.suspected_at;
        suspected_at.retain(|_, at| now.saturating_duration_since(*at) < lately);
        for member in self.membership.swim.iter_membership_state() {
            let id = member.id();
            let declared = heard.down.binary_search(id).is_ok();
            match member.state() {
                foca::State::Alive if declared => self.membership.unsuspected.push(*id),
                foca::State::Alive
                    if heard.suspect.binary_search(id).is_ok()
                        && suspected_at.len() < MAX_DEPARTED =>
                {
                    suspected_at.entry(*id).or_insert(now);
                }
                foca::State::Suspect
                    if declared
                        && (suspected_at.contains_key(id)
                            || self.membership.last_heard.get(&id.addr).is_some_and(|at| {
                                now.saturating_duration_since(*at) < heard_within
                            })) =>
                {
                    self.membership.unsuspected.push(*id);
                }
                _ => {}
            }
        }
    }

    /// Records a SWIM packet from `from`: first-hand evidence that the member at that address
    /// was alive (only members are recorded, so the table stays bounded by the member list).
    pub(super) fn heard_from(&mut self, now: Instant, from: SocketAddr) {
        if self.peers.contains(&from) {
            self.membership.last_heard.insert(from, now);
        }
    }

    /// How long a member whose declaration is held stays listed while it learns of the
    /// declaration and comes back under a new generation: the base suspicion timeout, and at
    /// least [`MIN_RENEWAL_GRACE`]. A probe period was enough after two-way splits but not
    /// after one-way ones (a member came back 2.1 s after the heal in the simulator's smoke
    /// seed 42); the cost is that a node which missed a failed member's suspicion reports it
    /// this much later (BENCHMARKS.md, "No flapping at a heal").
    pub(super) fn renewal_grace(&self) -> Duration {
        self.config
            .swim
            .suspect_to_down_after
            .max(MIN_RENEWAL_GRACE)
    }

    /// foca declared `id` down. Returns true if the declaration is held rather than reported:
    /// the input that carried it was noted as giving this node reason to believe the member
    /// alive ([`Node::note_suspicions`]). Such a member was cut off from others, not from this
    /// node's part of the mesh, as on both sides of a partition that just healed: it learns it
    /// was declared down and rejoins under a new generation, which replaces it here as a
    /// rename (no false down, no member missing from the list meanwhile). If it has not come
    /// back when [`Node::renewal_grace`] ends, it is reported down then.
    fn declared_down(&mut self, now: Instant, id: NodeId) -> bool {
        let unsuspected = self.membership.unsuspected.contains(&id);
        if !unsuspected
            || !self.peers.contains_id(&id)
            || self.membership.held_downs.len() >= MAX_DEPARTED
        {
            return false;
        }
        let until = now + self.renewal_grace();
        self.membership.held_downs.insert(id, until);
        self.stats.downs_held += 1;
        tracing::debug!(node = %self.id, member = %id, "declared down elsewhere while believed alive here: held for its renewal");
        if !self.timers.contains(&Timer::HeldDowns) {
            self.timers.set(until, Timer::HeldDowns);
        }
        true
    }

    /// Whether foca holds `id` alive or suspected (a linear scan: for renames, which are rare).
    fn swim_alive(&self, id: &NodeId) -> bool {
        self.membership
            .swim
            .iter_membership_state()
            .any(|m| m.id() == id && m.state() != foca::State::Down)
    }

    /// A member came up as `id`: a down held for an older generation at its address is over.
    fn release_held(&mut self, id: NodeId) {
        self.membership
            .held_downs
            .retain(|held, _| held.addr != id.addr || held.generation >= id.generation);
    }

    /// Reports down the held members whose grace ended without their coming back.
    pub(super) fn held_downs_due(&mut self, now: Instant) {
        let due: Vec<NodeId> = self
            .membership
            .held_downs
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.membership.held_downs.remove(&id);
            self.member_down(now, id);
            self.hurry_anti_entropy(now, false);
        }
        if let Some(next) = self.membership.held_downs.values().min() {
            self.timers.set(*next, Timer::HeldDowns);
        }
    }

    fn member_down(&mut self, now: Instant, id: NodeId) {
        if self.peers.remove(&id) {
            self.forget_member(now, id);
            self.note_departure(now, id, Departure::Down);
            self.events.push_back(Event::MemberDown(id));
        }
    }

    /// Lists `id` as gone, `how`, from `now`; forgets departures listed long enough, and the
    /// oldest past [`MAX_DEPARTED`].
    fn note_departure(&mut self, now: Instant, id: NodeId, how: Departure) {
        let departed = &mut self.membership.departed;
        departed.retain(|_, (_, at)| now.saturating_duration_since(*at) < DEPARTED_LISTED_FOR);
        while departed.len() >= MAX_DEPARTED {
            let oldest = departed
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| *id);
            match oldest {
                Some(oldest) => departed.remove(&oldest),
                None => break,
            };
        }
        departed.insert(id, (how, now));
    }

    /// The members that left or went down less than [`DEPARTED_LISTED_FOR`] before `now`
    /// and have not come back (nor restarted at the same address), with how they went.
    pub fn departed(&self, now: Instant) -> impl Iterator<Item = (NodeId, Departure)> + '_ {
        self.membership
            .departed
            .iter()
            .filter(move |(_, (_, at))| now.saturating_duration_since(*at) < DEPARTED_LISTED_FOR)
            .map(|(id, (how, _))| (*id, *how))
    }

    /// Drops what dissemination knew of a member that is gone.
    fn forget_member(&mut self, now: Instant, id: NodeId) {
        self.membership.changed_at = now;
        self.membership.last_heard.remove(&id.addr);
        self.spread.view.remove(&id.addr);
        self.spread.lazy_queue.remove(&id.addr);
        self.spread
            .missing
            .values_mut()
            .for_each(|(announcers, _)| announcers.retain(|a| *a != id.addr));
    }

    /// Sends our member list to a random member, which answers with its own.
    pub(super) fn push_pull(&mut self) {
        if let Some(to) = self.random_peer(|_| true) {
            self.send_members(to, false);
        }
    }

    pub(super) fn send_members(&mut self, to: SocketAddr, reply: bool) {
        let members: Vec<_> = self
            .membership
            .swim
            .iter_membership_state()
            .cloned()
            .collect();
        let members = encode_members(&members).into();
        self.send(to, &Message::MembershipState { members, reply });
    }

    pub(super) fn on_membership_state(
        &mut self,
        now: Instant,
        from: SocketAddr,
        members: &[u8],
        reply: bool,
    ) {
        let Some(members) = decode_members(members) else {
            return self.malformed(from, "member list");
        };
        // foca finds each member by a linear scan, so hand it only what is news: members we
        // do not list as alive, and states about members we do (a suspicion, a death).
        // Lists that agree then cost a lookup per member instead of a scan.
        let peers = &self.peers;
        let me = self.id.addr;
        let news: Vec<_> = members
            .into_iter()
            .filter(|m| {
                let known = peers.contains_id(m.id());
                let agreed_alive = known && m.state() == foca::State::Alive;
                let agreed_gone = !known && m.state() == foca::State::Down && m.id().addr != me;
                !agreed_alive && !agreed_gone
            })
            .collect();
        let mut heard = Suspicions::default();
        for member in &news {
            heard.add(member);
        }
        self.note_suspicions(now, heard);
        if let Err(e) =
            self.membership
                .swim
                .apply_many(news.into_iter(), false, &mut self.membership.out)
        {
            tracing::debug!(%from, cause = %e, "member list refused");
        }
        self.after_swim(now);
        self.membership.unsuspected.clear();
        if !reply {
            self.send_members(from, true);
        }
    }
}
