//! The single writer thread. It owns every write transaction: it takes one queued job,
//! drains whatever else is already queued (up to a limit) into the same transaction,
//! commits once, and answers each job once the commit is durable: through the
//! write-ahead log (the group's changes appended and synced by the log thread, see
//! `wal`; redb commits with `Durability::None`), or, for a checkpoint, by a durable
//! redb commit. The writer goes on with the next group while the log syncs.
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
use std::time::{Duration, Instant};

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
use super::redo::{self, Op};
use super::tables::{META, META_WAL_CHECKPOINT};
use super::wal::{self, Log};
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
    /// The changes to the data the group's jobs made, for the write-ahead log.
    redo: RefCell<Vec<Op>>,
    /// Set while replaying the log: the changes are in it already.
    replaying: Cell<bool>,
    /// A job asked for this group to be a checkpoint.
    checkpoint: Cell<bool>,
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

    /// Records a change to the data for the write-ahead log (see `redo`): every write
    /// primitive calls this once it has written.
    pub fn record(&self, op: Op) {
        if !self.replaying.get() {
            self.redo.borrow_mut().push(op);
        }
    }

    /// Applies a record of the write-ahead log again (at open): its ops run through the
    /// same primitives, which record nothing meanwhile.
    pub fn replay(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.replaying.set(true);
        let result = ops.into_iter().try_for_each(|op| redo::apply(self, op));
        self.replaying.set(false);
        result
    }

    /// Makes this group a checkpoint: a durable commit after which the log restarts.
    pub fn want_checkpoint(&self) {
        self.checkpoint.set(true);
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

/// The write-ahead log as the writer uses it.
pub struct WalSetup {
    pub log: Arc<Log>,
    /// The next log sequence number to give out.
    pub next_lsn: u64,
    /// A checkpoint is due once this many bytes were logged since the last one...
    pub checkpoint_bytes: u64,
    /// ...or this long after it, if anything was logged.
    pub checkpoint_every: Duration,
    /// Records from before the open are in the log (replayed, not yet checkpointed).
    pub pending: bool,
}

impl Writer {
    /// Starts the thread; `kick` is woken after every commit (index merges may be due);
    /// `unlogged` holds the blocks of committed transactions not yet in a run.
    pub fn start(
        db: Arc<Database>,
        kick: Kick,
        unlogged: Arc<Unlogged>,
        damage: Arc<Damage>,
        wal: WalSetup,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let limits = Arc::new(Mutex::new(IndexLimits::default()));
        let shared = Arc::clone(&limits);
        let worker = Arc::new(IndexWorker::start()?);
        let thread = std::thread::Builder::new()
            .name("contactd-writer".into())
            .spawn(move || {
                let parts = Parts {
                    db: &db,
                    limits: &shared,
                    worker: &worker,
                    unlogged: &unlogged,
                    damage: &damage,
                };
                run(&parts, rx, &kick, wal);
            })?;
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

/// What every group of the writer uses.
struct Parts<'a> {
    db: &'a Database,
    limits: &'a Mutex<IndexLimits>,
    worker: &'a Arc<IndexWorker>,
    unlogged: &'a Arc<Unlogged>,
    damage: &'a Damage,
}

impl Parts<'_> {
    fn begin(&self) -> Result<Txn, StoreError> {
        begin(self.db, self.worker, self.unlogged, *self.limits.lock())
    }
}

/// Where the log stands: the next sequence number, and what was logged since the last
/// checkpoint.
struct LogState {
    wal: WalSetup,
    bytes: u64,
    since: Instant,
}

impl LogState {
    /// Whether the group about to commit should be a checkpoint.
    fn due(&self, txn: &Txn, logging: u64) -> bool {
        let logged = self.bytes + logging;
        txn.checkpoint.get() && logged > 0
            || logged >= self.wal.checkpoint_bytes
            || logged > 0 && self.since.elapsed() >= self.wal.checkpoint_every
    }

    fn take_lsn(&mut self) -> u64 {
        let lsn = self.wal.next_lsn;
        self.wal.next_lsn += 1;
        lsn
    }
}

fn run(parts: &Parts<'_>, mut rx: mpsc::Receiver<Job>, kick: &Kick, wal: WalSetup) {
    let mut log = LogState {
        bytes: u64::from(wal.pending),
        wal,
        since: Instant::now(),
    };
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Nothing is written over damage.
        if let Err(err) = parts.damage.writable() {
            for job in group {
                let (_, complete) = job(Err(&err));
                complete(Err(err.clone()));
            }
            continue;
        }
        let txn = match parts.begin() {
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
            parts.damage.record(detail);
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
                    parts.damage.record(detail);
                }
                poisoned = true;
                None
            }
        };
        let flushed = std::mem::take(&mut *txn.flushed.borrow_mut());
        let wrote = own.is_some() || txn.appended.get();
        // A snapshot that holds the journal entry must find the slot.
        if let Some((seq, slot)) = &own {
            parts.unlogged.add(*seq, Arc::clone(slot));
        }
        let ops = std::mem::take(&mut *txn.redo.borrow_mut());
        let (outcome, durable) = if poisoned {
            if let Err(err) = unpanic("an abort", || Ok(txn.txn.abort()?)) {
                tracing::error!(error = %err, "abort failed");
            }
            let err = StoreError::Backend("a storage error aborted the transaction".into());
            (Err(err), None)
        } else {
            commit(txn, &ops, &mut log)
        };
        drop(ops);
        if let Err(StoreError::Corrupt(detail)) = &outcome {
            parts.damage.record(detail);
        }
        match &outcome {
            Ok(()) => {
                parts.unlogged.remove(&flushed);
                kick.wake(wrote);
            }
            Err(err) => {
                if let Some((seq, _)) = own {
                    parts.unlogged.remove(&[seq]);
                }
                tracing::error!(error = %err, "write transaction failed");
            }
        }
        match durable {
            // Answered once the log has the group's record on disk.
            Some(record) => log.wal.log.append(
                record,
                Box::new(move |synced| {
                    for complete in completions {
                        complete(synced.clone());
                    }
                }),
            ),
            None => {
                for complete in completions {
                    complete(outcome.clone());
                }
            }
        }
    }
    shutdown(parts, &mut log);
}

