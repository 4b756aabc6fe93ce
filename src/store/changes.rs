//! The change feed: every committed change to a contact gets the agent's next sequence
//! number and an entry in `changes`, written by the same transaction as the change
//! itself (see `contacts::Tables::apply`), so the feed holds exactly the committed
//! changes, in commit order, without gaps. Entries past the retention are pruned from
//! the front of each agent's range; `change_seqs` keeps the last number given out.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::check::CheckReport;
use super::codec::{decode_change, encode_change};
use super::damage::unpanic;
use super::redo::Op;
use super::tables::{CHANGES, CHANGE_SEQS};
use super::webhooks::{contact_data, Outbox};
use super::writer::Txn;
use super::StoreError;
use crate::domain::change::changed_fields;
use crate::domain::{Change, ChangeKind, Contact};

/// A change as stored: the contact after it is its record as `contact_records` holds
/// it (sealed for the agent), so decoding it is decoding a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub kind: u8,
    pub at: i64,
    pub external_id: String,
    pub changed: Vec<String>,
    pub contact: Option<Vec<u8>>,
}

const CREATED: u8 = 0;
const UPDATED: u8 = 1;
const DELETED: u8 = 2;

impl ChangeRecord {
    pub fn into_change(self, agent: &str, seq: u64) -> Result<Change, StoreError> {
        let kind = match self.kind {
            CREATED => ChangeKind::Created,
            UPDATED => ChangeKind::Updated,
            DELETED => ChangeKind::Deleted,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "change {agent}/{seq} has unknown kind {other}"
                )))
            }
        };
        let contact = self
            .contact
            .map(|bytes| super::codec::decode_contact(agent, &bytes))
            .transpose()?;
        Ok(Change {
            seq,
            kind,
            at: self.at,
            external_id: self.external_id,
            changed: self.changed,
            contact,
        })
    }
}

/// A contact's change as `Tables::apply` writes it: before, after, and the after
/// record it stored (`None` when it stored none: a delete).
pub struct Written<'a> {
    pub before: Option<&'a Contact>,
    pub after: Option<&'a Contact>,
    pub record: Option<&'a [u8]>,
}

/// Appends one entry per change that changed something, numbered after the agent's
/// last. Replaying the write again appends the same entries: the numbers and `at` come
/// from the data and the log record alone.
pub fn append<'a>(
    txn: &Txn,
    agent: &str,
    at: i64,
    written: impl IntoIterator<Item = Written<'a>>,
) -> Result<(), StoreError> {
    let mut outbox = Outbox::open(txn, agent, at)?;
    let mut seqs = txn.open_table(CHANGE_SEQS)?;
    let mut last = seqs.get(agent)?.map_or(0, |v| v.value());
    let first = last;
    let mut changes = txn.open_table(CHANGES)?;
    for change in written {
        let (record, event) = match (change.before, change.after) {
            (None, Some(after)) => (
                ChangeRecord {
                    kind: CREATED,
                    at,
                    external_id: after.external_id.clone(),
                    changed: Vec::new(),
                    contact: change.record.map(<[u8]>::to_vec),
                },
                after,
            ),
            (Some(before), Some(after)) => {
                let changed = changed_fields(before, after);
                if changed.is_empty() {
                    continue;
                }
                (
                    ChangeRecord {
                        kind: UPDATED,
                        at,
                        external_id: after.external_id.clone(),
                        changed,
                        contact: change.record.map(<[u8]>::to_vec),
                    },
                    after,
                )
            }
            (Some(before), None) => (
                ChangeRecord {
                    kind: DELETED,
                    at,
                    external_id: before.external_id.clone(),
                    changed: Vec::new(),
                    contact: None,
                },
                before,
            ),
            (None, None) => continue,
        };
        last += 1;
        let bytes = encode_change(agent, last, &record);
        changes.insert((agent, last), bytes.as_slice())?;
        txn.derived_written(bytes.len() as u64);
        let seq = last;
        match record.kind {
            CREATED => outbox.push("contact.created", || {
                contact_data(event.to_json(), seq, None)
            }),
            UPDATED => outbox.push("contact.updated", || {
                contact_data(event.to_json(), seq, Some(&record.changed))
            }),
            _ => outbox.push("contact.deleted", || {
                contact_data(event.to_json(), seq, None)
            }),
        }
    }
    if last != first {
        seqs.insert(agent, last)?;
        txn.fed();
    }
    drop((changes, seqs));
    outbox.finish()
}

