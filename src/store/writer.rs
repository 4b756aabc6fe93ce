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
//! The writer knows nothing of the indexes beyond their seam (`index`): each group's
//! [`Txn`] carries a `TxnIndex`, which jobs tell what they changed, and the writer
//! has it finish before the commit and tells the `Indexer` how the commit went. Likewise
//! for the external-id and email entries (`deferred`): a group's join the shared ones
//! just before its commit, and a checkpoint inserts them all into their B-trees.

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::damage::{unpanic, Damage};
use super::deferred::{Deferred, GroupKeys, META_KEYS_SEQ};
use super::index::{Finished, IndexTxn, IndexView, Indexer, TxnIndex};
use super::redo::{self, Op};
use super::tables::{META, META_WAL_CHECKPOINT};
use super::wal::{self, Log};
use super::{StoreError, StoreFuture};

/// A write group's transaction, its index changes and its log record so far.
pub struct Txn {
    txn: WriteTransaction,
    /// For snapshots of what earlier groups committed (see [`Txn::committed`]).
    db: Arc<Database>,
    index: TxnIndex,
    /// External-id and email entries, inserted into their B-trees at checkpoints.
    deferred: Arc<Deferred>,
    /// The number this group's entries take there (see `deferred`).
    keys_seq: u64,
    /// The entries this group's jobs changed so far.
    keys: RefCell<GroupKeys>,
    /// The changes to the data the group's jobs made, for the write-ahead log.
    redo: RefCell<Vec<Op>>,
    /// Set while replaying the log: the changes are in it already.
    replaying: Cell<bool>,
    /// A job asked for this group to be a checkpoint.
    checkpoint: Cell<bool>,
    /// A job appended to a change feed: readers waiting for changes are woken once
    /// the group is durable.
    fed: Cell<bool>,
    /// The group's time (Unix seconds), for what is stamped without a time of its own
    /// (webhook events of attribute and agent changes): read once when the group
    /// begins, logged first in its record, and taken from there on replay.
    now: Cell<i64>,
    /// Bytes the group wrote that the log does not hold (change feed entries, queued
    /// webhook events): they sit in memory until a checkpoint like the logged ones, so
    /// they count towards `wal.checkpoint_mb` too.
    derived: Cell<u64>,
}

impl Deref for Txn {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl Txn {
    /// The group's index changes, with its transaction.
    pub fn index(&self) -> IndexTxn<'_> {
        IndexTxn {
            txn: &self.txn,
            state: &self.index,
        }
    }

    /// The sort and word indexes as the groups before this one committed them: what
    /// this group's jobs changed reaches them only after the group (see
    /// [`IndexTxn::pending`]).
    pub fn committed_index(&self) -> Result<IndexView, StoreError> {
        self.index.committed_index(&self.db)
    }

    /// The contact number of external id `ext` as the groups so far left it, when it
    /// changed since the last checkpoint (`Some(None)`: removed); `None`: as the
    /// `contacts_by_external_id` B-tree holds it.
    pub fn deferred_ext(&self, agent: &str, ext: &str) -> Option<Option<u64>> {
        let own = self.keys.borrow().ext(agent, ext);
        own.or_else(|| self.deferred.latest_ext(agent, ext))
    }

    /// Who holds email `key`, like [`Txn::deferred_ext`].
    pub fn deferred_email(&self, agent: &str, key: &str) -> Option<Option<String>> {
        let own = self.keys.borrow().email(agent, key);
        own.or_else(|| self.deferred.latest_email(agent, key))
    }

    /// Whether the `contacts_by_external_id` B-tree may hold `ext` (`false`: surely
    /// not, so the lookup can be skipped).
    pub fn may_store_ext(&self, agent: &str, ext: &str) -> bool {
        self.deferred.may_store_ext(agent, ext)
    }

    /// Whether the `contacts_by_email` B-tree may hold `key`, like
    /// [`Txn::may_store_ext`].
    pub fn may_store_email(&self, agent: &str, key: &str) -> bool {
        self.deferred.may_store_email(agent, key)
    }

    /// Sets (`None`: removes) the external-id entry of `ext`; it reaches the B-tree at
    /// a checkpoint.
    pub fn set_ext(&self, agent: &str, ext: &str, number: Option<u64>) {
        self.keys.borrow_mut().set_ext(agent, ext, number);
    }

    /// Sets (`None`: removes) the email entry of `key`, like [`Txn::set_ext`].
    pub fn set_email(&self, agent: &str, key: &str, holder: Option<&str>) {
        self.keys.borrow_mut().set_email(agent, key, holder);
    }

