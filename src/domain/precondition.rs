//! Entity tags and `If-Match`: a contact's strong ETag, and whether a request's
//! precondition holds for it (RFC 9110 §13.1.1, strong comparison).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Contact;

/// The first 16 hex digits of the SHA-256 of `bytes`: a content version.
pub fn short_hash(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(16);
    for b in digest.iter().take(8) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A contact's strong entity tag (see [`json_etag`]).
pub fn contact_etag(contact: &Contact) -> String {
    json_etag(&contact.to_json())
}

/// The strong entity tag of a contact's JSON form: its [`short_hash`], quoted.
/// Anything a client can see of the contact moves it (and every change moves
/// `updated_at`).
pub fn json_etag(json: &Value) -> String {
    serialized_etag(&serde_json::to_vec(json).unwrap_or_default())
}

/// [`json_etag`] of a JSON form already serialized (as `serde_json::to_vec` writes it).
pub fn serialized_etag(json: &[u8]) -> String {
    format!("\"{}\"", short_hash(json))
}

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current representation.
    Any,
    /// Entity tags, as sent (quoted; weak ones kept, and never matching).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Reads a header value: `*`, or a comma-separated list of entity tags (`"x"`,
    /// `W/"x"`).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut tags = Vec::new();
        for tag in value.split(',').map(str::trim) {
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            let quoted = opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"');
            if !quoted || opaque[1..opaque.len() - 1].contains('"') {
                return Err("must be * or a list of quoted entity tags such as \"3f2a…\"");
            }
            tags.push(tag.to_owned());
        }
        Ok(Self::Tags(tags))
    }

    /// Whether the precondition holds for a resource whose strong ETag is `etag`.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            Self::Any => true,
            // Strong comparison: a weak tag never matches.
            Self::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[test]
    fn the_short_hash_is_the_digests_first_eight_bytes_in_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(short_hash(b"abc"), "ba7816bf8f01cfea");
        assert_eq!(serialized_etag(b"abc"), "\"ba7816bf8f01cfea\"");
    }

    #[test]
    fn if_match_parses_and_compares_strongly() {
        assert_eq!(IfMatch::parse(" * ").unwrap(), IfMatch::Any);
        let cond = IfMatch::parse("\"a\", W/\"b\",\"c\"").unwrap();
        assert!(cond.matches("\"a\"") && cond.matches("\"c\""));
        assert!(!cond.matches("\"b\""), "weak tags never match");
        assert!(!cond.matches("\"d\""));
        assert!(IfMatch::Any.matches("\"anything\""));
        for bad in ["", "a", "\"a", "\"a\"\"b\"", "\"a\",", "W/a"] {
            assert!(IfMatch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_etag_moves_with_what_a_client_sees() {
        let mut contact = Contact {
            id: 1,
            external_id: "u1".into(),
            ..Contact::default()
        };
        let before = contact_etag(&contact);
        assert_eq!(before.len(), 18);
        assert_eq!(contact_etag(&contact), before, "stable");
        contact.name = Some("Ada".into());
        assert_ne!(contact_etag(&contact), before);
    }
}
