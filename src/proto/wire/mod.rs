//! The bytes nodes exchange: every message type, and its limited, versioned codec.
//!
//! An encoded message is one format-version byte ([`Format`]) followed by the bincode 2
//! encoding (standard configuration: little-endian, varint integers) of a [`Message`]; a
//! message of format 3 ([`Format::Sealed`]) then carries the [`Seal`] of each of its versions,
//! in order (docs/PROTOCOL.md §5 and §7.3).
//!
//! Bytes from the network are untrusted. [`decode`] refuses input longer than the caller's
//! limit, and runs bincode with a byte limit proportional to the input's length, so a length
//! field that claims gigabytes is refused before anything is allocated. No input
//! panics the decoder; decoded keys and sequence ranges are validated on the way in.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    ids::Dot,
    store::{Delta, Digest, Grounds, Seal, Snapshot, SnapshotRef, Version},
};

/// The format of protocol 1 and 2's messages: a message's first byte is its format, the
/// oldest protocol version that can read it. A message with a first byte this build does not
/// know is refused with [`DecodeError::UnknownVersion`]. A later message kind or layout a
/// protocol adds is written with that protocol's number, and sent only once the cluster speaks
/// it (docs/PROTOCOL.md, "Versions and upgrades").
pub const FORMAT_VERSION: u8 = 1;

/// The format of protocol 3's messages that carry signed versions: format 1's body, then the
/// seals of its versions.
pub const SEALED_FORMAT_VERSION: u8 = 3;

/// The format of protocol 4's messages that carry a version with [`Grounds`]: format 3's
/// body, then the grounds of each version (or none), in order.
pub const GROUNDED_FORMAT_VERSION: u8 = 4;

/// The layouts a message is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Format 1: versions without their seals. What nodes of protocol 1 and 2 read.
    Plain,
    /// Format 3: format 1's body, then each version's [`Seal`] (or none), in the order the
    /// versions appear. Sent only while the cluster speaks protocol 3. A message asked for in
    /// this format is written in format 4 if one of its versions carries grounds.
    Sealed,
    /// Format 4: format 3's body, then each version's [`Grounds`] (or none), in order.
    /// Written only for a message one of whose versions carries grounds, which exist only
    /// while the cluster speaks protocol 4.
    Grounded,
}

impl Format {
    /// Its first byte.
    pub fn byte(self) -> u8 {
        match self {
            Format::Plain => FORMAT_VERSION,
            Format::Sealed => SEALED_FORMAT_VERSION,
            Format::Grounded => GROUNDED_FORMAT_VERSION,
        }
    }

    /// The format `versions` are written in when asked for `self`: format 3 becomes 4 when
    /// one of them carries grounds (format 1 drops seals and grounds alike).
    fn for_versions<'a>(self, mut versions: impl Iterator<Item = &'a Version>) -> Format {
        match self {
            Format::Sealed if versions.any(|v| grounds_of(v).is_some()) => Format::Grounded,
            other => other,
        }
    }
}

fn grounds_of(version: &Version) -> Option<&Grounds> {
    version.seal.as_deref().and_then(|s| s.grounds.as_deref())
}

/// The newest protocol version this build speaks: what it advertises, in its QUIC ALPN
/// (`confmesh/2`) and its member record.
///
/// - 1: the protocol until member records carried a version.
/// - 2: member records carry the protocol version; connections offer every version spoken.
/// - 3: versions are signed by their writers and carry audit fields (format 3 messages).
/// - 4: versions may carry grounds: a policy context and an author's proof (format 4
///   messages, docs/PROTOCOL.md §8).
/// - 5: policy entries may be keyring entries, which make secret prefixes (docs/PROTOCOL.md
///   §9); messages are protocol 4's.
pub const PROTOCOL_VERSION: u8 = 5;

/// The protocol from which a cluster may hold keyring entries ([`PROTOCOL_VERSION`] 5): an
/// older node cannot decode one, so none is written while one is a member.
pub const SECRETS_PROTOCOL_VERSION: u8 = 5;

/// The oldest protocol version this build still speaks (accepts in the ALPN, reads in member
/// records): a cluster can be upgraded from it one node at a time.
pub const OLDEST_PROTOCOL_VERSION: u8 = 1;

/// The largest datagram confmesh sends: under QUIC's smallest datagram budget (1162 bytes at
/// connection start with the default initial MTU of 1200).
pub const MAX_DATAGRAM_BYTES: usize = 1150;

