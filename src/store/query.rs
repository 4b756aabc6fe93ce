//! Running a list query on one read snapshot.
//!
//! **Plain listing** (no `q`, no filter): a walk of the table that holds the sort
//! field in order — `contacts_by_id` for `created_at`, `contacts` for `external_id`,
//! `contacts_by_email` for `email`, the sort index for the rest — from the cursor (or
//! offset), then, when some contacts have no value for the field, a walk of the id index
//! for those. O(page) for cursors.
//!
//! **Search and filters**: every term and filter is a *source*, an index range that
//! holds exactly the contacts it accepts: a term is the word-index range of the words
//! it is a prefix of, a filter a range of the sort index (or one email/external id).
//! A range is read whole when it is small — up to `QueryLimits::cap` entries, or only a
//! quarter of `QueryLimits::in_memory` for a range that can be streamed instead (a term's
//! words, an exact value) in an agent larger than `cap` — and complete ranges are
//! intersected into a candidate set. A larger range is, when it is a few runs of contact numbers (common
//! words, one value), streamed in id order, and otherwise left to checking. Then:
//! - at most `QueryLimits::in_memory` candidates: load them, keep those `domain::query` accepts,
//!   order them with it (the same code the tests use as the reference); exact total;
//! - `created_at` order: intersect the candidate set and the streams in id order,
//!   stopping once the page is full;
//! - any other order: walk that field's order (as for the plain listing) and keep
//!   candidates `domain::query` accepts.
//!
//! In the last two the total is known only when the candidate set was complete and
//! nothing was left to checking; otherwise it is `None` (too many to count quickly).
//! Every contact returned is checked with `Query::matches`, so an index can make a query
//! slower but never wrong.

use std::collections::HashSet;
use std::iter::Peekable;
use std::ops::Bound;

use redb::{AccessGuard, ReadOnlyTable, ReadTransaction};

use super::codec::{decode_agent, decode_contact};
use super::keys;
use super::tables::{
    AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID, FIELD_COUNTS, SORT_INDEX, WORD_INDEX,
};
use super::StoreError;
use crate::domain::query::{Cmp, Op, Position, Query};
use crate::domain::search::sort_key;
use crate::domain::Contact;

/// How much work a query may spend on each strategy. The defaults keep every
/// strategy within a few milliseconds at a million contacts; tests shrink them to
/// drive small data through every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Most entries read from one index range to make a candidate set.
    pub cap: usize,
    /// Most candidates loaded and ordered in memory.
    pub in_memory: usize,
    /// Entries from which a word counts as common: a large search term reads its rare
    /// words whole and streams its common ones.
    pub run: usize,
    /// Most common words a streamed search term may span.
    pub max_runs: usize,
    /// Most distinct words a streamed search term may span.
    pub words: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            cap: 20_000,
            in_memory: 2_000,
            run: 64,
            max_runs: 64,
            words: 1_000,
        }
    }
}

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
    /// Contacts matching the query; `None` when there are too many to count quickly.
    pub total: Option<u64>,
    /// Where the next page starts, when there is one.
    pub next: Option<Position>,
}

type Results<'a, T> = Box<dyn Iterator<Item = Result<T, StoreError>> + 'a>;
type IdStream<'a> = Peekable<Results<'a, u64>>;
/// The contact numbers of a term's rare words, and the key prefixes of its common ones.
type RareAndCommon = (Vec<u64>, Vec<Vec<u8>>);

