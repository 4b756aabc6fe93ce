//! The candidates each search term and filter of a query contributes: an index range
//! read whole (a set of contact numbers), key prefixes whose contact numbers are
//! streamed in order, or nothing usable (contacts are then checked one by one). See `query` for how they are combined.

use super::keys;
use super::lsm::{Index, IndexView};
use super::names::words_with;
use super::query::{QueryLimits, Snapshot};
use crate::domain::query::{Cmp, Op, Query};
use crate::domain::search::substring_pieces;
use crate::store::codec::expect_email;
use crate::store::StoreError;

/// The contact numbers of a term's rare words, and the key prefixes of its common ones.
type RareAndCommon = (Vec<u64>, Vec<Vec<u8>>);

/// What one term or filter contributes.
pub(super) enum Candidates {
    /// Every contact it accepts, ascending.
    Ids(Vec<u64>),
    /// Too many to read whole, but streamable in id order: these contact numbers
    /// (ascending) and those after each of these key prefixes of the index (one word, one
    /// value), which follow in ascending order.
    Streamed(Index, Vec<u64>, Vec<Vec<u8>>),
    /// No usable index range: contacts are checked one by one.
    Unindexed,
    /// The candidates given before it for this filter may hold more than it accepts:
    /// each is checked, and their number is no total.
    Inexact,
}

pub(super) fn candidates(
    snap: &Snapshot,
    agent: &str,
    query: &Query,
    limits: QueryLimits,
    small_agent: bool,
) -> Result<Vec<Candidates>, StoreError> {
    // A range that can be streamed is read whole only while that is cheap: in a small
    // agent, or up to what is ordered in memory anyway. (Reading 20,000 entries of a
    // common word only to give up would cost more than streaming it.)
    let streamable_cap = if small_agent {
        limits.cap
    } else {
        limits.common_word.max(limits.in_memory / 4).min(limits.cap)
    };
    let mut out = Vec::new();
    for term in &query.terms {
        let mut start = keys::prefix(&[agent.as_bytes()]);
        keys::push_escaped(&mut start, term.as_bytes());
        let found = match term_words(snap.index()?, agent, &start, limits, streamable_cap)? {
            Some((ids, common)) if common.is_empty() => Candidates::Ids(ids),
            Some((rare, common)) => Candidates::Streamed(Index::Words, rare, common),
            None => Candidates::Unindexed,
        };
        out.push(found);
    }
    for filter in &query.filters {
        let field = filter.field.as_str();
        let text = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        let found = match (field, &filter.op) {
            ("email", Op::Eq(key)) => {
                let ext = snap.email_holder(agent, &text(key))?;
                let found = match ext {
                    Some(ext) => Some(expect_email(snap.indexed(agent, &ext)?, &text(key))?),
                    None => None,
                };
                Candidates::Ids(found.map(|c| vec![c.id]).unwrap_or_default())
            }
            ("external_id", Op::Eq(key)) => {
                let found = snap.by_ext(agent, &text(key))?;
                Candidates::Ids(found.map(|c| vec![c.id]).unwrap_or_default())
            }
            ("name", Op::Contains(key)) => {
                // The word index mixes a contact's name words with its other words, so
                // the candidates are checked.
                for piece in substring_pieces(key) {
                    let words = words_with(&snap.name_infixes()?, agent, &piece, limits.words)?;
                    out.push(match words {
                        Some(words) => word_ranges(snap.index()?, agent, &words, limits)?,
                        None => Candidates::Unindexed,
                    });
                }
                Candidates::Inexact
            }
            ("email" | "external_id", _) | (_, Op::Exists(false) | Op::Ne(_) | Op::Contains(_)) => {
                Candidates::Unindexed
            }
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
                    // Substrings and `ne` are matched before this arm; what holds a
                    // substring has a value.
                    Op::Exists(_) | Op::Ne(_) | Op::Contains(_) => (field_start, field_end, false),
                };
                let cap = if streamable {
                    streamable_cap
                } else {
                    limits.cap
                };
                match collect(snap.index()?, Index::Sort, &lower, Some(&upper), cap)? {
                    Some(ids) => Candidates::Ids(ids),
                    None if streamable => {
                        Candidates::Streamed(Index::Sort, Vec::new(), vec![lower])
                    }
                    None => Candidates::Unindexed,
                }
            }
        };
        out.push(found);
    }
    Ok(out)
}

