//! Merging runs (size-tiered compaction) without holding up the writer.
//!
//! The transaction that flushes (waiting blocks and the log into a new run) also
//! *plans* a merge when one is due and records it in `index_merges` (its inputs, a
//! contiguous range of run ids, and the id reserved for its output). Carrying a merge
//! out is split in two:
//!
//! - [`build_step`] reads the inputs from any snapshot (runs are immutable, so every
//!   snapshot that lists them agrees) and builds the next chunks of the output — the
//!   expensive part, done by the merger thread on its own read transaction;
//! - [`apply_step`] stores those chunks in the output's table, which readers do not see
//!   until the last step writes its directory, lists it and drops the inputs in one
//!   transaction — cheap, done by the writer.
//!
//! Several merges may be in flight: a new one only takes runs newer than every input of
//! the others, and output ids are reserved when a merge is planned, so the newest-first
//! order of runs holds whichever merge completes first. A merge's progress lives in the
//! merger's memory; after a restart its output table is emptied and it starts over.

use std::collections::HashMap;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::block::{BlockBuilder, PackedBuilder, PACKED_OVERHEAD};
use super::merge::{ChunkTable, Chunks, Merged, Run};
use super::{
    drop_runs, flush, next_run_id, open_run_read, run_name, run_sizes, run_table, IndexLimits,
    DIRECTORY, INDEX_LOG, INDEX_RUNS,
};
use crate::store::StoreError;

/// Output run id → (first input, last input, entries in the inputs, whether the inputs
/// include the oldest run).
pub const INDEX_MERGES: TableDefinition<u64, (u64, u64, u64, bool)> =
    TableDefinition::new("index_merges");

/// A merge of the runs `from..=to` into run `output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub output: u64,
    from: u64,
    to: u64,
    entries: u64,
    /// Whether the inputs include the oldest run (removed keys are then dropped).
    bottom: bool,
}

impl Plan {
    fn record(&self) -> (u64, u64, u64, bool) {
        (self.from, self.to, self.entries, self.bottom)
    }

    fn from_row(output: u64, (from, to, entries, bottom): (u64, u64, u64, bool)) -> Self {
        Self {
            output,
            from,
            to,
            entries,
            bottom,
        }
    }

    /// The ids among `runs` that are this merge's inputs.
    pub fn inputs(&self, runs: &[(u64, u64)]) -> Vec<u64> {
        runs.iter()
            .map(|&(id, _)| id)
            .filter(|id| (self.from..=self.to).contains(id))
            .collect()
    }
}

/// Records the merge that is due, if any: `fanout` runs of one size class are the
/// newest, or (with no merge in flight) the runs newer than the oldest hold as many
/// entries as it does — removed keys and the entries they remove meet only in a merge
/// that includes the oldest run, so this bounds the space they take to about that of
/// the live entries. Only runs newer than every input of a merge in flight are
/// candidates. Returns whether a merge was planned.
pub fn plan(txn: &WriteTransaction, limits: IndexLimits) -> Result<bool, StoreError> {
    let runs = run_sizes(&txn.open_table(INDEX_RUNS)?)?;
    let merges = recorded(&txn.open_table(INDEX_MERGES)?)?;
    let busy = merges.iter().map(|m| m.to).max();
    let free: Vec<(u64, u64)> = runs
        .iter()
        .copied()
        .filter(|&(id, _)| busy.is_none_or(|busy| id > busy))
        .collect();
    let Some(&(_, newest)) = free.last() else {
        return Ok(false);
    };
    let newer: u64 = runs.iter().skip(1).map(|(_, n)| n).sum();
    let k = if merges.is_empty() && runs.len() > 1 && newer >= runs[0].1 {
        runs.len()
    } else {
        let class = limits.class(newest);
        let k = free
            .iter()
            .rev()
            .take_while(|(_, n)| limits.class(*n) <= class)
            .count();
        if (k as u64) < limits.fanout.max(2) {
            return Ok(false);
        }
        k
    };
    record(txn, &free[free.len() - k..], runs[0].0)?;
    Ok(true)
}

