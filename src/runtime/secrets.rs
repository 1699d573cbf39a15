//! Secrets: the age identity of a node, the keys of secret prefixes, and sealed values
//! (docs/PROTOCOL.md §9).
//!
//! All cryptography is age's (X25519 recipients, ChaCha20-Poly1305 payloads); this module only
//! decides what is sealed to whom and how a sealed value names the key that opens it.
//!
//! - [`NodeIdentity`]: a node's age identity, in its data directory ([`IDENTITY_FILE`], mode
//!   0600), whose recipient the node publishes in its signed member record.
//! - [`PrefixKey`]: the key pair of one generation of a secret prefix. Its private half
//!   travels sealed to the prefix's readers ([`PrefixKey::seal_for`], opened by
//!   [`PrefixKey::open`]); values are sealed to its public half ([`seal_value`]), so a value's
//!   size does not grow with the number of readers.
//! - A sealed value is an age file with one more header stanza,
//!   `-> confmesh-keyring <gen> <key digest>`
//!   ([`GENERATION_TAG`]), naming the generation whose key opens it and the key the value
//!   belongs to ([`header_of`], [`key_digest`]). The
//!   `age` tool ignores the stanza, so `age -d -i <node>/age.key keyring > prefix.key` then
//!   `age -d -i prefix.key value` opens a value by hand.
//!
//! Nothing here logs, and no `Debug` output holds a private key or a plaintext.

use std::{
    collections::HashSet,
    fmt,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
};

use age::{
    Decryptor, Encryptor,
    secrecy::ExposeSecret,
    x25519::{Identity, Recipient},
};
use age_core::format::{FileKey, Stanza};

/// The file, in a node's data directory, that holds its age identity.
pub const IDENTITY_FILE: &str = "age.key";

pub use crate::proto::trust::sealed::{
    GENERATION_TAG, SealedHeader, generation_of, header_of, key_digest,
};

/// The most bytes a keyring's plaintext (one age identity string) may take.
const MAX_KEY_BYTES: u64 = 256;

/// Why a secret could not be sealed, opened or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The identity file could not be read or written.
    #[error("age identity {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The identity file holds no age identity.
    #[error("{} holds no age identity (AGE-SECRET-KEY-1…)", path.display())]
    BadIdentity {
        /// The file.
        path: PathBuf,
    },
    /// A recipient is not an age X25519 recipient (`age1…`).
    #[error("not an age recipient: {0:?}")]
    BadRecipient(String),
    /// A generation name is empty, too long, or holds characters other than letters, digits
    /// and `-`.
    #[error("not a keyring generation name: {0:?}")]
    BadGeneration(String),
    /// A key was to be sealed to nobody.
    #[error("a prefix key must be sealed to at least one reader")]
    NoReaders,
    /// The identity given is not among the ones the input was sealed to.
    #[error("not sealed to this identity")]
    NotARecipient,
    /// A value was sealed for another key than the one it is read under.
    #[error("sealed for another key")]
    WrongKey,
    /// A value names another generation than the key given.
    #[error("sealed under keyring generation {found}, not {expected}")]
    WrongGeneration {
        /// The key's generation.
        expected: String,
        /// The value's, or `none` without a generation stanza.
        found: String,
    },
    /// The input is not a sealed value or keyring: not age, cut short, tampered with, or not
    /// holding an age identity.
    #[error("not a sealed value: {0}")]
    Malformed(String),
}

