//! Who a node is, as the membership layer sees it.

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::proto::WriterId;

/// A node's identity: where it listens, the writer id its writes carry, and a generation that
/// grows each time the node (re)joins, so a restarted node wins over its old self.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The address peers reach the node at (its QUIC endpoint).
    pub addr: SocketAddr,
    /// The writer id of the node's store. Stable across restarts of one data directory.
    pub writer: WriterId,
    /// Grows on every restart and every rejoin after being declared down. Start it from
    /// something that grows across restarts, such as the start time in milliseconds.
    pub generation: u64,
}

impl NodeId {
    /// An identity to announce to when only the address of a seed is known. The membership
    /// layer accepts an announce addressed to any identity with the receiver's address.
    pub(crate) fn seed(addr: SocketAddr) -> NodeId {
        NodeId {
            addr,
            writer: WriterId(0),
            generation: 0,
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// A node declared down rejoins with the next generation.
    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Of two identities at one address, the later generation is the live one.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}
