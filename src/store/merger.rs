//! The merger thread: carries out the index merges in flight (see `lsm::compaction`)
//! beside the writer. It reads the inputs on its own snapshot and builds the output's
//! chunks, then hands each step to the writer, which stores it in a write transaction
//! like any other job. It wakes after every commit and sleeps while no merge is in
//! flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use redb::Database;

use super::lsm::compaction::{self, apply_step, Progress};
use super::writer::Writer;
use super::StoreError;

#[derive(Default)]
struct Signal {
    kicked: bool,
    stop: bool,
}

/// Wakes the merger; cloned into the writer.
#[derive(Clone, Default)]
pub struct Kick(Arc<(Mutex<Signal>, Condvar)>);

impl Kick {
    pub fn wake(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().kicked = true;
        cv.notify_one();
    }

    fn stop(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().stop = true;
        cv.notify_one();
    }

    /// Waits for a wake-up; `false` once stopped.
    fn wait(&self) -> bool {
        let (lock, cv) = &*self.0;
        let mut signal = lock.lock();
        while !signal.kicked && !signal.stop {
            cv.wait(&mut signal);
        }
        signal.kicked = false;
        !signal.stop
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
    pub fn start(db: Arc<Database>, writer: Arc<Writer>, kick: Kick) -> Result<Self, StoreError> {
        let signal = kick.clone();
        let thread = std::thread::Builder::new()
            .name("contactd-merger".into())
            .spawn(move || run(&db, &writer, &signal))?;
        kick.wake();
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

fn run(db: &Database, writer: &Writer, kick: &Kick) {
    let mut progress: HashMap<u64, Progress> = HashMap::new();
    while kick.wait() {
        loop {
            if kick.stopped() {
                return;
            }
            let limits = writer.limits();
            let applied = compaction::round(db, &mut progress, limits, |step| {
                writer.submit_blocking(move |txn| apply_step(txn, step, txn.limits))
            });
            match applied {
                Ok(true) => {}
                Ok(false) | Err(StoreError::Closed) => break,
                Err(err) => {
                    tracing::error!(error = %err, "an index merge step failed");
                    // Not in a hot loop: try again after the next commit, or a pause.
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}
