//! The single writer thread. It owns every write transaction: it takes one queued job,
//! drains whatever else is already queued (up to a limit) into the same transaction,
//! commits once with `Durability::Immediate`, and only then answers each job.
//!
//! Group commit keeps each request all-or-nothing because a job never writes before it
//! has checked everything it needs (plan, then apply): a job that fails a check leaves
//! the transaction as it found it, and the next job sees the state the earlier ones
//! left. A storage error while applying poisons the transaction; then it is aborted
//! and every job of the group is answered with that error.
//!
//! The jobs of a group record their contact changes in the transaction's [`Txn`]:
//! field counts are updated and the changed contacts journaled in the transaction
//! itself, while the index worker builds the transaction's index block after it; the
//! block waits in memory until a later transaction stores the waiting blocks in a run
//! (see `lsm::unlogged`), however few contacts it changed: building the block during
//! the commit's `fdatasync`, on another thread, is cheaper than building it before.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::damage::{unpanic, Damage};
use super::index::{self, Pairs};
use super::index_worker::{self, IndexWorker, Job as IndexJob};
use super::journal;
use super::lsm::block::Block;
use super::lsm::unlogged::{Slot, Unlogged, INDEX_JOURNAL};
use super::lsm::{store_blocks, IndexLimits};
use super::merger::Kick;
use super::{StoreError, StoreFuture};

/// A write transaction and the index changes its jobs made so far.
pub struct Txn {
    txn: WriteTransaction,
    /// Contact changes whose index entries are not computed yet, in the order made.
    jobs: RefCell<Vec<IndexJob>>,
    /// Per agent and field, how many more contacts have a value for it.
    counts: RefCell<HashMap<String, HashMap<String, i64>>>,
    /// Journal entries whose blocks this transaction stored in a run.
    flushed: RefCell<Vec<u64>>,
    /// Whether this transaction added index changes to a run or the log.
    appended: Cell<bool>,
    worker: Arc<IndexWorker>,
    unlogged: Arc<Unlogged>,
    pub limits: IndexLimits,
}

impl Deref for Txn {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl Txn {
    /// Records contact writes (already made or about to be made in this transaction)
    /// for the indexes: their field counts now, their index entries when the
    /// transaction finishes (see [`Txn::finish_index`]).
    pub fn index_contacts(&self, agent: &str, pairs: Arc<Pairs>) {
        index::count(
            &pairs,
            self.counts
                .borrow_mut()
                .entry(agent.to_owned())
                .or_default(),
        );
        self.jobs.borrow_mut().push((agent.to_owned(), pairs));
    }

    /// Adds the value count changes gathered so far to `field_counts`.
    fn write_counts(&self) -> Result<(), StoreError> {
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        for (agent, counts) in &counts {
            index::write_counts(&self.txn, agent, counts)?;
        }
        Ok(())
    }

    /// Stores the blocks of earlier transactions (and `own`, this one's, if given) in a
    /// new run once they are due or `now`, waiting for the index worker where needed,
    /// and drops their journal entries. They are due when `IndexLimits::log_blocks` of
    /// them wait, or `log_bytes` of built blocks, or the worker failed to build one:
    /// that block is computed here from the journal entry, so reads fail only until the
    /// next write and one failure does not stop every later write.
    fn flush_earlier(&self, now: bool, own: Option<Block>) -> Result<(), StoreError> {
        let mut flushed = self.flushed.borrow_mut();
        let mut pending = self.unlogged.all();
        pending.retain(|(seq, _)| !flushed.contains(seq));
        let due = || {
            pending.len() as u64 >= self.limits.log_blocks.max(1)
                || pending.iter().any(|(_, slot)| slot.failed())
                || pending
                    .iter()
                    .filter_map(|(_, slot)| slot.built_bytes())
                    .sum::<usize>() as u64
                    >= self.limits.log_bytes
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
                        journal::block_of(&self.txn, &entry)?
                    }
                };
                blocks.extend(block);
                journal.remove(seq)?;
                flushed.push(seq);
            }
        }
        blocks.extend(own);
        if !blocks.is_empty() {
            store_blocks(&self.txn, &blocks, self.limits)?;
            self.appended.set(true);
        }
        Ok(())
    }

    /// Stores every earlier transaction's block in a run now (an idle moment).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.flush_earlier(true, None)
    }

    /// Notes that index changes were written to the log directly (not through this
    /// `Txn`), so that the merger is woken for them after the commit.
    pub fn logged_elsewhere(&self) {
        self.appended.set(true);
    }

    /// Stores every index change made so far in a run now, this transaction's included
    /// (before an agent's entries are removed, which reads the log and the runs).
    pub fn flush_all_now(&self) -> Result<(), StoreError> {
        self.write_counts()?;
        let jobs = std::mem::take(&mut *self.jobs.borrow_mut());
        self.flush_earlier(true, index_worker::build(&jobs))
    }

    /// Finishes the transaction's index work before its commit: field counts, earlier
    /// transactions' blocks, and this one's journal entry. Returns the journal sequence
    /// number and the slot of its own block, if it changed contacts.
    fn finish_index(&self) -> Result<Option<(u64, Arc<Slot>)>, StoreError> {
        self.write_counts()?;
        self.flush_earlier(false, None)?;
        let jobs = std::mem::take(&mut *self.jobs.borrow_mut());
        let mut journal = journal::Entry::default();
        for (agent, pairs) in &jobs {
            journal.record(agent, pairs)?;
        }
        if journal.is_empty() {
            return Ok(None);
        }
        let seq = {
            let mut table = self.txn.open_table(INDEX_JOURNAL)?;
            let seq = self.unlogged.next_seq();
            table.insert(seq, journal.sealed().as_slice())?;
            seq
        };
        let slot = Arc::new(Slot::default());
        self.worker.seal(jobs, Arc::clone(&slot));
        Ok(Some((seq, slot)))
    }
}

