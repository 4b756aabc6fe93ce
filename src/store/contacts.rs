//! Contact writes inside the writer's transaction, and lookups shared by reads and
//! writes. Every write first plans against the current state (including what earlier
//! entries of the same request did) and only writes once the plan has no conflict.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use redb::{ReadableTable, Table, WriteTransaction};

use super::blocks;
use super::changes;
use super::codec::{
    decode_agent, decode_attribute, decode_contact, decode_stored_contact, encode_agent,
    encode_contact,
};
use super::deferred::or_stored;
use super::index::{self, IndexView, Pairs};
use super::labels::{self, Labels};
use super::redb_store::{put_attribute, set_meta};
use super::redo::{ContactChange, Op};
use super::tables::{
    AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, CUSTOM_ATTRIBUTES, META,
    META_NEXT_CONTACT_ID,
};
use super::writer::Txn;
use super::{
    EntryIssue, ImportOptions, ImportOutcome, ImportRow, OnDuplicate, PatchRequest, PhoneOutcome,
    PhoneWrite, RowFailure, StoreError, UpsertOutcome,
};
use crate::domain::attr::MAX_ATTRIBUTES;
use crate::domain::contact::email_key;
use crate::domain::label::fold;
use crate::domain::precondition::{contact_etag, IfMatch};
use crate::domain::{
    ids, Agent, AttrType, AttrValue, AttributeDef, Contact, ContactInput, Field, Issues, LabelKind,
    Resolved, Schema, UnknownPolicy, WriteRules,
};

/// Finds a contact by external id, falling back to `contact_<n>` and a Pabbly `_id`.
pub fn find_contact(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    ext_number: impl Fn(&str) -> Result<Option<u64>, StoreError>,
    agent: &str,
    target: &str,
) -> Result<Option<Contact>, StoreError> {
    let ext = ids::lookup_id(target);
    if let Some(n) = ext_number(&ext)? {
        return indexed_as(contacts, agent, &ext, n).map(Some);
    }
    if let Some(n) = ids::parse_contact_id(target) {
        return contact_by_number(contacts, agent, n);
    }
    // A Pabbly `_id`: the contact number, with the creation second it must match.
    match ids::parse_pabbly_id(target) {
        Some((stamp, n)) => Ok(contact_by_number(contacts, agent, n)?
            .filter(|c| ids::pabbly_id(c.created_at, c.id) == ids::pabbly_id(i64::from(stamp), n))),
        None => Ok(None),
    }
}

/// The contact the external-id index names for `ext` (`number`), if it names one.
pub fn contact_by_ext(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    number: Option<u64>,
    agent: &str,
    ext: &str,
) -> Result<Option<Contact>, StoreError> {
    number
        .map(|n| indexed_as(contacts, agent, ext, n))
        .transpose()
}

/// Contact number `n`, which the external-id index names for `ext`: a missing contact,
/// or one with another external id, is damage.
pub fn indexed_as(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    agent: &str,
    ext: &str,
    n: u64,
) -> Result<Contact, StoreError> {
    match contact_by_number(contacts, agent, n)? {
        Some(contact) if contact.external_id == ext => Ok(contact),
        Some(contact) => Err(StoreError::Corrupt(format!(
            "the external id index names contact {n} for '{ext}', which is '{}'",
            contact.external_id
        ))),
        None => Err(StoreError::Corrupt(format!(
            "the external id index names contact {n} for '{ext}' but no such contact exists"
        ))),
    }
}

/// Contact number `n` of `agent`.
pub fn contact_by_number(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    agent: &str,
    n: u64,
) -> Result<Option<Contact>, StoreError> {
    contacts
        .get((agent, n))?
        .map(|bytes| decode_stored_contact(agent, n, bytes.value()))
        .transpose()
}

