//! Request parameters, response bodies, errors and watch events of the HTTP API.
//!
//! Every body is JSON. Versions are text ([`super::version`]); writers are 16 hex
//! digits; values are given both as UTF-8 text (`null` when they are not UTF-8) and as base64.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

use super::version;
use crate::proto::{Version, WriterId, trust::sealed::generation_of};

/// A writer id as the API shows it: 16 hex digits.
pub fn writer_text(writer: WriterId) -> String {
    format!("{:016x}", writer.0)
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Its version (`<writer hex>-<sequence>`).
    pub version: String,
    /// The writer that made it.
    pub writer: String,
    /// Its writer's wall clock when it was made, ms since the Unix epoch.
    pub time_ms: u64,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// The value as text, if it is UTF-8 (`None` for a deletion or binary bytes).
    pub value: Option<String>,
    /// The value in base64 (`None` for a deletion).
    pub value_base64: Option<String>,
    /// Whether its writer signed it (docs/PROTOCOL.md §7): every version written since
    /// protocol 3; older ones are unsigned.
    #[serde(default)]
    pub signed: bool,
    /// Who asked for the change, as its writer signed it (absent: not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Why, as its writer signed it (absent: not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a value under a secret prefix, the keyring generation it is sealed to
    /// (docs/PROTOCOL.md §9). Its value shows only where a reader's agent opened it for a
    /// caller who may read the key (`GET /v1/kv/{key}`); elsewhere `value` and
    /// `value_base64` are absent, never the ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl VersionInfo {
    /// `version` with `plaintext` as its value: a sealed value opened for a caller who may
    /// read it, still marked sealed.
    pub fn revealed(version: &Version, plaintext: &[u8]) -> VersionInfo {
        let sealed = version
            .payload
            .value()
            .and_then(|v| generation_of(v))
            .map(String::from);
        VersionInfo {
            value: std::str::from_utf8(plaintext).ok().map(String::from),
            value_base64: Some(base64::engine::general_purpose::STANDARD.encode(plaintext)),
            sealed,
            ..VersionInfo::from(version)
        }
    }

    /// The value's bytes (empty for a deletion, for a sealed value shown without its value,
    /// [`VersionInfo::sealed`], and if the base64 is malformed).
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.value, &self.value_base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

impl From<&Version> for VersionInfo {
    fn from(v: &Version) -> VersionInfo {
        let sealed = v.payload.value().and_then(|b| generation_of(b));
        // A sealed value is never shown as if it were the value.
        let value = v.payload.value().filter(|_| sealed.is_none());
        VersionInfo {
            sealed: sealed.map(String::from),
            version: version::format(v.dot),
            writer: writer_text(v.dot.actor),
            time_ms: v.timestamp.wall_ms(),
            deleted: v.is_tombstone(),
            value: value.and_then(|b| std::str::from_utf8(b).ok().map(String::from)),
            value_base64: value.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            signed: v.seal.is_some(),
            author: v.seal.as_ref().and_then(|s| s.author.clone()),
            message: v.seal.as_ref().and_then(|s| s.message.clone()),
        }
    }
}

/// `GET /v1/kv/{key}`: the winning version, and the concurrent ones beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The key.
    pub key: String,
    /// The winner.
    #[serde(flatten)]
    pub winner: VersionInfo,
    /// Concurrent versions that lost to the winner (kept until a write resolves them).
    pub siblings: Vec<VersionInfo>,
}

/// `GET /v1/kv/{key}` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetParams {
    /// Present (`?raw`): answer with the value's bytes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// A blocking query: answer once the winner is no longer this version (`none`: once
    /// there is a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// How long a blocking query waits (`30s`, `500ms`, `2m`; default 60 s, at most 5 min).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

/// `PUT /v1/kv/{key}` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutParams {
    /// Write only if the current version is this one (`none`: only if the key is absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<String>,
    /// Who asks for the change (at most 256 bytes), signed with it and shown in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Why (at most 1 KiB), signed with it and shown in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `DELETE /v1/kv/{key}` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteParams {
    /// As [`PutParams::author`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// As [`PutParams::message`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `PUT /v1/kv/{key}`: the version the write made, durable on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The key.
    pub key: String,
    /// The new version.
    pub version: String,
}

/// `DELETE /v1/kv/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// The key.
    pub key: String,
    /// Whether there was a value to delete.
    pub deleted: bool,
    /// The deletion's version, if there was one.
    pub version: Option<String>,
}

