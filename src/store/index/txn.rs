//! The index's part of a write group. Jobs record the contacts they changed; before the
//! group commits, [`IndexTxn::finish`] adds the field counts, stores the blocks of
//! earlier groups in a run once they are due, and journals this group's changes, whose
//! block the index worker builds while the commit syncs. The block waits in memory
//! (see `lsm::unlogged`) until a later group stores the waiting blocks in a run,
//! however few contacts it changed: building it during the commit's sync, on another
//! thread, is cheaper than building it before.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{Database, ReadableTable, WriteTransaction};

use super::entries::{self, Pairs};
use super::journal;
use super::lsm::block::Block;
use super::lsm::unlogged::{Slot, Unlogged, INDEX_JOURNAL};
use super::lsm::{store_blocks, IndexLimits, IndexView};
use super::merger::Kick;
use super::names;
use super::worker::{self, IndexWorker, Job};
use crate::domain::Contact;
use crate::store::StoreError;

/// What every write group's index work shares: the worker that builds blocks, the
/// blocks waiting in memory, the limits, and the merger's wake-up.
pub struct Indexer {
    worker: IndexWorker,
    unlogged: Arc<Unlogged>,
    limits: Mutex<IndexLimits>,
    kick: Kick,
}

impl Indexer {
    pub fn start(unlogged: Arc<Unlogged>, kick: Kick) -> Result<Self, StoreError> {
        Ok(Self {
            worker: IndexWorker::start()?,
            unlogged,
            limits: Mutex::new(IndexLimits::default()),
            kick,
        })
    }

    /// Changes the limits of the groups that begin from now on.
    pub fn set_limits(&self, limits: IndexLimits) {
        *self.limits.lock() = limits;
    }

    /// The limits of the groups that begin now.
    pub fn limits(&self) -> IndexLimits {
        *self.limits.lock()
    }

    /// The index state of a new write group.
    pub fn begin(self: &Arc<Self>) -> TxnIndex {
        TxnIndex {
            jobs: RefCell::new(Vec::new()),
            counts: RefCell::new(HashMap::new()),
            flushed: RefCell::new(Vec::new()),
            appended: Cell::new(false),
            limits: self.limits(),
            indexer: Arc::clone(self),
        }
    }

    /// Before the group commits: a snapshot that holds its journal entry must find the
    /// block's slot.
    pub fn publish(&self, finished: &Finished) {
        if let Some((seq, slot)) = &finished.own {
            self.unlogged.add(*seq, Arc::clone(slot));
        }
    }

    /// After the group committed: the blocks it stored in a run stop waiting in memory,
    /// and the merger hears of the commit.
    pub fn committed(&self, finished: Finished) {
        self.unlogged.remove(&finished.flushed);
        self.kick.wake(finished.wrote);
    }

    /// After the group failed to commit: its own block was never journaled.
    pub fn aborted(&self, finished: Finished) {
        if let Some((seq, _)) = finished.own {
            self.unlogged.remove(&[seq]);
        }
    }
}

/// A write group's index changes so far.
pub struct TxnIndex {
    /// Contact changes whose index entries are not computed yet, in the order made.
    jobs: RefCell<Vec<Job>>,
    /// Per agent and field, how many more contacts have a value for it.
    counts: RefCell<HashMap<String, HashMap<String, i64>>>,
    /// Journal entries whose blocks this group stored in a run.
    flushed: RefCell<Vec<u64>>,
    /// Whether this group added index changes to a run or the log.
    appended: Cell<bool>,
    limits: IndexLimits,
    indexer: Arc<Indexer>,
}

/// What a group's index work left for after its commit.
#[derive(Default)]
pub struct Finished {
    /// This group's journal entry and the slot its block arrives in.
    own: Option<(u64, Arc<Slot>)>,
    /// Journal entries whose blocks the group stored in a run.
    flushed: Vec<u64>,
    /// Whether the group changed index entries (the merger may have work).
    wrote: bool,
}

/// A group's index state with its transaction: what jobs and the merger call.
pub struct IndexTxn<'a> {
    pub(crate) txn: &'a WriteTransaction,
    pub(crate) state: &'a TxnIndex,
}

impl TxnIndex {
    /// The indexes in a snapshot of what the groups before this one committed.
    pub fn committed_index(&self, db: &Database) -> Result<IndexView, StoreError> {
        let (txn, held) = self.indexer.unlogged.begin_read(db)?;
        IndexView::open(&txn, &held)
    }
}

