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
//! The jobs of a group hand their contact changes to the index worker through the
//! transaction's [`Txn`]; the sorted index changes it returns are written as one block
//! of the index log just before the commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::index::{self, Pairs};
use super::index_worker::{IndexWorker, Pending};
use super::lsm::{Changes, IndexLimits};
use super::merger::Kick;
use super::{StoreError, StoreFuture};

/// A write transaction and the index changes its jobs made so far.
pub struct Txn {
    txn: WriteTransaction,
    /// Index changes being computed, per agent, in the order the jobs made them.
    pending: RefCell<Vec<(String, Pending)>>,
    worker: Arc<IndexWorker>,
    pub limits: IndexLimits,
}

impl Deref for Txn {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl Txn {
    /// Has the index worker compute the index changes of contact writes (already made
    /// or about to be made in this transaction).
    pub fn index_contacts(&self, agent: &str, pairs: Arc<Pairs>) {
        // A few contacts cost less to compute here than to hand over.
        let pending = if pairs.len() < INLINE_BELOW {
            Pending::Ready(index::compute(agent, &pairs))
        } else {
            self.worker.submit(agent, pairs)
        };
        self.pending.borrow_mut().push((agent.to_owned(), pending));
    }

    /// Whether jobs changed index entries.
    fn changed_index(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// Writes the index changes gathered so far: value counts to `field_counts`, sort
    /// and word entries as one block of the index log.
    pub fn write_index(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        let mut changes = Changes::default();
        let mut counts: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for (agent, pending) in pending {
            let computed = pending.wait()?;
            changes.add_sorted(computed.changes);
            let total = counts.entry(agent).or_default();
            for (field, delta) in computed.counts {
                *total.entry(field).or_default() += delta;
            }
        }
        for (agent, counts) in &counts {
            index::write_counts(&self.txn, agent, counts)?;
        }
        changes.commit(&self.txn, self.limits)?;
        Ok(())
    }
}

/// Jobs with fewer contacts compute their index changes on the writer.
const INLINE_BELOW: usize = 16;

/// Most jobs that share one commit.
const MAX_GROUP: usize = 64;
/// Queue depth; when full, callers wait (back-pressure) instead of being dropped.
const QUEUE_DEPTH: usize = 256;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job runs against the group's transaction, or is handed the error that kept the
/// group from getting one.
type Job = Box<dyn FnOnce(Result<&Txn, &StoreError>) -> (bool, Completion) + Send>;

pub struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    limits: Arc<Mutex<IndexLimits>>,
}

impl Writer {
    /// Starts the thread; `kick` is woken after every commit (index merges may be due).
    pub fn start(db: Arc<Database>, kick: Kick) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let limits = Arc::new(Mutex::new(IndexLimits::default()));
        let shared = Arc::clone(&limits);
        let worker = Arc::new(IndexWorker::start()?);
        let thread = std::thread::Builder::new()
            .name("contactd-writer".into())
            .spawn(move || run(&db, rx, &shared, &kick, &worker))?;
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
        let result = txn.map_err(Clone::clone).and_then(work);
        let poisoned = matches!(result, Err(StoreError::Backend(_) | StoreError::Corrupt(_)));
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
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut txn = match db.begin_write() {
            Ok(txn) => Txn {
                txn,
                pending: RefCell::new(Vec::new()),
                worker: Arc::clone(worker),
                limits: *limits.lock(),
            },
            Err(err) => {
                let err = StoreError::from(err);
                tracing::error!(error = %err, "cannot begin a write transaction");
                for job in group {
                    let (_, complete) = job(Err(&err));
                    complete(Err(err.clone()));
                }
                continue;
            }
        };
        if let Err(err) = txn.txn.set_durability(Durability::Immediate) {
            tracing::error!(error = %err, "cannot set durability");
        }
        let mut poisoned = false;
        let mut completions = Vec::with_capacity(group.len());
        for job in group {
            let (bad, complete) = job(Ok(&txn));
            poisoned |= bad;
            completions.push(complete);
        }
        let wrote = txn.changed_index();
        let written = if poisoned { Ok(()) } else { txn.write_index() };
        if let Err(err) = &written {
            tracing::error!(error = %err, "cannot write the index log");
            poisoned = true;
        }
        let outcome = if poisoned {
            if let Err(err) = txn.txn.abort() {
                tracing::error!(error = %err, "abort failed");
            }
            Err(StoreError::Backend(
                "a storage error aborted the transaction".into(),
            ))
        } else {
            txn.txn.commit().map_err(StoreError::from)
        };
        match &outcome {
            Ok(()) => kick.wake(wrote),
            Err(err) => tracing::error!(error = %err, "write transaction failed"),
        }
        for complete in completions {
            complete(outcome.clone());
        }
    }
}
