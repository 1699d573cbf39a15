//! Hybrid logical clock timestamps (Kulkarni et al., "Logical Physical Clocks", 2014).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bits of a [`HlcTimestamp`] that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A hybrid-logical-clock timestamp: milliseconds since the Unix epoch in the high 48 bits, a
/// logical counter in the low 16 bits.
///
/// Timestamps order like numbers. The logical part breaks ties between events in the same
/// millisecond; when it overflows it carries into the millisecond part, which keeps the order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HlcTimestamp(pub u64);

impl HlcTimestamp {
    /// The timestamp at the start of millisecond `wall_ms`, logical counter zero.
    pub fn from_wall_ms(wall_ms: u64) -> HlcTimestamp {
        HlcTimestamp(wall_ms.saturating_mul(1 << LOGICAL_BITS))
    }

    /// The wall-clock part, in milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & ((1 << LOGICAL_BITS) - 1)) as u16
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// A hybrid logical clock. It never reads a clock itself: wall time comes in as an argument.
///
/// [`Hlc::tick`] gives a timestamp greater than every timestamp this clock issued or observed,
/// and no smaller than the wall time passed in. So a write that causally follows another has a
/// greater timestamp even if the writers' wall clocks disagree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    last: HlcTimestamp,
}

impl Hlc {
    /// A timestamp for a local event at wall time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> HlcTimestamp {
        let next =
            HlcTimestamp::from_wall_ms(wall_ms).max(HlcTimestamp(self.last.0.saturating_add(1)));
        self.last = next;
        next
    }

    /// Takes a timestamp seen on a remote event into account.
    pub fn observe(&mut self, seen: HlcTimestamp) {
        self.last = self.last.max(seen);
    }

    /// The greatest timestamp issued or observed so far.
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_monotonic_when_wall_time_goes_back() {
        let mut hlc = Hlc::default();
        let a = hlc.tick(1_000);
        let b = hlc.tick(900);
        let c = hlc.tick(1_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!((a.wall_ms(), a.logical()), (1_000, 0));
        assert_eq!((b.wall_ms(), b.logical()), (1_000, 1));
    }

    #[test]
    fn tick_follows_observed_remote_time() {
        let mut hlc = Hlc::default();
        hlc.observe(HlcTimestamp::from_wall_ms(5_000));
        let t = hlc.tick(1_000);
        assert!(t > HlcTimestamp::from_wall_ms(5_000));
        assert_eq!(t.wall_ms(), 5_000);
    }

    #[test]
    fn logical_overflow_carries_into_wall_time() {
        let mut hlc = Hlc::default();
        hlc.observe(HlcTimestamp(HlcTimestamp::from_wall_ms(7).0 | 0xFFFF));
        let t = hlc.tick(0);
        assert_eq!((t.wall_ms(), t.logical()), (8, 0));
    }
}
