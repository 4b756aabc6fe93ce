//! Checksums on everything stored: a record, an index block or chunk, a journal entry
//! is *sealed* by appending the CRC-32 of its bytes (4 bytes, little-endian), and
//! checked when read. redb checksums its pages only when it repairs a file after a
//! crash, so without this a changed byte inside a value would be served as data.

use super::StoreError;

/// Bytes a seal adds.
pub const SEAL: usize = 4;

/// Appends the checksum of `bytes` to them.
pub fn seal(bytes: &mut Vec<u8>) {
    seal_for(&[], bytes);
}

/// The bytes a seal covers, once the checksum matches; `what` names them in the error.
pub fn unseal<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], StoreError> {
    unseal_for(&[], bytes, what)
}

/// The checksum of `bytes` and of `context` (the parts of the key a record is stored
/// under, each length-prefixed), so a record read under another key fails too.
fn checksum(context: &[&[u8]], bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in context {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(bytes);
    hasher.finalize()
}

/// [`seal`], covering `context` as well.
pub fn seal_for(context: &[&[u8]], bytes: &mut Vec<u8>) {
    let crc = checksum(context, bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
}

/// [`unseal`], for bytes sealed with `context`.
pub fn unseal_for<'a>(
    context: &[&[u8]],
    bytes: &'a [u8],
    what: &str,
) -> Result<&'a [u8], StoreError> {
    let split = bytes
        .len()
        .checked_sub(SEAL)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: shorter than its checksum")))?;
    let (body, crc) = bytes.split_at(split);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if checksum(context, body) == stored {
        Ok(body)
    } else {
        Err(StoreError::Corrupt(format!(
            "{what}: checksum mismatch (the stored bytes changed)"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_byte_or_cut_is_detected() {
        let mut bytes = b"a contact record".to_vec();
        seal(&mut bytes);
        assert_eq!(unseal(&bytes, "x").unwrap(), b"a contact record");
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(unseal(&damaged, "x").is_err(), "byte {i} bit {bit}");
            }
        }
        for cut in 0..bytes.len() {
            assert!(unseal(&bytes[..cut], "x").is_err());
        }
    }
}