/// The tables a query reads, from one snapshot.
struct Snapshot {
    contacts: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    by_id: ReadOnlyTable<(&'static str, u64), &'static str>,
    by_email: ReadOnlyTable<(&'static str, &'static str), &'static str>,
    sort: ReadOnlyTable<&'static [u8], ()>,
    words: ReadOnlyTable<&'static [u8], ()>,
}

impl Snapshot {
    fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            contacts: txn.open_table(CONTACTS)?,
            by_id: txn.open_table(CONTACTS_BY_ID)?,
            by_email: txn.open_table(CONTACTS_BY_EMAIL)?,
            sort: txn.open_table(SORT_INDEX)?,
            words: txn.open_table(WORD_INDEX)?,
        })
    }

    fn by_ext(&self, agent: &str, ext: &str) -> Result<Option<Contact>, StoreError> {
        self.contacts
            .get((agent, ext))?
            .map(|bytes| decode_contact(bytes.value()))
            .transpose()
    }

    /// The contact an index entry names; an entry without one is corruption.
    fn indexed(&self, agent: &str, ext: &str) -> Result<Contact, StoreError> {
        self.by_ext(agent, ext)?.ok_or_else(|| {
            StoreError::Corrupt(format!("an index names '{ext}' but no such contact exists"))
        })
    }

    fn by_id(&self, agent: &str, id: u64) -> Result<Contact, StoreError> {
        match self.by_id.get((agent, id))? {
            Some(ext) => self.indexed(agent, ext.value()),
            None => Err(StoreError::Corrupt(format!(
                "an index names contact {id} but the id index does not"
            ))),
        }
    }
}

/// Runs `query` for `agent`: at most `limit` contacts from `start`.
pub fn run(
    txn: &ReadTransaction,
    agent: &str,
    query: &Query,
    start: &Start,
    limit: usize,
    limits: QueryLimits,
) -> Result<QueryPage, StoreError> {
    let agent_total = match txn.open_table(AGENTS)?.get(agent)? {
        Some(bytes) => decode_agent(agent, bytes.value())?.contact_count,
        None => return Err(StoreError::AgentNotFound),
    };
    let with_value = txn
        .open_table(FIELD_COUNTS)?
        .get((agent, query.sort_field.as_str()))?
        .map_or(0, |v| v.value());
    let has_tail = with_value < agent_total;
    let snap = Snapshot::open(txn)?;
    let (offset, after) = match start {
        Start::Offset(n) => (usize::try_from(*n).unwrap_or(usize::MAX), None),
        Start::After(pos) => (0, Some(pos)),
    };
    if query.terms.is_empty() && query.filters.is_empty() {
        let rows = ordered(&snap, agent, query, after, has_tail)?;
        let mut page = take_page(rows, offset, limit, |_| true, query)?;
        page.total = Some(agent_total);
        return Ok(page);
    }

    let mut sets: Vec<Vec<u64>> = Vec::new();
    let mut streams: Vec<(Index, Vec<u64>, Vec<Vec<u8>>)> = Vec::new();
    let mut unchecked = false;
    let small_agent = usize::try_from(agent_total).is_ok_and(|n| n <= limits.cap);
    for source in sources(&snap, agent, query, limits, small_agent)? {
        match source {
            Source::Ids(ids) => sets.push(ids),
            Source::Runs(index, rare, runs) => streams.push((index, rare, runs)),
            Source::Unindexed => unchecked = true,
        }
    }
    if sets.is_empty() && small_agent {
        // A small agent: all of its contacts are a cheap candidate set.
        let ids: Result<Vec<u64>, StoreError> = id_rows(&snap, agent, None, false)?
            .map(|r| r.map(|(id, _)| id))
            .collect();
        sets.push(ids?);
    }
    let exact = streams.is_empty() && !unchecked;
    let candidates = intersect(sets);

    if let Some(ids) = candidates
        .as_ref()
        .filter(|ids| ids.len() <= limits.in_memory)
    {
        return in_memory(&snap, agent, query, ids, offset, after, limit);
    }
    let total = candidates
        .as_ref()
        .filter(|_| exact)
        .map(|ids| ids.len() as u64);
    let mut page = if query.sort_field == "created_at" {
        let mut inputs: Vec<IdStream> = Vec::new();
        let from = after.map(|p| p.id);
        if let Some(ids) = &candidates {
            inputs.push(list_stream(ids, from, query.descending));
        }
        for (index, rare, runs) in &streams {
            let table = snap.index(*index);
            inputs.push(runs_stream(table, rare, runs, from, query.descending)?);
        }
        if inputs.is_empty() {
            inputs.push(id_walk(&snap, agent, from, query.descending)?);
        }
        let ids = Intersection {
            inputs,
            descending: query.descending,
        };
        let rows = Box::new(ids.map(|id| snap.by_id(agent, id?)));
        take_page(rows, offset, limit, |c| query.matches(c), query)?
    } else {
        let keep: Option<HashSet<u64>> = candidates.map(|ids| ids.into_iter().collect());
        let rows = ordered(&snap, agent, query, after, has_tail)?;
        let accept =
            |c: &Contact| keep.as_ref().is_none_or(|k| k.contains(&c.id)) && query.matches(c);
        take_page(rows, offset, limit, accept, query)?
    };
    page.total = total;
    Ok(page)
}

