//! Upgrading a data dir written by an older build, at open, before anything else reads
//! it. Schema 4 seals every record with a checksum (see `codec`), stores external ids
//! in Unicode NFC, and keys the email index by `contact::email_key` (NFC, full case
//! folding, IDNA domains). So every record is rewritten, an external id whose NFC
//! spelling differs is moved to it, and the email index is built anew; the sort and
//! word indexes are rebuilt afterwards (their layout changed with it).
//!
//! Two contacts that the new rules make one are reported, never merged: the later
//! keeps its old external id (reachable as `contact_<n>`), or stays out of the email
//! index (its email kept in its record). `contactd check` lists them too.
//!
//! The work is split into transactions of [`BATCH`] contacts. Every step can be done
//! again without harm (a sealed record is rewritten as it is, an NFC id stays), so a
//! stop part-way leaves the old schema version recorded and the next open does it all
//! again.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{
    decode_legacy_agent, decode_legacy_attribute, decode_legacy_contact, decode_legacy_key,
    encode_agent, encode_attribute, encode_contact, encode_key,
};
use super::tables::{
    AGENTS, API_KEYS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID, CUSTOM_ATTRIBUTES,
};
use super::StoreError;
use crate::domain::ids;

/// Contacts per upgrade transaction.
const BATCH: usize = 10_000;

/// What the upgrade found that it could not carry over as the rules now want.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collisions {
    /// One line per collision.
    pub lines: Vec<String>,
}

/// Rewrites every record in the current layout (see the module doc).
pub fn to_sealed_nfc(db: &Database) -> Result<Collisions, StoreError> {
    let mut collisions = Collisions::default();
    reseal_small_tables(db)?;
    let mut after: Option<(String, String)> = None;
    let mut done = 0u64;
    loop {
        let keys = next_keys(db, after.as_ref())?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        let txn = begin(db)?;
        for (agent, ext) in &keys {
            rewrite_contact(&txn, agent, ext, &mut collisions)?;
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

/// The next [`BATCH`] contact keys after `after`.
fn next_keys(
    db: &Database,
    after: Option<&(String, String)>,
) -> Result<Vec<(String, String)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(CONTACTS)?;
    let range = match after {
        Some((agent, ext)) => table.range::<(&str, &str)>((
            std::ops::Bound::Excluded((agent.as_str(), ext.as_str())),
            std::ops::Bound::Unbounded,
        ))?,
        None => table.range::<(&str, &str)>(..)?,
    };
    let mut keys = Vec::with_capacity(BATCH);
    for row in range.take(BATCH) {
        let (key, _) = row?;
        let (agent, ext) = key.value();
        keys.push((agent.to_owned(), ext.to_owned()));
    }
    Ok(keys)
}

/// Rewrites one contact sealed, under its NFC external id when that is free.
fn rewrite_contact(
    txn: &WriteTransaction,
    agent: &str,
    ext: &str,
    collisions: &mut Collisions,
) -> Result<(), StoreError> {
    let mut contacts = txn.open_table(CONTACTS)?;
    let Some(bytes) = contacts.get((agent, ext))?.map(|b| b.value().to_vec()) else {
        return Ok(());
    };
    let mut contact = decode_legacy_contact(agent, &bytes)?;
    // An id today's rules refuse (a control or invisible character, surrounding
    // spaces) is kept as it is: it was valid when written.
    let canonical = ids::external_id(ext).unwrap_or_else(|_| ext.to_owned());
    if canonical != ext {
        if contacts.get((agent, canonical.as_str()))?.is_some() {
            collisions.lines.push(format!(
                "agent {agent}: contact_{} keeps its external id {ext:?}: its NFC spelling {canonical:?} belongs to another contact",
                contact.id
            ));
        } else {
            contacts.remove((agent, ext))?;
            contact.external_id.clone_from(&canonical);
            txn.open_table(CONTACTS_BY_ID)?
                .insert((agent, contact.id), canonical.as_str())?;
        }
    }
    contacts.insert(
        (agent, contact.external_id.as_str()),
        encode_contact(agent, &contact).as_slice(),
    )?;
    Ok(())
}

/// Builds the email index anew under today's email keys; of two contacts whose emails
/// are now one, the lower contact number keeps it.
fn rebuild_email_index(db: &Database, collisions: &mut Collisions) -> Result<(), StoreError> {
    let txn = begin(db)?;
    txn.open_table(CONTACTS_BY_EMAIL)?.retain(|_, _| false)?;
    txn.commit()?;
    let mut after: Option<(String, String)> = None;
    loop {
        let keys = next_keys(db, after.as_ref())?;
        let Some(last) = keys.last().cloned() else {
            return Ok(());
        };
        let txn = begin(db)?;
        {
            let contacts = txn.open_table(CONTACTS)?;
            let mut emails = txn.open_table(CONTACTS_BY_EMAIL)?;
            for (agent, ext) in &keys {
                let Some(bytes) = contacts.get((agent.as_str(), ext.as_str()))? else {
                    continue;
                };
                let contact = decode_legacy_contact(agent, bytes.value())?;
                let Some(key) = contact.email_key() else {
                    continue;
                };
                let holder = emails
                    .get((agent.as_str(), key.as_str()))?
                    .map(|v| v.value().to_owned());
                let keep_new = match &holder {
                    None => true,
                    Some(other) => {
                        let other_id = contacts
                            .get((agent.as_str(), other.as_str()))?
                            .map(|b| decode_legacy_contact(agent, b.value()))
                            .transpose()?
                            .map_or(u64::MAX, |c| c.id);
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
                    emails.insert((agent.as_str(), key.as_str()), ext.as_str())?;
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

    /// A contact record as schema 3 wrote it: version 2, unsealed.
    fn legacy(contact: &Contact) -> Vec<u8> {
        let mut bytes = encode_contact("default", contact);
        bytes.truncate(bytes.len() - 4);
        bytes[0] = 2;
        bytes
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
            let mut contacts = txn.open_table(CONTACTS).unwrap();
            let mut by_id = txn.open_table(CONTACTS_BY_ID).unwrap();
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
        let query = Query::parse(&params, &Default::default()).unwrap();
        let page = store
            .query_contacts("default", &query, &Start::Offset(0), 10)
            .unwrap();
        assert_eq!(page.contacts.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        let params = vec![("filter[email]".to_owned(), "z@xn--bcher-kva.de".to_owned())];
        let query = Query::parse(&params, &Default::default()).unwrap();
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
}