/// `POST /v1/rollback/{key}` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackParams {
    /// The version to restore (from the history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// As [`PutParams::author`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// As [`PutParams::message`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/rollback/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackResponse {
    /// The key.
    pub key: String,
    /// The version restored.
    pub restored: String,
    /// The new version (a write of the restored value), or `None` if it restored a deletion
    /// of a key that had no value.
    pub version: Option<String>,
}

/// `GET /v1/history/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The key.
    pub key: String,
    /// The versions kept, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// `GET /v1/audit` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditParams {
    /// Changes to keys under this prefix (default: every key but `_confmesh/`'s).
    #[serde(default)]
    pub prefix: String,
    /// At most this many changes, newest first (default 100, at most 10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One change of the audit trail: a version, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its writer's wall clock when it was made, ms since the Unix epoch.
    pub time_ms: u64,
    /// The key.
    pub key: String,
    /// Its version (`<writer hex>-<sequence>`).
    pub version: String,
    /// The writer that made it.
    pub writer: String,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// Whether its writer signed it.
    pub signed: bool,
    /// Who asked for the change, as its writer signed it (absent: not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Why, as its writer signed it (absent: not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&Version> for AuditEntry {
    fn from(v: &Version) -> AuditEntry {
        AuditEntry {
            time_ms: v.timestamp.wall_ms(),
            key: v.key.to_string(),
            version: version::format(v.dot),
            writer: writer_text(v.dot.actor),
            deleted: v.is_tombstone(),
            signed: v.seal.is_some(),
            author: v.seal.as_ref().and_then(|s| s.author.clone()),
            message: v.seal.as_ref().and_then(|s| s.message.clone()),
        }
    }
}

/// `GET /v1/audit`: this node's audit trail, newest first. Each node answers from its own
/// bounded history (the last `history_len` versions of each key): an old change may be
/// gone, and a change this node has not received yet is absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResponse {
    /// The changes, newest first.
    pub changes: Vec<AuditEntry>,
}

/// `GET /v1/kv` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListParams {
    /// Keys under this prefix (default: every key).
    #[serde(default)]
    pub prefix: String,
    /// Keys after this one (the previous page's `next`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many keys (default and most: 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One key of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The key.
    pub key: String,
    /// Its winning version.
    pub version: String,
}

/// `GET /v1/kv`: one page of keys, in key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The keys.
    pub keys: Vec<ListEntry>,
    /// Where the next page starts (`after=`), if there is one.
    pub next: Option<String>,
}

/// `GET /v1/watch` parameters (the `Last-Event-ID` header, when present, wins over `from`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchParams {
    /// Changes under this prefix (default: every key).
    #[serde(default)]
    pub prefix: String,
    /// Resume after this cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A change, as a `change` event of `GET /v1/watch` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The key.
    pub key: String,
    /// Resume after this change with it (it is also the event's id).
    pub cursor: String,
    /// The writer of the change.
    pub origin: String,
    /// The winner before.
    pub old: Option<VersionInfo>,
    /// The winner after (a deletion shows as a version with `deleted`).
    pub new: Option<VersionInfo>,
}

/// The last event of a watch that ended: why, and where to resume when that makes sense.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Why it ended.
    pub error: String,
    /// Resume from this cursor (absent when resuming cannot help).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// An event of `GET /v1/watch`: its SSE `event:` name is [`WatchEvent::kind`], its `data:` the
/// JSON of what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// `change`: a key changed.
    Change(Box<ChangeEvent>),
    /// `shutdown`: the agent is shutting down; resume from the cursor elsewhere or later.
    Shutdown(StreamEnd),
    /// `closed`: the agent closed the stream to make room for other clients; resume.
    Closed(StreamEnd),
    /// `gap`: the changes after the cursor are no longer kept; read the keys again.
    Gap(StreamEnd),
    /// `error`: the watch failed.
    Error(StreamEnd),
}

/// An SSE event that is not one of [`WatchEvent`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unexpected watch event {kind:?}: {message}")]
pub struct EventError {
    /// The event's name.
    pub kind: String,
    /// What was wrong with it.
    pub message: String,
}

