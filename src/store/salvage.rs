//! `contactd salvage`: copies every record that can still be read from a (damaged)
//! data dir into a fresh one, and says what it could not read. The source is opened
//! read-only and never changed. Tables are read past damage (see `scan`); a contact in
//! a damaged page of the contact records is looked for again under every contact the
//! indexes name, so it is lost only when its own record is unreadable. A source of
//! schema 4 or older keeps its contacts by external id (see `upgrade`); the copy is
//! always in the current layout.
//! Records keep what identifies them: contact numbers, external ids, key digests,
//! timestamps. The indexes of the new dir are built from its contacts when it is first
//! opened (which also upgrades a copy of an older data dir), and each agent's contact
//! count is what was salvaged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableHandle};

use super::check::open_read_only;
use super::codec::{
    decode_contact, decode_legacy_agent, decode_legacy_attribute, decode_legacy_contact,
    decode_legacy_key, encode_agent, encode_attribute, encode_contact, encode_key,
};
use super::damage::unpanic;
use super::data_dir;
use super::file;
use super::redb_store::{RedbStore, DB_FILE};
use super::scan::{walk_numbers, walk_pairs, Hints, Pair};
use super::tables::{
    AGENTS, API_KEYS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, CUSTOM_ATTRIBUTES,
    LISTS, META, META_INITIALIZED, META_NEXT_CONTACT_ID, META_SCHEMA_VERSION, META_WAL_CHECKPOINT,
    SCHEMA_VERSION, TAGS,
};
use super::upgrade::{LEGACY_CONTACTS, LEGACY_CONTACTS_BY_ID};
use super::wal;
use super::StoreError;
use crate::domain::label::fold;
use crate::domain::{Agent, ApiKey, AttributeDef, Contact};

/// Contacts per write transaction of the new data dir.
const BATCH: usize = 10_000;
/// Lines of what was lost that the report lists; the counts cover all.
const MAX_LISTED: usize = 200;

/// What a salvage copied and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    pub agents: u64,
    pub keys: u64,
    pub attributes: u64,
    pub contacts: u64,
    /// Contacts known to have existed (an agent's count, an index entry) that could not
    /// be read.
    pub lost_contacts: u64,
    /// Records that could not be read, one line each (the first ones).
    pub lost: Vec<String>,
    /// How many lines `lost` would have without its limit.
    pub lost_count: u64,
    /// Damage that lost nothing (an index the new dir builds anew).
    pub notes: Vec<String>,
}

impl SalvageReport {
    fn lose(&mut self, line: String) {
        self.lost_count += 1;
        if self.lost.len() < MAX_LISTED {
            self.lost.push(line);
        }
    }

    /// Whether anything was lost.
    pub fn lost_anything(&self) -> bool {
        self.lost_count > 0 || self.lost_contacts > 0
    }

    /// Whether nothing at all could be read.
    pub fn read_nothing(&self) -> bool {
        self.agents + self.keys + self.attributes + self.contacts == 0 && self.lost_anything()
    }
}

/// Copies what can be read of `source`'s data dir into `output` (missing or empty).
/// An agent whose record is lost is recreated with `now` as its creation time.
/// `progress` hears how many contacts were copied so far. A source that cannot be
/// opened at all is a report that read nothing. An error (the output cannot be
/// written, the server holds the source) leaves no output behind.
pub fn run(
    source: &Path,
    output: &Path,
    now: i64,
    progress: &dyn Fn(u64),
) -> Result<SalvageReport, StoreError> {
    let existed = check_output(output)?;
    let mut report = SalvageReport::default();
    let db = match open_read_only(source) {
        Ok(db) => db,
        Err(err @ StoreError::AlreadyOpen(..)) => return Err(err),
        Err(err) => {
            report.lose(format!("the database file cannot be opened: {err}"));
            return Ok(report);
        }
    };
    let copied = copy(&db, source, output, now, &mut report, progress);
    if let Err(err) = copied {
        // Nothing half-written stays: the output was new or empty.
        let _ = if existed {
            clear_dir(output)
        } else {
            std::fs::remove_dir_all(output)
        };
        return Err(err);
    }
    Ok(report)
}

