//! Backups: every record of one read snapshot in one file, and restoring such a file into
//! a new data dir.
//!
//! A snapshot is one redb read transaction. The writer commits each group to the file
//! before it answers (the write-ahead log only makes it durable), so a snapshot taken
//! after a write was acknowledged holds it. Indexes are not in a backup: opening the
//! restored data dir builds them from the contacts, as `salvage` does.
//!
//! The format (version [`FORMAT_VERSION`]):
//! - the 16-byte magic `contactd backup\n`, the format version (u32, little endian) and
//!   the store's schema version (u64);
//! - records, each a kind byte and its fields, each field a length (u32) and its bytes:
//!   the next contact number, agents, keys, custom attributes, tags, lists, contacts,
//!   webhook endpoints, the last webhook event number and each agent's last change
//!   feed number (so that event ids and feed numbers are not given out again after a
//!   restore) — the values exactly as the store keeps them, sealed, so each is checked
//!   again when it is restored. The change feed's entries and the webhooks' queues and
//!   deliveries are not in a backup;
//! - the end: kind `0xFF`, the number of records (u64), and the SHA-256 of every byte
//!   before it. A file that ends early, or whose bytes changed, is refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use redb::{ReadTransaction, ReadableTable};
use sha2::{Digest, Sha256};

use super::codec::{
    decode_agent, decode_attribute, decode_contact, decode_key, decode_webhook, encode_agent,
    encode_attribute, encode_key, encode_webhook,
};
use super::data_dir;
use super::file;
use super::redb_store::{RedbStore, DB_FILE};
use super::salvage::{begin, Batch};
use super::tables::{
    AGENTS, API_KEYS, CHANGE_SEQS, CONTACTS, CUSTOM_ATTRIBUTES, LISTS, META, META_INITIALIZED,
    META_LAST_EVENT, META_NEXT_CONTACT_ID, META_SCHEMA_VERSION, SCHEMA_VERSION, TAGS, WEBHOOKS,
};
use super::StoreError;
use crate::domain::webhook::Webhook;
use crate::domain::{Agent, ApiKey, AttributeDef, LabelKind};

pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 16] = b"contactd backup\n";

const NEXT_CONTACT: u8 = 1;
const AGENT: u8 = 2;
const KEY: u8 = 3;
const ATTRIBUTE: u8 = 4;
const TAG: u8 = 5;
const LIST: u8 = 6;
const CONTACT: u8 = 7;
const WEBHOOK: u8 = 8;
const LAST_EVENT: u8 = 9;
const CHANGE_SEQ: u8 = 10;
const END: u8 = 0xFF;

/// The largest field a backup may hold: above any record the store writes.
const MAX_FIELD: u32 = 64 << 20;
/// Bytes gathered before a write to the output.
const CHUNK: usize = 256 << 10;

/// What a backup holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    pub agents: u64,
    pub keys: u64,
    pub attributes: u64,
    pub labels: u64,
    pub contacts: u64,
    pub webhooks: u64,
    pub bytes: u64,
}

