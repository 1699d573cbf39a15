//! What the core knows of sealed values (docs/PROTOCOL.md §9.5): only how one names the
//! keyring generation that opens it. The core never decrypts; judging whether a version under
//! a secret prefix is sealed reads this name ([`generation_of`]) and nothing else. The
//! cryptography is the runtime's (`runtime::secrets`, age).

use crate::proto::WriterId;

/// The tag of the header stanza that names a sealed value's keyring generation.
pub const GENERATION_TAG: &str = "confmesh-keyring";

/// The first line of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// How far into a sealed value [`generation_of`] looks: an age header of one X25519
/// recipient and the generation stanza takes about 250 bytes.
pub const HEADER_SCAN_BYTES: usize = 1_024;

/// The longest generation name: `<writer id, 16 hex digits>-<position>`.
pub const MAX_GENERATION_BYTES: usize = 40;

/// The name of the generation a keyring entry at `(writer, position)` makes:
/// `<writer id, 16 hex digits>-<position>`, the tail of the entry's key.
pub fn generation_name(writer: WriterId, position: u64) -> String {
    format!("{:016x}-{position}", writer.0)
}

/// Whether `name` could name a generation: 1 to [`MAX_GENERATION_BYTES`] letters, digits and
/// `-` (what an age stanza argument may hold, and no more).
pub fn is_generation_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GENERATION_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The generation a sealed value names, read from its header's first [`HEADER_SCAN_BYTES`]
/// (the first `-> confmesh-keyring <name>` line); `None` for bytes that are not an age file
/// naming one.
pub fn generation_of(sealed: &[u8]) -> Option<&str> {
    let header = &sealed[..sealed.len().min(HEADER_SCAN_BYTES)];
    if !header.starts_with(AGE_MAGIC) {
        return None;
    }
    let marker = format!("\n-> {GENERATION_TAG} ");
    let at = header
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())?;
    let rest = &header[at + marker.len()..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let name = std::str::from_utf8(&rest[..end]).ok()?;
    is_generation_name(name).then_some(name)
}

/// Whether `text` has the shape of an age X25519 recipient: `age1` and bech32 characters, as
/// long as one (the runtime parses it for real before sealing to it).
pub fn is_recipient_shaped(text: &str) -> bool {
    text.len() == 62
        && text.starts_with("age1")
        && text[4..]
            .bytes()
            .all(|b| b"qpzry9x8gf2tvdw0s3jn54khce6mua7l".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_read_from_the_header_only() {
        let value = b"age-encryption.org/v1\n-> X25519 abc\nbody\n-> confmesh-keyring 00000000000000ab-3\n\n--- mac\npayload";
        assert_eq!(generation_of(value), Some("00000000000000ab-3"));
        assert_eq!(generation_of(&value[1..]), None, "not an age file");
        assert_eq!(
            generation_of(b"age-encryption.org/v1\n-> X25519 abc\n"),
            None
        );
        let mut far = AGE_MAGIC.to_vec();
        far.extend_from_slice(&[b'x'; HEADER_SCAN_BYTES]);
        far.extend_from_slice(b"\n-> confmesh-keyring a-1\n");
        assert_eq!(generation_of(&far), None, "past the scanned header");
        assert_eq!(
            generation_of(b"age-encryption.org/v1\n-> confmesh-keyring a b\n"),
            None
        );
        assert_eq!(generation_name(WriterId(0xab), 3), "00000000000000ab-3");
        assert!(!is_recipient_shaped("age1short"));
    }
}
