//! The replica on disk: one redb database per data directory.
//!
//! What is stored, and why it is enough to restart from:
//!
//! - `versions`: every stored version, by `(key, writer, seq)`. A key's rows are exactly its
//!   siblings after each commit.
//! - `context`: per writer, the sequence numbers seen (the causal context). With it a restarted
//!   node asks peers only for what it lacks, and never reuses one of its own dots.
//! - `meta`: the writer id (stable per data directory), the collection floor, the member list
//!   (to rejoin without seeds), and the change log's id, reservation and trim point.
//! - `history`: per key, the last versions seen, for [`Mesh::history`](super::Mesh::history).
//! - `changes`: the change log behind [`Mesh::watch`](super::Mesh::watch), by cursor.
//!
//! Every commit is one redb transaction, so the file always holds a state the replica was in
//! (or a union of one with the local write being committed). Local writes commit with
//! `Durability::Immediate` *before* they take effect in memory; what arrives from peers commits
//! without an fsync and is made durable by the next local write or the periodic checkpoint. A
//! crash can lose only such remote state, which anti-entropy pulls again.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Serialize, de::DeserializeOwned};

use super::watch::{Change, Cursor};
use crate::proto::{
    Digest, Key, SeqSet, Snapshot, Store, StoreConfig, VClock, Version, WriterId, node::NodeId,
    wire,
};

/// The name of the database file inside a data directory.
pub const DATABASE_FILE: &str = "confmesh.redb";

/// The layout of the tables; a database written by another layout is refused.
const FORMAT: u64 = 1;

/// How many cursors one durable reservation covers (see [`ChangeLog`]).
const CURSOR_BLOCK: u64 = 1 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VERSIONS: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("versions");
const CONTEXT: TableDefinition<u64, &[u8]> = TableDefinition::new("context");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

const META_FORMAT: &str = "format";
const META_WRITER: &str = "writer";
const META_COLLECTED: &str = "collected";
const META_MEMBERS: &str = "members";
const META_LOG_ID: &str = "log_id";
const META_LOG_RESERVED: &str = "log_reserved";
const META_LOG_TRIMMED: &str = "log_trimmed";

/// Why storage failed. A failed commit changes nothing on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The data directory could not be created or opened.
    #[error("data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process (or another node in this one) has the data directory open.
    #[error("data directory {0} is in use by another node")]
    InUse(PathBuf),
    /// The data directory belongs to another writer than the one configured.
    #[error("the data directory holds writer {stored}, not the configured {configured}")]
    WriterMismatch {
        /// The writer id in the data directory.
        stored: u64,
        /// The writer id the builder was given.
        configured: u64,
    },
    /// The database holds something this version cannot read.
    #[error("the database is corrupt or from another version: {0}")]
    Corrupt(String),
    /// redb failed: an I/O error, a full disk, ...
    #[error("storage: {0}")]
    Database(#[from] redb::Error),
    /// The database is being reopened after a failure; try again.
    #[error("storage is reopening after a failure")]
    Unavailable,
}

/// Decides, before each write or sync of the data directory's file, whether it fails as a
/// full disk would: fault injection for tests.
pub type StorageFaultHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where the database lives.
#[derive(Clone)]
enum Location {
    Memory,
    Dir {
        dir: PathBuf,
        fault: Option<StorageFaultHook>,
    },
}

/// The open database, shared with readers; replaced when reopened after a failure (redb
/// refuses further use of a database after an I/O error).
type SharedDatabase = Arc<RwLock<Option<Arc<Database>>>>;

fn current(shared: &SharedDatabase) -> Result<Arc<Database>, StorageError> {
    shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .ok_or(StorageError::Unavailable)
}

fn open_database(location: &Location) -> Result<Database, StorageError> {
    let (dir, fault) = match location {
        Location::Memory => {
            return Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| StorageError::Database(e.into()));
        }
        Location::Dir { dir, fault } => (dir, fault),
    };
    let directory_error = |source| StorageError::Directory {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(directory_error)?;
    let path = dir.join(DATABASE_FILE);
    let opened = match fault {
        None => Database::create(&path),
        Some(fault) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(directory_error)?;
            let inner = redb::backends::FileBackend::new(file)
                .map_err(|e| StorageError::Database(e.into()))?;
            Database::builder().create_with_backend(FaultyBackend {
                inner,
                fault: Arc::clone(fault),
            })
        }
    };
    match opened {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StorageError::InUse(dir.clone())),
        Err(e) => Err(StorageError::Database(e.into())),
    }
}

/// A file backend whose writes and syncs fail while the hook says so.
struct FaultyBackend {
    inner: redb::backends::FileBackend,
    fault: StorageFaultHook,
}

impl std::fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend").finish_non_exhaustive()
    }
}

impl FaultyBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if (self.fault)() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "injected fault: no space left on device",
            ));
        }
        Ok(())
    }
}

