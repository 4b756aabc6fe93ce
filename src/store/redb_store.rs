//! The redb implementation of [`Store`]: one file `contactd.redb` in the data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

use super::blocks;
use super::changes::{self, ChangePage};
use super::check::{self, CheckReport};
use super::codec::{
    decode_agent, decode_attribute, decode_key, decode_stored_contact, decode_webhook,
    encode_agent, encode_attribute, encode_delivery, encode_key, encode_webhook,
};
use super::contacts::{self, find_contact};
use super::damage::{unpanic, Damage, DamageReport};
use super::data_dir;
use super::deferred::{self, or_stored, Deferred, Filler, KeysView};
use super::file;
use super::index::{
    self, IndexLimits, Indexer, Kick, Merger, QueryLimits, QueryPage, ReadView, Slot, Start,
    Unlogged, INDEX_JOURNAL,
};
use super::labels;
use super::redo::Op;
use super::tables::{
    AGENTS, API_KEYS, CHANGES, CHANGE_SEQS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID,
    CUSTOM_ATTRIBUTES, FIELD_COUNTS, LISTS, META, META_INITIALIZED, META_SCHEMA_VERSION,
    META_WAL_CHECKPOINT, OLDEST_SCHEMA_VERSION, SCHEMA_VERSION, TAGS, WEBHOOKS, WEBHOOK_DELIVERIES,
    WEBHOOK_OUTBOX, WEBHOOK_QUEUES,
};
use super::upgrade;
use super::wal::{self, Log};
use super::webhooks;
use super::writer::{Txn, WalSetup, Writer};
use super::{
    ContactPage, EntryIssue, ImportOptions, ImportOutcome, ImportRow, OnDuplicate, OutboxEvent,
    PatchRequest, PhoneOutcome, PhoneWrite, Relabel, Store, StoreError, StoreFuture, Targets,
    UpsertOutcome, WebhookChange, PRUNE_BATCH,
};
use crate::domain::attribute::too_many_definitions;
use crate::domain::attribute::AttributeChange;
use crate::domain::label::fold;
use crate::domain::phone::PhoneRules;
use crate::domain::precondition::IfMatch;
use crate::domain::query::Query;
use crate::domain::search::label_count_field;
use crate::domain::webhook::{Delivery, Webhook};
use crate::domain::{
    Agent, ApiKey, AttributeDef, Contact, ContactInput, Issue, Label, LabelKind, Scope, WriteRules,
};
use serde_json::json;

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "contactd.redb";

pub struct RedbStore {
    db: Arc<Database>,
    damage: Arc<Damage>,
    unlogged: Arc<Unlogged>,
    /// External-id and email entries written since the last checkpoint.
    deferred: Arc<Deferred>,
    /// Fills `deferred`'s key filters after the open.
    filler: Filler,
    indexer: Arc<Indexer>,
    writer: Arc<Writer>,
    merger: Merger,
    path: PathBuf,
    limits: QueryLimits,
}

