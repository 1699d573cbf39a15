//! The fast path: Plumtree-style eager push along a tree, lazy announcements, grafts.
//!
//! Each node keeps a small symmetric view of peers. A version new to a node is pushed at once
//! to its eager peers and announced (`IHave`) to its lazy ones, the announcements collected
//! for [`Config::lazy_interval`](super::Config::lazy_interval) and sent in one message per
//! peer (Plumtree's lazy queue), leaving out what the peer showed it holds meanwhile. A push
//! that brings nothing new prunes the sender to lazy; a version still missing
//! [`Config::graft_timeout`](super::Config::graft_timeout) after its announcer had it (the
//! announcement's arrival plus the graft timeout less the lazy interval) grafts the announcer
//! back to eager and asks it for the version. The eager links settle into a spanning tree.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Instant,
};

use rand::RngExt;

use super::{Dissemination, Node, Timer};
use crate::proto::{Dot, Version, WriterId, wire::Message};

/// How a peer in the dissemination view gets new versions from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    /// Pushed at once: an edge of the tree.
    Eager,
    /// Announced with `IHave`; grafted back to eager if the version does not arrive.
    Lazy,
}

/// The fast path's state.
#[derive(Debug, Default)]
pub(super) struct Spread {
    /// The dissemination view, a few members, each linked eagerly or lazily.
    pub(super) view: BTreeMap<SocketAddr, Link>,
    /// Versions announced by lazy peers and not yet received: who announced them, and the
    /// deadline after which to graft.
    pub(super) missing: BTreeMap<(WriterId, u64), (Vec<SocketAddr>, Instant)>,
    /// Rounds mode only: versions still to gossip, with the rounds left for each.
    pub(super) gossip_queue: Vec<(Version, u32)>,
    /// The lazy queue: dots to announce to each lazy peer, each with when it was queued,
    /// oldest first.
    pub(super) lazy_queue: BTreeMap<SocketAddr, Vec<(Dot, Instant)>>,
    /// When the lazy queue's next flush is due, if a flush timer is set.
    pub(super) flush_at: Option<Instant>,
}

/// A lazy peer's queue is sent at once when it holds this many dots: a burst of writes
/// keeps the queue, and one `IHave`, bounded.
pub(super) const MAX_LAZY_QUEUE: usize = 1_024;

impl Node {
    /// Sends new versions on: pushed to eager peers, announced to lazy ones (after
    /// [`Config::lazy_interval`](super::Config::lazy_interval)), never back to `from`.
    pub(super) fn disseminate(
        &mut self,
        now: Instant,
        versions: &[Version],
        from: Option<SocketAddr>,
    ) {
        if versions.is_empty() {
            return;
        }
        if let Dissemination::Rounds { retransmits, .. } = self.config.dissemination {
            self.spread
                .gossip_queue
                .extend(versions.iter().map(|v| (v.clone(), retransmits)));
            return;
        }
        let (mut eager, mut lazy) = (Vec::new(), Vec::new());
        for (&addr, &link) in &self.spread.view {
            match link {
                _ if Some(addr) == from => {}
                Link::Eager => eager.push(addr),
                Link::Lazy => lazy.push(addr),
            }
        }
        if !eager.is_empty() {
            let push = Message::Push {
                versions: versions.to_vec(),
            };
            self.send_to_all(&eager, &push);
        }
        if lazy.is_empty() {
            return;
        }
        if self.config.lazy_interval.is_zero() {
            let ihave = Message::IHave {
                dots: versions.iter().map(|v| v.dot).collect(),
            };
            return self.send_to_all(&lazy, &ihave);
        }
        if self.spread.flush_at.is_none() {
            let at = now + self.config.lazy_interval;
            self.spread.flush_at = Some(at);
            self.timers.set(at, Timer::LazyFlush);
        }
        for peer in lazy {
            let queue = self.spread.lazy_queue.entry(peer).or_default();
            queue.extend(versions.iter().map(|v| (v.dot, now)));
            if queue.len() >= MAX_LAZY_QUEUE {
                let dots = queue.drain(..).map(|(dot, _)| dot).collect();
                self.send(peer, &Message::IHave { dots });
            }
        }
    }

