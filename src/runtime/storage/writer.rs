//! The writer thread: commits batches to the database in the order the node task sent them,
//! so the node merges the next input while the last one is written.
//!
//! Remote changes are fire-and-forget: a batch that fails to commit is kept (merged with the
//! ones after it) and retried, first with the next job and at least every [`RETRY_EVERY`], so
//! nothing the node sent is dropped. A local write waits for its reply; it is committed in
//! one transaction with whatever is kept, and on failure the kept batch is left as it was.
//! Changes go to watchers only once committed.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender},
    time::Duration,
};

use redb::{Durability, ReadableTable};
use tokio::sync::{broadcast, oneshot};

use super::{
    CHANGES, CONTEXT, CURSOR_BLOCK, HISTORY, Location, META, META_COLLECTED, META_LOG_RESERVED,
    META_LOG_TRIMMED, META_MEMBERS, SharedDatabase, StorageError, VERSIONS, backend, current,
    encode,
};
use crate::{
    proto::{Key, SeqSet, VClock, Version, WriterId, node::NodeId},
    runtime::watch::Change,
};

/// How often a batch that failed to commit is retried while no job arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What the node task asks of the writer.
pub(super) enum Job {
    /// Remote changes, committed in order; never refused (kept and retried on failure).
    Remote(Batch),
    /// A local write: committed durably, with everything sent before it, before the reply.
    Local(Batch, SyncSender<Result<(), StorageError>>),
    /// Answer once every job before it is done.
    Notify(oneshot::Sender<()>),
    /// Commit what is kept, close the database, and stop.
    Close(SyncSender<()>),
}

/// What one commit writes: rows, context, floor, members and change-log entries.
#[derive(Default)]
pub(super) struct Batch {
    /// Per key, its rows after the batch.
    pub(super) keys: BTreeMap<Key, Rows>,
    /// The context entries that changed.
    pub(super) context: BTreeMap<WriterId, SeqSet>,
    /// The collection floor, when it changed.
    pub(super) floor: Option<VClock>,
    /// The member list, when it changed.
    pub(super) members: Option<Vec<NodeId>>,
    /// Change-log entries, cursors in order.
    pub(super) changes: Vec<Change>,
    /// fsync before the commit returns.
    pub(super) durable: bool,
}

/// A key's rows after a batch.
pub(super) struct Rows {
    /// Exactly the key's siblings (none: the key is gone).
    pub(super) versions: Vec<Version>,
    /// The database holds no row of the key once the batches before this one are written:
    /// no need to read its rows back.
    pub(super) new: bool,
}

impl Batch {
    /// Adds a later batch: what it writes overrides, its changes follow.
    fn absorb(&mut self, later: Batch) {
        for (key, rows) in later.keys {
            match self.keys.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(rows);
                }
                // Whether the disk holds rows is decided by the earlier batch.
                Entry::Occupied(mut entry) => entry.get_mut().versions = rows.versions,
            }
        }
        self.context.extend(later.context);
        if later.floor.is_some() {
            self.floor = later.floor;
        }
        if later.members.is_some() {
            self.members = later.members;
        }
        self.changes.extend(later.changes);
        self.durable |= later.durable;
    }
}

/// The writer's state: the database and the change log's bounds.
pub(super) struct Writer {
    pub(super) db: SharedDatabase,
    pub(super) location: Location,
    /// Whether the last commit failed: the database must be reopened before the next.
    pub(super) broken: bool,
    pub(super) history_len: usize,
    /// The most entries the change log keeps.
    pub(super) log_len: u64,
    /// How many entries the change log holds.
    pub(super) log_entries: u64,
    /// Cursors below this are reserved durably.
    pub(super) log_reserved: u64,
    /// Remote changes that failed to commit, retried before anything else.
    pub(super) kept: Option<Batch>,
    /// Whether the current failure was logged.
    pub(super) failing: bool,
    pub(super) changes: broadcast::Sender<Change>,
    /// The buffer rows are encoded into, reused (a catch-up writes 100,000s of rows).
    pub(super) scratch: Vec<u8>,
}

