//! Running a list query on one read snapshot.
//!
//! **Plain listing** (no `q`, no filter): a walk of the table that holds the sort
//! field in order — the contact records for `created_at`, `contacts_by_external_id` for
//! `external_id`, `contacts_by_email` for `email`, the sort index for the rest — from
//! the cursor (or offset), then, when some contacts have no value for the field, a walk
//! of the records for those. O(page) for cursors.
//!
//! **Cursor pages of a search or filter in another order than creation** first walk
//! that order from the cursor, loading and checking each contact, for at most
//! [`CURSOR_LOADS_PER_ROW`] loads per row: matches usually go on right after the
//! cursor. Such a page has no total. Only when the walk does not fill the page does it
//! go on as below.
//!
//! **Search and filters**: every term and filter gives *candidates*, an index range
//! that holds exactly the contacts it accepts: a term is the word-index range of the
//! words it is a prefix of, a filter a range of the sort index (or one email/external
//! id). A range is read whole when it is small — up to `QueryLimits::cap` entries, or
//! only a quarter of `QueryLimits::in_memory` for a range that can be streamed instead
//! (a term's words, an exact value) in an agent larger than `cap` — and complete ranges
//! are intersected into a candidate set. A larger range is, when it is a few key
//! prefixes of contact numbers (common words, one value), streamed in id order, and
//! otherwise left to checking. Then:
//! - at most `QueryLimits::in_memory` candidates in `created_at` order: load them, keep
//!   those `domain::query` accepts, order them with it (the same code the tests use as
//!   the reference); exact total;
//! - `created_at` order: intersect the candidate set and the streams in id order,
//!   stopping once the page is full;
//! - any other order: the matches, when at most `QueryLimits::sorted` (the candidate
//!   set, or what it shares with the streams). A first or cursor page in an order of the
//!   sort index walks it from the cursor loading only matches, for at most
//!   [`WALK_PER_LOAD`] entries per match; otherwise, or when that is not enough, the
//!   matches are loaded and ordered in memory as above. With more matches, that field's
//!   order is walked (as for the plain listing), skipping non-candidates before loading.
//!
//! The total is exact for matches counted from the index with nothing left to checking;
//! otherwise it is `None` (too many to count quickly). Every contact returned is checked
//! with `Query::matches`, so an index can make a query slower but never wrong.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::ops::Bound;

use redb::{AccessGuard, ReadOnlyTable, ReadTransaction};

use super::candidates::{candidates, Candidates};
use super::keys;
use super::lsm::unlogged::Held;
use super::lsm::{Index, IndexView};
use super::streams::{intersect, list_stream, prefix_stream, IdStream, Intersection, Results};
use crate::domain::query::{Position, Query};
use crate::domain::search::sort_key;
use crate::domain::Contact;
use crate::store::blocks::{self, CONTACT_BLOCKS};
use crate::store::codec::{decode_agent, decode_stored_contact, expect_email};
use crate::store::contacts::{contact_by_ext, contact_by_number, indexed_as};
use crate::store::deferred::{or_stored, KeysView, Merged};
use crate::store::tables::{
    AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, FIELD_COUNTS, NAME_INFIXES,
};
use crate::store::StoreError;

/// How much work a query may spend on each strategy. The defaults keep every
/// strategy within a few milliseconds at a million contacts; tests shrink them to
/// drive small data through every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Most entries read from one index range to make a candidate set.
    pub cap: usize,
    /// Most candidates loaded and ordered in memory.
    pub in_memory: usize,
    /// Most matches of a search or a large filter collected from its index streams
    /// and ordered in memory, when it is sorted by another field than creation order:
    /// walking that field's order and checking every contact costs a walk of the
    /// whole agent.
    pub sorted: usize,
    /// Entries from which a word counts as common: a large search term reads its rare
    /// words whole and streams its common ones.
    pub common_word: usize,
    /// Most common words a streamed search term may span.
    pub max_common_words: usize,
    /// Most distinct words a streamed search term may span.
    pub words: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            cap: 20_000,
            in_memory: 2_000,
            sorted: 10_000,
            common_word: 64,
            max_common_words: 64,
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

