//! Log-structured storage for the sort and word indexes.
//!
//! A B-tree entry per index key would make every contact write touch ~25 random pages
//! of a large tree, each copied and written at commit. The indexes are instead:
//!
//! - **blocks waiting in memory** ([`unlogged`]): each write transaction that changes
//!   contacts records them in the index journal (`index_journal`), and the index worker
//!   builds the transaction's sorted [`block`] of index changes (key + present/removed)
//!   after it. Readers take the blocks of the journal entries in their snapshot from
//!   memory;
//! - **runs**: immutable sorted runs of chunks (`index_run_<id>`, chunk number →
//!   block, plus the first key of every chunk under [`DIRECTORY`]), listed with their
//!   entry counts in `index_runs`. A larger id is a newer run;
//! - the **index log** (`index_log`): blocks stored as redb values. Only opening a
//!   store writes them: the changes of journal entries a stopped process left behind
//!   (a data dir written by an older release may hold more); the next flush takes
//!   them in.
//!
//! When `IndexLimits::log_blocks` transactions' blocks wait (or `log_bytes` of them),
//! the next write transaction merges them and the log into a new run (a *flush*,
//! [`store_blocks`]) and drops their journal entries, so an index entry is not written
//! once more to the log first. When `fanout` runs of the same size class are the
//! newest, they are merged into one (size-tiered compaction), so an entry is rewritten
//! a few times in sequential chunks rather than once per page. Merges are planned by the flushing transaction and carried out by the
//! merger thread beside the writer ([`compaction`]). Removed keys are kept as
//! tombstones until a merge includes the oldest run.
//!
//! Readers see one snapshot of the log and the runs, plus the blocks of the journal
//! entries in that snapshot, and merge them ([`merge`]): for a key the newest source
//! wins. The journal, the log and the runs live in the redb file and change only inside
//! write transactions, so a read snapshot is consistent and a crash loses nothing that
//! was committed: opening the store computes the changes of the journal entries left
//! behind and logs them (`index::journal::replay`).
//!
//! Keys are the index's byte key (see `keys`) behind one tag byte naming the index.

pub mod block;
pub mod cache;
pub mod compaction;
pub mod merge;
pub mod unlogged;

use std::sync::Arc;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    TableHandle, WriteTransaction,
};

use self::block::{Block, BlockBuilder};
use self::cache::ChunkCache;
use self::compaction::{RunBuilder, INDEX_MERGES};
use self::merge::{ChunkTable, Chunks, Merged, Run, Single};
use self::unlogged::{Held, INDEX_JOURNAL};
use crate::store::StoreError;

/// Sequence number → a block of index changes.
pub const INDEX_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("index_log");
/// Run id → entries in the run.
pub const INDEX_RUNS: TableDefinition<u64, u64> = TableDefinition::new("index_runs");
/// Counters of the log and the runs.
pub const INDEX_STATE: TableDefinition<&str, u64> = TableDefinition::new("index_state");
/// The key of a run table that holds its chunk directory.
pub const DIRECTORY: u32 = u32::MAX;

const META_NEXT_RUN: &str = "index_next_run";
const META_LOG_BYTES: &str = "index_log_bytes";

pub const RUN_PREFIX: &str = "index_run_";
const LEGACY_STATE: [&str; 5] = [
    "merge_output",
    "merge_from",
    "merge_to",
    "merge_bottom",
    "merge_entries",
];

fn run_name(id: u64) -> String {
    format!("{RUN_PREFIX}{id}")
}

fn run_table(name: &str) -> TableDefinition<'_, u32, &'static [u8]> {
    TableDefinition::new(name)
}

/// The two indexes kept here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Sort = 0,
    Words = 1,
}

impl Index {
    fn tag(self) -> u8 {
        self as u8
    }
}

/// When waiting blocks are flushed and runs are merged. The defaults suit millions of
/// entries; tests shrink them so a few contacts go through flushes and merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Blocks waiting in memory (transactions' index changes) that trigger a flush;
    /// likewise blocks in the log (which opening a store writes).
    pub log_blocks: u64,
    /// Bytes of waiting (or of logged) blocks that trigger a flush.
    pub log_bytes: u64,
    /// Target size of a run's chunk.
    pub chunk_bytes: usize,
    /// Runs of one size class merged together.
    pub fanout: u64,
    /// Entries of the smallest size class.
    pub base_entries: u64,
    /// Most entries of its inputs a merge reads per step (one write transaction stores
    /// each step's chunks).
    pub merge_step: u64,
    /// Most key bytes of its inputs a merge reads per step: the step's chunks are held
    /// in memory until stored, and keys may be long (a text attribute's value).
    pub merge_step_bytes: u64,
    /// Milliseconds without writes after which the log is flushed and runs of
    /// comparable size are merged (see `compaction::plan_idle`).
    pub idle_ms: u64,
}

impl Default for IndexLimits {
    fn default() -> Self {
        Self {
            log_blocks: 8,
            log_bytes: 16 << 20,
            chunk_bytes: 32 << 10,
            fanout: 6,
            base_entries: 16 << 10,
            merge_step: 512 << 10,
            merge_step_bytes: 16 << 20,
            idle_ms: 1000,
        }
    }
}

impl IndexLimits {
    fn class(&self, entries: u64) -> u32 {
        let mut class = 0;
        let mut bound = self.base_entries.max(1);
        while entries > bound {
            class += 1;
            bound = bound.saturating_mul(self.fanout.max(2));
        }
        class
    }
}