/// A node's age identity: the private key its prefix keys are sealed to.
pub struct NodeIdentity {
    identity: Identity,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// The identity in `dir`'s [`IDENTITY_FILE`], made there (mode 0600, written to a
    /// temporary file and renamed, so a crash leaves either no file or a whole one) if there
    /// is none.
    ///
    /// # Errors
    ///
    /// [`SecretError::Io`] if the file cannot be read or written, [`SecretError::BadIdentity`]
    /// if it holds something else.
    pub fn load_or_create(dir: &Path) -> Result<NodeIdentity, SecretError> {
        let path = dir.join(IDENTITY_FILE);
        let io_error = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let identity = text
                    .lines()
                    .map(str::trim)
                    .find(|line| !line.is_empty() && !line.starts_with('#'))
                    .and_then(|line| Identity::from_str(line).ok())
                    .ok_or_else(|| SecretError::BadIdentity { path: path.clone() })?;
                Ok(NodeIdentity { identity })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = NodeIdentity::ephemeral();
                let text = format!(
                    "# confmesh node identity (age); recipient: {}\n{}\n",
                    made.recipient(),
                    made.identity.to_string().expose_secret()
                );
                write_private(&path, text.as_bytes()).map_err(io_error)?;
                Ok(made)
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// A new identity kept nowhere: for a node without a data directory, which gets a new
    /// one at each start.
    pub fn ephemeral() -> NodeIdentity {
        NodeIdentity {
            identity: Identity::generate(),
        }
    }

    /// The recipient (`age1…`) that prefix keys are sealed to for this node.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }
}

/// Whether `text` is an age X25519 recipient (`age1…`), the only kind a member record may
/// carry.
pub fn is_recipient(text: &str) -> bool {
    Recipient::from_str(text).is_ok()
}

/// One generation of a secret prefix's key pair.
pub struct PrefixKey {
    generation: String,
    identity: Identity,
}

impl fmt::Debug for PrefixKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixKey")
            .field("generation", &self.generation)
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

impl PrefixKey {
    /// A new key pair for `generation` (its keyring entry's name, `<writer>-<position>`).
    ///
    /// # Errors
    ///
    /// [`SecretError::BadGeneration`] for a name that could not travel in a stanza.
    pub fn generate(generation: &str) -> Result<PrefixKey, SecretError> {
        check_generation(generation)?;
        Ok(PrefixKey {
            generation: generation.to_string(),
            identity: Identity::generate(),
        })
    }

    /// The generation this key belongs to.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// The public half (`age1…`), which writers seal values to.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The private half sealed to `readers` (age recipients): a keyring entry's sealed key.
    /// Its plaintext is the age identity string, so the `age` tool opens it.
    ///
    /// # Errors
    ///
    /// [`SecretError::NoReaders`] for none, [`SecretError::BadRecipient`] for one that is not
    /// an X25519 recipient.
    pub fn seal_for<S: AsRef<str>>(&self, readers: &[S]) -> Result<Vec<u8>, SecretError> {
        if readers.is_empty() {
            return Err(SecretError::NoReaders);
        }
        let recipients = readers
            .iter()
            .map(|r| {
                Recipient::from_str(r.as_ref())
                    .map_err(|_| SecretError::BadRecipient(r.as_ref().to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = self.identity.to_string();
        seal(
            recipients.iter().map(|r| r as &dyn age::Recipient),
            key.expose_secret().as_bytes(),
        )
    }

    /// The key of `generation` that `sealed` (from [`PrefixKey::seal_for`]) holds, opened by
    /// `identity`.
    ///
    /// # Errors
    ///
    /// [`SecretError::NotARecipient`] if `identity` is not among its readers,
    /// [`SecretError::Malformed`] if it is not a sealed key, [`SecretError::BadGeneration`].
    pub fn open(
        identity: &NodeIdentity,
        generation: &str,
        sealed: &[u8],
    ) -> Result<PrefixKey, SecretError> {
        check_generation(generation)?;
        let plain = open(&identity.identity, sealed, MAX_KEY_BYTES)?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| SecretError::Malformed("a keyring holds no age identity".into()))?;
        let key = Identity::from_str(text.trim())
            .map_err(|_| SecretError::Malformed("a keyring holds no age identity".into()))?;
        Ok(PrefixKey {
            generation: generation.to_string(),
            identity: key,
        })
    }

    /// The plaintext of `sealed`, a value of `key` sealed under this generation, at most
    /// `max_bytes`.
    ///
    /// # Errors
    ///
    /// [`SecretError::WrongGeneration`] if it names another generation (or none),
    /// [`SecretError::WrongKey`] if it was sealed for another key, [`SecretError::NotARecipient`]
    /// if this key cannot open it, [`SecretError::Malformed`].
    pub fn open_value(
        &self,
        sealed: &[u8],
        key: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SecretError> {
        match header_of(sealed) {
            Some(found) if found.generation != self.generation => {
                Err(SecretError::WrongGeneration {
                    expected: self.generation.clone(),
                    found: found.generation.to_string(),
                })
            }
            Some(found) if found.key_digest != key_digest(key) => Err(SecretError::WrongKey),
            Some(_) => open(&self.identity, sealed, max_bytes),
            None => Err(SecretError::WrongGeneration {
                expected: self.generation.clone(),
                found: "none".to_string(),
            }),
        }
    }
}

/// `plaintext`, the value of `key`, sealed to a prefix key's public half `recipient`, naming
/// its `generation` and the key (as [`key_digest`]) in a stanza the header's MAC covers.
///
/// # Errors
///
/// [`SecretError::BadRecipient`], [`SecretError::BadGeneration`].
pub fn seal_value(
    recipient: &str,
    generation: &str,
    key: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecretError> {
    check_generation(generation)?;
    let recipient = Recipient::from_str(recipient)
        .map_err(|_| SecretError::BadRecipient(recipient.to_string()))?;
    let tag = GenerationStanza(generation, key_digest(key));
    seal(
        [
            &recipient as &dyn age::Recipient,
            &tag as &dyn age::Recipient,
        ]
        .into_iter(),
        plaintext,
    )
}

/// A stanza that names a generation and a key digest and wraps nothing: age readers skip a
/// stanza of a tag they do not know.
struct GenerationStanza<'a>(&'a str, String);

impl age::Recipient for GenerationStanza<'_> {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let stanza = Stanza {
            tag: GENERATION_TAG.to_string(),
            args: vec![self.0.to_string(), self.1.clone()],
            body: Vec::new(),
        };
        Ok((vec![stanza], HashSet::new()))
    }
}

fn check_generation(generation: &str) -> Result<(), SecretError> {
    crate::proto::trust::sealed::is_generation_name(generation)
        .then_some(())
        .ok_or_else(|| SecretError::BadGeneration(generation.to_string()))
}

fn seal<'a>(
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecretError> {
    let encryptor = Encryptor::with_recipients(recipients)
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
    let mut sealed = Vec::with_capacity(plaintext.len() + 300);
    let io = |e: io::Error| SecretError::Malformed(e.to_string());
    let mut writer = encryptor.wrap_output(&mut sealed).map_err(io)?;
    writer.write_all(plaintext).map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(sealed)
}

fn open(identity: &Identity, sealed: &[u8], max_bytes: u64) -> Result<Vec<u8>, SecretError> {
    let decryptor = Decryptor::new(sealed).map_err(|e| SecretError::Malformed(e.to_string()))?;
    let reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SecretError::NotARecipient,
            other => SecretError::Malformed(other.to_string()),
        })?;
    let mut plain = Vec::new();
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut plain)
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
    if plain.len() as u64 > max_bytes {
        return Err(SecretError::Malformed(format!(
            "the plaintext is longer than {max_bytes} bytes"
        )));
    }
    Ok(plain)
}