/// Writes the log holds after the last checkpoint are not in the file: salvage reads
/// the file alone, so they count as lost.
fn note_log(source: &Path, txn: &ReadTransaction, report: &mut SalvageReport) {
    let checkpoint = unpanic("the meta table", || {
        Ok(txn
            .open_table(META)?
            .get(META_WAL_CHECKPOINT)?
            .map_or(0, |v| v.value()))
    })
    .unwrap_or(0);
    match wal::read(source, checkpoint, false) {
        Ok(log) if log.records.is_empty() => {}
        Ok(log) => report.lose(format!(
            "{} writes the write-ahead log holds after the last checkpoint were not copied (the server applies them when it starts on this data dir)",
            log.records.len()
        )),
        Err(err) => report.notes.push(format!("the write-ahead log: {err}")),
    }
}

fn copy(
    db: &redb::ReadOnlyDatabase,
    source_dir: &Path,
    output: &Path,
    now: i64,
    report: &mut SalvageReport,
    progress: &dyn Fn(u64),
) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    let source = Source::read(&txn, report);
    note_log(source_dir, &txn, report);
    data_dir::create_private_dir(output)?;
    let out = file::open(&output.join(DB_FILE), 64 << 20)?;
    write_small_tables(&out, &source)?;
    let copied = if source.legacy {
        match unpanic("the contacts table (schema 4 and older)", || {
            Ok(txn.open_table(LEGACY_CONTACTS)?)
        }) {
            Ok(contacts) => copy_by_ext(&contacts, &out, &source, report, progress)?,
            Err(err) => {
                report.lose(format!("contacts: {err}"));
                Copied::default()
            }
        }
    } else {
        match unpanic("the contact records", || Ok(txn.open_table(CONTACTS)?)) {
            Ok(contacts) => copy_by_number(&contacts, &out, &source, report, progress)?,
            Err(err) => {
                report.lose(format!("contact_records: {err}"));
                Copied::default()
            }
        }
    };
    finish(&out, &source, &copied, now, report)?;
    drop(out);
    // Opening the new dir builds its sort and word indexes and field counts, and
    // upgrades the copy of an older data dir.
    RedbStore::open(output)?.shutdown();
    Ok(())
}

/// The output must be a missing or empty directory: salvage never overwrites. Returns
/// whether it exists.
fn check_output(output: &Path) -> Result<bool, StoreError> {
    match std::fs::read_dir(output) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(StoreError::Backend(format!(
            "cannot use {} as the output: {err}",
            output.display()
        ))),
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(_) => Err(StoreError::DataDir(format!(
                "{} is not empty; salvage writes only into a new or empty directory",
                output.display()
            ))),
        },
    }
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// What was read of the source before the contacts.
struct Source {
    /// The source's schema version (`None`: unreadable). Records older than
    /// [`SEALED_SINCE`] are read by the upgrade's decoders, and the copy records the
    /// source's version, so that opening it runs the upgrade (NFC ids, the email index).
    schema: Option<u64>,
    /// The source keeps its contacts by external id (schema 4 and older, or an upgrade
    /// to 5 that did not finish).
    legacy: bool,
    next_id: Option<u64>,
    agents: BTreeMap<String, Agent>,
    keys: Vec<ApiKey>,
    attributes: Vec<(String, AttributeDef)>,
    /// The external ids the indexes name, sorted.
    named: Vec<Pair>,
    /// The contact numbers the indexes give external ids.
    numbers: BTreeMap<Pair, u64>,
}

impl Source {
    fn read(txn: &ReadTransaction, report: &mut SalvageReport) -> Self {
        let meta = unpanic("the meta table", || {
            let meta = txn.open_table(META)?;
            let get = |name| -> Result<Option<u64>, StoreError> {
                Ok(meta.get(name)?.map(|v| v.value()))
            };
            Ok((get(META_SCHEMA_VERSION)?, get(META_NEXT_CONTACT_ID)?))
        });
        let (schema, next_id) = match meta {
            Ok(found) => found,
            Err(err) => {
                report
                    .notes
                    .push(format!("meta (schema version, next contact number): {err}"));
                (None, None)
            }
        };
        let legacy = unpanic("the table list", || {
            Ok(txn
                .list_tables()?
                .any(|t| t.name() == LEGACY_CONTACTS.name()))
        })
        .unwrap_or(schema.is_some_and(|v| v < SCHEMA_VERSION));
        let mut source = Self {
            schema,
            legacy,
            next_id,
            agents: BTreeMap::new(),
            keys: Vec::new(),
            attributes: Vec::new(),
            named: Vec::new(),
            numbers: BTreeMap::new(),
        };
        source.read_agents(txn, report);
        source.read_keys(txn, report);
        source.read_attributes(txn, report);
        source.read_names(txn, report);
        report.agents = source.agents.len() as u64;
        report.keys = source.keys.len() as u64;
        report.attributes = source.attributes.len() as u64;
        source
    }

