//! Reading sorted sources as one: a cursor per source (a log block, or a run's chunks
//! loaded as it moves), merged so that the newest source's entry wins for a key and
//! removed keys disappear.

use redb::{ReadOnlyTable, ReadableTable, Table};

use std::collections::HashSet;
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

/// Whether the cursor is at an entry within the bounds (the lower one when descending,
/// the upper one when ascending; it starts within the other).
fn within(cursor: &Cursor<'_>, lower: &[u8], upper: &[u8], descending: bool) -> bool {
    cursor.peek().is_some_and(|(key, _)| {
        if descending {
            key >= lower
        } else {
            key < upper
        }
    })
}

/// A position in one source. Ascending, `pos` is the next entry; descending, the one
/// before `pos` is.
struct Cursor<'a> {
    src: &'a dyn Chunks,
    chunk: usize,
    block: Option<Block>,
    pos: usize,
    descending: bool,
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
        };
        if descending {
            let after = partition(n, |i| src.first(i) < upper);
            if after > 0 {
                cursor.chunk = after - 1;
                let block = src.load(cursor.chunk)?;
                cursor.pos = block.lower_bound(upper);
                cursor.block = Some(block);
            }
        } else if n > 0 {
            cursor.chunk = partition(n, |i| src.first(i) <= lower).saturating_sub(1);
            let block = src.load(cursor.chunk)?;
            cursor.pos = block.lower_bound(lower);
            cursor.block = Some(block);
        }
        cursor.settle()?;
        Ok(cursor)
    }

    /// Moves into the neighbouring chunk while the current one has nothing left.
    fn settle(&mut self) -> Result<(), StoreError> {
        while let Some(block) = &self.block {
            if self.descending {
                if self.pos > 0 {
                    break;
                }
                if self.chunk == 0 {
                    self.block = None;
                } else {
                    self.chunk -= 1;
                    let block = self.src.load(self.chunk)?;
                    self.pos = block.len();
                    self.block = Some(block);
                }
            } else {
                if self.pos < block.len() {
                    break;
                }
                self.chunk += 1;
                if self.chunk >= self.src.count() {
                    self.block = None;
                } else {
                    self.block = Some(self.src.load(self.chunk)?);
                    self.pos = 0;
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
    let mut removed: HashSet<Vec<u8>> = HashSet::new();
    let mut ids = Vec::new();
    for src in sources {
        let mut cursor = Cursor::seek(*src, lower, upper, false)?;
        // Removals this source makes apply to older sources only.
        let mut removes = Vec::new();
        while within(&cursor, lower, upper, false) {
            if let Some((key, present)) = cursor.peek() {
                if !present {
                    removes.push(key.to_vec());
                } else if removed.is_empty() || !removed.contains(key) {
                    let id = crate::store::index::keys::id_of(key)
                        .ok_or_else(|| StoreError::Corrupt("a malformed index key".into()))?;
                    ids.push(id);
                }
            }
            cursor.step()?;
        }
        removed.extend(removes);
    }
    Ok(ids)
}

/// The entries of several sources (newest first) from `lower` to below `upper`, one
/// per key, the newest source's; removed keys are skipped unless `tombstones`.
pub struct Merged<'a> {
    /// Every cursor here is at an entry within the bounds, in source order.
    cursors: Vec<Cursor<'a>>,
    descending: bool,
    lower: Vec<u8>,
    upper: Vec<u8>,
    tombstones: bool,
    /// Leading bytes of every key left out of [`Merged::key`].
    strip: usize,
    key: Vec<u8>,
    present: bool,
    /// Cursors at the current key besides the chosen one (scratch).
    ties: Vec<usize>,
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
            let cursor = Cursor::seek(*src, &lower, &upper, descending)?;
            if within(&cursor, &lower, &upper, descending) {
                cursors.push(cursor);
            }
        }
        Ok(Self {
            cursors,
            descending,
            lower,
            upper,
            tombstones,
            strip,
            key: Vec::new(),
            present: false,
            ties: Vec::new(),
            consumed: 0,
            consumed_bytes: 0,
            limit: None,
            stopped: false,
        })
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
            let Some(first) = self.cursors.first() else {
                return Ok(false);
            };
            if self.limit.is_some_and(|(entries, bytes)| {
                self.consumed >= entries || self.consumed_bytes >= bytes
            }) {
                self.stopped = true;
                return Ok(false);
            }
            // The smallest key (largest when descending); among equal keys the first
            // cursor's, which is the newest source's.
            let mut best = 0;
            let Some((mut best_key, mut flag)) = first.peek() else {
                return Ok(false);
            };
            self.ties.clear();
            for (i, cursor) in self.cursors.iter().enumerate().skip(1) {
                let Some((key, present)) = cursor.peek() else {
                    continue;
                };
                let order = key.cmp(best_key);
                let order = if self.descending {
                    order.reverse()
                } else {
                    order
                };
                match order {
                    std::cmp::Ordering::Less => {
                        best = i;
                        best_key = key;
                        flag = present;
                        self.ties.clear();
                    }
                    std::cmp::Ordering::Equal => self.ties.push(i),
                    std::cmp::Ordering::Greater => {}
                }
            }
            self.key.clear();
            self.key.extend_from_slice(best_key);
            self.present = flag;
            self.ties.push(best);
            self.consumed += self.ties.len() as u64;
            self.consumed_bytes += (self.key.len() * self.ties.len()) as u64;
            let mut exhausted = false;
            for &i in &self.ties {
                let cursor = &mut self.cursors[i];
                cursor.step()?;
                exhausted |= !within(cursor, &self.lower, &self.upper, self.descending);
            }
            if exhausted {
                let (lower, upper, desc) = (&self.lower, &self.upper, self.descending);
                self.cursors.retain(|c| within(c, lower, upper, desc));
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
        for cursor in &mut self.cursors {
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
        let (lower, upper) = (&self.lower, &self.upper);
        self.cursors.retain(|c| within(c, lower, upper, false));
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
