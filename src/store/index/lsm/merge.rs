//! Reading sorted sources as one: a cursor per source (a log block, or a run's chunks
//! loaded as it moves), merged so that the newest source's entry wins for a key and
//! removed keys disappear.

use redb::{ReadOnlyTable, ReadableTable, Table};

use std::sync::Arc;

use super::block::{unpack, Block};
use super::cache::ChunkCache;
use crate::store::StoreError;

/// A sorted source made of chunks, each a [`Block`], in key order.
pub trait Chunks {
    /// Number of chunks.
    fn count(&self) -> usize;
    /// The first key of chunk `i`.
    fn first(&self, i: usize) -> &[u8];
    fn load(&self, i: usize) -> Result<Block, StoreError>;
}

/// One block on its own (an entry of the index log).
pub struct Single(pub Block);

impl Chunks for Single {
    fn count(&self) -> usize {
        1
    }

    fn first(&self, _: usize) -> &[u8] {
        if self.0.is_empty() {
            &[]
        } else {
            self.0.key(0)
        }
    }

    fn load(&self, _: usize) -> Result<Block, StoreError> {
        Ok(self.0.clone())
    }
}

/// Where a run's chunks are read from (packed: see `block::PackedBuilder`): a table of
/// a read snapshot, or one opened in a write transaction.
pub trait ChunkTable {
    fn chunk(&self, i: u32) -> Result<Option<Block>, StoreError>;
}

impl ChunkTable for ReadOnlyTable<u32, &'static [u8]> {
    fn chunk(&self, i: u32) -> Result<Option<Block>, StoreError> {
        self.get(i)?.map(|guard| unpack(guard.value())).transpose()
    }
}

impl ChunkTable for Table<'_, u32, &'static [u8]> {
    fn chunk(&self, i: u32) -> Result<Option<Block>, StoreError> {
        self.get(i)?.map(|guard| unpack(guard.value())).transpose()
    }
}

/// An immutable sorted run: its chunks and the first key of each, and where readers
/// keep unpacked chunks.
pub struct Run<T> {
    pub id: u64,
    pub firsts: Block,
    pub table: T,
    pub cache: Option<Arc<ChunkCache>>,
}

impl<T: ChunkTable> Chunks for Run<T> {
    fn count(&self) -> usize {
        self.firsts.len()
    }

    fn first(&self, i: usize) -> &[u8] {
        self.firsts.key(i)
    }

    fn load(&self, i: usize) -> Result<Block, StoreError> {
        let missing = || StoreError::Corrupt(format!("index run {} lacks chunk {i}", self.id));
        let i = u32::try_from(i).map_err(|_| missing())?;
        if let Some(block) = self.cache.as_ref().and_then(|c| c.get(self.id, i)) {
            return Ok(block);
        }
        let block = self.table.chunk(i)?.ok_or_else(missing)?;
        if let Some(cache) = &self.cache {
            cache.insert(self.id, i, block.clone());
        }
        Ok(block)
    }
}

/// How many of `0..n` satisfy `pred`, which holds for a prefix of them.
pub(super) fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A position in one source, within a range of keys. Ascending, `pos` is the next
/// entry; descending, the one before `pos` is.
struct Cursor<'a> {
    src: &'a dyn Chunks,
    chunk: usize,
    block: Option<Block>,
    pos: usize,
    descending: bool,
    /// The bound the cursor moves towards: the range's upper bound (exclusive)
    /// ascending, its lower bound (inclusive) descending.
    bound: Vec<u8>,
    /// Where the range ends in `block`: ascending, the first entry at or past the upper
    /// bound (`len` when the block ends below it); descending, the first entry at or
    /// above the lower bound. Found once per block, so a step needs no key comparison.
    edge: usize,
}

