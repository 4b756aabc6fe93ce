//! Byte keys of the sort and word indexes.
//!
//! A key is a run of segments followed by a contact number: each segment is its bytes
//! with `0x00` escaped as `0x00 0xFF`, then the terminator `0x00 0x01`; the number is 8
//! big-endian bytes. Comparing two keys byte for byte (what redb does for `&[u8]`)
//! then orders them like the tuples they encode, with a shorter segment before any
//! segment it is a prefix of — and a comparison is one `memcmp`, which matters: the
//! indexes hold tens of entries per contact.

/// Appends one segment.
pub fn push_seg(buf: &mut Vec<u8>, bytes: &[u8]) {
    push_escaped(buf, bytes);
    buf.extend_from_slice(&[0, 1]);
}

/// Appends `bytes` escaped but without the terminator: every key whose segment starts
/// with `bytes` starts with the result.
pub fn push_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == 0 {
            buf.extend_from_slice(&[0, 0xFF]);
        } else {
            buf.push(b);
        }
    }
}

/// Appends a contact number.
pub fn push_id(buf: &mut Vec<u8>, id: u64) {
    buf.extend_from_slice(&id.to_be_bytes());
}

/// The segments as a prefix (every key that starts with them, whatever follows).
pub fn prefix(segments: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(segments.iter().map(|s| s.len() + 2).sum::<usize>() + 8);
    for seg in segments {
        push_seg(&mut buf, seg);
    }
    buf
}

/// The segments followed by a contact number.
pub fn entry(segments: &[&[u8]], id: u64) -> Vec<u8> {
    let mut buf = prefix(segments);
    push_id(&mut buf, id);
    buf
}

/// The first key after every key that starts with `prefix`, for a prefix made by
/// [`prefix`] (it ends in a terminator, whose last byte is 1, so it can be raised).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The first byte string after every string that starts with `bytes` (any bytes, not
/// only a [`prefix`]); `None` when there is none (empty, or only `0xFF` bytes).
pub fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let keep = bytes.iter().rposition(|&b| b != 0xFF)?;
    let mut out = bytes[..=keep].to_vec();
    out[keep] += 1;
    Some(out)
}

/// The first key under `prefix` with a contact number above `id`.
pub fn entry_after(prefix: &[u8], id: u64) -> Vec<u8> {
    match id.checked_add(1) {
        Some(next) => entry_at(prefix, next),
        None => prefix_end(prefix),
    }
}

/// `prefix` followed by the contact number `id`.
pub fn entry_at(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    push_id(&mut key, id);
    key
}

/// The contact number at the end of a key.
pub fn id_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Reads the segment at the start of `key`: its bytes and the rest of the key.
pub fn split_seg(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match (key.get(i)?, key.get(i + 1)) {
            (0, Some(1)) => return Some((out, &key[i + 2..])),
            (0, Some(0xFF)) => {
                out.push(0);
                i += 2;
            }
            (0, _) => return None,
            (&b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(parts: &(Vec<u8>, Vec<u8>, u64)) -> Vec<u8> {
        entry(&[&parts.0, &parts.1], parts.2)
    }

    proptest! {
        #[test]
        fn byte_order_is_tuple_order(
            a in (proptest::collection::vec(0u8..4, 0..4), proptest::collection::vec(0u8..4, 0..4), 0u64..4),
            b in (proptest::collection::vec(0u8..4, 0..4), proptest::collection::vec(0u8..4, 0..4), 0u64..4),
        ) {
            prop_assert_eq!(key(&a).cmp(&key(&b)), a.cmp(&b));
        }

        #[test]
        fn segments_and_ids_read_back(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
            id in any::<u64>(),
        ) {
            let k = entry(&[&a, &b], id);
            let (first, rest) = split_seg(&k).unwrap();
            let (second, rest) = split_seg(rest).unwrap();
            prop_assert_eq!(first, a);
            prop_assert_eq!(second, b);
            prop_assert_eq!(rest.len(), 8);
            prop_assert_eq!(id_of(&k), Some(id));
        }

        #[test]
        fn a_prefix_range_holds_exactly_its_keys(
            p in proptest::collection::vec(0u8..3, 0..3),
            other in (proptest::collection::vec(0u8..3, 0..4), proptest::collection::vec(0u8..3, 0..3), 0u64..3),
        ) {
            let start = prefix(&[&p]);
            let end = prefix_end(&start);
            let k = key(&other);
            let inside = k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice();
            prop_assert_eq!(inside, other.0 == p);
        }

        #[test]
        fn escaped_prefixes_find_words_that_start_with_them(
            word in proptest::collection::vec(0u8..3, 0..5),
            term in proptest::collection::vec(0u8..3, 0..3),
        ) {
            let k = entry(&[&word], 7);
            let mut p = Vec::new();
            push_escaped(&mut p, &term);
            prop_assert_eq!(k.starts_with(&p), word.starts_with(&term));
        }

        #[test]
        fn the_successor_is_above_exactly_the_strings_with_the_prefix(
            p in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFE), Just(0xFF)], 0..4),
            s in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFE), Just(0xFF)], 0..6),
        ) {
            let below = successor(&p).is_none_or(|end| s < end);
            prop_assert_eq!(s >= p && below, s.starts_with(&p));
        }
    }
}
