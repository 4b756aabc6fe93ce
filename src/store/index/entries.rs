//! The sort and word indexes: which entries a contact has, keeping them in step with
//! every contact write (field counts and the journal entry in the same transaction, the
//! entries in the next one: see `lsm::unlogged`), removing an agent's, and rebuilding
//! them. They are stored log-structured (see `lsm`).
//!
//! A write records only the entries that differ between the stored contact and the new
//! one: an update that changes nothing indexed writes no index entry at all.

use std::collections::{BTreeSet, HashMap};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::keys;
use super::lsm::{self, Changes, Index, IndexLimits, Op, Sorted};
use super::names;
use crate::store::codec::decode_stored_contact;
use crate::store::tables::{CONTACTS, FIELD_COUNTS, INDEX_VERSION, META, META_INDEX_VERSION};
use crate::store::StoreError;

/// B-tree index tables of earlier index versions, removed when the indexes are rebuilt:
/// version 1's sort and word indexes, and the phone index of versions 7 and 8 (its
/// entries are `phone` entries of the sort index now).
const LEGACY_TABLES: [&str; 3] = ["sort_index", "word_index", "contacts_by_phone"];
use crate::domain::label::{self, LabelKind};
use crate::domain::search::{
    label_count_field, sort_entries, visit_terms, ATTR_PREFIX, CORE_FIELDS,
};
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

pub use crate::domain::search::counted_fields;

/// Contact changes of one write: each contact before and after (either may be absent).
pub type Pairs = Vec<(Option<Contact>, Option<Contact>)>;

/// The index changes of `pairs`, contacts of `agent`: the sort and word entries that
/// differ. Pure: the index worker runs it beside the writer (see `index_worker`).
pub fn compute(agent: &str, pairs: &[(Option<Contact>, Option<Contact>)]) -> Sorted {
    let mut ops = Vec::new();
    for (before, after) in pairs {
        if before != after {
            record(agent, before.as_ref(), after.as_ref(), &mut ops);
        }
    }
    Sorted::new(ops)
}

/// Adds to `counts`, per field, how many more contacts of `pairs` have a value for it
/// (what `field_counts` counts). Cheap enough for the writer: no key is built.
pub fn count(pairs: &[(Option<Contact>, Option<Contact>)], counts: &mut HashMap<String, i64>) {
    let mut field = String::new();
    let mut add = |name: &str, delta: i64| match counts.get_mut(name) {
        Some(total) => *total += delta,
        None => {
            counts.insert(name.to_owned(), delta);
        }
    };
    for (before, after) in pairs {
        if before == after {
            continue;
        }
        for core in CORE_FIELDS {
            let (was, is) = (
                before.as_ref().is_some_and(|c| has_core(c, core)),
                after.as_ref().is_some_and(|c| has_core(c, core)),
            );
            if was != is {
                add(core, i64::from(is) - i64::from(was));
            }
        }
        for kind in [LabelKind::Tag, LabelKind::List] {
            let names = |c: &Option<Contact>| -> Vec<String> {
                let names = c.iter().flat_map(|c| c.labels(kind));
                names.map(|n| label::fold(n)).collect()
            };
            let (was, is) = (names(before), names(after));
            for (mine, other, delta) in [(&was, &is, -1), (&is, &was, 1)] {
                for name in mine.iter().filter(|n| !other.contains(n)) {
                    add(&label_count_field(kind, name), delta);
                }
            }
        }
        let (was, is) = (
            before.as_ref().map(|c| &c.custom_attributes),
            after.as_ref().map(|c| &c.custom_attributes),
        );
        for (mine, other, delta) in [(was, is, -1), (is, was, 1)] {
            for name in mine.into_iter().flat_map(|a| a.keys()) {
                if !other.is_some_and(|o| o.contains_key(name)) {
                    field.clear();
                    field.push_str(ATTR_PREFIX);
                    field.push_str(name);
                    add(&field, delta);
                }
            }
        }
    }
}

/// Whether a contact has a value for a core column (what `sort_entries` lists).
fn has_core(contact: &Contact, field: &str) -> bool {
    match field {
        "name" => contact.name.is_some(),
        "email" => contact.email.is_some(),
        "phonenumber" => contact.phonenumber.is_some(),
        _ => true,
    }
}

/// Records in `ops` the entries of `after` missing from `before` and the removal of those
/// of `before` missing from `after`. Field by field and word by word: keys are built only for what changed (an
/// update changes a few fields of a contact's ~25 entries).
fn record(agent: &str, before: Option<&Contact>, after: Option<&Contact>, ops: &mut Vec<Op>) {
    let entries_before = before.map(sort_entries).unwrap_or_default();
    let entries_after = after.map(sort_entries).unwrap_or_default();
    // The same contact before and after (as every write has it): an entry whose value is
    // unchanged keeps its key.
    let same = matches!((before, after), (Some(b), Some(a)) if a.id == b.id);
    let sort_key = |c: &Contact, field: &str, value: &[u8]| {
        keys::entry(&[agent.as_bytes(), field.as_bytes(), value], c.id)
    };
    let mut sort_side = |contact: Option<&Contact>,
                         mine: &[(String, Vec<u8>)],
                         other: &[(String, Vec<u8>)],
                         present: bool| {
        let Some(contact) = contact else { return };
        for (field, value) in mine {
            let kept = same && other.iter().any(|(f, v)| f == field && v == value);
            if !kept && !ORDERED_ELSEWHERE.contains(&field.as_str()) {
                ops.push((Index::Sort, sort_key(contact, field, value), present));
            }
        }
    };
    sort_side(before, &entries_before, &entries_after, false);
    sort_side(after, &entries_after, &entries_before, true);

    let words_before = Words::of(before);
    let words_after = Words::of(after);
    let word_key =
        |c: &Contact, word: &str| keys::entry(&[agent.as_bytes(), word.as_bytes()], c.id);
    let (mut old, mut new) = (
        words_before.iter().peekable(),
        words_after.iter().peekable(),
    );
    loop {
        let order = match (old.peek(), new.peek()) {
            (Some(o), Some(n)) if same => o.cmp(n),
            (Some(_), _) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Less => {
                if let (Some(word), Some(c)) = (old.next(), before) {
                    ops.push((Index::Words, word_key(c, word), false));
                }
            }
            std::cmp::Ordering::Greater => {
                if let (Some(word), Some(c)) = (new.next(), after) {
                    ops.push((Index::Words, word_key(c, word), true));
                }
            }
            std::cmp::Ordering::Equal => {
                old.next();
                new.next();
            }
        }
    }
}

