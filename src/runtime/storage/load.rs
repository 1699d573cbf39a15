//! Loading what a data directory holds at start.

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{
    CHANGES, CONTEXT, CURSOR_BLOCK, Change, Cursor, HISTORY, LOCAL_WRITES, Loaded, MAX_LOG_EPOCHS,
    META, META_COLLECTED, META_FORMAT, META_LOG_EPOCHS, META_LOG_ID, META_LOG_RESERVED,
    META_MEMBERS, META_WRITER, META_WRITER_KEY, STORAGE_FORMAT, SharedDatabase, StorageError,
    VERSIONS, current, decode, decode_version, encode, encode_change, read_u64, read_u64s,
    writer::{Rows, Writer},
};
use crate::proto::{
    Digest, SeqSet, Snapshot, Store, StoreConfig, Touched, VClock, Version, WriterId, node::NodeId,
    trust::WriterKey,
};

/// The change log's position in a database just opened.
pub(super) struct LogStart {
    /// The log's id, distinct per data directory and per in-memory node.
    pub(super) id: u64,
    /// The first sequence number to hand out.
    pub(super) next: u64,
    /// Sequence numbers below this are reserved durably.
    pub(super) reserved: u64,
    /// How many entries the table holds.
    pub(super) entries: u64,
}

/// A step from one storage format to the next, run inside the transaction that opens the
/// database: it commits with the new format number or not at all, so a crash mid-migration
/// leaves the old layout, never a mix.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StorageError>;

/// `MIGRATIONS[i]` takes format `i + 1` to `i + 2`. A later format adds its step here.
pub(super) const MIGRATIONS: [Migration; (STORAGE_FORMAT - 1) as usize] = [
    // 1 -> 2: the write-ahead log of local writes. Created empty for a directory of 989adcb
    // and before; builds from 798bc82 until format 2 wrote format 1 with this table already,
    // perhaps holding writes, which opening it keeps (and `load` replays).
    |txn| {
        txn.open_table(LOCAL_WRITES)?;
        Ok(())
    },
    // 2 -> 3: version rows may carry a seal after the version; format 2's rows, without one,
    // read as unsigned versions. Nothing to rewrite.
    |_| Ok(()),
    // 3 -> 4: version rows may carry grounds after the seal; format 3's rows, without them,
    // read as versions without grounds. Nothing to rewrite.
    |_| Ok(()),
];

/// Runs every migration from format `from` to [`STORAGE_FORMAT`].
fn migrate(txn: &redb::WriteTransaction, from: u64) -> Result<(), StorageError> {
    if from == 0 {
        return Err(StorageError::Corrupt("storage format 0".into()));
    }
    for (step, migration) in MIGRATIONS.iter().enumerate().skip((from - 1) as usize) {
        tracing::info!(
            from = step + 1,
            to = step + 2,
            "migrating the data directory"
        );
        migration(txn)?;
    }
    Ok(())
}

