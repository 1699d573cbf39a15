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
//! - `local_writes`: the write-ahead log of local writes, by sequence number. A local write is
//!   committed here, durably, *before* it takes effect in the node; once it has been applied
//!   and its key's rows and the context carry it, the commit that writes them removes it. A
//!   start applies whatever is left (a crash came between the two commits).
//!
//! Every commit is one redb transaction, so the file always holds a state the replica was in,
//! plus local writes not yet applied. A commit that holds local writes is made with
//! `Durability::Immediate` (it also makes everything before it durable); one holding only what
//! arrived from peers commits without an fsync and is made durable by the next local write or
//! the periodic checkpoint. A crash can lose only such remote state, which anti-entropy pulls
//! again, and local writes not yet acknowledged, which no peer has seen.
//!
//! Commits run on a thread of their own ([`writer`]), in the order the node task submits them,
//! and report back on a channel the node task awaits: it never blocks on the disk. It keeps at
//! most [`MAX_IN_FLIGHT`] commits outstanding (one, for a commit with local writes) and
//! gathers everything that arrives meanwhile into the next one, so concurrent local writes
//! share one fsync (group commit). Watchers see a
//! change once it is written.

mod backend;
mod changes;
mod load;
mod reader;
mod writer;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, mpsc::Sender},
};

use redb::{Database, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{broadcast, mpsc, oneshot};

pub(crate) use self::changes::LogPosition;
pub use self::changes::{Change, Cursor, CursorParseError};
pub(crate) use self::reader::StorageReader;
pub(crate) use self::writer::Done;
use self::writer::{Batch, Job, Rows, Writer};
use crate::proto::{
    Grounds, Seal, SeqSet, Store, StoreConfig, Touched, TouchedKeys, VClock, Version, WriterId,
    node::NodeId, wire,
};

/// The name of the database file inside a data directory.
pub const DATABASE_FILE: &str = "confmesh.redb";

/// The layout of the tables this build writes. A database of an older layout is migrated
/// forward at open (`MIGRATIONS` in `storage/load.rs`), in the transaction that opens it; one of a newer
/// layout is refused ([`StorageError::NewerFormat`]).
///
/// - 1: meta, versions, context, history, changes.
/// - 2: `local_writes`, the write-ahead log of local writes, is part of the layout. An older
///   build would not read it, and so would drop acknowledged writes still in it: hence a new
///   format, which older builds refuse, rather than a table they ignore. (Builds between
///   798bc82 and format 2 wrote the table under format 1; the migration keeps its rows.)
/// - 3: version rows (current, history, write-ahead log) carry the version's seal after it
///   (its signature and audit fields). Rows written before end after the version and read as
///   unsigned, so the migration rewrites nothing; an older build would refuse the new rows'
///   trailing bytes, hence a new format.
/// - 4: version rows and change-log rows may carry the versions' grounds (policy context and
///   author's proof, protocol 4) after the seals; rows without grounds are written as in
///   format 3, and format 3's rows read as versions without grounds. Nothing is rewritten.
pub const STORAGE_FORMAT: u64 = 4;

/// How many cursors one durable reservation covers (see [`CursorSource`]).
const CURSOR_BLOCK: u64 = 1 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VERSIONS: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("versions");
const CONTEXT: TableDefinition<u64, &[u8]> = TableDefinition::new("context");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Local writes made durable and not yet applied to `versions`: this writer's sequence number
/// to the version. Format 2.
const LOCAL_WRITES: TableDefinition<u64, &[u8]> = TableDefinition::new("local_writes");

const META_FORMAT: &str = "format";
const META_WRITER: &str = "writer";
/// The writer key's 32 secret bytes (format 3): the writer id is its public key's.
const META_WRITER_KEY: &str = "writer_key";
const META_COLLECTED: &str = "collected";
const META_MEMBERS: &str = "members";
const META_LOG_ID: &str = "log_id";
/// The log ids of earlier starts, oldest first, each with the first sequence number after
/// that start (pairs of words): their cursors stay valid up to it.
const META_LOG_EPOCHS: &str = "log_epochs";
/// How many earlier starts' log ids are kept (older cursors then get `UnknownCursor`, which
/// the agent's event stream sends as a gap, as it does `Gap`).
const MAX_LOG_EPOCHS: usize = 256;
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
    /// The data directory was written by a newer confmesh, in a layout this build does not
    /// know; nothing was changed. Run the newer build, or restore a backup taken before the
    /// upgrade.
    #[error(
        "the data directory is in storage format {found}, written by a newer confmesh; this build reads formats up to {supported} (run the newer build, or restore a backup from before the upgrade)"
    )]
    NewerFormat {
        /// The format in the directory.
        found: u64,
        /// The newest this build reads.
        supported: u64,
    },
    /// redb failed: an I/O error, a full disk, ...
    #[error("storage: {0}")]
    Database(#[from] redb::Error),
    /// The database is being reopened after a failure, or closed; try again.
    #[error("storage is reopening after a failure, or closed")]
    Unavailable,
    /// The thread that writes the database could not be started.
    #[error("cannot start the storage writer thread: {0}")]
    Thread(std::io::Error),
    /// The commit that was to make a batch of local writes durable failed (or was refused
    /// because one before it failed); shared by every write of the batch. Nothing changed.
    #[error("the write was not made durable: {0}")]
    WriteFailed(Arc<StorageError>),
    /// Too many writes are waiting for the disk (it is slow or stalled); nothing changed.
    /// Try again later.
    #[error("too many writes are waiting for the disk; try again later")]
    Busy,
    /// A local write took a version id a peer already holds for this node's writer: the data
    /// directory was restored from a backup or copied from another node's. Nothing changed.
    #[error(
        "version id {0} of this node's writer is already in use (a data directory restored or copied?)"
    )]
    IdInUse(u64),
}

