//! Watching keys: [`Watch`] streams over storage's change log, and the gap error.
//!
//! Every change of a key's winner on this node, local or from a peer, is appended to a change
//! log on disk under a [`Cursor`] before anyone is told about it (the log, its [`Change`]s and
//! cursors belong to `storage`; this module only reads them). A [`Watch`] reads the log
//! from its cursor, then follows new changes live; if it falls behind the live feed it reads
//! the log again. The log keeps the last [`MeshBuilder::watch_log_len`] changes
//! (`super::MeshBuilder::watch_log_len`); a cursor older than that gets
//! [`WatchError::Gap`], and one the log never held (from a state of the node that was lost)
//! [`WatchError::CursorLost`], never a silent skip.

use std::collections::VecDeque;

use tokio::sync::broadcast;

#[cfg(doc)]
use super::MeshBuilder;
use super::{
    members::is_reserved,
    storage::{Change, Cursor, LogPosition, StorageError, StorageReader},
};
use crate::proto::Key;

/// How many log entries a watch reads from disk at a time.
const PAGE: usize = 256;

/// Why a [`Watch`] cannot continue. After an error the watch ends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Changes after the cursor were dropped from the log (it keeps the most recent ones), so
    /// the watch cannot deliver every change. Read the current state and watch from now.
    #[error(
        "changes after cursor {cursor} are no longer kept{}: read the current state again",
        oldest.map(|o| format!(" (the oldest kept is {o})")).unwrap_or_default()
    )]
    Gap {
        /// The cursor asked for.
        cursor: Cursor,
        /// The oldest change still kept, if any.
        oldest: Option<Cursor>,
    },
    /// The cursor is not in this node's change log: it was handed out by a state of this node
    /// that is gone (a data directory restored from an older backup, or changes a crash lost
    /// before they were durable). The client may have seen changes this node no longer
    /// holds: read the current state and watch from now.
    #[error(
        "cursor {cursor} is not in this node's change log (restored from an older backup, or lost in a crash): read the current state again"
    )]
    CursorLost {
        /// The cursor asked for.
        cursor: Cursor,
    },
    /// The cursor is from another node's log, or from a state of this node that is gone (a
    /// data directory restored from a backup older than the cursor, or wiped). Read the
    /// current state and watch from now.
    #[error(
        "cursor {0} is not from this node's change log (another node's, or from before a restore): read the current state again"
    )]
    UnknownCursor(Cursor),
    /// The log could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A stream of [`Change`]s to keys under a prefix, in this node's log order: every change
/// once, each key's changes in order. Ends (`None`) when the node stops, or after an error.
#[derive(Debug)]
pub struct Watch {
    prefix: String,
    reader: StorageReader,
    live: broadcast::Receiver<Change>,
    /// The last change delivered or skipped.
    last: Cursor,
    backlog: VecDeque<Change>,
    /// Whether everything logged before the live feed's current position has been read.
    caught_up: bool,
    /// An error found when the watch was made, delivered first.
    failed: Option<WatchError>,
    ended: bool,
}

impl Watch {
    pub(crate) fn new(
        prefix: String,
        reader: StorageReader,
        live: broadcast::Receiver<Change>,
        from: Cursor,
        caught_up: bool,
    ) -> Watch {
        Watch {
            prefix,
            reader,
            live,
            last: from,
            backlog: VecDeque::new(),
            caught_up,
            failed: None,
            ended: false,
        }
    }

    /// A watch whose first item is `error`.
    pub(crate) fn failed(mut self, error: WatchError) -> Watch {
        self.failed = Some(error);
        self
    }

    /// The cursor to resume from: the last change this watch passed (delivered, or skipped as
    /// outside the prefix).
    pub fn cursor(&self) -> Cursor {
        self.last
    }

    /// The next change; `None` once the node has stopped or after an error.
    pub async fn next(&mut self) -> Option<Result<Change, WatchError>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(error) = self.failed.take() {
                self.ended = true;
                return Some(Err(error));
            }
            if let Some(change) = self.backlog.pop_front() {
                self.last = change.cursor;
                if self.wants(&change.key) {
                    return Some(Ok(change));
                }
                continue;
            }
            if !self.caught_up {
                if let Err(e) = self.read_log() {
                    self.ended = true;
                    return Some(Err(e));
                }
                continue;
            }
            match self.live.recv().await {
                // Sequence numbers grow across the log ids of a node's starts.
                Ok(change) if change.cursor.seq <= self.last.seq => {}
                Ok(change) => self.backlog.push_back(change),
                // Fell behind the live feed: what was missed is in the log.
                Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    fn read_log(&mut self) -> Result<(), WatchError> {
        let (changes, complete) = self.position(PAGE)?;
        self.backlog.extend(changes);
        self.caught_up = complete;
        Ok(())
    }

    /// The error this watch's cursor meets in the log, if any: checked when a watch is made,
    /// since later changes could make a lost cursor look like a valid one.
    pub(crate) fn check_cursor(self) -> Watch {
        match self.position(0) {
            Ok(_) => self,
            Err(e) => self.failed(e),
        }
    }

    /// Up to `page` changes after the cursor, and whether they are all there are.
    fn position(&self, page: usize) -> Result<(Vec<Change>, bool), WatchError> {
        let at = |seq| Cursor {
            log: self.last.log,
            seq,
        };
        match self.reader.changes_after(self.last, page)? {
            LogPosition::Entries { changes, complete } => Ok((changes, complete)),
            LogPosition::Trimmed { oldest } => Err(WatchError::Gap {
                cursor: self.last,
                oldest: oldest.map(at),
            }),
            LogPosition::Lost => Err(WatchError::CursorLost { cursor: self.last }),
            LogPosition::OtherLog => Err(WatchError::UnknownCursor(self.last)),
        }
    }

    fn wants(&self, key: &Key) -> bool {
        let key = key.as_str();
        key.starts_with(&self.prefix) && (is_reserved(&self.prefix) || !is_reserved(key))
    }
}