/// Most jobs that share one commit.
const MAX_GROUP: usize = 64;
/// Queue depth; when full, callers wait (back-pressure) instead of being dropped.
const QUEUE_DEPTH: usize = 256;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job runs against the group's transaction, or is handed the error that kept the
/// group from getting one.
/// It returns the storage error that poisons the transaction, if it met one.
type Job = Box<dyn FnOnce(Result<&Txn, &StoreError>) -> (Option<StoreError>, Completion) + Send>;

pub struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    limits: Arc<Mutex<IndexLimits>>,
}

impl Writer {
    /// Starts the thread; `kick` is woken after every commit (index merges may be due);
    /// `unlogged` holds the blocks of committed transactions not yet in a run.
    pub fn start(
        db: Arc<Database>,
        kick: Kick,
        unlogged: Arc<Unlogged>,
        damage: Arc<Damage>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let limits = Arc::new(Mutex::new(IndexLimits::default()));
        let shared = Arc::clone(&limits);
        let worker = Arc::new(IndexWorker::start()?);
        let thread = std::thread::Builder::new()
            .name("contactd-writer".into())
            .spawn(move || run(&db, rx, &shared, &kick, &worker, &unlogged, &damage))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            limits,
        })
    }

    /// Changes the index limits of the transactions that begin from now on.
    pub fn set_index_limits(&self, limits: IndexLimits) {
        *self.limits.lock() = limits;
    }

    /// The index limits of the transactions that begin now.
    pub fn limits(&self) -> IndexLimits {
        *self.limits.lock()
    }

    /// Queues `work` to run inside a write transaction; resolves after the commit.
    /// `work` must not write anything before it returns a request-level error.
    pub fn submit<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Txn) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.tx.lock().clone();
        let (job, reply_rx) = job(work);
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            sender.send(job).await.map_err(|_| StoreError::Closed)?;
            reply_rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// [`Writer::submit`] for a thread outside the async runtime: blocks until the
    /// commit.
    pub fn submit_blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Txn) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.tx.lock().clone().ok_or(StoreError::Closed)?;
        let (job, reply_rx) = job(work);
        sender.blocking_send(job).map_err(|_| StoreError::Closed)?;
        reply_rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Stops taking jobs, lets the queued ones finish, and waits for the thread.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
    }
}

/// A job running `work`, and where its result arrives after the commit.
fn job<T, F>(work: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Txn) -> Result<T, StoreError> + Send + 'static,
{
    let (reply_tx, reply_rx) = oneshot::channel();
    let job: Job = Box::new(move |txn| {
        let result = txn
            .map_err(Clone::clone)
            .and_then(|txn| unpanic("a write", || work(txn)));
        // A storage error may have left the transaction half-written.
        let poisoned = match &result {
            Err(err @ (StoreError::Backend(_) | StoreError::Corrupt(_))) => Some(err.clone()),
            _ => None,
        };
        let complete: Completion = Box::new(move |commit| {
            // The caller may have gone away (timeout, closed connection); the write
            // stands either way.
            let _ = reply_tx.send(commit.and(result));
        });
        (poisoned, complete)
    });
    (job, reply_rx)
}

