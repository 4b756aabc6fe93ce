//! API keys: generation, digests, and checking a presented key.
//!
//! Only a SHA-256 digest of a key is stored. A presented key is digested and looked up
//! by digest; the stored digest is then compared in constant time, so the comparison
//! leaks nothing about how much of a key matched.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::ids::random_base62;
use crate::domain::{ApiKey, KeyGrant};

pub const KEY_PREFIX: &str = "oc_live_";
/// Characters of the plaintext kept so people can tell keys apart.
const SHOWN_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;

/// A fresh key: `oc_live_` and 32 base62 characters.
pub fn generate_key() -> String {
    format!("{KEY_PREFIX}{}", random_base62(32))
}

/// SHA-256 of the key's bytes.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Checks a key chosen by an operator (`CONTACTD_ADMIN_KEY`): 16 to 128 visible ASCII
/// characters, so it fits in a header and is not trivially guessable.
pub fn check_chosen_key(key: &str) -> Result<(), String> {
    if !(16..=128).contains(&key.len()) {
        return Err("must be 16 to 128 characters long".into());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("may contain only visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

/// Builds the stored record for plaintext `key`.
pub fn new_key_record(key: &str, grant: KeyGrant, now: i64) -> ApiKey {
    ApiKey {
        id: format!("key_{}", random_base62(16)),
        name: grant.name,
        scope: grant.scope,
        access: grant.access,
        expires_at: grant.expires_at,
        rate_limit: grant.rate_limit,
        prefix: key.chars().take(SHOWN_PREFIX_LEN).collect(),
        digest: digest(key),
        created_at: now,
        revoked: false,
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// Unknown, revoked or expired key.
    Invalid,
}

/// Extracts the token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| AuthError::Invalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// Accepts `stored` for `presented` only if the digests match and, at Unix time `now`,
/// it is neither revoked nor expired.
pub fn verify(presented: &str, stored: Option<ApiKey>, now: i64) -> Result<ApiKey, AuthError> {
    let key = stored.ok_or(AuthError::Invalid)?;
    let matches: bool = digest(presented).ct_eq(&key.digest).into();
    if !matches || key.revoked || key.expired(now) {
        return Err(AuthError::Invalid);
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = generate_key();
        assert!(key.starts_with("oc_live_"));
        assert_eq!(key.len(), 40);
        assert!(key[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some(b"Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some(b"Bearer")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some(b"bearer  tok ")), Ok("tok"));
    }

    #[test]
    fn revoked_expired_and_mismatched_keys_fail() {
        let grant = KeyGrant::unrestricted("n", Scope::Admin);
        let mut rec = new_key_record("oc_live_x", grant, 0);
        assert!(verify("oc_live_x", Some(rec.clone()), 5).is_ok());
        assert_eq!(
            verify("oc_live_y", Some(rec.clone()), 5),
            Err(AuthError::Invalid)
        );
        rec.expires_at = Some(5);
        assert!(verify("oc_live_x", Some(rec.clone()), 4).is_ok());
        assert_eq!(
            verify("oc_live_x", Some(rec.clone()), 5),
            Err(AuthError::Invalid)
        );
        rec.expires_at = None;
        rec.revoked = true;
        assert_eq!(verify("oc_live_x", Some(rec), 5), Err(AuthError::Invalid));
    }
}
