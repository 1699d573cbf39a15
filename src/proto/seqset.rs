//! A set of sequence numbers kept as disjoint inclusive ranges.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An inclusive range of sequence numbers, `start..=end`, with `1 <= start <= end`. Decoding
/// refuses any other (a peer's bytes are checked before they reach a set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSeqRange")]
pub struct SeqRange {
    /// First sequence number in the range.
    pub start: u64,
    /// Last sequence number in the range (inclusive).
    pub end: u64,
}

impl SeqRange {
    /// The range `start..=end`, or `None` unless `1 <= start <= end`.
    pub fn new(start: u64, end: u64) -> Option<SeqRange> {
        (1 <= start && start <= end).then_some(SeqRange { start, end })
    }

    /// How many sequence numbers the range holds.
    pub fn len(self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range holds at least one number. Present for API symmetry.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// A [`SeqRange`] as decoded, before its check.
#[derive(Deserialize)]
struct RawSeqRange {
    start: u64,
    end: u64,
}

impl TryFrom<RawSeqRange> for SeqRange {
    type Error = SeqSetError;

    fn try_from(raw: RawSeqRange) -> Result<SeqRange, SeqSetError> {
        SeqRange::new(raw.start, raw.end).ok_or(SeqSetError)
    }
}

/// A set of sequence numbers (each `>= 1`), stored as disjoint, non-adjacent inclusive ranges.
///
/// One writer's versions as seen by a replica are almost always a single range `1..=n`, so the
/// set is small; gaps appear while versions arrive out of order and close as they fill in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqSet {
    /// start -> end (inclusive). Invariant: disjoint, non-adjacent, `1 <= start <= end`.
    ranges: BTreeMap<u64, u64>,
}

/// Why a list of ranges is not a valid [`SeqSet`] (on decode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequence ranges must be non-empty, start at 1 or later, and be sorted and disjoint")]
pub struct SeqSetError;

impl SeqSet {
    /// The empty set.
    pub const fn new() -> SeqSet {
        SeqSet {
            ranges: BTreeMap::new(),
        }
    }

    /// The set `1..=n` (empty for `n == 0`).
    pub fn up_to(n: u64) -> SeqSet {
        let mut set = SeqSet::new();
        if let Some(range) = SeqRange::new(1, n) {
            set.insert_range(range);
        }
        set
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq <= end)
    }

    /// Adds `seq`; returns whether it was new. `seq == 0` is ignored.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq == 0 || self.contains(seq) {
            return false;
        }
        self.insert_range(SeqRange {
            start: seq,
            end: seq,
        });
        true
    }

    /// Adds every number in `range`.
    pub fn insert_range(&mut self, range: SeqRange) {
        let (mut start, mut end) = (range.start, range.end);
        // The fields are public: a range built by hand may break its invariant. Decoding
        // refuses such a range; here it is ignored rather than corrupting the set.
        if start == 0 || start > end {
            return;
        }
        // Absorb a range that overlaps or touches on the left.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e.saturating_add(1) >= start
        {
            if e >= end {
                return; // already covered
            }
            let next_start = self.ranges.range(s + 1..).next().map(|(&n, _)| n);
            if next_start.is_none_or(|n| n > end.saturating_add(1)) {
                // The common case, appending to the last range: extend it in place.
                if let Some(e) = self.ranges.get_mut(&s) {
                    *e = end;
                }
                return;
            }
            start = s;
            end = end.max(e);
        }
        // Absorb every range that starts inside or right after the new one.
        while let Some((&s, &e)) = self.ranges.range(start..=end.saturating_add(1)).next() {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Adds every number in `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        for range in other.ranges() {
            self.insert_range(range);
        }
    }

    /// The highest number in the set, or 0 when empty.
    pub fn max(&self) -> u64 {
        self.ranges.values().next_back().copied().unwrap_or(0)
    }

    /// The highest `n` such that all of `1..=n` are in the set (0 if 1 is missing).
    pub fn contiguous(&self) -> u64 {
        match self.ranges.first_key_value() {
            Some((&1, &end)) => end,
            _ => 0,
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The number of ranges the set is stored as.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, in increasing order.
    pub fn ranges(&self) -> impl DoubleEndedIterator<Item = SeqRange> + '_ {
        self.ranges
            .iter()
            .map(|(&start, &end)| SeqRange { start, end })
    }

    /// The numbers below [`SeqSet::max`] that are missing, as ranges in increasing order.
    pub fn gaps(&self) -> Vec<SeqRange> {
        let mut gaps = Vec::new();
        let mut next = 1;
        for range in self.ranges() {
            if range.start > next {
                gaps.push(SeqRange {
                    start: next,
                    end: range.start - 1,
                });
            }
            next = range.end.saturating_add(1);
        }
        gaps
    }

    /// The numbers in `self` that are not in `other`, as ranges in increasing order.
    pub fn difference(&self, other: &SeqSet) -> Vec<SeqRange> {
        let mut out = Vec::new();
        for range in self.ranges() {
            // `start` is the first number of `range` not yet known to be covered by `other`;
            // `None` once all of `range` is covered.
            let mut start = Some(range.start);
            // Ranges of `other` that may overlap `range`: the one starting at or before
            // `range.start`, and all that start inside it.
            let before = other.ranges.range(..=range.start).next_back();
            let inside = (range.start < range.end)
                .then(|| other.ranges.range(range.start + 1..=range.end))
                .into_iter()
                .flatten();
            for (&s, &e) in before.into_iter().chain(inside) {
                let Some(from) = start else { break };
                if e < from {
                    continue;
                }
                if s > from {
                    out.push(SeqRange {
                        start: from,
                        end: s - 1,
                    });
                }
                start = e.checked_add(1).filter(|&next| next <= range.end);
            }
            if let Some(from) = start {
                out.push(SeqRange {
                    start: from,
                    end: range.end,
                });
            }
        }
        out
    }

    /// Whether every number in `self` is in `other`.
    pub fn is_subset(&self, other: &SeqSet) -> bool {
        self.difference(other).is_empty()
    }
}

impl Serialize for SeqSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ranges())
    }
}

/// Decoding checks the invariant: ranges valid (each [`SeqRange`] checks itself as it is
/// decoded), sorted, disjoint and non-adjacent.
impl<'de> Deserialize<'de> for SeqSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SeqSet, D::Error> {
        let list = Vec::<SeqRange>::deserialize(deserializer)?;
        let mut ranges = BTreeMap::new();
        let mut floor = 0u64; // every next start must be > floor + 1
        for (i, range) in list.iter().enumerate() {
            if i > 0 && range.start <= floor.saturating_add(1) {
                return Err(serde::de::Error::custom(SeqSetError));
            }
            floor = range.end;
            ranges.insert(range.start, range.end);
        }
        Ok(SeqSet { ranges })
    }
}

#[cfg(test)]
mod tests;