/// Writes every record of the snapshot `txn` to `out`.
pub fn write(txn: &ReadTransaction, out: &mut dyn Write) -> Result<BackupSummary, StoreError> {
    let mut w = Writer::new(out);
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    w.raw(&header)?;
    let meta = txn.open_table(META)?;
    let next = meta.get(META_NEXT_CONTACT_ID)?.map_or(0, |v| v.value());
    w.record(NEXT_CONTACT, &[&next.to_le_bytes()])?;
    let mut summary = BackupSummary::default();
    for row in txn.open_table(AGENTS)?.iter()? {
        let (id, value) = row?;
        w.record(AGENT, &[id.value().as_bytes(), value.value()])?;
        summary.agents += 1;
    }
    for row in txn.open_table(API_KEYS)?.iter()? {
        let (digest, value) = row?;
        w.record(KEY, &[digest.value(), value.value()])?;
        summary.keys += 1;
    }
    for row in txn.open_table(CUSTOM_ATTRIBUTES)?.iter()? {
        let (key, value) = row?;
        let (agent, name) = key.value();
        w.record(
            ATTRIBUTE,
            &[agent.as_bytes(), name.as_bytes(), value.value()],
        )?;
        summary.attributes += 1;
    }
    for (kind, table) in [(TAG, TAGS), (LIST, LISTS)] {
        for row in txn.open_table(table)?.iter()? {
            let (key, name) = row?;
            let (agent, folded) = key.value();
            w.record(
                kind,
                &[agent.as_bytes(), folded.as_bytes(), name.value().as_bytes()],
            )?;
            summary.labels += 1;
        }
    }
    for row in txn.open_table(CONTACTS)?.iter()? {
        let (key, value) = row?;
        let (agent, _) = key.value();
        w.record(CONTACT, &[agent.as_bytes(), value.value()])?;
        summary.contacts += 1;
    }
    for row in txn.open_table(WEBHOOKS)?.iter()? {
        let (id, value) = row?;
        w.record(WEBHOOK, &[id.value().as_bytes(), value.value()])?;
        summary.webhooks += 1;
    }
    let last_event = meta.get(META_LAST_EVENT)?.map_or(0, |v| v.value());
    w.record(LAST_EVENT, &[&last_event.to_le_bytes()])?;
    for row in txn.open_table(CHANGE_SEQS)?.iter()? {
        let (agent, seq) = row?;
        w.record(
            CHANGE_SEQ,
            &[agent.value().as_bytes(), &seq.value().to_le_bytes()],
        )?;
    }
    summary.bytes = w.finish()?;
    Ok(summary)
}

/// Gathers records into chunks, hashing every byte.
struct Writer<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    hash: Sha256,
    records: u64,
    written: u64,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(CHUNK + 4096),
            hash: Sha256::new(),
            records: 0,
            written: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn record(&mut self, kind: u8, fields: &[&[u8]]) -> Result<(), StoreError> {
        self.buf.push(kind);
        for field in fields {
            let len = u32::try_from(field.len())
                .ok()
                .filter(|&n| n <= MAX_FIELD)
                .ok_or_else(|| StoreError::Backend("a record too large for a backup".into()))?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(field);
        }
        self.records += 1;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.hash.update(&self.buf);
        self.out.write_all(&self.buf).map_err(output_failed)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the end record; returns the backup's size.
    fn finish(mut self) -> Result<u64, StoreError> {
        self.buf.push(END);
        self.buf.extend_from_slice(&self.records.to_le_bytes());
        self.flush()?;
        let digest = self.hash.finalize();
        self.out.write_all(&digest).map_err(output_failed)?;
        self.out.flush().map_err(output_failed)?;
        Ok(self.written + digest.len() as u64)
    }
}

fn output_failed(err: io::Error) -> StoreError {
    StoreError::Backend(format!("cannot write the backup: {err}"))
}

/// A record of a backup, decoded and its seal checked.
enum Record {
    NextContact(u64),
    Agent(Agent),
    Key(ApiKey),
    Attribute(String, AttributeDef),
    Label(LabelKind, String, String, String),
    Contact(String, crate::domain::Contact),
    Webhook(Webhook),
    LastEvent(u64),
    /// An agent's last change feed number.
    ChangeSeq(String, u64),
}

/// Why a backup file cannot be used.
fn unusable(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidBackup(format!("{}: {why}", path.display()))
}

/// Reads a backup's records, hashing every byte, and checks its end.
struct Reader<R> {
    input: R,
    hash: Sha256,
    records: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.input.read_exact(&mut buf)?;
        self.hash.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn field(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32().map_err(read_failed)?;
        if len > MAX_FIELD {
            return Err("it is damaged (a record field of impossible length)".into());
        }
        self.bytes(len as usize).map_err(read_failed)
    }