/// The log and the runs of one transaction, newest first.
pub struct IndexTables<T> {
    log: Vec<Single>,
    runs: Vec<Run<T>>,
    /// Entries in each run of `runs`, in the same order.
    run_entries: Vec<u64>,
}

/// What a read snapshot sees of the indexes.
pub type IndexView = IndexTables<ReadOnlyTable<u32, &'static [u8]>>;

/// `key` of `index` as stored: behind the index's tag.
fn tagged(index: Index, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(index.tag());
    out.extend_from_slice(key);
    out
}

impl IndexView {
    /// The indexes as `txn` has them: its log and runs, and the blocks of its journal
    /// entries not yet logged, from `held` (taken with the snapshot).
    pub fn open(txn: &ReadTransaction, held: &Held) -> Result<Self, StoreError> {
        let mut log = Vec::new();
        for row in txn.open_table(INDEX_JOURNAL)?.iter()?.rev() {
            let seq = row?.0.value();
            let slot = held.slots.iter().find(|(s, _)| *s == seq).ok_or_else(|| {
                StoreError::Corrupt(format!("index journal entry {seq} has no block"))
            })?;
            if let Some(block) = slot.1.wait()? {
                log.push(Single(block));
            }
        }
        let table = txn.open_table(INDEX_LOG)?;
        for row in table.range::<u64>(..)?.rev() {
            log.push(Single(Block::stored(row?.1)?));
        }
        let mut runs = Vec::new();
        let mut run_entries = Vec::new();
        for row in txn.open_table(INDEX_RUNS)?.iter()?.rev() {
            let (id, entries) = row?;
            let cache = held.cache.clone();
            runs.push(open_run_read(txn, id.value(), cache)?);
            run_entries.push(entries.value());
        }
        Ok(Self {
            log,
            runs,
            run_entries,
        })
    }
}

impl<'txn> IndexTables<Table<'txn, u32, &'static [u8]>> {
    /// The indexes as a write transaction has them (values copied out).
    fn open_write(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let mut log = Vec::new();
        for row in txn.open_table(INDEX_LOG)?.iter()?.rev() {
            log.push(Single(Block::owned(row?.1.value().to_vec())?));
        }
        let sizes: Vec<(u64, u64)> = txn
            .open_table(INDEX_RUNS)?
            .iter()?
            .rev()
            .map(|row| row.map(|(id, n)| (id.value(), n.value())))
            .collect::<Result<_, _>>()?;
        let mut runs = Vec::new();
        for &(id, _) in &sizes {
            runs.push(open_run_write(txn, id)?);
        }
        Ok(Self {
            log,
            runs,
            run_entries: sizes.into_iter().map(|(_, n)| n).collect(),
        })
    }
}

/// Run `id` of a snapshot; `cache` keeps the chunks it unpacks for later reads.
fn open_run_read(
    txn: &ReadTransaction,
    id: u64,
    cache: Option<Arc<ChunkCache>>,
) -> Result<Run<ReadOnlyTable<u32, &'static [u8]>>, StoreError> {
    let name = run_name(id);
    let table = txn.open_table(run_table(&name))?;
    let firsts = table
        .get(DIRECTORY)?
        .ok_or_else(|| StoreError::Corrupt(format!("index run {id} has no directory")))?;
    Ok(Run {
        id,
        firsts: Block::stored(firsts)?,
        table,
        cache,
    })
}

fn open_run_write(
    txn: &WriteTransaction,
    id: u64,
) -> Result<Run<Table<'_, u32, &'static [u8]>>, StoreError> {
    let name = run_name(id);
    let table = txn.open_table(run_table(&name))?;
    let firsts = table
        .get(DIRECTORY)?
        .map(|guard| Block::owned(guard.value().to_vec()))
        .transpose()?
        .ok_or_else(|| StoreError::Corrupt(format!("index run {id} has no directory")))?;
    Ok(Run {
        id,
        firsts,
        table,
        cache: None,
    })
}

impl<T: ChunkTable> IndexTables<T> {
    fn all(&self) -> Vec<&dyn Chunks> {
        let log = self.log.iter().map(|s| s as &dyn Chunks);
        log.chain(self.runs.iter().map(|r| r as &dyn Chunks))
            .collect()
    }

