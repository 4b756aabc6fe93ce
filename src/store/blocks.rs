//! Live contacts per block of contact numbers, so that `page=P` in creation order
//! starts at its first contact without walking the ones before it.
//!
//! Contact numbers grow, so creation order is number order. The table counts, per
//! agent, the contacts alive in each block of [`SIZE`] numbers (level 1) and in each
//! block of `SIZE²` numbers (level 2). A page's offset is found by walking the agent's
//! level-2 counts to the block that holds it, that block's level-1 counts to the
//! smaller one, and then at most `SIZE - 1` contact records: a few thousand reads
//! however deep the page, where walking the records read every contact before it. The counts change in the transaction that creates or deletes a contact.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::tables::{CONTACTS, META};
use super::StoreError;

/// `(agent_id, level, block)` → contacts alive with a number in the block.
pub const CONTACT_BLOCKS: TableDefinition<(&str, u64, u64), u64> =
    TableDefinition::new("contact_blocks");

/// Set in `meta` once the table holds every agent's counts.
const META_BLOCKS: &str = "contact_blocks";

/// Contact numbers per level-1 block (level 2: its square).
pub const SIZE: u64 = 1024;
const LEVELS: [u32; 2] = [10, 20];

/// The block of `id` at `level` (1 or 2).
fn block(id: u64, level: u64) -> u64 {
    let shift = LEVELS[usize::try_from(level - 1).unwrap_or(0).min(1)];
    id >> shift
}

/// Changes of the counts, gathered before they are written.
#[derive(Debug, Default)]
pub struct Deltas(BTreeMap<(u64, u64), i64>);

impl Deltas {
    /// Contact `id` was created (`+1`) or deleted (`-1`).
    pub fn add(&mut self, id: u64, delta: i64) {
        for level in [1, 2] {
            *self.0.entry((level, block(id, level))).or_default() += delta;
        }
    }

    /// The counts gathered, by `(level, block)` (for `contactd check`).
    pub fn counts(&self) -> &BTreeMap<(u64, u64), i64> {
        &self.0
    }

    /// Adds the changes to `agent`'s counts.
    pub fn write(self, txn: &WriteTransaction, agent: &str) -> Result<(), StoreError> {
        if self.0.values().all(|d| *d == 0) {
            return Ok(());
        }
        let mut table = txn.open_table(CONTACT_BLOCKS)?;
        for ((level, block), delta) in self.0 {
            if delta == 0 {
                continue;
            }
            let key = (agent, level, block);
            let now = table.get(key)?.map_or(0, |v| v.value());
            let next = now.saturating_add_signed(delta);
            if next == 0 {
                table.remove(key)?;
            } else {
                table.insert(key, next)?;
            }
        }
        Ok(())
    }
}

/// `(level, first block, last block)` → `(block, count)` of the blocks there, in order.
pub type CountsOf<'a> = dyn FnMut(u64, u64, u64) -> Result<Vec<(u64, u64)>, StoreError> + 'a;

/// Where the `offset`-th contact of an agent (counting from the newest when
/// `descending`) is: the contact-number bound to walk the records from (inclusive
/// first number ascending, exclusive last number descending) and how many entries to
/// skip there (fewer than [`SIZE`]). `None` when the agent has no more contacts.
/// `counts(level, first, last)` gives the counts of the blocks of a level between two
/// block numbers (inclusive), in block order.
pub fn locate(
    offset: u64,
    descending: bool,
    counts: &mut CountsOf<'_>,
) -> Result<Option<(u64, u64)>, StoreError> {
    let mut left = offset;
    let mut range = (0, u64::MAX);
    let mut found = 0;
    for level in [2, 1] {
        let mut blocks = counts(level, range.0, range.1)?;
        if descending {
            blocks.reverse();
        }
        let Some(&(at, _)) = blocks.iter().find(|(_, count)| {
            if left < *count {
                true
            } else {
                left -= count;
                false
            }
        }) else {
            return Ok(None);
        };
        found = at;
        // The level-1 blocks inside this level-2 one.
        let per = SIZE;
        range = (at * per, at * per + per - 1);
    }
    let first = found * SIZE;
    Ok(Some(if descending {
        (first + SIZE, left)
    } else {
        (first, left)
    }))
}

