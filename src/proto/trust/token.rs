//! API tokens (docs/PROTOCOL.md §8.7): 256 random bits a client presents as a bearer. The mesh
//! holds a token only as a policy entry ([`Rule::Token`](super::policy::Rule::Token)): the
//! SHA-256 of its secret, its id (the first 8 bytes of that hash, in hex: the principal
//! `token:<id>`), a name, an expiry, and the public half of an Ed25519 key derived from the
//! secret (HKDF-SHA-256), which can check a proof made with the token. The secret itself is
//! never stored nor sent to a peer.

use std::fmt;

use ed25519_zebra::{SigningKey, VerificationKey};
use sha2::{Digest as _, Sha256};

use super::policy::{Kind, Principal};

/// How a token's text starts: `cmt_` and 64 lowercase hex digits.
pub const TOKEN_PREFIX: &str = "cmt_";

/// The HKDF info of a token's derived signing key.
const KEY_INFO: &[u8] = b"confmesh token key v1";

/// Why a text is not a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a confmesh token (cmt_ and 64 hex digits)")]
pub struct NotAToken;

/// A token's secret. Its `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret([u8; 32]);

impl TokenSecret {
    /// The token of these 32 bytes (draw them from the OS's random source).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenSecret {
        TokenSecret(bytes)
    }

    /// Reads `cmt_<64 hex digits>` (surrounding whitespace ignored).
    ///
    /// # Errors
    ///
    /// [`NotAToken`].
    pub fn parse(text: &str) -> Result<TokenSecret, NotAToken> {
        let hex = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(NotAToken)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NotAToken);
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| NotAToken)?;
        }
        Ok(TokenSecret(bytes))
    }

    /// The SHA-256 of the secret: what the policy holds.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// Its id: the first 8 bytes of its hash, in hex.
    pub fn id(&self) -> String {
        id_of(&self.hash())
    }

    /// Its principal, `token:<id>`.
    pub fn principal(&self) -> Principal {
        token_principal(&self.id())
    }

    /// The Ed25519 key derived from the secret (HKDF-SHA-256, info `confmesh token key v1`).
    pub fn signing_key(&self) -> SigningKey {
        let mut seed = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's limit of 8,160: expanding cannot fail.
        let _ = hkdf::Hkdf::<Sha256>::new(None, &self.0).expand(KEY_INFO, &mut seed);
        SigningKey::from(seed)
    }

    /// The public half of [`TokenSecret::signing_key`]: what the policy holds.
    pub fn public(&self) -> [u8; 32] {
        VerificationKey::from(&self.signing_key()).into()
    }
}

impl fmt::Display for TokenSecret {
    /// The token's text, `cmt_<64 hex digits>`: show it to its holder only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TOKEN_PREFIX)?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret(token:{})", self.id())
    }
}

/// The id of the token whose secret hashes to `hash`.
pub fn id_of(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The principal of the token `id` (16 hex digits, always a valid name; anything else names
/// a principal no rule can name).
pub fn token_principal(id: &str) -> Principal {
    Principal::one(Kind::Token, id).unwrap_or_else(|_| Principal::nameless_node())
}