impl IndexTxn<'_> {
    /// The contacts of `agent` this group's jobs have written so far that `keep`
    /// accepts, as written: what [`TxnIndex::committed_index`] does not hold yet.
    pub fn pending(&self, agent: &str, keep: &dyn Fn(&Contact) -> bool) -> Vec<u64> {
        let jobs = self.state.jobs.borrow();
        let written = jobs
            .iter()
            .filter(|(a, _)| a == agent)
            .flat_map(|(_, pairs)| pairs.iter().filter_map(|(_, after)| after.as_ref()));
        written.filter(|c| keep(c)).map(|c| c.id).collect()
    }

    /// The index limits this group runs with.
    pub fn limits(&self) -> IndexLimits {
        self.state.limits
    }

    /// Records contact writes (made or about to be made in this transaction): their
    /// field counts and new name words now, their index entries when the group
    /// finishes.
    pub fn contacts_changed(&self, agent: &str, pairs: Arc<Pairs>) -> Result<(), StoreError> {
        names::record(
            self.txn,
            agent,
            pairs.iter().map(|(b, a)| (b.as_ref(), a.as_ref())),
        )?;
        entries::count(
            &pairs,
            self.state
                .counts
                .borrow_mut()
                .entry(agent.to_owned())
                .or_default(),
        );
        self.state.jobs.borrow_mut().push((agent.to_owned(), pairs));
        Ok(())
    }

    /// Notes that index changes were written to the log directly, so that the merger
    /// is woken for them after the commit.
    pub fn logged_elsewhere(&self) {
        self.state.appended.set(true);
    }

    /// Stores every earlier group's block in a run now (an idle moment).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.flush_earlier(true, None)
    }

    /// Stores every index change made so far in a run now, this group's included
    /// (before an agent's entries are removed, which reads the log and the runs).
    pub fn flush_all_now(&self) -> Result<(), StoreError> {
        self.write_counts()?;
        let jobs = std::mem::take(&mut *self.state.jobs.borrow_mut());
        self.flush_earlier(true, worker::build(&jobs))
    }

    /// Finishes the group's index work before its commit: field counts, earlier
    /// groups' blocks, and this one's journal entry, whose block the worker builds.
    pub fn finish(&self) -> Result<Finished, StoreError> {
        self.write_counts()?;
        self.flush_earlier(false, None)?;
        let jobs = std::mem::take(&mut *self.state.jobs.borrow_mut());
        let mut entry = journal::Entry::default();
        for (agent, pairs) in &jobs {
            entry.record(agent, pairs)?;
        }
        let own = if entry.is_empty() {
            None
        } else {
            let seq = {
                let mut table = self.txn.open_table(INDEX_JOURNAL)?;
                let seq = self.state.indexer.unlogged.next_seq();
                table.insert(seq, entry.sealed().as_slice())?;
                seq
            };
            let slot = Arc::new(Slot::default());
            self.state.indexer.worker.seal(jobs, Arc::clone(&slot));
            Some((seq, slot))
        };
        Ok(self.finished(own))
    }

    /// What the group left, for a group that journals nothing of its own (stopping).
    pub fn finish_flushed(&self) -> Finished {
        self.finished(None)
    }

    fn finished(&self, own: Option<(u64, Arc<Slot>)>) -> Finished {
        Finished {
            wrote: own.is_some() || self.state.appended.get(),
            flushed: std::mem::take(&mut *self.state.flushed.borrow_mut()),
            own,
        }
    }

    /// Adds the value count changes gathered so far to `field_counts`.
    fn write_counts(&self) -> Result<(), StoreError> {
        let counts = std::mem::take(&mut *self.state.counts.borrow_mut());
        for (agent, counts) in &counts {
            entries::write_counts(self.txn, agent, counts)?;
        }
        Ok(())
    }

    /// Stores the blocks of earlier groups (and `own`, this one's, if given) in a new
    /// run once they are due or `now`, waiting for the index worker where needed, and
    /// drops their journal entries. They are due when `IndexLimits::log_blocks` of them
    /// wait, or `log_bytes` of built blocks, or the worker failed to build one: that
    /// block is computed here from the journal entry, so reads fail only until the next
    /// write and one failure does not stop every later write.
    fn flush_earlier(&self, now: bool, own: Option<Block>) -> Result<(), StoreError> {
        let limits = self.state.limits;
        let mut flushed = self.state.flushed.borrow_mut();
        let mut pending = self.state.indexer.unlogged.all();
        pending.retain(|(seq, _)| !flushed.contains(seq));
        let due = || {
            pending.len() as u64 >= limits.log_blocks.max(1)
                || pending.iter().any(|(_, slot)| slot.failed())
                || pending
                    .iter()
                    .filter_map(|(_, slot)| slot.built_bytes())
                    .sum::<usize>() as u64
                    >= limits.log_bytes
        };
        if own.is_none() && (pending.is_empty() || !(now || due())) {
            return Ok(());
        }
        let mut blocks = Vec::with_capacity(pending.len() + 1);
        {
            let mut journal = self.txn.open_table(INDEX_JOURNAL)?;
            for (seq, slot) in pending {
                let block = match slot.wait() {
                    Ok(block) => block,
                    Err(err) => {
                        tracing::error!(error = %err, seq, "the index worker built no block; computing it from the journal");
                        let entry = journal.get(seq)?.map(|e| e.value().to_vec());
                        let entry = entry.ok_or_else(|| {
                            StoreError::Corrupt(format!("index journal entry {seq} is missing"))
                        })?;
                        journal::block_of(self.txn, &entry)?
                    }
                };
                blocks.extend(block);
                journal.remove(seq)?;
                flushed.push(seq);
            }
        }
        blocks.extend(own);
        if !blocks.is_empty() {
            store_blocks(self.txn, &blocks, limits)?;
            self.state.appended.set(true);
        }
        Ok(())
    }
}
