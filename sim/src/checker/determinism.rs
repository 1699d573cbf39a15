//! Determinism: the same seed gives the same trace hash.

use std::fmt;

/// Checks that a run and its replay from the same parameters left the same trace hash.
pub fn check(first: &str, again: &str) -> Result<(), NotDeterministic> {
    if first == again {
        return Ok(());
    }
    Err(NotDeterministic {
        first: first.to_string(),
        again: again.to_string(),
    })
}

/// A replay that took another path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotDeterministic {
    /// The first run's trace hash.
    pub first: String,
    /// The replay's.
    pub again: String,
}

impl fmt::Display for NotDeterministic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace hash {} then {}", self.first, self.again)
    }
}
