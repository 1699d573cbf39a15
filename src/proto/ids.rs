//! Identifiers of writers and of the versions they write.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a writer: one per node, stable across restarts of that node.
///
/// Every version a writer produces is numbered by a [`Dot`] `(writer, seq)` with `seq` counting
/// 1, 2, 3, ... Two nodes must never share a writer id; the runtime draws it at random when a
/// data directory is created and persists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriterId(pub u64);

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The unique name of one version: the writer and that writer's sequence number (from 1).
///
/// This is `crdts::Dot`, so it composes with [`crdts::VClock`].
pub type Dot = crdts::Dot<WriterId>;

/// The vector clock a version carries: for each writer, the highest sequence number of that
/// writer's versions *of the same key* which this version supersedes.
pub type VClock = crdts::VClock<WriterId>;
