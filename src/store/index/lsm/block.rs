//! Sorted blocks: how the index log and the index runs store their entries.
//!
//! A block is `n` (u32, little-endian), then `n + 1` offsets (u32) into the data that
//! follows, then the data: entry `i` is `data[offsets[i]..offsets[i + 1]]`, a key
//! followed by one flag byte (1 = the key is present, 0 = it was removed). Entries are
//! in ascending key order without repeats, so a key is found by binary search without
//! decoding anything. Blocks and packed blocks end in a checksum (see `store::seal`),
//! checked whenever one is read from the database.

use std::sync::Arc;

use redb::AccessGuard;

use crate::store::seal::{seal, unseal, SEAL};
use crate::store::StoreError;

const PRESENT: u8 = 1;
const REMOVED: u8 = 0;

/// Builds a block from entries given in ascending key order.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    offsets: Vec<u32>,
    data: Vec<u8>,
}

impl BlockBuilder {
    /// A builder with room for about `bytes` of entries.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            offsets: Vec::with_capacity(bytes / 24),
            data: Vec::with_capacity(bytes),
        }
    }

    /// Appends an entry; its key must follow the previous one.
    pub fn push(&mut self, key: &[u8], present: bool) {
        debug_assert!(
            self.last().is_none_or(|last| last < key),
            "keys out of order"
        );
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(key);
        self.data.push(if present { PRESENT } else { REMOVED });
        self.offsets
            .push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    fn last(&self) -> Option<&[u8]> {
        let n = self.offsets.len();
        (n >= 2).then(|| {
            let (start, end) = (self.offsets[n - 2] as usize, self.offsets[n - 1] as usize);
            &self.data[start..end - 1]
        })
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The encoded size so far.
    pub fn size(&self) -> usize {
        4 + 4 * self.offsets.len().max(1) + self.data.len() + SEAL
    }

    /// The encoded block, sealed.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        if self.offsets.is_empty() {
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        for offset in &self.offsets {
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        seal(&mut out);
        out
    }
}

/// Where a block's bytes live: in redb's page cache, or copied out (inside a write
/// transaction, whose tables cannot lend a value while they are written).
enum Bytes {
    Stored(AccessGuard<'static, &'static [u8]>),
    Owned(Vec<u8>),
}

/// A block being read; cheap to clone.
#[derive(Clone)]
pub struct Block {
    bytes: Arc<Bytes>,
    len: usize,
}

impl Block {
    pub fn stored(guard: AccessGuard<'static, &'static [u8]>) -> Result<Self, StoreError> {
        Self::new(Bytes::Stored(guard))
    }

    pub fn owned(bytes: Vec<u8>) -> Result<Self, StoreError> {
        Self::new(Bytes::Owned(bytes))
    }

    fn new(bytes: Bytes) -> Result<Self, StoreError> {
        let sealed = match &bytes {
            Bytes::Stored(guard) => guard.value(),
            Bytes::Owned(vec) => vec.as_slice(),
        };
        let raw = unseal(sealed, "an index block")?;
        let len = raw
            .get(..4)
            .map(|n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .filter(|&n| raw.len() >= 4 + 4 * (n + 1))
            .ok_or_else(|| StoreError::Corrupt("a malformed index block".into()))?;
        Ok(Self {
            bytes: Arc::new(bytes),
            len,
        })
    }

    /// The encoded block, sealed, as it is stored.
    pub fn bytes(&self) -> &[u8] {
        match &*self.bytes {
            Bytes::Stored(guard) => guard.value(),
            Bytes::Owned(vec) => vec.as_slice(),
        }
    }

    /// The block without its seal (checked when the block was made).
    fn raw(&self) -> &[u8] {
        let sealed = self.bytes();
        &sealed[..sealed.len() - SEAL]
    }

    /// Entries in the block.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn offset(raw: &[u8], i: usize) -> usize {
        let at = 4 + 4 * i;
        raw.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// Entry `i` (below `len`): its key and whether it is present. A damaged block
    /// reads as empty removed entries rather than panicking; `contactd check` reports
    /// what that loses.
    pub fn get(&self, i: usize) -> (&[u8], bool) {
        let raw = self.raw();
        let data = 4 + 4 * (self.len + 1);
        let (start, end) = (Self::offset(raw, i), Self::offset(raw, i + 1));
        match raw.get(data + start..data + end) {
            Some([key @ .., flag]) => (key, *flag == PRESENT),
            _ => (&[], false),
        }
    }

    pub fn key(&self, i: usize) -> &[u8] {
        self.get(i).0
    }

    /// How many entries have a key below `key`.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Builds a *packed* block, the form a run's chunks are stored in: `n` (u32,
/// little-endian), then per entry the length of the prefix it shares with the previous
/// key and the length of the rest (LEB128 varints), the rest, and the flag byte.
/// Neighbouring keys share most of their bytes (the agent, the field, part of the
/// value), so a packed chunk holds about twice the entries. [`unpack`] turns it back
/// into a [`Block`] when it is loaded.
#[derive(Debug, Default)]
pub struct PackedBuilder {
    data: Vec<u8>,
    last: Vec<u8>,
    len: u32,
}

/// The most bytes an entry adds to a packed block besides its key: two varints of a
/// `u32` and the flag.
pub const PACKED_OVERHEAD: usize = 11;

impl PackedBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            last: Vec::new(),
            len: 0,
        }
    }

    /// Appends an entry; its key must follow the previous one.
    pub fn push(&mut self, key: &[u8], present: bool) {
        debug_assert!(
            self.len == 0 || self.last.as_slice() < key,
            "keys out of order"
        );
        let shared = self
            .last
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count();
        push_varint(&mut self.data, shared);
        push_varint(&mut self.data, key.len() - shared);
        self.data.extend_from_slice(&key[shared..]);
        self.data.push(if present { PRESENT } else { REMOVED });
        self.last.truncate(shared);
        self.last.extend_from_slice(&key[shared..]);
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded size so far.
    pub fn size(&self) -> usize {
        4 + self.data.len() + SEAL
    }

    /// The encoded block, sealed.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.data);
        seal(&mut out);
        out
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        n |= usize::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
}

/// The block a [`PackedBuilder`] encoded.
pub fn unpack(sealed: &[u8]) -> Result<Block, StoreError> {
    let bytes = unseal(sealed, "an index chunk")?;
    let corrupt = || StoreError::Corrupt("a malformed packed index block".into());
    let n = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(corrupt)?;
    let mut builder = BlockBuilder::with_capacity(bytes.len() * 2);
    let mut key: Vec<u8> = Vec::new();
    let mut at = 4;
    for _ in 0..n {
        let shared = read_varint(bytes, &mut at).ok_or_else(corrupt)?;
        let rest = read_varint(bytes, &mut at).ok_or_else(corrupt)?;
        let tail = bytes.get(at..at + rest).ok_or_else(corrupt)?;
        at += rest;
        let flag = *bytes.get(at).ok_or_else(corrupt)?;
        at += 1;
        if shared > key.len() {
            return Err(corrupt());
        }
        key.truncate(shared);
        key.extend_from_slice(tail);
        if builder.last().is_some_and(|last| last >= key.as_slice()) {
            return Err(corrupt());
        }
        builder.push(&key, flag == PRESENT);
    }
    if at != bytes.len() {
        return Err(corrupt());
    }
    Block::owned(builder.finish())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn a_packed_block_unpacks_to_what_was_built(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(0u8..4, 0..12), any::<bool>(), 0..80),
        ) {
            let mut packed = PackedBuilder::default();
            for (key, present) in &entries {
                packed.push(key, *present);
            }
            let size = packed.size();
            let bytes = packed.finish();
            prop_assert_eq!(bytes.len(), size);
            let block = unpack(&bytes).unwrap();
            let read: BTreeMap<Vec<u8>, bool> =
                (0..block.len()).map(|i| { let (k, p) = block.get(i); (k.to_vec(), p) }).collect();
            prop_assert_eq!(&read, &entries);
            // Every cut short of the end is an error, never a panic.
            for cut in 4..bytes.len() {
                prop_assert!(unpack(&bytes[..cut]).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn a_block_reads_back_what_was_built(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..12), any::<bool>(), 0..60),
            probe in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let mut builder = BlockBuilder::default();
            for (key, present) in &entries {
                builder.push(key, *present);
            }
            let size = builder.size();
            let bytes = builder.finish();
            prop_assert_eq!(bytes.len(), size);
            let block = Block::owned(bytes).unwrap();
            let read: BTreeMap<Vec<u8>, bool> =
                (0..block.len()).map(|i| { let (k, p) = block.get(i); (k.to_vec(), p) }).collect();
            prop_assert_eq!(&read, &entries);
            prop_assert_eq!(block.lower_bound(&probe), entries.range(..probe.clone()).count());
        }
    }

    #[test]
    fn a_truncated_block_is_an_error() {
        let mut builder = BlockBuilder::default();
        builder.push(b"a", true);
        let bytes = builder.finish();
        for cut in 0..bytes.len() {
            assert!(Block::owned(bytes[..cut].to_vec()).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        assert!(Block::owned(flipped).is_err());
        assert!(Block::owned(Vec::new()).is_err());
    }
}