/// Records a merge of `chosen` (contiguous runs, oldest first; `oldest` is the oldest
/// run of all).
fn record(txn: &WriteTransaction, chosen: &[(u64, u64)], oldest: u64) -> Result<(), StoreError> {
    let plan = Plan {
        output: next_run_id(txn)?,
        from: chosen[0].0,
        to: chosen[chosen.len() - 1].0,
        entries: chosen.iter().map(|(_, n)| n).sum(),
        bottom: chosen[0].0 == oldest,
    };
    txn.open_table(INDEX_MERGES)?
        .insert(plan.output, plan.record())?;
    Ok(())
}

/// A run joins an idle merge when it holds at most this many times the entries of the
/// newer runs chosen.
const IDLE_RATIO: u64 = 4;

/// Room left in a chunk's page for redb's leaf header and offsets (12 bytes for a leaf
/// holding one chunk; the rest is margin).
const LEAF_OVERHEAD: usize = 64;

/// When writes have stopped for a while (and no merge is in flight): flushes the log and
/// merges the newest runs while each next older one holds at most `IDLE_RATIO` times
/// what the newer ones chosen hold, so reads open fewer sources. The ratio keeps the
/// work proportional to what was written since: a small tail of runs is merged
/// together, and into the oldest only once it is a sizeable part of it. Returns whether
/// it changed anything.
pub fn plan_idle(txn: &WriteTransaction, limits: IndexLimits) -> Result<bool, StoreError> {
    if !txn.open_table(INDEX_MERGES)?.is_empty()? {
        return Ok(false);
    }
    let mut changed = false;
    if !txn.open_table(INDEX_LOG)?.is_empty()? {
        flush(txn, limits, &[])?;
        changed = true;
        if plan(txn, limits)? {
            return Ok(true);
        }
    }
    let runs = run_sizes(&txn.open_table(INDEX_RUNS)?)?;
    let Some(&(_, newest)) = runs.last() else {
        return Ok(changed);
    };
    let mut chosen = newest;
    let mut k = 1;
    while let Some(&(_, n)) = runs.iter().rev().nth(k) {
        if n > chosen.saturating_mul(IDLE_RATIO) {
            break;
        }
        chosen += n;
        k += 1;
    }
    if k < 2 {
        return Ok(changed);
    }
    record(txn, &runs[runs.len() - k..], runs[0].0)?;
    Ok(true)
}

fn recorded(
    table: &impl ReadableTable<u64, (u64, u64, u64, bool)>,
) -> Result<Vec<Plan>, StoreError> {
    let rows = table
        .iter()?
        .map(|row| row.map(|(output, record)| Plan::from_row(output.value(), record.value())));
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The merges in flight in a snapshot.
pub fn pending(txn: &ReadTransaction) -> Result<Vec<Plan>, StoreError> {
    recorded(&txn.open_table(INDEX_MERGES)?)
}

/// Builds a run's chunks and its directory (the first key of every chunk) from entries
/// given in key order.
pub struct RunBuilder {
    chunk: PackedBuilder,
    firsts: BlockBuilder,
    full: Vec<Vec<u8>>,
    entries: u64,
    chunk_bytes: usize,
}

impl RunBuilder {
    pub fn new(chunk_bytes: usize) -> Self {
        Self {
            chunk: PackedBuilder::with_capacity(chunk_bytes),
            firsts: BlockBuilder::default(),
            full: Vec::new(),
            entries: 0,
            chunk_bytes,
        }
    }

    pub fn push(&mut self, key: &[u8], present: bool) {
        // An entry adds at most its key and `PACKED_OVERHEAD`.
        if !self.chunk.is_empty() && self.chunk.size() + key.len() + PACKED_OVERHEAD > self.budget()
        {
            let full = std::mem::replace(
                &mut self.chunk,
                PackedBuilder::with_capacity(self.chunk_bytes),
            );
            self.full.push(full.finish());
        }
        if self.chunk.is_empty() {
            self.firsts.push(key, true);
        }
        self.chunk.push(key, present);
        self.entries += 1;
    }

    /// The most bytes a chunk may take so that it and redb's leaf header fit in
    /// `chunk_bytes`: redb gives a value a power-of-two run of pages, so a chunk a few
    /// bytes over 32 KiB would take (and write) 64 KiB.
    fn budget(&self) -> usize {
        self.chunk_bytes.saturating_sub(LEAF_OVERHEAD)
    }

    /// The chunks completed so far (the one being filled stays).
    pub fn take_full(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.full)
    }

    /// Every remaining chunk, the directory and the number of entries.
    pub fn finish(mut self) -> (Vec<Vec<u8>>, Vec<u8>, u64) {
        if !self.chunk.is_empty() {
            self.full.push(self.chunk.finish());
        }
        (self.full, self.firsts.finish(), self.entries)
    }
}

