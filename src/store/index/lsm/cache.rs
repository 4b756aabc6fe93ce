//! Unpacked run chunks, kept for the readers that load them again.
//!
//! Run chunks are stored packed (see `block::PackedBuilder`), and a read unpacks each
//! chunk it enters: a search opens a range per term in every run. Runs never change and
//! run ids are never reused, so an unpacked chunk stays valid for as long as it is
//! kept. The cache holds up to a byte budget of them and drops the least recently used.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::block::Block;

/// Unpacked chunks by run id and chunk number.
pub struct ChunkCache {
    inner: Mutex<Inner>,
    budget: usize,
}

#[derive(Default)]
struct Inner {
    chunks: HashMap<(u64, u32), (Block, u64)>,
    bytes: usize,
    clock: u64,
}

impl ChunkCache {
    /// A cache of up to `budget` bytes of unpacked chunks.
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
        }
    }

    pub fn get(&self, run: u64, chunk: u32) -> Option<Block> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (block, used) = inner.chunks.get_mut(&(run, chunk))?;
        *used = now;
        Some(block.clone())
    }

    pub fn insert(&self, run: u64, chunk: u32, block: Block) {
        let size = block.bytes().len();
        if size > self.budget {
            return;
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some((old, _)) = inner.chunks.insert((run, chunk), (block, now)) {
            inner.bytes -= old.bytes().len();
        }
        inner.bytes += size;
        while inner.bytes > self.budget {
            // The least recently used eighth goes at once, so that a full cache does not
            // scan its entries on every insert.
            let mut ages: Vec<u64> = inner.chunks.values().map(|(_, used)| *used).collect();
            let cut = ages.len() / 8;
            let (_, &mut oldest, _) = ages.select_nth_unstable(cut);
            let before = inner.chunks.len();
            let mut freed = 0;
            inner.chunks.retain(|_, (block, used)| {
                let keep = *used > oldest;
                if !keep {
                    freed += block.bytes().len();
                }
                keep
            });
            inner.bytes -= freed;
            if inner.chunks.len() == before {
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::block::BlockBuilder;
    use super::*;

    fn block(key: &[u8]) -> Block {
        let mut builder = BlockBuilder::default();
        builder.push(key, true);
        Block::owned(builder.finish()).unwrap()
    }

    #[test]
    fn the_least_recently_used_chunks_go_first() {
        let size = block(b"k00").bytes().len();
        let cache = ChunkCache::new(size * 16);
        for i in 0..16u32 {
            cache.insert(1, i, block(format!("k{i:02}").as_bytes()));
        }
        // Chunk 0 is read again, so chunk 1 is now the oldest.
        assert_eq!(cache.get(1, 0).unwrap().key(0), b"k00");
        cache.insert(2, 0, block(b"new"));
        assert!(cache.get(1, 1).is_none());
        assert!(cache.get(1, 0).is_some());
        assert!(cache.get(2, 0).is_some());
        assert!(cache.get(1, 15).is_some());
        let inner = cache.inner.lock();
        assert!(inner.bytes <= size * 16);
        let held: usize = inner.chunks.values().map(|(b, _)| b.bytes().len()).sum();
        assert_eq!(held, inner.bytes);
    }
}
