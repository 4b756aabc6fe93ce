//! The merger thread: carries out the index merges in flight (see `lsm::compaction`)
//! beside the writer. It reads the inputs on its own snapshot and builds the output's
//! chunks, then hands each step to the writer, which stores it in a write transaction
//! like any other job. It wakes after every commit and sleeps while no merge is in
//! flight. Once writes have stopped for `IndexLimits::idle_ms`, it has the waiting
//! blocks and the log flushed (`IndexTxn::flush_now`) and runs of comparable size merged
//! (`compaction::plan_idle`), so reads open fewer sources.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use redb::Database;

use super::lsm::compaction::{self, apply_step, plan_idle, Progress};
use super::Indexer;
use crate::store::damage::{unpanic, Damage};
use crate::store::writer::Writer;
use crate::store::StoreError;

#[derive(Default)]
struct Signal {
    kicked: bool,
    /// A commit changed index entries since the merger last looked.
    wrote: bool,
    stop: bool,
}

/// Why [`Kick::wait`] returned.
enum Wake {
    /// After a commit; `true` when it (or one before) changed index entries.
    Commit(bool),
    /// Nothing was committed for the time given.
    Idle,
    Stop,
}

/// Wakes the merger; cloned into the writer.
#[derive(Clone, Default)]
pub struct Kick(Arc<(Mutex<Signal>, Condvar)>);

impl Kick {
    /// After a commit; `wrote` when it changed index entries.
    pub fn wake(&self, wrote: bool) {
        let (lock, cv) = &*self.0;
        let mut signal = lock.lock();
        signal.kicked = true;
        signal.wrote |= wrote;
        cv.notify_one();
    }

    fn stop(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().stop = true;
        cv.notify_one();
    }

    /// Waits for a commit, at most `idle`.
    fn wait(&self, idle: Duration) -> Wake {
        let (lock, cv) = &*self.0;
        let mut signal = lock.lock();
        if !signal.kicked && !signal.stop {
            cv.wait_for(&mut signal, idle);
        }
        if signal.stop {
            return Wake::Stop;
        }
        if !signal.kicked {
            return Wake::Idle;
        }
        signal.kicked = false;
        Wake::Commit(std::mem::take(&mut signal.wrote))
    }

    fn stopped(&self) -> bool {
        self.0 .0.lock().stop
    }
}

pub struct Merger {
    kick: Kick,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Merger {
    /// Starts the thread (it looks for merges left in flight at once).
    pub fn start(
        db: Arc<Database>,
        writer: Arc<Writer>,
        indexer: Arc<Indexer>,
        kick: Kick,
        damage: Arc<Damage>,
    ) -> Result<Self, StoreError> {
        let signal = kick.clone();
        let thread = std::thread::Builder::new()
            .name("contactd-merger".into())
            .spawn(move || merge_loop(&db, &writer, &indexer, &signal, &damage))?;
        kick.wake(true);
        Ok(Self {
            kick,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops after the step in hand and waits for the thread. Merges in flight resume
    /// (from the start) when the store is opened again.
    pub fn shutdown(&self) {
        self.kick.stop();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the merger thread panicked");
            }
        }
    }
}

fn merge_loop(db: &Database, writer: &Writer, indexer: &Indexer, kick: &Kick, damage: &Damage) {
    let mut progress: HashMap<u64, Progress> = HashMap::new();
    // Index entries were written since the last idle merge.
    let mut dirty = false;
    loop {
        let idle = Duration::from_millis(indexer.limits().idle_ms.max(1));
        match kick.wait(idle) {
            Wake::Stop => return,
            Wake::Commit(wrote) => dirty |= wrote,
            Wake::Idle if dirty => {
                dirty = false;
                // A quiet moment: the waiting index changes into a run, a checkpoint
                // (so the log restarts), and merges of comparable runs planned.
                let planned = writer.submit_blocking(|txn| {
                    txn.index().flush_now()?;
                    txn.want_checkpoint();
                    plan_idle(txn, txn.index().limits())
                });
                match planned {
                    Ok(_) => {}
                    Err(StoreError::Closed) => return,
                    Err(err) => tracing::error!(error = %err, "cannot plan an idle index merge"),
                }
            }
            Wake::Idle => continue,
        }
        if !merge(db, writer, indexer, kick, damage, &mut progress) {
            return;
        }
    }
}

/// Takes steps of the merges in flight until there are none; `false` once stopped.
fn merge(
    db: &Database,
    writer: &Writer,
    indexer: &Indexer,
    kick: &Kick,
    damage: &Damage,
    progress: &mut HashMap<u64, Progress>,
) -> bool {
    loop {
        if kick.stopped() {
            return false;
        }
        let limits = indexer.limits();
        let applied = unpanic("an index merge", || {
            compaction::round(db, progress, limits, |step| {
                writer.submit_blocking(move |txn| apply_step(txn, step, txn.index().limits()))
            })
        });
        match applied {
            Ok(true) => {}
            Ok(false) => return true,
            Err(StoreError::Closed) => return false,
            // Writes are refused now; the merger waits for them like the rest.
            Err(StoreError::Damaged(_)) => return true,
            Err(StoreError::Corrupt(detail)) => {
                damage.record(&detail);
                return true;
            }
            Err(err) => {
                tracing::error!(error = %err, "an index merge step failed");
                // Not in a hot loop: try again after the next commit, or a pause.
                std::thread::sleep(Duration::from_millis(100));
                return true;
            }
        }
    }
}
