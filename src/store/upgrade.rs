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
    let mut contact = decode_legacy_contact(&bytes)?;
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
        encode_contact(&contact).as_slice(),
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
                let contact = decode_legacy_contact(bytes.value())?;
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
                            .map(|b| decode_legacy_contact(b.value()))
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
