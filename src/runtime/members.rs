//! Members as services see them: a name, an address, tags and a state.
//!
//! SWIM knows members by [`NodeId`] only. A node's name and tags travel in the replicated map
//! itself, under the reserved key `_confmesh/members/<writer id in hex>`, which each node
//! writes at start when it changed. So they reach every member by the same paths as any
//! configuration, and a member's details are known wherever its writes are. Keys under
//! `_confmesh/` are refused to applications and hidden from their lists and watches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::secrets;
use crate::proto::{
    Key, WriterId,
    node::{Node, NodeId},
    wire,
};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberInfo {
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
    /// The newest protocol version it speaks.
    pub(crate) protocol: u8,
    /// Its age recipient (`age1…`), which secret prefixes' keys are sealed to
    /// (docs/PROTOCOL.md §9.2). Only an X25519 recipient is kept; anything else reads as none.
    pub(crate) recipient: Option<String>,
}

impl Default for MemberInfo {
    fn default() -> MemberInfo {
        MemberInfo {
            name: String::new(),
            tags: BTreeMap::new(),
            protocol: wire::PROTOCOL_VERSION,
            recipient: None,
        }
    }
}

/// A member record as protocol 1 wrote it.
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    name: String,
    tags: BTreeMap<String, String>,
}

/// A member record from protocol 2 on: protocol 1's fields, then the version. A protocol-1
/// reader decodes the fields it knows and ignores the rest, so both read both.
#[derive(Serialize, Deserialize)]
struct RecordV2 {
    name: String,
    tags: BTreeMap<String, String>,
    protocol: u8,
}

/// A member record with the node's age recipient: protocol 2's fields, then the recipient
/// (docs/PROTOCOL.md §9.2). Appended, so every older build reads its fields and ignores the
/// recipient; written only with a protocol of 2 or more.
#[derive(Serialize, Deserialize)]
struct RecordV3 {
    name: String,
    tags: BTreeMap<String, String>,
    protocol: u8,
    recipient: String,
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
            + self.recipient.as_ref().map_or(0, String::len)
    }

    /// The info `writer` published, if this replica holds it, and unless the record is a
    /// version its writer signed at or after an equivocation it was convicted of (no replica
    /// may write another's record, so such a record is ignored rather than written again:
    /// docs/PROTOCOL.md §7.6).
    pub(crate) fn read(node: &Node, writer: WriterId) -> Option<MemberInfo> {
        let record = node.store().get(&MemberInfo::key(writer)?)?;
        if node.judge().tainted(record.dot) {
            return None;
        }
        MemberInfo::decode(record.payload.value()?)
    }

    /// A record of any layout; one without a version is protocol 1, one without a recipient
    /// has none. Bytes after the fields this build knows are what a later protocol appended,
    /// and are ignored. (A protocol-1 record ends right after its tags, so it never reads as a
    /// later one; a protocol-2 record ends right after its version.) A recipient that is not
    /// an age X25519 recipient reads as none.
    pub(crate) fn decode(bytes: &[u8]) -> Option<MemberInfo> {
        if let Ok((r, _)) = wire::decode_limited::<RecordV3>(bytes) {
            let protocol = r.protocol.max(wire::OLDEST_PROTOCOL_VERSION);
            // Protocol 1's layout has no place for a recipient: a record claiming protocol 1
            // (or 0) with one reads as protocol 1's, without it.
            let recipient =
                (protocol > 1 && secrets::is_recipient(&r.recipient)).then_some(r.recipient);
            return Some(MemberInfo {
                name: r.name,
                tags: r.tags,
                protocol,
                recipient,
            });
        }
        match wire::decode_limited::<RecordV2>(bytes) {
            Ok((r, _)) => Some(MemberInfo {
                name: r.name,
                tags: r.tags,
                protocol: r.protocol.max(wire::OLDEST_PROTOCOL_VERSION),
                recipient: None,
            }),
            _ => wire::decode_limited::<RecordV1>(bytes)
                .ok()
                .map(|(r, _)| MemberInfo {
                    name: r.name,
                    tags: r.tags,
                    protocol: wire::OLDEST_PROTOCOL_VERSION,
                    recipient: None,
                }),
        }
    }

    /// What a protocol-1 build reads of a record: the fields of protocol 1's layout, and how
    /// many bytes they take (what follows is ignored). For the fuzz target's check that every
    /// layout stays readable by the oldest version ([`crate::fuzzing`]).
    pub(crate) fn read_as_protocol_1(
        bytes: &[u8],
    ) -> Option<(String, BTreeMap<String, String>, usize)> {
        wire::decode_limited::<RecordV1>(bytes)
            .ok()
            .map(|(r, used)| (r.name, r.tags, used))
    }

    /// The record in the layout of the protocol it advertises, with the recipient appended
    /// if it has one (protocol 2 and later).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let config = bincode::config::standard();
        let (name, tags, protocol) = (self.name.clone(), self.tags.clone(), self.protocol);
        let encoded = match &self.recipient {
            _ if protocol <= 1 => bincode::serde::encode_to_vec(RecordV1 { name, tags }, config),
            None => bincode::serde::encode_to_vec(
                RecordV2 {
                    name,
                    tags,
                    protocol,
                },
                config,
            ),
            Some(recipient) => bincode::serde::encode_to_vec(
                RecordV3 {
                    name,
                    tags,
                    protocol,
                    recipient: recipient.clone(),
                },
                config,
            ),
        };
        encoded.unwrap_or_default()
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
    /// The newest protocol version it advertises (the oldest this build speaks until its
    /// record arrives, or if its build predates versioned records).
    pub protocol: u8,
    /// Its age recipient (`age1…`), which keys of secret prefixes it may read are sealed to
    /// (docs/PROTOCOL.md §9.2); `None` until its record arrives, or if its build predates
    /// secrets.
    pub recipient: Option<String>,
}