/// The largest message anyone may encode or decode, whatever the configured limits: 32 MiB.
/// Snapshots larger than that travel as several chunks.
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Every message nodes exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A SWIM packet for the membership layer (foca), carried opaquely; foca decodes it with
    /// its own limited codec. Sent as a datagram.
    Membership(Bytes),
    /// Membership push-pull: the sender's whole member list (bincode of foca members, decoded
    /// with a limit). Sent on a stream; unless it is a reply, the receiver answers with its own.
    MembershipState {
        /// The encoded member list.
        members: Bytes,
        /// Whether this answers a push.
        reply: bool,
    },
    /// New versions pushed along the eager dissemination tree. The receiver forwards the ones
    /// new to it to its own eager peers, and prunes the sender if all were duplicates.
    Push {
        /// The versions, each new to the sender when it forwarded them.
        versions: Vec<Version>,
    },
    /// Lazy notice: the sender holds these versions. A receiver that lacks one past a short
    /// timeout sends [`Message::Graft`].
    IHave {
        /// Dots of the versions announced.
        dots: Vec<Dot>,
    },
    /// Asks the receiver for these versions and to make the sender an eager peer again.
    Graft {
        /// Dots of the versions wanted.
        dots: Vec<Dot>,
    },
    /// Asks the receiver to stop pushing eagerly to the sender (it got duplicates).
    Prune,
    /// Anti-entropy opening: a hash of the sender's digest. A receiver whose digest hashes the
    /// same is in sync; one whose does not answers with [`Message::SyncRequest`].
    SyncProbe {
        /// Hash of the sender's digest ([`Digest::fingerprint`]).
        hash: u64,
        /// Order-independent hash of the sender's active member set. A receiver whose set
        /// hashes differently starts a membership push-pull.
        members: u64,
    },
    /// Anti-entropy: the sender's digest, asking for what it lacks. It is also a report of what
    /// the sender has seen, for garbage collection.
    SyncRequest {
        /// What the sender has seen.
        digest: Digest,
    },
    /// Anti-entropy answer: what the requester lacks.
    SyncDelta(Delta),
    /// Anti-entropy answer to a requester behind the collection floor: one snapshot chunk.
    SyncSnapshot(Snapshot),
}

/// Why bytes are not a valid message. The bytes are dropped; nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// The first byte is not a [`Format`] this build reads.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The message is longer than the limit for its channel.
    #[error("message is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Length of the refused message.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The body is not a valid encoding of a [`Message`].
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message is followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// The message cannot be rewritten for a peer of an older protocol: only peers of this
    /// protocol version or newer can read it.
    #[error("the message needs a peer of protocol {0} or newer")]
    NeedsProtocol(u8),
}

/// Why a message could not be encoded. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoding is longer than the limit given.
    #[error("message encodes to {len} bytes, the limit is {max}")]
    TooLarge {
        /// Length of the encoding.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// bincode refused the value.
    #[error("cannot encode message: {0}")]
    Bincode(String),
}

/// Encodes `message` in format 1 ([`Format::Plain`]: versions without their seals), refusing
/// encodings over `max_len` bytes (capped at [`MAX_MESSAGE_BYTES`]).
///
/// # Errors
///
/// [`EncodeError::TooLarge`] when the encoding is longer than the limit.
pub fn encode(message: &Message, max_len: usize) -> Result<Bytes, EncodeError> {
    encode_as(message, Format::Plain, max_len)
}

/// Encodes `message` in `format`, refusing encodings over `max_len` bytes (capped at
/// [`MAX_MESSAGE_BYTES`]).
///
/// # Errors
///
/// [`EncodeError::TooLarge`] when the encoding is longer than the limit.
pub fn encode_as(message: &Message, format: Format, max_len: usize) -> Result<Bytes, EncodeError> {
    let format = format.for_versions(message.versions());
    encode_with(message, format, message.versions(), 64, max_len)
}

/// Encodes `chunk` exactly as [`encode_as`] encodes `Message::SyncSnapshot(chunk.to_owned())`,
/// without cloning the versions: the catch-up path for a large replica.
///
/// # Errors
///
/// [`EncodeError::TooLarge`] when the encoding is longer than the limit.
pub fn encode_snapshot(
    chunk: &SnapshotRef<'_>,
    format: Format,
    max_len: usize,
) -> Result<Bytes, EncodeError> {
    /// `Message::SyncSnapshot`, borrowed. The index must match the variant's position.
    struct SyncSnapshotRef<'a, 'b>(&'a SnapshotRef<'b>);
    impl Serialize for SyncSnapshotRef<'_, '_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_newtype_variant(
                "Message",
                SYNC_SNAPSHOT_VARIANT,
                "SyncSnapshot",
                self.0,
            )
        }
    }
    let format = format.for_versions(chunk.versions.iter().copied());
    encode_with(
        &SyncSnapshotRef(chunk),
        format,
        chunk.versions.iter().copied(),
        chunk.approx_encoded_len(),
        max_len,
    )
}

