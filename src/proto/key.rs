//! Configuration keys: syntax, limits and validation.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A validated configuration key.
///
/// # Syntax
///
/// A key is 1 to [`MAX_KEY_LEN`] bytes of segments separated by `/`. A segment is one or more
/// of the characters `A-Z a-z 0-9 - _ . : @ + = ,` and is neither `.` nor `..`. So a key has
/// no leading, trailing or doubled `/`, no whitespace and no control characters, and can be put
/// into a URL path or a shell command unquoted. Examples: `app/db/url`, `feature-flags/beta.ui`.
///
/// Keys order bytewise, so [`Store::list`](crate::proto::Store::list) with prefix `app/` returns
/// every key under `app/` in that order.
///
/// Cloning a key is cheap (it is reference-counted).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

/// Why a string is not a valid [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    #[error("key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("key is {len} bytes long, the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// The length of the rejected key, in bytes.
        len: usize,
    },
    /// A segment between two `/` is empty, `.` or `..`.
    #[error("key has an empty, `.` or `..` segment at byte {at}")]
    BadSegment {
        /// Byte offset of the segment.
        at: usize,
    },
    /// The key holds a character outside the allowed set.
    #[error(
        "key has the character {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _ . : @ + = , and /"
    )]
    BadCharacter {
        /// The rejected character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

impl Key {
    /// Validates `s` and makes it a key.
    ///
    /// # Errors
    ///
    /// [`KeyError`] names the first rule `s` breaks (see the type's syntax).
    ///
    /// # Examples
    ///
    /// ```
    /// use confmesh::proto::Key;
    /// assert!(Key::new("app/db/url").is_ok());
    /// assert!(Key::new("/app").is_err());
    /// assert!(Key::new("app db").is_err());
    /// ```
    pub fn new(s: &str) -> Result<Key, KeyError> {
        validate(s)?;
        Ok(Key(Arc::from(s)))
    }

    /// A key the caller built from parts that always make a valid key (checked in debug
    /// builds).
    pub(crate) fn from_valid(s: String) -> Key {
        debug_assert!(validate(&s).is_ok(), "not a valid key: {s:?}");
        Key(Arc::from(s))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: s.len() });
    }
    let mut segment_start = 0;
    for (at, ch) in s.char_indices() {
        if ch == '/' {
            check_segment(&s[segment_start..at], segment_start)?;
            segment_start = at + 1;
        } else if !is_key_char(ch) {
            return Err(KeyError::BadCharacter { ch, at });
        }
    }
    check_segment(&s[segment_start..], segment_start)
}

fn check_segment(segment: &str, at: usize) -> Result<(), KeyError> {
    match segment {
        "" | "." | ".." => Err(KeyError::BadSegment { at }),
        _ => Ok(()),
    }
}

fn is_key_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':' | '@' | '+' | '=' | ',')
}

impl TryFrom<&str> for Key {
    type Error = KeyError;
    fn try_from(s: &str) -> Result<Key, KeyError> {
        Key::new(s)
    }
}

/// Keys compare, hash and order exactly as their strings do.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Decoding validates: a key from the network obeys the same syntax as a local one.
impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Builds the key straight from borrowed input where the format allows (one allocation).
struct KeyVisitor;

impl serde::de::Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a configuration key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
        Key::new(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_syntax() {
        for ok in [
            "a",
            "app/db/url",
            "x.y/z-1_2:3@4+5=6,7",
            "..a/b..",
            &"k".repeat(MAX_KEY_LEN),
        ] {
            assert_eq!(Key::new(ok).map(|k| k.to_string()).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn rejects_with_the_broken_rule() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            Key::new(&long),
            Err(KeyError::TooLong {
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(Key::new("/a"), Err(KeyError::BadSegment { at: 0 }));
        assert_eq!(Key::new("a/"), Err(KeyError::BadSegment { at: 2 }));
        assert_eq!(Key::new("a//b"), Err(KeyError::BadSegment { at: 2 }));
        assert_eq!(Key::new("a/../b"), Err(KeyError::BadSegment { at: 2 }));
        assert_eq!(
            Key::new("a b"),
            Err(KeyError::BadCharacter { ch: ' ', at: 1 })
        );
        assert_eq!(
            Key::new("a\nb"),
            Err(KeyError::BadCharacter { ch: '\n', at: 1 })
        );
        assert_eq!(
            Key::new("ключ"),
            Err(KeyError::BadCharacter { ch: 'к', at: 0 })
        );
    }
}
