//! `contactd salvage`: copies every record that can still be read from a (damaged)
//! data dir into a fresh one, and says what it could not read. The source is opened
//! read-only and never changed. Tables are read past damage (see `scan`); a contact in
//! a damaged page of the contacts table is looked for again under every external id the
//! id and email indexes name, so it is lost only when its own record is unreadable.
//! Records keep what identifies them: contact numbers, external ids, key digests,
//! timestamps. The indexes of the new dir are built from its contacts when it is first
//! opened, and each agent's contact count is what was salvaged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};

use super::check::open_read_only;
use super::codec::{
    decode_agent, decode_attribute, decode_key, decode_legacy_agent, decode_legacy_attribute,
    decode_legacy_contact, decode_legacy_key, decode_stored_contact, encode_agent,
    encode_attribute, encode_contact, encode_key,
};
use super::damage::unpanic;
use super::data_dir;
use super::file;
use super::redb_store::{RedbStore, DB_FILE};
use super::scan::{walk_numbers, walk_pairs, Pair};
use super::tables::{
    AGENTS, API_KEYS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID, CUSTOM_ATTRIBUTES, META,
    META_INITIALIZED, META_NEXT_CONTACT_ID, META_SCHEMA_VERSION, SCHEMA_VERSION,
};
use super::{unix_now, StoreError};
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
    /// Everything else that could not be read, one line each (the first ones).
    pub lost: Vec<String>,
    /// How many lines `lost` would have without its limit.
    pub lost_count: u64,
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
/// `progress` hears how many contacts were copied so far. An error means nothing was
/// written; a source that cannot be opened at all is a report that read nothing.
pub fn run(
    source: &Path,
    output: &Path,
    progress: &dyn Fn(u64),
) -> Result<SalvageReport, StoreError> {
    check_output(output)?;
    let mut report = SalvageReport::default();
    let db = match open_read_only(source) {
        Ok(db) => db,
        Err(err @ StoreError::AlreadyOpen(_)) => return Err(err),
        Err(err) => {
            report.lose(format!("the database file cannot be opened: {err}"));
            return Ok(report);
        }
    };
    let txn = db.begin_read()?;
    let source = Source::read(&txn, &mut report)?;
    data_dir::create_private_dir(output)?;
    let out = file::open(&output.join(DB_FILE), 64 << 20)?;
    write_small_tables(&out, &source)?;
    let counts = copy_contacts(&txn, &out, &source, &mut report, progress)?;
    finish(&out, &source, &counts, &mut report)?;
    drop(out);
    // Opening the new dir builds its sort and word indexes and field counts.
    RedbStore::open(output)?.shutdown();
    Ok(report)
}

/// The output must be a missing or empty directory: salvage never overwrites.
fn check_output(output: &Path) -> Result<(), StoreError> {
    match std::fs::read_dir(output) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StoreError::Backend(format!(
            "cannot use {} as the output: {err}",
            output.display()
        ))),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(StoreError::DataDir(format!(
                "{} is not empty; salvage writes only into a new or empty directory",
                output.display()
            ))),
        },
    }
}

/// What was read of the source before the contacts.
struct Source {
    /// Sealed records (schema 4) or older ones, which only the upgrade's decoders read.
    sealed: bool,
    next_id: Option<u64>,
    agents: BTreeMap<String, Agent>,
    keys: Vec<ApiKey>,
    attributes: Vec<(String, AttributeDef)>,
    /// The external ids the id and email indexes name, sorted.
    named: Vec<Pair>,
    /// The contact numbers the id index gives external ids.
    numbers: BTreeMap<Pair, u64>,
}

