//! Reads from other tasks than the node's: history (and the change log, in [`changes`](super::changes)),
//! served by redb concurrently with the writer.

use redb::ReadableDatabase;

use super::{HISTORY, SharedDatabase, StorageError, VERSIONS, current, decode_version};
use crate::proto::{Key, Version};

/// Read access from other tasks: redb serves readers concurrently with the writer.
#[derive(Clone, Debug)]
pub(crate) struct StorageReader {
    pub(super) db: SharedDatabase,
    pub(super) history_len: usize,
}

impl StorageReader {
    /// The versions of `key` in its history: the superseded ones and the current ones,
    /// oldest first (by the writers' clocks), the last `history_len`.
    pub(crate) fn history(&self, key: &Key) -> Result<Vec<Version>, StorageError> {
        let read = current(&self.db)?.begin_read()?;
        let k = key.as_str();
        let mut out: Vec<Version> = Vec::new();
        for row in read.open_table(HISTORY)?.range((k, 0)..=(k, u64::MAX))? {
            out.push(decode_version(row?.1.value())?);
        }
        for row in read
            .open_table(VERSIONS)?
            .range((k, 0, 0)..=(k, u64::MAX, u64::MAX))?
        {
            out.push(decode_version(row?.1.value())?);
        }
        out.sort_by_key(|v| (v.timestamp, v.dot.actor, v.dot.counter));
        // A version is in both tables only in a database written when the history table also
        // held the current versions.
        out.dedup_by_key(|v| v.dot);
        let excess = out.len().saturating_sub(self.history_len);
        out.drain(..excess);
        Ok(out)
    }
}