/// The counts of `agent`'s blocks at `level` between two block numbers, from a table.
pub fn read_counts(
    table: &impl ReadableTable<(&'static str, u64, u64), u64>,
    agent: &str,
    level: u64,
    first: u64,
    last: u64,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((agent, level, first)..=(agent, level, last))? {
        let (key, value) = row?;
        out.push((key.value().2, value.value()));
    }
    Ok(out)
}

/// Removes every count of an agent.
pub fn remove_agent(txn: &WriteTransaction, agent: &str) -> Result<(), StoreError> {
    txn.open_table(CONTACT_BLOCKS)?
        .retain_in((agent, 0, 0)..=(agent, u64::MAX, u64::MAX), |_, _| false)?;
    Ok(())
}

/// Counts every agent's contacts from the contact records when the table is not known to be
/// complete (a data dir from before it). Returns whether it did.
pub fn ensure(txn: &WriteTransaction) -> Result<bool, StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get(META_BLOCKS)?.is_some() {
        return Ok(false);
    }
    txn.delete_table(CONTACT_BLOCKS)?;
    let contacts = txn.open_table(CONTACTS)?;
    let mut per_agent: BTreeMap<String, Deltas> = BTreeMap::new();
    for row in contacts.iter()? {
        let (key, _) = row?;
        let (agent, id) = key.value();
        if !per_agent.contains_key(agent) {
            per_agent.insert(agent.to_owned(), Deltas::default());
        }
        if let Some(deltas) = per_agent.get_mut(agent) {
            deltas.add(id, 1);
        }
    }
    drop(contacts);
    txn.open_table(CONTACT_BLOCKS)?;
    for (agent, deltas) in per_agent {
        deltas.write(txn, &agent)?;
    }
    meta.insert(META_BLOCKS, 1)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The counts of a set of live contact numbers, at both levels.
    fn counts_of(ids: &[u64]) -> BTreeMap<(u64, u64), u64> {
        let mut deltas = Deltas::default();
        for id in ids {
            deltas.add(*id, 1);
        }
        deltas
            .0
            .into_iter()
            .map(|(k, v)| (k, u64::try_from(v).unwrap()))
            .collect()
    }

    proptest! {
        /// Walking from the bound `locate` gives and skipping what it says lands on the
        /// `offset`-th live contact, in both directions.
        #[test]
        fn locate_finds_the_offsetth_contact(
            ids in proptest::collection::btree_set(0u64..5_000_000, 0..300),
            clustered in proptest::collection::btree_set(3_000_000u64..3_004_000, 0..1500),
            pick in any::<proptest::sample::Index>(),
            descending in any::<bool>(),
        ) {
            let ids: Vec<u64> = ids.union(&clustered).copied().collect();
            let counts = counts_of(&ids);
            let mut read = |level: u64, first: u64, last: u64| {
                Ok(counts
                    .range((level, first)..=(level, last))
                    .map(|((_, b), c)| (*b, *c))
                    .collect())
            };
            let order: Vec<u64> = if descending {
                ids.iter().rev().copied().collect()
            } else {
                ids.clone()
            };
            let past_end = order.len() as u64;
            prop_assert_eq!(locate(past_end, descending, &mut read).unwrap(), None);
            if order.is_empty() {
                return Ok(());
            }
            let offset = pick.index(order.len());
            let (bound, skip) = locate(offset as u64, descending, &mut read).unwrap().unwrap();
            prop_assert!(skip < SIZE);
            let from: Vec<u64> = if descending {
                order.iter().copied().filter(|id| *id < bound).collect()
            } else {
                order.iter().copied().filter(|id| *id >= bound).collect()
            };
            prop_assert_eq!(from.get(usize::try_from(skip).unwrap()), Some(&order[offset]));
        }
    }
}