    /// Removes every entry of `agent` that waits for a checkpoint (its entries in the
    /// B-trees are the caller's to remove).
    pub fn remove_agent_keys(&self, agent: &str) {
        let live = self.deferred.live_keys(agent);
        self.keys.borrow_mut().remove_agent(agent, live);
    }

    /// Records a change to the data for the write-ahead log (see `redo`): every write
    /// primitive calls this once it has written.
    pub fn record(&self, op: Op) {
        if !self.replaying.get() {
            let mut redo = self.redo.borrow_mut();
            if redo.is_empty() {
                redo.push(Op::At(self.now.get()));
            }
            redo.push(op);
        }
    }

    /// The group's time (see `Txn::now`'s field).
    pub fn now(&self) -> i64 {
        self.now.get()
    }

    /// Sets the group's time: replaying a record that logged it.
    pub fn set_now(&self, now: i64) {
        self.now.set(now);
    }

    /// Whether writes are being recorded for the log (not a replay of it).
    pub fn recording(&self) -> bool {
        !self.replaying.get()
    }

    /// Notes `bytes` written that follow from the logged changes (see `derived`).
    pub fn derived_written(&self, bytes: u64) {
        self.derived.set(self.derived.get() + bytes);
    }

    /// Notes that the group appended to a change feed.
    pub fn fed(&self) {
        self.fed.set(true);
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
    /// Jobs, and `None` to stop (see [`Writer::shutdown`]).
    tx: Mutex<Option<mpsc::Sender<Option<Job>>>>,
    /// Set by `shutdown`: the thread stops once the queue is empty, whoever still holds
    /// a sender (a task that was aborted but not yet dropped holds one).
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Counts the durable groups that appended to a change feed.
    fed: Arc<watch::Sender<u64>>,
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
    /// Starts the thread; `indexer` takes each group's index changes.
    pub fn start(
        db: Arc<Database>,
        indexer: Arc<Indexer>,
        damage: Arc<Damage>,
        deferred: Arc<Deferred>,
        wal: WalSetup,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let fed = Arc::new(watch::Sender::new(0));
        let signal = Arc::clone(&fed);
        let thread = std::thread::Builder::new()
            .name("contactd-writer".into())
            .spawn(move || {
                let parts = Parts {
                    db: &db,
                    indexer: &indexer,
                    damage: &damage,
                    deferred: &deferred,
                    fed: &signal,
                };
                write_groups(&parts, rx, &stop, wal);
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            stopping,
            thread: Mutex::new(Some(thread)),
            fed,
        })
    }

    /// Changes each time a group that appended to a change feed is durable.
    pub fn feed_signal(&self) -> watch::Receiver<u64> {
        self.fed.subscribe()
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
            sender
                .send(Some(job))
                .await
                .map_err(|_| StoreError::Closed)?;
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
        sender
            .blocking_send(Some(job))
            .map_err(|_| StoreError::Closed)?;
        reply_rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Stops taking jobs, lets the queued ones finish, and waits for the thread. It does
    /// not wait for every sender to go: on a single-threaded runtime, tasks aborted just
    /// before are dropped only after this returns, and they may hold one.
    pub fn shutdown(&self) {
        if let Some(tx) = self.tx.lock().take() {
            self.stopping.store(true, Ordering::SeqCst);
            // A full queue is drained first; the flag stops the thread after it.
            let _ = tx.try_send(None);
        }
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
    db: &'a Arc<Database>,
    indexer: &'a Arc<Indexer>,
    damage: &'a Damage,
    deferred: &'a Arc<Deferred>,
    fed: &'a Arc<watch::Sender<u64>>,
}

impl Parts<'_> {
    /// A write transaction for a group (its durability is chosen when it commits).
    fn begin(&self) -> Result<Txn, StoreError> {
        Ok(Txn {
            txn: self.db.begin_write()?,
            db: Arc::clone(self.db),
            index: self.indexer.begin(),
            keys_seq: self.deferred.next_seq(),
            deferred: Arc::clone(self.deferred),
            keys: RefCell::default(),
            redo: RefCell::new(Vec::new()),
            replaying: Cell::new(false),
            checkpoint: Cell::new(false),
            fed: Cell::new(false),
            now: Cell::new(crate::clock::unix_now()),
            derived: Cell::new(0),
        })
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

fn write_groups(
    parts: &Parts<'_>,
    mut rx: mpsc::Receiver<Option<Job>>,
    stopping: &AtomicBool,
    wal: WalSetup,
) {
    let mut log = LogState {
        bytes: u64::from(wal.pending),
        wal,
        since: Instant::now(),
    };
    let mut stop = false;
    while !stop {
        let Some(Some(first)) = rx.blocking_recv() else {
            break;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Some(job)) => group.push(job),
                Ok(None) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        stop |= stopping.load(Ordering::SeqCst) && rx.is_empty();
        crate::metrics::write_group(group.len(), rx.len());
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
            Ok(Finished::default())
        } else {
            unpanic("indexing a write", || txn.index().finish())
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(err) => {
                tracing::error!(error = %err, "cannot write the index changes");
                if let StoreError::Corrupt(detail) = &err {
                    parts.damage.record(detail);
                }
                poisoned = true;
                Finished::default()
            }
        };
        parts.indexer.publish(&finished);
        let ops = std::mem::take(&mut *txn.redo.borrow_mut());
        let fed = txn.fed.get().then(|| Arc::clone(parts.fed));
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
            Ok(()) => parts.indexer.committed(finished),
            Err(err) => {
                parts.indexer.aborted(finished);
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
                    announce(fed.as_ref(), &synced);
                }),
            ),
            None => {
                for complete in completions {
                    complete(outcome.clone());
                }
                announce(fed.as_ref(), &outcome);
            }
        }
    }
    shutdown(parts, &mut log);
}