    /// A field holding a u64.
    fn number(&mut self) -> Result<u64, String> {
        let bytes: [u8; 8] = self
            .field()?
            .try_into()
            .map_err(|_| "it is damaged (a number of the wrong size)")?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn text(&mut self) -> Result<String, String> {
        String::from_utf8(self.field()?)
            .map_err(|_| "it is damaged (a name that is not UTF-8)".into())
    }

    /// The next record, or `None` after a valid end.
    fn next(&mut self) -> Result<Option<Record>, String> {
        let kind = self.bytes(1).map_err(read_failed)?[0];
        let damaged = |err: StoreError| format!("it is damaged ({err})");
        let record = match kind {
            NEXT_CONTACT => Record::NextContact(self.number()?),
            WEBHOOK => {
                let id = self.text()?;
                Record::Webhook(decode_webhook(&id, &self.field()?).map_err(damaged)?)
            }
            LAST_EVENT => Record::LastEvent(self.number()?),
            CHANGE_SEQ => Record::ChangeSeq(self.text()?, self.number()?),
            AGENT => {
                let id = self.text()?;
                Record::Agent(decode_agent(&id, &self.field()?).map_err(damaged)?)
            }
            KEY => {
                let digest = self.field()?;
                Record::Key(decode_key(&digest, &self.field()?).map_err(damaged)?)
            }
            ATTRIBUTE => {
                let agent = self.text()?;
                let name = self.text()?;
                let def = decode_attribute(&agent, &name, &self.field()?).map_err(damaged)?;
                Record::Attribute(agent, def)
            }
            TAG | LIST => {
                let kind = if kind == TAG {
                    LabelKind::Tag
                } else {
                    LabelKind::List
                };
                Record::Label(kind, self.text()?, self.text()?, self.text()?)
            }
            CONTACT => {
                let agent = self.text()?;
                let contact = decode_contact(&agent, &self.field()?).map_err(damaged)?;
                Record::Contact(agent, contact)
            }
            END => {
                let count = self.u64().map_err(read_failed)?;
                let expected = std::mem::take(&mut self.hash).finalize();
                let mut digest = [0; 32];
                self.input.read_exact(&mut digest).map_err(read_failed)?;
                if digest[..] != expected[..] {
                    return Err(
                        "its checksum does not match: the file was changed or damaged".into(),
                    );
                }
                if count != self.records {
                    return Err("it is damaged (the record count does not match)".into());
                }
                let mut rest = [0; 1];
                if self.input.read(&mut rest).map_err(read_failed)? != 0 {
                    return Err("it has bytes after its end".into());
                }
                return Ok(None);
            }
            other => return Err(format!("it is damaged (unknown record kind {other})")),
        };
        self.records += 1;
        Ok(Some(record))
    }
}

fn read_failed(err: io::Error) -> String {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        "it is truncated: it ends before its last record".into()
    } else {
        format!("cannot read it: {err}")
    }
}

/// Reads the backup at `path` to its end, handing each record to `visit`; fails on
/// anything that is not a whole, unchanged backup of a known format.
fn read(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|err| unusable(path, format!("cannot open it: {err}")))?;
    let mut reader = Reader {
        input: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        records: 0,
    };
    let head = reader.bytes(MAGIC.len() + 12).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            unusable(path, "it is not a contactd backup (too short)")
        } else {
            unusable(path, format!("cannot read it: {err}"))
        }
    })?;
    if head[..MAGIC.len()] != MAGIC[..] {
        return Err(unusable(path, "it is not a contactd backup"));
    }
    let mut version = [0; 4];
    version.copy_from_slice(&head[16..20]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(unusable(
            path,
            format!("its format version is {version}; this build reads version {FORMAT_VERSION}"),
        ));
    }
    let mut schema = [0; 8];
    schema.copy_from_slice(&head[20..28]);
    let schema = u64::from_le_bytes(schema);
    if schema > SCHEMA_VERSION {
        return Err(unusable(
            path,
            format!("it was written by a newer build (schema {schema}; this build knows {SCHEMA_VERSION})"),
        ));
    }
    while let Some(record) = reader.next().map_err(|why| unusable(path, why))? {
        visit(record)?;
    }
    Ok(())
}

/// Checks that the file at `path` is a whole backup this build can restore.
pub fn verify(path: &Path) -> Result<BackupSummary, StoreError> {
    let mut summary = BackupSummary::default();
    read(path, &mut |record| {
        match record {
            Record::Agent(_) => summary.agents += 1,
            Record::Key(_) => summary.keys += 1,
            Record::Attribute(..) => summary.attributes += 1,
            Record::Label(..) => summary.labels += 1,
            Record::Contact(..) => summary.contacts += 1,
            Record::Webhook(_) => summary.webhooks += 1,
            Record::NextContact(_) | Record::LastEvent(_) | Record::ChangeSeq(..) => {}
        }
        Ok(())
    })?;
    summary.bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    Ok(summary)
}

