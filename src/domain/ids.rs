//! Identifiers: agent ids, external ids, `contact_<n>` ids, and random id generation.

use rand::Rng;
use unicode_normalization::UnicodeNormalization;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random string of `len` base62 characters from the thread's CSPRNG.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

/// Checks an agent ("chatbot") id against `^[A-Za-z0-9_-]{1,64}$`.
pub fn check_agent_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only letters, digits, '_' and '-'");
    }
    Ok(())
}

/// A fresh agent id for a `POST /chatbots` without one.
pub fn new_agent_id() -> String {
    random_base62(16)
}

/// Characters an external id may not hold although they are not control characters:
/// invisible ones (zero-width spaces and joiners, the word joiner, the byte order mark)
/// and bidirectional formatting, which make two ids that look the same differ.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061C}'
            | '\u{FEFF}'
    )
}

/// An external id in its one canonical spelling: checked (1 to 255 bytes; no control,
/// zero-width or bidirectional formatting characters; no surrounding spaces) and in
/// Unicode NFC, so canonically equivalent spellings (`José` composed or with a
/// combining accent) are one id.
pub fn external_id(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("must not be empty");
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if raw.chars().any(is_invisible) {
        return Err("must not contain zero-width or bidirectional formatting characters");
    }
    if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
        return Err("must not start or end with a space");
    }
    // ASCII is its own NFC.
    let id: String = if raw.is_ascii() {
        raw.to_owned()
    } else {
        raw.nfc().collect()
    };
    if id.len() > 255 {
        return Err("must be at most 255 bytes");
    }
    Ok(id)
}

/// An id given to find a contact (a path segment, a filter value): its canonical
/// spelling when it is a valid external id, else as given (it then finds nothing, or
/// a contact stored before the rules, under its old spelling).
pub fn lookup_id(raw: &str) -> String {
    external_id(raw).unwrap_or_else(|_| raw.to_owned())
}

/// A fresh external id for a contact created without one.
pub fn new_external_id() -> String {
    format!("ext_{}", random_base62(20))
}

/// Formats an internal contact number as its public id, `contact_<n>`.
pub fn contact_id(n: u64) -> String {
    format!("contact_{n}")
}

/// Parses `contact_<n>` (decimal digits only) back into `n`.
pub fn parse_contact_id(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("contact_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A contact's id in the Pabbly Chatflow dialect: 24 lowercase hex digits, its
/// creation second (as 32 bits) then its contact number, as a MongoDB ObjectId is laid
/// out. Stable (neither part ever changes) and unique (the number is).
pub fn pabbly_id(created_at: i64, n: u64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let stamp = created_at as u32;
    format!("{stamp:08x}{n:016x}")
}

/// Reads a [`pabbly_id`] back: the creation second (32 bits) and the contact number.
pub fn parse_pabbly_id(s: &str) -> Option<(u32, u64)> {
    if s.len() != 24 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let stamp = u32::from_str_radix(&s[..8], 16).ok()?;
    let n = u64::from_str_radix(&s[8..], 16).ok()?;
    Some((stamp, n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pabbly_ids_round_trip_and_refuse_other_text() {
        let id = pabbly_id(1_796_620_897, 42);
        assert_eq!(id.len(), 24);
        assert_eq!(parse_pabbly_id(&id), Some((1_796_620_897, 42)));
        assert_eq!(parse_pabbly_id(&id.to_uppercase()), None);
        assert_eq!(parse_pabbly_id("contact_42"), None);
        assert_eq!(parse_pabbly_id(&id[1..]), None);
    }

    #[test]
    fn agent_ids_follow_the_pattern() {
        assert!(check_agent_id("default").is_ok());
        assert!(check_agent_id("a-B_9").is_ok());
        assert!(check_agent_id("").is_err());
        assert!(check_agent_id(&"a".repeat(65)).is_err());
        assert!(check_agent_id("a b").is_err());
        assert!(check_agent_id("é").is_err());
    }

    #[test]
    fn external_ids_reject_control_characters_and_length() {
        assert!(external_id("user/8821 ü").is_ok());
        assert!(external_id("a\nb").is_err());
        assert!(external_id(&"x".repeat(256)).is_err());
        assert!(external_id(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn external_ids_are_nfc_and_refuse_invisible_characters_and_surrounding_spaces() {
        let composed = "Jos\u{e9}";
        let decomposed = "Jose\u{301}";
        assert_eq!(external_id(decomposed).unwrap(), composed);
        assert_eq!(external_id(composed).unwrap(), composed);
        for bad in [
            "a\u{200B}b",
            "a\u{200D}b",
            "\u{FEFF}a",
            "a\u{202E}b",
            "a\u{2067}b",
            "a\u{200F}",
            " a",
            "a ",
            "a\u{00A0}",
        ] {
            assert!(external_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(lookup_id(decomposed), composed);
        assert_eq!(lookup_id(" legacy "), " legacy ");
    }

    #[test]
    fn contact_ids_round_trip_and_reject_junk() {
        assert_eq!(parse_contact_id(&contact_id(17)), Some(17));
        assert_eq!(parse_contact_id("contact_"), None);
        assert_eq!(parse_contact_id("contact_+1"), None);
        assert_eq!(parse_contact_id("contact_99999999999999999999999"), None);
        assert_eq!(parse_contact_id("user_1"), None);
    }

    #[test]
    fn generated_ids_are_valid() {
        assert!(check_agent_id(&new_agent_id()).is_ok());
        assert!(external_id(&new_external_id()).is_ok());
        assert_ne!(new_external_id(), new_external_id());
    }
}