/// The tables a contact write touches, opened once per job.
struct Tables<'txn> {
    contacts: Table<'txn, (&'static str, u64), &'static [u8]>,
    by_ext: Table<'txn, (&'static str, &'static str), u64>,
    emails: Table<'txn, (&'static str, &'static str), &'static str>,
    agents: Table<'txn, &'static str, &'static [u8]>,
    txn: &'txn Txn,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn Txn) -> Result<Self, StoreError> {
        Ok(Self {
            contacts: txn.open_table(CONTACTS)?,
            by_ext: txn.open_table(CONTACTS_BY_EXTERNAL_ID)?,
            emails: txn.open_table(CONTACTS_BY_EMAIL)?,
            agents: txn.open_table(AGENTS)?,
            txn,
        })
    }

    fn agent(&self, id: &str) -> Result<Agent, StoreError> {
        let bytes = self.agents.get(id)?.ok_or(StoreError::AgentNotFound)?;
        decode_agent(id, bytes.value())
    }

    /// The contact number of `ext`, as the writes so far left it.
    fn ext_number(&self, agent: &str, ext: &str) -> Result<Option<u64>, StoreError> {
        or_stored(self.txn.deferred_ext(agent, ext), || {
            if !self.txn.may_store_ext(agent, ext) {
                return Ok(None);
            }
            Ok(self.by_ext.get((agent, ext))?.map(|v| v.value()))
        })
    }

    fn load(&self, agent: &str, ext: &str) -> Result<Option<Contact>, StoreError> {
        contact_by_ext(&self.contacts, self.ext_number(agent, ext)?, agent, ext)
    }

    /// Who holds email `key`, as the writes so far left it.
    fn email_owner(&self, agent: &str, key: &str) -> Result<Option<String>, StoreError> {
        or_stored(self.txn.deferred_email(agent, key), || {
            if !self.txn.may_store_email(agent, key) {
                return Ok(None);
            }
            Ok(self.emails.get((agent, key))?.map(|v| v.value().to_owned()))
        })
    }

    /// The contact `target` names (see [`find_contact`]), as the writes so far left it.
    fn find(&self, agent: &str, target: &str) -> Result<Option<Contact>, StoreError> {
        find_contact(
            &self.contacts,
            |ext| self.ext_number(agent, ext),
            agent,
            target,
        )
    }

    /// Writes the difference between `before` and `after` for each touched contact,
    /// and its change feed entries, stamped `at`. Email index removals go first, so an
    /// address freed by one contact can be taken by another in the same request. The
    /// external-id and email entries are deferred to the next checkpoint (`deferred`).
    fn apply(&mut self, agent: &str, changes: Pairs, at: i64) -> Result<(), StoreError> {
        // Field counts now; the index entries when the transaction finishes.
        let changes = Arc::new(changes);
        self.txn
            .index()
            .contacts_changed(agent, Arc::clone(&changes))?;
        let mut blocks = blocks::Deltas::default();
        for (before, after) in changes.iter() {
            match (before, after) {
                (None, Some(new)) => blocks.add(new.id, 1),
                (Some(old), None) => blocks.add(old.id, -1),
                _ => {}
            }
        }
        blocks.write(self.txn, agent)?;
        for (before, after) in changes.iter() {
            let Some(old) = before else { continue };
            let new_key = after.as_ref().and_then(Contact::email_key);
            let renamed = after
                .as_ref()
                .is_none_or(|a| a.external_id != old.external_id);
            if let Some(key) = old.email_key() {
                if renamed || new_key.as_deref() != Some(key.as_str()) {
                    self.txn.set_email(agent, &key, None);
                }
            }
            if renamed {
                self.txn.set_ext(agent, &old.external_id, None);
            }
            if after.is_none() {
                self.contacts.remove((agent, old.id))?;
            }
        }
        // The record written for each change, in the order of `changes`.
        let mut records: Vec<Option<Vec<u8>>> = Vec::with_capacity(changes.len());
        for (before, after) in changes.iter() {
            let Some(new) = after.as_ref().filter(|new| before.as_ref() != Some(new)) else {
                records.push(None);
                continue;
            };
            let ext = new.external_id.as_str();
            let record = encode_contact(agent, new);
            self.contacts.insert((agent, new.id), record.as_slice())?;
            records.push(Some(record));
            let same_ext = before
                .as_ref()
                .is_some_and(|b| b.external_id == new.external_id);
            if let Some(key) = new.email_key() {
                let old_key = before.as_ref().and_then(Contact::email_key);
                if !same_ext || old_key.as_deref() != Some(key.as_str()) {
                    self.txn.set_email(agent, &key, Some(ext));
                }
            }
            if !same_ext {
                self.txn.set_ext(agent, ext, Some(new.id));
            }
        }
        let written = changes
            .iter()
            .zip(&records)
            .filter(|((before, after), record)| wrote(before, after, record))
            .map(|((before, after), record)| changes::Written {
                before: before.as_ref(),
                after: after.as_ref(),
                record: record.as_deref(),
            });
        changes::append(self.txn, agent, at, written)?;
        if self.txn.recording() {
            let logged: Vec<ContactChange> = changes
                .iter()
                .zip(records)
                .filter(|((before, after), record)| wrote(before, after, record))
                .map(|((before, _), record)| {
                    (
                        before.as_ref().map(|b| (b.external_id.clone(), b.id)),
                        record,
                    )
                })
                .collect();
            if !logged.is_empty() {
                self.txn.record(Op::ContactsAt {
                    agent: agent.to_owned(),
                    at,
                    changes: logged,
                });
            }
        }
        Ok(())
    }

    fn save_agent(&mut self, agent: &Agent) -> Result<(), StoreError> {
        let record = encode_agent(agent);
        self.agents.insert(agent.id.as_str(), record.as_slice())?;
        self.txn.record(Op::PutAgent {
            id: agent.id.clone(),
            record,
        });
        Ok(())
    }
}