/// How a store is opened: its page cache and when checkpoints happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most bytes of database pages kept in memory.
    pub cache_bytes: usize,
    /// A checkpoint is due once this many bytes were logged since the last one
    /// (`wal.checkpoint_mb`)...
    pub checkpoint_bytes: u64,
    /// ...or this long after the last one, if anything was logged
    /// (`wal.checkpoint_secs`).
    pub checkpoint_every: Duration,
    /// How the upgrade to phone identity reads stored numbers (`phone.default_region`).
    pub phone: PhoneRules,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: file::DEFAULT_CACHE,
            checkpoint_bytes: 64 << 20,
            checkpoint_every: Duration::from_secs(30),
            phone: PhoneRules::default(),
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the database in `data_dir`, checks its schema version and
    /// creates any missing table.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// [`RedbStore::open`], keeping at most `cache_bytes` of database pages in memory.
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        Self::open_with(
            data_dir,
            StoreOptions {
                cache_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// [`RedbStore::open`] with `options`. Writes the write-ahead log holds beyond the
    /// last checkpoint (a crash) are applied again before it returns.
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let cache_bytes = options.cache_bytes;
        data_dir::prepare(data_dir)?;
        let damage = Arc::new(Damage::open(data_dir));
        let path = data_dir.join(DB_FILE);
        let db = match file::open(&path, cache_bytes) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(data_dir::already_open(data_dir))
            }
            Err(err) => return Err(err.into()),
        };
        if let Err(err) = data_dir::record_holder(data_dir) {
            tracing::warn!(error = %err, "cannot record this process as the data dir's holder");
        }
        prepare(&db, &damage, &options.phone)?;
        let db = Arc::new(db);
        let kick = Kick::default();
        let unlogged = Arc::new(Unlogged::default());
        if damage.writable().is_err() {
            hold_journal(&db, &unlogged)?;
        }
        let checkpoint = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let found = meta.get(META_WAL_CHECKPOINT)?.map_or(0, |v| v.value());
            found
        };
        let log = wal::read(data_dir, checkpoint, true)?;
        let redo = log.records;
        if !redo.is_empty() && damage.writable().is_err() {
            tracing::error!(
                records = redo.len(),
                "the write-ahead log holds writes after the last checkpoint, which a damaged data dir does not apply; they stay in its wal-*.log files"
            );
        }
        let deferred = Arc::new(Deferred::open(&db.begin_read()?)?);
        let indexer = Arc::new(Indexer::start(Arc::clone(&unlogged), kick.clone())?);
        let writer = Arc::new(Writer::start(
            Arc::clone(&db),
            Arc::clone(&indexer),
            Arc::clone(&damage),
            Arc::clone(&deferred),
            WalSetup {
                log: Arc::new(Log::start(data_dir, log.next_lsn)?),
                next_lsn: log.next_lsn,
                checkpoint_bytes: options.checkpoint_bytes,
                checkpoint_every: options.checkpoint_every,
                pending: !redo.is_empty(),
            },
        )?);
        if damage.writable().is_ok() && !redo.is_empty() {
            let records = redo.len();
            for record in redo {
                writer.submit_blocking(move |txn| txn.replay(record.ops))?;
            }
            writer.submit_blocking(|txn| {
                txn.want_checkpoint();
                Ok(())
            })?;
            tracing::info!(
                records,
                "applied the writes the log held after the last checkpoint"
            );
        }
        let merger = Merger::start(
            Arc::clone(&db),
            Arc::clone(&writer),
            Arc::clone(&indexer),
            kick,
            Arc::clone(&damage),
        )?;
        let filler = Filler::start(&db, Arc::clone(&deferred))?;
        Ok(Self {
            db,
            damage,
            unlogged,
            deferred,
            filler,
            indexer,
            writer,
            merger,
            path,
            limits: QueryLimits::default(),
        })
    }

    /// Changes how much work one list query may spend per strategy (see
    /// [`QueryLimits`]); results are the same, only speed differs. For tests.
    #[must_use]
    pub fn with_query_limits(mut self, limits: QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Changes when index blocks are flushed and index runs are merged (see
    /// [`IndexLimits`]); results are the same, only speed differs. For tests.
    #[must_use]
    pub fn with_index_limits(self, limits: IndexLimits) -> Self {
        self.indexer.set_limits(limits);
        self
    }

    /// A read snapshot with the index blocks and the deferred external-id and email
    /// entries it needs (see `deferred`).
    fn begin_read(&self) -> Result<ReadView, StoreError> {
        let begin = || self.unlogged.begin_read(&self.db);
        let ((txn, held), keys) = self.deferred.begin(begin, |(txn, _)| txn)?;
        Ok(ReadView { txn, held, keys })
    }

    /// A read snapshot with the deferred external-id and email entries it needs.
    fn begin_read_keys(&self) -> Result<(ReadTransaction, KeysView), StoreError> {
        self.deferred.begin(|| Ok(self.db.begin_read()?), |txn| txn)
    }

    /// Runs a read: a panic becomes `Corrupt`, and damage is recorded (see `damage`).
    fn guard<T>(&self, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.damage.read(unpanic("a read", read))
    }

    /// The database, for tests that look at its tables.
    #[cfg(test)]
    pub(crate) fn db_for_tests(&self) -> &Database {
        &self.db
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Verifies every record and that every index agrees with the contact records, on
    /// the open store (`contactd check` does the same on a stopped one).
    /// It asks for a checkpoint first: only right after one do the external-id and
    /// email B-trees hold every entry (see `deferred`). Blocks; not for async code.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        const ATTEMPTS: usize = 10;
        for _ in 0..ATTEMPTS {
            self.writer.submit_blocking(|txn| {
                txn.want_checkpoint();
                Ok(())
            })?;
            let view = self.begin_read()?;
            if view.keys.settled() {
                let mut report = CheckReport::default();
                check::run(&view.txn, &view.held, &|_| {}, &mut report)?;
                return Ok(report);
            }
        }
        Err(StoreError::Backend(format!(
            "writes kept coming between {ATTEMPTS} checkpoints and the check's snapshot"
        )))
    }

    /// Stops filling the key filters and the index merger (a merge in flight resumes at
    /// the next open), finishes queued writes and stops the writer (see
    /// `Writer::shutdown`). The file closes when the store is dropped.
    pub fn shutdown(&self) {
        self.filler.shutdown();
        self.merger.shutdown();
        self.writer.shutdown();
        if let Some(dir) = self.path.parent() {
            data_dir::forget_holder(dir);
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether an active admin key other than `id` exists: revoking the last one would
/// lock every client out until the server is stopped.
fn other_admin_key(table: &redb::Table<&[u8], &[u8]>, id: &str) -> Result<bool, StoreError> {
    for row in table.iter()? {
        let (k, v) = row?;
        let key = decode_key(k.value(), v.value())?;
        if key.id != id && !key.revoked && key.scope.is_admin() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every contact of the agent in creation order: one sequential walk of the records, no
/// index lookups.
fn export_all(
    txn: &redb::ReadTransaction,
    agent: &str,
    chunk: usize,
    sink: &mut dyn FnMut(Vec<Contact>) -> bool,
) -> Result<(), StoreError> {
    if txn.open_table(AGENTS)?.get(agent)?.is_none() {
        return Err(StoreError::AgentNotFound);
    }
    let contacts = txn.open_table(CONTACTS)?;
    let mut batch = Vec::with_capacity(chunk);
    for row in contacts.range((agent, 0)..=(agent, u64::MAX))? {
        let (key, value) = row?;
        batch.push(decode_stored_contact(agent, key.value().1, value.value())?);
        if batch.len() == chunk && !sink(std::mem::replace(&mut batch, Vec::with_capacity(chunk))) {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    Ok(())
}

/// Creates every table and checks or records the schema version, upgrading an older
/// data dir first, and indexes what the journal holds; damage met while indexing is
/// recorded in `damage` (the store then opens refusing writes).
fn prepare(db: &Database, damage: &Damage, phone: &PhoneRules) -> Result<(), StoreError> {
    let stored = {
        let txn = db.begin_read()?;
        match txn.open_table(META) {
            Ok(meta) => meta.get(META_SCHEMA_VERSION)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(err) => return Err(err.into()),
        }
    };
    if let Err(refused) = damage.writable() {
        // Nothing is written over damage, not even by the open: the journal's changes
        // are held in memory instead (see `hold_journal`).
        return match stored {
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            _ => Err(StoreError::Damaged(format!(
                "{refused}; the data dir also needs an upgrade, which cannot run on it: salvage it with a build of this version"
            ))),
        };
    }
    match stored {
        None => {}
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) if (OLDEST_SCHEMA_VERSION..SCHEMA_VERSION).contains(&v) => {
            tracing::info!(from = v, to = SCHEMA_VERSION, "upgrading the data dir layout");
            upgrade::run(db, v, phone)?;
        }
        Some(v) => {
            return Err(StoreError::Incompatible(format!(
                "the data dir has schema version {v}; this build reads versions {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}"
            )))
        }
    }
    let create_tables = |txn: &WriteTransaction| -> Result<(), StoreError> {
        txn.open_table(META)?
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        txn.open_table(CONTACTS)?;
        txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
        txn.open_table(CONTACTS_BY_EMAIL)?;
        txn.open_table(TAGS)?;
        txn.open_table(LISTS)?;
        txn.open_table(AGENTS)?;
        txn.open_table(API_KEYS)?;
        txn.open_table(CUSTOM_ATTRIBUTES)?;
        txn.open_table(CHANGES)?;
        txn.open_table(CHANGE_SEQS)?;
        txn.open_table(WEBHOOKS)?;
        txn.open_table(WEBHOOK_OUTBOX)?;
        txn.open_table(WEBHOOK_QUEUES)?;
        txn.open_table(WEBHOOK_DELIVERIES)?;
        // Created even when empty: readers open them.
        txn.open_table(INDEX_JOURNAL)?;
        txn.open_table(blocks::CONTACT_BLOCKS)?;
        Ok(())
    };
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    create_tables(&txn)?;
    let indexed = unpanic("indexing at open", || {
        if deferred::prepare(&txn)? {
            tracing::info!(
                "rebuilt the external-id and email indexes, which the file was closed without"
            );
        }
        if blocks::ensure(&txn)? {
            tracing::info!("counted the contacts per block of contact numbers");
        }
        if let Some(built) = index::ensure(&txn, IndexLimits::default())? {
            if built > 0 {
                tracing::info!(contacts = built, "built the sort and word indexes");
            }
        }
        let replayed = index::replay(&txn, IndexLimits::default())?;
        if replayed > 0 {
            tracing::info!(
                contacts = replayed,
                "indexed again the contacts of the writes whose index changes were still waiting"
            );
        }
        Ok(())
    });
    match indexed {
        Ok(()) => txn.commit()?,
        // Damage met while indexing: the store opens refusing writes, so that what
        // can be read still is (see `Damage`), and nothing of the indexing is kept.
        Err(StoreError::Corrupt(detail)) => {
            txn.abort()?;
            damage.record(&format!("while indexing at open: {detail}"));
            let mut txn = db.begin_write()?;
            txn.set_quick_repair(true);
            create_tables(&txn)?;
            txn.commit()?;
        }
        Err(err) => return Err(err),
    }
    Ok(())
}

/// Makes the index changes the journal still holds readable, on a store that could not
/// index them at open (damage): from a read snapshot as one block, or, if that meets
/// the damage too, as no change — the indexes then miss those writes' changes, and
/// every query still checks each contact it returns.
fn hold_journal(db: &Database, unlogged: &Unlogged) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    let seqs = unpanic("the index journal", || {
        let journal = txn.open_table(INDEX_JOURNAL)?;
        let seqs: Result<Vec<u64>, _> = journal
            .iter()?
            .map(|row| row.map(|(seq, _)| seq.value()))
            .collect();
        Ok(seqs?)
    });
    let seqs = match seqs {
        Ok(seqs) => seqs,
        Err(err) => {
            tracing::error!(error = %err, "the index journal is unreadable; index reads will fail");
            return Ok(());
        }
    };
    let Some(&last) = seqs.last() else {
        return Ok(());
    };
    let block = match unpanic("the index journal", || index::pending_block(&txn)) {
        Ok(block) => block,
        Err(err) => {
            tracing::error!(error = %err, "the index misses the changes of the last writes before the damage");
            None
        }
    };
    let mut block = Some(block);
    for seq in seqs {
        let slot = Arc::new(Slot::default());
        slot.fill(Ok(if seq == last {
            block.take().flatten()
        } else {
            None
        }));
        unlogged.add(seq, slot);
    }
    unlogged.skip_to(last + 1);
    Ok(())
}

impl Store for RedbStore {
    fn backup(
        &self,
        out: &mut dyn std::io::Write,
    ) -> Result<super::backup::BackupSummary, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            super::backup::write(&txn, out)
        })
    }

    fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(AGENTS)?;
            let found = table.get(id)?;
            found.map(|b| decode_agent(id, b.value())).transpose()
        })
    }

    fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(AGENTS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push(decode_agent(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn key_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(API_KEYS)?;
            let found = table.get(digest.as_slice())?;
            found.map(|b| decode_key(digest, b.value())).transpose()
        })
    }

    fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(API_KEYS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push(decode_key(k.value(), v.value())?);
            }
            out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(out)
        })
    }

    fn contact(&self, agent: &str, target: &str) -> Result<Option<Contact>, StoreError> {
        self.guard(|| {
            let (txn, keys) = self.begin_read_keys()?;
            let contacts = txn.open_table(CONTACTS)?;
            let by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
            let number = |ext: &str| {
                or_stored(keys.ext(agent, ext), || {
                    Ok(by_ext.get((agent, ext))?.map(|v| v.value()))
                })
            };
            find_contact(&contacts, number, agent, target)
        })
    }

    fn list_contacts(
        &self,
        agent: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ContactPage, StoreError> {
        let page = self.query_contacts(agent, &Query::default(), &Start::Offset(offset), limit)?;
        Ok(ContactPage {
            contacts: page.contacts,
            // The plain listing always counts.
            total: page.total.unwrap_or_default(),
        })
    }

    fn query_contacts(
        &self,
        agent: &str,
        query: &Query,
        start: &Start,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        self.guard(|| index::execute(&self.begin_read()?, agent, query, start, limit, self.limits))
    }

    fn damage(&self) -> Option<DamageReport> {
        self.damage.report()
    }

    fn attributes(&self, agent: &str) -> Result<Vec<AttributeDef>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(CUSTOM_ATTRIBUTES)?;
            contacts::agent_attributes(&table, agent)
        })
    }

    fn attribute(&self, agent: &str, name: &str) -> Result<Option<AttributeDef>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(CUSTOM_ATTRIBUTES)?;
            let found = table.get((agent, name))?;
            found
                .map(|b| decode_attribute(agent, name, b.value()))
                .transpose()
        })
    }

    fn initialize(&self, agent: Agent, admin_key: ApiKey) -> StoreFuture<bool> {
        self.writer.submit(move |txn| {
            if txn.open_table(META)?.get(META_INITIALIZED)?.is_some() {
                return Ok(false);
            }
            set_meta(txn, META_INITIALIZED, 1)?;
            put_agent(txn, &agent)?;
            put_key(txn, &admin_key)?;
            Ok(true)
        })
    }

    fn create_agent(&self, agent: Agent) -> StoreFuture<Agent> {
        self.writer.submit(move |txn| {
            if txn.open_table(AGENTS)?.get(agent.id.as_str())?.is_some() {
                return Err(StoreError::AgentExists);
            }
            put_agent(txn, &agent)?;
            Ok(agent)
        })
    }

    fn delete_agent(&self, id: String) -> StoreFuture<Agent> {
        self.writer.submit(move |txn| {
            let found = txn
                .open_table(AGENTS)?
                .get(id.as_str())?
                .map(|b| b.value().to_vec());
            let agent = match found {
                Some(bytes) => decode_agent(&id, &bytes)?,
                None => return Err(StoreError::AgentNotFound),
            };
            remove_agent(txn, &id)?;
            Ok(agent)
        })
    }

    fn create_key(&self, key: ApiKey) -> StoreFuture<ApiKey> {
        self.writer.submit(move |txn| {
            if let Scope::Agent(agent) = &key.scope {
                if txn.open_table(AGENTS)?.get(agent.as_str())?.is_none() {
                    return Err(StoreError::AgentNotFound);
                }
            }
            put_key(txn, &key)?;
            Ok(key)
        })
    }

    fn revoke_key(&self, id: String) -> StoreFuture<ApiKey> {
        self.writer.submit(move |txn| {
            let table = txn.open_table(API_KEYS)?;
            let mut found = None;
            for row in table.iter()? {
                let (k, v) = row?;
                let key = decode_key(k.value(), v.value())?;
                if key.id == id {
                    found = Some(key);
                    break;
                }
            }
            let mut key = found.ok_or(StoreError::KeyNotFound)?;
            if !key.revoked && key.scope.is_admin() && !other_admin_key(&table, &key.id)? {
                return Err(StoreError::LastAdminKey);
            }
            drop(table);
            if !key.revoked {
                key.revoked = true;
                put_key(txn, &key)?;
            }
            Ok(key)
        })
    }

    fn upsert_contacts(
        &self,
        agent: String,
        entries: Vec<ContactInput>,
        on_duplicate: OnDuplicate,
        rules: WriteRules,
        now: i64,
    ) -> StoreFuture<UpsertOutcome> {
        self.writer
            .submit(move |txn| contacts::upsert(txn, &agent, entries, on_duplicate, rules, now))
    }

    fn import_contacts(
        &self,
        agent: String,
        rows: Vec<ImportRow>,
        options: ImportOptions,
        now: i64,
    ) -> StoreFuture<ImportOutcome> {
        self.writer
            .submit(move |txn| contacts::import(txn, &agent, rows, &options, now))
    }

    fn export_contacts(
        &self,
        agent: &str,
        query: Option<&Query>,
        chunk: usize,
        sink: &mut dyn FnMut(Vec<Contact>) -> bool,
    ) -> Result<(), StoreError> {
        self.guard(|| {
            let view = self.begin_read()?;
            let Some(query) = query else {
                return export_all(&view.txn, agent, chunk, sink);
            };
            let mut start = Start::Offset(0);
            loop {
                let page = index::execute(&view, agent, query, &start, chunk, self.limits)?;
                let next = page.next;
                if !page.contacts.is_empty() && !sink(page.contacts) {
                    return Ok(());
                }
                match next {
                    Some(pos) => start = Start::After(pos),
                    None => return Ok(()),
                }
            }
        })
    }

    fn patch_contact(&self, patch: PatchRequest, now: i64) -> StoreFuture<Contact> {
        self.writer
            .submit(move |txn| contacts::patch(txn, &patch, now))
    }

    fn delete_contact(
        &self,
        agent: String,
        target: String,
        if_match: Option<IfMatch>,
        now: i64,
    ) -> StoreFuture<Contact> {
        self.writer
            .submit(move |txn| contacts::delete(txn, &agent, &target, if_match.as_ref(), now))
    }

    fn changes(&self, agent: &str, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
        self.guard(|| changes::page(&self.db.begin_read()?, agent, after, limit))
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.guard(|| webhooks::all(&self.db.begin_read()?.open_table(WEBHOOKS)?))
    }

    fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(WEBHOOKS)?;
            let found = table.get(id)?;
            found.map(|b| decode_webhook(id, b.value())).transpose()
        })
    }

    fn create_webhook(&self, hook: Webhook) -> StoreFuture<Webhook> {
        self.writer.submit(move |txn| {
            if let Some(agent) = &hook.chatbot_id {
                if txn.open_table(AGENTS)?.get(agent.as_str())?.is_none() {
                    return Err(StoreError::AgentNotFound);
                }
            }
            webhooks::put(txn, &hook.id, &encode_webhook(&hook))?;
            Ok(hook)
        })
    }

    fn update_webhook(&self, id: String, change: WebhookChange) -> StoreFuture<Webhook> {
        self.writer.submit(move |txn| {
            let changed = change(webhooks::stored(txn, &id)?)?;
            webhooks::put(txn, &id, &encode_webhook(&changed))?;
            Ok(changed)
        })
    }

    fn delete_webhook(&self, id: String) -> StoreFuture<Webhook> {
        self.writer.submit(move |txn| {
            let hook = webhooks::stored(txn, &id)?;
            webhooks::remove(txn, &id)?;
            Ok(hook)
        })
    }

    fn queued_events(
        &self,
        webhook: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEvent)>, StoreError> {
        self.guard(|| webhooks::queued(&self.db.begin_read()?, webhook, after, limit))
    }

    fn queue_len(&self, webhook: &str) -> Result<u64, StoreError> {
        self.guard(|| webhooks::queue_len(&self.db.begin_read()?, webhook))
    }

    fn deliveries(&self, webhook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            webhooks::deliveries(&txn.open_table(WEBHOOK_DELIVERIES)?, webhook, limit)
        })
    }

    fn save_delivery(&self, webhook: String, delivery: Delivery) -> StoreFuture<Delivery> {
        self.writer.submit(move |txn| {
            if txn.open_table(WEBHOOKS)?.get(webhook.as_str())?.is_none() {
                return Err(StoreError::WebhookNotFound);
            }
            let record = encode_delivery(&webhook, &delivery);
            webhooks::put_delivery(txn, &webhook, delivery.id, &record)?;
            Ok(delivery)
        })
    }

    fn change_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.feed_signal()
    }

    fn prune_changes(&self, before: i64) -> StoreFuture<u64> {
        // Most checks find nothing expired: they read, and leave the writer alone.
        let due = self.guard(|| changes::expired_in(&self.db.begin_read()?, before, 1));
        match due {
            Ok(due) if due.is_empty() => Box::pin(async { Ok(0) }),
            Err(err) => Box::pin(async move { Err(err) }),
            Ok(_) => self
                .writer
                .submit(move |txn| changes::prune_expired(txn, before, PRUNE_BATCH)),
        }
    }

    fn create_attribute(
        &self,
        agent: String,
        def: AttributeDef,
        max_per_agent: usize,
    ) -> StoreFuture<AttributeDef> {
        self.writer.submit(move |txn| {
            if txn.open_table(AGENTS)?.get(agent.as_str())?.is_none() {
                return Err(StoreError::AgentNotFound);
            }
            let table = txn.open_table(CUSTOM_ATTRIBUTES)?;
            if table.get((agent.as_str(), def.name.as_str()))?.is_some() {
                return Err(StoreError::AttributeExists);
            }
            let mut defined = 0;
            for row in table.range((agent.as_str(), "")..)?.take(max_per_agent) {
                if row?.0.value().0 != agent {
                    break;
                }
                defined += 1;
            }
            if defined >= max_per_agent {
                return Err(StoreError::Invalid(vec![EntryIssue {
                    entry: 0,
                    issue: Issue {
                        field: "name".into(),
                        message: too_many_definitions(max_per_agent),
                    },
                }]));
            }
            drop(table);
            put_attribute(txn, &agent, &def)?;
            Ok(def)
        })
    }

    fn update_attribute(
        &self,
        agent: String,
        name: String,
        change: AttributeChange,
    ) -> StoreFuture<AttributeDef> {
        self.writer.submit(move |txn| {
            let current = {
                let table = txn.open_table(CUSTOM_ATTRIBUTES)?;
                let found = table.get((agent.as_str(), name.as_str()))?;
                match found {
                    Some(bytes) => decode_attribute(&agent, &name, bytes.value())?,
                    None => return Err(StoreError::AttributeNotFound),
                }
            };
            let next = change
                .apply(&current)
                .map_err(|issues| StoreError::Invalid(EntryIssue::at(0, issues).collect()))?;
            if next != current {
                put_attribute(txn, &agent, &next)?;
            }
            Ok(next)
        })
    }

    fn save_by_phone(
        &self,
        agent: String,
        entries: Vec<PhoneWrite>,
        rules: WriteRules,
        now: i64,
    ) -> StoreFuture<Vec<PhoneOutcome>> {
        self.writer
            .submit(move |txn| contacts::save_by_phone(txn, &agent, entries, rules, now))
    }

    fn labels(&self, agent: &str, kind: LabelKind) -> Result<Vec<Label>, StoreError> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            if txn.open_table(AGENTS)?.get(agent)?.is_none() {
                return Err(StoreError::AgentNotFound);
            }
            labels::defined(&txn, agent, kind)
        })
    }

    fn create_label(&self, agent: String, kind: LabelKind, name: String) -> StoreFuture<Label> {
        self.writer.submit(move |txn| {
            if txn.open_table(AGENTS)?.get(agent.as_str())?.is_none() {
                return Err(StoreError::AgentNotFound);
            }
            if labels::lookup(txn, &agent, kind, &name)?.is_some() {
                return Err(StoreError::LabelExists(kind));
            }
            labels::put(txn, &agent, kind, &fold(&name), Some(&name))?;
            Ok(Label { name, count: 0 })
        })
    }

    fn relabel(
        &self,
        agent: String,
        kind: LabelKind,
        targets: Targets,
        change: Relabel,
        now: i64,
    ) -> StoreFuture<u64> {
        self.writer
            .submit(move |txn| contacts::relabel(txn, &agent, kind, &targets, &change, now))
    }

    fn drop_label(
        &self,
        agent: String,
        kind: LabelKind,
        name: String,
        rename_to: Option<String>,
    ) -> StoreFuture<Label> {
        self.writer.submit(move |txn| {
            if txn.open_table(AGENTS)?.get(agent.as_str())?.is_none() {
                return Err(StoreError::AgentNotFound);
            }
            let Some(current) = labels::lookup(txn, &agent, kind, &name)? else {
                return Err(StoreError::LabelNotFound(kind));
            };
            let count_of = |folded: &str| -> Result<u64, StoreError> {
                let counts = txn.open_table(FIELD_COUNTS)?;
                let found =
                    counts.get((agent.as_str(), label_count_field(kind, folded).as_str()))?;
                Ok(found.map_or(0, |c| c.value()))
            };
            let Some(to) = rename_to else {
                labels::put(txn, &agent, kind, &fold(&current), None)?;
                return Ok(Label {
                    name: current,
                    count: 0,
                });
            };
            if fold(&to) != fold(&current) {
                if labels::lookup(txn, &agent, kind, &to)?.is_some() {
                    return Err(StoreError::LabelExists(kind));
                }
                labels::put(txn, &agent, kind, &fold(&current), None)?;
            }
            labels::put(txn, &agent, kind, &fold(&to), Some(&to))?;
            let count = count_of(&fold(&to))?;
            Ok(Label { name: to, count })
        })
    }
}

