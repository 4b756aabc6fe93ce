//! The write-ahead log: how a write becomes durable without redb writing pages.
//!
//! Each write transaction (a group of jobs) is committed to redb with
//! `Durability::None` — its pages stay in redb's write buffer — and its logical changes
//! (see `redo::Op`) are appended to the log as one record, which the log thread
//! `fdatasync`s before the group's jobs are answered. The writer does not wait for
//! that: it goes on with the next group while the log thread syncs, and one sync covers
//! every record appended meanwhile. A *checkpoint* is a durable redb commit that records
//! the log sequence number (LSN) of its own group in `meta`; everything up to it is in
//! the file, so the log then starts a new segment and the older ones are removed.
//!
//! Segments are files `wal-<first LSN, 16 hex digits>.log` in the data dir. A record is
//! its payload's length (u32), a CRC-32 of the LSN and payload (u32), the LSN (u64),
//! then the payload (bincode of the group's ops); integers little-endian. LSNs grow by
//! one per record. Opening a data dir replays the records after the checkpoint's LSN.
//! A last record cut short or failing its checksum (a crash while appending) is cut off
//! with a log line; a damaged record followed by valid ones refuses to open, naming the
//! file and the offset, because the writes after it were acknowledged.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::data_dir::private_file;
use super::redo::Op;
use super::StoreError;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
const HEADER: usize = 16;
/// The largest record payload accepted when reading (a group of 64 jobs of 1000
/// contacts is far below it).
const MAX_PAYLOAD: u32 = 1 << 30;

/// One group's changes, read back from the log.
#[derive(Debug)]
pub struct Record {
    pub lsn: u64,
    pub ops: Vec<Op>,
}

fn segment_name(first_lsn: u64) -> String {
    format!("{PREFIX}{first_lsn:016x}{SUFFIX}")
}

