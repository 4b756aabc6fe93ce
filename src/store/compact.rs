//! `contactd compact`: gives the data file's free pages back. redb never shrinks a file
//! on its own, and between checkpoints it cannot reuse pages the last checkpoint holds,
//! so a file grows past what it stores; compacting moves pages down and truncates it.
//! The store is opened first (so the write-ahead log's writes are in the file and the
//! log is empty), then closed, and the file compacted on its own.

use std::path::Path;

use redb::{Database, Durability};

use super::file;
use super::redb_store::{RedbStore, StoreOptions, DB_FILE};
use super::{Store, StoreError};

/// The file's size before and after, and the contacts it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
    pub contacts: u64,
}

/// Compacts the data file of `data_dir` (the server stopped).
pub fn run(data_dir: &Path, options: StoreOptions) -> Result<Compacted, StoreError> {
    // Applies what the log holds and ends with a checkpoint.
    let contacts = {
        let store = RedbStore::open_with(data_dir, options)?;
        let contacts = store.agents()?.iter().map(|a| a.contact_count).sum();
        store.shutdown();
        contacts
    };
    let path = data_dir.join(DB_FILE);
    let before = std::fs::metadata(&path)?.len();
    let mut db: Database = file::open(&path, options.cache_bytes)?;
    while db
        .compact()
        .map_err(|err| StoreError::Backend(format!("compacting: {err}")))?
    {}
    // Compaction's commits record no allocator state: one more commit does, so that
    // the file opens without a full check even after a crash.
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    txn.commit()?;
    drop(db);
    let after = std::fs::metadata(&path)?.len();
    Ok(Compacted {
        before,
        after,
        contacts,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::query::Query;
    use crate::store::{Start, Store};

    #[test]
    fn compacting_gives_pages_back_and_keeps_every_contact() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            crate::store::redb_store::tests_support::fill(&rt, &store, 3000);
            rt.block_on(store.delete_agent("a".into())).unwrap();
            crate::store::redb_store::tests_support::fill(&rt, &store, 100);
        }
        let done = run(dir.path(), StoreOptions::default()).unwrap();
        assert!(done.after < done.before, "{done:?}");
        let store = RedbStore::open(dir.path()).unwrap();
        let page = store
            .query_contacts("a", &Query::default(), &Start::Offset(0), 1000)
            .unwrap();
        assert_eq!(page.contacts.len(), 100);
        assert_eq!(store.check().unwrap().problem_count, 0);
    }
}
