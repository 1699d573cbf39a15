//! The faults injected into a run, as spans of virtual time, for the checkers that must know
//! what a node could and could not see: a node declared down while a link to it was cut, or
//! while it (or its accuser) was paused, is not a false positive.

use std::time::Instant;

/// Which links a partition cuts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The group of each node (by index).
    pub groups: Vec<u8>,
    /// `Some((a, b))`: only traffic from group `a` to group `b` is dropped (one-way). `None`:
    /// all traffic between different groups is dropped.
    pub one_way: Option<(u8, u8)>,
}

impl Partition {
    /// Whether a message from node `from` to node `to` is dropped.
    pub fn blocks(&self, from: usize, to: usize) -> bool {
        let (Some(&a), Some(&b)) = (self.groups.get(from), self.groups.get(to)) else {
            return false;
        };
        match self.one_way {
            Some(cut) => (a, b) == cut,
            None => a != b,
        }
    }

    /// Whether traffic between `a` and `b` is dropped in either direction.
    pub fn separates(&self, a: usize, b: usize) -> bool {
        self.blocks(a, b) || self.blocks(b, a)
    }
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The node (by index) was paused: it neither received, nor sent, nor ran its timers.
    Pause(usize),
    /// Links were cut.
    Cut(Partition),
}

/// A fault and when it was in force: from `from` until `to` (`None`: still in force).
#[derive(Clone, Debug)]
pub struct Span {
    /// When it began.
    pub from: Instant,
    /// When it ended, if it did.
    pub to: Option<Instant>,
    /// What it was.
    pub fault: Fault,
}

impl Span {
    /// Whether the span overlaps `[start, end]`.
    fn overlaps(&self, start: Instant, end: Instant) -> bool {
        self.from <= end && self.to.is_none_or(|to| to >= start)
    }
}

/// Every fault of a run, in the order injected.
#[derive(Clone, Debug, Default)]
pub struct FaultLog {
    /// The spans, in the order they began.
    pub spans: Vec<Span>,
}

impl FaultLog {
    /// Records a fault beginning at `at`.
    pub fn begin(&mut self, at: Instant, fault: Fault) {
        self.spans.push(Span {
            from: at,
            to: None,
            fault,
        });
    }

    /// Ends, at `at`, every open fault that `which` selects.
    pub fn end(&mut self, at: Instant, which: impl Fn(&Fault) -> bool) {
        for span in self.spans.iter_mut().filter(|s| s.to.is_none()) {
            if which(&span.fault) {
                span.to = Some(at);
            }
        }
    }

    /// Whether node `i` was paused at any moment of `[start, end]`.
    pub fn paused(&self, i: usize, start: Instant, end: Instant) -> bool {
        self.spans
            .iter()
            .any(|s| s.fault == Fault::Pause(i) && s.overlaps(start, end))
    }

    /// Whether traffic between `a` and `b` was cut, either way, at any moment of
    /// `[start, end]`.
    pub fn cut(&self, a: usize, b: usize, start: Instant, end: Instant) -> bool {
        self.spans.iter().any(|s| {
            matches!(&s.fault, Fault::Cut(p) if p.separates(a, b)) && s.overlaps(start, end)
        })
    }

    /// Whether traffic between `a` and any node was cut, either way, at any moment of
    /// `[start, end]`.
    pub fn isolated_any(&self, a: usize, start: Instant, end: Instant) -> bool {
        self.cut_share(a, start, end) > 0.0
    }

    /// The largest share of the other nodes that one partition in force during
    /// `[start, end]` cut `a` off from, either way (0 if none did).
    pub fn cut_share(&self, a: usize, start: Instant, end: Instant) -> f64 {
        self.spans
            .iter()
            .filter(|s| s.overlaps(start, end))
            .filter_map(|s| match &s.fault {
                Fault::Cut(p) if p.groups.len() > 1 => {
                    let cut = (0..p.groups.len()).filter(|&b| p.separates(a, b)).count();
                    Some(cut as f64 / (p.groups.len() - 1) as f64)
                }
                _ => None,
            })
            .fold(0.0, f64::max)
    }
}
