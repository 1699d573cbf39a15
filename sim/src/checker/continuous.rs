//! What must hold at every moment of a run, not only at its end. The world runs these every
//! 500 ms of virtual time, on every running node whose replica changed since the last time
//! (`World::audit`), and keeps the first [`KEPT`] findings:
//!
//! - [`written`]: no value nobody wrote. Every version a running node stores (winners,
//!   siblings and tombstones) is an acknowledged write of that key, with that value (or was
//!   on disk at the start).
//! - No version id given twice: a node never gives a new write the dot of an acknowledged
//!   one (checked as each write is made, `World::write`).
//! - [`kept`]: a running replica never forgets. Every version a running incarnation held stays
//!   in its causal context (stored, or superseded, or collected). Only a crash may lose
//!   state, and only what was not durable.
//! - [`held`]: no acknowledged write is lost. Each is held by some node: in its running
//!   replica, or on its disk, from which a restart would serve it.

use std::fmt;

use bytes::Bytes;
use confmesh::proto::{Digest, Dot, DotText, Key, Store};

use crate::world::WriteRecord;

/// How many findings a run keeps.
pub const KEPT: usize = 20;

/// Something that must never be, seen during a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A running node's read of `key` returns a value nobody wrote there.
    Phantom {
        /// The node.
        node: usize,
        /// The key read.
        key: Key,
        /// The dot of the version it returns.
        dot: Dot,
    },
    /// A running incarnation no longer holds versions it held.
    Forgot {
        /// The node.
        node: usize,
    },
    /// A new write got the dot of an acknowledged write.
    Reissued {
        /// The acknowledged write's position among the run's writes.
        write: usize,
        /// The dot given twice.
        dot: Dot,
    },
    /// No node holds an acknowledged write, running or on disk.
    Unheld {
        /// Its position among the run's writes.
        write: usize,
        /// Its dot.
        dot: Dot,
    },
}

/// Checks that every version node `node` stores was written: `written` gives the key and value
/// (`None`: a delete) of the acknowledged write with a dot, if there is one.
pub fn written(
    node: usize,
    store: &Store,
    written: impl Fn(&Dot) -> Option<(Key, Option<Bytes>)>,
) -> Result<(), Finding> {
    for version in store.versions_all() {
        let ok = written(&version.dot).is_some_and(|(key, value)| {
            key == version.key && value.as_ref() == version.payload.value()
        });
        if !ok {
            return Err(Finding::Phantom {
                node,
                key: version.key.clone(),
                dot: version.dot,
            });
        }
    }
    Ok(())
}

/// Checks that node `node`'s causal context `now` still covers `before`, its context at the
/// previous check of the same incarnation.
pub fn kept(node: usize, before: &Digest, now: &Digest) -> Result<(), Finding> {
    if now.covers(before) {
        Ok(())
    } else {
        Err(Finding::Forgot { node })
    }
}

/// Checks that every acknowledged write is held by some node (`holds`).
pub fn held(writes: &[WriteRecord], holds: impl Fn(&WriteRecord) -> bool) -> Result<(), Finding> {
    match writes
        .iter()
        .enumerate()
        .find(|(_, w)| w.acknowledged() && !holds(w))
    {
        Some((write, w)) => Err(Finding::Unheld { write, dot: w.dot }),
        None => Ok(()),
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Phantom { node, key, dot } => write!(
                f,
                "node {node} reads a value nobody wrote: {key} (dot {})",
                DotText(*dot)
            ),
            Finding::Forgot { node } => {
                write!(
                    f,
                    "node {node} no longer holds versions it held, without a crash"
                )
            }
            Finding::Reissued { write, dot } => write!(
                f,
                "dot {} of acknowledged write {write} was given to another write",
                DotText(*dot)
            ),
            Finding::Unheld { write, dot } => write!(
                f,
                "acknowledged write {write} (dot {}) is held by no node, running or on disk",
                DotText(*dot)
            ),
        }
    }
}
