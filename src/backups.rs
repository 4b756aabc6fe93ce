//! Backup files: writing one whole or not at all, and the server's scheduled backups
//! (`backup.every_hours`, `backup.keep`, `backup.dir`).

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_now_ms;
use crate::domain::date::format_utc;
use crate::store::backup::BackupSummary;
use crate::store::data_dir::private_file;
use crate::store::{Store, StoreError};

/// Names of backups start so; sorted by name they are sorted by time.
const PREFIX: &str = "contactd-";
/// Names of scheduled backups, the only files pruning deletes, start so.
const SCHEDULED: &str = "contactd-scheduled-";
const SUFFIX: &str = ".backup";

/// `contactd-2026-12-07T14-00-00.250Z.backup` for Unix time `ms` (milliseconds): the
/// milliseconds always shown, so that names sort as their times do.
pub fn file_name(ms: i64) -> String {
    format!("{PREFIX}{}{SUFFIX}", stamp(ms))
}

/// `contactd-scheduled-2026-12-07T14-00-00.250Z.backup`.
fn scheduled_name(ms: i64) -> String {
    format!("{SCHEDULED}{}{SUFFIX}", stamp(ms))
}

fn stamp(ms: i64) -> String {
    let second = format_utc(ms - ms.rem_euclid(1000));
    let stamp = second.trim_end_matches('Z').replace(':', "-");
    format!("{stamp}.{:03}Z", ms.rem_euclid(1000))
}

/// Where a file is written before it is whole.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes a backup of `store` to `path`: into `path.partial`, synced, then renamed, so
/// that a file at `path` is always a whole backup.
pub fn write_file(store: &dyn Store, path: &Path) -> Result<BackupSummary, StoreError> {
    let partial = partial_path(path);
    let written = (|| {
        // A backup holds every contact and key digest: only its owner may read it.
        let file = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)?;
        let mut out = BufWriter::new(file);
        let summary = store.backup(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|err| StoreError::Backend(format!("cannot write the backup: {err}")))?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        Ok(summary)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Takes a backup into `dir` every `every`, keeping the newest `keep`; runs until the
/// task is dropped. The first one is due `every` after the newest scheduled backup
/// already in `dir` (at once if that is past), so restarts do not put it off. A failed
/// backup is logged and tried again at the next time.
pub async fn schedule(store: Arc<dyn Store>, every: Duration, keep: usize, dir: PathBuf) {
    let since_last = newest_age(&dir).unwrap_or(Duration::ZERO);
    let first = tokio::time::Instant::now() + every.saturating_sub(since_last);
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = Arc::clone(&store);
        let target = dir.clone();
        let done = tokio::task::spawn_blocking(move || take(store.as_ref(), &target, keep)).await;
        match done {
            Ok(Ok((path, summary))) => tracing::info!(
                file = %path.display(),
                contacts = summary.contacts,
                bytes = summary.bytes,
                "scheduled backup written"
            ),
            Ok(Err(err)) => {
                tracing::error!(error = %err, dir = %dir.display(), "scheduled backup failed")
            }
            Err(err) => tracing::error!(error = %err, "scheduled backup task failed"),
        }
    }
}

/// One scheduled backup, then the oldest beyond `keep` deleted.
fn take(
    store: &dyn Store,
    dir: &Path,
    keep: usize,
) -> Result<(PathBuf, BackupSummary), StoreError> {
    crate::store::data_dir::create_private_dir(dir)?;
    let path = dir.join(scheduled_name(unix_now_ms()));
    let summary = write_file(store, &path)?;
    prune(dir, keep)?;
    Ok((path, summary))
}

/// The names of the scheduled backups in `dir`, oldest first.
fn scheduled(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(SCHEDULED) && name.ends_with(SUFFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// How long ago the newest scheduled backup in `dir` was written, if there is one.
fn newest_age(dir: &Path) -> Option<Duration> {
    let newest = scheduled(dir).ok()?.pop()?;
    let written = std::fs::metadata(dir.join(newest)).ok()?.modified().ok()?;
    written.elapsed().ok()
}

/// Deletes all but the newest `keep` scheduled backups in `dir`, and the partial files
/// of scheduled backups a stopped process left; other files stay.
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let names = scheduled(dir)?;
    let extra = names.len().saturating_sub(keep);
    for name in &names[..extra] {
        std::fs::remove_file(dir.join(name))?;
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let partial = name.strip_suffix(".partial");
        if partial.is_some_and(|n| n.starts_with(SCHEDULED) && n.ends_with(SUFFIX))
            && !names.iter().any(|kept| name.starts_with(kept.as_str()))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_pruning_keeps_only_the_newest_scheduled_ones() {
        assert_eq!(file_name(0), "contactd-1970-01-01T00-00-00.000Z.backup");
        assert_eq!(
            scheduled_name(61_250),
            "contactd-scheduled-1970-01-01T00-01-01.250Z.backup"
        );
        let dir = tempfile::tempdir().unwrap();
        for t in [3_000, 999, 2_500] {
            std::fs::write(dir.path().join(scheduled_name(t)), b"x").unwrap();
        }
        // A download saved there, an operator's file and a partial file left by a
        // stopped process.
        let others = [file_name(1), "notes.txt".to_owned()];
        for name in &others {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::write(
            dir.path().join(format!("{}.partial", scheduled_name(5))),
            b"x",
        )
        .unwrap();
        prune(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![scheduled_name(2_500), scheduled_name(3_000)];
        want.extend(others);
        want.sort();
        assert_eq!(left, want);
        assert!(newest_age(dir.path()).unwrap() < Duration::from_secs(60));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod schedule_tests {
    use super::*;
    use crate::store::RedbStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scheduled_backups_are_whole_and_only_the_newest_stay() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(data.path()).unwrap());
        let dir = data.path().join("backups");
        let task = tokio::spawn(schedule(
            Arc::clone(&store),
            Duration::from_millis(150),
            2,
            dir.clone(),
        ));
        let names = || -> Vec<String> {
            std::fs::read_dir(&dir).map_or_else(
                |_| Vec::new(),
                |d| {
                    d.map(|e| e.unwrap().file_name().into_string().unwrap())
                        .collect()
                },
            )
        };
        // Five periods: at least three backups taken, two kept.
        tokio::time::sleep(Duration::from_millis(800)).await;
        task.abort();
        let _ = task.await;
        let kept = names();
        assert_eq!(kept.len(), 2, "{kept:?}");
        for name in kept {
            assert!(name.starts_with(PREFIX) && name.ends_with(SUFFIX), "{name}");
            crate::store::backup::verify(&dir.join(name)).unwrap();
        }
    }
}