    fn read_agents(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let agents = &mut self.agents;
        let read = unpanic("a range read", || {
            for row in txn.open_table(AGENTS)?.iter()? {
                let (id, value) = row?;
                let id = id.value();
                match decode_legacy_agent(id, value.value()) {
                    Ok(agent) => {
                        agents.insert(agent.id.clone(), agent);
                    }
                    Err(err) => report.lose(format!("agent {id}: {err}")),
                }
            }
            Ok(())
        });
        if let Err(err) = read {
            report.lose(format!(
                "agents: unreadable after {} of them: {err}",
                agents.len()
            ));
        }
    }

    fn read_keys(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let keys = &mut self.keys;
        let read = unpanic("a range read", || {
            for row in txn.open_table(API_KEYS)?.iter()? {
                let (digest, value) = row?;
                match decode_legacy_key(digest.value(), value.value()) {
                    Ok(key) => keys.push(key),
                    Err(err) => report.lose(format!("an api key: {err}")),
                }
            }
            Ok(())
        });
        if let Err(err) = read {
            report.lose(format!(
                "api_keys: unreadable after {} keys: {err}",
                keys.len()
            ));
        }
    }

    fn read_attributes(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let table = match unpanic("a table", || Ok(txn.open_table(CUSTOM_ATTRIBUTES)?)) {
            Ok(table) => table,
            Err(err) => {
                report.lose(format!("custom_attributes: {err}"));
                return;
            }
        };
        let mut lost = Vec::new();
        let gaps = walk_pairs(&table, None, Hints::None, &mut |agent, name, value| {
            match decode_legacy_attribute(agent, name, value.value()) {
                Ok(def) => self.attributes.push((agent.to_owned(), def)),
                Err(err) => lost.push(format!("custom attribute {agent}/{name}: {err}")),
            }
            true
        });
        for line in lost {
            report.lose(line);
        }
        for gap in gaps {
            report.lose(format!("custom_attributes {gap}"));
        }
    }

    /// The external ids the indexes name, and their contact numbers: where the contacts
    /// are read again past damage, and how a lost contact is named. Damage here loses
    /// nothing: the new dir builds these indexes anew.
    fn read_names(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let agents: Vec<String> = self.agents.keys().cloned().collect();
        let ceiling = self.next_id.unwrap_or(u64::MAX);
        let mut named = BTreeSet::new();
        let numbers = &mut self.numbers;
        if self.legacy {
            match unpanic("a table", || Ok(txn.open_table(LEGACY_CONTACTS_BY_ID)?)) {
                Ok(by_id) => {
                    for gap in walk_numbers(&by_id, &agents, ceiling, &mut |agent, n, ext| {
                        let key = (agent.to_owned(), ext.value().to_owned());
                        numbers.insert(key.clone(), n);
                        named.insert(key);
                    }) {
                        report.notes.push(format!("contacts_by_id {gap}"));
                    }
                }
                Err(err) => report.notes.push(format!("contacts_by_id: {err}")),
            }
        } else {
            match unpanic("a table", || Ok(txn.open_table(CONTACTS_BY_EXTERNAL_ID)?)) {
                Ok(by_ext) => {
                    for gap in walk_pairs(&by_ext, None, Hints::None, &mut |agent, ext, n| {
                        let key = (agent.to_owned(), ext.to_owned());
                        numbers.insert(key.clone(), n.value());
                        named.insert(key);
                        true
                    }) {
                        report.notes.push(format!("contacts_by_external_id {gap}"));
                    }
                }
                Err(err) => report.notes.push(format!("contacts_by_external_id: {err}")),
            }
        }
        match unpanic("a table", || Ok(txn.open_table(CONTACTS_BY_EMAIL)?)) {
            Ok(by_email) => {
                for gap in walk_pairs(&by_email, None, Hints::None, &mut |agent, _, ext| {
                    named.insert((agent.to_owned(), ext.value().to_owned()));
                    true
                }) {
                    report.notes.push(format!("contacts_by_email {gap}"));
                }
            }
            Err(err) => report.notes.push(format!("contacts_by_email: {err}")),
        }
        self.named = named.into_iter().collect();
    }

