//! Which keys a B-tree may hold: a Bloom filter in front of the external-id and email
//! B-trees, so that the writer skips the lookup of a key that was never stored.
//!
//! Every new contact's external id and email are such keys, and each lookup of one
//! reads a random leaf of a B-tree that is too large for the page cache at a million
//! contacts. The filter answers "surely not stored" for all but about one key in a
//! thousand, from one 32-byte block.
//!
//! **What it holds.** Every key a write group set since the process opened the store
//! (inserted when the group's entries join the deferred ones, before a checkpoint can
//! insert them into the B-tree, see `deferred`), plus every key the B-tree held in one
//! snapshot taken after the filter was made ([`KeyFilter::filled`]). Together these are
//! every key the B-tree can hold from then on. Keys are never taken out: a removed
//! key stays a (harmless) false positive until the next open. Until the snapshot's keys
//! are in, [`KeyFilter::may_hold`] answers `true` for every key.
//!
//! **Layout.** A split-block Bloom filter: the key's 64-bit hash picks a block of eight
//! 32-bit words and sets one bit in each, so a lookup touches one cache line. 16 bits
//! per key give about 0.1% false positives. A filter grows by layers: when the newest
//! layer holds its capacity, a new one with twice the capacity takes the inserts, and a
//! lookup asks every layer.
//!
//! Bits are set with atomic ORs, so the writer and the thread that fills the filter at
//! open insert at the same time without a lock beyond the layers' read lock.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::RwLock;

/// Bits per key at a layer's capacity.
const BITS_PER_KEY: u64 = 16;
/// The smallest layer, in keys.
const MIN_CAPACITY: u64 = 1 << 16;
/// Odd constants that spread a key's 32 low hash bits over the eight words of a block.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

type Block = [AtomicU32; 8];

struct Layer {
    blocks: Box<[Block]>,
    capacity: u64,
    count: AtomicU64,
}

impl Layer {
    fn new(capacity: u64) -> Self {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(256).max(1);
        Self {
            blocks: (0..blocks).map(|_| Block::default()).collect(),
            capacity,
            count: AtomicU64::new(0),
        }
    }

    fn block(&self, hash: u64) -> &Block {
        // The high half picks the block (multiply-shift, no modulo bias worth noting).
        let index = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        &self.blocks[usize::try_from(index).unwrap_or(0)]
    }

    fn insert(&self, hash: u64) {
        let block = self.block(hash);
        for (word, mask) in block.iter().zip(masks(hash)) {
            word.fetch_or(mask, Ordering::Relaxed);
        }
    }

    fn may_hold(&self, hash: u64) -> bool {
        let block = self.block(hash);
        block
            .iter()
            .zip(masks(hash))
            .all(|(word, mask)| word.load(Ordering::Relaxed) & mask == mask)
    }
}

/// One bit per word of a block, from the hash's low half.
fn masks(hash: u64) -> impl Iterator<Item = u32> {
    // Truncation intended: the low 32 bits.
    let low = hash as u32;
    SALT.iter()
        .map(move |salt| 1u32 << (low.wrapping_mul(*salt) >> 27))
}

/// The keys (agent, key) one B-tree may hold.
pub struct KeyFilter {
    hasher: foldhash::quality::RandomState,
    layers: RwLock<Vec<Layer>>,
    /// The B-tree's keys of a snapshot taken after the filter was made are in.
    ready: AtomicBool,
}

impl KeyFilter {
    /// Empty and not ready, sized for `expected` keys (the B-tree's count at open).
    pub fn new(expected: u64) -> Self {
        let capacity = (expected + expected / 2).max(MIN_CAPACITY);
        Self {
            hasher: foldhash::quality::RandomState::default(),
            layers: RwLock::new(vec![Layer::new(capacity)]),
            ready: AtomicBool::new(false),
        }
    }

    fn hash(&self, agent: &str, key: &str) -> u64 {
        self.hasher.hash_one((agent, key))
    }

