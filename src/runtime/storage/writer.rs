//! The writer thread: commits batches to the database in the order the node task sent them,
//! so the node merges the next input while the last one is written.
//!
//! Each job is one transaction: what is kept from a failed commit, the job's rows and changes,
//! and its local writes (appended to the write-ahead log). Every job is reported back as a
//! [`Done`]. Rows and changes are never dropped: a batch that fails to commit is kept (merged
//! with the ones after it) and retried, first with the next job and at least every
//! [`RETRY_EVERY`]. Local writes of a failed commit are refused instead, and so are those of
//! every later job of the same epoch (the node task submitted them before it heard, and they
//! may build on the refused ones). Changes go to watchers only once committed.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Duration,
};

use redb::{Durability, ReadableTable};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    CHANGES, CONTEXT, CURSOR_BLOCK, Change, HISTORY, LOCAL_WRITES, Location, META, META_COLLECTED,
    META_LOG_RESERVED, META_LOG_TRIMMED, META_MEMBERS, SharedDatabase, StorageError, VERSIONS,
    backend, current, encode, encode_change, encode_version,
};
use crate::proto::{Key, SeqSet, VClock, Version, WriterId, node::NodeId};

/// How often a batch that failed to commit is retried while no job arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Past this many keys written without an fsync, the next commit is durable: what a reopen
/// after a failure must write again stays bounded.
const MAX_UNSYNCED_KEYS: usize = 262_144;

/// What the node task asks of the writer.
pub(super) enum Job {
    /// One commit, reported with a [`Done`].
    Commit {
        /// Rows and changes: never refused (kept and retried on failure).
        batch: Box<Batch>,
        /// Local writes for the write-ahead log, in sequence order: the commit is durable.
        locals: Vec<Version>,
        /// The node task's write epoch (see [`Writer::failed_epoch`]).
        epoch: u64,
        /// Answered once the commit was tried.
        notify: Vec<oneshot::Sender<()>>,
    },
    /// Commit what is kept, close the database, and stop.
    Close(SyncSender<()>),
}

/// A commit reported back to the node task.
#[derive(Debug)]
pub(crate) struct Done {
    /// The epoch the commit was submitted in.
    pub(crate) epoch: u64,
    /// Whether the commit succeeded (its rows and changes are written; otherwise they are
    /// kept and retried).
    pub(crate) ok: bool,
    /// For a commit with local writes: durable through this sequence number, or refused.
    pub(crate) locals: Option<Result<u64, Arc<StorageError>>>,
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
    /// Drop local writes numbered up to this from the write-ahead log: the rows and context
    /// of this batch (or earlier ones) carry them.
    pub(super) applied_through: Option<u64>,
    /// Drop local writes numbered in this range (first, last) from the write-ahead log: they
    /// were refused.
    pub(super) discard: Option<(u64, u64)>,
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
        self.applied_through = self.applied_through.max(later.applied_through);
        self.discard = match (self.discard, later.discard) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
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
    /// What was committed without an fsync since the last durable commit: a database reopened
    /// after a failure no longer holds it, so it is committed again first.
    pub(super) unsynced: Option<Batch>,
    /// After a reopen: what the database lost, to commit again before anything else.
    pub(super) lost: Option<Batch>,
    /// Whether the current failure was logged.
    pub(super) failing: bool,
    /// The epoch whose local writes failed, with why: later local writes of that epoch are
    /// refused with the same error.
    pub(super) failed_epoch: Option<(u64, Arc<StorageError>)>,
    pub(super) changes: broadcast::Sender<Change>,
    /// Where each commit is reported.
    pub(super) done: mpsc::UnboundedSender<Done>,
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
                None => self.retry(),
                Some(Job::Commit {
                    batch,
                    locals,
                    epoch,
                    notify,
                }) => {
                    let locals = self.commit_job(*batch, locals, epoch);
                    for reply in notify {
                        let _ = reply.send(());
                    }
                    let ok = self.kept.is_none();
                    // A node task that is gone no longer needs the report.
                    let _ = self.done.send(Done { epoch, ok, locals });
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

    /// Retries what is kept from a failed commit.
    fn retry(&mut self) {
        if let Some(kept) = self.kept.take() {
            match self.commit(&[&kept], &[]) {
                Ok(durable) => self.committed(kept, durable),
                Err(_) => self.kept = Some(kept),
            }
        }
    }

    /// Commits `batch` after what is kept, with `locals` unless their epoch already failed.
    /// Returns what becomes of the local writes.
    fn commit_job(
        &mut self,
        batch: Batch,
        locals: Vec<Version>,
        epoch: u64,
    ) -> Option<Result<u64, Arc<StorageError>>> {
        let refused = self
            .failed_epoch
            .as_ref()
            .filter(|(failed, _)| *failed == epoch)
            .map(|(_, e)| Arc::clone(e));
        let through = locals.last().map(|v| v.dot.counter);
        let locals = match (&refused, through) {
            (Some(_), Some(_)) | (_, None) => Vec::new(),
            (None, Some(_)) => locals,
        };
        let batch = match self.kept.take() {
            Some(mut kept) => {
                kept.absorb(batch);
                kept
            }
            None => batch,
        };
        match self.commit(&[&batch], &locals) {
            Ok(durable) => {
                self.committed(batch, durable);
                through.map(|seq| refused.map_or(Ok(seq), Err))
            }
            Err(e) => {
                self.kept = Some(batch);
                through.map(|_| {
                    let e = refused.unwrap_or_else(|| Arc::new(e));
                    self.failed_epoch = Some((epoch, Arc::clone(&e)));
                    Err(e)
                })
            }
        }
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No watcher is not an error.
            let _ = self.changes.send(change);
        }
    }

