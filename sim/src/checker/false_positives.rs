//! No false positives: a running node is not declared down, beyond what the scenario allows.

use std::{
    fmt,
    time::{Duration, Instant},
};

use confmesh::proto::node::{Event, NodeId};

use crate::{params::Scenario, world::MemberLog};

/// Above this loss rate, running nodes declared down are counted (`false_positives` in the
/// report) but are not a failure: a probe and all its indirect probes lost is then expected
/// now and then.
pub const TOLERATED_ABOVE_LOSS: f64 = 0.01;

/// Checks that no running incarnation was declared down (`found`, from [`find`]) at a loss
/// rate of at most [`TOLERATED_ABOVE_LOSS`].
pub fn check(found: Vec<FalsePositive>, loss: f64) -> Result<(), FalsePositives> {
    if found.is_empty() || loss > TOLERATED_ABOVE_LOSS {
        return Ok(());
    }
    Err(FalsePositives { found })
}

/// Every time a running incarnation was declared down: reported `MemberDown` by an observer,
/// or told it was down (it then rejoins under the next generation, `Event::Rejoined`).
///
/// `incarnations` holds (identity, started, stopped) for every incarnation that ran; one that
/// stopped (crashed, or started leaving) may be declared down from then on. In the
/// `partition` scenario each side declares the other down by design, and nothing is counted.
pub fn find(
    scenario: Scenario,
    log: &MemberLog,
    incarnations: &[(NodeId, Instant, Option<Instant>)],
    start: Instant,
) -> Vec<FalsePositive> {
    if scenario == Scenario::Partition {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (t, observer, e) in log {
        let (id, how) = match e {
            Event::MemberDown(id) => (*id, How::DeclaredDown),
            Event::Rejoined(new) => (
                NodeId {
                    generation: new.generation.wrapping_sub(1),
                    ..*new
                },
                How::Rejoined,
            ),
            _ => continue,
        };
        let running = incarnations
            .iter()
            .any(|(inc, from, to)| *inc == id && from <= t && to.is_none_or(|to| *t < to));
        if running {
            found.push(FalsePositive {
                at: *t - start,
                observer: *observer,
                id,
                how,
            });
        }
    }
    found
}

/// Running nodes declared down.
#[derive(Clone, Debug)]
pub struct FalsePositives {
    /// Each time, in the order observed; never empty.
    pub found: Vec<FalsePositive>,
}

/// One running incarnation declared down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FalsePositive {
    /// When, from the start of the run.
    pub at: Duration,
    /// The node that reported it: an observer, or the node itself when it rejoined.
    pub observer: usize,
    /// The incarnation declared down.
    pub id: NodeId,
    /// How it showed.
    pub how: How,
}

/// How a false positive showed in the membership log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// An observer reported `MemberDown`.
    DeclaredDown,
    /// The node learnt it was declared down and rejoined (`Rejoined`).
    Rejoined,
}

impl fmt::Display for FalsePositives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} healthy nodes were declared down", self.found.len())?;
        if let Some(first) = self.found.first() {
            write!(
                f,
                " (first: {}, {} {}, at t={:.2}s; replay with --follow to see why)",
                first.id,
                first.how,
                first.observer,
                first.at.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            How::DeclaredDown => "declared down by node",
            How::Rejoined => "told it was down and rejoined: node",
        })
    }
}