impl Writer {
    /// Serves jobs until [`Job::Close`] or until the node side is gone.
    pub(super) fn run(mut self, jobs: &Receiver<Job>) {
        loop {
            let job = if self.kept.is_some() {
                match jobs.recv_timeout(RETRY_EVERY) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            };
            match job {
                None => self.remote(Batch::default()),
                Some(Job::Remote(batch)) => self.remote(batch),
                Some(Job::Local(batch, reply)) => {
                    let result = self.local(batch);
                    let _ = reply.send(result);
                }
                Some(Job::Notify(reply)) => {
                    let _ = reply.send(());
                }
                Some(Job::Close(reply)) => {
                    self.close();
                    let _ = reply.send(());
                    return;
                }
            }
        }
        self.close();
    }

    fn remote(&mut self, batch: Batch) {
        let batch = match self.kept.take() {
            Some(mut kept) => {
                kept.absorb(batch);
                kept
            }
            None => batch,
        };
        match self.commit(&[&batch]) {
            Ok(()) => self.publish(batch.changes),
            Err(_) => self.kept = Some(batch),
        }
    }

    fn local(&mut self, batch: Batch) -> Result<(), StorageError> {
        let kept = self.kept.take();
        let result = match &kept {
            Some(kept) => self.commit(&[kept, &batch]),
            None => self.commit(&[&batch]),
        };
        if let Err(e) = result {
            self.kept = kept;
            return Err(e);
        }
        if let Some(kept) = kept {
            self.publish(kept.changes);
        }
        self.publish(batch.changes);
        Ok(())
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No watcher is not an error.
            let _ = self.changes.send(change);
        }
    }

    /// Commits `batches` in one transaction, in order. On error nothing was written.
    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StorageError> {
        if self.broken {
            self.reopen()?;
        }
        let result = self.try_commit(batches);
        self.broken = result.is_err();
        match &result {
            Ok(()) if self.failing => {
                tracing::info!("storage commits succeed again");
                self.failing = false;
            }
            Err(e) if !self.failing => {
                tracing::error!(cause = %e, "storage commit failed; local writes are refused until it succeeds");
                self.failing = true;
            }
            _ => {}
        }
        result
    }

    fn try_commit(&mut self, batches: &[&Batch]) -> Result<(), StorageError> {
        let db = current(&self.db)?;
        let mut txn = db.begin_write()?;
        let last_cursor = batches
            .iter()
            .rev()
            .find_map(|b| b.changes.last())
            .map(|c| c.cursor.seq);
        let needs_reservation = last_cursor.is_some_and(|seq| seq >= self.log_reserved);
        let durable = batches.iter().any(|b| b.durable) || needs_reservation;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut log_entries = self.log_entries;
        let mut reserved = self.log_reserved;
        {
            let mut versions = txn.open_table(VERSIONS)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut context = txn.open_table(CONTEXT)?;
            let mut meta = txn.open_table(META)?;
            let mut log = txn.open_table(CHANGES)?;
            for batch in batches {
                for (key, rows) in &batch.keys {
                    Self::write_key(
                        &mut versions,
                        &mut history,
                        &mut self.scratch,
                        self.history_len,
                        key,
                        rows,
                    )?;
                }
                for (writer, seen) in &batch.context {
                    context.insert(writer.0, encode(&mut self.scratch, seen)?)?;
                }
                if let Some(floor) = &batch.floor {
                    meta.insert(META_COLLECTED, encode(&mut self.scratch, floor)?)?;
                }
                if let Some(members) = &batch.members {
                    meta.insert(META_MEMBERS, encode(&mut self.scratch, members)?)?;
                }
                for change in &batch.changes {
                    log.insert(change.cursor.seq, encode(&mut self.scratch, change)?)?;
                    log_entries += 1;
                }
            }
            let mut trimmed = None;
            while log_entries > self.log_len {
                match log.pop_first()? {
                    Some((seq, _)) => trimmed = Some(seq.value()),
                    None => break,
                }
                log_entries -= 1;
            }
            if let Some(seq) = trimmed {
                meta.insert(META_LOG_TRIMMED, seq.to_le_bytes().as_slice())?;
            }
            if let Some(seq) = last_cursor.filter(|_| needs_reservation) {
                reserved = seq.saturating_add(1).max(self.log_reserved) + CURSOR_BLOCK;
                meta.insert(META_LOG_RESERVED, reserved.to_le_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        self.log_entries = log_entries;
        self.log_reserved = reserved;
        Ok(())
    }

    /// Rewrites `key`'s rows to exactly `rows`; the rows that leave go to its history.
    ///
    /// The history table holds only superseded versions (and collected tombstones): a key
    /// seen for the first time, as every key of a catch-up is, costs one insert and no read.
    fn write_key(
        versions: &mut redb::Table<'_, (&'static str, u64, u64), &'static [u8]>,
        history: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
        scratch: &mut Vec<u8>,
        history_len: usize,
        key: &Key,
        rows: &Rows,
    ) -> Result<(), StorageError> {
        let k = key.as_str();
        let stored: Vec<(u64, u64)> = if rows.new {
            Vec::new()
        } else {
            versions
                .range((k, 0, 0)..=(k, u64::MAX, u64::MAX))?
                .map(|row| row.map(|(id, _)| (id.value().1, id.value().2)))
                .collect::<Result<_, _>>()?
        };
        let mut superseded = Vec::new();
        for &(writer, seq) in &stored {
            let kept = rows
                .versions
                .iter()
                .any(|v| v.dot.actor.0 == writer && v.dot.counter == seq);
            if !kept && let Some(bytes) = versions.remove((k, writer, seq))? {
                superseded.push(bytes.value().to_vec());
            }
        }
        for version in &rows.versions {
            let (writer, seq) = (version.dot.actor.0, version.dot.counter);
            if !stored.contains(&(writer, seq)) {
                versions.insert((k, writer, seq), encode(scratch, version)?)?;
            }
        }
        if superseded.is_empty() {
            return Ok(());
        }
        let mut last = history
            .range((k, 0)..=(k, u64::MAX))?
            .next_back()
            .transpose()?
            .map_or(0, |(id, _)| id.value().1);
        for bytes in superseded {
            last += 1;
            history.insert((k, last), bytes.as_slice())?;
        }
        let kept = history_len as u64;
        if last > kept {
            let old: Vec<u64> = history
                .range((k, 0)..=(k, last - kept))?
                .map(|row| row.map(|(id, _)| id.value().1))
                .collect::<Result<_, _>>()?;
            for n in old {
                history.remove((k, n))?;
            }
        }
        Ok(())
    }

    /// Replaces a database that failed with a freshly opened one. Nothing committed is lost:
    /// a failed commit wrote nothing.
    fn reopen(&mut self) -> Result<(), StorageError> {
        if matches!(self.location, Location::Memory) {
            // Nothing to reopen; an in-memory database fails only for lack of memory.
            self.broken = false;
            return Ok(());
        }
        let old = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Readers hold the old handle for the length of one read at most.
        drop(old);
        let db = backend::open_database(&self.location)?;
        *self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::sync::Arc::new(db));
        self.broken = false;
        tracing::info!("storage reopened");
        Ok(())
    }

    /// Commits what is kept (durably; one try), then closes the database, releasing the data
    /// directory; readers get [`StorageError::Unavailable`] from then on.
    fn close(&mut self) {
        if let Some(mut kept) = self.kept.take() {
            kept.durable = true;
            match self.commit(&[&kept]) {
                Ok(()) => self.publish(kept.changes),
                Err(e) => tracing::warn!(cause = %e, "remote changes not saved at shutdown"),
            }
        }
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Readers hold the database only for the length of a read: wait for them (bounded;
        // this runs once, at shutdown).
        for _ in 0..1_000 {
            match db.map(std::sync::Arc::try_unwrap) {
                Some(Ok(database)) => {
                    drop(database);
                    return;
                }
                Some(Err(shared)) => {
                    db = Some(shared);
                    std::thread::sleep(Duration::from_millis(1));
                }
                None => return,
            }
        }
        tracing::warn!("a reader still holds the database at shutdown");
    }
}