impl WatchEvent {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            WatchEvent::Change(_) => "change",
            WatchEvent::Shutdown(_) => "shutdown",
            WatchEvent::Closed(_) => "closed",
            WatchEvent::Gap(_) => "gap",
            WatchEvent::Error(_) => "error",
        }
    }

    /// The SSE `data:` (JSON).
    pub fn data(&self) -> String {
        let json = match self {
            WatchEvent::Change(change) => serde_json::to_string(change),
            WatchEvent::Shutdown(end)
            | WatchEvent::Closed(end)
            | WatchEvent::Gap(end)
            | WatchEvent::Error(end) => serde_json::to_string(end),
        };
        // Serializing these plain structs cannot fail.
        json.unwrap_or_default()
    }

    /// Reads an event from its SSE name and data.
    ///
    /// # Errors
    ///
    /// [`EventError`] for an unknown name or data that does not fit it.
    pub fn parse(kind: &str, data: &str) -> Result<WatchEvent, EventError> {
        let fail = |e: serde_json::Error| EventError {
            kind: kind.to_string(),
            message: e.to_string(),
        };
        let end = || serde_json::from_str::<StreamEnd>(data).map_err(fail);
        Ok(match kind {
            "change" => WatchEvent::Change(Box::new(serde_json::from_str(data).map_err(fail)?)),
            "shutdown" => WatchEvent::Shutdown(end()?),
            "closed" => WatchEvent::Closed(end()?),
            "gap" => WatchEvent::Gap(end()?),
            "error" => WatchEvent::Error(end()?),
            other => {
                return Err(EventError {
                    kind: other.to_string(),
                    message: "not an event this API sends".to_string(),
                });
            }
        })
    }
}

/// A member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStateText {
    /// Alive.
    Alive,
    /// Failed (or unreachable).
    Down,
    /// Left the cluster.
    Left,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its gossip (QUIC) address.
    pub addr: String,
    /// Its writer id.
    pub writer: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Alive, down or left.
    pub state: MemberStateText,
    /// The newest protocol version it advertises (1 from agents that predate the field).
    #[serde(default = "protocol_1")]
    pub protocol: u8,
    /// Its age recipient (`age1…`), which keys of secret prefixes it may read are sealed to;
    /// absent until its member record arrives, or from builds that predate secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

/// `GET /v1/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// Every member this node knows of, itself included.
    pub members: Vec<MemberInfo>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always `ok` when the agent answers.
    pub status: String,
    /// Whether the node is part of a cluster.
    pub joined: bool,
    /// Other members alive.
    pub peers: usize,
    /// Application keys held.
    pub keys: usize,
    /// Milliseconds since a peer was last found in sync (`None`: never).
    pub last_sync_ms_ago: Option<u64>,
    /// The lag of the last change from another node, ms (`None`: none arrived yet).
    pub replication_lag_ms: Option<u64>,
    /// The protocol version the whole cluster speaks: the oldest any alive member advertises
    /// (1 from agents that predate the field).
    #[serde(default = "protocol_1")]
    pub protocol: u8,
    /// Alive members that advertise an older protocol than this node's (a rolling upgrade
    /// is not finished while any are listed; empty from agents that predate the field).
    #[serde(default)]
    pub held_back_by: Vec<String>,
    /// Whether the node holds a policy root (`confmesh acl init`): then nothing is allowed
    /// that no grant allows; without one every certified node may write every key (false
    /// from agents that predate the field).
    #[serde(default)]
    pub policy_root: bool,
}

/// `GET /v1/trust`: what this node trusts (docs/PROTOCOL.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustResponse {
    /// What the node does with unsigned versions from peers: `enforcing` or `permissive`.
    pub mode: String,
    /// Stored versions without a signature (legacy writers', from protocol 2). Switch a
    /// cluster to enforcing once this is 0 on every node; `confmesh trust resign` gets it
    /// there.
    pub unsigned_versions: usize,
    /// Writers whose endorsement the replica holds.
    pub endorsed_writers: usize,
    /// Writers convicted of signing two versions with one id, with the sequence number.
    pub equivocated: Vec<Equivocated>,
}

/// A writer convicted of equivocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equivocated {
    /// The writer (16 hex digits).
    pub writer: String,
    /// The sequence number it signed two versions for; its versions from there are refused.
    pub seq: u64,
}

/// `POST /v1/trust/resign`: what was replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResignResponse {
    /// Application keys written again, signed, with the value reads showed.
    pub rewritten: usize,
    /// Keys that held concurrent siblings, now one version: the value reads showed.
    pub siblings_resolved: Vec<String>,
    /// Legacy writers' member records deleted.
    pub records_retired: Vec<String>,
    /// Reserved keys holding unsigned versions no node may replace.
    pub left: Vec<String>,
}

/// What an agent that does not report a protocol version speaks.
fn protocol_1() -> u8 {
    1
}

/// Every error's body: `{"error": "..."}`, with the current version on a 409.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// On a conflict (409): the key's current version, `null` if it has no value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub current: Option<Option<String>>,
}

