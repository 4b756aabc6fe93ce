//! The index journal: what a write transaction records, in the same transaction, of
//! the contacts it changed, so that index changes waiting in memory (not yet in a run)
//! survive a crash (see `lsm::unlogged`).
//!
//! An entry lists, for each contact changed, its agent, its number and its record as it
//! was before the transaction (none for a new contact). The index entries before the
//! transaction follow from that record, and those after from the contact as stored
//! now; their difference is what the entry's log block holds. When the store is opened,
//! [`replay`] computes that difference for every entry left and writes it to the log.
//!
//! An entry is `2` (the format), then per contact: the agent's length (u16) and bytes,
//! the contact number (u64), and the length (u32, `u32::MAX` for none) and bytes of its
//! earlier record; integers little-endian; then its checksum (see `store::seal`).

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::entries::{self, Pairs};
use super::lsm::block::Block;
use super::lsm::unlogged::INDEX_JOURNAL;
use super::lsm::{Changes, IndexLimits};
use crate::domain::Contact;
use crate::store::codec::{decode_contact, encode_contact};
use crate::store::contacts::contact_by_number;
use crate::store::seal::{seal, unseal};
use crate::store::tables::CONTACTS;
use crate::store::StoreError;

const FORMAT: u8 = 2;
const NONE: u32 = u32::MAX;

/// The journal entry of one transaction, being written.
#[derive(Default)]
pub struct Entry {
    bytes: Vec<u8>,
}