fn run(
    db: &Database,
    mut rx: mpsc::Receiver<Job>,
    limits: &Mutex<IndexLimits>,
    kick: &Kick,
    worker: &Arc<IndexWorker>,
    unlogged: &Arc<Unlogged>,
    damage: &Damage,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Nothing is written over damage.
        if let Err(err) = damage.writable() {
            for job in group {
                let (_, complete) = job(Err(&err));
                complete(Err(err.clone()));
            }
            continue;
        }
        let txn = match begin(db, worker, unlogged, *limits.lock()) {
            Ok(txn) => txn,
            Err(err) => {
                tracing::error!(error = %err, "cannot begin a write transaction");
                for job in group {
                    let (_, complete) = job(Err(&err));
                    complete(Err(err.clone()));
                }
                continue;
            }
        };
        let mut poisoned = None;
        let mut completions = Vec::with_capacity(group.len());
        for job in group {
            let (bad, complete) = job(Ok(&txn));
            if let Some(err) = bad {
                poisoned.get_or_insert(err);
            }
            completions.push(complete);
        }
        if let Some(StoreError::Corrupt(detail)) = &poisoned {
            damage.record(detail);
        }
        let mut poisoned = poisoned.is_some();
        let finished = if poisoned {
            Ok(None)
        } else {
            unpanic("indexing a write", || txn.finish_index())
        };
        let own = match finished {
            Ok(own) => own,
            Err(err) => {
                tracing::error!(error = %err, "cannot write the index changes");
                if let StoreError::Corrupt(detail) = &err {
                    damage.record(detail);
                }
                poisoned = true;
                None
            }
        };
        let flushed = std::mem::take(&mut *txn.flushed.borrow_mut());
        let wrote = own.is_some() || txn.appended.get();
        // A snapshot that holds the journal entry must find the slot.
        if let Some((seq, slot)) = &own {
            unlogged.add(*seq, Arc::clone(slot));
        }
        let outcome = if poisoned {
            if let Err(err) = unpanic("an abort", || Ok(txn.txn.abort()?)) {
                tracing::error!(error = %err, "abort failed");
            }
            Err(StoreError::Backend(
                "a storage error aborted the transaction".into(),
            ))
        } else {
            unpanic("a commit", || Ok(txn.txn.commit()?))
        };
        if let Err(StoreError::Corrupt(detail)) = &outcome {
            damage.record(detail);
        }
        match &outcome {
            Ok(()) => {
                unlogged.remove(&flushed);
                kick.wake(wrote);
            }
            Err(err) => {
                if let Some((seq, _)) = own {
                    unlogged.remove(&[seq]);
                }
                tracing::error!(error = %err, "write transaction failed");
            }
        }
        for complete in completions {
            complete(outcome.clone());
        }
    }
    // Stopping: the index changes still waiting in memory go into a run, so the next
    // open has no journal to index again.
    if damage.writable().is_ok() && !unlogged.all().is_empty() {
        let flushed = unpanic("the last flush", || {
            let txn = begin(db, worker, unlogged, *limits.lock())?;
            txn.flush_now()?;
            let flushed = std::mem::take(&mut *txn.flushed.borrow_mut());
            txn.txn.commit()?;
            Ok(flushed)
        });
        match flushed {
            Ok(seqs) => unlogged.remove(&seqs),
            Err(err) => tracing::warn!(error = %err, "cannot store the waiting index changes"),
        }
    }
}

/// A write transaction for a group: durable, and recording redb's allocator state
/// (quick repair) so that opening the file after a crash need not walk and checksum
/// every page — one damaged page must not make the whole file unopenable.
fn begin(
    db: &Database,
    worker: &Arc<IndexWorker>,
    unlogged: &Arc<Unlogged>,
    limits: IndexLimits,
) -> Result<Txn, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    Ok(Txn {
        txn,
        jobs: RefCell::new(Vec::new()),
        counts: RefCell::new(HashMap::new()),
        flushed: RefCell::new(Vec::new()),
        appended: Cell::new(false),
        worker: Arc::clone(worker),
        unlogged: Arc::clone(unlogged),
        limits,
    })
}