impl ErrorBody {
    /// An error without a current version.
    pub fn new(error: impl std::fmt::Display) -> ErrorBody {
        ErrorBody {
            error: error.to_string(),
            current: None,
        }
    }
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(value: Option<&str>) -> VersionInfo {
        VersionInfo {
            version: "00000000000000ff-3".into(),
            writer: "00000000000000ff".into(),
            time_ms: 7,
            deleted: value.is_none(),
            value: value.map(String::from),
            value_base64: value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            signed: true,
            author: None,
            message: None,
            sealed: None,
        }
    }

    #[test]
    fn audit_fields_appear_only_when_given_and_old_bodies_still_parse() {
        let mut with = info(Some("v"));
        with.author = Some("alice".into());
        with.message = Some("why".into());
        let value = serde_json::to_value(&with).unwrap_or_default();
        assert_eq!(value["author"], "alice");
        assert_eq!(value["message"], "why");
        // A body from an agent before signed versions: no `signed`, no audit fields.
        let old: VersionInfo = serde_json::from_value(json!({
            "version": "00000000000000ff-3", "writer": "00000000000000ff",
            "time_ms": 7, "deleted": false, "value": "v", "value_base64": "dg==",
        }))
        .expect("parses");
        assert!(!old.signed && old.author.is_none());
    }

    /// The wire contract clients in other languages rely on: field names and shapes.
    #[test]
    fn bodies_keep_their_json_shape() {
        let get = GetResponse {
            key: "a".into(),
            winner: info(Some("v")),
            siblings: vec![info(None)],
        };
        assert_eq!(
            serde_json::to_value(&get).ok(),
            Some(json!({
                "key": "a", "version": "00000000000000ff-3", "writer": "00000000000000ff",
                "time_ms": 7, "deleted": false, "value": "v", "value_base64": "dg==",
                "signed": true,
                "siblings": [{
                    "version": "00000000000000ff-3", "writer": "00000000000000ff",
                    "time_ms": 7, "deleted": true, "value": null, "value_base64": null,
                    "signed": true,
                }],
            }))
        );
        let conflict = ErrorBody {
            error: "conflict".into(),
            current: Some(None),
        };
        let text = serde_json::to_string(&conflict).unwrap_or_default();
        assert_eq!(text, r#"{"error":"conflict","current":null}"#);
        assert_eq!(
            serde_json::from_str::<ErrorBody>(&text).ok(),
            Some(conflict)
        );
        let plain = serde_json::to_string(&ErrorBody::new("no")).unwrap_or_default();
        assert_eq!(plain, r#"{"error":"no"}"#);
        assert_eq!(
            serde_json::from_str::<ErrorBody>(&plain)
                .map(|b| b.current)
                .ok(),
            Some(None)
        );
    }

    #[test]
    fn watch_events_round_trip_and_unknown_ones_are_refused() {
        let events = [
            WatchEvent::Change(Box::new(ChangeEvent {
                key: "k".into(),
                cursor: "c".into(),
                origin: "o".into(),
                old: None,
                new: Some(info(Some("x"))),
            })),
            WatchEvent::Shutdown(StreamEnd {
                error: "bye".into(),
                cursor: Some("c".into()),
            }),
            WatchEvent::Gap(StreamEnd {
                error: "gone".into(),
                cursor: None,
            }),
        ];
        for event in events {
            let back = WatchEvent::parse(event.kind(), &event.data()).ok();
            assert_eq!(back, Some(event));
        }
        assert!(WatchEvent::parse("nonsense", "{}").is_err());
        assert!(WatchEvent::parse("change", "{\"key\":1}").is_err());
    }

    /// A new client reads an agent of the previous release (during a rolling upgrade).
    #[test]
    fn answers_of_an_agent_without_protocol_fields_still_read() {
        let health: HealthResponse = serde_json::from_str(
            r#"{"status":"ok","joined":true,"peers":2,"keys":3,"last_sync_ms_ago":null,"replication_lag_ms":7}"#,
        )
        .expect("health of a previous agent");
        assert_eq!((health.protocol, health.held_back_by.len()), (1, 0));
        let members: MembersResponse = serde_json::from_str(
            r#"{"members":[{"name":"a","addr":"127.0.0.1:1","writer":"00000000000000ff","tags":{},"state":"alive"}]}"#,
        )
        .expect("members of a previous agent");
        assert_eq!(members.members[0].protocol, 1);
    }

    #[test]
    fn values_come_back_as_bytes() {
        assert_eq!(info(Some("héllo")).bytes(), "héllo".as_bytes());
        let binary = VersionInfo {
            value: None,
            value_base64: Some("AP8=".into()),
            ..info(None)
        };
        assert_eq!(binary.bytes(), [0, 255]);
    }
}

/// A version vector as the API shows it: writer (16 hex digits) to sequence number.
pub type ClockText = BTreeMap<String, u64>;

/// A version vector in the API's form.
pub fn clock_text(clock: &crate::proto::VClock) -> ClockText {
    clock
        .dots
        .iter()
        .map(|(&writer, &seq)| (writer_text(writer), seq))
        .collect()
}

/// Reads a version vector in the API's form.
///
/// # Errors
///
/// The writer that is not 16 hex digits.
pub fn parse_clock(text: &ClockText) -> Result<crate::proto::VClock, String> {
    let mut clock = crate::proto::VClock::new();
    for (writer, &seq) in text {
        let id = (writer.len() == 16)
            .then(|| u64::from_str_radix(writer, 16).ok())
            .flatten()
            .ok_or_else(|| format!("{writer:?} is not a writer (16 hex digits)"))?;
        clock.dots.insert(WriterId(id), seq);
    }
    Ok(clock)
}

/// `GET /v1/acl`: the policy this node holds (docs/PROTOCOL.md §8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclResponse {
    /// Whether a policy root is held: then nothing is allowed that no grant allows. Without
    /// one, every certified node may write every key.
    pub rooted: bool,
    /// The protocol the cluster speaks (policy entries need 4 on every member).
    pub protocol: u8,
    /// The policy context a new entry is proved in, with its key, payload and author.
    pub context: ClockText,
    /// The key the next entry written through this node takes: what its proof signs.
    pub next_key: String,
    /// This node's version vector: the cutoff of a root or a revocation made through it.
    pub version_vector: ClockText,
    /// The entries granted here, oldest writer first.
    pub entries: Vec<AclEntry>,
    /// Versions this node masked since it started.
    pub masked: u64,
    /// Versions waiting for the policy their context names.
    pub waiting: usize,
    /// The API tokens the policy holds (docs/PROTOCOL.md §8.7); their rights are the entries
    /// that name them.
    #[serde(default)]
    pub tokens: Vec<AclToken>,
    /// The generations of secret prefixes' keys (docs/PROTOCOL.md §9.4).
    #[serde(default)]
    pub keyrings: Vec<AclKeyring>,
    /// The age recipient of every node known, by its principal (`node:<name>`): whom a
    /// secret prefix's key can be sealed to (§9.2).
    #[serde(default)]
    pub recipients: BTreeMap<String, String>,
    /// The principal of the node answering, if its certificate names one: a keyring entry
    /// written through it must name it among its readers.
    #[serde(default)]
    pub node: Option<String>,
}

/// One generation of a secret prefix's key: never its private key, only to whom it is
/// sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclKeyring {
    /// Its name, `<writer>-<n>`: what sealed values name.
    pub generation: String,
    /// The secret prefix.
    pub prefix: String,
    /// The nodes that can open it (`node:<name>`).
    pub readers: Vec<String>,
    /// Its public key (`age1…`).
    pub recipient: String,
    /// Whether new values are sealed to it.
    pub current: bool,
    /// The admin who made it.
    pub author: String,
}