impl Entry {
    /// Records the contacts of `pairs` (of `agent`) that changed.
    pub fn record(&mut self, agent: &str, pairs: &Pairs) -> Result<(), StoreError> {
        let agent_len = u16::try_from(agent.len())
            .map_err(|_| StoreError::Backend("an agent id too long to journal".into()))?;
        for (before, after) in pairs {
            if before == after {
                continue;
            }
            let Some(id) = after.as_ref().or(before.as_ref()).map(|c| c.id) else {
                continue;
            };
            if self.bytes.is_empty() {
                self.bytes.push(FORMAT);
            }
            self.bytes.extend_from_slice(&agent_len.to_le_bytes());
            self.bytes.extend_from_slice(agent.as_bytes());
            self.bytes.extend_from_slice(&id.to_le_bytes());
            match before {
                Some(contact) => {
                    let record = encode_contact(agent, contact);
                    let len = u32::try_from(record.len())
                        .ok()
                        .filter(|&n| n != NONE)
                        .ok_or_else(|| StoreError::Backend("a contact too large".into()))?;
                    self.bytes.extend_from_slice(&len.to_le_bytes());
                    self.bytes.extend_from_slice(&record);
                }
                None => self.bytes.extend_from_slice(&NONE.to_le_bytes()),
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The entry as stored: sealed.
    pub fn sealed(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        seal(&mut bytes);
        bytes
    }
}

/// One recorded contact: its agent, number and earlier record.
pub type Recorded = (String, u64, Option<Contact>);

/// The contacts an entry records, in the order recorded.
pub fn decode(sealed: &[u8]) -> Result<Vec<Recorded>, StoreError> {
    let bytes = unseal(sealed, "an index journal entry")?;
    let corrupt = || StoreError::Corrupt("a malformed index journal entry".into());
    let mut rest = match bytes.split_first() {
        None => return Ok(Vec::new()),
        Some((&FORMAT, rest)) => rest,
        Some((&other, _)) => {
            return Err(StoreError::Corrupt(format!(
                "index journal format {other} is not known to this build"
            )))
        }
    };
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        if rest.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut out = Vec::new();
    while let Ok(b) = take(2) {
        let len = u16::from_le_bytes([b[0], b[1]]) as usize;
        let agent = std::str::from_utf8(take(len)?)
            .map_err(|_| corrupt())?
            .to_owned();
        let id = u64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?);
        let before = if len == NONE {
            None
        } else {
            Some(decode_contact(&agent, take(len as usize)?)?)
        };
        out.push((agent, id, before));
    }
    if !rest.is_empty() {
        return Err(corrupt());
    }
    Ok(out)
}

/// Writes to the index log the changes of every journal entry left (by a process that
/// stopped before the next transaction logged them) and empties the journal. Returns
/// how many contacts it indexed again.
pub fn replay(txn: &WriteTransaction, limits: IndexLimits) -> Result<usize, StoreError> {
    let mut entries = Vec::new();
    for row in txn.open_table(INDEX_JOURNAL)?.iter()? {
        entries.push(decode(row?.1.value())?);
    }
    if entries.is_empty() {
        return Ok(0);
    }
    let (changes, contacts) = {
        let contacts = txn.open_table(CONTACTS)?;
        changes_since(&contacts, entries)?
    };
    changes.commit(txn, limits)?;
    txn.open_table(INDEX_JOURNAL)?.retain(|_, _| false)?;
    Ok(contacts)
}

/// The log block of one journal entry (`None`: no index entry changed), computed from
/// the contacts as `txn` has them now: for a transaction whose block the index worker
/// failed to build. Later changes of the same contacts are in later blocks, which
/// remove or keep what this one adds.
pub fn block_of(txn: &WriteTransaction, entry: &[u8]) -> Result<Option<Block>, StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let (changes, _) = changes_since(&contacts, vec![decode(entry)?])?;
    Ok(changes.into_block())
}

/// The index changes of every journal entry in a read snapshot, as one block (`None`:
/// no entry, or no index entry changed): what a store opened on it would index again,
/// for a reader that cannot write (`contactd check`).
pub fn pending_block(txn: &ReadTransaction) -> Result<Option<Block>, StoreError> {
    let journal = match txn.open_table(INDEX_JOURNAL) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut entries = Vec::new();
    for row in journal.iter()? {
        entries.push(decode(row?.1.value())?);
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let contacts = txn.open_table(CONTACTS)?;
    let (changes, _) = changes_since(&contacts, entries)?;
    Ok(changes.into_block())
}

/// The index changes from the records journaled in `entries` (oldest first) to the
/// contacts as the tables have them, and how many contacts they cover.
fn changes_since(
    contacts: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    entries: Vec<Vec<Recorded>>,
) -> Result<(Changes, usize), StoreError> {
    // Per contact, the record before its first change: the index has its entries.
    let mut first: HashMap<(String, u64), Option<Contact>> = HashMap::new();
    let mut order = Vec::new();
    for (agent, id, before) in entries.into_iter().flatten() {
        if let std::collections::hash_map::Entry::Vacant(slot) = first.entry((agent, id)) {
            order.push(slot.key().clone());
            slot.insert(before);
        }
    }
    let mut per_agent: Vec<(String, Pairs)> = Vec::new();
    for key in &order {
        let before = first.remove(key).flatten();
        let (agent, id) = key;
        let now = contact_by_number(contacts, agent, *id)?;
        match per_agent.last_mut() {
            Some((last, pairs)) if last == agent => pairs.push((before, now)),
            _ => per_agent.push((agent.clone(), vec![(before, now)])),
        }
    }
    let mut changes = Changes::default();
    for (agent, pairs) in &per_agent {
        changes.add_sorted(entries::compute(agent, pairs));
    }
    Ok((changes, order.len()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::samples::named as contact;
    use proptest::prelude::*;

    proptest! {
        /// What is recorded decodes back, without the contacts left unchanged.
        #[test]
        fn an_entry_reads_back_what_was_recorded(
            writes in proptest::collection::vec(
                (prop_oneof![Just("a"), Just("agent-ü")],
                 proptest::collection::vec((0u64..5, any::<bool>(), any::<bool>()), 0..6)),
                0..5),
        ) {
            let mut entry = Entry::default();
            let mut want = Vec::new();
            for (agent, changes) in &writes {
                let pairs: Pairs = changes
                    .iter()
                    .map(|&(id, had, has)| {
                        let before = had.then(|| contact(id, "Ada"));
                        let after = has.then(|| contact(id, "Grace"));
                        (before, after)
                    })
                    .collect();
                for (before, after) in &pairs {
                    if before != after {
                        let id = after.as_ref().or(before.as_ref()).unwrap().id;
                        want.push(((*agent).to_owned(), id, before.clone()));
                    }
                }
                entry.record(agent, &pairs).unwrap();
            }
            prop_assert_eq!(entry.is_empty(), want.is_empty());
            if !want.is_empty() {
                prop_assert_eq!(decode(&entry.sealed()).unwrap(), want);
            }
        }
    }

    #[test]
    fn a_truncated_entry_is_an_error() {
        let mut entry = Entry::default();
        entry
            .record("a", &vec![(Some(contact(1, "Ada")), None)])
            .unwrap();
        let bytes = entry.sealed();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9]).is_err());
    }
}