/// Reads the replica, the member list and the change log's position; records the writer id
/// in a new database and reserves the next block of cursors.
pub(super) fn load(
    shared: &SharedDatabase,
    configured: Option<WriterId>,
    new_writer: WriterId,
    new_key: [u8; 32],
    store_config: StoreConfig,
    history_len: usize,
) -> Result<(Loaded, LogStart), StorageError> {
    let db = current(shared)?;
    let mut log = LogStart {
        id: 0,
        next: 1,
        reserved: 0,
        entries: 0,
    };
    let txn = db.begin_write()?;
    let (writer, fresh, writer_key) = {
        let mut meta = txn.open_table(META)?;
        let format = meta.get(META_FORMAT)?.map(|v| read_u64(v.value()));
        match format {
            // A new directory: every table is created below.
            None => {}
            Some(Some(found)) if found > STORAGE_FORMAT => {
                return Err(StorageError::NewerFormat {
                    found,
                    supported: STORAGE_FORMAT,
                });
            }
            Some(Some(found)) => migrate(&txn, found)?,
            Some(None) => return Err(StorageError::Corrupt("unreadable format".into())),
        }
        meta.insert(META_FORMAT, STORAGE_FORMAT.to_le_bytes().as_slice())?;
        let stored = meta.get(META_WRITER)?.map(|v| read_u64(v.value()));
        let writer = match (stored, configured) {
            (Some(None), _) => return Err(StorageError::Corrupt("writer id".into())),
            (Some(Some(stored)), Some(configured)) if stored != configured.0 => {
                return Err(StorageError::WriterMismatch {
                    stored,
                    configured: configured.0,
                });
            }
            (Some(Some(stored)), Some(_)) => (WriterId(stored), false, None),
            (None, Some(configured)) => {
                meta.insert(META_WRITER, configured.0.to_le_bytes().as_slice())?;
                (configured, true, None)
            }
            // A writer with a key: its id is the key's (docs/PROTOCOL.md §7.2). A directory
            // of storage format 2 or before gets a new key, and writes under its id from now
            // on; its old id stays, a legacy (unsigned) writer.
            (stored, None) => {
                let held = meta.get(META_WRITER_KEY)?.map(|v| v.value().to_vec());
                let seed = match held {
                    Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| StorageError::Corrupt("writer key".into()))?,
                    None => {
                        meta.insert(META_WRITER_KEY, new_key.as_slice())?;
                        new_key
                    }
                };
                let key = WriterKey::from_seed(seed);
                let writer = key.id();
                if stored != Some(Some(writer.0)) {
                    meta.insert(META_WRITER, writer.0.to_le_bytes().as_slice())?;
                }
                (writer, stored.is_none(), Some(key))
            }
        };
        let (writer, fresh, writer_key) = writer;
        let reserved = meta
            .get(META_LOG_RESERVED)?
            .and_then(|v| read_u64(v.value()))
            .unwrap_or(1);
        // Continue past everything a previous run may have handed out.
        log.next = reserved;
        log.reserved = reserved + CURSOR_BLOCK;
        // Every start logs under a new id (random, as `new_writer` is). The ids of earlier
        // starts are kept with the first number after them (this start's first), so their
        // cursors resume, and one naming a number an earlier start never reached (it was
        // restored from a backup taken before) is refused. A directory restored from a backup
        // does not know the ids of the starts after it: their cursors are refused too.
        log.id = new_writer.0 ^ 0x636f_6e66_6d65_7368;
        let previous = meta.get(META_LOG_ID)?.map(|v| read_u64(v.value()));
        match previous {
            Some(Some(previous)) => {
                let stored = meta.get(META_LOG_EPOCHS)?.map(|v| read_u64s(v.value()));
                let mut epochs = match stored {
                    Some(Some(words)) if words.len().is_multiple_of(2) => words,
                    Some(_) => return Err(StorageError::Corrupt("log epochs".into())),
                    None => Vec::new(),
                };
                epochs.extend([previous, log.next]);
                let excess = epochs.len().saturating_sub(2 * MAX_LOG_EPOCHS);
                epochs.drain(..excess);
                let bytes: Vec<u8> = epochs.iter().flat_map(|e| e.to_le_bytes()).collect();
                meta.insert(META_LOG_EPOCHS, bytes.as_slice())?;
            }
            Some(None) => return Err(StorageError::Corrupt("log id".into())),
            None => {}
        }
        meta.insert(META_LOG_ID, log.id.to_le_bytes().as_slice())?;
        meta.insert(META_LOG_RESERVED, log.reserved.to_le_bytes().as_slice())?;
        (writer, fresh, writer_key)
    };
    // Create every table, so readers never find one missing.
    txn.open_table(VERSIONS)?;
    txn.open_table(CONTEXT)?;
    txn.open_table(HISTORY)?;
    txn.open_table(LOCAL_WRITES)?;
    log.entries = txn.open_table(CHANGES)?.len()?;
    txn.commit()?;
    let read = db.begin_read()?;
    let meta = read.open_table(META)?;
    let members: Vec<NodeId> = match meta.get(META_MEMBERS)? {
        Some(bytes) => decode(bytes.value())?,
        None => Vec::new(),
    };
    if fresh {
        return Ok((
            Loaded {
                writer,
                writer_key,
                store: None,
                members,
            },
            log,
        ));
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
        versions.push(decode_version(version.value())?);
    }
    tracing::info!(
        writer = writer.0,
        versions = versions.len(),
        members = members.len(),
        "replica loaded from disk"
    );
    let snapshot = Snapshot {
        after: None,
        through: None,
        versions,
        context,
        collected,
        part: 0,
        parts: 1,
    };
    let mut store = Store::restore(writer, store_config, snapshot)
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let mut wal = Vec::new();
    for row in read.open_table(LOCAL_WRITES)?.iter()? {
        let (_, version) = row?;
        wal.push(decode_version(version.value())?);
    }
    drop(meta);
    drop(read);
    if !wal.is_empty() {
        replay(&db, &mut store, wal, history_len, &mut log)?;
    }
    Ok((
        Loaded {
            writer,
            writer_key,
            store: Some(store),
            members,
        },
        log,
    ))
}

/// Applies the local writes a crash left in the write-ahead log (durable, acknowledged or
/// about to be, but not yet in the rows), then writes their keys' rows, the context and their
/// change-log entries and empties the log, in one durable commit.
fn replay(
    db: &redb::Database,
    store: &mut Store,
    wal: Vec<Version>,
    history_len: usize,
    log: &mut LogStart,
) -> Result<(), StorageError> {
    let count = wal.len();
    store.track_touched_keys();
    let mut changes = Vec::new();
    for version in wal {
        let old = store.get(&version.key).cloned();
        let applied = store
            .apply(version.clone())
            .map_err(|e| StorageError::Corrupt(format!("local write: {e}")))?;
        if applied.winner_changed() {
            let new = store.get(&version.key).cloned();
            let origin = store
                .versions(&version.key)
                .first()
                .map_or(version.dot.actor, |v| v.dot.actor);
            changes.push(Change {
                cursor: Cursor {
                    log: log.id,
                    seq: log.next,
                },
                key: version.key.clone(),
                old,
                new,
                origin,
            });
            log.next += 1;
        }
    }
    let touched = store.take_touched_keys();
    let mut scratch = Vec::new();
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut versions = txn.open_table(VERSIONS)?;
        let mut history = txn.open_table(HISTORY)?;
        for (key, touched) in touched {
            let rows = Rows {
                versions: store.versions(&key).to_vec(),
                new: touched == Touched::New,
            };
            Writer::write_key(
                &mut versions,
                &mut history,
                &mut scratch,
                history_len,
                &key,
                &rows,
            )?;
        }
        let mut context = txn.open_table(CONTEXT)?;
        let writer = store.writer();
        context.insert(writer.0, encode(&mut scratch, store.digest().seen(writer))?)?;
        let mut changes_table = txn.open_table(CHANGES)?;
        for change in &changes {
            changes_table.insert(change.cursor.seq, encode_change(&mut scratch, change)?)?;
            log.entries += 1;
        }
        if log.next >= log.reserved {
            log.reserved = log.next + CURSOR_BLOCK;
            let mut meta = txn.open_table(META)?;
            meta.insert(META_LOG_RESERVED, log.reserved.to_le_bytes().as_slice())?;
        }
        txn.open_table(LOCAL_WRITES)?.retain(|_, _| false)?;
    }
    txn.commit()?;
    tracing::info!(
        writes = count,
        "local writes replayed from the write-ahead log"
    );
    Ok(())
}
