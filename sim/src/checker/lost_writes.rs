//! No acknowledged write is lost.

use std::fmt;

use confmesh::proto::{Dot, DotText, Key};

use crate::world::WriteRecord;

/// Checks that every acknowledged write made on a node that is still up is held by every
/// live node (`holds(node, dot)`: the node's causal context has it, so it holds it or what
/// superseded it).
///
/// A write is acknowledged once its writer's commit of it was durable. The one allowance: a
/// writer that is down may have crashed before passing a write on, and that write is not
/// counted here (the chaos scenario restarts every node and checks them all).
/// `up` lists the live nodes.
pub fn check(
    writes: &[WriteRecord],
    up: &[usize],
    holds: impl Fn(usize, &Dot) -> bool,
) -> Result<(), LostWrites> {
    let lost: Vec<LostWrite> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.acknowledged() && up.contains(&w.node))
        .filter_map(|(write, w)| {
            let missing_on: Vec<usize> =
                up.iter().copied().filter(|&i| !holds(i, &w.dot)).collect();
            (!missing_on.is_empty()).then(|| LostWrite {
                write,
                key: w.key.clone(),
                dot: w.dot,
                writer: w.node,
                missing_on,
            })
        })
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(LostWrites { writes: lost })
    }
}

/// Writes made on nodes that are still up, missing on some live node.
#[derive(Clone, Debug)]
pub struct LostWrites {
    /// The writes lost, in the order they were made; never empty.
    pub writes: Vec<LostWrite>,
}

/// One write missing on some live node.
#[derive(Clone, Debug)]
pub struct LostWrite {
    /// Its position among the run's writes (0 is the first write).
    pub write: usize,
    /// The key written.
    pub key: Key,
    /// The version's dot.
    pub dot: Dot,
    /// The node that made it (still up).
    pub writer: usize,
    /// The live nodes that never held it.
    pub missing_on: Vec<usize>,
}

impl fmt::Display for LostWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writes acknowledged by live nodes are missing on some live node",
            self.writes.len()
        )?;
        if let Some(first) = self.writes.first() {
            write!(
                f,
                "; first: write {} to {} (dot {}) made on node {} is missing on {} nodes: ",
                first.write,
                first.key,
                DotText(first.dot),
                first.writer,
                first.missing_on.len()
            )?;
            super::write_nodes(f, &first.missing_on)?;
        }
        Ok(())
    }
}