/// Skips `offset` accepted rows, then takes `limit` and looks one further for `next`.
fn take_page(
    rows: Results<'_, Contact>,
    offset: usize,
    limit: usize,
    accept: impl Fn(&Contact) -> bool,
    query: &Query,
) -> Result<QueryPage, StoreError> {
    let mut skip = offset;
    let mut out: Vec<Contact> = Vec::with_capacity(limit.min(1000) + 1);
    for row in rows {
        let contact = row?;
        if !accept(&contact) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        out.push(contact);
        if out.len() > limit {
            break;
        }
    }
    let next = (out.len() > limit && limit > 0).then(|| query.position(&out[limit - 1]));
    out.truncate(limit);
    Ok(QueryPage {
        contacts: out,
        total: None,
        next,
    })
}

/// Loads every candidate, keeps the matches, and orders them in memory.
fn in_memory(
    snap: &Snapshot,
    agent: &str,
    query: &Query,
    ids: &[u64],
    offset: usize,
    after: Option<&Position>,
    limit: usize,
) -> Result<QueryPage, StoreError> {
    let mut hits: Vec<(Position, Contact)> = Vec::with_capacity(ids.len());
    for &id in ids {
        let contact = snap.by_id(agent, id)?;
        if query.matches(&contact) {
            hits.push((query.position(&contact), contact));
        }
    }
    hits.sort_by(|a, b| query.compare(&a.0, &b.0));
    let total = hits.len() as u64;
    let from = match after {
        Some(pos) => hits.partition_point(|(p, _)| query.compare(p, pos).is_le()),
        None => offset.min(hits.len()),
    };
    let more = hits.len() > from.saturating_add(limit);
    let contacts: Vec<Contact> = hits
        .into_iter()
        .skip(from)
        .take(limit)
        .map(|(_, c)| c)
        .collect();
    let next = (more && limit > 0)
        .then(|| contacts.last().map(|c| query.position(c)))
        .flatten();
    Ok(QueryPage {
        contacts,
        total: Some(total),
        next,
    })
}

/// The two byte-keyed indexes.
#[derive(Debug, Clone, Copy)]
enum Index {
    Sort,
    Words,
}

impl Snapshot {
    fn index(&self, index: Index) -> &ReadOnlyTable<&'static [u8], ()> {
        match index {
            Index::Sort => &self.sort,
            Index::Words => &self.words,
        }
    }
}

/// What one term or filter contributes.
enum Source {
    /// Every contact it accepts, ascending.
    Ids(Vec<u64>),
    /// Too many to read whole, but streamable in id order: these contact numbers
    /// (ascending) and those after each of these key prefixes of the index (one word, one
    /// value), which follow in ascending order.
    Runs(Index, Vec<u64>, Vec<Vec<u8>>),
    /// No usable index range: contacts are checked one by one.
    Unindexed,
}