    /// The keys of `index` from `lower` to below `upper` (without one: to the end of the
    /// index), ascending or descending.
    pub fn range(
        &self,
        index: Index,
        lower: &[u8],
        upper: Option<&[u8]>,
        descending: bool,
    ) -> Result<Merged<'_>, StoreError> {
        let upper = match upper {
            Some(upper) => tagged(index, upper),
            None => vec![index.tag() + 1],
        };
        Merged::new(
            &self.all(),
            tagged(index, lower),
            upper,
            descending,
            false,
            1,
        )
    }

    /// The contact numbers the present keys of `index` from `lower` to below `upper` end
    /// with, in no order and possibly repeated: [`IndexView::range`]'s `ids()`, read
    /// without merging (see [`merge::unordered_ids`]).
    pub fn ids_in(&self, index: Index, lower: &[u8], upper: &[u8]) -> Result<Vec<u64>, StoreError> {
        merge::unordered_ids(&self.all(), &tagged(index, lower), &tagged(index, upper))
    }

    /// Whether the keys of `index` from `lower` to below `upper` surely outnumber `n`,
    /// judged from the runs' chunk directories alone (no chunk is read): some run has
    /// whole chunks inside the range whose entries, at that run's average per chunk, are
    /// more than twice `n`. An estimate for choosing how to read a range, never for what
    /// a read returns; `false` says nothing.
    pub fn surely_more_than(&self, index: Index, lower: &[u8], upper: &[u8], n: u64) -> bool {
        let tagged = |key: &[u8]| tagged(index, key);
        let (lower, upper) = (tagged(lower), tagged(upper));
        self.runs
            .iter()
            .zip(&self.run_entries)
            .any(|(run, &entries)| {
                let chunks = run.count();
                // Chunk `i` lies inside the range when its first key is at or above `lower`
                // and the next chunk's first key is at or below `upper`.
                let from = merge::partition(chunks, |i| run.first(i) < lower.as_slice());
                let upto = merge::partition(chunks, |i| run.first(i) <= upper.as_slice());
                let whole = upto.saturating_sub(1).saturating_sub(from) as u64;
                let per_chunk = entries / (chunks.max(1) as u64);
                whole.saturating_mul(per_chunk) > n.saturating_mul(2)
            })
    }

    /// Whether `index` holds `key`.
    #[cfg(test)]
    pub fn contains(&self, index: Index, key: &[u8]) -> Result<bool, StoreError> {
        let mut end = key.to_vec();
        end.push(0);
        self.range(index, key, Some(&end), false)?.advance()
    }
}

/// One index change: the key, and whether it is now present.
pub type Op = (Index, Vec<u8>, bool);

/// Index changes in key order, one per key (the last change of a key wins).
#[derive(Debug, Default, PartialEq)]
pub struct Sorted(Vec<Op>);