/// The contacts of `agent` whose sort-index entry for `field` is `value`, ascending.
pub fn value_holders(
    view: &IndexView,
    agent: &str,
    field: &str,
    value: &[u8],
) -> Result<Vec<u64>, StoreError> {
    let at = keys::prefix(&[agent.as_bytes(), field.as_bytes(), value]);
    let end = keys::prefix_end(&at);
    let found = collect(view, Index::Sort, &at, Some(&end), usize::MAX)?;
    Ok(found.unwrap_or_default())
}

/// The contacts under each of `words` (whole words) in the word index: each word read
/// whole up to `limits.common_word` entries, else streamed; unindexed past
/// `limits.max_common_words` streamed words.
fn word_ranges(
    view: &IndexView,
    agent: &str,
    words: &[String],
    limits: QueryLimits,
) -> Result<Candidates, StoreError> {
    let mut rare = Vec::new();
    let mut common = Vec::new();
    for word in words {
        let prefix = keys::prefix(&[agent.as_bytes(), word.as_bytes()]);
        match collect(view, Index::Words, &prefix, None, limits.common_word)? {
            Some(ids) => rare.extend(ids),
            None if common.len() < limits.max_common_words => common.push(prefix),
            None => return Ok(Candidates::Unindexed),
        }
    }
    rare.sort_unstable();
    rare.dedup();
    Ok(if common.is_empty() {
        Candidates::Ids(rare)
    } else {
        Candidates::Streamed(Index::Words, rare, common)
    })
}

/// The contact numbers of the keys from `lower` while below `upper` (without one:
/// while they start with `lower`), sorted and without repeats; `None` past `cap`
/// entries.
pub(super) fn collect(
    view: &IndexView,
    index: Index,
    lower: &[u8],
    upper: Option<&[u8]>,
    cap: usize,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut ids = Vec::new();
    let end = upper.map_or_else(|| keys::successor(lower), |u| Some(u.to_vec()));
    let mut range = view.range(index, lower, end.as_deref(), false)?;
    while range.advance()? {
        let key = range.key();
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

/// The words that start with the escaped term `start` (after the agent's segment), in
/// one pass: the contact numbers of the words read whole, sorted, and the key prefixes of
/// the common words, to be streamed. While the term has at most `cap` entries every word
/// is read whole (so with no common word the numbers are the term's whole answer); past
/// that, a word is cut once it has more than `limits.common_word` entries, and the range jumps
/// past it (from the start when the run directories show the term to be large). `None`
/// past `cap` entries and `limits.words` distinct words or `limits.max_common_words` common ones.
pub(super) fn term_words(
    view: &IndexView,
    agent: &str,
    start: &[u8],
    limits: QueryLimits,
    cap: usize,
) -> Result<Option<RareAndCommon>, StoreError> {
    let agent_len = keys::prefix(&[agent.as_bytes()]).len();
    let malformed = || StoreError::Corrupt("a malformed word index key".into());
    let mut whole = Vec::new();
    let mut common = Vec::new();
    let mut seen = 0;
    let end = keys::successor(start);
    // A term the run directories already show to be large cuts its common words from
    // the start, rather than reading `cap` entries to find that out.
    let large = end
        .as_deref()
        .is_some_and(|end| view.surely_more_than(Index::Words, start, end, cap as u64));
    let mut read = if large { cap } else { 0 };
    // The word being read: its key prefix and its contact numbers so far.
    let mut current: Option<(Vec<u8>, Vec<u64>)> = None;
    let mut range = view.range(Index::Words, start, end.as_deref(), false)?;
    loop {
        let more = range.advance()?;
        let key = Some(range.key()).filter(|k| more && k.starts_with(start));
        let Some(key) = key else {
            if let Some((_, ids)) = current.take() {
                whole.extend(ids);
            }
            break;
        };
        let id = keys::id_of(key).ok_or_else(malformed)?;
        read += 1;
        if let Some((word, ids)) = &mut current {
            if key.starts_with(word.as_slice()) {
                if read <= cap || ids.len() < limits.common_word {
                    ids.push(id);
                    continue;
                }
                if common.len() == limits.max_common_words {
                    return Ok(None);
                }
                let past = keys::prefix_end(word);
                common.push(std::mem::take(word));
                current = None;
                range.seek(&past)?;
                continue;
            }
        }
        if let Some((_, ids)) = current.take() {
            whole.extend(ids);
        }
        seen += 1;
        if seen > limits.words && read > cap {
            return Ok(None);
        }
        let (word, _) = keys::split_seg(&key[agent_len..]).ok_or_else(malformed)?;
        current = Some((keys::prefix(&[agent.as_bytes(), &word]), vec![id]));
    }
    whole.sort_unstable();
    whole.dedup();
    Ok(Some((whole, common)))
}
