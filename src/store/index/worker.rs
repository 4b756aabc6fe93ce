//! The index worker: a thread beside the writer that turns each write transaction's
//! contact changes into the transaction's index block (`entries::compute`, then one
//! sorted block) and puts it in the transaction's [`Slot`]. The writer does not wait
//! for it: the block waits in memory until a later transaction stores it in a run (see
//! `lsm::unlogged`).
//!
//! Computing the keys, sorting them and merging the jobs' changes into one block is
//! about a fifth of a write's CPU time at a million contacts: here it runs beside the
//! writer, during the commit's sync.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::entries::{self, Pairs};
use super::lsm::block::Block;
use super::lsm::unlogged::Slot;
use super::lsm::Changes;
use crate::store::StoreError;

/// The contact changes of one job: its agent and each contact before and after.
pub type Job = (String, Arc<Pairs>);

/// One transaction's jobs, in the order they ran, and where their block goes.
struct Task {
    jobs: Vec<Job>,
    slot: Arc<Slot>,
}

impl Drop for Task {
    /// A task dropped unbuilt (the thread stopped or panicked) fails its slot, so no
    /// reader waits for it forever.
    fn drop(&mut self) {
        self.slot
            .fill(Err(StoreError::Backend("the index worker stopped".into())));
    }
}

/// The thread and the way to it; dropping it stops the thread once the queued tasks are
/// done.
pub struct IndexWorker {
    tx: Mutex<Option<Sender<Task>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The index block of `jobs` (later jobs' changes win): `None` when they change no index
/// entry.
pub fn build(jobs: &[Job]) -> Option<Block> {
    let mut changes = Changes::default();
    for (agent, pairs) in jobs {
        changes.add_sorted(entries::compute(agent, pairs));
    }
    changes.into_block()
}

impl IndexWorker {
    pub fn start() -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("contactd-indexer".into())
            .spawn(move || {
                for task in rx {
                    let block = build(&task.jobs);
                    task.slot.fill(Ok(block));
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues the block of `jobs` for `slot`. Should the thread be gone, it is built
    /// here and now.
    pub fn seal(&self, jobs: Vec<Job>, slot: Arc<Slot>) {
        let task = Task { jobs, slot };
        let sent = match self.tx.lock().as_ref() {
            Some(tx) => tx.send(task).map_err(|failed| failed.0),
            None => Err(task),
        };
        if let Err(task) = sent {
            task.slot.fill(Ok(build(&task.jobs)));
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
                let slot = Arc::new(Slot::default());
                worker.seal(jobs.clone(), Arc::clone(&slot));
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
        worker.seal(jobs.clone(), Arc::clone(&slot));
        let got = keys(slot.wait().unwrap());
        assert!(!got.is_empty());
        assert_eq!(got, keys(build(&jobs)));
    }
}