impl Source {
    fn read(txn: &ReadTransaction, report: &mut SalvageReport) -> Result<Self, StoreError> {
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
                report.lose(format!("meta (schema version, next contact number): {err}"));
                (None, None)
            }
        };
        let sealed = schema.is_none_or(|v| v >= SCHEMA_VERSION);
        let mut source = Self {
            sealed,
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
        Ok(source)
    }

    fn read_agents(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let sealed = self.sealed;
        let agents = &mut self.agents;
        let read = unpanic("a range read", || {
            for row in txn.open_table(AGENTS)?.iter()? {
                let (id, value) = row?;
                let id = id.value();
                let decoded = if sealed {
                    decode_agent(id, value.value())
                } else {
                    decode_legacy_agent(id, value.value())
                };
                match decoded {
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
        let sealed = self.sealed;
        let keys = &mut self.keys;
        let read = unpanic("a range read", || {
            for row in txn.open_table(API_KEYS)?.iter()? {
                let (digest, value) = row?;
                let decoded = if sealed {
                    decode_key(digest.value(), value.value())
                } else {
                    decode_legacy_key(digest.value(), value.value())
                };
                match decoded {
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
        let table = match txn.open_table(CUSTOM_ATTRIBUTES) {
            Ok(table) => table,
            Err(err) => {
                report.lose(format!("custom_attributes: {err}"));
                return;
            }
        };
        let sealed = self.sealed;
        let mut lost = Vec::new();
        let gaps = walk_pairs(&table, &Vec::new, &mut |agent, name, value| {
            let decoded = if sealed {
                decode_attribute(agent, name, value.value())
            } else {
                decode_legacy_attribute(agent, name, value.value())
            };
            match decoded {
                Ok(def) => self.attributes.push((agent.to_owned(), def)),
                Err(err) => lost.push(format!("custom attribute {agent}/{name}: {err}")),
            }
        });
        for line in lost {
            report.lose(line);
        }
        for gap in gaps {
            report.lose(format!("custom_attributes {gap}"));
        }
    }

    /// The external ids the id and email indexes name: where the contacts table is read
    /// again past damage, and how a lost contact is named.
    fn read_names(&mut self, txn: &ReadTransaction, report: &mut SalvageReport) {
        let agents: Vec<String> = self.agents.keys().cloned().collect();
        let mut named = BTreeSet::new();
        match txn.open_table(CONTACTS_BY_ID) {
            Ok(by_id) => {
                let numbers = &mut self.numbers;
                for gap in walk_numbers(&by_id, &agents, &mut |agent, n, ext| {
                    let key = (agent.to_owned(), ext.value().to_owned());
                    numbers.insert(key.clone(), n);
                    named.insert(key);
                }) {
                    report.lose(format!("contacts_by_id (rebuilt from the contacts) {gap}"));
                }
            }
            Err(err) => report.lose(format!("contacts_by_id: {err}")),
        }
        match txn.open_table(CONTACTS_BY_EMAIL) {
            Ok(by_email) => {
                for gap in walk_pairs(&by_email, &Vec::new, &mut |agent, _, ext| {
                    named.insert((agent.to_owned(), ext.value().to_owned()));
                }) {
                    report.lose(format!(
                        "contacts_by_email (rebuilt from the contacts) {gap}"
                    ));
                }
            }
            Err(err) => report.lose(format!("contacts_by_email: {err}")),
        }
        self.named = named.into_iter().collect();
    }

    fn decode(&self, ext: &str, bytes: &[u8]) -> Result<Contact, StoreError> {
        if self.sealed {
            decode_stored_contact(ext, bytes)
        } else {
            decode_legacy_contact(bytes)
        }
    }
}

fn begin(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
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
        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        // Salvaged data is never a first run: no new agent or admin key appears.
        meta.insert(META_INITIALIZED, 1)?;
    }
    txn.commit()?;
    Ok(())
}

/// Copies every readable contact; returns how many per agent, and the highest number.
fn copy_contacts(
    txn: &ReadTransaction,
    out: &Database,
    source: &Source,
    report: &mut SalvageReport,
    progress: &dyn Fn(u64),
) -> Result<(BTreeMap<String, u64>, u64), StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let mut writer = Batch::new(out);
    let mut copied: BTreeSet<Pair> = BTreeSet::new();
    let mut failed = Ok(());
    let mut lost = Vec::new();
    let gaps = walk_pairs(
        &contacts,
        &|| source.named.clone(),
        &mut |agent, ext, value| match source.decode(ext, value.value()) {
            Ok(contact) => {
                copied.insert((agent.to_owned(), ext.to_owned()));
                if failed.is_ok() {
                    failed = writer.add(agent, &contact);
                }
                if copied.len().is_multiple_of(BATCH) {
                    progress(copied.len() as u64);
                }
            }
            Err(err) => lost.push(format!("contact {agent}/{ext}: {err}")),
        },
    );
    failed?;
    let damaged_lines = lost.len() as u64;
    for line in lost {
        report.lose(line);
    }
    report.lost_contacts += damaged_lines;
    for gap in &gaps {
        report.lose(format!("contacts {gap}"));
    }
    if !gaps.is_empty() {
        // The indexes name contacts the walk could not reach: each is read on its own.
        for (agent, ext) in &source.named {
            if copied.contains(&(agent.clone(), ext.clone())) {
                continue;
            }
            let found = unpanic("a contact read", || {
                contacts
                    .get((agent.as_str(), ext.as_str()))?
                    .map(|value| source.decode(ext, value.value()))
                    .transpose()
            });
            match found {
                Ok(Some(contact)) => {
                    copied.insert((agent.clone(), ext.clone()));
                    writer.add(agent, &contact)?;
                }
                Ok(None) => {}
                Err(err) => {
                    let number = source
                        .numbers
                        .get(&(agent.clone(), ext.clone()))
                        .map_or_else(String::new, |n| format!(" (contact_{n})"));
                    report.lose(format!("contact {agent}/{ext}{number}: {err}"));
                    report.lost_contacts += 1;
                }
            }
        }
    }
    let counts = writer.finish()?;
    report.contacts = copied.len() as u64;
    progress(report.contacts);
    Ok(counts)
}

/// Contacts on their way into the new data dir, a transaction per [`BATCH`].
struct Batch<'a> {
    out: &'a Database,
    pending: Vec<(String, Contact)>,
    per_agent: BTreeMap<String, u64>,
    max_id: u64,
}

impl<'a> Batch<'a> {
    fn new(out: &'a Database) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(BATCH),
            per_agent: BTreeMap::new(),
            max_id: 0,
        }
    }

    fn add(&mut self, agent: &str, contact: &Contact) -> Result<(), StoreError> {
        self.pending.push((agent.to_owned(), contact.clone()));
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let txn = begin(self.out)?;
        {
            let mut contacts = txn.open_table(CONTACTS)?;
            let mut by_id = txn.open_table(CONTACTS_BY_ID)?;
            let mut by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
            for (agent, contact) in self.pending.drain(..) {
                let ext = contact.external_id.as_str();
                contacts.insert((agent.as_str(), ext), encode_contact(&contact).as_slice())?;
                by_id.insert((agent.as_str(), contact.id), ext)?;
                if let Some(email) = contact.email_key() {
                    // Taken only by damage: the first holder keeps it.
                    if by_email.get((agent.as_str(), email.as_str()))?.is_none() {
                        by_email.insert((agent.as_str(), email.as_str()), ext)?;
                    }
                }
                *self.per_agent.entry(agent).or_default() += 1;
                self.max_id = self.max_id.max(contact.id);
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn finish(mut self) -> Result<(BTreeMap<String, u64>, u64), StoreError> {
        self.flush()?;
        Ok((self.per_agent, self.max_id))
    }
}

/// Agents with the counts salvaged (and one for contacts whose agent record was lost),
/// the next contact number, and what the counts say was lost.
fn finish(
    out: &Database,
    source: &Source,
    (per_agent, max_id): &(BTreeMap<String, u64>, u64),
    report: &mut SalvageReport,
) -> Result<(), StoreError> {
    let txn = begin(out)?;
    {
        let mut agents = txn.open_table(AGENTS)?;
        // Contacts named as lost above are among those the agents' counts miss.
        let mut missing = 0;
        for (id, agent) in &source.agents {
            let copied = per_agent.get(id).copied().unwrap_or_default();
            let unaccounted = agent.contact_count.saturating_sub(copied);
            if unaccounted > 0 {
                report.lose(format!(
                    "agent {id}: {unaccounted} of its {} contacts could not be read",
                    agent.contact_count
                ));
                missing += unaccounted;
            }
            let mut agent = agent.clone();
            agent.contact_count = copied;
            agents.insert(id.as_str(), encode_agent(&agent).as_slice())?;
        }
        for (id, copied) in per_agent {
            if source.agents.contains_key(id) {
                continue;
            }
            report.lose(format!(
                "agent {id}: its record could not be read; recreated (named after its id) for the {copied} contacts salvaged"
            ));
            let agent = Agent {
                id: id.clone(),
                name: id.clone(),
                created_at: unix_now(),
                contact_count: *copied,
            };
            agents.insert(id.as_str(), encode_agent(&agent).as_slice())?;
        }
        report.lost_contacts = report.lost_contacts.max(missing);
        let next = source.next_id.unwrap_or(0).max(max_id + 1);
        txn.open_table(META)?.insert(META_NEXT_CONTACT_ID, next)?;
    }
    txn.commit()?;
    Ok(())
}
