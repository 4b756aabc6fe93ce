//! Walking a table past damage, for `contactd check` and `contactd salvage`. A range
//! read stops at a damaged page (redb reports corruption, or panics on a malformed
//! page); the walk notes where, and resumes beyond it: at the next of the known keys
//! (`hints`) whose read succeeds, or, for contact numbers, at the first number past
//! the damaged page. What lies between is what the damage took.

use std::ops::Bound;

use redb::{AccessGuard, ReadOnlyTable};

use super::damage::unpanic;
use super::StoreError;

/// Where a walk met damage and where it went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The last key read before the damage (`None`: from the start).
    pub after: Option<String>,
    /// The first key read after it (`None`: nothing more could be read).
    pub resumed: Option<String>,
    pub error: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let after = self.after.as_deref().unwrap_or("the start");
        match &self.resumed {
            Some(at) => write!(
                f,
                "unreadable after {after}, read again from {at}: {}",
                self.error
            ),
            None => write!(f, "unreadable after {after} to the end: {}", self.error),
        }
    }
}

/// A `(&str, &str)` key, owned.
pub type Pair = (String, String);

/// Known keys where a walk of a `(&str, &str)` table can resume past damage.
pub enum Hints<'a> {
    None,
    /// Sorted.
    Known(&'a [Pair]),
}

/// Walks a table keyed by `(&str, &str)` from `start` (or the beginning), handing
/// each row to `row` until it returns false; a failed read is a [`Gap`], after which
/// the walk resumes at the first of `hints` past the last key read whose read succeeds.
pub fn walk_pairs<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, &'static str), V>,
    start: Option<Pair>,
    hints: Hints<'_>,
    row: &mut dyn FnMut(&str, &str, AccessGuard<'_, V>) -> bool,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    // Where this attempt starts, the last key read by any, and the gap whose end is
    // not known yet.
    let mut from = start;
    let mut last: Option<Pair> = None;
    let mut open: Option<Gap> = None;
    // Hints before this one were tried or passed.
    let mut next_hint = 0;
    loop {
        let mut first: Option<Pair> = None;
        let outcome = unpanic("a range read", || {
            let lower = from.as_ref().map_or(Bound::Unbounded, |(a, b)| {
                Bound::Included((a.as_str(), b.as_str()))
            });
            for item in table.range::<(&str, &str)>((lower, Bound::Unbounded))? {
                let (key, value) = item?;
                let (a, b) = key.value();
                let key = (a.to_owned(), b.to_owned());
                first.get_or_insert_with(|| key.clone());
                last = Some(key);
                if !row(a, b, value) {
                    break;
                }
            }
            Ok(())
        });
        if let Some(first) = &first {
            if let Some(mut gap) = open.take() {
                gap.resumed = Some(show_pair(first));
                gaps.push(gap);
            }
        }
        let err = match outcome {
            Ok(()) => {
                gaps.extend(open);
                return gaps;
            }
            Err(err) => err,
        };
        open.get_or_insert_with(|| Gap {
            after: last.as_ref().map(show_pair),
            resumed: None,
            error: err.to_string(),
        });
        let hints: &[Pair] = match hints {
            Hints::None => &[],
            Hints::Known(known) => known,
        };
        if let Some(key) = last.as_ref().or(from.as_ref()) {
            next_hint = next_hint.max(hints.partition_point(|h| h <= key));
        }
        match hints.get(next_hint) {
            Some(hint) => {
                from = Some(hint.clone());
                next_hint += 1;
            }
            None => {
                gaps.extend(open);
                return gaps;
            }
        }
    }
}

fn show_pair((a, b): &Pair) -> String {
    format!("{a}/{b}")
}

/// Walks a table keyed by `(&str, u64)` (contact numbers) from the start, handing each
/// row to `row`; after a failed read it finds the first number whose read succeeds past
/// the damage (see [`first_readable`]; no number is above `ceiling`, the next contact
/// number, or `u64::MAX` when it is not known), and goes on to the next of `agents`
/// (sorted) when none of this agent's does.
pub fn walk_numbers<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    agents: &[String],
    ceiling: u64,
    row: &mut dyn FnMut(&str, u64, AccessGuard<'_, V>),
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut from: Option<(String, u64)> = None;
    let mut last: Option<(String, u64)> = None;
    loop {
        let start = from.clone();
        let outcome = read_numbers(table, start.as_ref(), &mut last, row);
        let Err(err) = outcome else {
            return gaps;
        };
        let (agent, n) = last
            .clone()
            .or_else(|| start.clone())
            .unwrap_or_else(|| (agents.first().cloned().unwrap_or_default(), 0));
        let resume = first_readable(table, &agent, n, ceiling)
            .map(|at| (agent.clone(), at))
            .or_else(|| {
                agents.iter().filter(|a| **a > agent).find_map(|a| {
                    let at = if readable(table, a, 0) {
                        Some(0)
                    } else {
                        first_readable(table, a, 0, ceiling)
                    };
                    at.map(|at| (a.clone(), at))
                })
            });
        gaps.push(Gap {
            after: last.as_ref().map(|(a, n)| format!("{a}/{n}")),
            resumed: resume.as_ref().map(|(a, n)| format!("{a}/{n}")),
            error: err.to_string(),
        });
        match resume {
            Some(at) if Some(&at) != start.as_ref() => from = Some(at),
            _ => return gaps,
        }
    }
}

fn read_numbers<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    from: Option<&(String, u64)>,
    last: &mut Option<(String, u64)>,
    row: &mut dyn FnMut(&str, u64, AccessGuard<'_, V>),
) -> Result<(), StoreError> {
    unpanic("a range read", || {
        let lower = from.map_or(Bound::Unbounded, |(a, n)| Bound::Included((a.as_str(), *n)));
        for item in table.range::<(&str, u64)>((lower, Bound::Unbounded))? {
            let (key, value) = item?;
            let (a, n) = key.value();
            *last = Some((a.to_owned(), n));
            row(a, n, value);
        }
        Ok(())
    })
}

/// Whether a range read from `(agent, n)` gets its first row (or the end) readably.
fn readable<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    agent: &str,
    n: u64,
) -> bool {
    unpanic("a range read", || {
        let mut range = table.range::<(&str, u64)>((agent, n)..)?;
        range.next().transpose()?;
        Ok(())
    })
    .is_ok()
}

/// Most numbers a probe skips at once: a readable stretch of a table narrower
/// than this between two damaged pages may be passed over (a page holds more).
const MAX_STEP: u64 = 64;

/// The first number above `n` (and at most `ceiling`) of `agent` from which a read
/// succeeds, if any: probes at steps that double up to [`MAX_STEP`] and then stay
/// there (without a ceiling they keep doubling), then halve back to the first readable
/// one.
fn first_readable<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    agent: &str,
    n: u64,
    ceiling: u64,
) -> Option<u64> {
    let mut bad = n;
    let mut step = 1u64;
    let good = loop {
        let probe = bad.checked_add(step).filter(|p| *p <= ceiling)?;
        if readable(table, agent, probe) {
            break probe;
        }
        bad = probe;
        step = step.saturating_mul(2);
        if ceiling != u64::MAX {
            step = step.min(MAX_STEP);
        }
    };
    let mut good = good;
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        if readable(table, agent, mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}
