//! Log-structured storage for the sort and word indexes.
//!
//! A B-tree entry per index key made every contact write touch ~25 random pages of a
//! large tree (each one copied and written at commit), which cut write throughput by
//! 5–15×. Here the indexes are instead:
//!
//! - the **index log** (`index_log`): each write transaction that changes index entries
//!   adds one sorted [`block`] of them (key + present/removed), one redb value, so a
//!   write costs a few pages however many entries it changes;
//! - **runs**: immutable sorted runs of chunks (`index_run_<id>`, chunk number →
//!   block, plus the first key of every chunk under [`DIRECTORY`]), listed with their
//!   entry counts in `index_runs`. A larger id is a newer run.
//!
//! When the log holds `IndexLimits::log_blocks` blocks or `log_bytes` bytes, the
//! writing transaction merges it into a new run (a *flush*); when `fanout` runs of the
//! same size class are the newest, they are merged into one (size-tiered compaction), so
//! an entry is rewritten a few times in sequential chunks rather than once per page.
//! Removed keys are kept as tombstones until a merge includes the oldest run.
//!
//! Readers see one snapshot of the log and the runs and merge them ([`merge`]): for a
//! key the newest source wins. Everything lives in the redb file and changes only inside
//! write transactions, so a read snapshot is consistent and a crash loses nothing that
//! was committed.
//!
//! Keys are the index's byte key (see `keys`) behind one tag byte naming the index.

pub mod block;
pub mod merge;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    TableHandle, WriteTransaction,
};

use self::block::{Block, BlockBuilder};
use self::merge::{ChunkTable, Chunks, Merged, Run, Single};
use super::StoreError;

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

const RUN_PREFIX: &str = "index_run_";

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

/// When the log is flushed and runs are merged. The defaults suit millions of
/// entries; tests shrink them so a few contacts go through flushes and merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Log blocks that trigger a flush.
    pub log_blocks: u64,
    /// Log bytes that trigger a flush.
    pub log_bytes: u64,
    /// Target size of a run's chunk.
    pub chunk_bytes: usize,
    /// Runs of one size class merged together.
    pub fanout: u64,
    /// Entries of the smallest size class.
    pub base_entries: u64,
    /// Most entries a merge of runs writes in one write transaction.
    pub merge_step: u64,
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
pub struct Sources<T> {
    log: Vec<Single>,
    runs: Vec<Run<T>>,
}

/// What a read snapshot sees of the indexes.
pub type IndexView = Sources<ReadOnlyTable<u32, &'static [u8]>>;

impl IndexView {
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let mut log = Vec::new();
        let table = txn.open_table(INDEX_LOG)?;
        for row in table.range::<u64>(..)?.rev() {
            log.push(Single(Block::stored(row?.1)?));
        }
        let mut runs = Vec::new();
        for row in txn.open_table(INDEX_RUNS)?.iter()?.rev() {
            let id = row?.0.value();
            let name = run_name(id);
            let table = txn.open_table(run_table(&name))?;
            let firsts = table
                .get(DIRECTORY)?
                .ok_or_else(|| StoreError::Corrupt(format!("index run {id} has no directory")))?;
            runs.push(Run {
                id,
                firsts: Block::stored(firsts)?,
                table,
            });
        }
        Ok(Self { log, runs })
    }
}

impl<'txn> Sources<Table<'txn, u32, &'static [u8]>> {
    /// The indexes as a write transaction has them (values copied out).
    fn open_write(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let mut log = Vec::new();
        for row in txn.open_table(INDEX_LOG)?.iter()?.rev() {
            log.push(Single(Block::owned(row?.1.value().to_vec())?));
        }
        let ids: Vec<u64> = txn
            .open_table(INDEX_RUNS)?
            .iter()?
            .rev()
            .map(|row| row.map(|(id, _)| id.value()))
            .collect::<Result<_, _>>()?;
        let mut runs = Vec::new();
        for id in ids {
            runs.push(open_run_write(txn, id)?);
        }
        Ok(Self { log, runs })
    }
}

fn open_run_write(
    txn: &WriteTransaction,
    id: u64,
) -> Result<Run<Table<'_, u32, &'static [u8]>>, StoreError> {
    let name = run_name(id);
    let table = txn.open_table(run_table(&name))?;
    let firsts = table
        .chunk(DIRECTORY)?
        .ok_or_else(|| StoreError::Corrupt(format!("index run {id} has no directory")))?;
    Ok(Run { id, firsts, table })
}