/// A contact's search words, sorted, without repeats, in one buffer.
#[derive(Default)]
struct Words {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Words {
    fn of(contact: Option<&Contact>) -> Self {
        let mut words = Self::default();
        let Some(contact) = contact else {
            return words;
        };
        let Self { text, spans } = &mut words;
        visit_terms(contact, &mut |word| {
            let start = text.len();
            text.push_str(word);
            spans.push((start, text.len()));
            true
        });
        let text: &str = text;
        spans.sort_unstable_by(|a, b| text[a.0..a.1].cmp(&text[b.0..b.1]));
        spans.dedup_by(|a, b| text[a.0..a.1] == text[b.0..b.1]);
        words
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.spans
            .iter()
            .map(|&(start, end)| &self.text[start..end])
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
    names::delete_agent(txn, agent)
}

/// Builds the indexes from the contact records when the data dir has none or another
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
    names::clear(txn)?;
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
        let contact = decode_stored_contact(agent, key.value().1, value.value())?;
        record(agent, None, Some(&contact), &mut ops);
        names::record(txn, agent, std::iter::once((None, Some(&contact))))?;
        let pair = [(None, Some(contact))];
        count(&pair, &mut counts);
        built += 1;
        if built % 10_000 == 0 {
            let mut changes = Changes::default();
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
    let mut changes = Changes::default();
    changes.add_sorted(Sorted::new(ops));
    changes.commit(txn, limits)?;
    txn.open_table(META)?
        .insert(META_INDEX_VERSION, INDEX_VERSION)?;
    Ok(Some(built))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::AttrValue;
    use proptest::prelude::*;

    /// Every key of a contact in one index (the reference `contactd check` uses).
    type KeysOf = fn(&str, &Contact) -> BTreeSet<Vec<u8>>;

    fn contact() -> impl Strategy<Value = Contact> {
        let attr = prop_oneof![
            Just(AttrValue::Int(3)),
            Just(AttrValue::Int(4)),
            Just(AttrValue::Text("Pro".into())),
            Just(AttrValue::Bool(true)),
        ];
        (
            proptest::option::of(prop_oneof![
                Just("Ada King"),
                Just("Ada Lovelace"),
                Just("Grace")
            ]),
            proptest::option::of(prop_oneof![Just("a@x.io"), Just("b.c@x.io")]),
            proptest::option::of(prop_oneof![Just("+1 555 123 4567"), Just("555-1234")]),
            proptest::collection::btree_map(prop_oneof![Just("plan"), Just("ltv")], attr, 0..3),
            (0i64..2, 0i64..2, prop_oneof![Just(7u64), Just(8u64)]),
        )
            .prop_map(
                |(name, email, phone, attrs, (created_at, updated_at, id))| Contact {
                    id,
                    external_id: "Ext-1".into(),
                    name: name.map(Into::into),
                    email: email.map(Into::into),
                    phonenumber: phone.map(Into::into),
                    stripe_accounts: vec![],
                    custom_attributes: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    created_at,
                    updated_at,
                    ..Contact::default()
                },
            )
    }

    proptest! {
        /// The changes recorded for a write turn the old contact's keys into the new
        /// one's, each key added or removed once at most and only where needed, and
        /// count the fields gained and lost.
        #[test]
        fn recorded_changes_turn_the_old_keys_into_the_new(
            before in proptest::option::of(contact()),
            after in proptest::option::of(contact()),
        ) {
            let mut ops = Vec::new();
            let mut counts = HashMap::new();
            record("a", before.as_ref(), after.as_ref(), &mut ops);
            count(&[(before.clone(), after.clone())], &mut counts);
            let all: [(Index, KeysOf); 2] = [(Index::Sort, sort_keys), (Index::Words, word_keys)];
            for (index, keys_of) in all {
                let mut keys = before.as_ref().map(|c| keys_of("a", c)).unwrap_or_default();
                for (i, key, present) in &ops {
                    if *i == index {
                        let changed = if *present { keys.insert(key.clone()) } else { keys.remove(key) };
                        prop_assert!(changed, "{index:?} change {present} of a key that was already so");
                    }
                }
                prop_assert_eq!(keys, after.as_ref().map(|c| keys_of("a", c)).unwrap_or_default());
            }
            let fields = |c: &Option<Contact>| c.as_ref().map(counted_fields).unwrap_or_default();
            let (was, now) = (fields(&before), fields(&after));
            for field in was.union(&now) {
                let want = i64::from(now.contains(field)) - i64::from(was.contains(field));
                prop_assert_eq!(counts.get(field).copied().unwrap_or(0), want, "{}", field);
            }
        }
    }
}