/// The position of `Message::SyncSnapshot` in the enum (a test checks it).
const SYNC_SNAPSHOT_VARIANT: u32 = 9;

/// Writes the format byte, `value`, and the trailers of `format`: for format 3 and 4 the
/// seals of `versions` (the versions `value` carries, in order), for format 4 their grounds.
fn encode_with<'a, T: Serialize>(
    value: &T,
    format: Format,
    versions: impl Iterator<Item = &'a Version> + Clone,
    size_hint: usize,
    max_len: usize,
) -> Result<Bytes, EncodeError> {
    let max = max_len.min(MAX_MESSAGE_BYTES);
    let config = bincode::config::standard();
    let mut out = Vec::with_capacity(size_hint.min(max).saturating_add(1));
    out.push(format.byte());
    let bincode_error = |e: bincode::error::EncodeError| EncodeError::Bincode(e.to_string());
    bincode::serde::encode_into_std_write(value, &mut out, config).map_err(bincode_error)?;
    if format != Format::Plain {
        let seals: Vec<Option<&Seal>> = versions.clone().map(|v| v.seal.as_deref()).collect();
        bincode::serde::encode_into_std_write(&seals, &mut out, config).map_err(bincode_error)?;
    }
    if format == Format::Grounded {
        let grounds: Vec<Option<&Grounds>> = versions.map(grounds_of).collect();
        bincode::serde::encode_into_std_write(&grounds, &mut out, config).map_err(bincode_error)?;
    }
    if out.len() > max {
        return Err(EncodeError::TooLarge {
            len: out.len(),
            max,
        });
    }
    Ok(Bytes::from(out))
}

impl Message {
    /// The versions the message carries, in the order they are encoded.
    pub fn versions(&self) -> std::slice::Iter<'_, Version> {
        let versions: &[Version] = match self {
            Message::Push { versions } => versions,
            Message::SyncDelta(delta) => &delta.versions,
            Message::SyncSnapshot(snapshot) => &snapshot.versions,
            _ => &[],
        };
        versions.iter()
    }

    fn versions_mut(&mut self) -> impl Iterator<Item = &mut Version> {
        let versions: &mut [Version] = match self {
            Message::Push { versions } => versions,
            Message::SyncDelta(delta) => &mut delta.versions,
            Message::SyncSnapshot(snapshot) => &mut snapshot.versions,
            _ => &mut [],
        };
        versions.iter_mut()
    }

    /// A short name for the message's kind (`"membership"`, `"sync_probe"`, ...), for
    /// accounting traffic by kind (the simulator's idle breakdown uses it).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Membership(_) => "membership",
            Message::MembershipState { .. } => "membership_state",
            Message::Push { .. } => "push",
            Message::IHave { .. } => "ihave",
            Message::Graft { .. } => "graft",
            Message::Prune => "prune",
            Message::SyncProbe { .. } => "sync_probe",
            Message::SyncRequest { .. } => "sync_request",
            Message::SyncDelta(_) => "sync_delta",
            Message::SyncSnapshot(_) => "sync_snapshot",
        }
    }
}

