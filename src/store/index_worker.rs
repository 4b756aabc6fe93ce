//! The index worker: a thread beside the writer that turns a job's contact changes into
//! sorted index changes (`index::compute`) while the writer writes the contacts
//! themselves. The writer collects the results, in the order it submitted them, just
//! before it writes the index log, so they still land in the contacts' transaction.
//!
//! Computing the keys and sorting them was about a sixth of the writer thread's time at
//! a million contacts; here it runs on the other core.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::index::{self, Computed, Pairs};
use super::StoreError;

struct Task {
    agent: String,
    pairs: Arc<Pairs>,
    reply: SyncSender<Computed>,
}

/// The thread and the way to it; dropping it stops the thread once the queued tasks are
/// done.
pub struct IndexWorker {
    tx: Mutex<Option<Sender<Task>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A result on its way.
pub enum Pending {
    Ready(Computed),
    Waiting(Receiver<Computed>),
}

impl Pending {
    /// Waits for the result.
    pub fn wait(self) -> Result<Computed, StoreError> {
        match self {
            Self::Ready(computed) => Ok(computed),
            Self::Waiting(rx) => rx
                .recv()
                .map_err(|_| StoreError::Backend("the index worker stopped".into())),
        }
    }
}

impl IndexWorker {
    pub fn start() -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("contactd-indexer".into())
            .spawn(move || {
                for task in rx {
                    let computed = index::compute(&task.agent, &task.pairs);
                    // The contacts are freed here rather than on the writer, unless
                    // the writer still holds them.
                    drop(task.pairs);
                    // The transaction may have been aborted meanwhile.
                    let _ = task.reply.send(computed);
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues the index changes of `pairs`, contacts of `agent`. Should the thread be
    /// gone, they are computed here and now.
    pub fn submit(&self, agent: &str, pairs: Arc<Pairs>) -> Pending {
        let (reply, rx) = mpsc::sync_channel(1);
        let task = Task {
            agent: agent.to_owned(),
            pairs,
            reply,
        };
        let sent = match self.tx.lock().as_ref() {
            Some(tx) => tx.send(task).map_err(|failed| failed.0),
            None => Err(task),
        };
        match sent {
            Ok(()) => Pending::Waiting(rx),
            Err(task) => Pending::Ready(index::compute(&task.agent, &task.pairs)),
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
    use crate::domain::Contact;

    fn contact(id: u64, name: &str) -> Contact {
        Contact {
            id,
            external_id: format!("ext-{id}"),
            name: Some(name.into()),
            email: None,
            phonenumber: None,
            stripe_accounts: vec![],
            custom_attributes: Default::default(),
            created_at: 5,
            updated_at: 5,
        }
    }

    #[test]
    fn results_match_computing_in_place_in_submission_order() {
        let worker = IndexWorker::start().unwrap();
        let jobs: Vec<Pairs> = (0..20)
            .map(|n| {
                (0..n)
                    .map(|i| {
                        (
                            Some(contact(i, "Ada King")),
                            Some(contact(i, &format!("Grace {n}"))),
                        )
                    })
                    .collect()
            })
            .collect();
        let pending: Vec<_> = jobs
            .iter()
            .map(|pairs| worker.submit("a", Arc::new(pairs.clone())))
            .collect();
        for (pairs, pending) in jobs.iter().zip(pending) {
            let got = pending.wait().unwrap();
            let want = index::compute("a", pairs);
            assert_eq!(got.changes, want.changes);
            assert_eq!(got.counts, want.counts);
        }
    }

    #[test]
    fn a_stopped_worker_computes_in_place() {
        let worker = IndexWorker::start().unwrap();
        worker.tx.lock().take();
        let pairs: Pairs = vec![(None, Some(contact(1, "Ada")))];
        let got = worker.submit("a", Arc::new(pairs.clone())).wait().unwrap();
        assert_eq!(got.changes, index::compute("a", &pairs).changes);
        assert!(!got.changes.is_empty());
    }
}