/// Whether a change wrote anything: a record, or a delete.
fn wrote(before: &Option<Contact>, after: &Option<Contact>, record: &Option<Vec<u8>>) -> bool {
    record.is_some() || after.is_none() && before.is_some()
}

/// Applies logged contact changes again (see `redo`): each contact as it was before is
/// read back, and the change written as it was live, at `at` (`None`: a log written
/// before the change feed, whose changes are stamped with the latest time their
/// records hold).
pub fn redo(
    txn: &Txn,
    agent: &str,
    at: Option<i64>,
    changes: Vec<ContactChange>,
) -> Result<(), StoreError> {
    let mut tables = Tables::open(txn)?;
    let mut pairs = Vec::with_capacity(changes.len());
    for (was, record) in changes {
        let before = match was {
            Some((ext, id)) => {
                let found = tables.load(agent, &ext)?.filter(|c| c.id == id);
                Some(found.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the write-ahead log changes contact {agent}/{ext} (number {id}), which the data does not hold"
                    ))
                })?)
            }
            None => None,
        };
        let after = match record {
            Some(bytes) => Some(decode_contact(agent, &bytes)?),
            None => None,
        };
        pairs.push((before, after));
    }
    let at = at.unwrap_or_else(|| {
        pairs
            .iter()
            .flat_map(|(before, after)| [before, after])
            .flatten()
            .map(|c| c.updated_at)
            .max()
            .unwrap_or_default()
    });
    tables.apply(agent, pairs, at)
}

fn next_contact_id(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META)?;
    let next = meta.get(META_NEXT_CONTACT_ID)?.map_or(1, |v| v.value());
    Ok(next)
}

fn save_next_contact_id(txn: &Txn, next: u64) -> Result<(), StoreError> {
    set_meta(txn, META_NEXT_CONTACT_ID, next)
}

/// Every custom attribute definition of an agent.
pub fn agent_attributes(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    agent_id: &str,
) -> Result<Vec<AttributeDef>, StoreError> {
    let mut defs = Vec::new();
    for row in table.range((agent_id, "")..)? {
        let (key, value) = row?;
        let (agent, name) = key.value();
        if agent != agent_id {
            break;
        }
        defs.push(decode_attribute(agent_id, name, value.value())?);
    }
    Ok(defs)
}

fn load_schema(
    txn: &WriteTransaction,
    agent_id: &str,
    rules: WriteRules,
) -> Result<Schema, StoreError> {
    let table = txn.open_table(CUSTOM_ATTRIBUTES)?;
    Ok(Schema::new(agent_attributes(&table, agent_id)?, rules))
}

