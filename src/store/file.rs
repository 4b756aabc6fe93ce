//! The database file: redb's file backend, written one page at a time.
//!
//! Since Linux 6.16, ext4 caches file data in *large folios*: one write of 32 KiB makes
//! one 32 KiB folio, and readahead of a sequential read makes folios of up to several
//! MiB. The kernel tracks dirtiness per folio, so a later 4 KiB write into such a folio
//! dirties all of it, and the commit's `fdatasync` writes all of it to disk. redb writes
//! a large value (an index run chunk, a log block) as one multi-page write, and readers
//! and the merger read runs sequentially; once those pages are freed, redb reuses them
//! one at a time for B-tree pages. At a million contacts that made the disk writes of
//! single upserts 17–40 times the bytes written, and a fifth of the writer thread's time
//! went to the kernel walking those folios (`ext4_block_write_begin`, and writeback).
//! So writes go to the file one page at a time, which keeps the folios they make one page.
//! (Readahead still makes large folios, but in the measurements the writes were what
//! mattered: advising random access as well changed nothing measurable.)

use std::io;
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// redb's page size (its default, which the store keeps).
pub const PAGE: u64 = 4096;

/// The page cache when none is given (the `cache_mb` default). Pages it does not hold
/// are read from the operating system's page cache, which holds the file's hot pages
/// anyway: at a million contacts, 128 MiB wrote and read as fast as 2 GiB did. Each
/// cached 4 KiB page is one allocation of jemalloc's 5 KiB size class, so the cache
/// takes about 1.25 times its size; 112 MiB keeps the comparison bench's peak RSS at
/// 1M (server and load generators) near 450 MiB, where 128 MiB reached 488–509 MiB
/// (docs/performance.md).
pub const DEFAULT_CACHE: usize = 112 << 20;

/// Opens (or creates) the database at `path` over [`PageWrites`] of the file, keeping
/// at most `cache_bytes` of its pages in memory.
pub fn open(path: &Path, cache_bytes: usize) -> Result<Database, DatabaseError> {
    let file = super::data_dir::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(PageWrites::new(FileBackend::new(file)?))
}

/// A storage backend that passes every write on as writes of at most one page, each
/// within one page.
#[derive(Debug)]
pub struct PageWrites<B> {
    inner: B,
}

impl<B> PageWrites<B> {
    pub fn new(inner: B) -> Self {
        Self { inner }
    }
}

impl<B: StorageBackend> StorageBackend for PageWrites<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let room = PAGE - at % PAGE;
            let split = usize::try_from(room).map_or(rest.len(), |room| room.min(rest.len()));
            let (piece, tail) = rest.split_at(split);
            self.inner.write(at, piece)?;
            at += piece.len() as u64;
            rest = tail;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use proptest::prelude::*;
    use redb::{ReadableDatabase, TableDefinition};

    /// Storage in memory that records every write it is given.
    #[derive(Debug, Default)]
    struct Recorded {
        bytes: Mutex<Vec<u8>>,
        writes: Mutex<Vec<(u64, usize)>>,
    }

    impl StorageBackend for Recorded {
        fn len(&self) -> Result<u64, io::Error> {
            Ok(self.bytes.lock().len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            let bytes = self.bytes.lock();
            let start = usize::try_from(offset).unwrap();
            let src = bytes
                .get(start..start + out.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            out.copy_from_slice(src);
            Ok(())
        }

        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.bytes.lock().resize(usize::try_from(len).unwrap(), 0);
            Ok(())
        }

        fn sync_data(&self) -> Result<(), io::Error> {
            Ok(())
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.writes.lock().push((offset, data.len()));
            let mut bytes = self.bytes.lock();
            let start = usize::try_from(offset).unwrap();
            if bytes.len() < start + data.len() {
                bytes.resize(start + data.len(), 0);
            }
            bytes[start..start + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    proptest! {
        /// Whatever the offset and length, the bytes land where one write would have
        /// put them, in writes that each stay within one page.
        #[test]
        fn writes_are_split_at_page_boundaries(
            writes in proptest::collection::vec((0u64..40_000, 1usize..20_000, any::<u8>()), 1..8),
        ) {
            let split = PageWrites::new(Recorded::default());
            let direct = Recorded::default();
            for &(offset, len, byte) in &writes {
                let data = vec![byte; len];
                split.write(offset, &data).unwrap();
                direct.write(offset, &data).unwrap();
            }
            prop_assert_eq!(&*split.inner.bytes.lock(), &*direct.bytes.lock());
            for &(offset, len) in split.inner.writes.lock().iter() {
                prop_assert!(len as u64 <= PAGE);
                prop_assert_eq!(offset / PAGE, (offset + len as u64 - 1) / PAGE, "{} +{}", offset, len);
            }
            let asked: usize = writes.iter().map(|w| w.1).sum();
            let given: usize = split.inner.writes.lock().iter().map(|w| w.1).sum();
            prop_assert_eq!(asked, given);
        }
    }

    /// A database over page writes keeps values larger than a page, across a reopen.
    #[test]
    fn a_database_keeps_large_values_across_a_reopen() {
        const T: TableDefinition<u32, &[u8]> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let value: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        {
            let db = open(&path, DEFAULT_CACHE).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(T)
                .unwrap()
                .insert(1, value.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let db = open(&path, DEFAULT_CACHE).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        assert_eq!(table.get(1).unwrap().unwrap().value(), value.as_slice());
    }
}