/// Decides, before each write or sync of the data directory's file, whether it fails as a
/// full disk would: fault injection for tests.
// For tests only, hidden from the docs: not part of the stable API.
#[doc(hidden)]
pub type StorageFaultHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where the database lives.
#[derive(Clone)]
enum Location {
    Memory,
    Dir {
        dir: PathBuf,
        fault: Option<StorageFaultHook>,
        /// The most bytes of the file redb keeps cached in memory.
        cache_bytes: usize,
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
    /// The writer's signing key; `None` for a writer id given by the builder (unsigned).
    pub(crate) writer_key: Option<crate::proto::trust::WriterKey>,
    /// The replica, `None` for a new data directory.
    pub(crate) store: Option<Store>,
    /// The members last seen.
    pub(crate) members: Vec<NodeId>,
}

/// The change log's position on the node side: cursors are `(log id, seq)`. Sequence numbers
/// are handed out below a durably reserved bound (the writer extends it), and a restart
/// continues from that bound, so a cursor seen by a watcher is never reused even if a crash
/// lost the commit that logged it.
#[derive(Clone, Copy, Debug)]
struct CursorSource {
    id: u64,
    /// The next sequence number to hand out.
    next: u64,
}

/// How many commits the node task keeps outstanding: a commit of what arrived from peers may
/// queue behind the one being written (a catch-up's chunks are then written while the next
/// are merged), but a commit holding local writes waits until none is outstanding. Everything
/// that arrives meanwhile goes into it, which is what groups concurrent writes into one fsync:
/// at 64 clients (`benches/agent_load.rs`), letting local writes queue behind a commit gave
/// smaller groups and less throughput.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// The node task's side of the database: it turns the store's changes and the node's local
/// writes into commits for the writer thread ([`writer`]), and hands out change-log cursors.
///
/// [`Storage::submit`] never waits: the writer reports each commit on the channel returned by
/// [`Storage::open`], and the caller keeps at most [`MAX_IN_FLIGHT`] outstanding
/// ([`Storage::can_submit`]). Commits are written in the order they were submitted, so the
/// database always holds a state the replica was in.
pub(crate) struct Storage {
    jobs: Option<Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    db: SharedDatabase,
    history_len: usize,
    cursors: CursorSource,
    /// The context and floor as sent to the writer, to send only what changed.
    sent_context: BTreeMap<WriterId, SeqSet>,
    sent_floor: VClock,
    /// Commits submitted and not yet reported done.
    in_flight: usize,
}

/// What one commit carries; see [`Storage::submit`].
#[derive(Default)]
pub(crate) struct Submission {
    /// Keys whose rows to rewrite from the store, with how each stood before.
    pub(crate) keys: TouchedKeys,
    /// Change-log entries, cursors in order.
    pub(crate) changes: Vec<Change>,
    /// The member list, when it changed.
    pub(crate) members: Option<Vec<NodeId>>,
    /// Make this commit, and everything before it, durable.
    pub(crate) durable: bool,
    /// Local writes to make durable, in sequence order (the commit is then durable).
    pub(crate) locals: Vec<Version>,
    /// Local writes numbered up to this are applied to the store (and so written with the
    /// rows and context of this commit or an earlier one): drop them from the write-ahead log.
    pub(crate) applied_through: Option<u64>,
    /// Answered once this commit was tried (with everything before it).
    pub(crate) notify: Vec<oneshot::Sender<()>>,
    /// The node task's write epoch: a failed commit of local writes refuses every later one
    /// of the same epoch, submitted before the node task heard of the failure.
    pub(crate) epoch: u64,
    /// Numbers of refused local writes (first, last) to remove from the write-ahead log, in
    /// case their failed commit reached the file after all.
    pub(crate) discard: Option<(u64, u64)>,
}

impl Storage {
    /// Opens (or creates) the database in `dir`; `None` keeps it in memory (nothing survives
    /// the process). Loads the replica it holds (applying local writes left in the write-ahead
    /// log) and starts the writer thread; committed changes go to `changes`, and each commit
    /// is reported on the returned receiver.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument named"
    )]
    pub(crate) fn open(
        dir: Option<&Path>,
        fault: Option<StorageFaultHook>,
        cache_bytes: usize,
        writer: Option<WriterId>,
        new_writer: WriterId,
        new_key: [u8; 32],
        store_config: StoreConfig,
        history_len: usize,
        log_len: u64,
        changes: broadcast::Sender<Change>,
    ) -> Result<(Storage, Loaded, mpsc::UnboundedReceiver<Done>), StorageError> {
        let location = match dir {
            Some(dir) => Location::Dir {
                dir: dir.to_path_buf(),
                fault,
                cache_bytes,
            },
            None => Location::Memory,
        };
        let db: SharedDatabase = Arc::new(RwLock::new(Some(Arc::new(backend::open_database(
            &location,
        )?))));
        let history_len = history_len.max(1);
        let (loaded, log) =
            load::load(&db, writer, new_writer, new_key, store_config, history_len)?;
        let (done_tx, done) = mpsc::unbounded_channel();
        let state = Writer {
            db: Arc::clone(&db),
            location,
            broken: false,
            history_len,
            log_len: log_len.max(1),
            log_entries: log.entries,
            log_reserved: log.reserved,
            kept: None,
            unsynced: None,
            lost: None,
            failing: false,
            failed_epoch: None,
            changes,
            done: done_tx,
            scratch: Vec::new(),
        };
        let (jobs, queue) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("confmesh-storage".into())
            .spawn(move || state.run(&queue))
            .map_err(StorageError::Thread)?;
        let storage = Storage {
            jobs: Some(jobs),
            writer: Some(thread),
            db,
            history_len,
            cursors: CursorSource {
                id: log.id,
                next: log.next,
            },
            sent_context: loaded
                .store
                .as_ref()
                .map(|s| {
                    s.digest()
                        .writers()
                        .map(|(w, seen)| (w, seen.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            sent_floor: loaded
                .store
                .as_ref()
                .map(|s| s.collected_floor().clone())
                .unwrap_or_default(),
            in_flight: 0,
        };
        Ok((storage, loaded, done))
    }

    /// Commits what is queued and closes the database, releasing the data directory; readers
    /// get [`StorageError::Unavailable`] from then on. Returns once the database is closed.
    pub(crate) fn close(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            let (reply, done) = std::sync::mpsc::sync_channel(1);
            if jobs.send(Job::Close(reply)).is_ok() {
                let _ = done.recv();
            }
        }
        if let Some(thread) = self.writer.take()
            && thread.join().is_err()
        {
            tracing::error!("the storage writer thread panicked");
        }
    }

    /// A handle for readers on other tasks (history, the change log).
    pub(crate) fn reader(&self) -> StorageReader {
        StorageReader {
            db: Arc::clone(&self.db),
            history_len: self.history_len,
        }
    }

    /// The cursor for the next change, advancing the log.
    pub(crate) fn next_cursor(&mut self) -> Cursor {
        let cursor = Cursor {
            log: self.cursors.id,
            seq: self.cursors.next,
        };
        self.cursors.next += 1;
        cursor
    }

    /// Whether another commit may be submitted now: fewer than [`MAX_IN_FLIGHT`] are
    /// outstanding, and none if it holds local writes.
    pub(crate) fn can_submit(&self, with_local_writes: bool) -> bool {
        let limit = if with_local_writes { 1 } else { MAX_IN_FLIGHT };
        self.in_flight < limit && self.jobs.is_some()
    }

    /// Commits outstanding.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records that the writer reported a commit done (a [`Done`] was received).
    pub(crate) fn completed(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Submits one commit: the store's rows of `keys`, the context and floor where they
    /// changed, and the rest of `work`. Returns at once; the writer reports a [`Done`]. A
    /// commit that fails is kept by the writer and retried with the next (its local writes
    /// excepted: they are refused, and reported so). Returns false if the writer is gone: no
    /// [`Done`] will come.
    pub(crate) fn submit(&mut self, store: &Store, work: Submission) -> bool {
        let keys = work
            .keys
            .into_iter()
            .map(|(key, touched)| {
                let rows = Rows {
                    versions: store.versions(&key).to_vec(),
                    new: touched == Touched::New,
                };
                (key, rows)
            })
            .collect();
        let batch = Batch {
            keys,
            context: self.changed_context(store),
            floor: self.changed_floor(store),
            members: work.members,
            changes: work.changes,
            durable: work.durable,
            applied_through: work.applied_through,
            discard: work.discard,
        };
        self.sent_context
            .extend(batch.context.iter().map(|(w, seen)| (*w, seen.clone())));
        if let Some(floor) = &batch.floor {
            self.sent_floor = floor.clone();
        }
        let Some(jobs) = &self.jobs else {
            return false;
        };
        let job = Job::Commit {
            batch: Box::new(batch),
            locals: work.locals,
            epoch: work.epoch,
            notify: work.notify,
        };
        if jobs.send(job).is_err() {
            tracing::error!("the storage writer is gone; changes not saved");
            self.jobs = None;
            return false;
        }
        self.in_flight += 1;
        true
    }

    /// The context entries that differ from what was sent; only those are cloned (this runs
    /// after every input, and the digest has an entry per writer in the cluster).
    fn changed_context(&self, store: &Store) -> BTreeMap<WriterId, SeqSet> {
        store
            .digest()
            .writers()
            .filter(|(writer, seen)| self.sent_context.get(writer) != Some(*seen))
            .map(|(writer, seen)| (writer, seen.clone()))
            .collect()
    }

    fn changed_floor(&self, store: &Store) -> Option<VClock> {
        (*store.collected_floor() != self.sent_floor).then(|| store.collected_floor().clone())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A list of `u64`s stored as consecutive little-endian words.
fn read_u64s(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    bytes.chunks_exact(8).map(read_u64).collect()
}

/// Encodes `value` into `buf` (cleared first: one buffer serves every row of a commit).
fn encode<'b, T: Serialize + ?Sized>(
    buf: &'b mut Vec<u8>,
    value: &T,
) -> Result<&'b [u8], StorageError> {
    buf.clear();
    bincode::serde::encode_into_std_write(value, buf, bincode::config::standard())
        .map_err(|e| StorageError::Corrupt(format!("cannot encode: {e}")))?;
    Ok(buf.as_slice())
}

/// The grounds of a version, if it carries any.
fn grounds_of(version: Option<&Version>) -> Option<&Grounds> {
    version
        .and_then(|v| v.seal.as_deref())
        .and_then(|s| s.grounds.as_deref())
}

/// Encodes a version row: the version, then its seal (`Option<Seal>`), then, only if it has
/// any, its [`Grounds`] (storage format 4). Rows of format 2 and before end after the version
/// and read as unsigned; rows without grounds are written as in format 3.
fn encode_version<'b>(buf: &'b mut Vec<u8>, version: &Version) -> Result<&'b [u8], StorageError> {
    buf.clear();
    let config = bincode::config::standard();
    bincode::serde::encode_into_std_write(version, buf, config)
        .and_then(|_| bincode::serde::encode_into_std_write(version.seal.as_deref(), buf, config))
        .and_then(|n| match grounds_of(Some(version)) {
            Some(grounds) => bincode::serde::encode_into_std_write(grounds, buf, config),
            None => Ok(n),
        })
        .map_err(|e| StorageError::Corrupt(format!("cannot encode: {e}")))?;
    Ok(buf.as_slice())
}

/// Decodes a version row written by [`encode_version`], or by a build of storage format 3 or
/// before (no grounds; before format 3, no seal).
fn decode_version(bytes: &[u8]) -> Result<Version, StorageError> {
    let corrupt = |e: wire::DecodeError| StorageError::Corrupt(e.to_string());
    let (mut version, used) = wire::decode_limited::<Version>(bytes).map_err(corrupt)?;
    let mut rest = &bytes[used..];
    if !rest.is_empty() {
        let (seal, more) = wire::decode_limited::<Option<Seal>>(rest).map_err(corrupt)?;
        version.seal = seal.map(Box::new);
        rest = &rest[more..];
    }
    if !rest.is_empty() {
        let (grounds, more) = wire::decode_limited::<Grounds>(rest).map_err(corrupt)?;
        if more != rest.len() {
            return Err(StorageError::Corrupt("trailing bytes in a row".into()));
        }
        attach(Some(&mut version), Some(grounds))?;
    }
    Ok(version)
}

/// Gives a decoded version the grounds its row carried: only a signed version has grounds,
/// and empty ones are written as none.
fn attach(version: Option<&mut Version>, grounds: Option<Grounds>) -> Result<(), StorageError> {
    let Some(grounds) = grounds else {
        return Ok(());
    };
    match version.and_then(|v| v.seal.as_mut()) {
        Some(seal) if !grounds.is_empty() => {
            seal.grounds = Some(Box::new(grounds));
            Ok(())
        }
        _ => Err(StorageError::Corrupt(
            "grounds on an unsigned version, or empty".into(),
        )),
    }
}

/// Encodes a change-log row: the change, then the seals of its old and new versions, then,
/// only if one of them has any, their grounds. Rows of format 2 and before end after the
/// change, and read as unsigned.
fn encode_change<'b>(buf: &'b mut Vec<u8>, change: &Change) -> Result<&'b [u8], StorageError> {
    buf.clear();
    let config = bincode::config::standard();
    fn seal(v: &Option<Version>) -> Option<&Seal> {
        v.as_ref().and_then(|v| v.seal.as_deref())
    }
    let seals = (seal(&change.old), seal(&change.new));
    let grounds = (
        grounds_of(change.old.as_ref()),
        grounds_of(change.new.as_ref()),
    );
    bincode::serde::encode_into_std_write(change, buf, config)
        .and_then(|_| bincode::serde::encode_into_std_write(seals, buf, config))
        .and_then(|n| match grounds {
            (None, None) => Ok(n),
            some => bincode::serde::encode_into_std_write(some, buf, config),
        })
        .map_err(|e| StorageError::Corrupt(format!("cannot encode: {e}")))?;
    Ok(buf.as_slice())
}