/// How far the merger got with one merge.
pub struct Progress {
    /// The number of the next chunk to store.
    next_chunk: u32,
    /// Where the inputs continue (empty: from the start).
    resume: Vec<u8>,
    run: RunBuilder,
}

impl Progress {
    pub fn new(limits: IndexLimits) -> Self {
        Self {
            next_chunk: 0,
            resume: Vec::new(),
            run: RunBuilder::new(limits.chunk_bytes),
        }
    }
}

/// The chunks one step adds to a merge's output; the last step also completes it.
pub struct Step {
    plan: Plan,
    /// The number of the first chunk (0: the output starts over).
    at: u32,
    chunks: Vec<Vec<u8>>,
    /// The directory and entry count, when the inputs are read to the end.
    end: Option<(Vec<u8>, u64)>,
}

/// What [`apply_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Continued,
    Completed,
    /// The merge is no longer recorded, or its output is not where the step expected
    /// (the indexes were rebuilt, or another process wrote it): drop the progress.
    Stale,
}

/// Reads up to `budget` entries of the inputs `runs` (newest first) from where
/// `progress` stands, into the next chunks of the output.
pub fn build_step<T: ChunkTable>(
    runs: &[Run<T>],
    plan: Plan,
    progress: &mut Progress,
    budget: u64,
    limits: IndexLimits,
) -> Result<Step, StoreError> {
    let sources: Vec<&dyn Chunks> = runs.iter().map(|r| r as &dyn Chunks).collect();
    let lower = std::mem::take(&mut progress.resume);
    let mut merged = Merged::new(&sources, lower, vec![u8::MAX; 2], false, !plan.bottom, 0)?
        .with_limit(budget.max(1), limits.merge_step_bytes.max(1));
    while merged.advance()? {
        progress.run.push(merged.raw_key(), merged.present());
    }
    let at = progress.next_chunk;
    let (chunks, end) = if merged.stopped() {
        let mut resume = merged.raw_key().to_vec();
        resume.push(0);
        progress.resume = resume;
        (progress.run.take_full(), None)
    } else {
        let run = std::mem::replace(&mut progress.run, RunBuilder::new(limits.chunk_bytes));
        let (chunks, directory, entries) = run.finish();
        (chunks, Some((directory, entries)))
    };
    let added = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    progress.next_chunk = at.saturating_add(added);
    Ok(Step {
        plan,
        at,
        chunks,
        end,
    })
}

/// Stores a step's chunks; the last step lists the output, drops the inputs and plans
/// the next merge (a completed merge may make one due).
pub fn apply_step(
    txn: &WriteTransaction,
    step: Step,
    limits: IndexLimits,
) -> Result<Applied, StoreError> {
    let plan = step.plan;
    let recorded = txn
        .open_table(INDEX_MERGES)?
        .get(plan.output)?
        .map(|v| v.value());
    if recorded != Some(plan.record()) {
        return Ok(Applied::Stale);
    }
    let name = run_name(plan.output);
    let mut table = txn.open_table(run_table(&name))?;
    if step.at == 0 {
        table.retain(|_, _| false)?;
    } else {
        let next = table
            .last()?
            .map_or(0, |(k, _)| k.value().saturating_add(1));
        if next != step.at {
            return Ok(Applied::Stale);
        }
    }
    let last = u64::from(step.at) + step.chunks.len() as u64;
    if last >= u64::from(DIRECTORY) {
        return Err(StoreError::Corrupt(
            "an index run has too many chunks".into(),
        ));
    }
    for (n, chunk) in (step.at..).zip(&step.chunks) {
        table.insert(n, chunk.as_slice())?;
    }
    let Some((directory, entries)) = step.end else {
        return Ok(Applied::Continued);
    };
    if entries == 0 {
        drop(table);
        txn.delete_table(run_table(&name))?;
    } else {
        table.insert(DIRECTORY, directory.as_slice())?;
        drop(table);
        txn.open_table(INDEX_RUNS)?.insert(plan.output, entries)?;
    }
    let inputs = plan.inputs(&run_sizes(&txn.open_table(INDEX_RUNS)?)?);
    drop_runs(txn, &inputs)?;
    txn.open_table(INDEX_MERGES)?.remove(plan.output)?;
    plan_all(txn, limits)?;
    Ok(Applied::Completed)
}

