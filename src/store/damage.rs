//! What the store knows of damage to its file. A read that meets damage (a checksum
//! that does not match, a record under the wrong key, redb reporting corruption or
//! panicking on a malformed page) fails alone, and is logged and counted; from then on
//! every write is refused, so nothing is built on damaged data. The refusal outlives
//! the process: a `DAMAGED` file in the data dir records the first damage seen, and a
//! store opened on that dir refuses writes until an operator has salvaged or restored
//! the data and removed it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use parking_lot::Mutex;

use super::data_dir::private_file;
use super::StoreError;

/// The marker's file name in the data dir.
pub const MARKER: &str = "DAMAGED";

pub struct Damage {
    marker: PathBuf,
    /// The first damage seen (or found recorded), if any.
    first: Mutex<Option<String>>,
    /// Reads that failed on damage since the process started.
    failed_reads: AtomicU64,
}

/// What `/healthz` says of damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageReport {
    pub detail: String,
    pub failed_reads: u64,
}

impl Damage {
    /// The damage state of `data_dir`: damaged if a marker is there.
    pub fn open(data_dir: &Path) -> Self {
        let marker = data_dir.join(MARKER);
        let first = std::fs::read_to_string(&marker).ok().map(|text| {
            let text = text.trim().to_owned();
            tracing::error!(
                marker = %marker.display(),
                detail = %text,
                "this data dir was found damaged earlier; writes are refused until it is salvaged or restored and the marker removed"
            );
            text
        });
        Self {
            marker,
            first: Mutex::new(first),
            failed_reads: AtomicU64::new(0),
        }
    }

    /// Notes damage: logged, and the first becomes the reason writes are refused.
    pub fn record(&self, detail: &str) {
        tracing::error!(%detail, "the database file is damaged");
        let mut first = self.first.lock();
        if first.is_some() {
            return;
        }
        let text = detail.to_owned();
        let written = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.marker)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        if let Err(err) = written {
            tracing::error!(error = %err, marker = %self.marker.display(), "cannot record the damage in the data dir");
        }
        *first = Some(text);
    }

    /// Passes `result` on; damage in it is recorded and counted as a failed read.
    pub fn read<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Corrupt(detail)) = &result {
            self.failed_reads.fetch_add(1, Ordering::Relaxed);
            self.record(detail);
        }
        result
    }

    /// Fails once damage was seen: writes are refused then.
    pub fn writable(&self) -> Result<(), StoreError> {
        match &*self.first.lock() {
            Some(detail) => Err(StoreError::Damaged(detail.clone())),
            None => Ok(()),
        }
    }

    pub fn report(&self) -> Option<DamageReport> {
        self.first.lock().as_ref().map(|detail| DamageReport {
            detail: detail.clone(),
            failed_reads: self.failed_reads.load(Ordering::Relaxed),
        })
    }
}

thread_local! {
    /// Inside [`unpanic`]: how deep, and where the last panic there happened.
    static GUARD: Cell<usize> = const { Cell::new(0) };
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that, inside [`unpanic`], notes where a panic happened
/// instead of printing it (the error carries it); elsewhere it prints as before.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARD.with(Cell::get) > 0 {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANICKED_AT.with(|cell| *cell.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error: damage must fail one request, not take a
/// thread down. A panic inside redb (it panics on some malformed pages) is `Corrupt`,
/// damage; a panic anywhere else is a bug, `Backend`, which fails the request without
/// marking the data dir damaged.
pub fn unpanic<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    install_hook();
    GUARD.with(|depth| depth.set(depth.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARD.with(|depth| depth.set(depth.get() - 1));
    result.unwrap_or_else(|panic| {
        let at = PANICKED_AT
            .with(|cell| cell.borrow_mut().take())
            .unwrap_or_default();
        let message = format!("{what} panicked at {at}: {}", panic_message(panic.as_ref()));
        Err(if in_redb(&at) {
            StoreError::Corrupt(message)
        } else {
            tracing::error!(%message, "a bug: a panic caught");
            StoreError::Backend(message)
        })
    })
}

/// Whether a panic's location is in redb's source (a registry path `…/redb-<version>/…`
/// or a checkout of it).
fn in_redb(location: &str) -> bool {
    location.contains("/redb-") || location.contains("/redb/src/")
}

/// The message a panic carried.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn damage_refuses_writes_and_is_remembered_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let damage = Damage::open(dir.path());
        assert!(damage.writable().is_ok());
        let ok: Result<u8, StoreError> = Ok(1);
        assert!(damage.read(ok).is_ok());
        let bad: Result<u8, StoreError> = Err(StoreError::Corrupt("contact: checksum".into()));
        assert!(damage.read(bad).is_err());
        assert!(matches!(damage.writable(), Err(StoreError::Damaged(d)) if d.contains("checksum")));
        assert_eq!(damage.report().unwrap().failed_reads, 1);
        let again = Damage::open(dir.path());
        assert!(again.writable().is_err(), "the marker outlives the process");
    }

    #[test]
    fn a_panic_outside_redb_is_a_bug_not_damage() {
        let result: Result<(), StoreError> = unpanic("a read", || panic!("index out of range"));
        assert!(
            matches!(&result, Err(StoreError::Backend(m)) if m.contains("index out of range") && m.contains("damage.rs")),
            "{result:?}"
        );
        assert!(in_redb(
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/redb-4.4.0/src/tree_store/btree.rs:141"
        ));
        assert!(!in_redb("src/store/damage.rs:10"));
    }
}