/// Commits a group: a checkpoint (durable, recording its sequence number, then the log
/// restarts) when one is due, else without durability, handing back the log record
/// that makes it durable (`None` when the group changed no data).
fn commit(txn: Txn, ops: &[Op], log: &mut LogState) -> (Result<(), StoreError>, Option<Vec<u8>>) {
    let record = (!ops.is_empty()).then(|| wal::encode(log.wal.next_lsn, ops));
    let record_len = record.as_ref().map_or(0, |r| r.len() as u64);
    if log.due(&txn, record_len) {
        let lsn = log.take_lsn();
        let committed = unpanic("a checkpoint", || {
            txn.open_table(META)?.insert(META_WAL_CHECKPOINT, lsn)?;
            let mut inner = txn.txn;
            inner.set_durability(Durability::Immediate)?;
            // The allocator state, so that opening the file after a crash need not walk
            // (and checksum) every page: one damaged page must not make it unopenable.
            inner.set_quick_repair(true);
            inner.commit()?;
            Ok(())
        });
        if committed.is_ok() {
            log.wal.log.rotate(lsn);
            log.bytes = 0;
            log.since = Instant::now();
        }
        return (committed, None);
    }
    let committed = unpanic("a commit", || {
        let mut inner = txn.txn;
        inner.set_durability(Durability::None)?;
        inner.commit()?;
        Ok(())
    });
    match record {
        Some(record) if committed.is_ok() => {
            log.take_lsn();
            log.bytes += record_len;
            (committed, Some(record))
        }
        _ => (committed, None),
    }
}

/// Stopping: the index changes still waiting in memory go into a run, and a last
/// checkpoint leaves nothing in the log, so the next open has nothing to redo.
fn shutdown(parts: &Parts<'_>, log: &mut LogState) {
    if parts.damage.writable().is_err() {
        return;
    }
    let done = unpanic("the last checkpoint", || {
        let txn = parts.begin()?;
        txn.flush_now()?;
        let flushed = std::mem::take(&mut *txn.flushed.borrow_mut());
        txn.want_checkpoint();
        // Logged bytes or not, this one is durable.
        log.bytes = log.bytes.max(1);
        let (committed, _) = commit(txn, &[], log);
        committed.map(|()| flushed)
    });
    match done {
        Ok(seqs) => parts.unlogged.remove(&seqs),
        Err(err) => tracing::warn!(error = %err, "cannot store the waiting index changes"),
    }
    log.wal.log.shutdown();
}

/// A write transaction for a group (its durability is chosen when it commits).
fn begin(
    db: &Database,
    worker: &Arc<IndexWorker>,
    unlogged: &Arc<Unlogged>,
    limits: IndexLimits,
) -> Result<Txn, StoreError> {
    let txn = db.begin_write()?;
    Ok(Txn {
        txn,
        jobs: RefCell::new(Vec::new()),
        counts: RefCell::new(HashMap::new()),
        flushed: RefCell::new(Vec::new()),
        appended: Cell::new(false),
        worker: Arc::clone(worker),
        unlogged: Arc::clone(unlogged),
        limits,
        redo: RefCell::new(Vec::new()),
        replaying: Cell::new(false),
        checkpoint: Cell::new(false),
    })
}