/// Plans merges until none is due.
pub fn plan_all(txn: &WriteTransaction, limits: IndexLimits) -> Result<(), StoreError> {
    while plan(txn, limits)? {}
    Ok(())
}

/// One step of every merge in flight, each built from one snapshot of `db` and handed
/// to `apply` (which stores it in a write transaction); `progress` carries each merge's
/// state between rounds. Returns whether any merge was in flight.
pub fn round(
    db: &Database,
    progress: &mut HashMap<u64, Progress>,
    limits: IndexLimits,
    mut apply: impl FnMut(Step) -> Result<Applied, StoreError>,
) -> Result<bool, StoreError> {
    let steps = {
        let txn = db.begin_read()?;
        let plans = pending(&txn)?;
        crate::metrics::merges_pending(plans.len());
        progress.retain(|output, _| plans.iter().any(|p| p.output == *output));
        let runs = run_sizes(&txn.open_table(INDEX_RUNS)?)?;
        let mut steps = Vec::with_capacity(plans.len());
        for plan in plans {
            let inputs = plan
                .inputs(&runs)
                .into_iter()
                .rev()
                .map(|id| open_run_read(&txn, id, None))
                .collect::<Result<Vec<_>, _>>()?;
            let state = progress
                .entry(plan.output)
                .or_insert_with(|| Progress::new(limits));
            steps.push(build_step(&inputs, plan, state, limits.merge_step, limits)?);
        }
        steps
    };
    let busy = !steps.is_empty();
    for step in steps {
        let output = step.plan.output;
        match apply(step) {
            Ok(Applied::Continued) => {}
            Ok(Applied::Completed | Applied::Stale) => {
                progress.remove(&output);
            }
            Err(err) => {
                progress.remove(&output);
                return Err(err);
            }
        }
    }
    Ok(busy)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::block::Block;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// redb gives a value a power-of-two run of pages: a chunk must leave room for
        /// the leaf header in `chunk_bytes`, or it takes (and writes) twice that.
        #[test]
        fn chunks_fit_their_page_and_keep_every_entry(
            keys in proptest::collection::btree_set(
                proptest::collection::vec(any::<u8>(), 1..200), 0..400),
            chunk_bytes in 512usize..4096,
        ) {
            let mut run = RunBuilder::new(chunk_bytes);
            for (n, key) in keys.iter().enumerate() {
                run.push(key, n % 3 != 0);
            }
            let (chunks, directory, entries) = run.finish();
            prop_assert_eq!(entries, keys.len() as u64);
            let directory = Block::owned(directory).unwrap();
            prop_assert_eq!(directory.len(), chunks.len());
            let mut read = Vec::new();
            for (i, chunk) in chunks.into_iter().enumerate() {
                prop_assert!(chunk.len() <= chunk_bytes - LEAF_OVERHEAD, "{} bytes", chunk.len());
                let block = super::super::block::unpack(&chunk).unwrap();
                prop_assert_eq!(directory.key(i), block.key(0));
                read.extend((0..block.len()).map(|j| (block.key(j).to_vec(), block.get(j).1)));
            }
            let expected: Vec<_> = keys.iter().enumerate().map(|(n, k)| (k.clone(), n % 3 != 0)).collect();
            prop_assert_eq!(read, expected);
        }
    }
}
