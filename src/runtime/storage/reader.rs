//! Reads from other tasks than the node's: history and the change log, served by redb
//! concurrently with the writer.

use super::{
    CHANGES, HISTORY, META, META_LOG_EPOCHS, META_LOG_ID, META_LOG_TRIMMED, SharedDatabase,
    StorageError, VERSIONS, current, decode, read_u64, read_u64s,
};
use crate::{
    proto::{Key, Version},
    runtime::watch::{Change, Cursor},
};
use redb::{ReadableDatabase, ReadableTable};

/// Read access from other tasks: redb serves readers concurrently with the writer.
#[derive(Clone, Debug)]
pub(crate) struct StorageReader {
    pub(super) db: SharedDatabase,
    pub(super) history_len: usize,
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
    /// The versions of `key` in its history: the superseded ones and the current ones,
    /// oldest first (by the writers' clocks), the last `history_len`.
    pub(crate) fn history(&self, key: &Key) -> Result<Vec<Version>, StorageError> {
        let read = current(&self.db)?.begin_read()?;
        let k = key.as_str();
        let mut out: Vec<Version> = Vec::new();
        for row in read.open_table(HISTORY)?.range((k, 0)..=(k, u64::MAX))? {
            out.push(decode(row?.1.value())?);
        }
        for row in read
            .open_table(VERSIONS)?
            .range((k, 0, 0)..=(k, u64::MAX, u64::MAX))?
        {
            out.push(decode(row?.1.value())?);
        }
        out.sort_by_key(|v| (v.timestamp, v.dot.actor, v.dot.counter));
        // A version is in both tables only in a database written when the history table also
        // held the current versions.
        out.dedup_by_key(|v| v.dot);
        let excess = out.len().saturating_sub(self.history_len);
        out.drain(..excess);
        Ok(out)
    }

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
            changes.push(decode(bytes.value())?);
        }
        Ok(LogPosition::Entries {
            changes,
            complete: true,
        })
    }
}