/// A page of an agent's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// The oldest sequence number still held (the last given out plus one when none
    /// is): asking for changes after anything below `oldest - 1` asks for pruned ones.
    pub oldest: u64,
    /// The last sequence number given out (0: none yet).
    pub last: u64,
}

/// Up to `limit` changes of `agent` numbered above `after`, in order.
pub fn page(
    txn: &ReadTransaction,
    agent: &str,
    after: u64,
    limit: usize,
) -> Result<ChangePage, StoreError> {
    let seqs = txn.open_table(CHANGE_SEQS)?;
    let last = seqs.get(agent)?.map_or(0, |v| v.value());
    let table = txn.open_table(CHANGES)?;
    let oldest = match table.range((agent, 0)..=(agent, u64::MAX))?.next() {
        Some(row) => row?.0.value().1,
        None => last + 1,
    };
    let mut changes = Vec::new();
    if after < last {
        let range = table.range::<(&str, u64)>((
            Bound::Excluded((agent, after)),
            Bound::Included((agent, u64::MAX)),
        ))?;
        for row in range.take(limit) {
            let (key, value) = row?;
            let seq = key.value().1;
            changes.push(decode_change(agent, seq, value.value())?.into_change(agent, seq)?);
        }
    }
    Ok(ChangePage {
        changes,
        oldest,
        last,
    })
}

/// Per agent, the last sequence number of its entries committed before `before` (Unix
/// seconds) and how many they are, at most `most` entries in all: what a prune removes.
pub fn expired(
    seqs: &impl ReadableTable<&'static str, u64>,
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    before: i64,
    most: usize,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut found = Vec::new();
    let mut budget = most;
    for row in seqs.iter()? {
        if budget == 0 {
            break;
        }
        let agent = row?.0.value().to_owned();
        let mut through = None;
        let mut count = 0;
        for entry in table.range((agent.as_str(), 0)..=(agent.as_str(), u64::MAX))? {
            let (key, value) = entry?;
            let seq = key.value().1;
            if budget == 0 || decode_change(&agent, seq, value.value())?.at >= before {
                break;
            }
            through = Some(seq);
            count += 1;
            budget -= 1;
        }
        if let Some(seq) = through {
            found.push((agent, seq, count));
        }
    }
    Ok(found)
}

/// [`expired`] in a read snapshot.
pub fn expired_in(
    txn: &ReadTransaction,
    before: i64,
    most: usize,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    expired(
        &txn.open_table(CHANGE_SEQS)?,
        &txn.open_table(CHANGES)?,
        before,
        most,
    )
}

/// Removes the entries committed before `before`, at most `most`; returns how many.
pub fn prune_expired(txn: &Txn, before: i64, most: usize) -> Result<u64, StoreError> {
    let found = expired(
        &txn.open_table(CHANGE_SEQS)?,
        &txn.open_table(CHANGES)?,
        before,
        most,
    )?;
    let mut removed = 0;
    for (agent, through, count) in found {
        prune(txn, &agent, through)?;
        removed += count;
    }
    Ok(removed)
}

/// Removes `agent`'s entries numbered up to `through`.
pub fn prune(txn: &Txn, agent: &str, through: u64) -> Result<(), StoreError> {
    txn.open_table(CHANGES)?
        .retain_in((agent, 0)..=(agent, through), |_, _| false)?;
    txn.record(Op::PruneChanges {
        agent: agent.to_owned(),
        through,
    });
    Ok(())
}

