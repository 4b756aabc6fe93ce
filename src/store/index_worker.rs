//! The index worker: a thread beside the writer that turns each write transaction's
//! contact changes into the transaction's index log block (`index::compute`, then one
//! sorted block) and puts it in the transaction's [`Slot`].
//!
//! The writer hands each job's changes over as the job runs ([`IndexWorker::add`]), so
//! the worker computes their keys while the writer goes on with the next jobs, and seals
//! the transaction's block when it finishes ([`IndexWorker::seal`]). A transaction that
//! changed few contacts waits for its block and stores it itself; a larger one does not
//! wait: the next transaction stores it in the log (see `lsm::unlogged`).
//!
//! Computing the keys, sorting them and merging the jobs' changes into one block took
//! about a fifth of the writer thread's time at a million contacts, and the writer
//! waited for the last job's keys before every commit.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::index::{self, Pairs};
use super::lsm::block::Block;
use super::lsm::unlogged::Slot;
use super::lsm::Changes;
use super::StoreError;

/// The contact changes of one job: its agent and each contact before and after.
pub type Job = (String, Arc<Pairs>);

/// A slot to fill with the block of the jobs added since the last one.
struct Sealing(Arc<Slot>);

impl Drop for Sealing {
    /// A slot dropped unfilled (the thread stopped or panicked) fails, so no reader or
    /// writer waits for it forever.
    fn drop(&mut self) {
        self.0
            .fill(Err(StoreError::Backend("the index worker stopped".into())));
    }
}

enum Message {
    Add(Job),
    Seal(Sealing),
}

/// The thread and the way to it; dropping it stops the thread once the queued messages
/// are done.
pub struct IndexWorker {
    tx: Mutex<Option<Sender<Message>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The log block of `jobs` (later jobs' changes win): `None` when they change no index
/// entry.
pub fn build(jobs: &[Job]) -> Option<Block> {
    let mut changes = Changes::default();
    for (agent, pairs) in jobs {
        changes.add_sorted(index::compute(agent, pairs));
    }
    changes.into_block()
}

impl IndexWorker {
    pub fn start() -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Message>();
        let thread = std::thread::Builder::new()
            .name("contactd-indexer".into())
            .spawn(move || {
                let mut changes = Changes::default();
                for message in rx {
                    match message {
                        Message::Add((agent, pairs)) => {
                            changes.add_sorted(index::compute(&agent, &pairs));
                        }
                        Message::Seal(sealing) => {
                            let block = std::mem::take(&mut changes).into_block();
                            sealing.0.fill(Ok(block));
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, message: Message) -> Result<(), Message> {
        match self.tx.lock().as_ref() {
            Some(tx) => tx.send(message).map_err(|failed| failed.0),
            None => Err(message),
        }
    }

    /// Hands over the changes of a job of the current transaction.
    pub fn add(&self, job: Job) {
        // Should the thread be gone, `seal` builds the block from all the jobs.
        let _ = self.send(Message::Add(job));
    }

    /// Has the block of the jobs added since the last seal built into `slot`; `jobs`
    /// are those jobs, to build from here and now should the thread be gone.
    pub fn seal(&self, jobs: &[Job], slot: Arc<Slot>) {
        if let Err(Message::Seal(sealing)) = self.send(Message::Seal(Sealing(slot))) {
            sealing.0.fill(Ok(build(jobs)));
        }
    }
}

impl Drop for IndexWorker {
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the index worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::samples::named as contact;

    fn keys(block: Option<Block>) -> Vec<(Vec<u8>, bool)> {
        block.map_or_else(Vec::new, |b| {
            (0..b.len())
                .map(|i| (b.get(i).0.to_vec(), b.get(i).1))
                .collect()
        })
    }

    #[test]
    fn blocks_match_building_in_place_in_submission_order() {
        let worker = IndexWorker::start().unwrap();
        let transactions: Vec<Vec<Job>> = (0..20u64)
            .map(|n| {
                (0..3)
                    .map(|j| {
                        let pairs: Pairs = (0..n)
                            .map(|i| {
                                (
                                    Some(contact(i, &format!("Ada {j}"))),
                                    Some(contact(i, &format!("Grace {n} {j}"))),
                                )
                            })
                            .collect();
                        ("a".to_owned(), Arc::new(pairs))
                    })
                    .collect()
            })
            .collect();
        let slots: Vec<Arc<Slot>> = transactions
            .iter()
            .map(|jobs| {
                for job in jobs {
                    worker.add(job.clone());
                }
                let slot = Arc::new(Slot::default());
                worker.seal(jobs, Arc::clone(&slot));
                slot
            })
            .collect();
        for (jobs, slot) in transactions.iter().zip(slots) {
            let got = keys(slot.wait().unwrap());
            assert_eq!(got, keys(build(jobs)));
        }
        // A later job's change of a key wins: Ada 0 → Grace, then Grace → Ada 0 again.
        let forth: Pairs = vec![(Some(contact(1, "Ada")), Some(contact(1, "Grace")))];
        let back: Pairs = vec![(Some(contact(1, "Grace")), Some(contact(1, "Ada")))];
        let jobs = vec![
            ("a".to_owned(), Arc::new(forth)),
            ("a".to_owned(), Arc::new(back)),
        ];
        let block = keys(build(&jobs));
        assert!(block.iter().any(|(_, present)| *present));
        assert!(block.iter().any(|(_, present)| !*present));
    }

    #[test]
    fn a_stopped_worker_builds_in_place() {
        let worker = IndexWorker::start().unwrap();
        worker.tx.lock().take();
        let pairs: Pairs = vec![(None, Some(contact(1, "Ada")))];
        let slot = Arc::new(Slot::default());
        let jobs = vec![("a".to_owned(), Arc::new(pairs))];
        worker.add(jobs[0].clone());
        worker.seal(&jobs, Arc::clone(&slot));
        let got = keys(slot.wait().unwrap());
        assert!(!got.is_empty());
        assert_eq!(got, keys(build(&jobs)));
    }
}