/// Rewrites a message for a peer of an older `protocol`: for protocol 1 or 2 a message of
/// format 3 as format 1 (its versions without their seals); any message a peer of `protocol`
/// reads, unchanged.
///
/// # Errors
///
/// [`DecodeError`] if `bytes` is not a message this build wrote, and
/// [`DecodeError::NeedsProtocol`] for a message of format 4 to a peer of protocol 3 or older:
/// its versions' grounds are under their signatures, so no older form of them verifies, and
/// such versions exist only once every member speaks protocol 4 (docs/PROTOCOL.md §6).
pub fn downgrade(bytes: Bytes, protocol: u8) -> Result<Bytes, DecodeError> {
    match bytes.first() {
        Some(&GROUNDED_FORMAT_VERSION) if protocol < GROUNDED_FORMAT_VERSION => {
            Err(DecodeError::NeedsProtocol(GROUNDED_FORMAT_VERSION))
        }
        Some(&SEALED_FORMAT_VERSION) if protocol < SEALED_FORMAT_VERSION => {
            let message = decode(&bytes, MAX_MESSAGE_BYTES)?;
            encode(&message, MAX_MESSAGE_BYTES).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
        _ => Ok(bytes),
    }
}

/// Gives each version its grounds, in order. Grounds are refused on an unsigned version, an
/// empty one (no grounds are written as none), and in a message where no version has any
/// (format 3's form): one message, one encoding.
fn attach_grounds<'a>(
    versions: impl Iterator<Item = &'a mut Version>,
    grounds: Vec<Option<Grounds>>,
) -> Result<(), DecodeError> {
    let malformed = |what: &str| Err(DecodeError::Malformed(what.into()));
    if grounds.iter().all(Option::is_none) {
        return malformed("a message of format 4 whose versions carry no grounds");
    }
    for (version, grounds) in versions.zip(grounds) {
        let Some(grounds) = grounds else { continue };
        if grounds.is_empty() {
            return malformed("empty grounds");
        }
        match version.seal.as_mut() {
            Some(seal) => seal.grounds = Some(Box::new(grounds)),
            None => return malformed("grounds on an unsigned version"),
        }
    }
    Ok(())
}

/// Decodes one message of at most `max_len` bytes (capped at [`MAX_MESSAGE_BYTES`]).
///
/// Use [`MAX_DATAGRAM_BYTES`] for datagrams and the configured stream limit for streams.
///
/// # Errors
///
/// [`DecodeError`] says why the bytes are refused. No input panics, and no input makes the
/// decoder allocate more for strings and byte buffers than 8 times its length rounded up to
/// the next of 4, 16, 64 or 256 KiB, 1, 4 or 16 MiB, or [`MAX_MESSAGE_BYTES`] (so a 30-byte
/// message claiming a terabyte allocates at most 32 KiB).
pub fn decode(bytes: &[u8], max_len: usize) -> Result<Message, DecodeError> {
    let max = max_len.min(MAX_MESSAGE_BYTES);
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let format = match version {
        FORMAT_VERSION => Format::Plain,
        SEALED_FORMAT_VERSION => Format::Sealed,
        GROUNDED_FORMAT_VERSION => Format::Grounded,
        other => return Err(DecodeError::UnknownVersion(other)),
    };
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (mut message, mut used) = decode_limited::<Message>(body)?;
    let count = message.versions().count();
    if format != Format::Plain {
        let (seals, more) = decode_limited::<Vec<Option<Seal>>>(&body[used..])?;
        used += more;
        if seals.len() != count {
            return Err(DecodeError::Malformed(format!(
                "{} seals for {count} versions",
                seals.len()
            )));
        }
        for (version, seal) in message.versions_mut().zip(seals) {
            version.seal = seal.map(Box::new);
        }
    }
    if format == Format::Grounded {
        let (grounds, more) = decode_limited::<Vec<Option<Grounds>>>(&body[used..])?;
        used += more;
        if grounds.len() != count {
            return Err(DecodeError::Malformed(format!(
                "{} grounds for {count} versions",
                grounds.len()
            )));
        }
        attach_grounds(message.versions_mut(), grounds)?;
    }
    if used != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    Ok(message)
}

/// bincode-decodes `T` with a byte limit chosen from the input's length.
///
/// bincode charges the limit for every string and buffer it allocates (one byte per byte,
/// before reading them) and for every integer at its in-memory width: a varint `u64` is one
/// byte on the wire and claims eight. So a valid encoding claims at most [`CLAIM_PER_BYTE`]
/// times its length, and each tier's limit is that multiple of the tier's largest input.
pub(crate) fn decode_limited<'de, T: Deserialize<'de>>(
    body: &'de [u8],
) -> Result<(T, usize), DecodeError> {
    fn run<'de, T: Deserialize<'de>, const LIMIT: usize>(
        body: &'de [u8],
    ) -> Result<(T, usize), DecodeError> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        bincode::serde::borrow_decode_from_slice(body, config)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
    }
    macro_rules! tiers {
        ($($bound:expr),*) => {
            match body.len() {
                $(len if len <= $bound => run::<T, { CLAIM_PER_BYTE * $bound }>(body),)*
                len => Err(DecodeError::TooLarge { len, max: MAX_MESSAGE_BYTES }),
            }
        };
    }
    tiers!(
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
        4 << 20,
        16 << 20,
        MAX_MESSAGE_BYTES
    )
}

/// The most bytes bincode may claim against its limit per byte of valid input.
const CLAIM_PER_BYTE: usize = 8;

#[cfg(test)]
mod tests;