/// The stored values of defined, active attributes with `raw` on top (a `null`
/// clears): what a write whose attributes update only themselves types. Archived
/// values are left out here and kept by the typing.
fn merged_attributes(
    schema: &Schema,
    existing: Option<&BTreeMap<String, AttrValue>>,
    raw: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut merged: BTreeMap<String, Value> = existing
        .into_iter()
        .flatten()
        .filter(|(name, _)| schema.definition(name).is_some_and(|d| !d.archived))
        .map(|(name, value)| (name.clone(), value.to_json()))
        .collect();
    merged.extend(raw.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// A write whose attributes update only themselves may not leave a contact with more
/// than [`MAX_ATTRIBUTES`] values, as no single write could.
fn check_merged_count(merged: &BTreeMap<String, Value>, invalid: &mut Issues) {
    if merged.values().filter(|v| !v.is_null()).count() > MAX_ATTRIBUTES {
        invalid.push(
            "custom_attributes",
            format!("would leave the contact with more than {MAX_ATTRIBUTES} attributes"),
        );
    }
}

/// Writes the definitions a request made on the fly.
fn save_created(txn: &Txn, agent_id: &str, schema: &Schema) -> Result<(), StoreError> {
    for def in schema.created() {
        put_attribute(txn, agent_id, def)?;
    }
    Ok(())
}

fn held_by(ext: &str) -> String {
    format!("already used by contact with external_id '{ext}'")
}

/// What a batch of upserts has planned so far: per touched external id the stored
/// state and the state after the entries planned so far, and the email owners as they
/// have changed. Planning an entry writes nothing; `finish` writes the result.
struct Batch<'txn> {
    agent_id: String,
    tables: Tables<'txn>,
    agent: Agent,
    schema: Schema,
    tags: Labels,
    lists: Labels,
    first_id: u64,
    next_id: u64,
    order: Vec<String>,
    state: HashMap<String, (Option<Contact>, Option<Contact>)>,
    /// Contacts read ahead by [`Batch::read_ahead`], as stored, by external id.
    read: HashMap<String, Option<Contact>>,
    email_owner: HashMap<String, Option<String>>,
    on_duplicate: OnDuplicate,
    rules: WriteRules,
    now: i64,
    /// Set for an import: how its rows differ from `POST /contacts` entries.
    import: Option<ImportMode>,
}

/// An import's rows: `on_duplicate` judges "existing" by the state left by earlier
/// rows (so the outcome does not depend on where chunks begin), declared attribute types
/// are defined by the first row written with a value, and (CSV) a row's attributes
/// update only themselves.
struct ImportMode {
    declared: BTreeMap<String, AttrType>,
    merge_attributes: bool,
}

/// What became of one entry.
enum Planned {
    Created(Contact),
    Updated(Contact),
    Skipped(Contact),
}

/// Why an entry cannot be applied: problems with its values, or conflicts with other
/// contacts.
enum Rejected {
    Invalid(Issues),
    Conflict(Issues),
}

impl<'txn> Batch<'txn> {
    fn open(
        txn: &'txn Txn,
        agent_id: &str,
        on_duplicate: OnDuplicate,
        rules: WriteRules,
        now: i64,
    ) -> Result<Self, StoreError> {
        let first_id = next_contact_id(txn)?;
        let schema = load_schema(txn, agent_id, rules)?;
        let tables = Tables::open(txn)?;
        let agent = tables.agent(agent_id)?;
        Ok(Self {
            agent_id: agent_id.to_owned(),
            tables,
            agent,
            tags: Labels::new(LabelKind::Tag, rules.unknown_tags),
            lists: Labels::new(LabelKind::List, rules.unknown_tags),
            schema,
            first_id,
            next_id: first_id,
            order: Vec::new(),
            state: HashMap::new(),
            read: HashMap::new(),
            email_owner: HashMap::new(),
            on_duplicate,
            rules,
            now,
            import: None,
        })
    }

    /// Reads what planning `entries` will look up, before any is planned: the contacts
    /// of their external ids and the owners of their email addresses, each in key
    /// order, so that neighbouring lookups share the B-tree pages they descend through
    /// rather than each landing on a random one.
    fn read_ahead<'e>(
        &mut self,
        entries: impl Iterator<Item = &'e ContactInput> + Clone,
    ) -> Result<(), StoreError> {
        let mut exts: Vec<&str> = entries
            .clone()
            .filter_map(|e| match &e.external_id {
                Field::Set(ext) => Some(ext.as_str()),
                Field::Absent | Field::Clear => None,
            })
            .collect();
        exts.sort_unstable();
        exts.dedup();
        for ext in exts {
            if !self.state.contains_key(ext) && !self.read.contains_key(ext) {
                let stored = self.tables.load(&self.agent_id, ext)?;
                self.read.insert(ext.to_owned(), stored);
            }
        }
        // Owners of the addresses entries set, except an address the entry's contact
        // already has: planning asks for the owner only when the address changes (and
        // looks it up then if an earlier entry changed it meanwhile).
        let mut keys: Vec<String> = entries
            .filter_map(|e| match &e.email {
                Field::Set(email) => Some((e, email_key(email))),
                Field::Absent | Field::Clear => None,
            })
            .filter(|(e, key)| {
                let Field::Set(ext) = &e.external_id else {
                    return true;
                };
                let current = match self.state.get(ext.as_str()) {
                    Some((_, current)) => current.as_ref(),
                    None => self.read.get(ext.as_str()).and_then(Option::as_ref),
                };
                current.and_then(Contact::email_key).as_ref() != Some(key)
            })
            .map(|(_, key)| key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            if !self.email_owner.contains_key(&key) {
                let owner = self.tables.email_owner(&self.agent_id, &key)?;
                self.email_owner.insert(key, owner);
            }
        }
        Ok(())
    }

    /// Plans one entry against the state left by the entries before it; issues name
    /// fields of the entry (`email`, `custom_attributes.plan`). A rejected entry changes
    /// nothing, not even the attribute definitions it would have made.
    fn plan(&mut self, entry: &ContactInput) -> Result<Result<Planned, Rejected>, StoreError> {
        let ext = match &entry.external_id {
            Field::Set(ext) => ext.clone(),
            Field::Absent | Field::Clear => ids::new_external_id(),
        };
        // The entry's contact as stored and as the entries before left it, taken out of
        // `state` (rather than copied) and put back once planned.
        let (stored, current) = match self.state.remove(&ext) {
            Some(pair) => pair,
            None => {
                let stored = match self.read.remove(&ext) {
                    Some(stored) => stored,
                    None => self.tables.load(&self.agent_id, &ext)?,
                };
                self.order.push(ext.clone());
                (stored.clone(), stored)
            }
        };
        let planned = self.plan_loaded(entry, &ext, stored.as_ref(), current.as_ref());
        let next = match &planned {
            Ok(Ok(Planned::Created(next) | Planned::Updated(next))) => Some(next.clone()),
            _ => current,
        };
        self.state.insert(ext, (stored, next));
        planned
    }

    /// [`Batch::plan`] for the contact `ext` as `stored` and as the entries before left
    /// it (`current`).
    fn plan_loaded(
        &mut self,
        entry: &ContactInput,
        ext: &str,
        stored: Option<&Contact>,
        current: Option<&Contact>,
    ) -> Result<Result<Planned, Rejected>, StoreError> {
        let judged = if self.import.is_some() {
            current
        } else {
            stored
        };
        if let Some(existing) = judged {
            match self.on_duplicate {
                OnDuplicate::Update => {}
                OnDuplicate::Skip => return Ok(Ok(Planned::Skipped(existing.clone()))),
                OnDuplicate::Error => {
                    let mut conflicts = Issues::new();
                    conflicts.push("external_id", held_by(ext));
                    return Ok(Err(Rejected::Conflict(conflicts)));
                }
            }
        }
        let mut invalid = Issues::new();
        let mark = (self.schema.mark(), self.tags.mark(), self.lists.mark());
        let attributes = entry.custom_attributes.as_ref().map(|raw| {
            let existing = current.map(|c| &c.custom_attributes);
            let merged = self.values_to_type(raw, existing, entry.merge_attributes);
            if let Some(merged) = &merged {
                check_merged_count(merged, &mut invalid);
            }
            let raw = merged.as_ref().unwrap_or(raw);
            self.schema
                .type_values(raw, existing, "custom_attributes", self.now, &mut invalid)
        });
        let txn = self.tables.txn;
        let (tags, lists) = (
            current.map_or(&[][..], |c| &c.tags[..]),
            current.map_or(&[][..], |c| &c.lists[..]),
        );
        let tags = self
            .tags
            .resolve(txn, &self.agent_id, &entry.tags, tags, &mut invalid)?;
        let lists = self
            .lists
            .resolve(txn, &self.agent_id, &entry.lists, lists, &mut invalid)?;
        if !invalid.is_empty() {
            self.roll_back(mark);
            return Ok(Err(Rejected::Invalid(invalid)));
        }
        let resolved = Resolved {
            attributes,
            tags,
            lists,
        };
        let next = entry.apply(
            current,
            ext,
            self.next_id,
            self.now,
            resolved,
            &self.rules.phone,
        );
        let old_key = current.and_then(Contact::email_key);
        let new_key = next.email_key();
        if new_key != old_key {
            if let Some(key) = &new_key {
                let owner = match self.email_owner.get(key) {
                    Some(owner) => owner.clone(),
                    None => self.tables.email_owner(&self.agent_id, key)?,
                };
                if let Some(owner) = owner.filter(|o| o != ext) {
                    self.roll_back(mark);
                    let mut conflicts = Issues::new();
                    conflicts.push("email", held_by(&owner));
                    return Ok(Err(Rejected::Conflict(conflicts)));
                }
            }
            if let Some(key) = old_key {
                self.email_owner.insert(key, None);
            }
            if let Some(key) = new_key {
                self.email_owner.insert(key, Some(ext.to_owned()));
            }
        }
        let created = current.is_none();
        if created {
            self.next_id += 1;
        }
        Ok(Ok(if created {
            Planned::Created(next)
        } else {
            Planned::Updated(next)
        }))
    }

    /// Forgets what the definitions gained after `mark` (see `plan`).
    fn roll_back(&mut self, (schema, tags, lists): (usize, usize, usize)) {
        self.schema.roll_back(schema);
        self.tags.roll_back(tags);
        self.lists.roll_back(lists);
    }

    /// Defines the declared attributes an import row has values for (under `define`),
    /// and when the entry's attributes update only themselves (`merge`, or a CSV
    /// import) returns the values to type (see [`merged_attributes`]). `None` means:
    /// type the entry's values as they are.
    fn values_to_type(
        &mut self,
        raw: &BTreeMap<String, Value>,
        existing: Option<&BTreeMap<String, AttrValue>>,
        merge: bool,
    ) -> Option<BTreeMap<String, Value>> {
        if let Some(mode) = &self.import {
            if self.schema.rules().unknown == UnknownPolicy::Define {
                for (name, value) in raw {
                    if let Some(kind) = mode.declared.get(name).filter(|_| !value.is_null()) {
                        self.schema.declare(name, *kind, self.now);
                    }
                }
            }
        }
        let merge = merge || self.import.as_ref().is_some_and(|m| m.merge_attributes);
        merge.then(|| merged_attributes(&self.schema, existing, raw))
    }

    /// Writes everything planned.
    fn finish(mut self, txn: &Txn) -> Result<(), StoreError> {
        let agent_id = self.agent_id.clone();
        let changes: Vec<_> = self
            .order
            .iter()
            .filter_map(|ext| self.state.remove(ext))
            .collect();
        let created = changes
            .iter()
            .filter(|(b, a)| b.is_none() && a.is_some())
            .count() as u64;
        let now = self.now;
        self.tables.apply(&agent_id, changes, now)?;
        if created > 0 {
            self.agent.contact_count += created;
            let agent = self.agent.clone();
            self.tables.save_agent(&agent)?;
        }
        drop(self.tables);
        if self.next_id != self.first_id {
            save_next_contact_id(txn, self.next_id)?;
        }
        self.tags.save(txn, &agent_id)?;
        self.lists.save(txn, &agent_id)?;
        save_created(txn, &agent_id, &self.schema)
    }
}

