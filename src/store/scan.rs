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

/// Walks a table keyed by `(&str, &str)` from the start, handing each row to `row`;
/// a failed read is a [`Gap`], after which the walk resumes at the first of the keys
/// `hints` gives (sorted; asked for at the first gap) past the last key read whose
/// read succeeds.
pub fn walk_pairs<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, &'static str), V>,
    hints: &dyn Fn() -> Vec<Pair>,
    row: &mut dyn FnMut(&str, &str, AccessGuard<'_, V>),
) -> Vec<Gap> {
    let mut known: Option<Vec<Pair>> = None;
    let mut gaps = Vec::new();
    // Where this attempt starts, the last key read by any, and the gap whose end is
    // not known yet.
    let mut from: Option<Pair> = None;
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
                row(a, b, value);
            }
            Ok(())
        });
        if let (Some(mut gap), Some(first)) = (open.take(), &first) {
            gap.resumed = Some(show_pair(first));
            gaps.push(gap);
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
        let hints = known.get_or_insert_with(hints);
        if let Some(key) = &last {
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
/// the damage (by doubling, then halving, the step), and goes on to the next of
/// `agents` (sorted) when none of this agent's does.
pub fn walk_numbers<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    agents: &[String],
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
        let resume = first_readable(table, &agent, n)
            .map(|at| (agent.clone(), at))
            .or_else(|| {
                agents
                    .iter()
                    .filter(|a| **a > agent)
                    .find(|a| readable(table, a, 0))
                    .map(|a| (a.clone(), 0))
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

/// The first number above `n` of `agent` from which a read succeeds, if any.
fn first_readable<V: redb::Value + 'static>(
    table: &ReadOnlyTable<(&'static str, u64), V>,
    agent: &str,
    n: u64,
) -> Option<u64> {
    // Doubling steps find a readable start; halving them back finds the first one.
    let mut bad = n;
    let mut step = 1u64;
    let good = loop {
        let probe = n.checked_add(step)?;
        if readable(table, agent, probe) {
            break probe;
        }
        bad = probe;
        step = step.checked_mul(2)?;
    };
    let (mut bad, mut good) = (bad, good);
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