impl Sorted {
    /// Sorts `ops` given in the order they were made.
    pub fn new(ops: Vec<Op>) -> Self {
        if ops.is_empty() {
            return Self(ops);
        }
        // Sorted by (index, key, position), so the last change of a key comes last. The
        // keys usually share a long prefix (the agent), so they are compared first by
        // the 8 bytes after the prefix they all share.
        let shared = ops.iter().skip(1).fold(ops[0].1.len(), |n, (_, key, _)| {
            n.min(
                key.iter()
                    .zip(&ops[0].1)
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        });
        let head = |key: &[u8]| {
            let mut bytes = [0u8; 8];
            let tail = key.get(shared..).unwrap_or_default();
            let n = tail.len().min(8);
            bytes[..n].copy_from_slice(&tail[..n]);
            u64::from_be_bytes(bytes)
        };
        let mut order: Vec<(u8, u64, usize)> = ops
            .iter()
            .enumerate()
            .map(|(i, (index, key, _))| (index.tag(), head(key), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| ops[a.2].1.cmp(&ops[b.2].1))
                .then(a.2.cmp(&b.2))
        });
        let mut slots: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
        let mut out: Vec<Op> = Vec::with_capacity(slots.len());
        for &(_, _, i) in &order {
            let Some(op) = slots[i].take() else { continue };
            match out.last_mut() {
                Some(last) if last.0 == op.0 && last.1 == op.1 => *last = op,
                _ => out.push(op),
            }
        }
        Self(out)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Index changes gathered in a write transaction, written to the log by
/// [`Changes::commit`]: changes made one by one, and runs of changes sorted elsewhere
/// (the index worker's), in the order they were made.
#[derive(Default)]
pub struct Changes {
    /// Changes since the last sorted run was added.
    ops: Vec<Op>,
    sorted: Vec<Sorted>,
}

impl Changes {
    #[cfg(test)]
    pub fn put(&mut self, index: Index, key: Vec<u8>) {
        self.ops.push((index, key, true));
    }

    pub fn remove(&mut self, index: Index, key: Vec<u8>) {
        self.ops.push((index, key, false));
    }

    /// Adds changes made after every change so far.
    pub fn add_sorted(&mut self, sorted: Sorted) {
        self.seal();
        if !sorted.is_empty() {
            self.sorted.push(sorted);
        }
    }

    fn seal(&mut self) {
        if !self.ops.is_empty() {
            let ops = std::mem::take(&mut self.ops);
            self.sorted.push(Sorted::new(ops));
        }
    }

    fn len(&self) -> usize {
        self.ops.len() + self.sorted.iter().map(Sorted::len).sum::<usize>()
    }

    /// The changes as one log block (the last change of a key wins); `None` when there
    /// are none.
    pub fn into_block(mut self) -> Option<Block> {
        self.seal();
        if self.sorted.is_empty() {
            return None;
        }
        let runs = std::mem::take(&mut self.sorted);
        let bytes: usize = runs
            .iter()
            .flat_map(|run| run.0.iter())
            .map(|op| op.1.len() + 6)
            .sum();
        let mut builder = BlockBuilder::with_capacity(bytes);
        let mut key = Vec::new();
        for (index, bytes, present) in &merge_runs(runs).0 {
            key.clear();
            key.push(index.tag());
            key.extend_from_slice(bytes);
            builder.push(&key, *present);
        }
        Block::owned(builder.finish()).ok()
    }

    /// Writes the changes as one log block (see [`append_block`]).
    pub fn commit(self, txn: &WriteTransaction, limits: IndexLimits) -> Result<bool, StoreError> {
        match self.into_block() {
            Some(block) => append_block(txn, &block, limits),
            None => Ok(false),
        }
    }
}

/// Adds a block of changes (newer than every change so far) to the log, then flushes the
/// log into a run and plans merges as the limits say; returns whether it flushed
/// (merges may be due: see [`compaction`]).
pub fn append_block(
    txn: &WriteTransaction,
    block: &Block,
    limits: IndexLimits,
) -> Result<bool, StoreError> {
    let size = block.bytes().len() as u64;
    let blocks = {
        let mut log = txn.open_table(INDEX_LOG)?;
        let seq = log.last()?.map_or(0, |(k, _)| k.value() + 1);
        log.insert(seq, block.bytes())?;
        log.len()?
    };
    let bytes = {
        let mut state = txn.open_table(INDEX_STATE)?;
        let bytes = state.get(META_LOG_BYTES)?.map_or(0, |v| v.value()) + size;
        state.insert(META_LOG_BYTES, bytes)?;
        bytes
    };
    if blocks >= limits.log_blocks || bytes >= limits.log_bytes {
        store_blocks(txn, &[], limits)?;
        return Ok(true);
    }
    Ok(false)
}

/// Merges sorted runs of changes (oldest first) into one; for a key in more than one
/// run, only the change of the latest run is kept. Adjacent runs are merged in pairs,
/// round after round: each round compares every entry once, in order, where a heap over
/// all runs costs several comparisons per entry.
fn merge_runs(mut runs: Vec<Sorted>) -> Sorted {
    while runs.len() > 1 {
        let mut next = Vec::with_capacity(runs.len().div_ceil(2));
        let mut pairs = runs.into_iter();
        while let Some(older) = pairs.next() {
            next.push(match pairs.next() {
                Some(newer) => merge_two(older, newer),
                None => older,
            });
        }
        runs = next;
    }
    runs.pop().unwrap_or_default()
}

/// Merges two sorted runs; on a key in both, the `newer` run's change wins.
fn merge_two(older: Sorted, newer: Sorted) -> Sorted {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.0.into_iter().peekable();
    let mut newer = newer.0.into_iter().peekable();
    loop {
        let order = match (older.peek(), newer.peek()) {
            (Some(a), Some(b)) => (a.0.tag(), a.1.as_slice()).cmp(&(b.0.tag(), b.1.as_slice())),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(older.next()),
            std::cmp::Ordering::Greater => out.extend(newer.next()),
            std::cmp::Ordering::Equal => {
                older.next();
                out.extend(newer.next());
            }
        }
    }
    Sorted(out)
}

/// Stores `blocks` (oldest first, each newer than everything in the log and the runs)
/// in a new run, together with whatever the log holds, and plans the merges that are
/// then due: the writer's flush of the blocks of earlier transactions, which go from
/// memory straight into a run (see [`unlogged`]).
pub fn store_blocks(
    txn: &WriteTransaction,
    blocks: &[Block],
    limits: IndexLimits,
) -> Result<(), StoreError> {
    flush(txn, limits, blocks)?;
    compaction::plan_all(txn, limits)
}

/// Merges the log and `newer` (blocks newer than the log, oldest first) into a new run
/// and empties the log.
fn flush(txn: &WriteTransaction, limits: IndexLimits, newer: &[Block]) -> Result<(), StoreError> {
    let log: Vec<Single> = {
        let table = txn.open_table(INDEX_LOG)?;
        let rows = table.iter()?.rev();
        let stored = rows.map(|row| Ok(Single(Block::owned(row?.1.value().to_vec())?)));
        let newest_first = newer.iter().rev().map(|b| Ok(Single(b.clone())));
        newest_first
            .chain(stored)
            .collect::<Result<_, StoreError>>()?
    };
    let bottom = txn.open_table(INDEX_RUNS)?.is_empty()?;
    let sources: Vec<&dyn Chunks> = log.iter().map(|s| s as &dyn Chunks).collect();
    let mut merged = Merged::new(&sources, Vec::new(), vec![u8::MAX; 2], false, !bottom, 0)?;
    let mut run = RunBuilder::new(limits.chunk_bytes);
    while merged.advance()? {
        run.push(merged.raw_key(), merged.present());
    }
    let (chunks, directory, entries) = run.finish();
    if entries > 0 {
        let id = next_run_id(txn)?;
        let name = run_name(id);
        let mut table = txn.open_table(run_table(&name))?;
        if !table.is_empty()? {
            return Err(StoreError::Corrupt(format!(
                "index run {id} exists already"
            )));
        }
        for (n, chunk) in (0u32..).zip(&chunks) {
            table.insert(n, chunk.as_slice())?;
        }
        table.insert(DIRECTORY, directory.as_slice())?;
        txn.open_table(INDEX_RUNS)?.insert(id, entries)?;
    }
    txn.open_table(INDEX_LOG)?.retain(|_, _| false)?;
    txn.open_table(INDEX_STATE)?.insert(META_LOG_BYTES, 0)?;
    Ok(())
}

/// Run ids and entry counts, oldest first.
fn run_sizes(runs: &impl ReadableTable<u64, u64>) -> Result<Vec<(u64, u64)>, StoreError> {
    let rows = runs
        .iter()?
        .map(|row| row.map(|(id, n)| (id.value(), n.value())));
    Ok(rows.collect::<Result<_, _>>()?)
}

fn next_run_id(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut state = txn.open_table(INDEX_STATE)?;
    let id = state.get(META_NEXT_RUN)?.map_or(0, |v| v.value());
    state.insert(META_NEXT_RUN, id + 1)?;
    Ok(id)
}

fn drop_runs(txn: &WriteTransaction, ids: &[u64]) -> Result<(), StoreError> {
    let mut runs = txn.open_table(INDEX_RUNS)?;
    for &id in ids {
        runs.remove(id)?;
        let name = run_name(id);
        txn.delete_table(run_table(&name))?;
    }
    Ok(())
}

/// Removes every key that starts with `prefix` from `index`, in log blocks of a bounded
/// size.
pub fn remove_prefix(
    txn: &WriteTransaction,
    index: Index,
    prefix: &[u8],
    upper: &[u8],
    limits: IndexLimits,
) -> Result<(), StoreError> {
    const BATCH: usize = 1 << 20;
    let mut from = prefix.to_vec();
    loop {
        let mut changes = Changes::default();
        {
            let sources = IndexTables::open_write(txn)?;
            let mut merged = sources.range(index, &from, Some(upper), false)?;
            while changes.len() < BATCH && merged.advance()? {
                changes.remove(index, merged.key().to_vec());
            }
        }
        let Some((_, last, _)) = changes.ops.last().cloned() else {
            return Ok(());
        };
        from = last;
        from.push(0);
        changes.commit(txn, limits)?;
    }
}

/// Deletes the log, the journal and every run (before the indexes are built anew),
/// creating the tables when missing.
pub fn clear(txn: &WriteTransaction) -> Result<(), StoreError> {
    // Every run table, listed or not (an unfinished merge's output).
    let names: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with(RUN_PREFIX))
        .collect();
    for name in names {
        txn.delete_table(run_table(&name))?;
    }
    txn.open_table(INDEX_RUNS)?.retain(|_, _| false)?;
    txn.open_table(INDEX_MERGES)?.retain(|_, _| false)?;
    // The record of the single merge of index layout 2.
    let mut state = txn.open_table(INDEX_STATE)?;
    for key in LEGACY_STATE {
        state.remove(key)?;
    }
    drop(state);
    txn.open_table(INDEX_LOG)?.retain(|_, _| false)?;
    txn.open_table(INDEX_STATE)?.insert(META_LOG_BYTES, 0)?;
    // What the journal records is rebuilt from the contacts as well.
    txn.open_table(INDEX_JOURNAL)?.retain(|_, _| false)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::compaction::{self, apply_step, round, Applied, Progress};
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase};
    use std::collections::{BTreeSet, HashMap};