    /// Publishes a committed batch's changes to watchers, and remembers it until a durable
    /// commit (see [`Writer::unsynced`]).
    fn committed(&mut self, batch: Batch, durable: bool) {
        if durable {
            self.publish(batch.changes);
            return;
        }
        // Kept for a reopen, so watchers get copies (and none are made without a watcher).
        if self.changes.receiver_count() > 0 {
            self.publish(batch.changes.clone());
        }
        match &mut self.unsynced {
            Some(unsynced) => unsynced.absorb(batch),
            None => self.unsynced = Some(batch),
        }
    }

    /// Commits `batches` in one transaction, in order, with `locals` appended to the
    /// write-ahead log; returns whether the commit was durable. On error nothing was written.
    fn commit(&mut self, batches: &[&Batch], locals: &[Version]) -> Result<bool, StorageError> {
        if self.broken {
            self.reopen()?;
        }
        let lost = self.lost.take();
        let all: Vec<&Batch> = lost.iter().chain(batches.iter().copied()).collect();
        let result = self.try_commit(&all, locals, lost.is_some());
        self.broken = result.is_err();
        match &result {
            Ok(durable) => {
                if *durable {
                    self.unsynced = None;
                }
                if self.failing {
                    tracing::info!("storage commits succeed again");
                    self.failing = false;
                }
            }
            Err(e) => {
                self.lost = lost;
                if !self.failing {
                    tracing::error!(cause = %e, "storage commit failed; local writes are refused until it succeeds");
                    self.failing = true;
                }
            }
        }
        result
    }

    fn try_commit(
        &mut self,
        batches: &[&Batch],
        locals: &[Version],
        force_durable: bool,
    ) -> Result<bool, StorageError> {
        let db = current(&self.db)?;
        let mut txn = db.begin_write()?;
        let last_cursor = batches
            .iter()
            .rev()
            .find_map(|b| b.changes.last())
            .map(|c| c.cursor.seq);
        let needs_reservation = last_cursor.is_some_and(|seq| seq >= self.log_reserved);
        let unsynced_keys = self.unsynced.as_ref().map_or(0, |b| b.keys.len());
        let durable = force_durable
            || batches.iter().any(|b| b.durable)
            || needs_reservation
            || !locals.is_empty()
            || unsynced_keys >= MAX_UNSYNCED_KEYS;
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
            let mut wal = txn.open_table(LOCAL_WRITES)?;
            for batch in batches {
                if let Some(seq) = batch.applied_through {
                    wal.retain_in(..=seq, |_, _| false)?;
                }
                if let Some((first, last)) = batch.discard {
                    wal.retain_in(first..=last, |_, _| false)?;
                }
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
                    log.insert(change.cursor.seq, encode_change(&mut self.scratch, change)?)?;
                    log_entries += 1;
                }
            }
            for version in locals {
                wal.insert(
                    version.dot.counter,
                    encode_version(&mut self.scratch, version)?,
                )?;
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
        Ok(durable)
    }

    /// Rewrites `key`'s rows to exactly `rows`; the rows that leave go to its history.
    ///
    /// The history table holds only superseded versions (and collected tombstones): a key
    /// seen for the first time, as every key of a catch-up is, costs one insert and no read.
    pub(super) fn write_key(
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
        // Kept rows are written again too: a version may have gained its seal (a copy that
        // came unsigned, then signed).
        for version in &rows.versions {
            let (writer, seq) = (version.dot.actor.0, version.dot.counter);
            versions.insert((k, writer, seq), encode_version(scratch, version)?)?;
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
        // Commits made without an fsync since the last durable one are gone with the old
        // handle: write them again before anything else (after what an earlier reopen lost
        // and is not written yet).
        if let Some(unsynced) = self.unsynced.take() {
            match &mut self.lost {
                Some(lost) => lost.absorb(unsynced),
                None => self.lost = Some(unsynced),
            }
        }
        tracing::info!("storage reopened");
        Ok(())
    }

    /// Commits what is kept (durably; one try), then closes the database, releasing the data
    /// directory; readers get [`StorageError::Unavailable`] from then on.
    fn close(&mut self) {
        if let Some(mut kept) = self.kept.take() {
            kept.durable = true;
            match self.commit(&[&kept], &[]) {
                Ok(durable) => self.committed(kept, durable),
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