/// A read snapshot with what else its queries read: the index blocks it holds and the
/// external-id and email entries it sees that its B-trees do not hold yet.
pub struct ReadView {
    pub txn: ReadTransaction,
    pub held: Held,
    pub keys: KeysView,
}

/// The tables a query reads, from one snapshot. The sort and word indexes are opened
/// only by the queries that read them (opening them reads the index log and every run's
/// directory).
pub(super) struct Snapshot<'t> {
    txn: &'t ReadTransaction,
    pub(super) contacts: ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    pub(super) by_ext: ReadOnlyTable<(&'static str, &'static str), u64>,
    pub(super) by_email: ReadOnlyTable<(&'static str, &'static str), &'static str>,
    index: OnceCell<IndexView>,
    held: &'t Held,
    /// The external-id and email entries the B-trees do not hold yet.
    keys: &'t KeysView,
}

impl<'t> Snapshot<'t> {
    fn open(
        txn: &'t ReadTransaction,
        held: &'t Held,
        keys: &'t KeysView,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            txn,
            held,
            keys,
            contacts: txn.open_table(CONTACTS)?,
            by_ext: txn.open_table(CONTACTS_BY_EXTERNAL_ID)?,
            by_email: txn.open_table(CONTACTS_BY_EMAIL)?,
            index: OnceCell::new(),
        })
    }

    /// The sort and word indexes of the snapshot.
    pub(super) fn index(&self) -> Result<&IndexView, StoreError> {
        if let Some(view) = self.index.get() {
            return Ok(view);
        }
        let view = IndexView::open(self.txn, self.held)?;
        Ok(self.index.get_or_init(|| view))
    }

    pub(super) fn by_ext(&self, agent: &str, ext: &str) -> Result<Option<Contact>, StoreError> {
        let number = or_stored(self.keys.ext(agent, ext), || {
            Ok(self.by_ext.get((agent, ext))?.map(|v| v.value()))
        })?;
        contact_by_ext(&self.contacts, number, agent, ext)
    }

    /// The external id of the contact that holds email `key`.
    pub(super) fn email_holder(
        &self,
        agent: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        or_stored(self.keys.email(agent, key), || {
            Ok(self
                .by_email
                .get((agent, key))?
                .map(|v| v.value().to_owned()))
        })
    }

    /// The name-word dictionary (see `names`).
    pub(super) fn name_infixes(&self) -> Result<ReadOnlyTable<&'static [u8], ()>, StoreError> {
        Ok(self.txn.open_table(NAME_INFIXES)?)
    }

    /// The contact an index entry names; an entry without one is corruption.
    pub(super) fn indexed(&self, agent: &str, ext: &str) -> Result<Contact, StoreError> {
        self.by_ext(agent, ext)?.ok_or_else(|| {
            StoreError::Corrupt(format!("an index names '{ext}' but no such contact exists"))
        })
    }

    /// Contact number `id`, which an index entry names: without one, corruption.
    fn by_id(&self, agent: &str, id: u64) -> Result<Contact, StoreError> {
        contact_by_number(&self.contacts, agent, id)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "an index names contact {id} but no such contact exists"
            ))
        })
    }
}

