//! The change log: every change of a key's winner on this node, under a [`Cursor`], and
//! reading it back from a cursor.
//!
//! Storage owns the log: the node task hands out cursors ([`Storage::next_cursor`]), the
//! writer appends [`Change`]s in the commit that makes them true and only then publishes them
//! live, and [`StorageReader::changes_after`] reads them back, telling a trimmed, lost or
//! foreign cursor from a valid one. [`Watch`](crate::runtime::Watch) is built on top of this.

use std::{fmt, str::FromStr};

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::Storage;
use super::{
    CHANGES, META, META_LOG_EPOCHS, META_LOG_ID, META_LOG_TRIMMED, StorageError, StorageReader,
    current, decode_change, read_u64, read_u64s,
};
use crate::proto::{Key, Version, WriterId};

/// A position in one node's change log: resume a [`Watch`](crate::runtime::Watch) from it. Cursors of one node are
/// meaningless on another (and on a node whose data directory was wiped or restored from a
/// backup older than the cursor: [`WatchError::UnknownCursor`](crate::runtime::WatchError::UnknownCursor)). The log id part changes at
/// every start of the node; cursors of earlier starts stay valid.
///
/// Printed and parsed as `<log id in hex>.<sequence number>`, e.g. `6e3f09a2c4b81d77.42`,
/// which is what an HTTP client would keep.
///
/// ```
/// use confmesh::runtime::Cursor;
///
/// let cursor: Cursor = "6e3f09a2c4b81d77.42".parse()?;
/// assert_eq!(cursor.to_string(), "6e3f09a2c4b81d77.42");
/// assert!("42".parse::<Cursor>().is_err());
/// # Ok::<(), confmesh::runtime::CursorParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub(crate) log: u64,
    pub(crate) seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.log, self.seq)
    }
}

/// Why a string is not a [`Cursor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is `<log id in hex>.<sequence number>`")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        let (log, seq) = s.split_once('.').ok_or(CursorParseError)?;
        Ok(Cursor {
            log: u64::from_str_radix(log, 16).map_err(|_| CursorParseError)?,
            seq: seq.parse().map_err(|_| CursorParseError)?,
        })
    }
}

/// One change of a key's winner on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Where this change sits in the node's log; resume after it with
    /// [`Mesh::watch`](crate::runtime::Mesh::watch).
    pub cursor: Cursor,
    /// The key.
    pub key: Key,
    /// The previous winner, `None` if the key was absent or deleted.
    pub old: Option<Version>,
    /// The new winner, `None` if the key is now deleted.
    pub new: Option<Version>,
    /// Who made the change: the writer of the new winner, or of the delete.
    pub origin: WriterId,
}

impl Change {
    /// The previous value, `None` if there was none.
    pub fn old_value(&self) -> Option<&[u8]> {
        self.old
            .as_ref()
            .and_then(|v| v.payload.value())
            .map(|b| &b[..])
    }

    /// The new value, `None` if the key was deleted.
    pub fn new_value(&self) -> Option<&[u8]> {
        self.new
            .as_ref()
            .and_then(|v| v.payload.value())
            .map(|b| &b[..])
    }
}

/// Where a cursor stands in the log.
pub(crate) enum LogPosition {
    /// Entries after the cursor, up to the page size; `complete` when there are no more.
    Entries {
        changes: Vec<Change>,
        complete: bool,
    },
    /// Entries after the cursor were trimmed: the oldest kept is `oldest`.
    Trimmed { oldest: Option<u64> },
    /// The cursor names no change this log holds or held: it comes from a state of the
    /// data directory that is gone.
    Lost,
    /// The cursor names another log (another node, a wiped data directory, or a start of
    /// this one that a restored backup does not know).
    OtherLog,
}

impl StorageReader {
    /// The log id and the highest sequence number logged so far (0 if none).
    pub(crate) fn log_head(&self) -> Result<(u64, u64), StorageError> {
        let read = current(&self.db)?.begin_read()?;
        let meta = read.open_table(META)?;
        let id = meta
            .get(META_LOG_ID)?
            .and_then(|v| read_u64(v.value()))
            .ok_or_else(|| StorageError::Corrupt("log id".into()))?;
        let last = read
            .open_table(CHANGES)?
            .last()?
            .map_or(0, |(seq, _)| seq.value());
        Ok((id, last))
    }

    /// Up to `page` change-log entries after `cursor`, checked against what was trimmed.
    pub(crate) fn changes_after(
        &self,
        cursor: Cursor,
        page: usize,
    ) -> Result<LogPosition, StorageError> {
        let read = current(&self.db)?.begin_read()?;
        let meta = read.open_table(META)?;
        let id = meta.get(META_LOG_ID)?.and_then(|v| read_u64(v.value()));
        if id != Some(cursor.log) {
            // An earlier start's id, and the first number after that start.
            let earlier = meta
                .get(META_LOG_EPOCHS)?
                .and_then(|v| read_u64s(v.value()))
                .and_then(|words| {
                    words
                        .chunks_exact(2)
                        .find(|pair| pair[0] == cursor.log)
                        .map(|pair| pair[1])
                });
            match earlier {
                None => return Ok(LogPosition::OtherLog),
                Some(end) if cursor.seq >= end => return Ok(LogPosition::Lost),
                Some(_) => {}
            }
        }
        let trimmed = meta
            .get(META_LOG_TRIMMED)?
            .and_then(|v| read_u64(v.value()))
            .unwrap_or(0);
        let table = read.open_table(CHANGES)?;
        if cursor.seq < trimmed {
            let oldest = table.first()?.map(|(seq, _)| seq.value());
            return Ok(LogPosition::Trimmed { oldest });
        }
        // Every cursor handed out names an entry (or 0, before any): those after the trim
        // point are all kept, so a cursor naming none was handed out by a state of this
        // directory that is gone (restored from an older backup, or lost in a crash).
        if cursor.seq != 0 && cursor.seq != trimmed && table.get(cursor.seq)?.is_none() {
            return Ok(LogPosition::Lost);
        }
        let mut changes = Vec::new();
        for row in table.range(cursor.seq.saturating_add(1)..)? {
            if changes.len() == page {
                return Ok(LogPosition::Entries {
                    changes,
                    complete: false,
                });
            }
            let (_, bytes) = row?;
            changes.push(decode_change(bytes.value())?);
        }
        Ok(LogPosition::Entries {
            changes,
            complete: true,
        })
    }
}
