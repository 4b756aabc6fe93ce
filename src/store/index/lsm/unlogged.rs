//! Blocks waiting in memory: the index changes of committed transactions that no run
//! (nor the index log) holds yet.
//!
//! A write transaction does not wait for its index changes to be computed. It records
//! the contacts it changed in the index journal (see `index::journal`) and hands them to
//! the index worker, which builds the transaction's block into a [`Slot`]. Once
//! `IndexLimits::log_blocks` blocks wait, the next write transaction merges them into a
//! new run and drops their journal entries (see `lsm::store_blocks`). Until then,
//! readers whose snapshot holds a journal entry read its block from the slot (waiting
//! for the worker if it is not built yet).
//!
//! Slots are keyed by journal sequence number. The writer adds a slot before the
//! commit that writes its journal entry, and removes it after the commit that stores
//! its block in a run. A reader takes its snapshot and the slots together
//! ([`Unlogged::begin_read`]), and a slot is only removed while no reader is doing so,
//! so every journal entry a snapshot holds has its slot among those the reader took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition};

use super::block::Block;
use super::cache::ChunkCache;
use crate::store::StoreError;

/// Journal sequence number → the contacts a transaction changed (see `index::journal`).
pub const INDEX_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("index_journal");

/// The index block of one transaction, once the index worker has built it.
#[derive(Default)]
pub struct Slot {
    block: Mutex<Option<Result<Option<Block>, StoreError>>>,
    ready: Condvar,
}

impl Slot {
    /// Stores the built block (`None`: the transaction changed no index entry).
    pub fn fill(&self, block: Result<Option<Block>, StoreError>) {
        let mut held = self.block.lock();
        if held.is_none() {
            *held = Some(block);
            self.ready.notify_all();
        }
    }

    /// The encoded size of the block, if it is built (`Some(0)` for none or a failure),
    /// without waiting.
    pub fn built_bytes(&self) -> Option<usize> {
        let held = self.block.lock();
        held.as_ref().map(|built| match built {
            Ok(Some(block)) => block.bytes().len(),
            Ok(None) | Err(_) => 0,
        })
    }

    /// Whether the worker failed to build the block.
    pub fn failed(&self) -> bool {
        matches!(*self.block.lock(), Some(Err(_)))
    }

    /// The block, once built.
    pub fn wait(&self) -> Result<Option<Block>, StoreError> {
        let mut held = self.block.lock();
        loop {
            if let Some(block) = held.as_ref() {
                return block.clone();
            }
            self.ready.wait(&mut held);
        }
    }
}

/// What a reader takes with its snapshot: the slots by journal sequence number, and the
/// cache of unpacked run chunks.
#[derive(Default)]
pub struct Held {
    pub slots: Vec<(u64, Arc<Slot>)>,
    pub cache: Option<Arc<ChunkCache>>,
}

/// The slots of the journal entries not yet in a run (shared by the writer and readers),
/// and the readers' chunk cache.
pub struct Unlogged {
    slots: RwLock<BTreeMap<u64, Arc<Slot>>>,
    cache: Arc<ChunkCache>,
    /// The next journal sequence number (the journal is empty when a store opens,
    /// unless damage kept it from being indexed: see `skip_to`).
    next: AtomicU64,
}

/// Bytes of unpacked run chunks the readers keep.
const CACHE_BYTES: usize = 64 << 20;

impl Default for Unlogged {
    fn default() -> Self {
        Self {
            slots: RwLock::default(),
            cache: Arc::new(ChunkCache::new(CACHE_BYTES)),
            next: AtomicU64::default(),
        }
    }
}

impl Unlogged {
    pub fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts journal sequence numbers at `next` (entries below it are held already).
    pub fn skip_to(&self, next: u64) {
        self.next.fetch_max(next, Ordering::Relaxed);
    }

    /// A read snapshot and the slots of every journal entry it may hold.
    pub fn begin_read(&self, db: &Database) -> Result<(ReadTransaction, Held), StoreError> {
        let slots = self.slots.read();
        let txn = db.begin_read()?;
        let held = Held {
            slots: cloned(&slots),
            cache: Some(Arc::clone(&self.cache)),
        };
        Ok((txn, held))
    }

    /// Every slot (for the writer: those of committed transactions, between its
    /// transactions).
    pub fn all(&self) -> Vec<(u64, Arc<Slot>)> {
        cloned(&self.slots.read())
    }

    pub fn add(&self, seq: u64, slot: Arc<Slot>) {
        self.slots.write().insert(seq, slot);
    }

    pub fn remove(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut slots = self.slots.write();
        for seq in seqs {
            slots.remove(seq);
        }
    }
}

fn cloned(slots: &BTreeMap<u64, Arc<Slot>>) -> Vec<(u64, Arc<Slot>)> {
    slots
        .iter()
        .map(|(&seq, slot)| (seq, Arc::clone(slot)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_the_block() {
        let slot = Arc::new(Slot::default());
        let reader = {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || slot.wait().unwrap().map(|b| b.len()))
        };
        let mut builder = super::super::block::BlockBuilder::default();
        builder.push(b"k", true);
        slot.fill(Ok(Some(Block::owned(builder.finish()).unwrap())));
        assert_eq!(reader.join().unwrap(), Some(1));
        // The first result stands.
        slot.fill(Ok(None));
        assert_eq!(slot.wait().unwrap().map(|b| b.len()), Some(1));
    }
}
