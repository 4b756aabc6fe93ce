//! The sort and word indexes: which entries a contact has, keeping them in step with
//! every contact write (same transaction), removing an agent's, and rebuilding them.
//! They are stored log-structured (see `lsm`).
//!
//! A write records only the entries that differ between the stored contact and the new
//! one: an update that changes nothing indexed writes no index entry at all.

use std::collections::{BTreeSet, HashMap};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::codec::decode_contact;
use super::keys;
use super::lsm::{self, Changes, Index, IndexLimits, Op, Sorted};
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

/// Contact changes of one write: each contact before and after (either may be absent).
pub type Pairs = Vec<(Option<Contact>, Option<Contact>)>;

/// What contact changes do to the indexes: the sort and word entries that differ, and
/// per field how many more contacts have a value for it (what `field_counts` counts).
#[derive(Default)]
pub struct Computed {
    pub changes: Sorted,
    pub counts: HashMap<String, i64>,
}

/// The index changes of `pairs`, contacts of `agent`. Pure: the index worker runs it
/// beside the writer (see `index_worker`).
pub fn compute(agent: &str, pairs: &[(Option<Contact>, Option<Contact>)]) -> Computed {
    let mut ops = Vec::new();
    let mut counts = HashMap::new();
    for (before, after) in pairs {
        if before != after {
            record(
                agent,
                before.as_ref(),
                after.as_ref(),
                &mut ops,
                &mut counts,
            );
        }
    }
    Computed {
        changes: Sorted::new(ops),
        counts,
    }
}

/// Records in `ops` the entries of `after` missing from `before` and the removal of those
/// of `before` missing from `after`, and in `counts` the fields one has and the other
/// has not.
fn record(
    agent: &str,
    before: Option<&Contact>,
    after: Option<&Contact>,
    ops: &mut Vec<Op>,
    counts: &mut HashMap<String, i64>,
) {
    // Each contact's sort entries are computed once, for its keys and its fields.
    let entries_before = before.map(sort_entries).unwrap_or_default();
    let entries_after = after.map(sort_entries).unwrap_or_default();
    let sort = |c: Option<&Contact>, e: &[(String, Vec<u8>)]| {
        c.map(|c| sort_keys_of(agent, c.id, e)).unwrap_or_default()
    };
    let words = |c: Option<&Contact>| c.map(|c| word_keys_of(agent, c)).unwrap_or_default();
    let sort_old = sort(before, &entries_before);
    replace(ops, Index::Sort, sort_old, sort(after, &entries_after));
    replace(ops, Index::Words, words(before), words(after));
    // A contact has a handful of fields: comparing the lists costs less than sets.
    let has = |entries: &[(String, Vec<u8>)], field: &str| entries.iter().any(|(f, _)| f == field);
    let mut count = |field: &str, delta: i64| match counts.get_mut(field) {
        Some(total) => *total += delta,
        None => {
            counts.insert(field.to_owned(), delta);
        }
    };
    for (field, _) in &entries_before {
        if !has(&entries_after, field) {
            count(field, -1);
        }
    }
    for (field, _) in &entries_after {
        if !has(&entries_before, field) {
            count(field, 1);
        }
    }
}

/// Adds `counts` (per field, contacts gained or lost) to `agent`'s value counts.
pub fn write_counts(
    txn: &WriteTransaction,
    agent: &str,
    counts: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    if counts.values().all(|&delta| delta == 0) {
        return Ok(());
    }
    let mut table = txn.open_table(FIELD_COUNTS)?;
    for (field, &delta) in counts {
        if delta == 0 {
            continue;
        }
        let current = table.get((agent, field.as_str()))?.map_or(0, |v| v.value());
        match current.saturating_add_signed(delta) {
            0 => table.remove((agent, field.as_str()))?,
            next => table.insert((agent, field.as_str()), next)?,
        };
    }
    Ok(())
}

/// Records the keys of `new` missing from `old` and removes those of `old` missing
/// from `new`; both are sorted, without repeats.
fn replace(ops: &mut Vec<Op>, index: Index, old: Vec<Vec<u8>>, new: Vec<Vec<u8>>) {
    let mut old = old.into_iter().peekable();
    for key in new {
        while let Some(gone) = old.next_if(|o| *o < key) {
            ops.push((index, gone, false));
        }
        if old.next_if(|o| *o == key).is_none() {
            ops.push((index, key, true));
        }
    }
    for gone in old {
        ops.push((index, gone, false));
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
    // Created even when empty: readers open it.
    txn.open_table(FIELD_COUNTS)?;
    lsm::clear(txn)?;
    let mut changes = Changes::default();
    let mut ops = Vec::new();
    let mut counts = HashMap::new();
    let contacts = txn.open_table(CONTACTS)?;
    let mut built = 0;
    let mut current: Option<String> = None;
    for row in contacts.iter()? {
        let (key, value) = row?;
        let agent = key.value().0;
        if current.as_deref() != Some(agent) {
            if let Some(done) = current.take() {
                write_counts(txn, &done, &std::mem::take(&mut counts))?;
            }
            current = Some(agent.to_owned());
        }
        let contact = decode_contact(value.value())?;
        record(agent, None, Some(&contact), &mut ops, &mut counts);
        built += 1;
        if built % 10_000 == 0 {
            changes.add_sorted(Sorted::new(std::mem::take(&mut ops)));
            changes.commit(txn, limits)?;
        }
        if built % 100_000 == 0 {
            tracing::info!(contacts = built, "building the sort and word indexes");
        }
    }
    if let Some(done) = current {
        write_counts(txn, &done, &counts)?;
    }
    changes.add_sorted(Sorted::new(ops));
    changes.commit(txn, limits)?;
    txn.open_table(META)?
        .insert(META_INDEX_VERSION, INDEX_VERSION)?;
    Ok(Some(built))
}