impl Member {
    pub(crate) fn new(id: NodeId, info: Option<MemberInfo>, state: MemberState) -> Member {
        let info = info.unwrap_or(MemberInfo {
            protocol: wire::OLDEST_PROTOCOL_VERSION,
            ..MemberInfo::default()
        });
        Member {
            id,
            name: if info.name.is_empty() {
                id.addr.to_string()
            } else {
                info.name
            },
            tags: info.tags,
            state,
            protocol: info.protocol,
            recipient: info.recipient,
        }
    }
}

/// The writer whose info `key` holds, if it is a member-info key.
pub(crate) fn info_writer(key: &Key) -> Option<WriterId> {
    let hex = key.as_str().strip_prefix(MEMBER_PREFIX)?;
    u64::from_str_radix(hex, 16).ok().map(WriterId)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(protocol: u8) -> MemberInfo {
        MemberInfo {
            name: "n1".into(),
            tags: [("zone".to_string(), "eu".to_string())].into(),
            protocol,
            recipient: None,
        }
    }

    #[test]
    fn a_recipient_is_appended_after_the_version_and_every_older_reader_reads_the_rest() {
        let recipient = secrets::NodeIdentity::ephemeral().recipient();
        let with = MemberInfo {
            recipient: Some(recipient.clone()),
            ..info(4)
        };
        let bytes = with.encode();
        assert_eq!(MemberInfo::decode(&bytes), Some(with.clone()));
        // A protocol-2 reader: name, tags and version, then bytes it ignores.
        let (v2, used) = wire::decode_limited::<RecordV2>(&bytes).expect("v2 reads it");
        assert_eq!((v2.name.as_str(), v2.protocol), ("n1", 4));
        assert_eq!(used, info(4).encode().len());
        assert!(bytes.ends_with(recipient.as_bytes()));
        let (v1, _) = wire::decode_limited::<RecordV1>(&bytes).expect("v1 reads it");
        assert_eq!(v1.tags, with.tags);
        // A record without one reads as none, and so does one whose recipient is not an
        // X25519 recipient (nobody seals a key to it).
        assert_eq!(MemberInfo::decode(&info(4).encode()), Some(info(4)));
        let forged = MemberInfo {
            recipient: Some("age1notarecipient".into()),
            ..info(4)
        };
        assert_eq!(MemberInfo::decode(&forged.encode()), Some(info(4)));
        // Protocol 1's layout has no place for it.
        let old = MemberInfo {
            recipient: Some(recipient),
            ..info(1)
        };
        assert_eq!(MemberInfo::decode(&old.encode()), Some(info(1)));
        // A record of the recipient's layout claiming protocol 1 reads as protocol 1's.
        let mut claims_1 = with.encode();
        claims_1[info(4).encode().len() - 1] = 1;
        assert_eq!(MemberInfo::decode(&claims_1), Some(info(1)));
    }

    #[test]
    fn records_of_both_layouts_read_back_and_a_protocol_1_reader_reads_both() {
        for protocol in [1, 2] {
            let bytes = info(protocol).encode();
            assert_eq!(MemberInfo::decode(&bytes), Some(info(protocol)));
            // What a protocol-1 build does with the record: decode its fields, ignore the rest.
            let (old, _) = wire::decode_limited::<RecordV1>(&bytes).expect("v1 reads it");
            assert_eq!((old.name.as_str(), old.tags.len()), ("n1", 1));
        }
        assert!(info(2).encode().len() > info(1).encode().len());
        // A later protocol's record: this build's fields, then more.
        let mut later = info(2).encode();
        later[info(2).encode().len() - 1] = 3;
        later.extend_from_slice(b"\x05more!");
        assert_eq!(MemberInfo::decode(&later), Some(info(3)));
        assert_eq!(MemberInfo::decode(b"\xff\xff"), None);
    }
}