impl<'a> Cursor<'a> {
    /// At the first entry from `lower` (ascending) or the last below `upper`.
    fn seek(
        src: &'a dyn Chunks,
        lower: &[u8],
        upper: &[u8],
        descending: bool,
    ) -> Result<Self, StoreError> {
        let n = src.count();
        let mut cursor = Self {
            src,
            chunk: 0,
            block: None,
            pos: 0,
            descending,
            bound: if descending { lower } else { upper }.to_vec(),
            edge: 0,
        };
        if descending {
            let after = partition(n, |i| src.first(i) < upper);
            if after > 0 {
                cursor.chunk = after - 1;
                let block = src.load(cursor.chunk)?;
                cursor.pos = block.lower_bound(upper);
                cursor.enter(block);
            }
        } else if n > 0 {
            cursor.chunk = partition(n, |i| src.first(i) <= lower).saturating_sub(1);
            let block = src.load(cursor.chunk)?;
            cursor.pos = block.lower_bound(lower);
            cursor.enter(block);
        }
        cursor.settle()?;
        Ok(cursor)
    }

    /// Makes `block` the current one, finding where the range ends in it.
    fn enter(&mut self, block: Block) {
        let len = block.len();
        self.edge = if self.descending {
            if len == 0 || block.key(0) >= self.bound.as_slice() {
                0
            } else {
                block.lower_bound(&self.bound)
            }
        } else if len == 0 || block.key(len - 1) < self.bound.as_slice() {
            len
        } else {
            block.lower_bound(&self.bound)
        };
        self.block = Some(block);
    }

    /// Whether the cursor is at an entry within the range.
    fn within(&self) -> bool {
        self.block.is_some()
            && if self.descending {
                self.pos > self.edge
            } else {
                self.pos < self.edge
            }
    }

    /// Moves into the neighbouring chunk while the current one has nothing left (and
    /// the range may go on there).
    fn settle(&mut self) -> Result<(), StoreError> {
        while let Some(block) = &self.block {
            if self.descending {
                if self.pos > 0 || self.edge > 0 {
                    break;
                }
                if self.chunk == 0 {
                    self.block = None;
                } else {
                    self.chunk -= 1;
                    let block = self.src.load(self.chunk)?;
                    self.pos = block.len();
                    self.enter(block);
                }
            } else {
                if self.pos < block.len() || self.edge < block.len() {
                    break;
                }
                self.chunk += 1;
                if self.chunk >= self.src.count() {
                    self.block = None;
                } else {
                    let block = self.src.load(self.chunk)?;
                    self.pos = 0;
                    self.enter(block);
                }
            }
        }
        Ok(())
    }

    fn peek(&self) -> Option<(&[u8], bool)> {
        let block = self.block.as_ref()?;
        Some(block.get(if self.descending {
            self.pos - 1
        } else {
            self.pos
        }))
    }

    fn step(&mut self) -> Result<(), StoreError> {
        if self.descending {
            self.pos -= 1;
        } else {
            self.pos += 1;
        }
        self.settle()
    }
}

/// The contact numbers of the present keys of several sources (newest first) from
/// `lower` to below `upper`, in no order and possibly repeated: the ids a [`Merged`]
/// range gives, but read one source after another instead of merged, so an entry costs
/// one step rather than a comparison with every source's cursor. A key present in a
/// source counts unless a newer source removed it (a newer source that has it present
/// counts it itself).
pub fn unordered_ids(
    sources: &[&dyn Chunks],
    lower: &[u8],
    upper: &[u8],
) -> Result<Vec<u64>, StoreError> {
    // Keys newer sources removed, and the contact numbers they end with: most entries'
    // numbers have no removal, which one bit tells without hashing the whole key.
    let mut removed: foldhash::HashSet<Vec<u8>> = foldhash::HashSet::default();
    let mut removed_ids = IdBits::default();
    let mut ids = Vec::new();
    for src in sources {
        let mut cursor = Cursor::seek(*src, lower, upper, false)?;
        // Removals this source makes apply to older sources only.
        let mut removes = Vec::new();
        while cursor.within() {
            if let Some((key, present)) = cursor.peek() {
                let id = crate::store::index::keys::id_of(key)
                    .ok_or_else(|| StoreError::Corrupt("a malformed index key".into()))?;
                if !present {
                    removes.push((id, key.to_vec()));
                } else if !removed_ids.may_hold(id) || !removed.contains(key) {
                    ids.push(id);
                }
            }
            cursor.step()?;
        }
        for (id, key) in removes {
            removed_ids.insert(id);
            removed.insert(key);
        }
    }
    Ok(ids)
}