/// `POST /contacts`: every entry upserted in order, all or nothing.
pub fn upsert(
    txn: &Txn,
    agent_id: &str,
    entries: Vec<ContactInput>,
    on_duplicate: OnDuplicate,
    rules: WriteRules,
    now: i64,
) -> Result<UpsertOutcome, StoreError> {
    let mut batch = Batch::open(txn, agent_id, on_duplicate, rules, now)?;
    batch.read_ahead(entries.iter())?;
    let mut invalid = Vec::new();
    let mut conflicts = Vec::new();
    let mut outcome = UpsertOutcome {
        contacts: Vec::with_capacity(entries.len()),
        created: 0,
        updated: 0,
        skipped: 0,
    };
    for (i, entry) in entries.iter().enumerate() {
        match batch.plan(entry)? {
            Ok(Planned::Created(c)) => {
                outcome.created += 1;
                outcome.contacts.push(c);
            }
            Ok(Planned::Updated(c)) => {
                outcome.updated += 1;
                outcome.contacts.push(c);
            }
            Ok(Planned::Skipped(c)) => {
                outcome.skipped += 1;
                outcome.contacts.push(c);
            }
            Err(Rejected::Invalid(issues)) => invalid.extend(EntryIssue::at(i, issues)),
            Err(Rejected::Conflict(issues)) => conflicts.extend(EntryIssue::at(i, issues)),
        }
    }
    if !invalid.is_empty() {
        return Err(StoreError::Invalid(invalid));
    }
    if !conflicts.is_empty() {
        return Err(StoreError::Conflict(conflicts));
    }
    batch.finish(txn)?;
    Ok(outcome)
}