/// Decodes a change-log row written by [`encode_change`] or before format 4.
fn decode_change(bytes: &[u8]) -> Result<Change, StorageError> {
    let corrupt = |e: wire::DecodeError| StorageError::Corrupt(e.to_string());
    let (mut change, used) = wire::decode_limited::<Change>(bytes).map_err(corrupt)?;
    let mut rest = &bytes[used..];
    if !rest.is_empty() {
        let (seals, more) =
            wire::decode_limited::<(Option<Seal>, Option<Seal>)>(rest).map_err(corrupt)?;
        if let Some(old) = change.old.as_mut() {
            old.seal = seals.0.map(Box::new);
        }
        if let Some(new) = change.new.as_mut() {
            new.seal = seals.1.map(Box::new);
        }
        rest = &rest[more..];
    }
    if !rest.is_empty() {
        let ((old, new), more) =
            wire::decode_limited::<(Option<Grounds>, Option<Grounds>)>(rest).map_err(corrupt)?;
        if more != rest.len() {
            return Err(StorageError::Corrupt("trailing bytes in a row".into()));
        }
        attach(change.old.as_mut(), old)?;
        attach(change.new.as_mut(), new)?;
    }
    Ok(change)
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::proto::{Key, Payload};

    fn open(dir: &Path, changes: broadcast::Sender<Change>) -> (Storage, Loaded) {
        let (storage, loaded, _done) = Storage::open(
            Some(dir),
            None,
            1 << 20,
            None,
            WriterId(7),
            [7; 32],
            StoreConfig::default(),
            4,
            100,
            changes,
        )
        .expect("open");
        (storage, loaded)
    }

    /// A local write made durable in the write-ahead log, whose rows the node never got to
    /// commit (it crashed in between), is applied at the next start: stored, in the context,
    /// logged for watchers, and gone from the log.
    #[test]
    fn a_local_write_left_in_the_write_ahead_log_is_replayed_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (changes, _) = broadcast::channel(16);
        let (mut storage, loaded) = open(dir.path(), changes.clone());
        let mut store = Store::new(loaded.writer, StoreConfig::default());
        let key = Key::new("app/replayed").expect("key");
        let version = store
            .local_version(
                1_000,
                key.clone(),
                Payload::Value(Bytes::from_static(b"v")),
                1,
                None,
            )
            .expect("version");
        storage.submit(
            &store,
            Submission {
                locals: vec![version.clone()],
                ..Submission::default()
            },
        );
        // Closing drains the writer: the commit with the write-ahead entry is done. The
        // commit that would write the key's rows never happens.
        storage.close();
        drop(storage);

        let (storage, loaded) = open(dir.path(), changes);
        let store = loaded.store.expect("a replica");
        assert_eq!(store.get(&key), Some(&version));
        assert_eq!(store.last_local_seq(), 1);
        let reader = storage.reader();
        let (_, last) = reader.log_head().expect("log head");
        assert!(last >= 1, "the replayed write was not logged");
        let db = current(&storage.db).expect("db");
        let read = db.begin_read().expect("read");
        let wal = read.open_table(LOCAL_WRITES).expect("table");
        assert_eq!(wal.len().expect("len"), 0);
        drop((read, db));
        // Once more: nothing is replayed twice.
        drop(storage);
        let (_storage, loaded) = open(dir.path(), broadcast::channel(16).0);
        assert_eq!(loaded.store.expect("replica").get(&key), Some(&version));
    }

    fn grounded(seed: u8, key: &str, grounds: bool) -> Version {
        let writer = crate::proto::trust::WriterKey::from_seed([seed; 32]);
        let mut store = Store::new(writer.id(), StoreConfig::default());
        let version = store
            .put(1_000, Key::new(key).expect("key"), Bytes::from_static(b"v"))
            .expect("put");
        let mut context = VClock::new();
        context.dots.insert(WriterId(5), 2);
        let grounds = crate::proto::Grounds {
            context: if grounds { context } else { VClock::new() },
            proof: None,
        };
        writer.sign_grounded(version, Some("admin:ops".into()), None, grounds)
    }

    /// Rows keep a version's grounds (storage format 4), rows without grounds are written
    /// byte for byte as format 3 wrote them, and grounds on an unsigned version are refused as
    /// corrupt.
    #[test]
    fn version_and_change_rows_keep_grounds_and_rows_without_them_are_format_3s() {
        let mut buf = Vec::new();
        let with = grounded(1, "app/a", true);
        let bytes = encode_version(&mut buf, &with).expect("encode").to_vec();
        assert_eq!(decode_version(&bytes).expect("decode"), with);

        let without = grounded(1, "app/a", false);
        let bytes = encode_version(&mut buf, &without).expect("encode").to_vec();
        let mut format_3 = Vec::new();
        let config = bincode::config::standard();
        bincode::serde::encode_into_std_write(&without, &mut format_3, config).expect("encode");
        bincode::serde::encode_into_std_write(without.seal.as_deref(), &mut format_3, config)
            .expect("encode");
        assert_eq!(bytes, format_3);
        assert_eq!(decode_version(&bytes).expect("decode"), without);

        for (old, new) in [
            (Some(without.clone()), Some(with.clone())),
            (Some(with.clone()), None),
            (None, Some(without.clone())),
        ] {
            let change = Change {
                cursor: Cursor { log: 1, seq: 2 },
                key: Key::new("app/a").expect("key"),
                old,
                new,
                origin: WriterId(1),
            };
            let bytes = encode_change(&mut buf, &change).expect("encode").to_vec();
            assert_eq!(decode_change(&bytes).expect("decode"), change);
        }

        // A row whose grounds name an unsigned version, or whose grounds are empty.
        let mut unsigned = with.clone();
        unsigned.seal = None;
        let mut forged = Vec::new();
        bincode::serde::encode_into_std_write(&unsigned, &mut forged, config).expect("encode");
        bincode::serde::encode_into_std_write(None::<&Seal>, &mut forged, config).expect("encode");
        let grounds = with.seal.as_ref().and_then(|s| s.grounds.as_deref());
        bincode::serde::encode_into_std_write(grounds, &mut forged, config).expect("encode");
        assert!(matches!(
            decode_version(&forged),
            Err(StorageError::Corrupt(_))
        ));
        let mut empty = format_3;
        bincode::serde::encode_into_std_write(crate::proto::Grounds::default(), &mut empty, config)
            .expect("encode");
        assert!(matches!(
            decode_version(&empty),
            Err(StorageError::Corrupt(_))
        ));
    }
}