type Bound = std::ops::Bound<u64>;

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound, end: Bound) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound, end: Bound) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StorageError {
            fn from(e: $error) -> Self {
                StorageError::Database(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What the data directory held at start.
pub(crate) struct Loaded {
    pub(crate) writer: WriterId,
    /// The replica, `None` for a new data directory.
    pub(crate) store: Option<Store>,
    /// The members last seen.
    pub(crate) members: Vec<NodeId>,
}

/// The change log's position: cursors are `(log id, seq)`. Sequence numbers are handed out
/// below a durably reserved bound, and a restart continues from that bound, so a cursor seen by
/// a watcher is never reused even if a crash lost the commit that logged it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChangeLog {
    pub(crate) id: u64,
    /// The next sequence number to hand out.
    pub(crate) next: u64,
    /// Sequence numbers below this are reserved durably.
    reserved: u64,
    /// How many entries the table holds.
    len: u64,
}

/// A commit's contents besides the store's touched keys.
pub(crate) struct Commit<'a> {
    /// Keys whose rows to rewrite from the store.
    pub(crate) keys: &'a BTreeSet<Key>,
    /// A prepared local write, committed as if the store held it.
    pub(crate) local: Option<&'a Version>,
    /// Change-log entries to append, cursors in order.
    pub(crate) changes: &'a [Change],
    /// The member list, when it changed.
    pub(crate) members: Option<&'a [NodeId]>,
    /// fsync before returning.
    pub(crate) durable: bool,
}

/// The open database and what was last committed to it.
pub(crate) struct Storage {
    db: SharedDatabase,
    location: Location,
    /// Whether the last commit failed: the database must be reopened before the next.
    broken: bool,
    history_len: usize,
    log_len: u64,
    log: ChangeLog,
    /// The context and floor as last committed, to write only what changed.
    persisted_context: BTreeMap<WriterId, SeqSet>,
    persisted_floor: VClock,
    store_config: StoreConfig,
}

impl Storage {
    /// Opens (or creates) the database in `dir`; `None` keeps it in memory (nothing survives
    /// the process). Loads the replica it holds.
    pub(crate) fn open(
        dir: Option<&Path>,
        fault: Option<StorageFaultHook>,
        writer: Option<WriterId>,
        new_writer: WriterId,
        store_config: StoreConfig,
        history_len: usize,
        log_len: u64,
    ) -> Result<(Storage, Loaded), StorageError> {
        let location = match dir {
            Some(dir) => Location::Dir {
                dir: dir.to_path_buf(),
                fault,
            },
            None => Location::Memory,
        };
        let db = open_database(&location)?;
        let mut storage = Storage {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            location,
            broken: false,
            history_len: history_len.max(1),
            log_len: log_len.max(1),
            log: ChangeLog {
                id: 0,
                next: 1,
                reserved: 0,
                len: 0,
            },
            persisted_context: BTreeMap::new(),
            persisted_floor: VClock::new(),
            store_config,
        };
        let loaded = storage.load(writer, new_writer)?;
        Ok((storage, loaded))
    }

    /// Closes the database, releasing the data directory; readers get
    /// [`StorageError::Unavailable`] from then on.
    pub(crate) fn close(&mut self) {
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Readers hold the database only for the length of a read: wait for them (bounded;
        // this runs once, at shutdown).
        for _ in 0..1_000 {
            match db.map(Arc::try_unwrap) {
                Some(Ok(database)) => {
                    drop(database);
                    return;
                }
                Some(Err(shared)) => {
                    db = Some(shared);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                None => return,
            }
        }
        tracing::warn!("a reader still holds the database at shutdown");
    }

    /// A handle for readers on other tasks (history, the change log).
    pub(crate) fn reader(&self) -> StorageReader {
        StorageReader {
            db: Arc::clone(&self.db),
            history_len: self.history_len,
        }
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
        let db = open_database(&self.location)?;
        *self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(db));
        self.broken = false;
        tracing::info!("storage reopened");
        Ok(())
    }

    /// The cursor for the next change, advancing the log.
    pub(crate) fn next_cursor(&mut self) -> Cursor {
        let cursor = Cursor {
            log: self.log.id,
            seq: self.log.next,
        };
        self.log.next += 1;
        cursor
    }

    /// Takes back cursors handed out for changes that were not committed (the commit failed
    /// and the write was refused), so the log stays gap-free.
    pub(crate) fn return_cursors(&mut self, first: u64) {
        self.log.next = self.log.next.min(first);
    }

    fn load(
        &mut self,
        configured: Option<WriterId>,
        new_writer: WriterId,
    ) -> Result<Loaded, StorageError> {
        let db = current(&self.db)?;
        let txn = db.begin_write()?;
        let (writer, fresh) = {
            let mut meta = txn.open_table(META)?;
            let format = meta.get(META_FORMAT)?.map(|v| read_u64(v.value()));
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT.to_le_bytes().as_slice())?;
                }
                Some(Some(FORMAT)) => {}
                Some(other) => {
                    return Err(StorageError::Corrupt(format!(
                        "unknown format {other:?} (this build reads {FORMAT})"
                    )));
                }
            }
            let stored = meta.get(META_WRITER)?.map(|v| read_u64(v.value()));
            let writer = match (stored, configured) {
                (Some(None), _) => return Err(StorageError::Corrupt("writer id".into())),
                (Some(Some(stored)), Some(configured)) if stored != configured.0 => {
                    return Err(StorageError::WriterMismatch {
                        stored,
                        configured: configured.0,
                    });
                }
                (Some(Some(stored)), _) => (WriterId(stored), false),
                (None, configured) => {
                    let writer = configured.unwrap_or(new_writer);
                    meta.insert(META_WRITER, writer.0.to_le_bytes().as_slice())?;
                    (writer, true)
                }
            };
            let stored_id = meta.get(META_LOG_ID)?.map(|v| read_u64(v.value()));
            let log_id = match stored_id {
                Some(Some(id)) => id,
                Some(None) => return Err(StorageError::Corrupt("log id".into())),
                None => {
                    // Distinct per data directory and per in-memory node.
                    let id = new_writer.0 ^ 0x636f_6e66_6d65_7368;
                    meta.insert(META_LOG_ID, id.to_le_bytes().as_slice())?;
                    id
                }
            };
            let reserved = meta
                .get(META_LOG_RESERVED)?
                .and_then(|v| read_u64(v.value()))
                .unwrap_or(1);
            // Continue past everything a previous run may have handed out.
            self.log.id = log_id;
            self.log.next = reserved;
            self.log.reserved = reserved + CURSOR_BLOCK;
            meta.insert(
                META_LOG_RESERVED,
                self.log.reserved.to_le_bytes().as_slice(),
            )?;
            writer
        };
        // Create every table, so readers never find one missing.
        txn.open_table(VERSIONS)?;
        txn.open_table(CONTEXT)?;
        txn.open_table(HISTORY)?;
        self.log.len = txn.open_table(CHANGES)?.len()?;
        txn.commit()?;
        let read = db.begin_read()?;
        let meta = read.open_table(META)?;
        let members: Vec<NodeId> = match meta.get(META_MEMBERS)? {
            Some(bytes) => decode(bytes.value())?,
            None => Vec::new(),
        };
        if fresh {
            return Ok(Loaded {
                writer,
                store: None,
                members,
            });
        }
        let collected: VClock = match meta.get(META_COLLECTED)? {
            Some(bytes) => decode(bytes.value())?,
            None => VClock::new(),
        };
        let mut writers = Vec::new();
        for row in read.open_table(CONTEXT)?.iter()? {
            let (writer, seen) = row?;
            writers.push((WriterId(writer.value()), decode::<SeqSet>(seen.value())?));
        }
        let context = Digest::from_writers(writers);
        let mut versions = Vec::new();
        for row in read.open_table(VERSIONS)?.iter()? {
            let (_, version) = row?;
            versions.push(decode::<Version>(version.value())?);
        }
        tracing::info!(
            writer = writer.0,
            versions = versions.len(),
            members = members.len(),
            "replica loaded from disk"
        );
        self.persisted_context = context.writers().map(|(w, s)| (w, s.clone())).collect();
        self.persisted_floor = collected.clone();
        let snapshot = Snapshot {
            after: None,
            through: None,
            versions,
            context,
            collected,
            part: 0,
            parts: 1,
        };
        let store = Store::restore(writer, self.store_config.clone(), snapshot)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(Loaded {
            writer,
            store: Some(store),
            members,
        })
    }

    /// Writes `commit` in one transaction. On error nothing was written and nothing recorded
    /// as written, so the same commit (or a larger one) can be retried.
    pub(crate) fn commit(
        &mut self,
        store: &Store,
        commit: &Commit<'_>,
    ) -> Result<(), StorageError> {
        if self.broken {
            self.reopen()?;
        }
        let result = self.try_commit(store, commit);
        self.broken = result.is_err();
        result
    }

    fn try_commit(&mut self, store: &Store, commit: &Commit<'_>) -> Result<(), StorageError> {
        let db = current(&self.db)?;
        let mut txn = db.begin_write()?;
        let needs_reservation = commit
            .changes
            .last()
            .is_some_and(|c| c.cursor.seq >= self.log.reserved);
        let durable = commit.durable || needs_reservation;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        // The context entries that differ from what is on disk; only those are cloned (this
        // runs after every input, and the digest has an entry per writer in the cluster).
        let mut changed_writers: Vec<(WriterId, SeqSet)> = store
            .digest()
            .writers()
            .filter(|(writer, seen)| self.persisted_context.get(writer) != Some(*seen))
            .map(|(writer, seen)| (writer, seen.clone()))
            .collect();
        if let Some(local) = commit.local {
            let writer = local.dot.actor;
            match changed_writers.iter_mut().find(|(w, _)| *w == writer) {
                Some((_, seen)) => {
                    seen.insert(local.dot.counter);
                }
                None => {
                    let mut seen = store.digest().seen(writer).clone();
                    seen.insert(local.dot.counter);
                    changed_writers.push((writer, seen));
                }
            }
        }
        let floor_changed;
        let mut log_len = self.log.len;
        let mut reserved = self.log.reserved;
        {
            let mut versions = txn.open_table(VERSIONS)?;
            let mut history = txn.open_table(HISTORY)?;
            for key in commit.keys {
                if commit.local.is_some_and(|l| l.key == *key) {
                    continue;
                }
                let siblings = store.versions(key);
                self.write_key(&mut versions, &mut history, key, siblings)?;
            }
            if let Some(local) = commit.local {
                self.write_key(
                    &mut versions,
                    &mut history,
                    &local.key,
                    std::slice::from_ref(local),
                )?;
            }

            let mut table = txn.open_table(CONTEXT)?;
            for (writer, seen) in &changed_writers {
                table.insert(writer.0, encode(seen)?.as_slice())?;
            }

            let mut meta = txn.open_table(META)?;
            floor_changed = *store.collected_floor() != self.persisted_floor;
            if floor_changed {
                meta.insert(META_COLLECTED, encode(store.collected_floor())?.as_slice())?;
            }
            if let Some(members) = commit.members {
                meta.insert(META_MEMBERS, encode(&members)?.as_slice())?;
            }

            let mut log = txn.open_table(CHANGES)?;
            for change in commit.changes {
                log.insert(change.cursor.seq, encode(change)?.as_slice())?;
                log_len += 1;
            }
            let mut trimmed = None;
            while log_len > self.log_len {
                match log.pop_first()? {
                    Some((seq, _)) => trimmed = Some(seq.value()),
                    None => break,
                }
                log_len -= 1;
            }
            if let Some(seq) = trimmed {
                meta.insert(META_LOG_TRIMMED, seq.to_le_bytes().as_slice())?;
            }
            if needs_reservation {
                reserved = self.log.next.max(self.log.reserved) + CURSOR_BLOCK;
                meta.insert(META_LOG_RESERVED, reserved.to_le_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        self.persisted_context.extend(changed_writers);
        if floor_changed {
            self.persisted_floor = store.collected_floor().clone();
        }
        self.log.len = log_len;
        self.log.reserved = reserved;
        Ok(())
    }

    /// Rewrites `key`'s rows to exactly `siblings`; the rows that leave go to its history.
    ///
    /// The history table holds only superseded versions (and collected tombstones): a key
    /// seen for the first time, as every key of a catch-up is, costs one insert.
    fn write_key(
        &self,
        versions: &mut redb::Table<'_, (&'static str, u64, u64), &'static [u8]>,
        history: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
        key: &Key,
        siblings: &[Version],
    ) -> Result<(), StorageError> {
        let k = key.as_str();
        let stored: Vec<(u64, u64)> = versions
            .range((k, 0, 0)..=(k, u64::MAX, u64::MAX))?
            .map(|row| row.map(|(id, _)| (id.value().1, id.value().2)))
            .collect::<Result<_, _>>()?;
        let mut superseded = Vec::new();
        for &(writer, seq) in &stored {
            let kept = siblings
                .iter()
                .any(|v| v.dot.actor.0 == writer && v.dot.counter == seq);
            if !kept && let Some(bytes) = versions.remove((k, writer, seq))? {
                superseded.push(bytes.value().to_vec());
            }
        }
        for version in siblings {
            let (writer, seq) = (version.dot.actor.0, version.dot.counter);
            if !stored.contains(&(writer, seq)) {
                versions.insert((k, writer, seq), encode(version)?.as_slice())?;
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
        let kept = self.history_len as u64;
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
}

/// Read access from other tasks: redb serves readers concurrently with the writer.
#[derive(Clone, Debug)]
pub(crate) struct StorageReader {
    db: SharedDatabase,
    history_len: usize,
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
    /// The cursor names another log (another node, or a wiped data directory).
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
            return Ok(LogPosition::OtherLog);
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

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| StorageError::Corrupt(format!("cannot encode: {e}")))
}

/// Decodes a row with the wire's allocation limits: a damaged file is an error, not an abort.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    let (value, used) =
        wire::decode_limited::<T>(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    if used != bytes.len() {
        return Err(StorageError::Corrupt("trailing bytes in a row".into()));
    }
    Ok(value)
}