// The write primitives of the tables that hold agents, keys, definitions and `meta`:
// each records its change for the write-ahead log, and replay calls the same ones
// (see `redo`).

pub(super) fn put_attribute(txn: &Txn, agent: &str, def: &AttributeDef) -> Result<(), StoreError> {
    put_attribute_record(txn, agent, &def.name, &encode_attribute(agent, def))
}

pub(super) fn put_attribute_record(
    txn: &Txn,
    agent: &str,
    name: &str,
    record: &[u8],
) -> Result<(), StoreError> {
    let existed = txn
        .open_table(CUSTOM_ATTRIBUTES)?
        .insert((agent, name), record)?
        .is_some();
    let def = decode_attribute(agent, name, record)?;
    let kind = if existed {
        "attribute.updated"
    } else {
        "attribute.created"
    };
    let mut outbox = webhooks::Outbox::open(txn, agent, txn.now())?;
    outbox.push(kind, || json!({ "attribute": def.to_json() }));
    outbox.finish()?;
    txn.record(Op::PutAttribute {
        agent: agent.to_owned(),
        name: name.to_owned(),
        record: record.to_vec(),
    });
    Ok(())
}

fn put_agent(txn: &Txn, agent: &Agent) -> Result<(), StoreError> {
    put_agent_record(txn, &agent.id, &encode_agent(agent))
}

