//! Upgrading a data dir written by an older build, at open, before anything else reads
//! it, one step per layout change:
//!
//! - Schema 5 keys contact records by contact number, with an external-id index beside
//!   them ([`to_numbered`]). Records are copied as they are; the steps after it decode
//!   any record version this build knows.
//! - Schema 4 seals every record with a checksum (see `codec`), stores external ids in
//!   Unicode NFC, and keys the email index by `contact::email_key` (NFC, full case
//!   folding, IDNA domains) ([`to_sealed_nfc`]). So every record is rewritten, an
//!   external id whose NFC spelling differs is moved to it, and the email index is built
//!   anew; the sort and word indexes are rebuilt afterwards (their layout changed with
//!   it). Two contacts that the new rules make one are reported, never merged: the later
//!   keeps its old external id (reachable as `contact_<n>`), or stays out of the email
//!   index (its email kept in its record). `contactd check` lists them too.
//!
//! The work is split into transactions of [`BATCH`] contacts. Every step can be done
//! again without harm (a copied record is copied again, a sealed record is rewritten as
//! it is, an NFC id stays), so a stop part-way leaves the old schema version recorded
//! and the next open does it all again.

use std::ops::Bound;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::codec::{
    decode_contact, decode_legacy_agent, decode_legacy_attribute, decode_legacy_contact,
    decode_legacy_key, encode_agent, encode_attribute, encode_contact, encode_key,
};
use super::tables::{
    AGENTS, API_KEYS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, CUSTOM_ATTRIBUTES,
};
use super::StoreError;
use crate::domain::ids;
use crate::domain::phone::PhoneRules;

/// Schema 4 and older: `(agent_id, external_id)` → contact record.
pub const LEGACY_CONTACTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("contacts");
/// Schema 4 and older: `(agent_id, contact number)` → external_id.
pub const LEGACY_CONTACTS_BY_ID: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("contacts_by_id");

/// Contacts per upgrade transaction.
const BATCH: usize = 10_000;

/// What the upgrade found that it could not carry over as the rules now want.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collisions {
    /// One line per collision.
    pub lines: Vec<String>,
}

/// Upgrades a data dir of schema version `from` to the current one.
pub fn run(db: &Database, from: u64, phone: &PhoneRules) -> Result<Collisions, StoreError> {
    to_numbered(db)?;
    let collisions = if from < 4 {
        to_sealed_nfc(db)?
    } else {
        Collisions::default()
    };
    if from < 6 {
        to_phone_identity(db, phone)?;
    }
    Ok(collisions)
}

/// Rewrites every contact record in the current version with its phone number read
/// under `phone` (the E.164 form records before schema 6 lacked), [`BATCH`] contacts
/// per transaction. The indexes are rebuilt after the upgrade, with the numbers.
fn to_phone_identity(db: &Database, phone: &PhoneRules) -> Result<(), StoreError> {
    let mut after: Option<(String, u64)> = None;
    loop {
        let rows = {
            let txn = db.begin_read()?;
            let table = txn.open_table(CONTACTS)?;
            let range = match &after {
                Some((agent, n)) => table.range::<(&str, u64)>((
                    Bound::Excluded((agent.as_str(), *n)),
                    Bound::Unbounded,
                ))?,
                None => table.range::<(&str, u64)>(..)?,
            };
            let mut rows = Vec::with_capacity(BATCH);
            for row in range.take(BATCH) {
                let (key, value) = row?;
                let (agent, n) = key.value();
                rows.push((agent.to_owned(), n, value.value().to_vec()));
            }
            rows
        };
        let Some((agent, n, _)) = rows.last() else {
            return Ok(());
        };
        after = Some((agent.clone(), *n));
        let txn = begin(db)?;
        {
            let mut contacts = txn.open_table(CONTACTS)?;
            for (agent, n, bytes) in &rows {
                let mut contact = decode_contact(agent, bytes)?;
                contact.phone = contact.phonenumber.as_deref().and_then(|p| phone.e164(p));
                contacts.insert(
                    (agent.as_str(), *n),
                    encode_contact(agent, &contact).as_slice(),
                )?;
            }
        }
        txn.commit()?;
    }
}

