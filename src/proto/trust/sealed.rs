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

/// What a sealed value's header names: the generation whose key opens it and the key it
/// was sealed for (as [`key_digest`]). The age header's MAC covers both, so neither can be
/// changed without the file key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader<'a> {
    /// The generation, `<writer>-<n>`.
    pub generation: &'a str,
    /// [`key_digest`] of the key it was sealed for.
    pub key_digest: &'a str,
}

/// The digest of a key a sealed value names: the first 16 bytes of its SHA-256, in hex. A
/// value sealed for one key is refused under any other, so a reader's agent never opens,
/// for a caller who may read one key, what was written under another.
pub fn key_digest(key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The header of a sealed value, read from its first [`HEADER_SCAN_BYTES`]: an age header
/// with exactly one X25519 recipient, one `-> confmesh-keyring <generation> <key digest>`
/// stanza and at most two others (age adds a "grease" stanza readers skip), ended by its
/// `---` line. `None` for anything else (not age, more recipients: each is work for whoever
/// opens it).
pub fn header_of(sealed: &[u8]) -> Option<SealedHeader<'_>> {
    let scanned = &sealed[..sealed.len().min(HEADER_SCAN_BYTES)];
    if !scanned.starts_with(AGE_MAGIC) {
        return None;
    }
    let end = scanned.windows(5).position(|w| w == b"\n--- ")?;
    let header = std::str::from_utf8(&scanned[AGE_MAGIC.len()..=end]).ok()?;
    let stanzas: Vec<&str> = header
        .lines()
        .filter(|line| line.starts_with("-> "))
        .collect();
    let ours = format!("-> {GENERATION_TAG} ");
    let tags: Vec<&str> = stanzas
        .iter()
        .filter_map(|line| line.strip_prefix(ours.as_str()))
        .collect();
    let x25519 = stanzas
        .iter()
        .filter(|line| line.starts_with("-> X25519 "))
        .count();
    // age adds a random "grease" stanza of a tag nobody knows, which readers skip; more than
    // two such, or another recipient, is not what a node writes.
    let others = stanzas.len() - tags.len() - x25519;
    let ([tag], 1, 0..=2) = (tags.as_slice(), x25519, others) else {
        return None;
    };
    let mut args = tag.split(' ');
    let (Some(generation), Some(key_digest), None) = (args.next(), args.next(), args.next()) else {
        return None;
    };
    let digest_ok = key_digest.len() == 32
        && key_digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_generation_name(generation) && digest_ok).then_some(SealedHeader {
        generation,
        key_digest,
    })
}

/// The generation a sealed value names ([`header_of`]).
pub fn generation_of(sealed: &[u8]) -> Option<&str> {
    header_of(sealed).map(|h| h.generation)
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
    fn a_header_names_a_generation_and_a_key_in_exactly_its_shape() {
        let digest = key_digest("secret/db");
        assert_eq!(digest.len(), 32);
        let value = format!(
            "age-encryption.org/v1\n-> X25519 abc\nbody\n-> confmesh-keyring 00000000000000ab-3 {digest}\n\n--- mac\npayload"
        );
        let header = header_of(value.as_bytes()).expect("a header");
        assert_eq!(header.generation, "00000000000000ab-3");
        assert_eq!(header.key_digest, digest);
        assert_eq!(
            generation_of(&value.as_bytes()[1..]),
            None,
            "not an age file"
        );
        // A third stanza (another recipient), no X25519 one, no end, no digest, a marker in
        // the payload: none is a sealed value.
        for bad in [
            value.replace("body\n", "body\n-> X25519 def\nbody\n"),
            value.replace("body\n", "body\n-> a-grease\n-> b-grease\n-> c-grease\n"),
            value.replace("-> X25519 abc", "-> scrypt abc"),
            value.replace("\n--- mac", ""),
            value.replace(&format!(" {digest}"), ""),
            value.replace(&digest, "XYZ"),
            format!(
                "age-encryption.org/v1\n-> X25519 abc\n--- mac\n-> confmesh-keyring a-1 {digest}\n"
            ),
        ] {
            assert_eq!(header_of(bad.as_bytes()), None, "{bad:?}");
        }
        let mut far = AGE_MAGIC.to_vec();
        far.extend_from_slice(&[b'x'; HEADER_SCAN_BYTES]);
        assert_eq!(generation_of(&far), None, "past the scanned header");
        assert_eq!(generation_name(WriterId(0xab), 3), "00000000000000ab-3");
        assert!(!is_recipient_shaped("age1short"));
    }
}
