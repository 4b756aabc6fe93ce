//! The logical changes the write-ahead log holds (see `wal`): one [`Op`] per change to
//! the tables that hold the data. Everything else (the external-id and email indexes, the block
//! and field counts, the sort and word indexes) follows from these through the same
//! code that writes them live, so replaying a record after a crash is running its ops
//! again through [`apply`].
//!
//! Each primitive that writes such a table records its op in the transaction (see
//! `Txn::record`) when it writes live; replay calls the same primitives.

use serde::{Deserialize, Serialize};

use super::writer::Txn;
use super::StoreError;
use crate::domain::LabelKind;

/// One contact's change: the external id and number it had before (`None`: created)
/// and its record after (`None`: deleted).
pub type ContactChange = (Option<(String, u64)>, Option<Vec<u8>>);

/// One change to the data. Records are carried sealed, as the tables store them. The
/// variant order is part of the log's format: append, never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Contacts of an agent created, changed or deleted, as builds before the change
    /// feed logged them: replayed with each change's time taken from its records.
    Contacts {
        agent: String,
        changes: Vec<ContactChange>,
    },
    /// An agent's record written (created, or its contact count changed).
    PutAgent { id: String, record: Vec<u8> },
    /// An agent removed with its contacts, definitions and agent-scoped keys.
    RemoveAgent { id: String },
    /// An API key written (created or revoked).
    PutKey { digest: Vec<u8>, record: Vec<u8> },
    /// A custom attribute definition written.
    PutAttribute {
        agent: String,
        name: String,
        record: Vec<u8>,
    },
    /// A named counter or flag of `meta` set.
    SetMeta { name: String, value: u64 },
    /// A tag or list definition written (`name`) or removed (`None`).
    PutLabel {
        agent: String,
        kind: LabelKind,
        folded: String,
        name: Option<String>,
    },
    /// Contacts of an agent created, changed or deleted at `at` (Unix seconds).
    ContactsAt {
        agent: String,
        at: i64,
        changes: Vec<ContactChange>,
    },
    /// An agent's change feed entries up to `through` removed (retention).
    PruneChanges { agent: String, through: u64 },
    /// A webhook endpoint written (`record`) or removed (`None`).
    PutWebhook { id: String, record: Option<Vec<u8>> },
    /// The time of the group whose record this is (see `Txn::now`); logged first.
    At(i64),
    /// A webhook delivery written.
    PutDelivery {
        webhook: String,
        number: u64,
        record: Vec<u8>,
    },
}

/// Applies `op` in `txn`, as the live write that recorded it did.
pub fn apply(txn: &Txn, op: Op) -> Result<(), StoreError> {
    match op {
        Op::Contacts { agent, changes } => super::contacts::redo(txn, &agent, None, changes),
        Op::ContactsAt { agent, at, changes } => {
            super::contacts::redo(txn, &agent, Some(at), changes)
        }
        Op::PruneChanges { agent, through } => super::changes::prune(txn, &agent, through),
        Op::PutWebhook { id, record } => match record {
            Some(record) => super::webhooks::put(txn, &id, &record),
            None => super::webhooks::remove(txn, &id),
        },
        Op::At(now) => {
            txn.set_now(now);
            Ok(())
        }
        Op::PutDelivery {
            webhook,
            number,
            record,
        } => super::webhooks::put_delivery(txn, &webhook, number, &record),
        Op::PutAgent { id, record } => super::redb_store::put_agent_record(txn, &id, &record),
        Op::RemoveAgent { id } => super::redb_store::remove_agent(txn, &id),
        Op::PutKey { digest, record } => super::redb_store::put_key_record(txn, &digest, &record),
        Op::PutAttribute {
            agent,
            name,
            record,
        } => super::redb_store::put_attribute_record(txn, &agent, &name, &record),
        Op::PutLabel {
            agent,
            kind,
            folded,
            name,
        } => super::labels::put(txn, &agent, kind, &folded, name.as_deref()),
        Op::SetMeta { name, value } => super::redb_store::set_meta(txn, &name, value),
    }
}