fn sources(
    snap: &Snapshot,
    agent: &str,
    query: &Query,
    limits: QueryLimits,
    small_agent: bool,
) -> Result<Vec<Source>, StoreError> {
    // A range that can be streamed is read whole only while that is cheap: in a small
    // agent, or up to what is ordered in memory anyway. (Reading 20,000 entries of a
    // common word only to give up would cost more than streaming it.)
    let streamable_cap = if small_agent {
        limits.cap
    } else {
        limits.run.max(limits.in_memory / 4).min(limits.cap)
    };
    let mut out = Vec::new();
    for term in &query.terms {
        let mut start = keys::prefix(&[agent.as_bytes()]);
        keys::push_escaped(&mut start, term.as_bytes());
        // The term's words first (cheap: a few entries per word): when none is common,
        // their contact numbers are the whole answer.
        let source = match word_runs(&snap.words, agent, &start, limits)? {
            Some((rare, runs)) if runs.is_empty() => Source::Ids(rare),
            Some((rare, runs)) => match collect(&snap.words, &start, None, streamable_cap)? {
                Some(ids) => Source::Ids(ids),
                None => Source::Runs(Index::Words, rare, runs),
            },
            None => match collect(&snap.words, &start, None, streamable_cap)? {
                Some(ids) => Source::Ids(ids),
                None => Source::Unindexed,
            },
        };
        out.push(source);
    }
    for filter in &query.filters {
        let field = filter.field.as_str();
        let text = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        let source = match (field, &filter.op) {
            ("email", Op::Eq(key)) => {
                let ext = snap.by_email.get((agent, text(key).as_str()))?;
                let ext = ext.map(|e| e.value().to_owned());
                let found = match ext {
                    Some(ext) => Some(snap.indexed(agent, &ext)?),
                    None => None,
                };
                Source::Ids(found.map(|c| vec![c.id]).unwrap_or_default())
            }
            ("external_id", Op::Eq(key)) => {
                let found = snap.by_ext(agent, &text(key))?;
                Source::Ids(found.map(|c| vec![c.id]).unwrap_or_default())
            }
            ("email" | "external_id", _) | (_, Op::Exists(false)) => Source::Unindexed,
            (_, op) => {
                let field_start = keys::prefix(&[agent.as_bytes(), field.as_bytes()]);
                let field_end = keys::prefix_end(&field_start);
                let at = |key: &[u8]| keys::prefix(&[agent.as_bytes(), field.as_bytes(), key]);
                let (lower, upper, streamable) = match op {
                    Op::Eq(key) => {
                        let at = at(key);
                        let end = keys::prefix_end(&at);
                        (at, end, true)
                    }
                    Op::Cmp(Cmp::Gt, key) => (keys::prefix_end(&at(key)), field_end, false),
                    Op::Cmp(Cmp::Gte, key) => (at(key), field_end, false),
                    Op::Cmp(Cmp::Lt, key) => (field_start, at(key), false),
                    Op::Cmp(Cmp::Lte, key) => (field_start, keys::prefix_end(&at(key)), false),
                    Op::Exists(_) => (field_start, field_end, false),
                };
                let cap = if streamable {
                    streamable_cap
                } else {
                    limits.cap
                };
                match collect(&snap.sort, &lower, Some(&upper), cap)? {
                    Some(ids) => Source::Ids(ids),
                    None if streamable => Source::Runs(Index::Sort, Vec::new(), vec![lower]),
                    None => Source::Unindexed,
                }
            }
        };
        out.push(source);
    }
    Ok(out)
}

/// The contact numbers of the keys from `lower` while below `upper` (without one:
/// while they start with `lower`), sorted and without repeats; `None` past `cap`
/// entries.
fn collect(
    table: &ReadOnlyTable<&'static [u8], ()>,
    lower: &[u8],
    upper: Option<&[u8]>,
    cap: usize,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut ids = Vec::new();
    let range = match upper {
        Some(upper) => table.range::<&[u8]>(lower..upper)?,
        None => table.range::<&[u8]>(lower..)?,
    };
    for row in range {
        let (key, _) = row?;
        let key = key.value();
        if upper.is_none() && !key.starts_with(lower) {
            break;
        }
        if ids.len() == cap {
            return Ok(None);
        }
        ids.extend(keys::id_of(key));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Some(ids))
}