/// Pabbly's `POST /contacts`: each entry matched on its phone number (the agent's oldest
/// contact with it, or one an earlier entry created) and created, updated or left
/// alone on its own; entries that fail change nothing, the others are written.
pub fn save_by_phone(
    txn: &Txn,
    agent_id: &str,
    entries: Vec<PhoneWrite>,
    rules: WriteRules,
    now: i64,
) -> Result<Vec<PhoneOutcome>, StoreError> {
    let mut batch = Batch::open(txn, agent_id, OnDuplicate::Update, rules, now)?;
    let mut created: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    let mut view = None;
    for entry in entries {
        let owner = match created.get(&entry.phone) {
            Some(ext) => Some(ext.clone()),
            None => {
                let view = match &mut view {
                    Some(view) => view,
                    None => view.insert(txn.committed_index()?),
                };
                phone_owner(txn, view, &batch.tables, agent_id, &entry.phone)?
            }
        };
        if owner.is_some() && !entry.overwrite {
            out.push(PhoneOutcome::Exists);
            continue;
        }
        let mut input = entry.input;
        input.external_id = Field::Set(owner.unwrap_or_else(ids::new_external_id));
        out.push(match batch.plan(&input)? {
            Ok(Planned::Created(contact)) => {
                created.insert(entry.phone, contact.external_id.clone());
                PhoneOutcome::Created(contact)
            }
            Ok(Planned::Updated(contact) | Planned::Skipped(contact)) => {
                PhoneOutcome::Updated(contact)
            }
            Err(Rejected::Invalid(issues) | Rejected::Conflict(issues)) => {
                PhoneOutcome::Failed(issues)
            }
        });
    }
    batch.finish(txn)?;
    Ok(out)
}

/// The external id of the agent's oldest contact with the phone number `e164`: the
/// `phone` entries of the sort index as earlier groups committed them, and the contacts
/// this group's jobs wrote, each checked against its record as it stands now.
fn phone_owner(
    txn: &Txn,
    view: &IndexView,
    tables: &Tables<'_>,
    agent: &str,
    e164: &str,
) -> Result<Option<String>, StoreError> {
    let mut ids = index::value_holders(view, agent, "phone", e164.as_bytes())?;
    ids.extend(
        txn.index()
            .pending(agent, &|c| c.phone.as_deref() == Some(e164)),
    );
    ids.sort_unstable();
    ids.dedup();
    for n in ids {
        if let Some(contact) = contact_by_number(&tables.contacts, agent, n)? {
            if contact.phone.as_deref() == Some(e164) {
                return Ok(Some(contact.external_id));
            }
        }
    }
    Ok(None)
}