/// Runs `query` for `agent`: at most `limit` contacts from `start`, on the snapshot of
/// `view` and what was taken with it.
pub fn execute(
    view: &ReadView,
    agent: &str,
    query: &Query,
    start: &Start,
    limit: usize,
    limits: QueryLimits,
) -> Result<QueryPage, StoreError> {
    let txn = &view.txn;
    let agent_total = match txn.open_table(AGENTS)?.get(agent)? {
        Some(bytes) => decode_agent(agent, bytes.value())?.contact_count,
        None => return Err(StoreError::AgentNotFound),
    };
    let with_value = txn
        .open_table(FIELD_COUNTS)?
        .get((agent, query.sort_field.as_str()))?
        .map_or(0, |v| v.value());
    let has_tail = with_value < agent_total;
    let snap = Snapshot::open(txn, &view.held, &view.keys)?;
    let (offset, after) = match start {
        Start::Offset(n) => (usize::try_from(*n).unwrap_or(usize::MAX), None),
        Start::After(pos) => (0, Some(pos)),
    };
    if query.terms.is_empty() && query.filters.is_empty() {
        let mut page = if query.sort_field == "created_at" {
            // A cursor says where to go on; an offset is found through the block
            // counts, and what remains of it skipped in the records without decoding
            // them.
            let (from, skip) = match after {
                Some(pos) => (Some(pos.id), 0),
                None if offset == 0 => (None, 0),
                None => match locate_offset(txn, agent, offset as u64, query.descending)? {
                    Some(found) => found,
                    None => (Some(if query.descending { 0 } else { u64::MAX }), 0),
                },
            };
            let mut ids = id_rows(&snap, agent, from, query.descending)?;
            for skipped in ids
                .by_ref()
                .take(usize::try_from(skip).unwrap_or(usize::MAX))
            {
                skipped?;
            }
            let rows =
                Box::new(ids.map(|row| row.and_then(|(id, record)| decode(agent, id, &record))));
            take_page(rows, 0, limit, |_| true, query)?
        } else {
            let walk = Walk::everything();
            let rows = ordered(&snap, agent, query, after, has_tail, &walk)?;
            take_page(rows, offset, limit, |_| true, query)?
        };
        page.total = Some(agent_total);
        return Ok(page);
    }

    // A cursor page in another order than creation: the matches usually go on right
    // after the cursor, so the order is walked from there first, checking each contact,
    // for a few loads per row. Only when that does not fill the page are the terms and
    // filters read from the index.
    if let (Some(pos), false) = (after, query.sort_field == "created_at") {
        let walk = Walk::bounded(None, (limit + 1).saturating_mul(CURSOR_LOADS_PER_ROW));
        let rows = ordered(&snap, agent, query, Some(pos), has_tail, &walk)?;
        let page = take_page(rows, 0, limit, |c| query.matches(c), query)?;
        if !walk.cut.get() {
            return Ok(page);
        }
    }

    let mut sets: Vec<Vec<u64>> = Vec::new();
    let mut streams: Vec<TermStream> = Vec::new();
    let mut unchecked = false;
    let small_agent = usize::try_from(agent_total).is_ok_and(|n| n <= limits.cap);
    for found in candidates(&snap, agent, query, limits, small_agent)? {
        match found {
            Candidates::Ids(ids) => sets.push(ids),
            Candidates::Streamed(index, rare, common) => streams.push((index, rare, common)),
            Candidates::Unindexed | Candidates::Inexact => unchecked = true,
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

    // In creation order a candidate set is walked in number order, which costs what a
    // page returns; in any other order the alternative to ordering the matches in
    // memory is walking that field's order, so more are worth collecting.
    let by_number = query.sort_field == "created_at";
    let cap = if by_number {
        limits.in_memory
    } else {
        limits.in_memory.max(limits.sorted)
    };
    // The matches, or a superset checked as they load: the candidate set when small,
    // else, in another order than creation, what it shares with the streams. Whether
    // their number is the exact total.
    let small = candidates.as_ref().filter(|ids| ids.len() <= cap);
    let (matches, exact_matches) = match small {
        Some(ids) => (Some(Cow::Borrowed(ids)), exact),
        None if !by_number && !streams.is_empty() => {
            let collected = collect(&snap, candidates.as_deref(), &streams, limits.sorted)?;
            (collected.map(Cow::Owned), !unchecked)
        }
        None => (None, false),
    };
    if let Some(ids) = matches {
        // A first or cursor page in an indexed order walks that order, loading only
        // matches, as long as that costs less than loading them all.
        if !by_number && offset == 0 && exact_matches && walks_index(query) {
            let walk = Walk::within(ids.iter().copied().collect(), ids.len() * WALK_PER_LOAD);
            let rows = ordered(&snap, agent, query, after, has_tail, &walk)?;
            let mut page = take_page(rows, 0, limit, |c| query.matches(c), query)?;
            if !walk.cut.get() {
                page.total = Some(ids.len() as u64);
                return Ok(page);
            }
        }
        return in_memory(&snap, agent, query, &ids, offset, after, limit);
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
        for (index, rare, common) in &streams {
            inputs.push(prefix_stream(
                snap.index()?,
                *index,
                rare,
                common,
                from,
                query.descending,
            )?);
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
        let walk = Walk {
            keep: candidates.map(|ids| ids.into_iter().collect()),
            ..Walk::everything()
        };
        let rows = ordered(&snap, agent, query, after, has_tail, &walk)?;
        let accept = |c: &Contact| walk.keeps(c.id) && query.matches(c);
        take_page(rows, offset, limit, accept, query)?
    };
    page.total = total;
    Ok(page)
}

/// Where the `offset`-th contact of `agent` in creation order is (see
/// `blocks::locate`), as an exclusive bound for [`id_rows`] and the entries to skip
/// after it; `None` past the last contact.
fn locate_offset(
    txn: &ReadTransaction,
    agent: &str,
    offset: u64,
    descending: bool,
) -> Result<Option<(Option<u64>, u64)>, StoreError> {
    let table = txn.open_table(CONTACT_BLOCKS)?;
    let found = blocks::locate(offset, descending, &mut |level, first, last| {
        blocks::read_counts(&table, agent, level, first, last)
    })?;
    Ok(found.map(|(bound, skip)| {
        // `id_rows` starts after its bound: below the block ascending (none for the
        // first block), at the block's end descending.
        let from = if descending {
            Some(bound)
        } else {
            bound.checked_sub(1)
        };
        (from, skip)
    }))
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

/// A term read as a stream: its index, the ids of its rare words read whole, and the
/// run keys of its common words.
type TermStream = (Index, Vec<u64>, Vec<Vec<u8>>);

/// The contact numbers all candidates share (the candidate set and each stream), in
/// number order, when they are at most `most`; `None` when there are more. Every id of
/// every stream is needed, so each is read whole and unmerged (see
/// `IndexView::ids_in`), in no order, and intersected through a bitmap of the ids kept
/// so far rather than sorted.
fn collect(
    snap: &Snapshot,
    candidates: Option<&[u64]>,
    streams: &[TermStream],
    most: usize,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut kept: Option<Vec<u64>> = candidates.map(<[u64]>::to_vec);
    for (index, rare, common) in streams {
        if kept.as_ref().is_some_and(Vec::is_empty) {
            // Nothing left to intersect: the other streams need not be read.
            break;
        }
        let mut ids = rare.clone();
        for prefix in common {
            let end = keys::prefix_end(prefix);
            ids.extend(snap.index()?.ids_in(*index, prefix, &end)?);
        }
        kept = Some(match kept {
            Some(kept) => Bitmap::of(&kept).take(&ids),
            None => Bitmap::of(&ids).take(&ids),
        });
    }
    let Some(mut ids) = kept.filter(|ids| ids.len() <= most) else {
        return Ok(None);
    };
    ids.sort_unstable();
    Ok(Some(ids))
}

/// A set of contact numbers, a bit each.
struct Bitmap(Vec<u64>);

impl Bitmap {
    fn of(ids: &[u64]) -> Self {
        let top = ids.iter().max().map_or(0, |&max| max / 64 + 1);
        let mut words = vec![0u64; usize::try_from(top).unwrap_or(usize::MAX)];
        for &id in ids {
            if let Some(word) = Self::word(&mut words, id) {
                *word |= 1 << (id % 64);
            }
        }
        Self(words)
    }

    fn word(words: &mut [u64], id: u64) -> Option<&mut u64> {
        usize::try_from(id / 64).ok().and_then(|i| words.get_mut(i))
    }

    /// Those of `ids` in the set, each once (a taken id leaves the set), in `ids`' order.
    fn take(mut self, ids: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for &id in ids {
            let bit = 1 << (id % 64);
            if let Some(word) = Self::word(&mut self.0, id).filter(|w| **w & bit != 0) {
                *word &= !bit;
                out.push(id);
            }
        }
        out
    }
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

/// `(id, record)` rows of the contact records in query order, after `from`; a record is
/// decoded only by [`decode`].
fn id_rows<'a>(
    snap: &'a Snapshot,
    agent: &str,
    from: Option<u64>,
    descending: bool,
) -> Result<Results<'a, Record<'a>>, StoreError> {
    let floor = Bound::Included((agent, 0));
    let ceiling = Bound::Included((agent, u64::MAX));
    let bounds = match (from, descending) {
        (None, _) => (floor, ceiling),
        (Some(f), false) => (Bound::Excluded((agent, f)), ceiling),
        (Some(f), true) => (floor, Bound::Excluded((agent, f))),
    };
    let range = snap.contacts.range::<(&str, u64)>(bounds)?;
    let rows = range.map(|row| {
        let (key, record) = row?;
        Ok((key.value().1, record))
    });
    Ok(if descending {
        Box::new(rows.rev())
    } else {
        Box::new(rows)
    })
}

/// A contact number and its record, not decoded yet.
type Record<'a> = (u64, AccessGuard<'a, &'static [u8]>);

/// Decodes a record [`id_rows`] read.
fn decode(
    agent: &str,
    id: u64,
    record: &AccessGuard<'_, &'static [u8]>,
) -> Result<Contact, StoreError> {
    decode_stored_contact(agent, id, record.value())
}

/// Index entries a walk in sort order may read per match it could load instead. A load
/// (a B-tree lookup and a decode) costs a few µs at a million contacts, an entry
/// of the sort index (one merge step) about 0.1 µs; the bound stays below that ratio,
/// so a walk cut off wastes less than loading the matches costs.
const WALK_PER_LOAD: usize = 32;

/// Contacts a cursor page may load per row it returns while walking the order from the
/// cursor before it reads the index instead: a miss costs a few milliseconds at most.
const CURSOR_LOADS_PER_ROW: usize = 4;

/// Contact numbers a walk keeps: probed once per index entry it reads.
type IdSet = foldhash::HashSet<u64>;

/// What a walk in sort order may skip without loading the contact, and how many
/// entries it may read before it is cut off.
struct Walk {
    /// Only these contact numbers can match; `None`: any.
    keep: Option<IdSet>,
    /// Entries it may still read.
    left: Cell<usize>,
    /// Whether it stopped for want of entries left (its page may be short).
    cut: Cell<bool>,
}

impl Walk {
    fn everything() -> Self {
        Self::bounded(None, usize::MAX)
    }

    /// A walk that loads only `keep`'s contacts and reads at most `entries`.
    fn within(keep: IdSet, entries: usize) -> Self {
        Self::bounded(Some(keep), entries)
    }

    fn bounded(keep: Option<IdSet>, entries: usize) -> Self {
        Self {
            keep,
            left: Cell::new(entries),
            cut: Cell::new(false),
        }
    }

    fn keeps(&self, id: u64) -> bool {
        self.keep.as_ref().is_none_or(|k| k.contains(&id))
    }

    /// Takes one entry of the budget; `false` (and cut) when none is left.
    fn step(&self) -> bool {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.cut.set(true);
                false
            }
        }
    }
}

/// Whether the query's order is walked through the sort index (where a contact
/// number comes before the contact is loaded): not creation order, external id or
/// email, which have tables of their own.
fn walks_index(query: &Query) -> bool {
    !matches!(
        query.sort_field.as_str(),
        "created_at" | "external_id" | "email"
    )
}

/// Contacts of the agent in the query's order (ignoring its terms and filters), after
/// the cursor: the values in order, then, with `has_tail`, the contacts without one.
fn ordered<'a>(
    snap: &'a Snapshot,
    agent: &'a str,
    query: &'a Query,
    after: Option<&Position>,
    has_tail: bool,
    walk: &'a Walk,
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
                Box::new(
                    rows.take_while(|_| walk.step())
                        .map(move |r| r.and_then(|(id, record)| decode(agent, id, &record))),
                )
            }
            "external_id" => {
                let key = after_value.map(|(k, _)| String::from_utf8_lossy(&k).into_owned());
                let rows = str_range(&snap.by_ext, agent, key.as_deref(), desc, |v| v.value())?;
                let rows =
                    Merged::new(rows, snap.keys, agent, key.as_deref(), desc).map(move |row| {
                        row.and_then(|(ext, n)| indexed_as(&snap.contacts, agent, &ext, n))
                    });
                Box::new(rows.take_while(|_| walk.step()))
            }
            "email" => {
                let key = after_value.map(|(k, _)| String::from_utf8_lossy(&k).into_owned());
                let rows = str_range(&snap.by_email, agent, key.as_deref(), desc, |v| {
                    v.value().to_owned()
                })?;
                let rows =
                    Merged::new(rows, snap.keys, agent, key.as_deref(), desc).map(move |row| {
                        row.and_then(|(email, ext)| {
                            expect_email(snap.indexed(agent, &ext)?, &email)
                        })
                    });
                Box::new(rows.take_while(|_| walk.step()))
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
                let ids = snap
                    .index()?
                    .range(Index::Sort, &lower, Some(&upper), desc)?
                    .ids();
                let ids = ids
                    .take_while(|_| walk.step())
                    .filter(|id| id.as_ref().map_or(true, |&id| walk.keeps(id)));
                Box::new(ids.map(move |id| snap.by_id(agent, id?)))
            }
        }
    };
    if !has_tail {
        return Ok(valued);
    }
    let from = if in_tail { after.map(|p| p.id) } else { None };
    let tail = id_rows(snap, agent, from, desc)?
        .take_while(|_| walk.step())
        .filter(|r| r.as_ref().map_or(true, |(id, _)| walk.keeps(*id)))
        .map(move |r| r.and_then(|(id, record)| decode(agent, id, &record)))
        .filter(move |r| r.as_ref().map_or(true, |c| sort_key(c, field).is_none()));
    Ok(Box::new(valued.chain(tail)))
}