/// The words that start with the escaped term `start` (after the agent's segment):
/// the contact numbers of the rare ones (at most `limits.run` entries each), sorted, and
/// the key prefixes of the common ones, to be streamed; `None` past `limits.words`
/// distinct words or `limits.max_runs` common ones.
fn word_runs(
    words: &ReadOnlyTable<&'static [u8], ()>,
    agent: &str,
    start: &[u8],
    limits: QueryLimits,
) -> Result<Option<RareAndCommon>, StoreError> {
    let agent_len = keys::prefix(&[agent.as_bytes()]).len();
    let malformed = || StoreError::Corrupt("a malformed word index key".into());
    let mut rare = Vec::new();
    let mut runs = Vec::new();
    let mut seen = 0;
    // The word being read: its key prefix and its contact numbers so far. Rare words are
    // read in one pass; the range is opened again only to jump past a common word.
    let mut current: Option<(Vec<u8>, Vec<u64>)> = None;
    let mut range = words.range::<&[u8]>(start..)?;
    loop {
        let row = range.next().transpose()?;
        let key = row
            .as_ref()
            .map(|(k, _)| k.value())
            .filter(|k| k.starts_with(start));
        let Some(key) = key else {
            if let Some((_, ids)) = current.take() {
                rare.extend(ids);
            }
            break;
        };
        let id = keys::id_of(key).ok_or_else(malformed)?;
        if let Some((run, ids)) = &mut current {
            if key.starts_with(run.as_slice()) {
                if ids.len() < limits.run {
                    ids.push(id);
                    continue;
                }
                if runs.len() == limits.max_runs {
                    return Ok(None);
                }
                let end = keys::prefix_end(run);
                runs.push(std::mem::take(run));
                current = None;
                range = words.range::<&[u8]>(end.as_slice()..)?;
                continue;
            }
        }
        if let Some((_, ids)) = current.take() {
            rare.extend(ids);
        }
        seen += 1;
        if seen > limits.words {
            return Ok(None);
        }
        let (word, _) = keys::split_seg(&key[agent_len..]).ok_or_else(malformed)?;
        current = Some((keys::prefix(&[agent.as_bytes(), &word]), vec![id]));
    }
    rare.sort_unstable();
    rare.dedup();
    Ok(Some((rare, runs)))
}

/// Intersects ascending id lists; `None` when there are none.
fn intersect(mut sets: Vec<Vec<u64>>) -> Option<Vec<u64>> {
    sets.sort_by_key(Vec::len);
    let mut sets = sets.into_iter();
    let mut result = sets.next()?;
    for set in sets {
        result.retain(|id| set.binary_search(id).is_ok());
    }
    Some(result)
}

/// An ascending id list as a stream in query order, after `from`.
fn list_stream(ids: &[u64], from: Option<u64>, descending: bool) -> IdStream<'_> {
    let rows: Results<'_, u64> = if descending {
        let end = from.map_or(ids.len(), |f| ids.partition_point(|&id| id < f));
        Box::new(ids[..end].iter().rev().map(|&id| Ok(id)))
    } else {
        let start = from.map_or(0, |f| ids.partition_point(|&id| id <= f));
        Box::new(ids[start..].iter().map(|&id| Ok(id)))
    };
    rows.peekable()
}

/// `ids` and the contact numbers under each prefix, merged into one stream in query
/// order.
fn runs_stream<'a>(
    table: &'a ReadOnlyTable<&'static [u8], ()>,
    ids: &'a [u64],
    runs: &[Vec<u8>],
    from: Option<u64>,
    descending: bool,
) -> Result<IdStream<'a>, StoreError> {
    let mut parts = Vec::with_capacity(runs.len() + 1);
    parts.push(list_stream(ids, from, descending));
    for run in runs {
        let (lower, upper) = match (from, descending) {
            (None, _) => (run.clone(), keys::prefix_end(run)),
            (Some(f), false) => (keys::entry_after(run, f), keys::prefix_end(run)),
            (Some(f), true) => (run.clone(), keys::entry_at(run, f)),
        };
        let range = table.range::<&[u8]>(lower.as_slice()..upper.as_slice())?;
        let ids = range.map(|row| {
            let (key, _) = row?;
            keys::id_of(key.value())
                .ok_or_else(|| StoreError::Corrupt("a malformed index key".into()))
        });
        let ids: Results<'a, u64> = if descending {
            Box::new(ids.rev())
        } else {
            Box::new(ids)
        };
        parts.push(ids.peekable());
    }
    let merged: Results<'a, u64> = Box::new(Merge {
        parts,
        descending,
        last: None,
    });
    Ok(merged.peekable())
}