impl<T: ChunkTable> Sources<T> {
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
        let tagged = |key: &[u8]| {
            let mut out = Vec::with_capacity(key.len() + 1);
            out.push(index.tag());
            out.extend_from_slice(key);
            out
        };
        let upper = match upper {
            Some(upper) => tagged(upper),
            None => vec![index.tag() + 1],
        };
        Merged::new(&self.all(), tagged(lower), upper, descending, false, 1)
    }

    /// Whether `index` holds `key`.
    #[cfg(test)]
    pub fn contains(&self, index: Index, key: &[u8]) -> Result<bool, StoreError> {
        let mut end = key.to_vec();
        end.push(0);
        self.range(index, key, Some(&end), false)?.advance()
    }
}

/// Index changes gathered in a write transaction, written to the log by
/// [`Changes::commit`].
#[derive(Default)]
pub struct Changes {
    ops: Vec<(Index, Vec<u8>, bool)>,
}

impl Changes {
    pub fn put(&mut self, index: Index, key: Vec<u8>) {
        self.ops.push((index, key, true));
    }

    pub fn remove(&mut self, index: Index, key: Vec<u8>) {
        self.ops.push((index, key, false));
    }

    fn len(&self) -> usize {
        self.ops.len()
    }

    /// Writes the changes as one log block (the last change of a key wins), then flushes
    /// and merges as the limits say.
    pub fn commit(
        &mut self,
        txn: &WriteTransaction,
        limits: IndexLimits,
    ) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        // Sorted by (index, key, position), so the last change of a key comes last. The
        // keys of a transaction usually share a long prefix (the agent), so they are
        // compared first by the 8 bytes after the prefix they all share.
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
        let mut builder = BlockBuilder::with_capacity(ops.iter().map(|op| op.1.len() + 6).sum());
        let mut key = Vec::new();
        for (n, &(_, _, i)) in order.iter().enumerate() {
            let (index, bytes, present) = &ops[i];
            let superseded = order
                .get(n + 1)
                .is_some_and(|&(_, _, next)| ops[next].0 == *index && ops[next].1 == *bytes);
            if superseded {
                continue;
            }
            key.clear();
            key.push(index.tag());
            key.extend_from_slice(bytes);
            builder.push(&key, *present);
        }
        let size = builder.size() as u64;
        let blocks = {
            let mut log = txn.open_table(INDEX_LOG)?;
            let seq = log.last()?.map_or(0, |(k, _)| k.value() + 1);
            log.insert(seq, builder.finish().as_slice())?;
            log.len()?
        };
        let bytes = {
            let mut state = txn.open_table(INDEX_STATE)?;
            let bytes = state.get(META_LOG_BYTES)?.map_or(0, |v| v.value()) + size;
            state.insert(META_LOG_BYTES, bytes)?;
            bytes
        };
        if blocks >= limits.log_blocks || bytes >= limits.log_bytes {
            let flushed = flush(txn, limits)?;
            compact(txn, limits, flushed)?;
        }
        Ok(())
    }
}

/// Merges the log into a new run and empties it; returns the run's entries.
fn flush(txn: &WriteTransaction, limits: IndexLimits) -> Result<u64, StoreError> {
    let log: Vec<Single> = {
        let table = txn.open_table(INDEX_LOG)?;
        let rows = table.iter()?.rev();
        rows.map(|row| Ok(Single(Block::owned(row?.1.value().to_vec())?)))
            .collect::<Result<_, StoreError>>()?
    };
    let bottom = txn.open_table(INDEX_RUNS)?.is_empty()?;
    let sources: Vec<&dyn Chunks> = log.iter().map(|s| s as &dyn Chunks).collect();
    let mut merged = Merged::new(&sources, Vec::new(), vec![u8::MAX; 2], false, !bottom, 0)?;
    let id = next_run_id(txn)?;
    let name = run_name(id);
    let mut out = RunWriter::open(txn.open_table(run_table(&name))?, limits)?;
    if out.next != 0 {
        return Err(StoreError::Corrupt(format!(
            "index run {id} exists already"
        )));
    }
    while merged.advance()? {
        out.push(merged.raw_key(), merged.present())?;
    }
    let entries = out.seal(txn, id)?;
    txn.open_table(INDEX_LOG)?.retain(|_, _| false)?;
    txn.open_table(INDEX_STATE)?.insert(META_LOG_BYTES, 0)?;
    Ok(entries)
}