/// The log's segments in the data dir, by first LSN.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(hex) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
        else {
            continue;
        };
        if let Ok(first) = u64::from_str_radix(hex, 16) {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Encodes one record (the payload written in place after the header, which is
/// filled in once its length and checksum are known).
pub fn encode(lsn: u64, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![0; HEADER];
    bincode::serde::encode_into_std_write(ops, &mut out, bincode::config::standard())
        .unwrap_or_else(|err| unreachable!("bincode encode into Vec failed: {err}"));
    let payload = &out[HEADER..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = checksum(lsn, payload);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The record at `at` in `bytes`, and where the next one starts; `None` when no whole,
/// valid record starts there.
fn record_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let end = at + HEADER + len as usize;
    let payload = bytes.get(at + HEADER..end)?;
    if checksum(lsn, payload) != crc {
        return None;
    }
    let (ops, _): (Vec<Op>, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).ok()?;
    Some((Record { lsn, ops }, end))
}

/// Whether a whole record numbered above `lsn` starts anywhere at or after `from`: a
/// damaged record is the crash's torn tail only if nothing valid follows it.
fn valid_record_after(bytes: &[u8], from: usize, lsn: u64) -> bool {
    // A record numbered right after the damaged one, or the damaged one itself with a
    // damaged payload but an intact number: look for those numbers, then check.
    let wanted = [(lsn + 1).to_le_bytes(), (lsn + 2).to_le_bytes()];
    (from..bytes.len().saturating_sub(HEADER - 1)).any(|at| {
        let number = &bytes[at + 8..at + HEADER];
        wanted.iter().any(|w| number == w)
            && record_at(bytes, at).is_some_and(|(record, _)| record.lsn > lsn)
    })
}

/// What opening the log found: the records after the checkpoint, in order, and where
/// appending goes on.
pub struct Opened {
    pub records: Vec<Record>,
    /// The next LSN to give out.
    pub next_lsn: u64,
    /// Bytes of a torn last record (cut off when reading with `repair`).
    pub torn: u64,
}

/// Reads the log of `dir`: every record after `checkpoint`, checked. A torn last
/// record is cut off the last segment (logged) when `repair`, else only counted;
/// damage before valid records is an error naming the segment and the offset.
pub fn read(dir: &Path, checkpoint: u64, repair: bool) -> Result<Opened, StoreError> {
    let segments = segments(dir)?;
    let mut records = Vec::new();
    let mut last_lsn = checkpoint;
    let mut torn = 0;
    let count = segments.len();
    for (i, (_, path)) in segments.iter().enumerate() {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let mut at = 0;
        while at < bytes.len() {
            match record_at(&bytes, at) {
                Some((record, next)) => {
                    if record.lsn > checkpoint {
                        if record.lsn != last_lsn + 1 {
                            return Err(StoreError::Corrupt(format!(
                                "the write-ahead log {} skips from record {last_lsn} to {} at offset {at}",
                                path.display(),
                                record.lsn
                            )));
                        }
                        last_lsn = record.lsn;
                        records.push(record);
                    }
                    at = next;
                }
                None => {
                    let last_segment = i + 1 == count;
                    if !last_segment || valid_record_after(&bytes, at + 1, last_lsn) {
                        return Err(StoreError::Corrupt(format!(
                            "the write-ahead log {} is damaged at offset {at}, and acknowledged writes follow it; restore a backup or salvage the data dir",
                            path.display()
                        )));
                    }
                    torn = (bytes.len() - at) as u64;
                    if repair {
                        tracing::warn!(
                            file = %path.display(),
                            offset = at,
                            dropped = torn,
                            "the write-ahead log ends in a record cut short (a crash while it was written); dropped it"
                        );
                        let file = private_file().write(true).open(path)?;
                        file.set_len(at as u64)?;
                        file.sync_all()?;
                    }
                    break;
                }
            }
        }
    }
    Ok(Opened {
        records,
        next_lsn: last_lsn + 1,
        torn,
    })
}

/// What the log thread is asked to do, in order.
enum Task {
    /// Append a record and sync it, then run `done`.
    Append {
        bytes: Vec<u8>,
        done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    },
    /// Everything up to `lsn` is in a durable checkpoint: start a new segment at
    /// `lsn + 1` and remove the older ones.
    Rotate { lsn: u64 },
}

/// The log thread and the way to it.
pub struct Log {
    tx: Mutex<Option<mpsc::Sender<Task>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Bytes handed to the thread and not yet synced: the writer waits while more than
    /// [`MAX_QUEUED`] are, so the log cannot fall behind without bound.
    queued: Arc<(parking_lot::Mutex<u64>, parking_lot::Condvar)>,
}

/// Most bytes of records waiting for the log thread.
const MAX_QUEUED: u64 = 8 << 20;

impl Log {
    /// Starts the log thread appending to a segment that begins at `next_lsn` (after
    /// the records of any older segment, which the next checkpoint removes).
    pub fn start(dir: &Path, next_lsn: u64) -> Result<Self, StoreError> {
        let mut segment = Segment::open(dir, next_lsn)?;
        let (tx, rx) = mpsc::channel::<Task>();
        let dir = dir.to_owned();
        let queued = Arc::new((parking_lot::Mutex::new(0u64), parking_lot::Condvar::new()));
        let drained = Arc::clone(&queued);
        let thread = std::thread::Builder::new()
            .name("contactd-wal".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything queued meanwhile shares one sync.
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let mut done = Vec::new();
                    let mut written: Result<(), StoreError> = Ok(());
                    let mut appended = 0u64;
                    for task in batch {
                        match task {
                            Task::Append { bytes, done: then } => {
                                if written.is_ok() {
                                    written = segment.append(&bytes);
                                }
                                appended += bytes.len() as u64;
                                done.push(then);
                            }
                            Task::Rotate { lsn } => {
                                if written.is_ok() {
                                    written = segment.sync();
                                }
                                match Segment::open(&dir, lsn + 1) {
                                    Ok(next) => {
                                        segment = next;
                                        remove_before(&dir, lsn + 1);
                                    }
                                    Err(err) => {
                                        tracing::error!(error = %err, "cannot start a new log segment");
                                    }
                                }
                            }
                        }
                    }
                    if written.is_ok() {
                        written = segment.sync();
                    }
                    if let Err(err) = &written {
                        tracing::error!(error = %err, "cannot write the write-ahead log");
                    }
                    {
                        let (lock, cv) = &*drained;
                        let mut waiting = lock.lock();
                        *waiting = waiting.saturating_sub(appended);
                        cv.notify_all();
                    }
                    for then in done {
                        then(written.clone());
                    }
                }
                if let Err(err) = segment.sync() {
                    tracing::error!(error = %err, "cannot sync the write-ahead log");
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            queued,
        })
    }

    /// Appends a record; `done` runs once it is durable (or failed). Waits first while
    /// the log thread has more than [`MAX_QUEUED`] bytes to write.
    pub fn append(&self, bytes: Vec<u8>, done: Box<dyn FnOnce(Result<(), StoreError>) + Send>) {
        {
            let (lock, cv) = &*self.queued;
            let mut waiting = lock.lock();
            while *waiting > MAX_QUEUED {
                cv.wait(&mut waiting);
            }
            *waiting += bytes.len() as u64;
        }
        let sent = self
            .tx
            .lock()
            .as_ref()
            .map(|tx| tx.send(Task::Append { bytes, done }));
        match sent {
            Some(Ok(())) => {}
            Some(Err(mpsc::SendError(Task::Append { done, .. }))) => done(Err(StoreError::Closed)),
            _ => {}
        }
    }

    /// After a durable checkpoint at `lsn`: start a new segment, drop the old ones.
    pub fn rotate(&self, lsn: u64) {
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(Task::Rotate { lsn });
        }
    }

    /// Waits for what is queued, syncs and stops the thread.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the log thread panicked");
            }
        }
    }
}