/// Restores the backup at `path` into the data dir `dir`, which must be missing or
/// hold no store (see [`store_files`]; other files, such as `backups/`, stay) unless
/// `force`: then the store it holds is deleted first, unless a process has it open.
/// The backup is checked whole before anything is written; a failure part-way deletes
/// what the restore wrote.
pub fn restore(path: &Path, dir: &Path, force: bool) -> Result<BackupSummary, StoreError> {
    let summary = verify(path)?;
    let existed = dir.exists();
    if existed {
        let present = store_files(dir)?;
        let backup = path.canonicalize().ok();
        if present.iter().any(|f| f.canonicalize().ok() == backup) {
            return Err(StoreError::DataDir(format!(
                "{} is a file of the data dir it would replace",
                path.display()
            )));
        }
        if !present.is_empty() {
            if !force {
                return Err(StoreError::DataDir(format!(
                    "{} holds a data store ({DB_FILE}); restore writes only where there is none (--force deletes it first)",
                    dir.display()
                )));
            }
            refuse_if_open(dir)?;
            remove_files(&present)?;
        }
    }
    let written = write_dir(path, dir);
    if let Err(err) = written {
        let _ = if existed {
            store_files(dir).and_then(|files| remove_files(&files))
        } else {
            std::fs::remove_dir_all(dir).map_err(StoreError::from)
        };
        return Err(err);
    }
    Ok(summary)
}

/// The files of `dir` that make up a store: the data file, the write-ahead log, the
/// damage marker, the holder's pid file and import spools. Nothing else in a data dir
/// (scheduled backups, an operator's notes) is the store's.
fn store_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == DB_FILE
            || name == super::DAMAGE_MARKER
            || name == data_dir::HOLDER_FILE
            || (name.starts_with("wal-") && name.ends_with(".log"))
            || (name.starts_with("import-") && name.ends_with(".tmp"));
        if ours && entry.file_type()?.is_file() {
            found.push(entry.path());
        }
    }
    Ok(found)
}

fn remove_files(files: &[std::path::PathBuf]) -> Result<(), StoreError> {
    for file in files {
        std::fs::remove_file(file)?;
    }
    Ok(())
}