/// One chunk of an import: each row upserted in order on its own; a row that fails is
/// left out, changes nothing (not even attribute definitions) and is reported; the
/// others are written. See [`ImportMode`] for how rows differ from `POST /contacts`.
pub fn import(
    txn: &Txn,
    agent_id: &str,
    rows: Vec<ImportRow>,
    options: &ImportOptions,
    now: i64,
) -> Result<ImportOutcome, StoreError> {
    let mut batch = Batch::open(txn, agent_id, options.on_duplicate, options.rules, now)?;
    batch.import = Some(ImportMode {
        declared: options.declared.iter().cloned().collect(),
        merge_attributes: options.merge_attributes,
    });
    let mut outcome = ImportOutcome::default();
    for row in rows {
        let external_id = match &row.input.external_id {
            Field::Set(ext) => Some(ext.clone()),
            _ => None,
        };
        let issues = match batch.plan(&row.input)? {
            Ok(Planned::Created(_)) => {
                outcome.created += 1;
                continue;
            }
            Ok(Planned::Updated(_)) => {
                outcome.updated += 1;
                continue;
            }
            Ok(Planned::Skipped(_)) => {
                outcome.skipped += 1;
                continue;
            }
            Err(Rejected::Invalid(issues) | Rejected::Conflict(issues)) => issues,
        };
        for issue in issues.into_vec() {
            outcome.failures.push(RowFailure {
                row: row.row,
                external_id: external_id.clone(),
                field: issue.field,
                message: issue.message,
            });
        }
    }
    batch.finish(txn)?;
    Ok(outcome)
}