/// Rows of an `(agent, text)` table in key order (reversed when `descending`), after
/// the text `after`, each turned into a value by `value`.
/// The rows of `agent` in a `(agent, text)` table strictly beyond `after`, in key order
/// (descending: from the highest), as (text, `value` of the row's value).
fn str_range<'a, V, T>(
    table: &'a ReadOnlyTable<(&'static str, &'static str), V>,
    agent: &str,
    after: Option<&str>,
    descending: bool,
    value: impl Fn(AccessGuard<'_, V>) -> T + 'a,
) -> Result<Results<'a, (String, T)>, StoreError>
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
        let (k, v) = row?;
        Ok((k.value().1.to_owned(), value(v)))
    });
    Ok(if descending {
        Box::new(rows.rev())
    } else {
        Box::new(rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Taking ids from a bitmap of a set gives those in the set, each once, in the
        /// order they are taken.
        #[test]
        fn a_bitmap_takes_what_the_set_holds_once(
            set in proptest::collection::vec(0u64..300, 0..40),
            ids in proptest::collection::vec(0u64..400, 0..60),
        ) {
            let mut want = Vec::new();
            for id in &ids {
                if set.contains(id) && !want.contains(id) {
                    want.push(*id);
                }
            }
            prop_assert_eq!(Bitmap::of(&set).take(&ids), want);
        }
    }
}