/// Wakes the readers waiting for changes once a group that appended to a change feed
/// (`fed`) is durable.
fn announce(fed: Option<&Arc<watch::Sender<u64>>>, outcome: &Result<(), StoreError>) {
    if let (Some(fed), Ok(())) = (fed, outcome) {
        fed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Commits a group: a checkpoint (durable, recording its sequence number, then the log
/// restarts) when one is due, else without durability, handing back the log record
/// that makes it durable (`None` when the group changed no data).
fn commit(txn: Txn, ops: &[Op], log: &mut LogState) -> (Result<(), StoreError>, Option<Vec<u8>>) {
    let record = (!ops.is_empty()).then(|| wal::encode(log.wal.next_lsn, ops));
    let record_len = record.as_ref().map_or(0, |r| r.len() as u64);
    // What this group leaves in memory until the next checkpoint.
    let pending = record_len + txn.derived.get();
    let started = Instant::now();
    // The group's external-id and email entries join the deferred ones before the
    // commit: a snapshot that holds the group must find them.
    let (deferred, keys_seq) = (Arc::clone(&txn.deferred), txn.keys_seq);
    let keys = txn.keys.take();
    let keys_changed = !keys.is_empty();
    if keys_changed {
        deferred.seal(keys_seq, keys);
    }
    if log.due(&txn, pending) {
        let lsn = log.take_lsn();
        let committed = unpanic("a checkpoint", || {
            deferred.flush(&txn, keys_seq)?;
            txn.open_table(META)?.insert(META_WAL_CHECKPOINT, lsn)?;
            let mut inner = txn.txn;
            inner.set_durability(Durability::Immediate)?;
            // The allocator state, so that opening the file after a crash need not walk
            // (and checksum) every page: one damaged page must not make it unopenable.
            inner.set_quick_repair(true);
            inner.commit()?;
            Ok(())
        });
        match &committed {
            Ok(()) => deferred.checkpointed(keys_seq),
            Err(_) if keys_changed => deferred.aborted(keys_seq),
            Err(_) => {}
        }
        if committed.is_ok() {
            crate::metrics::checkpoint(started.elapsed());
            log.wal.log.rotate(lsn);
            log.bytes = 0;
            log.since = Instant::now();
        }
        return (committed, None);
    }
    let committed = unpanic("a commit", || {
        if keys_changed {
            txn.open_table(META)?.insert(META_KEYS_SEQ, keys_seq)?;
        }
        let mut inner = txn.txn;
        inner.set_durability(Durability::None)?;
        inner.commit()?;
        Ok(())
    });
    match &committed {
        Ok(()) if keys_changed => deferred.committed(keys_seq),
        Err(_) if keys_changed => deferred.aborted(keys_seq),
        _ => {}
    }
    crate::metrics::commit(started.elapsed());
    match record {
        Some(record) if committed.is_ok() => {
            log.take_lsn();
            log.bytes += pending;
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
        txn.index().flush_now()?;
        let finished = txn.index().finish_flushed();
        txn.want_checkpoint();
        // Logged bytes or not, this one is durable.
        log.bytes = log.bytes.max(1);
        let (committed, _) = commit(txn, &[], log);
        committed.map(|()| finished)
    });
    match done {
        Ok(finished) => parts.indexer.committed(finished),
        Err(err) => tracing::warn!(error = %err, "cannot store the waiting index changes"),
    }
    log.wal.log.shutdown();
}