    /// Records that the B-tree holds (or may hold) `key` of `agent`.
    pub fn insert(&self, agent: &str, key: &str) {
        let hash = self.hash(agent, key);
        let full = {
            let layers = self.layers.read();
            let Some(newest) = layers.last() else {
                return;
            };
            newest.insert(hash);
            newest.count.fetch_add(1, Ordering::Relaxed) + 1 >= newest.capacity
        };
        if full {
            let mut layers = self.layers.write();
            if let Some(newest) = layers.last() {
                if newest.count.load(Ordering::Relaxed) >= newest.capacity {
                    let capacity = newest.capacity * 2;
                    layers.push(Layer::new(capacity));
                }
            }
        }
    }

    /// Whether the B-tree may hold `key` of `agent`; `false` means it surely does not.
    pub fn may_hold(&self, agent: &str, key: &str) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return true;
        }
        let hash = self.hash(agent, key);
        self.layers.read().iter().any(|layer| layer.may_hold(hash))
    }

    /// Every key of one snapshot of the B-tree, taken after this filter was made, is
    /// inserted: from now on the bits answer.
    pub fn filled(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Memory the bits take, in bytes.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.layers
            .read()
            .iter()
            .map(|l| l.blocks.len() * std::mem::size_of::<Block>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answers_yes_for_everything_until_filled() {
        let filter = KeyFilter::new(0);
        assert!(filter.may_hold("agent", "never-inserted"));
        filter.filled();
        assert!(!filter.may_hold("agent", "never-inserted"));
    }

    #[test]
    fn few_keys_that_were_never_inserted_pass() {
        let filter = KeyFilter::new(100_000);
        let keys: Vec<String> = (0..100_000).map(|i| format!("ext-{i}")).collect();
        for key in &keys {
            filter.insert("agent", key);
        }
        filter.filled();
        let passed = (0..100_000)
            .filter(|i| filter.may_hold("agent", &format!("other-{i}")))
            .count();
        // About 0.1% at capacity; 1% would mean the blocks or the masks are wrong.
        assert!(passed < 1_000, "{passed} of 100000 absent keys passed");
        // The agent is part of the key.
        let passed = (0..100_000)
            .filter(|i| filter.may_hold("other agent", &format!("ext-{i}")))
            .count();
        assert!(
            passed < 1_000,
            "{passed} of 100000 keys of another agent passed"
        );
    }

    #[test]
    fn grows_by_layers_past_its_capacity() {
        let filter = KeyFilter::new(0);
        let first = filter.bytes();
        filter.filled();
        let keys: Vec<String> = (0..3 * MIN_CAPACITY).map(|i| format!("{i}")).collect();
        for key in &keys {
            filter.insert("a", key);
        }
        assert!(filter.bytes() >= 3 * first, "{} bytes", filter.bytes());
        assert!(keys.iter().all(|k| filter.may_hold("a", k)));
        let passed = (0..100_000)
            .filter(|i| filter.may_hold("a", &format!("x{i}")))
            .count();
        assert!(passed < 2_000, "{passed} of 100000 absent keys passed");
    }

    proptest! {
        /// No false negatives, whether a key came with the snapshot or later, whatever
        /// the sizing.
        #[test]
        fn every_inserted_key_may_be_held(
            expected in 0u64..200,
            snapshot in proptest::collection::vec(("[ab]", ".{0,6}"), 0..300),
            later in proptest::collection::vec(("[ab]", ".{0,6}"), 0..300),
        ) {
            let filter = KeyFilter::new(expected);
            for (agent, key) in &later {
                filter.insert(agent, key);
            }
            for (agent, key) in &snapshot {
                filter.insert(agent, key);
            }
            filter.filled();
            for (agent, key) in snapshot.iter().chain(&later) {
                prop_assert!(filter.may_hold(agent, key));
            }
        }
    }
}