/// Advances the merge in progress by one step, or, when there is none, starts one if
/// `fanout` runs of one size class are the newest, or all runs once the newer ones
/// hold as many entries as the oldest (removed keys and the entries they remove meet
/// only in a merge that includes the oldest run, so this bounds the space they take to
/// about that of the live entries). `flushed` is what the flush before added.
///
/// A merge reads an eighth of its inputs (at least `IndexLimits::merge_step` entries,
/// and twice what the flush added) per flush, into a run that readers do not see until
/// it is complete; then it replaces its inputs. Its inputs never change meanwhile (runs
/// are immutable, and runs flushed during the merge are newer than its output), so
/// merging over several transactions gives the same run as merging at once, without
/// stopping writers for seconds at a million contacts. Its progress is stored in its
/// output table, so after a crash it resumes where its last committed step ended.
fn compact(txn: &WriteTransaction, limits: IndexLimits, flushed: u64) -> Result<(), StoreError> {
    // Each merge that completes may make the next one due (a cascade).
    loop {
        let merge = match Merge::load(txn)? {
            Some(merge) => merge,
            None => match plan_merge(txn, limits)? {
                Some(merge) => {
                    merge.save(txn)?;
                    merge
                }
                None => return Ok(()),
            },
        };
        if !merge.step(txn, limits, flushed)? {
            return Ok(());
        }
    }
}

/// The merge that is due, if any (its output id reserved).
fn plan_merge(txn: &WriteTransaction, limits: IndexLimits) -> Result<Option<Merge>, StoreError> {
    let runs = run_sizes(txn)?;
    let Some(&(_, newest)) = runs.last() else {
        return Ok(None);
    };
    let class = limits.class(newest);
    let mut k = runs
        .iter()
        .rev()
        .take_while(|(_, n)| limits.class(*n) <= class)
        .count();
    let newer: u64 = runs.iter().skip(1).map(|(_, n)| n).sum();
    if runs.len() > 1 && newer >= runs[0].1 {
        k = runs.len();
    } else if (k as u64) < limits.fanout.max(2) {
        return Ok(None);
    }
    let chosen = &runs[runs.len() - k..];
    Ok(Some(Merge {
        output: next_run_id(txn)?,
        from: chosen[0].0,
        to: chosen[chosen.len() - 1].0,
        bottom: k == runs.len(),
        entries: chosen.iter().map(|(_, n)| n).sum(),
    }))
}