    /// Sends each lazy peer, in one `IHave`, what was queued for it at least a lazy
    /// interval ago; the rest waits for its turn.
    pub(super) fn flush_lazy_queue(&mut self, now: Instant) {
        self.spread.flush_at = None;
        let interval = self.config.lazy_interval;
        let mut next: Option<Instant> = None;
        let mut ihaves = Vec::new();
        self.spread.lazy_queue.retain(|&peer, queue| {
            let ripe = queue.partition_point(|&(_, at)| at + interval <= now);
            if ripe > 0 {
                ihaves.push((peer, queue.drain(..ripe).map(|(dot, _)| dot).collect()));
            }
            if let Some(&(_, at)) = queue.first() {
                next = Some(next.map_or(at + interval, |n| n.min(at + interval)));
            }
            !queue.is_empty()
        });
        for (peer, dots) in ihaves {
            if self.spread.view.contains_key(&peer) {
                self.send(peer, &Message::IHave { dots });
            }
        }
        if let Some(at) = next {
            self.spread.flush_at = Some(at);
            self.timers.set(at, Timer::LazyFlush);
        }
    }

    /// `from` showed it holds `dots` (it pushed or announced them): no need to announce them
    /// there. The set built is the queue's (at most [`MAX_LAZY_QUEUE`] dots), never sized by
    /// what the peer sent.
    fn unqueue(&mut self, from: SocketAddr, dots: impl Iterator<Item = Dot>) {
        let Some(queue) = self.spread.lazy_queue.get_mut(&from) else {
            return;
        };
        if queue.is_empty() {
            return;
        }
        let mut queued: BTreeSet<(WriterId, u64)> =
            queue.iter().map(|(d, _)| (d.actor, d.counter)).collect();
        let before = queued.len();
        for dot in dots {
            queued.remove(&(dot.actor, dot.counter));
        }
        if queued.len() < before {
            queue.retain(|(d, _)| queued.contains(&(d.actor, d.counter)));
        }
    }

    pub(super) fn on_push(&mut self, now: Instant, from: SocketAddr, versions: Vec<Version>) {
        self.stats.pushed_versions_received += versions.len() as u64;
        self.unqueue(from, versions.iter().map(|v| v.dot));
        let screened = self.screen(now, from, versions);
        let mut fresh = Vec::new();
        for version in screened.apply {
            if self.store.digest().contains(&version.dot) {
                self.stats.duplicate_versions += 1;
                continue;
            }
            let old = self.store.get(&version.key).cloned();
            let (key, dot) = (version.key.clone(), version.dot);
            match self.store.apply(version.clone()) {
                Ok(_) => {
                    self.spread.missing.remove(&(dot.actor, dot.counter));
                    self.emit_change(&key, old);
                    fresh.push(version);
                }
                Err(e) => {
                    tracing::debug!(%from, cause = %e, "pushed version refused");
                    self.stats.malformed += 1;
                }
            }
        }
        if !fresh.is_empty() {
            self.apply_masks();
            self.hurry_anti_entropy(now, false);
        }
        if matches!(self.config.dissemination, Dissemination::Rounds { .. }) {
            self.disseminate(now, &fresh, Some(from));
        } else if fresh.is_empty() {
            // Nothing new: the sender is a redundant eager link, unless pruning it would
            // leave fewer than `eager_min`.
            let eager = self
                .spread
                .view
                .values()
                .filter(|&&l| l == Link::Eager)
                .count();
            if eager > self.config.eager_min && self.spread.view.get(&from) == Some(&Link::Eager) {
                self.set_link(from, Link::Lazy);
                self.send(from, &Message::Prune);
            }
        } else {
            self.set_link(from, Link::Eager);
            self.disseminate(now, &fresh, Some(from));
        }
    }

    pub(super) fn on_ihave(&mut self, now: Instant, from: SocketAddr, dots: Vec<Dot>) {
        // The announcer held these versions a lazy interval before it announced them: the
        // graft timeout counts from then, as it did when announcements went at once. (A node
        // announcing at once, as before the lazy queue, is grafted from that much sooner.)
        let wait = self
            .config
            .graft_timeout
            .saturating_sub(self.config.lazy_interval);
        let deadline = now + wait;
        let mut waiting = false;
        self.unqueue(from, dots.iter().copied());
        for dot in dots {
            if self.store.digest().contains(&dot) {
                continue;
            }
            let (announcers, _) = self
                .spread
                .missing
                .entry((dot.actor, dot.counter))
                .or_insert_with(|| (Vec::new(), deadline));
            if !announcers.contains(&from) {
                announcers.push(from);
            }
            waiting = true;
        }
        if waiting {
            self.timers.set(deadline, Timer::Graft);
        }
    }

