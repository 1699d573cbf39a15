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

/// A [`Dot`] as text: `<writer id in hex>-<sequence number>`, e.g. `6e3f09a2c4b81d77-42`;
/// how the API, the command line and error messages show a version.
///
/// ```
/// use confmesh::proto::{Dot, DotText, WriterId};
///
/// let dot = Dot::new(WriterId(0x6e3f_09a2_c4b8_1d77), 42);
/// assert_eq!(DotText(dot).to_string(), "6e3f09a2c4b81d77-42");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotText(pub Dot);

impl fmt::Display for DotText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0.actor, self.0.counter)
    }
}

/// The vector clock a version carries: for each writer, the highest sequence number of that
/// writer's versions *of the same key* which this version supersedes.
pub type VClock = crdts::VClock<WriterId>;