    const TINY: IndexLimits = IndexLimits {
        log_blocks: 2,
        log_bytes: 1 << 20,
        chunk_bytes: 24,
        fanout: 2,
        base_entries: 3,
        // Merges of more than 40 entries take several steps.
        merge_step: 40,
        merge_step_bytes: 1 << 20,
        idle_ms: 1,
    };

    /// A database with the index tables created and empty.
    fn empty_db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        clear(&txn).unwrap();
        txn.commit().unwrap();
        (dir, db)
    }

    /// Up to `rounds` rounds of merge steps as the merger thread takes them: built from
    /// a snapshot, each stored in a write transaction of its own.
    fn merge_rounds(db: &Database, progress: &mut HashMap<u64, Progress>, rounds: usize) {
        for _ in 0..rounds {
            let busy = round(db, progress, TINY, |step| {
                let txn = db.begin_write()?;
                let applied = apply_step(&txn, step, TINY)?;
                txn.commit()?;
                Ok(applied)
            })
            .unwrap();
            if !busy {
                return;
            }
        }
    }

    fn index_of(sort: bool) -> Index {
        if sort {
            Index::Sort
        } else {
            Index::Words
        }
    }

    /// Every key of `index` in the model between the bounds, in the asked order.
    fn model_range(
        model: &BTreeSet<(u8, Vec<u8>)>,
        index: Index,
        lower: &[u8],
        upper: Option<&[u8]>,
        descending: bool,
    ) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = model
            .iter()
            .filter(|(tag, key)| {
                *tag == index.tag()
                    && key.as_slice() >= lower
                    && upper.is_none_or(|u| key.as_slice() < u)
            })
            .map(|(_, key)| key.clone())
            .collect();
        if descending {
            keys.reverse();
        }
        keys
    }

    fn view_range(
        view: &IndexView,
        index: Index,
        lower: &[u8],
        upper: Option<&[u8]>,
        descending: bool,
    ) -> Vec<Vec<u8>> {
        let mut range = view.range(index, lower, upper, descending).unwrap();
        let mut out = Vec::new();
        while range.advance().unwrap() {
            out.push(range.key().to_vec());
        }
        out
    }

    type Op = (bool, Vec<u8>, bool);

    fn ops() -> impl Strategy<Value = Vec<Vec<Op>>> {
        let key = proptest::collection::vec(0u8..4, 0..4);
        let op = (any::<bool>(), key, proptest::bool::weighted(0.7));
        proptest::collection::vec(proptest::collection::vec(op, 0..12), 1..25)
    }

    proptest! {
        /// Changes sorted in pieces and merged come out as if sorted together: key
        /// order, one change per key, the latest one.
        #[test]
        fn sorted_pieces_merge_like_one_sort(
            ops in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(0u8..4, 0..3), any::<bool>()), 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..5),
        ) {
            let ops: Vec<super::Op> = ops
                .into_iter()
                .map(|(words, key, present)| {
                    (if words { Index::Words } else { Index::Sort }, key, present)
                })
                .collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(ops.len())).collect();
            cuts.push(0);
            cuts.push(ops.len());
            cuts.sort_unstable();
            let pieces: Vec<Sorted> = cuts
                .windows(2)
                .map(|w| Sorted::new(ops[w[0]..w[1]].to_vec()))
                .collect();
            let merged = merge_runs(pieces).0;
            let mut last: std::collections::BTreeMap<(u8, Vec<u8>), bool> = Default::default();
            for (index, key, present) in &ops {
                last.insert((index.tag(), key.clone()), *present);
            }
            let expected: Vec<super::Op> = last
                .into_iter()
                .map(|((tag, key), present)| {
                    (if tag == Index::Words.tag() { Index::Words } else { Index::Sort }, key, present)
                })
                .collect();
            prop_assert_eq!(&merged, &expected);
            prop_assert_eq!(Sorted::new(ops).0, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Through commits, flushes, merges (tombstones kept and dropped) and chunk
        /// boundaries, ranges read the same keys as a plain set given the same changes.
        #[test]
        fn the_log_and_runs_read_like_a_set(
            txns in ops(),
            lower in proptest::collection::vec(0u8..4, 0..3),
            upper in proptest::option::of(proptest::collection::vec(0u8..5, 0..3)),
            jump in proptest::collection::vec(0u8..4, 0..4),
        ) {
            let (_dir, db) = empty_db();
            let mut model = BTreeSet::new();
            let mut progress = HashMap::new();
            let last = txns.len() - 1;
            for (n, ops) in txns.into_iter().enumerate() {
                let txn = db.begin_write().unwrap();
                let mut changes = Changes::default();
                for (sort, key, present) in ops {
                    let index = index_of(sort);
                    if present {
                        model.insert((index.tag(), key.clone()));
                        changes.put(index, key);
                    } else {
                        model.remove(&(index.tag(), key.clone()));
                        changes.remove(index, key);
                    }
                }
                changes.commit(&txn, TINY).unwrap();
                txn.commit().unwrap();
                // A step of each merge in flight between transactions; at the end, every
                // merge to completion, then what the merger does once writes stop.
                if n == last {
                    merge_rounds(&db, &mut progress, usize::MAX);
                    let txn = db.begin_write().unwrap();
                    compaction::plan_idle(&txn, TINY).unwrap();
                    txn.commit().unwrap();
                    merge_rounds(&db, &mut progress, usize::MAX);
                } else {
                    merge_rounds(&db, &mut progress, 1);
                }

                let txn = db.begin_read().unwrap();
                let view = IndexView::open(&txn, &Held::default()).unwrap();
                for index in [Index::Sort, Index::Words] {
                    for descending in [false, true] {
                        let upper = upper.as_deref();
                        prop_assert_eq!(
                            view_range(&view, index, &lower, upper, descending),
                            model_range(&model, index, &lower, upper, descending)
                        );
                    }
                    for (_, key) in &model {
                        let held = model.contains(&(index.tag(), key.clone()));
                        prop_assert_eq!(view.contains(index, key).unwrap(), held);
                    }
                    // Reading one key, then seeking to `jump`, reads on from there.
                    let upper = upper.as_deref();
                    let mut range = view.range(index, &lower, upper, false).unwrap();
                    let mut read = Vec::new();
                    if range.advance().unwrap() {
                        read.push(range.key().to_vec());
                        if read[0] < jump {
                            range.seek(&jump).unwrap();
                        }
                        while range.advance().unwrap() {
                            read.push(range.key().to_vec());
                        }
                    }
                    let all = model_range(&model, index, &lower, upper, false);
                    let want: Vec<Vec<u8>> = all
                        .iter()
                        .take(1)
                        .chain(all.iter().skip(1).filter(|k| all[0] >= jump || **k >= jump))
                        .cloned()
                        .collect();
                    prop_assert_eq!(read, want);
                }
            }
        }
    }

    /// A large merge advances a step per flush while reads see the same keys, and
    /// completes.
    #[test]
    fn a_merge_spans_several_transactions() {
        let (_dir, db) = empty_db();
        let mut model = BTreeSet::new();
        let mut in_progress = 0;
        let mut progress = HashMap::new();
        let mut commit = |keys: Vec<u16>, model: &mut BTreeSet<Vec<u8>>| {
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            for k in keys {
                let key = k.to_be_bytes().to_vec();
                // Every third key is removed again later.
                if k % 3 == 0 && model.contains(&key) {
                    model.remove(&key);
                    changes.remove(Index::Sort, key);
                } else {
                    model.insert(key.clone());
                    changes.put(Index::Sort, key);
                }
            }
            changes.commit(&txn, TINY).unwrap();
            txn.commit().unwrap();
            merge_rounds(&db, &mut progress, 1);
            let txn = db.begin_read().unwrap();
            let merging = !txn.open_table(INDEX_MERGES).unwrap().is_empty().unwrap();
            let runs = txn.open_table(INDEX_RUNS).unwrap().len().unwrap();
            let view = IndexView::open(&txn, &Held::default()).unwrap();
            let want: Vec<Vec<u8>> = model.iter().cloned().collect();
            assert_eq!(view_range(&view, Index::Sort, &[], None, false), want);
            (merging, runs)
        };
        // Two large runs, then small flushes: the merge of everything proceeds in steps.
        for round in 0..4u16 {
            commit((round * 100..round * 100 + 100).collect(), &mut model);
        }
        let mut most_runs = Vec::new();
        for i in 0..600u16 {
            let (merging, runs) = commit(vec![i * 2, 1000 + i], &mut model);
            in_progress += usize::from(merging);
            most_runs.push(runs);
        }
        assert!(
            in_progress >= 3,
            "a merge was in progress after {in_progress} commits"
        );
        // Merging keeps up: at most `fanout` runs per size class, plus what was flushed
        // while a merge took its steps.
        let classes = TINY.class(model.len() as u64 * 2) as usize + 2;
        let bound = TINY.fanout as usize * classes + 8;
        let most = most_runs.iter().max().copied().unwrap_or_default() as usize;
        assert!(most <= bound, "{most} runs, more than {bound}");
    }

    /// Run tables in the file that are not listed (an unfinished merge's output).
    fn unlisted_runs(db: &Database) -> usize {
        let txn = db.begin_read().unwrap();
        let listed = txn.open_table(INDEX_RUNS).unwrap().len().unwrap() as usize;
        let tables = txn.list_tables().unwrap();
        let all = tables.filter(|t| t.name().starts_with(RUN_PREFIX)).count();
        all - listed
    }

    /// A merge whose progress was lost (the process stopped) starts over and completes;
    /// a step built before that is refused once the merge is gone.
    #[test]
    fn a_merge_in_flight_starts_over_after_a_restart() {
        let (_dir, db) = empty_db();
        let mut model = BTreeSet::new();
        for round in 0..12u16 {
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            for k in round * 30..round * 30 + 30 {
                model.insert(k.to_be_bytes().to_vec());
                changes.put(Index::Sort, k.to_be_bytes().to_vec());
            }
            changes.commit(&txn, TINY).unwrap();
            txn.commit().unwrap();
        }
        let read = db.begin_read().unwrap();
        let plans = compaction::pending(&read).unwrap();
        drop(read);
        assert!(!plans.is_empty(), "no merge was planned");

        // The first merger takes one step of each merge, then goes away.
        let mut before = HashMap::new();
        merge_rounds(&db, &mut before, 1);
        assert!(unlisted_runs(&db) > 0, "no merge output was partly written");
        // One more step built but not yet stored.
        let read = db.begin_read().unwrap();
        let plan = compaction::pending(&read).unwrap()[0];
        let runs = run_sizes(&read.open_table(INDEX_RUNS).unwrap()).unwrap();
        let inputs: Vec<_> = plan
            .inputs(&runs)
            .into_iter()
            .rev()
            .map(|id| open_run_read(&read, id, None).unwrap())
            .collect();
        let late = compaction::build_step(
            &inputs,
            plan,
            before.get_mut(&plan.output).unwrap(),
            TINY.merge_step,
            TINY,
        )
        .unwrap();
        drop(inputs);
        drop(read);

        // A new merger knows nothing of that progress: it starts each merge over.
        let mut after = HashMap::new();
        merge_rounds(&db, &mut after, usize::MAX);
        let txn = db.begin_read().unwrap();
        assert!(compaction::pending(&txn).unwrap().is_empty());
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        let want: Vec<Vec<u8>> = model.iter().cloned().collect();
        assert_eq!(view_range(&view, Index::Sort, &[], None, false), want);
        drop(view);
        drop(txn);
        assert_eq!(unlisted_runs(&db), 0);

        // The old merger's step is refused and changes nothing.
        let txn = db.begin_write().unwrap();
        assert_eq!(apply_step(&txn, late, TINY).unwrap(), Applied::Stale);
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        assert_eq!(view_range(&view, Index::Sort, &[], None, false), want);
        drop(view);
        drop(txn);
        assert_eq!(unlisted_runs(&db), 0);
    }

    /// The directory estimate says "more than n" for a range that holds several whole
    /// chunks' worth of entries, and not for a range within a chunk or two, or past the
    /// keys; it sees runs only, not the log.
    #[test]
    fn a_range_is_surely_large_only_when_whole_chunks_show_it() {
        let (_dir, db) = empty_db();
        // Every commit flushes its block into a run of chunks of a few keys each.
        let limits = IndexLimits {
            log_blocks: 1,
            chunk_bytes: 64,
            ..TINY
        };
        let txn = db.begin_write().unwrap();
        let mut changes = Changes::default();
        for k in 0..600u32 {
            changes.put(Index::Words, format!("w{k:05}").into_bytes());
        }
        changes.commit(&txn, limits).unwrap();
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        let count = |lower: &str, upper: &str| {
            view_range(
                &view,
                Index::Words,
                lower.as_bytes(),
                Some(upper.as_bytes()),
                false,
            )
            .len() as u64
        };
        assert_eq!(count("w", "x"), 600);
        for (lower, upper, n, large) in [
            ("w", "x", 100, true),
            ("w", "x", 600, false),
            ("w00100", "w00400", 50, true),
            ("w00100", "w00104", 2, false),
            ("x", "y", 0, false),
        ] {
            let said = view.surely_more_than(Index::Words, lower.as_bytes(), upper.as_bytes(), n);
            assert_eq!(said, large, "{lower}..{upper} more than {n}");
            if said {
                assert!(count(lower, upper) > n);
            }
            assert!(!view.surely_more_than(Index::Sort, lower.as_bytes(), upper.as_bytes(), n));
        }

        // In the log only (not flushed), the same keys give no estimate.
        let (_dir, db) = empty_db();
        let txn = db.begin_write().unwrap();
        let mut changes = Changes::default();
        for k in 0..600u32 {
            changes.put(Index::Words, format!("w{k:05}").into_bytes());
        }
        changes
            .commit(
                &txn,
                IndexLimits {
                    log_blocks: 4,
                    ..limits
                },
            )
            .unwrap();
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        assert!(!view.surely_more_than(Index::Words, b"w", b"x", 0));
    }

    /// Once writes stop, the log is flushed and runs of comparable size are merged; a
    /// large oldest run is left alone while the newer ones are a small part of it.
    #[test]
    fn idle_merges_are_proportional_to_what_was_written() {
        let (_dir, db) = empty_db();
        let mut progress = HashMap::new();
        let write = |keys: std::ops::Range<u16>| {
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            for k in keys {
                changes.put(Index::Words, k.to_be_bytes().to_vec());
            }
            changes.commit(&txn, TINY).unwrap();
            txn.commit().unwrap();
        };
        let idle = |progress: &mut HashMap<u64, Progress>| {
            let txn = db.begin_write().unwrap();
            let planned = compaction::plan_idle(&txn, TINY).unwrap();
            txn.commit().unwrap();
            merge_rounds(&db, progress, usize::MAX);
            planned
        };
        let state = || {
            let txn = db.begin_read().unwrap();
            let log = txn.open_table(INDEX_LOG).unwrap().len().unwrap();
            let runs = run_sizes(&txn.open_table(INDEX_RUNS).unwrap()).unwrap();
            (log, runs.into_iter().map(|(_, n)| n).collect::<Vec<_>>())
        };
        // A large run, merged while idle into one.
        for start in (0u16..400).step_by(50) {
            write(start..start + 50);
            merge_rounds(&db, &mut progress, usize::MAX);
        }
        while idle(&mut progress) {}
        assert_eq!(state(), (0, vec![400]));
        assert!(!idle(&mut progress), "nothing was written: nothing to do");
        // A few keys: flushed and kept apart from the large run.
        write(1000..1003);
        while idle(&mut progress) {}
        assert_eq!(state(), (0, vec![400, 3]));
        write(2000..2004);
        while idle(&mut progress) {}
        assert_eq!(state(), (0, vec![400, 7]));
        // Once the newer runs hold a quarter of the oldest, everything is merged.
        write(3000..3100);
        while idle(&mut progress) {}
        assert_eq!(state(), (0, vec![507]));
        let txn = db.begin_read().unwrap();
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        assert_eq!(view_range(&view, Index::Words, &[], None, false).len(), 507);
    }

    #[test]
    fn runs_are_merged_and_a_prefix_is_removed() {
        let (_dir, db) = empty_db();
        let keys: Vec<Vec<u8>> = (0u16..300).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut progress = HashMap::new();
        for chunk in keys.chunks(10) {
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            for key in chunk {
                changes.put(Index::Words, key.clone());
            }
            changes.commit(&txn, TINY).unwrap();
            txn.commit().unwrap();
            merge_rounds(&db, &mut progress, usize::MAX);
        }
        let runs = |db: &Database| -> Vec<u64> {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(INDEX_RUNS).unwrap();
            table
                .iter()
                .unwrap()
                .map(|r| r.unwrap().1.value())
                .collect()
        };
        // Size-tiered: far fewer runs than flushes, the oldest the largest.
        let sizes = runs(&db);
        assert!(sizes.len() < 8, "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert!(sizes.iter().sum::<u64>() <= 300);

        // Remove every key starting with byte 0 (keys 0..256).
        let txn = db.begin_write().unwrap();
        remove_prefix(&txn, Index::Words, &[0], &[1], TINY).unwrap();
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let view = IndexView::open(&txn, &Held::default()).unwrap();
        let left = view_range(&view, Index::Words, &[], None, false);
        assert_eq!(left, keys[256..].to_vec());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Read source by source, a range's contact numbers are those the merged range
        /// gives: a key removed by a newer source is left out, one put back after its
        /// removal is not, through flushes and merges.
        #[test]
        fn ids_read_unmerged_are_the_merged_ones(
            txns in proptest::collection::vec(
                proptest::collection::vec((0u8..3, 0u64..8, proptest::bool::weighted(0.6)), 0..12),
                1..20),
            bounds in (0u8..4, 0u8..4),
        ) {
            let (_dir, db) = empty_db();
            let mut progress = HashMap::new();
            let key = |word: u8, id: u64| [&[word][..], &id.to_be_bytes()].concat();
            let (lower, upper) = (vec![bounds.0.min(bounds.1)], vec![bounds.0.max(bounds.1)]);
            for ops in txns {
                let txn = db.begin_write().unwrap();
                let mut changes = Changes::default();
                for (word, id, present) in ops {
                    if present {
                        changes.put(Index::Words, key(word, id));
                    } else {
                        changes.remove(Index::Words, key(word, id));
                    }
                }
                changes.commit(&txn, TINY).unwrap();
                txn.commit().unwrap();
                merge_rounds(&db, &mut progress, 1);
                let txn = db.begin_read().unwrap();
                let view = IndexView::open(&txn, &Held::default()).unwrap();
                let mut want: Vec<u64> = view
                    .range(Index::Words, &lower, Some(&upper), false)
                    .unwrap()
                    .ids()
                    .map(Result::unwrap)
                    .collect();
                want.sort_unstable();
                want.dedup();
                let mut read = view.ids_in(Index::Words, &lower, &upper).unwrap();
                read.sort_unstable();
                read.dedup();
                prop_assert_eq!(read, want);
            }
        }
    }
}