/// A set of contact numbers as one bit each (at most 16 MiB), for numbers below
/// [`IdBits::MAX`]; larger ones (not given out in practice) are all taken as held.
#[derive(Default)]
struct IdBits(Vec<u64>);

impl IdBits {
    const MAX: u64 = 1 << 27;

    fn insert(&mut self, id: u64) {
        if id < Self::MAX {
            let word = (id / 64) as usize;
            if word >= self.0.len() {
                self.0.resize(word + 1, 0);
            }
            self.0[word] |= 1 << (id % 64);
        }
    }

    /// Whether `id` may be in the set: certainly not when this is `false`.
    fn may_hold(&self, id: u64) -> bool {
        id >= Self::MAX
            || self
                .0
                .get((id / 64) as usize)
                .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }
}

/// The entries of several sources (newest first) from `lower` to below `upper`, one
/// per key, the newest source's; removed keys are skipped unless `tombstones`.
pub struct Merged<'a> {
    /// A cursor per source, in source order (newest first).
    cursors: Vec<Cursor<'a>>,
    /// The cursors still at an entry within the bounds, as a binary heap: each before
    /// its children in key order (reversed when descending), then source order. So the
    /// root is the next key, and among cursors at that key the newest source's; a step
    /// costs O(log sources) key comparisons rather than one per source.
    heap: Vec<usize>,
    /// Bytes every key within the bounds starts with (the bounds' common prefix),
    /// which comparisons between them skip.
    common: usize,
    descending: bool,
    lower: Vec<u8>,
    upper: Vec<u8>,
    tombstones: bool,
    /// Leading bytes of every key left out of [`Merged::key`].
    strip: usize,
    key: Vec<u8>,
    present: bool,
    /// Source entries read so far (kept, superseded or removed), and their key bytes.
    consumed: u64,
    consumed_bytes: u64,
    /// Stop once this many source entries, or key bytes, were read (see
    /// [`Merged::with_limit`]).
    limit: Option<(u64, u64)>,
    stopped: bool,
}

