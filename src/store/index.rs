//! The sort and word indexes: which entries a contact has, keeping them in step with
//! every contact write (same transaction), removing an agent's, and rebuilding them.
//! They are stored log-structured (see `lsm`).
//!
//! A write records only the entries that differ between the stored contact and the new
//! one: an update that changes nothing indexed writes no index entry at all.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::codec::decode_contact;
use super::keys;
use super::lsm::{self, Changes, Index, IndexLimits};
use super::tables::{CONTACTS, FIELD_COUNTS, INDEX_VERSION, META, META_INDEX_VERSION};
use super::StoreError;

/// The B-tree index tables of index version 1, removed when the indexes are rebuilt.
const LEGACY_TABLES: [&str; 2] = ["sort_index", "word_index"];
use crate::domain::search::{sort_entries, visit_terms};
use crate::domain::Contact;

/// Fields ordered by another table, so the sort index leaves them out.
const ORDERED_ELSEWHERE: [&str; 2] = ["email", "external_id"];

/// The sort index keys of a contact.
pub fn sort_keys(agent: &str, contact: &Contact) -> BTreeSet<Vec<u8>> {
    sort_keys_of(agent, contact.id, &sort_entries(contact))
        .into_iter()
        .collect()
}

/// The sort index keys of a contact's `sort_entries`, sorted, without repeats.
fn sort_keys_of(agent: &str, id: u64, entries: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = entries
        .iter()
        .filter(|(field, _)| !ORDERED_ELSEWHERE.contains(&field.as_str()))
        .map(|(field, key)| keys::entry(&[agent.as_bytes(), field.as_bytes(), key], id))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The word index keys of a contact.
pub fn word_keys(agent: &str, contact: &Contact) -> BTreeSet<Vec<u8>> {
    word_keys_of(agent, contact).into_iter().collect()
}

/// The word index keys of a contact, sorted, without repeats.
fn word_keys_of(agent: &str, contact: &Contact) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    visit_terms(contact, &mut |word| {
        keys.push(keys::entry(
            &[agent.as_bytes(), word.as_bytes()],
            contact.id,
        ));
        true
    });
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The fields a contact has a value for (what `field_counts` counts).
pub fn counted_fields(contact: &Contact) -> BTreeSet<String> {
    sort_entries(contact).into_iter().map(|(f, _)| f).collect()
}

/// Index changes of a write transaction: sort and word entries go to `changes` (written
/// to the index log before the commit), value counts straight to `field_counts`.
pub struct Indexes<'txn> {
    changes: &'txn RefCell<Changes>,
    counts: Table<'txn, (&'static str, &'static str), u64>,
    /// Per-field changes of the value count, written by `finish`.
    count_delta: HashMap<String, i64>,
}

impl<'txn> Indexes<'txn> {
    pub fn open(
        txn: &'txn WriteTransaction,
        changes: &'txn RefCell<Changes>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            changes,
            counts: txn.open_table(FIELD_COUNTS)?,
            count_delta: HashMap::new(),
        })
    }

    /// Replaces the entries of `before` with those of `after` (either may be absent),
    /// writing only the entries that differ.
    pub fn update(
        &mut self,
        agent: &str,
        before: Option<&Contact>,
        after: Option<&Contact>,
    ) -> Result<(), StoreError> {
        // Each contact's sort entries are computed once, for its keys and its fields.
        let entries_before = before.map(sort_entries).unwrap_or_default();
        let entries_after = after.map(sort_entries).unwrap_or_default();
        let sort = |c: Option<&Contact>, e: &[(String, Vec<u8>)]| {
            c.map(|c| sort_keys_of(agent, c.id, e)).unwrap_or_default()
        };
        let words = |c: Option<&Contact>| c.map(|c| word_keys_of(agent, c)).unwrap_or_default();
        {
            let mut changes = self.changes.borrow_mut();
            let sort_old = sort(before, &entries_before);
            replace(
                &mut changes,
                Index::Sort,
                sort_old,
                sort(after, &entries_after),
            );
            replace(&mut changes, Index::Words, words(before), words(after));
        }
        // A contact has a handful of fields: comparing the lists costs less than sets.
        let has =
            |entries: &[(String, Vec<u8>)], field: &str| entries.iter().any(|(f, _)| f == field);
        for (field, _) in &entries_before {
            if !has(&entries_after, field) {
                self.count(field, -1);
            }
        }
        for (field, _) in &entries_after {
            if !has(&entries_before, field) {
                self.count(field, 1);
            }
        }
        Ok(())
    }

    fn count(&mut self, field: &str, delta: i64) {
        match self.count_delta.get_mut(field) {
            Some(total) => *total += delta,
            None => {
                self.count_delta.insert(field.to_owned(), delta);
            }
        }
    }

    /// Writes the value counts changed by `update`.
    pub fn finish(&mut self, agent: &str) -> Result<(), StoreError> {
        for (field, delta) in std::mem::take(&mut self.count_delta) {
            if delta == 0 {
                continue;
            }
            let current = self
                .counts
                .get((agent, field.as_str()))?
                .map_or(0, |v| v.value());
            match current.saturating_add_signed(delta) {
                0 => self.counts.remove((agent, field.as_str()))?,
                next => self.counts.insert((agent, field.as_str()), next)?,
            };
        }
        Ok(())
    }
}

