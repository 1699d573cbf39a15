//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), for decoders and servers the
//! public API does not reach directly.
//!
//! **Not part of the API.** Hidden from the docs and outside semver: anything here may change
//! or go in any release. Nothing here is needed to use confmesh.
//!
//! - Member records (feature `runtime`): [`decode_member_record`], [`encode_member_record`] and
//!   [`read_member_record_as_protocol_1`], the decoder every node runs on the member records
//!   peers write into the replicated map.
//! - The HTTP API (feature `agent`): [`HttpServer`], a real single-node mesh behind the API's
//!   router, serving one connection at a time by the listener's own per-connection code.

use std::collections::BTreeMap;

use crate::runtime::MemberInfo;

#[cfg(feature = "agent")]
pub use crate::agent::fuzz::{HTTP_DEADLINE, HTTP_TOKEN, HttpClient, HttpExchange, HttpServer};

/// A member record as a node reads it: what a member says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// Its name (empty: none given).
    pub name: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The newest protocol version it speaks (1 for a record without one).
    pub protocol: u8,
    /// Its age recipient, appended after the version (none in protocol 1's layout, and none
    /// for a string that is not an age X25519 recipient).
    pub recipient: Option<String>,
}

impl From<MemberInfo> for MemberRecord {
    fn from(info: MemberInfo) -> MemberRecord {
        MemberRecord {
            name: info.name,
            tags: info.tags,
            protocol: info.protocol,
            recipient: info.recipient,
        }
    }
}

/// Decodes a member record of either layout, as a node does with the value of a
/// `_confmesh/members/<writer>` key; `None` for bytes that are not one.
pub fn decode_member_record(bytes: &[u8]) -> Option<MemberRecord> {
    MemberInfo::decode(bytes).map(MemberRecord::from)
}

/// Encodes `record` as a node writes its own: in protocol 1's layout for protocol 1 (or 0),
/// else with the version after the tags, and the recipient, if any, after the version.
pub fn encode_member_record(record: &MemberRecord) -> Vec<u8> {
    MemberInfo {
        name: record.name.clone(),
        tags: record.tags.clone(),
        protocol: record.protocol,
        recipient: record.recipient.clone(),
    }
    .encode()
}

/// What a protocol-1 build reads of a member record: name, tags, and how many bytes they take
/// (it ignores the rest).
pub fn read_member_record_as_protocol_1(
    bytes: &[u8],
) -> Option<(String, BTreeMap<String, String>, usize)> {
    MemberInfo::read_as_protocol_1(bytes)
}