/// Moves every contact record from [`LEGACY_CONTACTS`] to [`CONTACTS`] under its
/// contact number, indexes its external id, and then drops the old tables. A data dir
/// without them (a salvaged copy, written in the current layout) has nothing to move.
pub fn to_numbered(db: &Database) -> Result<(), StoreError> {
    match db.begin_read()?.open_table(LEGACY_CONTACTS) {
        Ok(_) => {}
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let mut after: Option<(String, String)> = None;
    let mut done = 0u64;
    loop {
        let rows = {
            let txn = db.begin_read()?;
            let table = txn.open_table(LEGACY_CONTACTS)?;
            let range = match &after {
                Some((agent, ext)) => table.range::<(&str, &str)>((
                    Bound::Excluded((agent.as_str(), ext.as_str())),
                    Bound::Unbounded,
                ))?,
                None => table.range::<(&str, &str)>(..)?,
            };
            let mut rows = Vec::with_capacity(BATCH);
            for row in range.take(BATCH) {
                let (key, value) = row?;
                let (agent, ext) = key.value();
                rows.push((agent.to_owned(), ext.to_owned(), value.value().to_vec()));
            }
            rows
        };
        let Some((agent, ext, _)) = rows.last() else {
            break;
        };
        after = Some((agent.clone(), ext.clone()));
        let txn = begin(db)?;
        {
            let mut contacts = txn.open_table(CONTACTS)?;
            let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
            for (agent, ext, bytes) in &rows {
                let n = decode_legacy_contact(agent, bytes)?.id;
                if let Some(held) = by_number(&contacts, agent, n)? {
                    if held != *ext {
                        return Err(StoreError::Corrupt(format!(
                            "contacts {agent}/{held} and {agent}/{ext} both have the number {n}"
                        )));
                    }
                }
                contacts.insert((agent.as_str(), n), bytes.as_slice())?;
                by_ext.insert((agent.as_str(), ext.as_str()), n)?;
            }
        }
        txn.commit()?;
        done += rows.len() as u64;
        if done % 100_000 < BATCH as u64 {
            tracing::info!(contacts = done, "upgrading the data dir: contacts moved");
        }
    }
    let txn = begin(db)?;
    txn.delete_table(LEGACY_CONTACTS)?;
    txn.delete_table(LEGACY_CONTACTS_BY_ID)?;
    txn.commit()?;
    Ok(())
}

/// The external id of the record stored as contact `n`, of any version.
fn by_number(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    agent: &str,
    n: u64,
) -> Result<Option<String>, StoreError> {
    contacts
        .get((agent, n))?
        .map(|bytes| Ok(decode_legacy_contact(agent, bytes.value())?.external_id))
        .transpose()
}

/// Rewrites every record in the current layout (see the module doc).
pub fn to_sealed_nfc(db: &Database) -> Result<Collisions, StoreError> {
    let mut collisions = Collisions::default();
    reseal_small_tables(db)?;
    let mut after: Option<(String, u64)> = None;
    let mut done = 0u64;
    loop {
        let keys = next_numbers(db, after.as_ref())?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        let txn = begin(db)?;
        for (agent, n) in &keys {
            rewrite_contact(&txn, agent, *n, &mut collisions)?;
        }
        txn.commit()?;
        done += keys.len() as u64;
        if done % 100_000 < BATCH as u64 {
            tracing::info!(
                contacts = done,
                "upgrading the data dir: contacts rewritten"
            );
        }
        after = Some(last);
    }
    rebuild_email_index(db, &mut collisions)?;
    for line in &collisions.lines {
        tracing::warn!("upgrade: {line}");
    }
    Ok(collisions)
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// Agents, keys and attribute definitions, sealed.
fn reseal_small_tables(db: &Database) -> Result<(), StoreError> {
    let txn = begin(db)?;
    {
        let mut agents = txn.open_table(AGENTS)?;
        let mut all = Vec::new();
        for row in agents.iter()? {
            let (id, bytes) = row?;
            all.push(decode_legacy_agent(id.value(), bytes.value())?);
        }
        for agent in all {
            agents.insert(agent.id.as_str(), encode_agent(&agent).as_slice())?;
        }
        let mut keys = txn.open_table(API_KEYS)?;
        let mut all = Vec::new();
        for row in keys.iter()? {
            let (digest, bytes) = row?;
            all.push(decode_legacy_key(digest.value(), bytes.value())?);
        }
        for key in all {
            keys.insert(key.digest.as_slice(), encode_key(&key).as_slice())?;
        }
        let mut attributes = txn.open_table(CUSTOM_ATTRIBUTES)?;
        let mut all = Vec::new();
        for row in attributes.iter()? {
            let (key, bytes) = row?;
            let (agent, name) = key.value();
            all.push((
                agent.to_owned(),
                decode_legacy_attribute(agent, name, bytes.value())?,
            ));
        }
        for (agent, def) in all {
            attributes.insert(
                (agent.as_str(), def.name.as_str()),
                encode_attribute(&agent, &def).as_slice(),
            )?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// The next [`BATCH`] contact numbers after `after`.
fn next_numbers(
    db: &Database,
    after: Option<&(String, u64)>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(CONTACTS)?;
    let range = match after {
        Some((agent, n)) => {
            table.range::<(&str, u64)>((Bound::Excluded((agent.as_str(), *n)), Bound::Unbounded))?
        }
        None => table.range::<(&str, u64)>(..)?,
    };
    let mut keys = Vec::with_capacity(BATCH);
    for row in range.take(BATCH) {
        let (key, _) = row?;
        let (agent, n) = key.value();
        keys.push((agent.to_owned(), n));
    }
    Ok(keys)
}

/// Rewrites contact `n` sealed, under its NFC external id when that is free.
fn rewrite_contact(
    txn: &WriteTransaction,
    agent: &str,
    n: u64,
    collisions: &mut Collisions,
) -> Result<(), StoreError> {
    let mut contacts = txn.open_table(CONTACTS)?;
    let Some(bytes) = contacts.get((agent, n))?.map(|b| b.value().to_vec()) else {
        return Ok(());
    };
    let mut contact = decode_legacy_contact(agent, &bytes)?;
    let ext = contact.external_id.clone();
    // An id today's rules refuse (a control or invisible character, surrounding
    // spaces) is kept as it is: it was valid when written.
    let canonical = ids::external_id(&ext).unwrap_or_else(|_| ext.clone());
    if canonical != ext {
        let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
        if by_ext.get((agent, canonical.as_str()))?.is_some() {
            collisions.lines.push(format!(
                "agent {agent}: contact_{n} keeps its external id {ext:?}: its NFC spelling {canonical:?} belongs to another contact"
            ));
        } else {
            by_ext.remove((agent, ext.as_str()))?;
            by_ext.insert((agent, canonical.as_str()), n)?;
            contact.external_id = canonical;
        }
    }
    contacts.insert((agent, n), encode_contact(agent, &contact).as_slice())?;
    Ok(())
}

/// Builds the email index anew under today's email keys; of two contacts whose emails
/// are now one, the lower contact number keeps it.
fn rebuild_email_index(db: &Database, collisions: &mut Collisions) -> Result<(), StoreError> {
    let txn = begin(db)?;
    txn.open_table(CONTACTS_BY_EMAIL)?.retain(|_, _| false)?;
    txn.commit()?;
    let mut after: Option<(String, u64)> = None;
    loop {
        let keys = next_numbers(db, after.as_ref())?;
        let Some(last) = keys.last().cloned() else {
            return Ok(());
        };
        let txn = begin(db)?;
        {
            let contacts = txn.open_table(CONTACTS)?;
            let by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
            let mut emails = txn.open_table(CONTACTS_BY_EMAIL)?;
            for (agent, n) in &keys {
                let agent = agent.as_str();
                let Some(bytes) = contacts.get((agent, *n))? else {
                    continue;
                };
                let contact = decode_legacy_contact(agent, bytes.value())?;
                let Some(key) = contact.email_key() else {
                    continue;
                };
                let holder = emails
                    .get((agent, key.as_str()))?
                    .map(|v| v.value().to_owned());
                let keep_new = match &holder {
                    None => true,
                    Some(other) => {
                        let other_id = by_ext
                            .get((agent, other.as_str()))?
                            .map_or(u64::MAX, |v| v.value());
                        let (kept, left) = if contact.id < other_id {
                            (&contact.external_id, other)
                        } else {
                            (other, &contact.external_id)
                        };
                        collisions.lines.push(format!(
                            "agent {agent}: the emails of {kept:?} and {left:?} are one under Unicode folding ({key}); {kept:?} keeps it in the email index, change the other"
                        ));
                        contact.id < other_id
                    }
                };
                if keep_new {
                    emails.insert((agent, key.as_str()), contact.external_id.as_str())?;
                }
            }
        }
        txn.commit()?;
        after = Some(last);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::query::Query;
    use crate::domain::{Agent, Contact};
    use crate::store::codec::{decode_contact, encode_agent};
    use crate::store::tables::{META, META_INITIALIZED, META_NEXT_CONTACT_ID, META_SCHEMA_VERSION};
    use crate::store::Start;
    use crate::store::{RedbStore, Store, DB_FILE};
    use redb::TableHandle;

    /// A contact record as schema 3 wrote it: version 2, unsealed.
    fn legacy(contact: &Contact) -> Vec<u8> {
        crate::store::codec::encode_legacy_contact("default", contact, false)
    }

    fn person(id: u64, ext: &str, email: &str) -> Contact {
        Contact {
            email: Some(email.into()),
            external_id: ext.into(),
            ..crate::store::samples::named(id, "x")
        }
    }

    /// A schema-3 data dir holding `people`, its email index keyed the old way.
    fn schema_3(dir: &std::path::Path, people: &[Contact]) {
        let db = Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_SCHEMA_VERSION, 3).unwrap();
            meta.insert(META_INITIALIZED, 1).unwrap();
            meta.insert(META_NEXT_CONTACT_ID, people.len() as u64 + 1)
                .unwrap();
            let agent = Agent {
                id: "default".into(),
                name: "d".into(),
                created_at: 0,
                contact_count: people.len() as u64,
            };
            txn.open_table(AGENTS)
                .unwrap()
                .insert("default", encode_agent(&agent).as_slice())
                .unwrap();
            let mut contacts = txn.open_table(LEGACY_CONTACTS).unwrap();
            let mut by_id = txn.open_table(LEGACY_CONTACTS_BY_ID).unwrap();
            let mut emails = txn.open_table(CONTACTS_BY_EMAIL).unwrap();
            for c in people {
                let ext = c.external_id.as_str();
                contacts
                    .insert(("default", ext), legacy(c).as_slice())
                    .unwrap();
                by_id.insert(("default", c.id), ext).unwrap();
                let old_key = c.email.as_deref().unwrap().to_lowercase();
                emails.insert(("default", old_key.as_str()), ext).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn the_upgrade_seals_records_moves_ids_to_nfc_and_reports_collisions() {
        let dir = tempfile::tempdir().unwrap();
        schema_3(
            dir.path(),
            &[
                person(1, "Jose\u{301}", "STRASSE@x.de"),
                person(2, "Jos\u{e9}", "stra\u{df}e@x.de"),
                person(3, "Zoe\u{308}", "z@b\u{fc}cher.de"),
            ],
        );
        let store = RedbStore::open(dir.path()).unwrap();
        // Moved to its NFC spelling, which was free.
        let zoe = store.contact("default", "Zo\u{eb}").unwrap().unwrap();
        assert_eq!((zoe.id, zoe.external_id.as_str()), (3, "Zo\u{eb}"));
        // Its NFC spelling was taken: kept apart, reachable by number.
        let kept = store.contact("default", "contact_1").unwrap().unwrap();
        assert_eq!(kept.external_id, "Jose\u{301}");
        assert_eq!(
            store.contact("default", "Jos\u{e9}").unwrap().unwrap().id,
            2
        );
        // Two emails that are one now: the lower number keeps the index entry.
        let params = vec![("filter[email]".to_owned(), "STRASSE@X.DE".to_owned())];
        let query = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let page = store
            .query_contacts("default", &query, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        let params = vec![("filter[email]".to_owned(), "z@xn--bcher-kva.de".to_owned())];
        let query = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let page = store
            .query_contacts("default", &query, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.len(), 1, "the email index is keyed anew");
        // Every record sealed; the collisions are what check reports, nothing else.
        let txn = store.db_for_tests().begin_read().unwrap();
        for row in txn.open_table(CONTACTS).unwrap().iter().unwrap() {
            decode_contact("default", row.unwrap().1.value()).unwrap();
        }
        let report = store.check().unwrap();
        assert_eq!(report.damage_count, 0, "{:?}", report.problems);
        let problems = report.problems.join("\n");
        assert!(problems.contains("not in NFC"), "{problems}");
        assert!(
            problems.contains("two contacts with one email"),
            "{problems}"
        );
        assert_eq!(report.problem_count, 2, "{problems}");
    }

    /// A data dir the schema-4 release left behind when it was killed (three writes
    /// in its log after the last checkpoint: a delete, a rename, an update and a new
    /// contact) opens: it is repaired, moved to the numbered layout and its log applied,
    /// and every read and `check` agree.
    #[test]
    fn a_killed_schema_4_data_dir_opens_upgraded_with_its_log_applied() {
        let dir = tempfile::tempdir().unwrap();
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/schema4");
        for entry in std::fs::read_dir(golden).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let get = |id: &str| store.contact("default", id).unwrap();
        let ada = get("ada").unwrap();
        assert_eq!((ada.id, ada.name.as_deref()), (1, Some("Ada King")));
        assert_eq!(ada.custom_attributes.len(), 2, "{ada:?}");
        assert!(get("alan").is_none() && get("contact_3").is_none());
        assert!(get("edsger").is_none());
        let ewd = get("contact_4").unwrap();
        assert_eq!(
            (ewd.external_id.as_str(), ewd.email.as_deref()),
            ("ewd", Some("ewd@example.com"))
        );
        let page = store.list_contacts("default", 0, 10).unwrap();
        let ids: Vec<u64> = page.contacts.iter().map(|c| c.id).collect();
        assert_eq!((ids, page.total), (vec![1, 2, 4, 5, 6], 5));
        let params = vec![("filter[email]".to_owned(), "EWD@example.com".to_owned())];
        let query = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let found = store
            .query_contacts("default", &query, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(found.contacts, vec![ewd]);
        let report = store.check().unwrap();
        assert_eq!(
            (report.contacts, report.problem_count, report.damage_count),
            (5, 0, 0),
            "{:?}",
            report.problems
        );
        let txn = store.db_for_tests().begin_read().unwrap();
        for gone in [LEGACY_CONTACTS.name(), LEGACY_CONTACTS_BY_ID.name()] {
            assert!(
                !txn.list_tables().unwrap().any(|t| t.name() == gone),
                "{gone} is still there"
            );
        }
    }

    /// A data dir the schema-5 release left when it was killed (a new contact and a
    /// delete in its log) opens upgraded: every phone number read under the configured
    /// region and indexed, the log applied, and `check` clean.
    #[test]
    fn a_killed_schema_5_data_dir_gets_phone_identity() {
        let dir = tempfile::tempdir().unwrap();
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/schema5");
        for entry in std::fs::read_dir(golden).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let options = crate::store::StoreOptions {
            phone: PhoneRules {
                default_region: Some("IN".parse().unwrap()),
            },
            ..Default::default()
        };
        let store = RedbStore::open_with(dir.path(), options).unwrap();
        let get = |id: &str| store.contact("default", id).unwrap();
        assert!(get("alan").is_none(), "the logged delete is applied");
        let phones: Vec<Option<String>> = ["ada", "grace", "edsger"]
            .iter()
            .map(|ext| get(ext).unwrap().phone)
            .collect();
        assert_eq!(
            phones,
            [
                Some("+442079460958".to_owned()),
                Some("+919179897123".to_owned()),
                Some("+31205550101".to_owned())
            ]
        );
        let rules = PhoneRules {
            default_region: Some("IN".parse().unwrap()),
        };
        for (sent, want) in [("0044 20 7946 0958", "ada"), ("09179897123", "grace")] {
            let params = vec![("filter[phonenumber]".to_owned(), sent.to_owned())];
            let query = Query::parse(&params, &Default::default(), &rules).unwrap();
            let page = store
                .query_contacts("default", &query, &Start::Offset(0), 10)
                .unwrap();
            let found: Vec<&str> = page
                .contacts
                .iter()
                .map(|c| c.external_id.as_str())
                .collect();
            assert_eq!(found, [want], "{sent}");
        }
        let report = store.check().unwrap();
        assert_eq!(
            (report.contacts, report.problem_count, report.damage_count),
            (3, 0, 0),
            "{:?}",
            report.problems
        );
    }

    /// Salvage reads a source that keeps its contacts by external id and writes the
    /// copy in the current layout; opening the copy still runs the schema-3 upgrade.
    #[test]
    fn salvage_of_an_old_layout_gives_a_current_one() {
        let dir = tempfile::tempdir().unwrap();
        schema_3(
            dir.path(),
            &[
                person(1, "ada", "ADA@x.de"),
                person(2, "Zoe\u{308}", "z@x.de"),
            ],
        );
        let out = dir.path().join("copy");
        let report = crate::store::salvage(dir.path(), &out, 0, &|_| {}).unwrap();
        assert_eq!(
            (report.contacts, report.lost_contacts),
            (2, 0),
            "{report:?}"
        );
        let store = RedbStore::open(&out).unwrap();
        let zoe = store.contact("default", "Zo\u{eb}").unwrap().unwrap();
        assert_eq!(zoe.id, 2);
        let params = vec![("filter[email]".to_owned(), "ada@x.de".to_owned())];
        let query = Query::parse(&params, &Default::default(), &Default::default()).unwrap();
        let page = store
            .query_contacts("default", &query, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        let report = store.check().unwrap();
        assert_eq!(
            (report.contacts, report.problem_count, report.damage_count),
            (2, 0, 0),
            "{:?}",
            report.problems
        );
    }
}