    /// Grafts every missing version whose deadline passed from its first announcer; the next
    /// announcer gets its turn one timeout later.
    pub(super) fn graft_due(&mut self, now: Instant) {
        let mut grafts: std::collections::BTreeMap<SocketAddr, Vec<Dot>> = Default::default();
        let mut retry = false;
        let timeout = self.config.graft_timeout;
        self.spread
            .missing
            .retain(|&(writer, seq), (announcers, deadline)| {
                if *deadline > now {
                    return true;
                }
                if announcers.is_empty() {
                    return false; // anti-entropy will bring it
                }
                let from = announcers.remove(0);
                grafts.entry(from).or_default().push(Dot::new(writer, seq));
                *deadline = now + timeout;
                retry = true;
                true
            });
        for (to, dots) in grafts {
            self.stats.grafts_sent += 1;
            self.set_link(to, Link::Eager);
            self.send(to, &Message::Graft { dots });
        }
        if retry {
            self.timers.set(now + timeout, Timer::Graft);
        }
    }

    pub(super) fn on_graft(&mut self, from: SocketAddr, dots: Vec<Dot>) {
        let versions: Vec<Version> = dots
            .iter()
            .filter_map(|d| self.store.version_by_dot(d).cloned())
            .collect();
        // A request for writers' endorsements only (from a node whose versions wait for them,
        // docs/PROTOCOL.md §7.4) is not a graft of the push tree: the link stays as it is.
        let endorsements_only = !dots.is_empty()
            && dots.iter().all(|d| d.counter == 1)
            && versions
                .iter()
                .all(|v| crate::proto::trust::is_endorsement(v.key.as_str(), v.dot));
        if !endorsements_only {
            self.set_link(from, Link::Eager);
        }
        if !versions.is_empty() {
            self.send(from, &Message::Push { versions });
        }
    }

    /// Rounds mode: sends every queued version to `fanout` random members.
    pub(super) fn gossip_round(&mut self, now: Instant) {
        let Dissemination::Rounds {
            interval, fanout, ..
        } = self.config.dissemination
        else {
            return;
        };
        self.timers.set(now + interval, Timer::GossipRound);
        if self.spread.gossip_queue.is_empty() {
            return;
        }
        let versions: Vec<Version> = self
            .spread
            .gossip_queue
            .iter()
            .map(|(v, _)| v.clone())
            .collect();
        self.spread.gossip_queue.retain_mut(|(_, left)| {
            *left -= 1;
            *left > 0
        });
        let mut targets = Vec::new();
        for _ in 0..fanout {
            if let Some(to) = self.random_peer(|a| !targets.contains(a)) {
                targets.push(to);
            }
        }
        self.send_to_all(&targets, &Message::Push { versions });
    }

    /// Sets the link to `peer`, adding it to the view. Links are accepted unconditionally,
    /// so views stay symmetric; their size stays near twice
    /// [`Config::view_size`](super::Config::view_size) because views are filled uniformly.
    pub(super) fn set_link(&mut self, peer: SocketAddr, link: Link) {
        if self.peers.contains(&peer) {
            self.spread.view.insert(peer, link);
        }
    }

    /// Tops the view up to [`Config::view_size`](super::Config::view_size) with random
    /// members, as eager links. Run only once the member set has been stable for a second:
    /// filling during a join storm would pick the earliest joiners for everyone. A node with
    /// no eager link at all takes one at once.
    pub(super) fn fill_view(&mut self, now: Instant) {
        let settled = now.saturating_duration_since(self.membership.changed_at)
            >= std::time::Duration::from_secs(1);
        let has_eager = self.spread.view.values().any(|&l| l == Link::Eager);
        let target = if settled {
            self.config.view_size
        } else if has_eager {
            0
        } else {
            1
        };
        if self.spread.view.len() >= target {
            return;
        }
        let mut candidates: Vec<SocketAddr> = self
            .peers
            .addrs()
            .filter(|a| !self.spread.view.contains_key(a))
            .copied()
            .collect();
        while self.spread.view.len() < target && !candidates.is_empty() {
            let addr = candidates.swap_remove(self.rng.random_range(0..candidates.len()));
            self.spread.view.insert(addr, Link::Eager);
            // An empty graft asks the peer to add us too: views stay symmetric, so no node
            // is left without anyone pushing to it.
            self.send(addr, &Message::Graft { dots: Vec::new() });
        }
    }

    /// A random member satisfying `pick`.
    pub(super) fn random_peer(&mut self, pick: impl Fn(&SocketAddr) -> bool) -> Option<SocketAddr> {
        let candidates: Vec<SocketAddr> = self.peers.addrs().filter(|a| pick(a)).copied().collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())])
    }
}