    /// A contact record of the source: sealed when the schema says so, of any version
    /// an older schema wrote (or when the schema is unknown).
    fn decode(&self, agent: &str, bytes: &[u8]) -> Result<Contact, StoreError> {
        let sealed = decode_contact(agent, bytes);
        if self.schema.is_some_and(|v| v >= SEALED_SINCE) {
            return sealed;
        }
        sealed.or_else(|_| decode_legacy_contact(agent, bytes))
    }

    /// [`Source::decode`] of the record stored under `key`, which must name it.
    fn decode_at(&self, agent: &str, key: Key<'_>, bytes: &[u8]) -> Result<Contact, StoreError> {
        let contact = self.decode(agent, bytes)?;
        let matches = match key {
            Key::Ext(ext) => contact.external_id == ext,
            Key::Number(n) => contact.id == n,
        };
        if !matches {
            return Err(StoreError::Corrupt(format!(
                "the record stored under {key} is contact_{} ('{}')",
                contact.id, contact.external_id
            )));
        }
        Ok(contact)
    }
}

/// The schema that first sealed every record.
const SEALED_SINCE: u64 = 4;

/// What a source's contact record is stored under.
#[derive(Clone, Copy)]
enum Key<'a> {
    Ext(&'a str),
    Number(u64),
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Ext(ext) => write!(f, "'{ext}'"),
            Key::Number(n) => write!(f, "number {n}"),
        }
    }
}

pub(super) fn begin(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    Ok(txn)
}

fn write_small_tables(out: &Database, source: &Source) -> Result<(), StoreError> {
    let txn = begin(out)?;
    {
        let mut keys = txn.open_table(API_KEYS)?;
        for key in &source.keys {
            keys.insert(key.digest.as_slice(), encode_key(key).as_slice())?;
        }
        let mut attributes = txn.open_table(CUSTOM_ATTRIBUTES)?;
        for (agent, def) in &source.attributes {
            attributes.insert(
                (agent.as_str(), def.name.as_str()),
                encode_attribute(agent, def).as_slice(),
            )?;
        }
        let mut meta = txn.open_table(META)?;
        // The copy is in the current layout; older records still need the upgrade's
        // NFC ids and email index.
        let schema = source
            .schema
            .filter(|v| *v < SEALED_SINCE)
            .unwrap_or(SCHEMA_VERSION);
        meta.insert(META_SCHEMA_VERSION, schema)?;
        // Salvaged data is never a first run: no new agent or admin key appears.
        meta.insert(META_INITIALIZED, 1)?;
    }
    txn.commit()?;
    Ok(())
}

/// What [`copy_contacts`] copied: per agent, and the highest contact number; and the
/// contacts named as lost, per agent.
#[derive(Default)]
struct Copied {
    per_agent: BTreeMap<String, u64>,
    max_id: u64,
    named_lost: BTreeMap<String, u64>,
}

/// Copies every readable contact of a source that keeps them by external id.
fn copy_by_ext(
    contacts: &redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    out: &Database,
    source: &Source,
    report: &mut SalvageReport,
    progress: &dyn Fn(u64),
) -> Result<Copied, StoreError> {
    let mut copier = Copier::new(out, progress);
    // Keys read (copied or not): the second pass reads each of the others once.
    let mut seen: BTreeSet<Pair> = BTreeSet::new();
    let gaps = walk_pairs(
        contacts,
        None,
        Hints::Known(&source.named),
        &mut |agent, ext, value| {
            seen.insert((agent.to_owned(), ext.to_owned()));
            let key = Key::Ext(ext);
            copier.add(agent, key, source.decode_at(agent, key, value.value()));
            true
        },
    );
    copier.gaps("contacts", &gaps, report)?;
    if !gaps.is_empty() {
        // The indexes name contacts the walk could not reach: each is read on its own.
        for (agent, ext) in &source.named {
            if seen.contains(&(agent.clone(), ext.clone())) {
                continue;
            }
            let key = Key::Ext(ext);
            let found = unpanic("a contact read", || {
                contacts
                    .get((agent.as_str(), ext.as_str()))?
                    .map(|value| source.decode_at(agent, key, value.value()))
                    .transpose()
            });
            copier.reread(agent, ext, source, found, report)?;
        }
    }
    copier.finish(report)
}