/// `contactd check`: every entry reads back (its seal and its contact's), and no
/// agent's feed holds a number beyond the last one `change_seqs` says it gave out.
pub fn check(txn: &ReadTransaction, report: &mut CheckReport) -> Result<(), StoreError> {
    let seqs = txn.open_table(CHANGE_SEQS)?;
    let table = txn.open_table(CHANGES)?;
    let read = unpanic("a range read", || {
        let mut agent = String::new();
        let mut last = 0;
        for row in table.iter()? {
            let (key, value) = row?;
            let (id, seq) = key.value();
            if id != agent {
                agent = id.to_owned();
                last = seqs.get(id)?.map_or(0, |v| v.value());
            }
            if seq > last {
                report.problem(format!(
                    "change {agent}/{seq} is beyond the last number the feed gave out ({last})"
                ));
            }
            if let Err(err) =
                decode_change(id, seq, value.value()).and_then(|r| r.into_change(id, seq))
            {
                report.damage(format!("change {agent}/{seq}: {err}"));
            }
        }
        Ok(())
    });
    if let Err(err) = read {
        report.damage(format!("changes: {err}"));
    }
    Ok(())
}

/// Removes an agent's feed (the agent is being removed; its removal is logged).
pub fn remove_agent(txn: &Txn, agent: &str) -> Result<(), StoreError> {
    txn.open_table(CHANGES)?
        .retain_in((agent, 0)..=(agent, u64::MAX), |_, _| false)?;
    txn.open_table(CHANGE_SEQS)?.remove(agent)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::redb_store::tests_support::fill;
    use crate::store::{RedbStore, Store};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// `fill` stamps its writes 1_700_000_000; the deletes here come later.
    #[test]
    fn pruning_removes_what_expired_and_keeps_the_numbers_going() {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        fill(&rt, &store, 3);
        rt.block_on(store.delete_contact("a".into(), "c0".into(), None, 1_700_000_050))
            .unwrap();
        // Nothing is older than the fill: nothing goes.
        assert_eq!(rt.block_on(store.prune_changes(1_700_000_000)).unwrap(), 0);
        assert_eq!(rt.block_on(store.prune_changes(1_700_000_001)).unwrap(), 3);
        let page = store.changes("a", 0, 10).unwrap();
        assert_eq!((page.oldest, page.last), (4, 4));
        assert_eq!(page.changes[0].kind, ChangeKind::Deleted);
        assert_eq!(page.changes[0].at, 1_700_000_050);
        assert_eq!(rt.block_on(store.prune_changes(i64::MAX)).unwrap(), 1);
        let page = store.changes("a", 0, 10).unwrap();
        assert_eq!((page.changes.len(), page.oldest, page.last), (0, 5, 4));
        rt.block_on(store.delete_contact("a".into(), "c1".into(), None, 1_700_000_060))
            .unwrap();
        let page = store.changes("a", 4, 10).unwrap();
        assert_eq!(page.changes[0].seq, 5);
        assert_eq!(store.check().unwrap().problem_count, 0);
    }

    #[test]
    fn check_reports_a_damaged_entry_and_one_beyond_the_last_number() {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        fill(&rt, &store, 2);
        {
            let txn = store.db_for_tests().begin_write().unwrap();
            {
                let mut table = txn.open_table(CHANGES).unwrap();
                let mut bytes = table.get(("a", 1)).unwrap().unwrap().value().to_vec();
                bytes[3] ^= 1;
                table.insert(("a", 1), bytes.as_slice()).unwrap();
                let record = ChangeRecord {
                    kind: DELETED,
                    at: 1,
                    external_id: "x".into(),
                    changed: vec![],
                    contact: None,
                };
                table
                    .insert(("a", 9), encode_change("a", 9, &record).as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let report = store.check().unwrap();
        assert_eq!(report.problem_count, 2, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("damaged: change a/1"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[1].contains("change a/9 is beyond"),
            "{:?}",
            report.problems
        );
    }
}
