//! Opening the database: a file in the data directory (optionally behind a fault-injecting
//! backend for tests), or memory.

use std::sync::Arc;

use redb::Database;

use super::{DATABASE_FILE, Location, StorageError, StorageFaultHook};

/// Opens (or creates) the database at `location`.
pub(super) fn open_database(location: &Location) -> Result<Database, StorageError> {
    let (dir, fault, cache_bytes) = match location {
        Location::Memory => {
            return Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| StorageError::Database(e.into()));
        }
        Location::Dir {
            dir,
            fault,
            cache_bytes,
        } => (dir, fault, *cache_bytes),
    };
    let directory_error = |source| StorageError::Directory {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(directory_error)?;
    let path = dir.join(DATABASE_FILE);
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes);
    let opened = match fault {
        None => builder.create(&path),
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
            builder.create_with_backend(FaultyBackend {
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