/// Every contact number of the agent, in query order, after `from`.
fn id_walk<'a>(
    snap: &'a Snapshot,
    agent: &str,
    from: Option<u64>,
    descending: bool,
) -> Result<IdStream<'a>, StoreError> {
    let rows = id_rows(snap, agent, from, descending)?;
    let ids: Results<'a, u64> = Box::new(rows.map(|r| r.map(|(id, _)| id)));
    Ok(ids.peekable())
}

/// `(id, external id)` rows of the id index in query order, after `from`.
fn id_rows<'a>(
    snap: &'a Snapshot,
    agent: &str,
    from: Option<u64>,
    descending: bool,
) -> Result<Results<'a, (u64, String)>, StoreError> {
    let floor = Bound::Included((agent, 0));
    let ceiling = Bound::Included((agent, u64::MAX));
    let bounds = match (from, descending) {
        (None, _) => (floor, ceiling),
        (Some(f), false) => (Bound::Excluded((agent, f)), ceiling),
        (Some(f), true) => (floor, Bound::Excluded((agent, f))),
    };
    let range = snap.by_id.range::<(&str, u64)>(bounds)?;
    let rows = range.map(|row| {
        let (key, ext) = row?;
        Ok((key.value().1, ext.value().to_owned()))
    });
    Ok(if descending {
        Box::new(rows.rev())
    } else {
        Box::new(rows)
    })
}

/// Contacts of the agent in the query's order (ignoring its terms and filters), after
/// the cursor: the values in order, then, with `has_tail`, the contacts without one.
fn ordered<'a>(
    snap: &'a Snapshot,
    agent: &'a str,
    query: &'a Query,
    after: Option<&Position>,
    has_tail: bool,
) -> Result<Results<'a, Contact>, StoreError> {
    let desc = query.descending;
    let field = query.sort_field.as_str();
    let after_value = match after {
        Some(Position { key: Some(k), id }) => Some((k.clone(), *id)),
        _ => None,
    };
    // Whether the cursor is already among the contacts without a value.
    let in_tail = matches!(after, Some(Position { key: None, .. }));
    let valued: Results<'a, Contact> = if in_tail {
        Box::new(std::iter::empty())
    } else {
        match field {
            "created_at" => {
                let rows = id_rows(snap, agent, after.map(|p| p.id), desc)?;
                Box::new(rows.map(move |r| r.and_then(|(_, ext)| snap.indexed(agent, &ext))))
            }
            "external_id" => {
                let key = after_value.map(|(k, _)| String::from_utf8_lossy(&k).into_owned());
                str_range(&snap.contacts, agent, key.as_deref(), desc, |v| {
                    decode_contact(v.value())
                })?
            }
            "email" => {
                let key = after_value.map(|(k, _)| String::from_utf8_lossy(&k).into_owned());
                str_range(&snap.by_email, agent, key.as_deref(), desc, move |ext| {
                    snap.indexed(agent, ext.value())
                })?
            }
            _ => {
                let start = keys::prefix(&[agent.as_bytes(), field.as_bytes()]);
                let end = keys::prefix_end(&start);
                let (lower, upper) = match (after_value, desc) {
                    (None, _) => (start, end),
                    (Some((k, id)), false) => {
                        let at = keys::prefix(&[agent.as_bytes(), field.as_bytes(), &k]);
                        (keys::entry_after(&at, id), end)
                    }
                    (Some((k, id)), true) => {
                        let at = keys::prefix(&[agent.as_bytes(), field.as_bytes(), &k]);
                        (start, keys::entry_at(&at, id))
                    }
                };
                let range = snap
                    .sort
                    .range::<&[u8]>(lower.as_slice()..upper.as_slice())?;
                let ids = range.map(move |row| {
                    let (key, _) = row?;
                    let id = keys::id_of(key.value())
                        .ok_or_else(|| StoreError::Corrupt("a malformed sort key".into()))?;
                    snap.by_id(agent, id)
                });
                if desc {
                    Box::new(ids.rev())
                } else {
                    Box::new(ids)
                }
            }
        }
    };
    if !has_tail {
        return Ok(valued);
    }
    let from = if in_tail { after.map(|p| p.id) } else { None };
    let tail = id_rows(snap, agent, from, desc)?
        .map(move |r| r.and_then(|(_, ext)| snap.indexed(agent, &ext)))
        .filter(move |r| r.as_ref().map_or(true, |c| sort_key(c, field).is_none()));
    Ok(Box::new(valued.chain(tail)))
}