/// `PATCH /contacts/{id}`: only sent fields change; `external_id` renames.
pub fn patch(txn: &Txn, req: &PatchRequest, now: i64) -> Result<Contact, StoreError> {
    let mut schema = load_schema(txn, &req.agent, req.rules)?;
    let mut tables = Tables::open(txn)?;
    tables.agent(&req.agent)?;
    let current = tables
        .find(&req.agent, &req.target)?
        .ok_or(StoreError::ContactNotFound)?;
    expect_match(req.if_match.as_ref(), &current)?;
    let ext = match &req.input.external_id {
        Field::Set(new) => new.clone(),
        Field::Absent | Field::Clear => current.external_id.clone(),
    };
    let mut conflicts = Issues::new();
    if ext != current.external_id && tables.load(&req.agent, &ext)?.is_some() {
        conflicts.push("external_id", held_by(&ext));
    }
    let mut invalid = Issues::new();
    let attributes = req.input.custom_attributes.as_ref().map(|raw| {
        let merged = req
            .input
            .merge_attributes
            .then(|| merged_attributes(&schema, Some(&current.custom_attributes), raw));
        if let Some(merged) = &merged {
            check_merged_count(merged, &mut invalid);
        }
        schema.type_values(
            merged.as_ref().unwrap_or(raw),
            Some(&current.custom_attributes),
            "custom_attributes",
            now,
            &mut invalid,
        )
    });
    let mut tags = Labels::new(LabelKind::Tag, req.rules.unknown_tags);
    let mut lists = Labels::new(LabelKind::List, req.rules.unknown_tags);
    let resolved = Resolved {
        attributes,
        tags: tags.resolve(
            txn,
            &req.agent,
            &req.input.tags,
            &current.tags,
            &mut invalid,
        )?,
        lists: lists.resolve(
            txn,
            &req.agent,
            &req.input.lists,
            &current.lists,
            &mut invalid,
        )?,
    };
    if !invalid.is_empty() {
        return Err(StoreError::Invalid(EntryIssue::at(0, invalid).collect()));
    }
    let next = req.input.apply(
        Some(&current),
        &ext,
        current.id,
        now,
        resolved,
        &req.rules.phone,
    );
    if let Some(key) = next.email_key() {
        if current.email_key().as_deref() != Some(key.as_str()) {
            if let Some(owner) = tables.email_owner(&req.agent, &key)? {
                conflicts.push("email", held_by(&owner));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(StoreError::Conflict(EntryIssue::at(0, conflicts).collect()));
    }
    tables.apply(&req.agent, vec![(Some(current), Some(next.clone()))], now)?;
    drop(tables);
    tags.save(txn, &req.agent)?;
    lists.save(txn, &req.agent)?;
    save_created(txn, &req.agent, &schema)?;
    Ok(next)
}

/// Fails unless `current` matches the write's `If-Match` (if it has one).
fn expect_match(if_match: Option<&IfMatch>, current: &Contact) -> Result<(), StoreError> {
    match if_match {
        Some(cond) if !cond.matches(&contact_etag(current)) => Err(StoreError::PreconditionFailed),
        _ => Ok(()),
    }
}

/// `DELETE /contacts/{id}`: removes the contact and its index entries, if it matches
/// `if_match`.
pub fn delete(
    txn: &Txn,
    agent_id: &str,
    target: &str,
    if_match: Option<&IfMatch>,
    now: i64,
) -> Result<Contact, StoreError> {
    let mut tables = Tables::open(txn)?;
    let mut agent = tables.agent(agent_id)?;
    let current = tables
        .find(agent_id, target)?
        .ok_or(StoreError::ContactNotFound)?;
    expect_match(if_match, &current)?;
    tables.apply(agent_id, vec![(Some(current.clone()), None)], now)?;
    agent.contact_count = agent.contact_count.saturating_sub(1);
    tables.save_agent(&agent)?;
    Ok(current)
}

/// Removes every contact, index entry and attribute definition of an agent.
pub fn delete_all(txn: &Txn, agent_id: &str) -> Result<(), StoreError> {
    let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
    for ext in agent_rows(&by_ext, agent_id)? {
        by_ext.remove((agent_id, ext.as_str()))?;
    }
    let mut emails = txn.open_table(CONTACTS_BY_EMAIL)?;
    for key in agent_rows(&emails, agent_id)? {
        emails.remove((agent_id, key.as_str()))?;
    }
    txn.remove_agent_keys(agent_id);
    labels::delete_all(txn, agent_id)?;
    let mut contacts = txn.open_table(CONTACTS)?;
    contacts.retain_in((agent_id, 0)..=(agent_id, u64::MAX), |_, _| false)?;
    blocks::remove_agent(txn, agent_id)?;
    // Earlier jobs of this transaction may have index changes for the agent.
    txn.index().flush_all_now()?;
    index::delete_agent(txn, agent_id, txn.index().limits())?;
    txn.index().logged_elsewhere();
    let mut attributes = txn.open_table(CUSTOM_ATTRIBUTES)?;
    for name in agent_rows(&attributes, agent_id)? {
        attributes.remove((agent_id, name.as_str()))?;
    }
    Ok(())
}

/// The second key component of every row of `agent_id` in a `(agent, str)` table.
fn agent_rows<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    agent_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((agent_id, "")..)? {
        let (key, _) = row?;
        let (agent, second) = key.value();
        if agent != agent_id {
            break;
        }
        out.push(second.to_owned());
    }
    Ok(out)
}

/// Contacts a tag or list change applies to.
#[derive(Debug, Clone)]
pub enum Targets {
    Numbers(Vec<u64>),
    ExternalIds(Vec<String>),
}

/// A change to which contacts carry a tag or list.
#[derive(Debug, Clone)]
pub enum Relabel {
    Add(String),
    Remove(String),
    /// Every contact's `from` becomes `to` (a name as it is to be defined).
    Rename {
        from: String,
        to: String,
    },
}

/// Applies `change` to each of `targets` that exists, in one transaction; returns how
/// many contacts changed. The name added must be defined (`LabelNotFound`).
pub fn relabel(
    txn: &Txn,
    agent: &str,
    kind: LabelKind,
    targets: &Targets,
    change: &Relabel,
    now: i64,
) -> Result<u64, StoreError> {
    let mut tables = Tables::open(txn)?;
    tables.agent(agent)?;
    let (gone, put) = match change {
        Relabel::Add(name) => {
            let defined =
                labels::lookup(txn, agent, kind, name)?.ok_or(StoreError::LabelNotFound(kind))?;
            (None, Some(defined))
        }
        Relabel::Remove(name) => (Some(name.as_str()), None),
        Relabel::Rename { from, to } => (Some(from.as_str()), Some(to.clone())),
    };
    let gone = gone.map(fold);
    let mut found = Vec::new();
    match targets {
        Targets::Numbers(ids) => {
            for &n in ids {
                found.extend(contact_by_number(&tables.contacts, agent, n)?);
            }
        }
        Targets::ExternalIds(exts) => {
            for ext in exts {
                found.extend(tables.load(agent, &ids::lookup_id(ext))?);
            }
        }
    }
    let mut pairs: Pairs = Vec::new();
    for contact in found {
        if pairs
            .iter()
            .any(|(b, _)| b.as_ref().is_some_and(|b| b.id == contact.id))
        {
            continue;
        }
        let names = contact.labels(kind);
        let had = |folded: &str| names.iter().position(|n| fold(n) == folded);
        let mut next_names = names.to_vec();
        match (&gone, &put) {
            (Some(from), Some(to)) => match had(from) {
                Some(i) => next_names[i].clone_from(to),
                None => continue,
            },
            (Some(from), None) => match had(from) {
                Some(i) => {
                    next_names.remove(i);
                }
                None => continue,
            },
            (None, Some(add)) => {
                if had(&fold(add)).is_some() {
                    continue;
                }
                next_names.push(add.clone());
            }
            (None, None) => continue,
        }
        if next_names == names {
            continue;
        }
        let mut next = contact.clone();
        *next.labels_mut(kind) = next_names;
        next.updated_at = now.max(contact.updated_at);
        pairs.push((Some(contact), Some(next)));
    }
    let changed = pairs.len() as u64;
    if changed > 0 {
        tables.apply(agent, pairs, now)?;
    }
    Ok(changed)
}
