//! Peers banned for sending forged versions (docs/PROTOCOL.md §7.4): the node task decides,
//! the connection readers drop what a banned peer sends before reading or checking it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// A peer that sent this many forged versions since its last ban is banned: honest peers
/// send none, since they pass on only what they applied.
const FORGED_BEFORE_BAN: u64 = 8;
/// How long a ban lasts: every message from the peer's address is dropped meanwhile.
pub(crate) const BAN: Duration = Duration::from_secs(60);
/// The most peers banned at once; past it the ban ending soonest is lifted.
const MAX_BANS: usize = 1_024;

/// Peers banned, shared by the node task and the connection readers.
#[derive(Debug, Default)]
pub(crate) struct Bans {
    /// Per peer: until when it is banned, and its forged count when it was.
    peers: Mutex<HashMap<SocketAddr, (Instant, u64)>>,
}

impl Bans {
    /// Whether `peer`'s messages are dropped at `now`.
    pub(crate) fn banned(&self, peer: SocketAddr, now: Instant) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .is_some_and(|&(until, _)| now < until)
    }

    /// Bans `peer` if it sent [`FORGED_BEFORE_BAN`] forged versions since its last ban
    /// (`forged` counts them since the node started); returns whether it did now.
    pub(crate) fn judge(&self, peer: SocketAddr, forged: u64, now: Instant) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let since = peers.get(&peer).map_or(0, |&(_, at)| at);
        if forged < since + FORGED_BEFORE_BAN {
            return false;
        }
        if peers.len() >= MAX_BANS {
            peers.retain(|_, (until, _)| *until > now);
            if peers.len() >= MAX_BANS
                && let Some(soonest) = peers
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(p, _)| *p)
            {
                peers.remove(&soonest);
            }
        }
        peers.insert(peer, (now + BAN, forged));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_banned_after_enough_forgeries_and_again_only_after_as_many_more() {
        #[allow(
            clippy::disallowed_methods,
            reason = "a fixed start; no clock is read after"
        )]
        let t0 = Instant::now();
        let bans = Bans::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("an address");
        assert!(!bans.judge(peer, FORGED_BEFORE_BAN - 1, t0));
        assert!(!bans.banned(peer, t0));
        assert!(bans.judge(peer, FORGED_BEFORE_BAN, t0));
        assert!(bans.banned(peer, t0 + BAN / 2));
        assert!(!bans.banned(peer, t0 + BAN));
        // The count is cumulative: the next ban needs as many new forgeries.
        assert!(!bans.judge(peer, 2 * FORGED_BEFORE_BAN - 1, t0 + BAN));
        assert!(bans.judge(peer, 2 * FORGED_BEFORE_BAN, t0 + BAN));
    }
}