/// The segment being appended to.
struct Segment {
    file: BufWriter<File>,
    unsynced: bool,
}

impl Segment {
    /// Opens (creating it if new) the segment that starts at `first_lsn`, for appending.
    fn open(dir: &Path, first_lsn: u64) -> Result<Self, StoreError> {
        let path = dir.join(segment_name(first_lsn));
        let existed = path.exists();
        let mut file = private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.seek(SeekFrom::End(0))?;
        if !existed {
            // The new file's name must survive a crash too.
            File::open(dir)?.sync_all()?;
        }
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, file),
            unsynced: false,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes)?;
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            let started = std::time::Instant::now();
            self.file.flush()?;
            self.file.get_ref().sync_data()?;
            self.unsynced = false;
            crate::metrics::log_sync(started.elapsed());
        }
        Ok(())
    }
}

/// Removes the segments that start below `lsn` (a checkpoint holds their records).
fn remove_before(dir: &Path, lsn: u64) {
    let Ok(found) = segments(dir) else { return };
    for (first, path) in found {
        if first < lsn {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, file = %path.display(), "cannot remove an old log segment");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn op(n: u64) -> Op {
        Op::SetMeta {
            name: format!("counter {n}"),
            value: n,
        }
    }

    /// A segment holding records `first..=last` (one op each), as bytes.
    fn segment(first: u64, last: u64) -> Vec<u8> {
        (first..=last)
            .flat_map(|lsn| encode(lsn, &[op(lsn)]))
            .collect()
    }

    fn lsns(opened: &Opened) -> Vec<u64> {
        opened.records.iter().map(|r| r.lsn).collect()
    }

    #[test]
    fn records_after_the_checkpoint_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), segment(1, 4)).unwrap();
        std::fs::write(dir.path().join(segment_name(5)), segment(5, 6)).unwrap();
        let opened = read(dir.path(), 2, true).unwrap();
        assert_eq!(lsns(&opened), [3, 4, 5, 6]);
        assert_eq!(opened.records[0].ops, [op(3)]);
        assert_eq!(opened.next_lsn, 7);
        assert_eq!(read(dir.path(), 6, true).unwrap().next_lsn, 7);
    }

    /// A log cut at any byte of its last record (a crash while appending) reads as the
    /// records before it; with `repair` the segment is cut there, so appending goes on
    /// after them.
    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut() {
        let whole = segment(1, 3);
        let last = whole.len() - encode(3, &[op(3)]).len();
        for cut in last..whole.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(segment_name(1));
            std::fs::write(&path, &whole[..cut]).unwrap();
            let looked = read(dir.path(), 0, false).unwrap();
            assert_eq!(lsns(&looked), [1, 2], "cut at {cut}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                cut as u64,
                "read-only"
            );
            let opened = read(dir.path(), 0, true).unwrap();
            assert_eq!(
                (lsns(&opened), opened.next_lsn),
                (vec![1, 2], 3),
                "cut at {cut}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
        }
    }

    #[test]
    fn damage_before_valid_records_refuses_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = segment(1, 3);
        let second = encode(1, &[op(1)]).len();
        bytes[second + HEADER + 2] ^= 0x40;
        std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
        let Err(StoreError::Corrupt(message)) = read(dir.path(), 0, true) else {
            panic!("a damaged record before a valid one must refuse");
        };
        assert!(message.contains(&segment_name(1)), "{message}");
        assert!(message.contains(&format!("offset {second}")), "{message}");
        // Nothing was cut.
        assert_eq!(
            std::fs::read(dir.path().join(segment_name(1))).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_gap_in_the_numbers_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = segment(1, 2);
        bytes.extend(encode(4, &[op(4)]));
        std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
        assert!(read(dir.path(), 0, false).is_err());
    }

    #[test]
    fn appending_syncs_before_answering_and_rotation_drops_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::start(dir.path(), 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for lsn in 1..=3 {
            let tx = tx.clone();
            log.append(
                encode(lsn, &[op(lsn)]),
                Box::new(move |done| tx.send(done.is_ok()).unwrap()),
            );
        }
        assert!((0..3).all(|_| rx.recv().unwrap()));
        assert_eq!(lsns(&read(dir.path(), 0, false).unwrap()), [1, 2, 3]);
        log.rotate(3);
        let tx2 = tx.clone();
        log.append(
            encode(4, &[op(4)]),
            Box::new(move |d| tx2.send(d.is_ok()).unwrap()),
        );
        assert!(rx.recv().unwrap());
        log.shutdown();
        let names: Vec<_> = segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(names, [4]);
        assert_eq!(lsns(&read(dir.path(), 3, false).unwrap()), [4]);
    }
}
