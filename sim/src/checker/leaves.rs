//! Graceful leaves: no survivor still lists a node that left.

use std::fmt;

use confmesh::proto::node::NodeId;

/// Checks that no live node other than the leaver lists an identity that left gracefully.
///
/// `leaves` holds (index, identity) of each node that left; `up` the live nodes; `lists(j, id)`
/// tells whether node `j`'s member list holds `id`.
pub fn check(
    leaves: &[(usize, NodeId)],
    up: &[usize],
    lists: impl Fn(usize, NodeId) -> bool,
) -> Result<(), StillListed> {
    let listed: Vec<Listed> = leaves
        .iter()
        .filter_map(|&(node, id)| {
            let listed_by: Vec<usize> = up
                .iter()
                .copied()
                .filter(|&j| j != node && lists(j, id))
                .collect();
            (!listed_by.is_empty()).then_some(Listed {
                node,
                id,
                listed_by,
            })
        })
        .collect();
    if listed.is_empty() {
        Ok(())
    } else {
        Err(StillListed { leavers: listed })
    }
}

/// Nodes that left but are still listed.
#[derive(Clone, Debug)]
pub struct StillListed {
    /// The leavers, in the order they left; never empty.
    pub leavers: Vec<Listed>,
}

/// One node that left, and who still lists it.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The node that left.
    pub node: usize,
    /// The identity it left as.
    pub id: NodeId,
    /// The live nodes that still list it.
    pub listed_by: Vec<usize>,
}

impl fmt::Display for StillListed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, leaver) in self.leavers.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "node {} ({}) left, but {} nodes still list it: ",
                leaver.node,
                leaver.id,
                leaver.listed_by.len()
            )?;
            super::write_nodes(f, &leaver.listed_by)?;
        }
        Ok(())
    }
}