pub(super) fn put_agent_record(txn: &Txn, id: &str, record: &[u8]) -> Result<(), StoreError> {
    txn.open_table(AGENTS)?.insert(id, record)?;
    txn.record(Op::PutAgent {
        id: id.to_owned(),
        record: record.to_vec(),
    });
    Ok(())
}

fn put_key(txn: &Txn, key: &ApiKey) -> Result<(), StoreError> {
    put_key_record(txn, &key.digest, &encode_key(key))
}

pub(super) fn put_key_record(txn: &Txn, digest: &[u8], record: &[u8]) -> Result<(), StoreError> {
    txn.open_table(API_KEYS)?.insert(digest, record)?;
    txn.record(Op::PutKey {
        digest: digest.to_vec(),
        record: record.to_vec(),
    });
    Ok(())
}

pub(super) fn set_meta(txn: &Txn, name: &str, value: u64) -> Result<(), StoreError> {
    txn.open_table(META)?.insert(name, value)?;
    txn.record(Op::SetMeta {
        name: name.to_owned(),
        value,
    });
    Ok(())
}

/// Removes an agent with its contacts, index entries, definitions and agent-scoped
/// keys.
pub(super) fn remove_agent(txn: &Txn, id: &str) -> Result<(), StoreError> {
    let removed = txn
        .open_table(AGENTS)?
        .remove(id)?
        .map(|bytes| decode_agent(id, bytes.value()))
        .transpose()?;
    if let Some(agent) = removed {
        // Only unscoped endpoints hear of it: the agent's own go with it.
        webhooks::remove_agent(txn, id)?;
        let at = txn.now();
        let mut outbox = webhooks::Outbox::open(txn, id, at)?;
        outbox.push("agent.deleted", || {
            json!({ "chatbot_id": id, "name": agent.name, "contact_count": agent.contact_count })
        });
        outbox.finish()?;
    }
    contacts::delete_all(txn, id)?;
    changes::remove_agent(txn, id)?;
    let scope = Scope::Agent(id.to_owned());
    txn.open_table(API_KEYS)?
        .retain(|digest, bytes| decode_key(digest, bytes).map_or(true, |k| k.scope != scope))?;
    txn.record(Op::RemoveAgent { id: id.to_owned() });
    Ok(())
}