/// Rows of an `(agent, text)` table in key order (reversed when `descending`), after
/// the text `after`, each turned into a value by `value`.
fn str_range<'a, V, T>(
    table: &'a ReadOnlyTable<(&'static str, &'static str), V>,
    agent: &str,
    after: Option<&str>,
    descending: bool,
    value: impl Fn(AccessGuard<'_, V>) -> Result<T, StoreError> + 'a,
) -> Result<Results<'a, T>, StoreError>
where
    V: redb::Value + 'static,
    T: 'a,
{
    // The smallest text above `agent`: every key of the agent is below it.
    let next_agent = format!("{agent}\0");
    let floor = Bound::Included((agent, ""));
    let ceiling = Bound::Excluded((next_agent.as_str(), ""));
    let bounds = match (after, descending) {
        (None, _) => (floor, ceiling),
        (Some(a), false) => (Bound::Excluded((agent, a)), ceiling),
        (Some(a), true) => (floor, Bound::Excluded((agent, a))),
    };
    let range = table.range::<(&str, &str)>(bounds)?;
    let rows = range.map(move |row| {
        let (_, v) = row?;
        value(v)
    });
    Ok(if descending {
        Box::new(rows.rev())
    } else {
        Box::new(rows)
    })
}

/// Merges ascending (or, when `descending`, descending) id streams into one, without
/// repeats.
struct Merge<'a> {
    parts: Vec<IdStream<'a>>,
    descending: bool,
    last: Option<u64>,
}

impl Iterator for Merge<'_> {
    type Item = Result<u64, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, part) in self.parts.iter_mut().enumerate() {
                match part.peek() {
                    None => {}
                    Some(Err(_)) => return part.next(),
                    Some(Ok(id)) => {
                        let better =
                            best.is_none_or(
                                |(_, b)| {
                                    if self.descending {
                                        *id > b
                                    } else {
                                        *id < b
                                    }
                                },
                            );
                        if better {
                            best = Some((i, *id));
                        }
                    }
                }
            }
            let (i, id) = best?;
            self.parts[i].next();
            if self.last != Some(id) {
                self.last = Some(id);
                return Some(Ok(id));
            }
        }
    }
}

/// The ids present in every input stream, in query order: each input is advanced to
/// the furthest head until all heads agree.
struct Intersection<'a> {
    inputs: Vec<IdStream<'a>>,
    descending: bool,
}

impl Iterator for Intersection<'_> {
    type Item = Result<u64, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let before = |a: u64, b: u64| if self.descending { a > b } else { a < b };
        loop {
            let mut target: Option<u64> = None;
            for input in &mut self.inputs {
                match input.peek()? {
                    Err(_) => return input.next(),
                    Ok(id) => {
                        if target.is_none_or(|t| before(t, *id)) {
                            target = Some(*id);
                        }
                    }
                }
            }
            let target = target?;
            let mut agreed = true;
            for input in &mut self.inputs {
                loop {
                    match input.peek()? {
                        Err(_) => return input.next(),
                        Ok(id) if before(*id, target) => {
                            input.next();
                        }
                        Ok(id) => {
                            agreed &= *id == target;
                            break;
                        }
                    }
                }
            }
            if agreed {
                for input in &mut self.inputs {
                    input.next();
                }
                return Some(Ok(target));
            }
        }
    }
}