/// Run ids and entry counts, oldest first.
fn run_sizes(txn: &WriteTransaction) -> Result<Vec<(u64, u64)>, StoreError> {
    let runs = txn.open_table(INDEX_RUNS)?;
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

const MERGE_OUTPUT: &str = "merge_output";
const MERGE_FROM: &str = "merge_from";
const MERGE_TO: &str = "merge_to";
const MERGE_BOTTOM: &str = "merge_bottom";
const MERGE_ENTRIES: &str = "merge_entries";
/// A merge completes in about this many steps.
const MERGE_STEPS: u64 = 8;

/// A merge in progress: the runs `from..=to` into run `output`.
struct Merge {
    output: u64,
    from: u64,
    to: u64,
    /// Whether the inputs include the oldest run (removed keys are then dropped).
    bottom: bool,
    /// Entries in the inputs.
    entries: u64,
}

impl Merge {
    fn load(txn: &WriteTransaction) -> Result<Option<Self>, StoreError> {
        let state = txn.open_table(INDEX_STATE)?;
        let get = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(state.get(key)?.map(|v| v.value()))
        };
        let Some(output) = get(MERGE_OUTPUT)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            output,
            from: get(MERGE_FROM)?.unwrap_or_default(),
            to: get(MERGE_TO)?.unwrap_or_default(),
            bottom: get(MERGE_BOTTOM)? == Some(1),
            entries: get(MERGE_ENTRIES)?.unwrap_or_default(),
        }))
    }

    fn save(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut state = txn.open_table(INDEX_STATE)?;
        state.insert(MERGE_OUTPUT, self.output)?;
        state.insert(MERGE_FROM, self.from)?;
        state.insert(MERGE_TO, self.to)?;
        state.insert(MERGE_BOTTOM, u64::from(self.bottom))?;
        state.insert(MERGE_ENTRIES, self.entries)?;
        Ok(())
    }

    fn forget(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut state = txn.open_table(INDEX_STATE)?;
        for key in [
            MERGE_OUTPUT,
            MERGE_FROM,
            MERGE_TO,
            MERGE_BOTTOM,
            MERGE_ENTRIES,
        ] {
            state.remove(key)?;
        }
        Ok(())
    }

    /// Reads the next entries of the inputs into the output; completes the merge when
    /// the inputs are read to the end (and then says so).
    fn step(
        &self,
        txn: &WriteTransaction,
        limits: IndexLimits,
        flushed: u64,
    ) -> Result<bool, StoreError> {
        let inputs: Vec<u64> = run_sizes(txn)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| (self.from..=self.to).contains(id))
            .collect();
        let runs = inputs
            .iter()
            .rev()
            .map(|&id| open_run_write(txn, id))
            .collect::<Result<Vec<_>, _>>()?;
        let sources: Vec<&dyn Chunks> = runs.iter().map(|r| r as &dyn Chunks).collect();
        let name = run_name(self.output);
        let mut out = RunWriter::open(txn.open_table(run_table(&name))?, limits)?;
        let budget = self
            .entries
            .div_ceil(MERGE_STEPS)
            .max(limits.merge_step)
            .max(2 * flushed)
            .max(1);
        let upper = vec![u8::MAX; 2];
        let lower = std::mem::take(&mut out.resume);
        let mut merged =
            Merged::new(&sources, lower, upper, false, !self.bottom, 0)?.with_limit(budget);
        while merged.advance()? {
            out.push(merged.raw_key(), merged.present())?;
        }
        if merged.stopped() {
            let mut resume = merged.raw_key().to_vec();
            resume.push(0);
            out.suspend(resume)?;
            return Ok(false);
        }
        drop(merged);
        out.seal(txn, self.output)?;
        drop(sources);
        drop(runs);
        drop_runs(txn, &inputs)?;
        Self::forget(txn)?;
        Ok(true)
    }
}

/// The key of a run table that holds an unfinished run's progress: the entries written
/// (u64, little-endian), then the key to resume from.
const PROGRESS: u32 = u32::MAX - 1;

/// Writes the chunks of a run, possibly over several transactions: its progress and
/// the directory so far are stored in the run's table until it is sealed.
struct RunWriter<'t> {
    table: Table<'t, u32, &'static [u8]>,
    chunk: BlockBuilder,
    firsts: BlockBuilder,
    /// The next chunk number.
    next: u32,
    entries: u64,
    /// Where an unfinished run continues (empty: from the start).
    resume: Vec<u8>,
    limits: IndexLimits,
}

