//! Reads from other tasks than the node's: history (and the change log, in [`changes`](super::changes)),
//! served by redb concurrently with the writer.

use std::collections::BTreeMap;

use redb::ReadableDatabase;

use super::{HISTORY, SharedDatabase, StorageError, VERSIONS, current, decode_version};
use crate::proto::{HlcTimestamp, Key, Version, WriterId};

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

    /// The newest `limit` versions, by their writers' clocks, that this node stores for keys
    /// starting with `prefix` (current and superseded: what [`StorageReader::history`] reads
    /// for each key): its audit trail, newest first. Reads every stored version under the
    /// prefix once and holds at most `limit + 1` at a time.
    /// Keys under `_confmesh/` are left out unless `prefix` starts with it.
    pub(crate) fn audit(&self, prefix: &str, limit: usize) -> Result<Vec<Version>, StorageError> {
        let reserved = prefix.starts_with(crate::proto::trust::RESERVED_PREFIX);
        // By (clock, writer, sequence number): a version in both tables is kept once.
        let mut newest: BTreeMap<(HlcTimestamp, WriterId, u64), Version> = BTreeMap::new();
        let mut keep = |version: Version| {
            if !reserved
                && version
                    .key
                    .as_str()
                    .starts_with(crate::proto::trust::RESERVED_PREFIX)
            {
                return;
            }
            let at = (version.timestamp, version.dot.actor, version.dot.counter);
            newest.insert(at, version);
            if newest.len() > limit {
                newest.pop_first();
            }
        };
        let read = current(&self.db)?.begin_read()?;
        for row in read.open_table(HISTORY)?.range((prefix, 0)..)? {
            let (k, v) = row?;
            if !k.value().0.starts_with(prefix) {
                break;
            }
            keep(decode_version(v.value())?);
        }
        for row in read.open_table(VERSIONS)?.range((prefix, 0, 0)..)? {
            let (k, v) = row?;
            if !k.value().0.starts_with(prefix) {
                break;
            }
            keep(decode_version(v.value())?);
        }
        Ok(newest.into_values().rev().collect())
    }
}