/// Opened values by a digest of their sealed form, in memory only (never on disk), so a warm
/// read of a secret costs a hash and a lookup rather than an X25519 and a ChaCha20-Poly1305
/// (docs/PROTOCOL.md §9.6). A sealed value never changes, so an entry is never stale; it is
/// bounded by [`PlaintextCache::MAX_BYTES`], dropping the oldest entries first.
#[derive(Default)]
pub(crate) struct PlaintextCache {
    by_digest: std::collections::HashMap<[u8; 32], bytes::Bytes>,
    order: std::collections::VecDeque<[u8; 32]>,
    bytes: usize,
}

impl fmt::Debug for PlaintextCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the plaintexts.
        f.debug_struct("PlaintextCache")
            .field("values", &self.by_digest.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl PlaintextCache {
    /// The most bytes kept: plaintexts and [`PlaintextCache::ENTRY_OVERHEAD`] per entry.
    pub(crate) const MAX_BYTES: usize = 32 << 20;

    /// What an entry costs beyond its plaintext (digest twice, map and queue slots).
    pub(crate) const ENTRY_OVERHEAD: usize = 128;

    /// The digest a sealed value is kept under.
    pub(crate) fn digest(sealed: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(sealed).into()
    }

    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<bytes::Bytes> {
        self.by_digest.get(digest).cloned()
    }

    pub(crate) fn insert(&mut self, digest: [u8; 32], plain: bytes::Bytes) {
        // Each entry is charged its bookkeeping too, so tiny values do not grow it unbounded.
        let cost = plain.len() + Self::ENTRY_OVERHEAD;
        if cost > Self::MAX_BYTES / 16 || self.by_digest.contains_key(&digest) {
            return;
        }
        while self.bytes + cost > Self::MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_digest.remove(&oldest) {
                self.bytes -= gone.len() + Self::ENTRY_OVERHEAD;
            }
        }
        self.bytes += cost;
        self.order.push_back(digest);
        self.by_digest.insert(digest, plain);
    }
}

/// Writes `bytes` to `path` readable by its owner only: to a temporary file beside it, synced,
/// then renamed over it.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