/// Records the keys of `new` missing from `old` and removes those of `old` missing
/// from `new`; both are sorted, without repeats.
fn replace(changes: &mut Changes, index: Index, old: Vec<Vec<u8>>, new: Vec<Vec<u8>>) {
    let mut old = old.into_iter().peekable();
    for key in new {
        while let Some(gone) = old.next_if(|o| *o < key) {
            changes.remove(index, gone);
        }
        if old.next_if(|o| *o == key).is_none() {
            changes.put(index, key);
        }
    }
    for gone in old {
        changes.remove(index, gone);
    }
}

/// Removes every index entry of an agent.
pub fn delete_agent(
    txn: &WriteTransaction,
    agent: &str,
    limits: IndexLimits,
) -> Result<(), StoreError> {
    let start = keys::prefix(&[agent.as_bytes()]);
    let end = keys::prefix_end(&start);
    for index in [Index::Sort, Index::Words] {
        lsm::remove_prefix(txn, index, &start, &end, limits)?;
    }
    let mut counts = txn.open_table(FIELD_COUNTS)?;
    counts.retain_in((agent, "")..=(agent, "\u{10FFFF}"), |_, _| false)?;
    Ok(())
}

/// Builds the indexes from the contacts table when the data dir has none or another
/// layout (older data dirs). Runs inside the given transaction; returns how many
/// contacts were indexed, or `None` when the indexes were current.
pub fn ensure(txn: &WriteTransaction, limits: IndexLimits) -> Result<Option<u64>, StoreError> {
    let version = txn
        .open_table(META)?
        .get(META_INDEX_VERSION)?
        .map(|v| v.value());
    if version == Some(INDEX_VERSION) {
        return Ok(None);
    }
    for name in LEGACY_TABLES {
        txn.delete_table(TableDefinition::<&[u8], ()>::new(name))?;
    }
    txn.delete_table(FIELD_COUNTS)?;
    lsm::clear(txn)?;
    let changes = RefCell::new(Changes::default());
    let mut indexes = Indexes::open(txn, &changes)?;
    let contacts = txn.open_table(CONTACTS)?;
    let mut built = 0;
    let mut current: Option<String> = None;
    for row in contacts.iter()? {
        let (key, value) = row?;
        let agent = key.value().0;
        if current.as_deref() != Some(agent) {
            if let Some(done) = current.take() {
                indexes.finish(&done)?;
            }
            current = Some(agent.to_owned());
        }
        let contact = decode_contact(value.value())?;
        indexes.update(agent, None, Some(&contact))?;
        built += 1;
        if built % 10_000 == 0 {
            changes.borrow_mut().commit(txn, limits)?;
        }
        if built % 100_000 == 0 {
            tracing::info!(contacts = built, "building the sort and word indexes");
        }
    }
    if let Some(done) = current {
        indexes.finish(&done)?;
    }
    changes.borrow_mut().commit(txn, limits)?;
    txn.open_table(META)?
        .insert(META_INDEX_VERSION, INDEX_VERSION)?;
    Ok(Some(built))
}
