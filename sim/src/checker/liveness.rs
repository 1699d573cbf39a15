//! Liveness: every phase of a scenario ends before its deadline.
//!
//! A deadline is a point in the run, so the scenario checks these as it goes (with
//! `World::run_until`) and records a [`Missed`] in `Phases::missed`; [`super::check`] reports it.

use std::{fmt, time::Duration};

/// A phase that did not end before its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Started nodes did not all see each other in time.
    Membership {
        /// Nodes that saw every other started node at the deadline.
        seen: usize,
        /// Nodes started.
        count: usize,
        /// The deadline, from the last start.
        limit: Duration,
    },
    /// Some write had not reached every live node in time.
    Spread {
        /// Writes still missing on some live node at the deadline.
        pending: usize,
        /// Writes made so far.
        writes: usize,
        /// The deadline, from the end of the writes.
        limit: Duration,
    },
    /// After a partition healed, nodes did not all see each other again in time.
    Heal {
        /// Nodes that saw every other node at the deadline.
        seen: usize,
        /// Nodes in the mesh.
        count: usize,
        /// The deadline, from the heal.
        limit: Duration,
    },
    /// The node that joined a loaded mesh did not hold every preloaded key in time.
    Catchup {
        /// The deadline, from the join.
        limit: Duration,
    },
    /// Once every write had reached every node, the nodes did not all hold the same policy
    /// entries and mask the same versions (`--policy`, docs/PROTOCOL.md §8.6).
    Policy {
        /// Nodes whose entries or masks differ from the first running node's.
        differing: usize,
        /// Running nodes.
        count: usize,
    },
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missed::Membership { seen, count, limit } => write!(
                f,
                "membership did not converge: {seen}/{count} nodes see everyone after {} s",
                limit.as_secs()
            ),
            Missed::Spread {
                pending,
                writes,
                limit,
            } => write!(
                f,
                "writes did not reach every live node within {} s ({pending} of {writes} \
                 writes still missing on some live node)",
                limit.as_secs()
            ),
            Missed::Heal { seen, count, limit } => write!(
                f,
                "membership did not heal within {} s ({seen}/{count} nodes see everyone)",
                limit.as_secs()
            ),
            Missed::Catchup { limit } => write!(
                f,
                "the new node did not catch up within {} s",
                limit.as_secs()
            ),
            Missed::Policy { differing, count } => write!(
                f,
                "{differing} of {count} nodes hold other policy entries or masks than the first"
            ),
        }
    }
}