/// Copies every readable contact of a source that keeps them by contact number.
fn copy_by_number(
    contacts: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    out: &Database,
    source: &Source,
    report: &mut SalvageReport,
    progress: &dyn Fn(u64),
) -> Result<Copied, StoreError> {
    let mut copier = Copier::new(out, progress);
    let mut agents: BTreeSet<String> = source.agents.keys().cloned().collect();
    agents.extend(source.named.iter().map(|(agent, _)| agent.clone()));
    let agents: Vec<String> = agents.into_iter().collect();
    let ceiling = source.next_id.unwrap_or(u64::MAX);
    // Contacts read (copied or not): the second pass reads each of the others once.
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let gaps = walk_numbers(contacts, &agents, ceiling, &mut |agent, n, value| {
        seen.insert((agent.to_owned(), n));
        let key = Key::Number(n);
        copier.add(agent, key, source.decode_at(agent, key, value.value()));
    });
    copier.gaps("contact_records", &gaps, report)?;
    if !gaps.is_empty() {
        // The indexes name contacts the walk could not reach: each is read on its own.
        for (agent, ext) in &source.named {
            let Some(&n) = source.numbers.get(&(agent.clone(), ext.clone())) else {
                continue;
            };
            if !seen.insert((agent.clone(), n)) {
                continue;
            }
            let found = unpanic("a contact read", || {
                contacts
                    .get((agent.as_str(), n))?
                    .map(|value| source.decode_at(agent, Key::Number(n), value.value()))
                    .transpose()
            });
            copier.reread(agent, ext, source, found, report)?;
        }
    }
    copier.finish(report)
}

/// What a copy read so far: the contacts on their way out, and those lost.
struct Copier<'a> {
    writer: Batch<'a>,
    progress: &'a dyn Fn(u64),
    named_lost: BTreeMap<String, u64>,
    lost: Vec<String>,
    failed: Result<(), StoreError>,
}

impl<'a> Copier<'a> {
    fn new(out: &'a Database, progress: &'a dyn Fn(u64)) -> Self {
        Self {
            writer: Batch::new(out),
            progress,
            named_lost: BTreeMap::new(),
            lost: Vec::new(),
            failed: Ok(()),
        }
    }

    /// A record the walk read: copied, or lost when it does not decode.
    fn add(&mut self, agent: &str, key: Key<'_>, found: Result<Contact, StoreError>) {
        match found {
            Ok(contact) => {
                if self.failed.is_ok() {
                    self.failed = self.writer.add(agent, &contact);
                }
                if self.writer.copied.is_multiple_of(BATCH as u64) {
                    (self.progress)(self.writer.copied);
                }
            }
            Err(err) => {
                *self.named_lost.entry(agent.to_owned()).or_default() += 1;
                self.lost.push(format!("contact {agent}/{key}: {err}"));
            }
        }
    }

    /// Reports what the walk lost; the first failure to write stops the copy.
    fn gaps(
        &mut self,
        table: &str,
        gaps: &[crate::store::scan::Gap],
        report: &mut SalvageReport,
    ) -> Result<(), StoreError> {
        std::mem::replace(&mut self.failed, Ok(()))?;
        for line in self.lost.drain(..) {
            report.lose(line);
        }
        for gap in gaps {
            report.lose(format!("{table} {gap}"));
        }
        Ok(())
    }