/// Writes for the tests of other store modules.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests_support {
    use super::*;

    /// Creates agent `id`.
    pub fn create_agent(rt: &tokio::runtime::Runtime, store: &RedbStore, id: &str) {
        let agent = Agent {
            id: id.into(),
            name: id.into(),
            created_at: 0,
            contact_count: 0,
        };
        rt.block_on(store.create_agent(agent)).unwrap();
    }

    /// Agent `a` (created if missing) with `n` more contacts, 1000 per write.
    pub fn fill(rt: &tokio::runtime::Runtime, store: &RedbStore, n: usize) {
        if store.agent("a").unwrap().is_none() {
            create_agent(rt, store, "a");
        }
        let start = store.agent("a").unwrap().unwrap().contact_count as usize;
        for chunk in (start..start + n).collect::<Vec<_>>().chunks(1000) {
            write(
                rt,
                store,
                chunk,
                |i| format!("Person {i}"),
                |i| format!("p{i}@x.co"),
            )
            .unwrap();
        }
    }

    /// Writes contacts `ids` of agent `a` (external id `c{i}`, as [`fill`] names
    /// them) in one request, with `name(i)` and `email(i)`.
    pub fn write(
        rt: &tokio::runtime::Runtime,
        store: &RedbStore,
        ids: &[usize],
        name: impl Fn(usize) -> String,
        email: impl Fn(usize) -> String,
    ) -> Result<UpsertOutcome, StoreError> {
        let mut issues = crate::domain::Issues::new();
        let entries = ids
            .iter()
            .map(|&i| {
                let body = serde_json::json!({"external_id": format!("c{i}"), "name": name(i), "email": email(i)});
                ContactInput::parse(&body, "", &mut issues).unwrap()
            })
            .collect();
        upsert(rt, store, entries)
    }

    /// Upserts `entries` into agent `a`, updating on a duplicate.
    pub fn upsert(
        rt: &tokio::runtime::Runtime,
        store: &RedbStore,
        entries: Vec<ContactInput>,
    ) -> Result<UpsertOutcome, StoreError> {
        rt.block_on(store.upsert_contacts(
            "a".into(),
            entries,
            OnDuplicate::Update,
            WriteRules::default(),
            1_700_000_000,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::tests_support::create_agent;
    use super::*;
    use crate::store::index::lsm::unlogged::Held;
    use crate::store::index::lsm::{Changes, Index, IndexView, INDEX_LOG, INDEX_RUNS, INDEX_STATE};
    use crate::store::tables::{FIELD_COUNTS, META_INDEX_VERSION};
    use redb::{ReadableTableMetadata, TableHandle};

    #[test]
    fn a_newer_schema_version_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        match RedbStore::open(dir.path()) {
            Err(StoreError::Incompatible(msg)) => {
                assert!(
                    msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
                    "{msg}"
                )
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened an incompatible data dir"),
        }
    }

    /// Data dirs of the previous releases (schemas 6 and 7, without the change feed's
    /// tables) open as the current schema with their contacts and keys as they were:
    /// the upgrade rewrites nothing, and the feed starts with the next write.
    #[test]
    fn schema_6_and_7_data_dirs_open_unchanged_and_get_a_change_feed() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        for old in [6, 7] {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(dir.path()).unwrap();
            super::tests_support::fill(&rt, &store, 3);
            let before = store.contact("a", "c1").unwrap().unwrap();
            store.shutdown();
            drop(store);
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_SCHEMA_VERSION, old)
                .unwrap();
            txn.delete_table(CHANGES).unwrap();
            txn.delete_table(CHANGE_SEQS).unwrap();
            txn.commit().unwrap();
            drop(db);
            let store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.contact("a", "c1").unwrap().unwrap(), before);
            let version = store
                .db_for_tests()
                .begin_read()
                .unwrap()
                .open_table(META)
                .unwrap()
                .get(META_SCHEMA_VERSION)
                .unwrap()
                .map(|v| v.value());
            assert_eq!(version, Some(SCHEMA_VERSION));
            assert!(store.changes("a", 0, 10).unwrap().changes.is_empty());
            rt.block_on(store.delete_contact("a".into(), "c1".into(), None, 5))
                .unwrap();
            let feed = store.changes("a", 0, 10).unwrap();
            assert_eq!((feed.changes.len(), feed.last), (1, 1), "from schema {old}");
        }
    }

    /// A data dir written before typed attributes (schema 1, version-1 contact
    /// records) opens, is upgraded to the current schema, and its contacts read back.
    #[test]
    fn a_version_1_data_dir_is_upgraded_and_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let golden = include_bytes!("../../tests/golden/contact_v1.bin");
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(META_SCHEMA_VERSION, 1).unwrap();
                meta.insert(META_INITIALIZED, 1).unwrap();
                let agent = Agent {
                    id: "default".into(),
                    name: "d".into(),
                    created_at: 0,
                    contact_count: 1,
                };
                txn.open_table(AGENTS)
                    .unwrap()
                    .insert("default", encode_agent(&agent).as_slice())
                    .unwrap();
                txn.open_table(upgrade::LEGACY_CONTACTS)
                    .unwrap()
                    .insert(("default", "user_8821"), golden.as_slice())
                    .unwrap();
                txn.open_table(upgrade::LEGACY_CONTACTS_BY_ID)
                    .unwrap()
                    .insert(("default", 17), "user_8821")
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let contact = store.contact("default", "contact_17").unwrap().unwrap();
        assert_eq!(contact.custom_attributes.len(), 4);
        assert_eq!(
            store.list_contacts("default", 0, 10).unwrap().contacts,
            vec![contact]
        );
        assert!(store.attributes("default").unwrap().is_empty());
        drop(store);
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get(META_SCHEMA_VERSION)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Query parameters as the API hands them over.
    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The external ids a search finds.
    fn found(store: &RedbStore, agent: &str, q: &str) -> Vec<String> {
        use crate::domain::query::Query;
        let query = Query::parse(
            &params(&[("q", q)]),
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        let page = store
            .query_contacts(agent, &query, &Start::Offset(0), 10)
            .unwrap();
        page.contacts.into_iter().map(|c| c.external_id).collect()
    }

    /// Upserts contacts `(external id, name)` into `agent`.
    fn upsert_names(
        rt: &tokio::runtime::Runtime,
        store: &RedbStore,
        agent: &str,
        rows: &[(&str, &str)],
    ) {
        let mut issues = crate::domain::Issues::new();
        let entries: Vec<ContactInput> = rows
            .iter()
            .map(|(ext, name)| {
                let body = serde_json::json!({"external_id": ext, "name": name});
                ContactInput::parse(&body, "", &mut issues).unwrap()
            })
            .collect();
        rt.block_on(store.upsert_contacts(
            agent.into(),
            entries,
            OnDuplicate::Update,
            WriteRules::default(),
            1_700_000_000,
        ))
        .unwrap();
    }

    /// The store stamps writes with the time it is given, and its issues name a field
    /// inside the entry and the entry's position, not a place in a request body.
    #[test]
    fn writes_take_their_time_and_issues_name_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let rt = runtime();
        create_agent(&rt, &store, "a");
        let mut issues = crate::domain::Issues::new();
        let mut input =
            |body: serde_json::Value| ContactInput::parse(&body, "", &mut issues).unwrap();
        let entries = vec![
            input(serde_json::json!({"external_id": "x", "email": "x@a.co"})),
            input(serde_json::json!({"external_id": "y", "email": "y@a.co"})),
        ];
        let made = rt
            .block_on(store.upsert_contacts(
                "a".into(),
                entries,
                OnDuplicate::Update,
                WriteRules::default(),
                1_000,
            ))
            .unwrap();
        assert!(made
            .contacts
            .iter()
            .all(|c| c.created_at == 1_000 && c.updated_at == 1_000));
        let patch = PatchRequest {
            agent: "a".into(),
            target: "x".into(),
            input: input(serde_json::json!({"name": "Xavier"})),
            rules: WriteRules::default(),
            if_match: None,
        };
        let patched = rt.block_on(store.patch_contact(patch, 2_000)).unwrap();
        assert_eq!((patched.created_at, patched.updated_at), (1_000, 2_000));
        let clash = vec![
            input(serde_json::json!({"external_id": "z"})),
            input(serde_json::json!({"external_id": "w", "email": "Y@a.co"})),
        ];
        let err = rt
            .block_on(store.upsert_contacts(
                "a".into(),
                clash,
                OnDuplicate::Update,
                WriteRules::default(),
                3_000,
            ))
            .unwrap_err();
        let StoreError::Conflict(issues) = err else {
            panic!("expected a conflict, got {err:?}");
        };
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].entry, 1);
        assert_eq!(issues[0].issue.field, "email");
    }

    /// A write's index changes wait in the journal (and, built, in memory) until
    /// `log_blocks` writes' changes do; the next write then stores them in a new run,
    /// not the log. Reads see them at once, and a store stopped in between indexes
    /// those contacts again when it opens.
    #[test]
    fn index_changes_wait_in_the_journal_and_survive_a_stop() {
        use crate::store::index::lsm::{INDEX_LOG, INDEX_RUNS};
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        // No idle flush in between: it would flush what waits.
        let limits = IndexLimits {
            log_blocks: 3,
            idle_ms: 600_000,
            ..IndexLimits::default()
        };
        // A crash is a copy of the file as the last commit left it: a clean stop
        // stores the waiting changes first. Every commit is a checkpoint here, so the
        // file alone holds every write, with the journal entries of the last ones.
        let crashed = tempfile::tempdir().unwrap();
        let open = |dir: &std::path::Path| {
            let options = StoreOptions {
                checkpoint_bytes: 1,
                ..StoreOptions::default()
            };
            RedbStore::open_with(dir, options)
                .unwrap()
                .with_index_limits(limits)
        };
        let upsert = |store: &RedbStore, rows: &[(&str, &str)]| upsert_names(&rt, store, "a", rows);
        // Journal entries, log blocks and runs.
        let layout = |store: &RedbStore| {
            let txn = store.db.begin_read().unwrap();
            let journal = txn.open_table(INDEX_JOURNAL).unwrap().len().unwrap();
            let log = txn.open_table(INDEX_LOG).unwrap().len().unwrap();
            let runs = txn.open_table(INDEX_RUNS).unwrap().len().unwrap();
            (journal, log, runs)
        };
        {
            // However few contacts a write changes, they go through the journal.
            let store = open(dir.path());
            create_agent(&rt, &store, "a");
            upsert(&store, &[("u0", "Ada Lovelace"), ("u1", "Grace Hopper")]);
            assert_eq!(layout(&store), (1, 0, 0));
            assert_eq!(found(&store, "a", "hop"), ["u1"]);
            upsert(&store, &[("u0", "Ada King"), ("u2", "Alan Turing")]);
            assert_eq!(layout(&store), (2, 0, 0));
            assert_eq!(found(&store, "a", "king"), ["u0"]);
            assert!(found(&store, "a", "lovelace").is_empty());
            assert_eq!(store.check().unwrap().problem_count, 0);
            std::fs::copy(store.path(), crashed.path().join(DB_FILE)).unwrap();
            store.shutdown();
            let txn = store.db.begin_read().unwrap();
            let journal = txn.open_table(INDEX_JOURNAL).unwrap().len().unwrap();
            assert_eq!(journal, 0, "a clean stop leaves no journal");
        }
        let store = open(crashed.path());
        // Opening logged the replayed changes of both entries as one block.
        assert_eq!(layout(&store), (0, 1, 0));
        upsert(&store, &[("u3", "Edsger Dijkstra")]);
        upsert(&store, &[("u4", "Barbara Liskov")]);
        upsert(&store, &[("u5", "John Backus")]);
        assert_eq!(layout(&store), (3, 1, 0));
        assert_eq!(found(&store, "a", "dijkstra"), ["u3"]);
        // Three wait: the next write stores them and the log in one run.
        upsert(&store, &[("u6", "Frances Allen")]);
        assert_eq!(layout(&store), (1, 0, 1));
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
        for (word, ext) in [
            ("king", "u0"),
            ("turing", "u2"),
            ("hop", "u1"),
            ("liskov", "u4"),
            ("backus", "u5"),
            ("allen", "u6"),
        ] {
            assert_eq!(found(&store, "a", word), [ext], "{word}");
        }
        assert!(found(&store, "a", "lovelace").is_empty());
    }

    /// A write whose block the index worker failed to build (a panic fills its slot with
    /// an error) is indexed from its journal entry by the next write, which commits:
    /// before, every later write failed until a restart.
    #[test]
    fn a_block_the_worker_failed_to_build_is_computed_from_the_journal() {
        use crate::store::index::lsm::unlogged::Slot;
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        // No idle flush in between: it would store the blocks first.
        let store = RedbStore::open(dir.path())
            .unwrap()
            .with_index_limits(IndexLimits {
                idle_ms: 600_000,
                ..IndexLimits::default()
            });
        create_agent(&rt, &store, "a");
        upsert_names(
            &rt,
            &store,
            "a",
            &[("u0", "Ada Lovelace"), ("u1", "Grace Hopper")],
        );
        upsert_names(&rt, &store, "a", &[("u0", "Ada King")]);
        let pending = store.unlogged.all();
        assert_eq!(pending.len(), 2, "both writes' blocks wait");
        let failed = Arc::new(Slot::default());
        failed.fill(Err(StoreError::Backend("the index worker stopped".into())));
        store.unlogged.add(pending[0].0, failed);
        // Far fewer than `log_blocks` wait, but the failure makes them due.
        upsert_names(&rt, &store, "a", &[("u2", "Alan Turing")]);
        assert_eq!(
            store.unlogged.all().len(),
            1,
            "only the last write's block waits"
        );
        assert_eq!(found(&store, "a", "king"), ["u0"]);
        assert!(found(&store, "a", "lovelace").is_empty());
        assert_eq!(found(&store, "a", "hopper"), ["u1"]);
        assert_eq!(found(&store, "a", "turing"), ["u2"]);
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
    }

    #[test]
    fn a_version_2_data_dir_gets_its_indexes_built_at_open() {
        use crate::domain::query::Query;
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            create_agent(&rt, &store, "a");
            let rows = [
                ("u0", "Ada Lovelace"),
                ("u1", "Grace Hopper"),
                ("u2", "Alan Turing"),
            ];
            upsert_names(&rt, &store, "a", &rows);
            store.shutdown();
        }
        // What a schema-2 build left: no index tables, no index version (and a stale
        // table of index version 1, which the rebuild removes).
        let legacy = redb::TableDefinition::<&[u8], ()>::new("sort_index");
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            let runs: Vec<String> = txn
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_owned())
                .filter(|name| name.starts_with("index_run_"))
                .collect();
            let logged = txn.open_table(INDEX_LOG).unwrap().len().unwrap();
            let journaled = txn.open_table(INDEX_JOURNAL).unwrap().len().unwrap();
            assert!(!runs.is_empty() || logged + journaled > 0);
            for name in runs {
                txn.delete_table(redb::TableDefinition::<u32, &[u8]>::new(&name))
                    .unwrap();
            }
            txn.delete_table(INDEX_LOG).unwrap();
            txn.delete_table(INDEX_JOURNAL).unwrap();
            txn.delete_table(INDEX_RUNS).unwrap();
            txn.delete_table(INDEX_STATE).unwrap();
            txn.delete_table(FIELD_COUNTS).unwrap();
            txn.open_table(legacy)
                .unwrap()
                .insert(b"x".as_slice(), ())
                .unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.remove(META_INDEX_VERSION).unwrap();
                meta.insert(META_SCHEMA_VERSION, 2).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
        assert!(report.index_entries > 0);
        {
            let txn = store.db.begin_read().unwrap();
            assert!(txn.list_tables().unwrap().all(|t| t.name() != "sort_index"));
        }
        let by_name = Query::parse(
            &params(&[("sort", "name")]),
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        let page = store
            .query_contacts("a", &by_name, &Start::Offset(0), 10)
            .unwrap();
        let names: Vec<_> = page
            .contacts
            .iter()
            .map(|c| c.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["Ada Lovelace", "Alan Turing", "Grace Hopper"]);
        let search = Query::parse(
            &params(&[("q", "hop")]),
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        let page = store
            .query_contacts("a", &search, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.len(), 1);
        assert_eq!(page.contacts[0].external_id, "u1");
        store.shutdown();
        drop(store);

        // Damage both indexes: one word entry gone, one stray sort entry.
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let first = {
                let txn = db.begin_read().unwrap();
                let view = IndexView::open(&txn, &Held::default()).unwrap();
                let mut words = view.range(Index::Words, &[], None, false).unwrap();
                assert!(words.advance().unwrap());
                words.key().to_vec()
            };
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            changes.remove(Index::Words, first);
            let stray = crate::store::index::keys::entry(&[b"a", b"name", b"zz"], 99);
            changes.put(Index::Sort, stray);
            let ghost = crate::store::index::keys::entry(&[b"ghost", b"word"], 5);
            changes.put(Index::Words, ghost);
            changes.commit(&txn, IndexLimits::default()).unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let report = store.check().unwrap();
        let text = report.problems.join("\n");
        assert!(text.contains("word_index lacks"), "{text}");
        assert!(
            text.contains("sort_index holds 13 entries, expected 12"),
            "{text}"
        );
        assert!(
            text.contains("word_index holds 1 entries of agents that do not exist"),
            "{text}"
        );
    }

    /// An agent deleted and created again under the same id finds none of its old
    /// contacts, whether their index entries were in the log or in merged runs.
    #[test]
    fn a_deleted_agent_leaves_no_index_entries() {
        use crate::domain::query::Query;
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path())
            .unwrap()
            .with_index_limits(IndexLimits {
                log_blocks: 2,
                log_bytes: 1 << 20,
                chunk_bytes: 128,
                fanout: 2,
                base_entries: 8,
                merge_step: 7,
                merge_step_bytes: 1 << 20,
                idle_ms: 1,
            });
        let agent = |id: &str| Agent {
            id: id.into(),
            name: id.into(),
            created_at: 0,
            contact_count: 0,
        };
        let upsert = |agent: &str, names: &[&str]| {
            let rows: Vec<(&str, &str)> = names.iter().map(|n| (*n, *n)).collect();
            upsert_names(&rt, &store, agent, &rows);
        };
        rt.block_on(store.create_agent(agent("a"))).unwrap();
        rt.block_on(store.create_agent(agent("b"))).unwrap();
        for i in 0..12 {
            upsert("a", &[&format!("ada{i}"), &format!("alan{i}")]);
            upsert("b", &[&format!("ada{i}")]);
        }
        rt.block_on(store.delete_agent("a".into())).unwrap();
        rt.block_on(store.create_agent(agent("a"))).unwrap();
        upsert("a", &["adam"]);
        let params = vec![("q".to_owned(), "ada".to_owned())];
        let search = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let page = store
            .query_contacts("a", &search, &Start::Offset(0), 50)
            .unwrap();
        let found: Vec<_> = page
            .contacts
            .iter()
            .map(|c| c.external_id.clone())
            .collect();
        assert_eq!(found, ["adam"]);
        let page = store
            .query_contacts("b", &search, &Start::Offset(0), 50)
            .unwrap();
        assert_eq!(page.contacts.len(), 12);
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
    }

    /// After writes stop, the merger thread has the index log flushed and the runs
    /// merged on its own; reads and `check` agree throughout.
    #[test]
    fn the_merger_tidies_the_indexes_once_writes_stop() {
        use crate::domain::query::Query;
        use crate::store::index::lsm::compaction::INDEX_MERGES;
        use crate::store::index::lsm::{INDEX_LOG, INDEX_RUNS};
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path())
            .unwrap()
            .with_index_limits(IndexLimits {
                log_blocks: 3,
                log_bytes: 1 << 20,
                chunk_bytes: 128,
                fanout: 3,
                base_entries: 8,
                merge_step: 7,
                merge_step_bytes: 1 << 20,
                idle_ms: 50,
            });
        create_agent(&rt, &store, "default");
        let layout = || {
            let txn = store.db.begin_read().unwrap();
            let log = txn.open_table(INDEX_LOG).unwrap().len().unwrap();
            let journal = txn.open_table(INDEX_JOURNAL).unwrap().len().unwrap();
            let merges = txn.open_table(INDEX_MERGES).unwrap().len().unwrap();
            let runs = txn.open_table(INDEX_RUNS).unwrap().len().unwrap();
            (log + journal, merges, runs)
        };
        // Waits until the log and the blocks waiting in memory are flushed and no merge
        // is left in flight.
        let tidied = |after: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while layout().0 > 0 || layout().1 > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the indexes were not tidied after {after}: {:?}",
                    layout()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        // Twice: the second round's writes must wake the merger again.
        for round in 0..2 {
            let mut issues = crate::domain::Issues::new();
            for i in round * 10..round * 10 + 10 {
                let body =
                    serde_json::json!({"external_id": format!("c{i}"), "name": format!("ada{i}")});
                let entry = ContactInput::parse(&body, "", &mut issues).unwrap();
                rt.block_on(store.upsert_contacts(
                    "default".into(),
                    vec![entry],
                    OnDuplicate::Update,
                    WriteRules::default(),
                    1_700_000_000,
                ))
                .unwrap();
            }
            tidied(&format!("round {round}"));
        }
        let (_, _, runs) = layout();
        assert!(runs <= 2, "{runs} runs after idle merges");
        let params = vec![("q".to_owned(), "ada1".to_owned())];
        let search = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let page = store
            .query_contacts("default", &search, &Start::Offset(0), 50)
            .unwrap();
        assert_eq!(page.contacts.len(), 11);
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
        // Deleting the agent, the last write, logs the removal of its entries; that too
        // must wake the merger for an idle flush (it did not when nothing else was
        // pending, and the removals stayed in the log).
        rt.block_on(store.delete_agent("default".into())).unwrap();
        assert!(layout().0 > 0, "the removals are logged");
        tidied("the agent's deletion");
        assert_eq!(store.check().unwrap().problem_count, 0);
    }

    /// A write future made but never run holds a way into the writer's queue (an
    /// aborted task not yet dropped, on a single-threaded runtime): shutting down must
    /// not wait for it to go.
    #[test]
    fn shutdown_returns_while_an_unrun_write_is_held_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        let held = store.create_agent(Agent {
            id: "held".into(),
            name: "held".into(),
            created_at: 0,
            contact_count: 0,
        });
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stopping = Arc::clone(&store);
        std::thread::spawn(move || {
            stopping.shutdown();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "shutdown waited for a write future nobody runs"
        );
        // Sent after the stop, it fails instead of waiting forever.
        let rt = runtime();
        assert_eq!(rt.block_on(held), Err(StoreError::Closed));
    }

    #[test]
    fn a_second_open_of_the_same_dir_says_already_open() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::AlreadyOpen(_, Some(pid))) if pid == std::process::id()
        ));
    }

    /// The block counts follow creates and deletes, and `check` notices when they do
    /// not match the contact records.
    #[test]
    fn block_counts_follow_writes_and_check_verifies_them() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        create_agent(&rt, &store, "a");
        let rows: Vec<(String, String)> = (0..1500)
            .map(|i| (format!("u{i}"), format!("n{i}")))
            .collect();
        let rows: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        upsert_names(&rt, &store, "a", &rows);
        rt.block_on(store.delete_contact("a".into(), "u3".into(), None, 1_700_000_100))
            .unwrap();
        let count = |level: u64, block: u64| {
            let txn = store.db_for_tests().begin_read().unwrap();
            let table = txn.open_table(blocks::CONTACT_BLOCKS).unwrap();
            table
                .get(("a", level, block))
                .unwrap()
                .map_or(0, |v| v.value())
        };
        // Contact numbers 1..=1500, less number 4: 1022 in block 0, 477 in block 1.
        assert_eq!((count(1, 0), count(1, 1), count(2, 0)), (1022, 477, 1499));
        assert_eq!(store.check().unwrap().problem_count, 0);
        {
            let txn = store.db_for_tests().begin_write().unwrap();
            txn.open_table(blocks::CONTACT_BLOCKS)
                .unwrap()
                .insert(("a", 1, 1), 5)
                .unwrap();
            txn.commit().unwrap();
        }
        let report = store.check().unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("contact_blocks")),
            "{:?}",
            report.problems
        );
    }

    /// A file closed without its last checkpoint holds the records of its last write
    /// groups (closing makes them durable) but not their external-id and email entries,
    /// which waited for that checkpoint: opening it rebuilds both indexes from the
    /// records.
    #[test]
    fn entries_a_close_left_out_of_the_indexes_are_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        create_agent(&rt, &store, "a");
        upsert_names(&rt, &store, "a", &[("u1", "Ada"), ("u2", "Alan")]);
        let mut issues = crate::domain::Issues::new();
        let body = serde_json::json!({"external_id": "u3", "email": "Grace@Example.com"});
        let entry = ContactInput::parse(&body, "", &mut issues).unwrap();
        let write = store.upsert_contacts(
            "a".into(),
            vec![entry],
            OnDuplicate::Update,
            WriteRules::default(),
            1_700_000_000,
        );
        rt.block_on(write).unwrap();
        store.shutdown();
        drop(store);
        {
            let db = file::open(&dir.path().join(DB_FILE), file::DEFAULT_CACHE).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
                by_ext.remove(("a", "u2")).unwrap();
                by_ext.remove(("a", "u3")).unwrap();
                let mut by_email = txn.open_table(CONTACTS_BY_EMAIL).unwrap();
                by_email
                    .remove(("a", "grace@example.com"))
                    .unwrap()
                    .unwrap();
                let mut meta = txn.open_table(META).unwrap();
                let flushed = meta
                    .get(deferred::META_KEYS_FLUSHED)
                    .unwrap()
                    .unwrap()
                    .value();
                meta.insert(deferred::META_KEYS_SEQ, flushed + 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        for ext in ["u1", "u2", "u3"] {
            assert!(store.contact("a", ext).unwrap().is_some(), "{ext}");
        }
        let by_email = Query::parse(
            &[("filter[email]".to_owned(), "grace@example.com".to_owned())],
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        let page = store
            .query_contacts("a", &by_email, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.len(), 1);
        assert_eq!(store.check().unwrap().problem_count, 0);
    }

    /// Within one request, a contact that keeps its address (whose owner is not looked
    /// up ahead) still holds it against a later entry, and gives it up to a later
    /// entry once an earlier one moved it away.
    #[test]
    fn an_address_kept_by_its_contact_is_still_held_within_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        super::tests_support::fill(&rt, &store, 2);
        let entries = |bodies: &[serde_json::Value]| {
            let mut issues = crate::domain::Issues::new();
            bodies
                .iter()
                .map(|b| ContactInput::parse(b, "", &mut issues).unwrap())
                .collect::<Vec<_>>()
        };
        let kept_then_claimed = entries(&[
            serde_json::json!({"external_id": "c0", "email": "p0@x.co", "name": "Kept"}),
            serde_json::json!({"external_id": "new", "email": "P0@x.co"}),
        ]);
        let clash = super::tests_support::upsert(&rt, &store, kept_then_claimed);
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
        let moved_then_taken = entries(&[
            serde_json::json!({"external_id": "c1", "email": "p1@x.co"}),
            serde_json::json!({"external_id": "c0", "email": "elsewhere@x.co"}),
            serde_json::json!({"external_id": "c1", "email": "p0@x.co"}),
        ]);
        let done = super::tests_support::upsert(&rt, &store, moved_then_taken).unwrap();
        assert_eq!((done.created, done.updated), (0, 3));
        let holder = store.contact("a", "c1").unwrap().unwrap();
        assert_eq!(holder.email.as_deref(), Some("p0@x.co"));
        assert_eq!(store.check().unwrap().problem_count, 0);
    }

    /// Once filled after an open, the writer's key filters rule out keys never stored
    /// and let every stored one through: stored external ids are updated, not created
    /// again, and a stored email conflicts, whether the key was in the file at the open
    /// or a checkpoint inserted it since.
    #[test]
    fn the_key_filters_let_every_stored_key_through() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        super::tests_support::fill(&rt, &store, 3000);
        store.shutdown();
        drop(store);
        let store = RedbStore::open(dir.path()).unwrap();
        store.filler.join();
        let passed = (0..1000)
            .filter(|i| store.deferred.may_store_ext("a", &format!("new{i}")))
            .count();
        assert!(passed < 20, "{passed} of 1000 new external ids passed");
        for i in 0..3000 {
            assert!(store.deferred.may_store_ext("a", &format!("c{i}")));
            assert!(store.deferred.may_store_email("a", &format!("p{i}@x.co")));
        }
        let rewrite = |ids: std::ops::Range<usize>, email: &dyn Fn(usize) -> String| {
            let ids: Vec<usize> = ids.collect();
            super::tests_support::write(&rt, &store, &ids, |_| "Again".into(), email)
        };
        let again = rewrite(0..1000, &|i| format!("p{i}@x.co")).unwrap();
        assert_eq!((again.created, again.updated), (0, 1000));
        // Contacts created after the open, inserted into the B-trees by a checkpoint.
        super::tests_support::fill(&rt, &store, 1000);
        assert_eq!(store.check().unwrap().problem_count, 0);
        assert!(store.deferred.may_store_ext("a", "c3500"));
        let again = rewrite(3000..4000, &|i| format!("p{i}@x.co")).unwrap();
        assert_eq!((again.created, again.updated), (0, 1000));
        for taken in [5, 3005] {
            let clash = rewrite(10..11, &|_| format!("p{taken}@x.co"));
            assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
        }
        assert_eq!(store.agent("a").unwrap().unwrap().contact_count, 4000);
    }

    /// `check` names an external-id index entry that is missing, one that names another
    /// contact, and a record stored under another contact's number.
    #[test]
    fn check_reports_a_damaged_external_id_index_and_a_misplaced_record() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        create_agent(&rt, &store, "a");
        upsert_names(&rt, &store, "a", &[("u1", "A"), ("u2", "B"), ("u3", "C")]);
        assert_eq!(store.check().unwrap().problem_count, 0);
        {
            let txn = store.db_for_tests().begin_write().unwrap();
            let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
            by_ext.remove(("a", "u1")).unwrap();
            by_ext.insert(("a", "u2"), 3).unwrap();
            drop(by_ext);
            let mut contacts = txn.open_table(CONTACTS).unwrap();
            let record = contacts.get(("a", 3)).unwrap().unwrap().value().to_vec();
            contacts.insert(("a", 9), record.as_slice()).unwrap();
            drop(contacts);
            txn.commit().unwrap();
        }
        let report = store.check().unwrap();
        let problems = report.problems.join("\n");
        for expected in [
            "a/u1: contacts_by_external_id names contact None, expected 1",
            "a/u2: contacts_by_external_id names contact Some(3), expected 2",
            "damaged: contact a/9: damaged data: the contact stored as number 9 is number 3",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        assert_eq!(store.contact("a", "u1").unwrap(), None);
        assert!(matches!(
            store.contact("a", "u2"),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// Phone numbers are `phone` entries of the sort index, in E.164, which `check`
    /// verifies like every other entry.
    #[test]
    fn check_reports_a_missing_and_a_stray_phone_entry() {
        use crate::store::index::keys;
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        create_agent(&rt, &store, "a");
        let mut issues = crate::domain::Issues::new();
        let entries: Vec<ContactInput> = [("u1", "+1 555 010 0001"), ("u2", "15550100002")]
            .iter()
            .map(|(ext, phone)| {
                let body = serde_json::json!({"external_id": ext, "phonenumber": phone});
                let mut input = ContactInput::parse(&body, "", &mut issues).unwrap();
                input.read_phone(&PhoneRules::default());
                input
            })
            .collect();
        super::tests_support::upsert(&rt, &store, entries).unwrap();
        assert_eq!(store.check().unwrap().problem_count, 0);
        store.shutdown();
        drop(store);
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            let mut changes = Changes::default();
            let entry = |e164: &str, n| keys::entry(&[b"a", b"phone", e164.as_bytes()], n);
            changes.remove(Index::Sort, entry("+15550100001", 1));
            changes.put(Index::Sort, entry("+15550100009", 2));
            changes.commit(&txn, IndexLimits::default()).unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let problems = store.check().unwrap().problems.join("\n");
        assert!(problems.contains("sort_index lacks"), "{problems}");
        assert!(problems.contains("+15550100001"), "{problems}");
        assert!(problems.contains("+15550100009"), "{problems}");
    }

    /// Pabbly writes of one new number racing each other create one contact: a write
    /// grouped with another one that created the number finds it among the group's
    /// pending contacts, a later group in the index.
    #[test]
    fn racing_writes_by_phone_create_one_contact_per_number() {
        use crate::store::{PhoneOutcome, PhoneWrite};
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        create_agent(&rt, &store, "a");
        let write = |phone: String| {
            let store = Arc::clone(&store);
            async move {
                let mut issues = crate::domain::Issues::new();
                let body = serde_json::json!({"name": "n", "phonenumber": phone});
                let mut input = ContactInput::parse(&body, "", &mut issues).unwrap();
                input.read_phone(&PhoneRules::default());
                let entry = PhoneWrite {
                    phone,
                    input,
                    overwrite: false,
                };
                store
                    .save_by_phone(
                        "a".into(),
                        vec![entry],
                        WriteRules::default(),
                        1_700_000_000,
                    )
                    .await
                    .unwrap()
            }
        };
        for round in 0..40 {
            let phone = format!("+1555010{round:04}");
            let outcomes = rt.block_on(async {
                let racers: Vec<_> = (0..4).map(|_| tokio::spawn(write(phone.clone()))).collect();
                let mut all = Vec::new();
                for racer in racers {
                    all.extend(racer.await.unwrap());
                }
                all
            });
            let created = outcomes
                .iter()
                .filter(|o| matches!(o, PhoneOutcome::Created(_)))
                .count();
            assert_eq!(created, 1, "round {round}: {outcomes:?}");
        }
    }

    /// The name-word dictionary holds every infix of every name word; the words of a
    /// renamed contact stay; a missing infix is a problem `check` names.
    #[test]
    fn check_reports_a_name_word_the_dictionary_lacks() {
        use crate::store::index::keys;
        use crate::store::tables::NAME_INFIXES;
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let store = RedbStore::open(dir.path()).unwrap();
        create_agent(&rt, &store, "a");
        let write = |name: &str| {
            let mut issues = crate::domain::Issues::new();
            let body = serde_json::json!({"external_id": "u1", "name": name});
            let input = ContactInput::parse(&body, "", &mut issues).unwrap();
            rt.block_on(store.upsert_contacts(
                "a".into(),
                vec![input],
                OnDuplicate::Update,
                WriteRules::default(),
                1_700_000_000,
            ))
            .unwrap();
        };
        let dictionary = || -> Vec<String> {
            let txn = store.db_for_tests().begin_read().unwrap();
            let table = txn.open_table(NAME_INFIXES).unwrap();
            let rows = table.iter().unwrap().map(|row| {
                let key = row.unwrap().0.value().to_vec();
                let (_, rest) = keys::split_seg(&key).unwrap();
                let (infix, rest) = keys::split_seg(rest).unwrap();
                let (word, _) = keys::split_seg(rest).unwrap();
                format!(
                    "{}<{}",
                    String::from_utf8(infix).unwrap(),
                    String::from_utf8(word).unwrap()
                )
            });
            rows.collect()
        };
        write("Ada O'Neil");
        assert_eq!(
            dictionary(),
            ["ada<ada", "da<ada", "eil<neil", "il<neil", "neil<neil"]
        );
        write("Ada Bo");
        assert_eq!(dictionary().len(), 6, "neil stays; bo is added");
        assert_eq!(store.check().unwrap().problem_count, 0);
        let txn = store.db_for_tests().begin_write().unwrap();
        let mut table = txn.open_table(NAME_INFIXES).unwrap();
        table
            .remove(keys::prefix(&[b"a", b"da", b"ada"]).as_slice())
            .unwrap();
        drop(table);
        txn.commit().unwrap();
        let problems = store.check().unwrap().problems.join("\n");
        assert!(
            problems.contains("agent a: name_infixes lacks the name word 'ada'"),
            "{problems}"
        );
    }

    /// What a store holds, as far as a client can tell: every agent with its contacts
    /// in creation order, attribute definitions and keys.
    fn everything(store: &RedbStore) -> String {
        let mut out = String::new();
        for agent in store.agents().unwrap() {
            let page = store.list_contacts(&agent.id, 0, 1000).unwrap();
            let defs = store.attributes(&agent.id).unwrap();
            let feed = store.changes(&agent.id, 0, 1000).unwrap();
            out.push_str(&format!("{agent:?}\n{page:?}\n{defs:?}\n{feed:?}\n"));
        }
        for hook in store.webhooks().unwrap() {
            let queued = store.queued_events(&hook.id, 0, 1000).unwrap();
            out.push_str(&format!("{hook:?}\n{queued:?}\n"));
        }
        out.push_str(&format!("{:?}", store.keys().unwrap()));
        out
    }

    /// A crash leaves the data file as the last checkpoint wrote it and the log as far
    /// as it got: opening the two keeps exactly the writes whose log records are whole,
    /// wherever in its last records the log was cut, and the indexes agree.
    #[test]
    fn a_crash_keeps_exactly_the_writes_whose_log_records_are_whole() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let never = StoreOptions {
            checkpoint_bytes: u64::MAX,
            checkpoint_every: Duration::from_secs(3600),
            ..StoreOptions::default()
        };
        let quiet = IndexLimits {
            idle_ms: 600_000,
            ..IndexLimits::default()
        };
        let store = RedbStore::open_with(dir.path(), never)
            .unwrap()
            .with_index_limits(quiet);
        // One record per write; the state after each.
        let mut states = vec![everything(&store)];
        let hook = crate::domain::webhook::Webhook {
            id: "wh_1".into(),
            url: "https://example.com/h".into(),
            events: vec!["*".into()],
            chatbot_id: None,
            active: true,
            disabled_reason: None,
            secrets: vec![],
            created_at: 1,
            updated_at: 1,
        };
        rt.block_on(store.create_webhook(hook)).unwrap();
        states.push(everything(&store));
        create_agent(&rt, &store, "a");
        states.push(everything(&store));
        let mut issues = crate::domain::Issues::new();
        let bodies = [
            serde_json::json!({"external_id": "u1", "name": "Ada", "email": "ada@x.co", "custom_attributes": {"plan": "pro"}}),
            serde_json::json!({"external_id": "u2", "name": "Grace", "email": "grace@x.co"}),
            serde_json::json!({"external_id": "u1", "name": "Ada King", "email": "grace2@x.co"}),
        ];
        for body in &bodies {
            let entry = ContactInput::parse(body, "", &mut issues).unwrap();
            rt.block_on(store.upsert_contacts(
                "a".into(),
                vec![entry],
                OnDuplicate::Update,
                WriteRules::default(),
                1_700_000_000,
            ))
            .unwrap();
            states.push(everything(&store));
        }
        rt.block_on(store.delete_contact("a".into(), "u2".into(), None, 1_700_000_100))
            .unwrap();
        states.push(everything(&store));
        let key = crate::auth::new_key_record(
            "oc_live_k",
            crate::domain::KeyGrant::unrestricted("k", Scope::Agent("a".into())),
            1,
        );
        rt.block_on(store.create_key(key)).unwrap();
        states.push(everything(&store));

        // The crash: the file and the log as they are now.
        let file = std::fs::read(store.path()).unwrap();
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".log"))
            .unwrap();
        let log = std::fs::read(&segment).unwrap();
        let name = segment.file_name().unwrap().to_owned();
        // Where each record ends.
        let mut ends = Vec::new();
        let mut at = 0;
        while at < log.len() {
            let len = u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) as usize;
            at += 16 + len;
            ends.push(at);
        }
        assert_eq!(ends.len() + 1, states.len(), "one record per write");
        let from = ends[ends.len() - 2];
        for cut in from..=log.len() {
            let crashed = tempfile::tempdir().unwrap();
            std::fs::write(crashed.path().join(DB_FILE), &file).unwrap();
            std::fs::write(crashed.path().join(&name), &log[..cut]).unwrap();
            let reopened = RedbStore::open(crashed.path()).unwrap();
            let whole = ends.iter().filter(|end| **end <= cut).count();
            assert_eq!(everything(&reopened), states[whole], "log cut at {cut}");
            if cut == log.len() || cut == from {
                let report = reopened.check().unwrap();
                assert_eq!(report.problem_count, 0, "{:?}", report.problems);
            }
        }
    }
}