/// A data dir another process holds is never cleared.
fn refuse_if_open(dir: &Path) -> Result<(), StoreError> {
    let db = dir.join(DB_FILE);
    if !db.exists() {
        return Ok(());
    }
    match file::open(&db, 1 << 20) {
        Ok(db) => {
            drop(db);
            Ok(())
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(data_dir::already_open(dir)),
        // A file that does not open (damage, another format) is not held: it may go.
        Err(_) => Ok(()),
    }
}

fn write_dir(path: &Path, dir: &Path) -> Result<(), StoreError> {
    data_dir::create_private_dir(dir)?;
    let out = file::open(&dir.join(DB_FILE), 64 << 20)?;
    let mut next = 0;
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    let mut small = Vec::new();
    let mut batch = Batch::new(&out);
    read(path, &mut |record| {
        match record {
            Record::NextContact(n) => next = n,
            Record::Agent(agent) => {
                agents.insert(agent.id.clone(), agent);
            }
            Record::Contact(agent, contact) => batch.add(&agent, &contact)?,
            other => small.push(other),
        }
        Ok(())
    })?;
    let batch = batch.finish()?;
    let damaged = |why: String| {
        StoreError::InvalidBackup(format!("{}: it is damaged ({why})", path.display()))
    };
    if let Some((_, line)) = batch.clashes.first() {
        return Err(damaged(line.clone()));
    }
    // Everything belongs to an agent the backup holds.
    let owners = small.iter().filter_map(|record| match record {
        Record::Key(ApiKey {
            scope: crate::domain::Scope::Agent(agent),
            ..
        })
        | Record::Attribute(agent, _)
        | Record::ChangeSeq(agent, _)
        | Record::Label(_, agent, _, _) => Some(agent),
        Record::Webhook(hook) => hook.chatbot_id.as_ref(),
        _ => None,
    });
    if let Some(agent) = owners
        .chain(batch.per_agent.keys())
        .find(|agent| !agents.contains_key(*agent))
    {
        return Err(damaged(format!(
            "records of agent '{agent}', which it does not hold"
        )));
    }
    let txn = begin(&out)?;
    {
        let mut keys = txn.open_table(API_KEYS)?;
        let mut attributes = txn.open_table(CUSTOM_ATTRIBUTES)?;
        let mut tags = txn.open_table(TAGS)?;
        let mut lists = txn.open_table(LISTS)?;
        let mut webhooks = txn.open_table(WEBHOOKS)?;
        let mut seqs = txn.open_table(CHANGE_SEQS)?;
        let mut meta = txn.open_table(META)?;
        for record in &small {
            match record {
                Record::Webhook(hook) => {
                    webhooks.insert(hook.id.as_str(), encode_webhook(hook).as_slice())?;
                }
                Record::LastEvent(n) => {
                    meta.insert(META_LAST_EVENT, *n)?;
                }
                Record::ChangeSeq(agent, seq) => {
                    seqs.insert(agent.as_str(), *seq)?;
                }
                Record::Key(key) => {
                    keys.insert(key.digest.as_slice(), encode_key(key).as_slice())?;
                }
                Record::Attribute(agent, def) => {
                    attributes.insert(
                        (agent.as_str(), def.name.as_str()),
                        encode_attribute(agent, def).as_slice(),
                    )?;
                }
                Record::Label(kind, agent, folded, name) => {
                    let table = match kind {
                        LabelKind::Tag => &mut tags,
                        LabelKind::List => &mut lists,
                    };
                    table.insert((agent.as_str(), folded.as_str()), name.as_str())?;
                }
                _ => {}
            }
        }
        let mut table = txn.open_table(AGENTS)?;
        for agent in agents.values() {
            let agent = Agent {
                contact_count: batch.per_agent.get(&agent.id).copied().unwrap_or(0),
                ..agent.clone()
            };
            table.insert(agent.id.as_str(), encode_agent(&agent).as_slice())?;
        }
        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        meta.insert(META_INITIALIZED, 1)?;
        meta.insert(
            META_NEXT_CONTACT_ID,
            next.max(batch.max_id.saturating_add(1)),
        )?;
    }
    txn.commit()?;
    drop(out);
    // Opening the new dir builds its indexes and field counts from the contacts.
    RedbStore::open(dir)?.shutdown();
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::redb_store::tests_support::fill;
    use crate::store::Store;

    /// Endpoints, the last event id and the feed numbers come back with a restore, so
    /// nothing given out before is given out again.
    #[test]
    fn webhooks_event_ids_and_feed_numbers_survive_a_restore() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("old")).unwrap();
        fill(&rt, &store, 3);
        let hook = Webhook {
            id: "wh_0123456789abcdef01234567".into(),
            url: "https://example.com/h".into(),
            events: vec!["contact.*".into()],
            chatbot_id: Some("a".into()),
            active: true,
            disabled_reason: None,
            secrets: vec![],
            created_at: 1,
            updated_at: 1,
        };
        rt.block_on(store.create_webhook(hook.clone())).unwrap();
        rt.block_on(store.delete_contact("a".into(), "c0".into(), None, 7))
            .unwrap();
        let queued = store.queued_events(&hook.id, 0, 10).unwrap();
        assert_eq!(queued.len(), 1);
        let mut bytes = Vec::new();
        let summary = store.backup(&mut bytes).unwrap();
        assert_eq!(summary.webhooks, 1);
        store.shutdown();
        let file = dir.path().join("b.backup");
        std::fs::write(&file, &bytes).unwrap();
        let restored_dir = dir.path().join("new");
        assert_eq!(restore(&file, &restored_dir, false).unwrap().webhooks, 1);
        let restored = RedbStore::open(&restored_dir).unwrap();
        assert_eq!(restored.webhooks().unwrap(), vec![hook.clone()]);
        // The feed holds nothing, and goes on from the number it had reached.
        let feed = restored.changes("a", 4, 10).unwrap();
        assert_eq!((feed.changes.len(), feed.oldest, feed.last), (0, 5, 4));
        rt.block_on(restored.delete_contact("a".into(), "c1".into(), None, 8))
            .unwrap();
        assert_eq!(restored.changes("a", 4, 10).unwrap().changes[0].seq, 5);
        // The next event's id follows the last one's.
        let next = restored.queued_events(&hook.id, 0, 10).unwrap();
        assert_eq!(next.len(), 1);
        assert!(
            next[0].1.id > queued[0].1.id,
            "{} after {}",
            next[0].1.id,
            queued[0].1.id
        );
        assert_eq!(restored.check().unwrap().problem_count, 0);
    }
}