    /// A contact an index names, read on its own past the walk's damage.
    fn reread(
        &mut self,
        agent: &str,
        ext: &str,
        source: &Source,
        found: Result<Option<Contact>, StoreError>,
        report: &mut SalvageReport,
    ) -> Result<(), StoreError> {
        match found {
            Ok(Some(contact)) => self.writer.add(agent, &contact)?,
            Ok(None) => {}
            Err(err) => {
                let number = source
                    .numbers
                    .get(&(agent.to_owned(), ext.to_owned()))
                    .map_or_else(String::new, |n| format!(" (contact_{n})"));
                report.lose(format!("contact {agent}/{ext}{number}: {err}"));
                *self.named_lost.entry(agent.to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Writes what is pending, and counts the contacts an earlier one clashed with as
    /// lost.
    fn finish(self, report: &mut SalvageReport) -> Result<Copied, StoreError> {
        let written = self.writer.finish()?;
        let mut named_lost = self.named_lost;
        for (agent, line) in written.clashes {
            report.lose(line);
            *named_lost.entry(agent).or_default() += 1;
        }
        report.contacts = written.per_agent.values().sum();
        (self.progress)(report.contacts);
        Ok(Copied {
            per_agent: written.per_agent,
            max_id: written.max_id,
            named_lost,
        })
    }
}

/// Contacts on their way into the new data dir, a transaction per [`BATCH`].
pub(super) struct Batch<'a> {
    out: &'a Database,
    pending: Vec<(String, Contact)>,
    pub(super) per_agent: BTreeMap<String, u64>,
    pub(super) max_id: u64,
    copied: u64,
    /// Contacts not copied because an earlier one has their number or external id
    /// (only damage makes two such): per agent, a line.
    pub(super) clashes: Vec<(String, String)>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(out: &'a Database) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(BATCH),
            per_agent: BTreeMap::new(),
            max_id: 0,
            copied: 0,
            clashes: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, agent: &str, contact: &Contact) -> Result<(), StoreError> {
        self.pending.push((agent.to_owned(), contact.clone()));
        self.copied += 1;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let txn = begin(self.out)?;
        {
            let mut contacts = txn.open_table(CONTACTS)?;
            let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
            let mut by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
            let mut tags = txn.open_table(TAGS)?;
            let mut lists = txn.open_table(LISTS)?;
            for (agent, contact) in self.pending.drain(..) {
                let ext = contact.external_id.as_str();
                let key = (agent.as_str(), contact.id);
                if contacts.get(key)?.is_some() || by_ext.get((agent.as_str(), ext))?.is_some() {
                    let line = format!(
                        "contact {agent}/{ext} (contact_{}): another contact copied before has its number or external id",
                        contact.id
                    );
                    self.clashes.push((agent, line));
                    continue;
                }
                contacts.insert(key, encode_contact(&agent, &contact).as_slice())?;
                by_ext.insert((agent.as_str(), ext), contact.id)?;
                if let Some(email) = contact.email_key() {
                    // Taken only by damage: the first holder keeps it.
                    if by_email.get((agent.as_str(), email.as_str()))?.is_none() {
                        by_email.insert((agent.as_str(), email.as_str()), ext)?;
                    }
                }
                // A tag or list definition lost with its table is made again from the
                // contacts that carry it.
                for (defs, names) in [(&mut tags, &contact.tags), (&mut lists, &contact.lists)] {
                    for name in names {
                        let folded = fold(name);
                        if defs.get((agent.as_str(), folded.as_str()))?.is_none() {
                            defs.insert((agent.as_str(), folded.as_str()), name.as_str())?;
                        }
                    }
                }
                *self.per_agent.entry(agent).or_default() += 1;
                self.max_id = self.max_id.max(contact.id);
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes what is pending; the copy's counts are then final.
    pub(super) fn finish(mut self) -> Result<Self, StoreError> {
        self.flush()?;
        Ok(self)
    }
}

/// Agents with the counts salvaged (and one for contacts whose agent record was lost),
/// the next contact number, and how many contacts were lost: per agent, those named
/// lost or those its count misses, whichever is more.
fn finish(
    out: &Database,
    source: &Source,
    copied: &Copied,
    now: i64,
    report: &mut SalvageReport,
) -> Result<(), StoreError> {
    let txn = begin(out)?;
    let mut lost_contacts = 0;
    {
        let mut agents = txn.open_table(AGENTS)?;
        let mut ids: BTreeSet<&String> = source.agents.keys().collect();
        ids.extend(copied.per_agent.keys());
        ids.extend(copied.named_lost.keys());
        for id in ids {
            let salvaged = copied.per_agent.get(id).copied().unwrap_or_default();
            let named = copied.named_lost.get(id).copied().unwrap_or_default();
            let agent = match source.agents.get(id) {
                Some(agent) => {
                    let missing = agent.contact_count.saturating_sub(salvaged);
                    if missing > named {
                        report.lose(format!(
                            "agent {id}: {missing} of its {} contacts could not be read",
                            agent.contact_count
                        ));
                    }
                    lost_contacts += missing.max(named);
                    agent.clone()
                }
                None => {
                    lost_contacts += named;
                    report.lose(format!(
                        "agent {id}: its record could not be read; recreated (named after its id) for the {salvaged} contacts salvaged"
                    ));
                    Agent {
                        id: id.clone(),
                        name: id.clone(),
                        created_at: now,
                        contact_count: 0,
                    }
                }
            };
            let agent = Agent {
                contact_count: salvaged,
                ..agent
            };
            agents.insert(id.as_str(), encode_agent(&agent).as_slice())?;
        }
        let next = source.next_id.unwrap_or(0).max(copied.max_id + 1);
        txn.open_table(META)?.insert(META_NEXT_CONTACT_ID, next)?;
    }
    txn.commit()?;
    report.lost_contacts = lost_contacts;
    Ok(())
}
