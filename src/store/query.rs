//! Running a list query on one read snapshot.
//!
//! Creation order without search or filters walks the id index from the cursor (or
//! offset): O(page). An exact `filter[email]` or `filter[external_id]` is answered from
//! the email index or the primary key. Anything else reads the agent's contacts once,
//! keeps those `domain::query` accepts, and orders them with the same code the tests use
//! as the reference. (Sort and search indexes that make those O(page) too are the next
//! step; see the README's Performance section.)

use std::ops::Bound;

use redb::ReadTransaction;

use super::codec::{decode_agent, decode_contact};
use super::tables::{AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID};
use super::StoreError;
use crate::domain::query::{Op, Position, Query};
use crate::domain::Contact;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Offset(u64),
    After(Position),
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub contacts: Vec<Contact>,
    /// Contacts matching the query (the agent's count when there is no q or filter).
    pub total: u64,
    /// Where the next page starts, when there is one.
    pub next: Option<Position>,
}

type ContactsTable = redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;

fn load(contacts: &ContactsTable, agent: &str, ext: &str) -> Result<Option<Contact>, StoreError> {
    contacts
        .get((agent, ext))?
        .map(|bytes| decode_contact(bytes.value()))
        .transpose()
}

/// Runs `query` for `agent`: at most `limit` contacts from `start`.
pub fn run(
    txn: &ReadTransaction,
    agent: &str,
    query: &Query,
    start: &Start,
    limit: usize,
) -> Result<QueryPage, StoreError> {
    let agent_total = match txn.open_table(AGENTS)?.get(agent)? {
        Some(bytes) => decode_agent(agent, bytes.value())?.contact_count,
        None => return Err(StoreError::AgentNotFound),
    };
    let contacts = txn.open_table(CONTACTS)?;
    if query.is_creation_order() {
        let mut page = walk_ids(txn, &contacts, agent, query, start, limit)?;
        page.total = agent_total;
        return Ok(page);
    }
    let mut hits: Vec<(Position, String)> = Vec::new();
    let mut consider = |contact: Contact| {
        if query.matches(&contact) {
            hits.push((query.position(&contact), contact.external_id));
        }
    };
    match exact_lookup(txn, query, agent)? {
        Some(Some(ext)) => {
            if let Some(contact) = load(&contacts, agent, &ext)? {
                consider(contact);
            }
        }
        Some(None) => {}
        None => {
            for row in contacts.range((agent, "")..)? {
                let (key, value) = row?;
                if key.value().0 != agent {
                    break;
                }
                consider(decode_contact(value.value())?);
            }
        }
    }
    hits.sort_by(|a, b| query.compare(&a.0, &b.0));
    let total = hits.len() as u64;
    let from = match start {
        Start::Offset(n) => usize::try_from(*n).unwrap_or(usize::MAX).min(hits.len()),
        Start::After(pos) => hits.partition_point(|(p, _)| query.compare(p, pos).is_le()),
    };
    let window = &hits[from..hits.len().min(from.saturating_add(limit))];
    let mut page = Vec::with_capacity(window.len());
    for (_, ext) in window {
        if let Some(contact) = load(&contacts, agent, ext)? {
            page.push(contact);
        }
    }
    let more = hits.len() > from.saturating_add(limit);
    let next = (more && !window.is_empty()).then(|| window[window.len() - 1].0.clone());
    Ok(QueryPage {
        contacts: page,
        total,
        next,
    })
}

/// For an exact filter on `email` or `external_id`: `Some(the external id holding it)`
/// from the email index or the primary key (`Some(None)` when nobody does); `None` when
/// the query has no such filter.
fn exact_lookup(
    txn: &ReadTransaction,
    query: &Query,
    agent: &str,
) -> Result<Option<Option<String>>, StoreError> {
    for filter in &query.filters {
        let Op::Eq(key) = &filter.op else { continue };
        let Ok(value) = std::str::from_utf8(key) else {
            continue;
        };
        match filter.field.as_str() {
            "email" => {
                let emails = txn.open_table(CONTACTS_BY_EMAIL)?;
                let found = emails.get((agent, value))?.map(|v| v.value().to_owned());
                return Ok(Some(found));
            }
            "external_id" => return Ok(Some(Some(value.to_owned()))),
            _ => {}
        }
    }
    Ok(None)
}

/// A page of the plain listing in creation order (or its reverse): the id index from
/// the start.
fn walk_ids(
    txn: &ReadTransaction,
    contacts: &ContactsTable,
    agent: &str,
    query: &Query,
    start: &Start,
    limit: usize,
) -> Result<QueryPage, StoreError> {
    let by_id = txn.open_table(CONTACTS_BY_ID)?;
    let (skip, after) = match start {
        Start::Offset(n) => (usize::try_from(*n).unwrap_or(usize::MAX), None),
        Start::After(pos) => (0, Some(pos.id)),
    };
    let rows: Box<dyn Iterator<Item = _>> = if query.descending {
        let upper = after.map_or(Bound::Included((agent, u64::MAX)), |id| {
            Bound::Excluded((agent, id))
        });
        Box::new(
            by_id
                .range::<(&str, u64)>((Bound::Included((agent, 0)), upper))?
                .rev(),
        )
    } else {
        let lower = after.map_or(Bound::Included((agent, 0)), |id| {
            Bound::Excluded((agent, id))
        });
        Box::new(by_id.range::<(&str, u64)>((lower, Bound::Included((agent, u64::MAX))))?)
    };
    let mut out = Vec::with_capacity(limit.min(1000) + 1);
    for row in rows.skip(skip) {
        if out.len() > limit {
            break;
        }
        let (_, ext) = row?;
        let ext = ext.value().to_owned();
        match load(contacts, agent, &ext)? {
            Some(contact) => out.push(contact),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "id index names '{ext}' but no such contact exists"
                )))
            }
        }
    }
    let next = (out.len() > limit && limit > 0).then(|| query.position(&out[limit - 1]));
    out.truncate(limit);
    Ok(QueryPage {
        contacts: out,
        total: 0,
        next,
    })
}