impl<'t> RunWriter<'t> {
    fn open(table: Table<'t, u32, &'static [u8]>, limits: IndexLimits) -> Result<Self, StoreError> {
        let next = table
            .range(..PROGRESS)?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| k.value() + 1);
        let firsts = match table.chunk(DIRECTORY)? {
            Some(block) => BlockBuilder::from_block(&block),
            None => BlockBuilder::default(),
        };
        let (entries, resume) = match table.get(PROGRESS)? {
            Some(value) => {
                let bytes = value.value();
                let count = bytes
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .ok_or_else(|| StoreError::Corrupt("a malformed merge progress".into()))?;
                (u64::from_le_bytes(count), bytes[8..].to_vec())
            }
            None => (0, Vec::new()),
        };
        Ok(Self {
            table,
            chunk: BlockBuilder::with_capacity(limits.chunk_bytes + limits.chunk_bytes / 4),
            firsts,
            next,
            entries,
            resume,
            limits,
        })
    }

    fn push(&mut self, key: &[u8], present: bool) -> Result<(), StoreError> {
        if self.chunk.is_empty() {
            self.firsts.push(key, true);
        }
        self.chunk.push(key, present);
        self.entries += 1;
        if self.chunk.size() >= self.limits.chunk_bytes {
            self.end_chunk()?;
        }
        Ok(())
    }

    fn end_chunk(&mut self) -> Result<(), StoreError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        if self.next >= PROGRESS {
            return Err(StoreError::Corrupt(
                "an index run has too many chunks".into(),
            ));
        }
        let room = self.limits.chunk_bytes + self.limits.chunk_bytes / 4;
        let full = std::mem::replace(&mut self.chunk, BlockBuilder::with_capacity(room));
        self.table.insert(self.next, full.finish().as_slice())?;
        self.next += 1;
        Ok(())
    }

    fn write_directory(&mut self) -> Result<(), StoreError> {
        let firsts = std::mem::take(&mut self.firsts);
        self.table.insert(DIRECTORY, firsts.finish().as_slice())?;
        Ok(())
    }

    /// Stores the progress of an unfinished run, to continue from `resume`.
    fn suspend(mut self, resume: Vec<u8>) -> Result<(), StoreError> {
        self.end_chunk()?;
        self.write_directory()?;
        let mut progress = self.entries.to_le_bytes().to_vec();
        progress.extend_from_slice(&resume);
        self.table.insert(PROGRESS, progress.as_slice())?;
        Ok(())
    }

    /// Completes run `id`: writes its directory and lists it (or deletes it when
    /// empty); returns its entries.
    fn seal(mut self, txn: &WriteTransaction, id: u64) -> Result<u64, StoreError> {
        self.end_chunk()?;
        let name = run_name(id);
        let entries = self.entries;
        if entries == 0 {
            drop(self);
            txn.delete_table(run_table(&name))?;
            return Ok(0);
        }
        self.write_directory()?;
        self.table.remove(PROGRESS)?;
        drop(self);
        txn.open_table(INDEX_RUNS)?.insert(id, entries)?;
        Ok(entries)
    }
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
            let sources = Sources::open_write(txn)?;
            let mut merged = sources.range(index, &from, Some(upper), false)?;
            while changes.len() < BATCH && merged.advance()? {
                changes.remove(index, merged.key().to_vec());
            }
        }
        let Some((_, last, _)) = changes.ops.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        changes.commit(txn, limits)?;
    }
}

/// Deletes the log and every run (before the indexes are built anew), creating the
/// tables when missing.
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
    Merge::forget(txn)?;
    txn.open_table(INDEX_LOG)?.retain(|_, _| false)?;
    txn.open_table(INDEX_STATE)?.insert(META_LOG_BYTES, 0)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase};
    use std::collections::BTreeSet;

    const TINY: IndexLimits = IndexLimits {
        log_blocks: 2,
        log_bytes: 1 << 20,
        chunk_bytes: 24,
        fanout: 2,
        base_entries: 3,
        // Merges of more than 40 entries take several steps.
        merge_step: 40,
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
            for ops in txns {
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

                let txn = db.begin_read().unwrap();
                let view = IndexView::open(&txn).unwrap();
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
        let commit = |keys: Vec<u16>, model: &mut BTreeSet<Vec<u8>>| {
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
            let txn = db.begin_read().unwrap();
            let merging = txn
                .open_table(INDEX_STATE)
                .unwrap()
                .get(MERGE_OUTPUT)
                .unwrap()
                .is_some();
            let runs = txn.open_table(INDEX_RUNS).unwrap().len().unwrap();
            let view = IndexView::open(&txn).unwrap();
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
        let bound = TINY.fanout as usize * classes + MERGE_STEPS as usize;
        let most = most_runs.iter().max().copied().unwrap_or_default() as usize;
        assert!(most <= bound, "{most} runs, more than {bound}");
    }

    #[test]
    fn runs_are_merged_and_a_prefix_is_removed() {
        let (_dir, db) = empty_db();
        let keys: Vec<Vec<u8>> = (0u16..300).map(|i| i.to_be_bytes().to_vec()).collect();
        for chunk in keys.chunks(10) {
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            for key in chunk {
                changes.put(Index::Words, key.clone());
            }
            changes.commit(&txn, TINY).unwrap();
            txn.commit().unwrap();
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
        let view = IndexView::open(&txn).unwrap();
        let left = view_range(&view, Index::Words, &[], None, false);
        assert_eq!(left, keys[256..].to_vec());
    }
}