/// An API token of the policy: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    /// `token:<id>`.
    pub principal: String,
    /// Its name.
    pub name: String,
    /// When agents start refusing it (Unix ms); `None`: never.
    pub expires_ms: Option<u64>,
    /// Whether it still counts (not revoked, its maker's authority standing).
    pub live: bool,
    /// The admin who made it.
    pub author: String,
}

/// One policy entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Its version (`<writer hex>-<sequence>`).
    pub version: String,
    /// The admin who made it.
    pub author: String,
    /// What it says (`grant node:n1 write over "billing/"`).
    pub rule: String,
}

/// `POST /v1/acl`: a policy entry an admin proved (docs/PROTOCOL.md §8.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRequest {
    /// The entry's key (`next_key` from `GET /v1/acl`): the proof signs it.
    pub key: String,
    /// The entry's payload, the encoded rule, base64: the bytes the proof signs.
    pub payload: String,
    /// The admin (`admin:NAME`).
    pub author: String,
    /// Why, shown in history and audit.
    #[serde(default)]
    pub message: Option<String>,
    /// The context the proof was made in (from `GET /v1/acl`).
    pub context: ClockText,
    /// The admin key's Ed25519 signature, base64.
    pub signature: String,
    /// The admin certificate (DER), base64.
    pub certificate: String,
}

/// What `POST /v1/acl` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclWritten {
    /// The entry's version.
    pub version: String,
    /// The entry's key.
    pub key: String,
}
