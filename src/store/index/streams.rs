//! Streams of contact numbers in a query's order, and their merging and intersection:
//! the parts of the query planner that read index runs lazily, so a page costs what it
//! returns, not what the index holds.

use std::iter::Peekable;

use super::keys;
use super::lsm::{Index, IndexView};
use crate::store::StoreError;

pub(super) type Results<'a, T> = Box<dyn Iterator<Item = Result<T, StoreError>> + 'a>;
pub(super) type IdStream<'a> = Peekable<Results<'a, u64>>;

/// Intersects ascending id lists; `None` when there are none.
pub(super) fn intersect(mut sets: Vec<Vec<u64>>) -> Option<Vec<u64>> {
    sets.sort_by_key(Vec::len);
    let mut sets = sets.into_iter();
    let mut result = sets.next()?;
    for set in sets {
        result.retain(|id| set.binary_search(id).is_ok());
    }
    Some(result)
}

/// An ascending id list as a stream in query order, after `from`.
pub(super) fn list_stream(ids: &[u64], from: Option<u64>, descending: bool) -> IdStream<'_> {
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
pub(super) fn prefix_stream<'a>(
    view: &'a IndexView,
    index: Index,
    ids: &'a [u64],
    prefixes: &[Vec<u8>],
    from: Option<u64>,
    descending: bool,
) -> Result<IdStream<'a>, StoreError> {
    let mut parts = Vec::with_capacity(prefixes.len() + 1);
    parts.push(list_stream(ids, from, descending));
    for prefix in prefixes {
        let (lower, upper) = match (from, descending) {
            (None, _) => (prefix.clone(), keys::prefix_end(prefix)),
            (Some(f), false) => (keys::entry_after(prefix, f), keys::prefix_end(prefix)),
            (Some(f), true) => (prefix.clone(), keys::entry_at(prefix, f)),
        };
        let ids = view.range(index, &lower, Some(&upper), descending)?.ids();
        let ids: Results<'a, u64> = Box::new(ids);
        parts.push(ids.peekable());
    }
    let merged: Results<'a, u64> = Box::new(Merge {
        parts,
        descending,
        last: None,
    });
    Ok(merged.peekable())
}

/// Merges ascending (or, when `descending`, descending) id streams into one, without
/// repeats.
pub(super) struct Merge<'a> {
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
pub(super) struct Intersection<'a> {
    pub(super) inputs: Vec<IdStream<'a>>,
    pub(super) descending: bool,
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
