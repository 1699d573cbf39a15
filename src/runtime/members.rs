//! Members as services see them: a name, an address, tags and a state.
//!
//! SWIM knows members by [`NodeId`] only. A node's name and tags travel in the replicated map
//! itself, under the reserved key `_confmesh/members/<writer id in hex>`, which each node
//! writes at start when it changed. So they reach every member by the same paths as any
//! configuration, and a member's details are known wherever its writes are. Keys under
//! `_confmesh/` are refused to applications and hidden from their lists and watches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::proto::{Key, Store, WriterId, node::NodeId, wire};

/// Keys under this prefix are confmesh's own; applications can read them but not write them.
pub const RESERVED_PREFIX: &str = "_confmesh/";

const MEMBER_PREFIX: &str = "_confmesh/members/";

/// The most bytes of name and tags together a node may announce.
pub const MAX_MEMBER_INFO_BYTES: usize = 4_096;

/// Whether `key` (or a prefix) is under [`RESERVED_PREFIX`].
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberInfo {
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
}

impl MemberInfo {
    /// The key `writer`'s info is stored under (always valid: allowed characters and hex).
    pub(crate) fn key(writer: WriterId) -> Option<Key> {
        Key::new(&format!("{MEMBER_PREFIX}{:016x}", writer.0)).ok()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.name.len()
            + self
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// The info `writer` published, if this replica holds it.
    pub(crate) fn read(store: &Store, writer: WriterId) -> Option<MemberInfo> {
        let value = store
            .get(&MemberInfo::key(writer)?)?
            .payload
            .value()?
            .clone();
        wire::decode_limited::<MemberInfo>(&value)
            .ok()
            .map(|(info, _)| info)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }
}

/// Where a member stands, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemberState {
    /// Reachable (or not yet found otherwise).
    Alive,
    /// Declared down: failed or unreachable.
    Down,
    /// Left gracefully.
    Left,
}

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its identity in the membership protocol; `id.addr` is where members reach it.
    pub id: NodeId,
    /// The name it was given ([`MeshBuilder::name`](super::MeshBuilder::name)); its address
    /// until its details arrive.
    pub name: String,
    /// Its tags ([`MeshBuilder::tag`](super::MeshBuilder::tag)).
    pub tags: BTreeMap<String, String>,
    /// Whether it is alive, down or gone.
    pub state: MemberState,
}

impl Member {
    pub(crate) fn new(id: NodeId, info: Option<MemberInfo>, state: MemberState) -> Member {
        let info = info.unwrap_or_default();
        Member {
            id,
            name: if info.name.is_empty() {
                id.addr.to_string()
            } else {
                info.name
            },
            tags: info.tags,
            state,
        }
    }
}

/// The writer whose info `key` holds, if it is a member-info key.
pub(crate) fn info_writer(key: &Key) -> Option<WriterId> {
    let hex = key.as_str().strip_prefix(MEMBER_PREFIX)?;
    u64::from_str_radix(hex, 16).ok().map(WriterId)
}