impl<'a> Merged<'a> {
    pub fn new(
        sources: &[&'a dyn Chunks],
        lower: Vec<u8>,
        upper: Vec<u8>,
        descending: bool,
        tombstones: bool,
        strip: usize,
    ) -> Result<Self, StoreError> {
        let mut cursors = Vec::with_capacity(sources.len());
        for src in sources {
            cursors.push(Cursor::seek(*src, &lower, &upper, descending)?);
        }
        let common = lower.iter().zip(&upper).take_while(|(a, b)| a == b).count();
        let mut merged = Self {
            cursors,
            heap: Vec::with_capacity(sources.len()),
            common,
            descending,
            lower,
            upper,
            tombstones,
            strip,
            key: Vec::new(),
            present: false,
            consumed: 0,
            consumed_bytes: 0,
            limit: None,
            stopped: false,
        };
        merged.build_heap();
        Ok(merged)
    }

    /// Puts every cursor within the bounds into the heap.
    fn build_heap(&mut self) {
        self.heap.clear();
        self.heap
            .extend((0..self.cursors.len()).filter(|&i| self.cursors[i].within()));
        for at in (0..self.heap.len() / 2).rev() {
            self.sift_down(at);
        }
    }

    /// Whether cursor `a` comes before cursor `b`: its key first in the range's
    /// direction, or the same key from a newer source. Both are at an entry.
    fn before(&self, a: usize, b: usize) -> bool {
        let key = |i: usize| {
            self.cursors[i]
                .peek()
                .and_then(|(key, _)| key.get(self.common..))
                .unwrap_or_default()
        };
        let order = key(a).cmp(key(b));
        let order = if self.descending {
            order.reverse()
        } else {
            order
        };
        order.then(a.cmp(&b)).is_lt()
    }

    /// Restores the heap order below `at` after the cursor there moved on.
    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut first = at;
            if left < self.heap.len() && self.before(self.heap[left], self.heap[first]) {
                first = left;
            }
            if right < self.heap.len() && self.before(self.heap[right], self.heap[first]) {
                first = right;
            }
            if first == at {
                return;
            }
            self.heap.swap(at, first);
            at = first;
        }
    }

    /// Makes `advance` stop (returning `false`, with [`Merged::stopped`] set) once
    /// `entries` source entries, or `bytes` bytes of their keys, were read, counting
    /// entries skipped as removed or superseded: a bound on the work and the memory of
    /// what is built from it, not on what is returned.
    pub fn with_limit(mut self, entries: u64, bytes: u64) -> Self {
        self.limit = Some((entries, bytes));
        self
    }

    /// Whether `advance` stopped at the limit rather than at the end of the range.
    /// The current key is then the last one read, whether returned or skipped.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Moves to the next entry; `false` at the end.
    pub fn advance(&mut self) -> Result<bool, StoreError> {
        loop {
            let Some(&first) = self.heap.first() else {
                return Ok(false);
            };
            if self.limit.is_some_and(|(entries, bytes)| {
                self.consumed >= entries || self.consumed_bytes >= bytes
            }) {
                self.stopped = true;
                return Ok(false);
            }
            // The root holds the next key, from the newest source that has it.
            let Some((key, present)) = self.cursors[first].peek() else {
                return Ok(false);
            };
            self.key.clear();
            self.key.extend_from_slice(key);
            self.present = present;
            // Every cursor at that key moves past it; the older ones' entries are
            // superseded.
            while let Some(&top) = self.heap.first() {
                if self.cursors[top]
                    .peek()
                    .is_none_or(|(key, _)| key != self.key)
                {
                    break;
                }
                self.consumed += 1;
                self.consumed_bytes += self.key.len() as u64;
                let cursor = &mut self.cursors[top];
                cursor.step()?;
                if !cursor.within() {
                    let last = self.heap.len() - 1;
                    self.heap.swap(0, last);
                    self.heap.pop();
                }
                self.sift_down(0);
            }
            if self.present || self.tombstones {
                return Ok(true);
            }
        }
    }

    /// Moves an ascending range forward to its first entry from `key` (with the tag
    /// prefix the keys are stripped of); cheaper than opening the range again when the
    /// target is near, as most cursors then stay within the chunk they hold.
    pub fn seek(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if self.descending {
            return Err(StoreError::Backend(
                "a descending index range cannot seek forward".into(),
            ));
        }
        let mut target = self.lower.get(..self.strip).unwrap_or_default().to_vec();
        target.extend_from_slice(key);
        for &i in &self.heap {
            let cursor = &mut self.cursors[i];
            let Some(block) = &cursor.block else {
                continue;
            };
            let last = block.len().saturating_sub(1);
            if !block.is_empty() && block.key(last) >= target.as_slice() {
                if block.key(cursor.pos) < target.as_slice() {
                    cursor.pos = block.lower_bound(&target);
                }
            } else {
                *cursor = Cursor::seek(cursor.src, &target, &self.upper, false)?;
            }
        }
        self.build_heap();
        Ok(())
    }

    /// The current key (without the stripped prefix).
    pub fn key(&self) -> &[u8] {
        self.key.get(self.strip..).unwrap_or_default()
    }

    /// The current key whole.
    pub fn raw_key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the current key is present (rather than removed).
    pub fn present(&self) -> bool {
        self.present
    }

    /// The contact numbers the keys end with, as an iterator.
    pub fn ids(mut self) -> impl Iterator<Item = Result<u64, StoreError>> + 'a {
        std::iter::from_fn(move || match self.advance() {
            Ok(true) => Some(
                crate::store::index::keys::id_of(self.key())
                    .ok_or_else(|| StoreError::Corrupt("a malformed index key".into())),
            ),
            Ok(false) => None,
            Err(err) => Some(Err(err)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::index::lsm::block::BlockBuilder;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A source of several chunks of at most `per` entries each.
    struct Chunked {
        blocks: Vec<Block>,
    }

    impl Chunks for Chunked {
        fn count(&self) -> usize {
            self.blocks.len()
        }

        fn first(&self, i: usize) -> &[u8] {
            self.blocks[i].key(0)
        }

        fn load(&self, i: usize) -> Result<Block, StoreError> {
            Ok(self.blocks[i].clone())
        }
    }

    fn chunked(entries: &BTreeMap<Vec<u8>, bool>, per: usize) -> Chunked {
        let entries: Vec<_> = entries.iter().collect();
        let blocks = entries
            .chunks(per)
            .map(|chunk| {
                let mut builder = BlockBuilder::default();
                for (key, present) in chunk {
                    builder.push(key, **present);
                }
                Block::owned(builder.finish()).unwrap()
            })
            .collect();
        Chunked { blocks }
    }

    /// A key of a word byte and a contact number.
    fn key(word: u8, id: u64) -> Vec<u8> {
        let mut key = vec![word];
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    proptest! {
        /// Sources merged (newest first) read like the newest entry per key, in
        /// either direction, with or without removed keys; read unmerged, they give
        /// the same contact numbers.
        #[test]
        fn merged_sources_read_like_the_newest_entry_per_key(
            sources in proptest::collection::vec(
                proptest::collection::btree_map((0u8..4, 0u64..24), any::<bool>(), 0..40),
                1..7),
            per in 1usize..6,
            lower in 0u8..4,
            upper in 0u8..5,
        ) {
            let sources: Vec<BTreeMap<Vec<u8>, bool>> = sources
                .into_iter()
                .map(|s| s.into_iter().map(|((w, id), p)| (key(w, id), p)).collect())
                .collect();
            let mut newest: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
            for source in sources.iter().rev() {
                newest.extend(source.iter().map(|(k, p)| (k.clone(), *p)));
            }
            let (lower, upper) = (vec![lower], vec![upper]);
            let inside: Vec<(Vec<u8>, bool)> = newest
                .into_iter()
                .filter(|(k, _)| *k >= lower && *k < upper)
                .collect();
            let chunked: Vec<Chunked> = sources.iter().map(|s| chunked(s, per)).collect();
            let refs: Vec<&dyn Chunks> = chunked.iter().map(|c| c as &dyn Chunks).collect();
            for descending in [false, true] {
                for tombstones in [false, true] {
                    let mut merged = Merged::new(
                        &refs, lower.clone(), upper.clone(), descending, tombstones, 0,
                    ).unwrap();
                    let mut read = Vec::new();
                    while merged.advance().unwrap() {
                        read.push((merged.key().to_vec(), merged.present()));
                    }
                    let mut want: Vec<(Vec<u8>, bool)> = inside
                        .iter()
                        .filter(|(_, p)| tombstones || *p)
                        .cloned()
                        .collect();
                    if descending {
                        want.reverse();
                    }
                    prop_assert_eq!(read, want);
                }
            }
            let unordered: BTreeSet<u64> =
                unordered_ids(&refs, &lower, &upper).unwrap().into_iter().collect();
            let want: BTreeSet<u64> = inside
                .iter()
                .filter(|(_, p)| *p)
                .map(|(k, _)| crate::store::index::keys::id_of(k).unwrap())
                .collect();
            prop_assert_eq!(unordered, want);
        }
    }
}
