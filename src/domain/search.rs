//! Search words and sort keys of a contact, computed in one place so that query
//! evaluation and any index built from them agree.

use std::collections::BTreeSet;

use super::attr::AttrValue;
use super::contact::{email_key, Contact};
use super::label::{self, LabelKind};

/// The core columns a list can be sorted and filtered by.
pub const CORE_FIELDS: [&str; 6] = [
    "created_at",
    "updated_at",
    "name",
    "email",
    "phonenumber",
    "external_id",
];

/// Prefix of custom attribute fields in `sort` and `filter[...]`.
pub const ATTR_PREFIX: &str = "custom_attributes.";

/// Appends `text` lower-cased (as `char::to_lowercase` does; ASCII, which most
/// contact data is, without decoding characters).
fn push_lower(buf: &mut String, text: &str) {
    if text.is_ascii() {
        let start = buf.len();
        buf.push_str(text);
        buf[start..].make_ascii_lowercase();
    } else {
        buf.extend(text.chars().flat_map(char::to_lowercase));
    }
}

/// Calls `f` with every word a search term may be a prefix of: external id (whole and
/// its words), name words, email (whole address, local part, domain, and their words),
/// phone digits (see `phone_terms`) and the digits of its E.164 form. Words are lower-cased and may repeat; `f` returns
/// `false` to stop early. Words are built in one reused buffer.
pub fn visit_terms(contact: &Contact, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let mut buf = String::new();
    let lower = |text: &str, buf: &mut String| {
        buf.clear();
        push_lower(buf, text);
    };
    // Lower-cased words of a text: split on anything that is not a letter or a digit.
    let words = |text: &str, buf: &mut String, f: &mut dyn FnMut(&str) -> bool| {
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if !word.is_empty() {
                buf.clear();
                push_lower(buf, word);
                if !f(buf) {
                    return false;
                }
            }
        }
        true
    };
    lower(&contact.external_id, &mut buf);
    if !f(&buf) || !words(&contact.external_id, &mut buf, f) {
        return false;
    }
    if let Some(name) = &contact.name {
        if !words(name, &mut buf, f) {
            return false;
        }
    }
    if let Some(email) = &contact.email {
        let email = email.to_lowercase();
        if let Some((local, domain)) = email.rsplit_once('@') {
            if !f(local) || !f(domain) {
                return false;
            }
        }
        if !words(&email, &mut buf, f) || !f(&email) {
            return false;
        }
    }
    if let Some(phone) = &contact.phonenumber {
        if !phone_terms(phone, f) {
            return false;
        }
    }
    // The number's digits in E.164 too, so that `+1 555 123 4567` finds a number
    // stored as `(555) 123-4567`.
    match contact.phone.as_deref().and_then(|p| p.strip_prefix('+')) {
        Some(digits) => f(digits),
        None => true,
    }
}

/// The digits of a phone number from the start of each of its digit groups to the end,
/// and its last 10 and 7 digits (national and local numbers). A digit term matches when
/// it starts one of these: `555 123` and `555123` find `+1 (555) 123-4567`, and
/// `5551234567` finds `+15551234567`. Every digit group is a prefix of the word that
/// starts with it, so the groups need no words of their own: a US number gives four
/// words where groups, the whole number and its tails gave seven, and every word is
/// an index entry that each change of the number removes or adds.
fn phone_terms(phone: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let mut all = String::new();
    let mut starts = Vec::new();
    for run in phone.split(|c: char| !c.is_ascii_digit()) {
        if !run.is_empty() {
            starts.push(all.len());
            all.push_str(run);
        }
    }
    for tail in [10, 7] {
        if all.len() > tail && !starts.contains(&(all.len() - tail)) {
            starts.push(all.len() - tail);
        }
    }
    starts.into_iter().all(|at| f(&all[at..]))
}

/// Every word a search term may be a prefix of (see `visit_terms`).
pub fn terms(contact: &Contact) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    visit_terms(contact, &mut |word| {
        if !out.contains(word) {
            out.insert(word.to_owned());
        }
        true
    });
    out
}

/// Normalises one query term the way `terms` normalises words: lower-cased; a term
/// made only of phone characters keeps only its digits.
pub fn normalise_term(term: &str) -> String {
    let lower = term.to_lowercase();
    let phoneish = lower.chars().any(|c| c.is_ascii_digit())
        && lower
            .chars()
            .all(|c| c.is_ascii_digit() || "+-().".contains(c));
    if phoneish {
        lower.chars().filter(char::is_ascii_digit).collect()
    } else {
        lower
    }
}

/// Whether every term is a prefix of some word of the contact (without collecting
/// the words: stops once every term was found).
pub fn matches_terms(contact: &Contact, terms_wanted: &[String]) -> bool {
    let mut missing: Vec<&str> = terms_wanted.iter().map(String::as_str).collect();
    if missing.is_empty() {
        return true;
    }
    visit_terms(contact, &mut |word| {
        missing.retain(|term| !word.starts_with(term));
        !missing.is_empty()
    });
    missing.is_empty()
}

/// Longest name infix kept in the index, in characters: a longer piece of a substring
/// is looked up by its first `INFIX_CHARS` characters.
pub const INFIX_CHARS: usize = 10;

/// Calls `f` with the words of the contact's name as `visit_terms` gives them (so each
/// has the contact in the word index), when at least two characters long.
pub fn visit_name_words(contact: &Contact, f: &mut dyn FnMut(&str)) {
    let Some(name) = &contact.name else { return };
    let mut buf = String::new();
    for word in name.split(|c: char| !c.is_alphanumeric()) {
        buf.clear();
        push_lower(&mut buf, word);
        if buf.chars().nth(1).is_some() {
            f(&buf);
        }
    }
}

/// Calls `f` with the infixes of a name word: the word from each of its characters on,
/// cut to [`INFIX_CHARS`] characters, when at least two characters long. A substring
/// of a name has each of its words (see [`substring_pieces`]) as the start of an infix
/// of one of the name's words.
pub fn visit_word_infixes(word: &str, f: &mut dyn FnMut(&str)) {
    let starts: Vec<usize> = word.char_indices().map(|(at, _)| at).collect();
    for (n, &at) in starts.iter().enumerate() {
        if starts.len() - n < 2 {
            break;
        }
        let end = starts.get(n + INFIX_CHARS).copied().unwrap_or(word.len());
        f(&word[at..end]);
    }
}

/// What a name substring (an `Op::Contains` key of the name) is looked up by: its words
/// of two characters or more, cut to [`INFIX_CHARS`] characters, sorted, without
/// repeats. Every name that holds the substring has each of them as the start of an
/// infix of one of its words. Empty when the substring has no such word (only
/// one-character words, or none): it is then checked on every name, most of which it
/// matches anyway.
pub fn substring_pieces(substring: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(substring) else {
        return Vec::new();
    };
    let mut pieces: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().nth(1).is_some())
        .map(|w| w.chars().take(INFIX_CHARS).collect())
        .collect();
    pieces.sort_unstable();
    pieces.dedup();
    pieces
}

/// Bytes of a text's sort key: a longer text sorts by its first [`MAX_TEXT_KEY`] bytes
/// (lower-cased), then by contact number, as MySQL sorts by `max_sort_length` bytes.
/// It keeps index keys small: a text attribute may hold 4096 characters.
pub const MAX_TEXT_KEY: usize = 1024;

/// The sort key of a text: lower-cased, cut to at most [`MAX_TEXT_KEY`] bytes at a
/// character boundary.
pub fn text_key(text: &str) -> Vec<u8> {
    if text.is_ascii() {
        let mut key = text.as_bytes()[..text.len().min(MAX_TEXT_KEY)].to_vec();
        key.make_ascii_lowercase();
        return key;
    }
    let mut lower = String::with_capacity(text.len().min(MAX_TEXT_KEY + 4));
    for c in text.chars().flat_map(char::to_lowercase) {
        if lower.len() + c.len_utf8() > MAX_TEXT_KEY {
            break;
        }
        lower.push(c);
    }
    lower.into_bytes()
}

/// An order-preserving byte encoding of an `i64`.
pub fn int_key(n: i64) -> Vec<u8> {
    (n as u64 ^ (1 << 63)).to_be_bytes().to_vec()
}

/// An order-preserving byte encoding of a finite `f64` (-0.0 sorts as 0.0).
pub fn float_key(f: f64) -> Vec<u8> {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes().to_vec()
}

/// An order-preserving key of a number, exact over the whole i64 and u64 ranges: the
/// nearest `f64` (as [`float_key`]), then how far the integer lies from it (two bytes,
/// offset by 2^15). Rounding to the nearest float never reorders numbers, and below
/// 2^53 every integer is a float, so only large integers that round to the same float
/// need the second part; it is 0 for every float.
pub fn number_key(value: &AttrValue) -> Vec<u8> {
    #[allow(clippy::cast_precision_loss)]
    let (float, exact) = match value {
        AttrValue::Int(i) => (*i as f64, Some(i128::from(*i))),
        AttrValue::UInt(u) => (*u as f64, Some(i128::from(*u))),
        AttrValue::Float(f) => (*f, None),
        _ => (0.0, None),
    };
    // Integer-valued (or exact) here, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    let residual = exact.map_or(0, |n| n - float as i128);
    let mut key = float_key(float);
    let offset = u16::try_from(residual + 0x8000).unwrap_or(0x8000);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// Attribute values sort by kind first (booleans, numbers, text, dates), then by value:
/// numbers numerically, text case-insensitively, dates in time order.
pub fn attr_key(value: &AttrValue) -> Vec<u8> {
    let (tag, mut body) = match value {
        AttrValue::Bool(b) => (1, vec![u8::from(*b)]),
        AttrValue::Int(_) | AttrValue::UInt(_) | AttrValue::Float(_) => (2, number_key(value)),
        AttrValue::Text(s) => (3, text_key(s)),
        AttrValue::Date(ms) => (4, int_key(*ms)),
    };
    body.insert(0, tag);
    body
}

/// The sort key of `field` (a core column or `custom_attributes.<name>`) for a contact,
/// or `None` when the contact has no value there.
pub fn sort_key(contact: &Contact, field: &str) -> Option<Vec<u8>> {
    let text = |s: &Option<String>| s.as_deref().map(text_key);
    match field {
        "created_at" => Some(int_key(contact.created_at)),
        "updated_at" => Some(int_key(contact.updated_at)),
        "name" => text(&contact.name),
        "email" => contact.email.as_deref().map(|e| email_key(e).into_bytes()),
        "phonenumber" => text(&contact.phonenumber),
        "external_id" => Some(contact.external_id.as_bytes().to_vec()),
        "phone" => contact.phone.as_deref().map(|p| p.as_bytes().to_vec()),
        "optin" => contact.optin.map(|b| vec![u8::from(b)]),
        "incoming_blocked" => contact.incoming_blocked.map(|b| vec![u8::from(b)]),
        "source" => Some(contact.source.as_str().as_bytes().to_vec()),
        _ => field
            .strip_prefix(ATTR_PREFIX)
            .and_then(|name| contact.custom_attributes.get(name))
            .map(attr_key),
    }
}

/// Fields that are filtered by through the sort index but never sorted by or counted:
/// `phone` is the number in E.164, which `filter[phonenumber]` and Pabbly's `mobile`
/// match on.
pub const FILTER_ONLY_FIELDS: [&str; 4] = ["optin", "incoming_blocked", "source", "phone"];

/// Every `(field, sort key)` a contact has: each core column with a value, each
/// custom attribute value, the [`FILTER_ONLY_FIELDS`] set, and each tag and list
/// (`tags` / `lists` with the folded name: they are filtered by, never sorted by).
pub fn sort_entries(contact: &Contact) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = CORE_FIELDS
        .iter()
        .filter_map(|f| sort_key(contact, f).map(|k| ((*f).to_owned(), k)))
        .collect();
    out.extend(
        contact
            .custom_attributes
            .iter()
            .map(|(name, v)| (format!("{ATTR_PREFIX}{name}"), attr_key(v))),
    );
    out.extend(
        FILTER_ONLY_FIELDS
            .iter()
            .filter_map(|f| sort_key(contact, f).map(|k| ((*f).to_owned(), k))),
    );
    for kind in [LabelKind::Tag, LabelKind::List] {
        out.extend(
            contact
                .labels(kind)
                .iter()
                .map(|name| (kind.field().to_owned(), label::fold(name).into_bytes())),
        );
    }
    out
}

/// The `field_counts` entry that counts the contacts carrying a tag or list.
pub fn label_count_field(kind: LabelKind, folded: &str) -> String {
    format!("{}/{folded}", kind.field())
}

/// The `field_counts` entries a contact adds to: each field it has a value for, and
/// each of its tags and lists (see [`label_count_field`]).
pub fn counted_fields(contact: &Contact) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = sort_entries(contact)
        .into_iter()
        .filter(|(f, _)| f != "tags" && f != "lists" && !FILTER_ONLY_FIELDS.contains(&f.as_str()))
        .map(|(f, _)| f)
        .collect();
    for kind in [LabelKind::Tag, LabelKind::List] {
        let names = contact.labels(kind).iter();
        out.extend(names.map(|n| label_count_field(kind, &label::fold(n))));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn contact(name: &str, email: &str, phone: &str) -> Contact {
        Contact {
            id: 1,
            external_id: "User_8821".into(),
            name: Some(name.into()),
            email: Some(email.into()),
            phonenumber: Some(phone.into()),
            stripe_accounts: vec![],
            custom_attributes: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
            ..Contact::default()
        }
    }

    /// The exact order of two numbers of any kind.
    fn exact_order(a: &AttrValue, b: &AttrValue) -> std::cmp::Ordering {
        let int = |v: &AttrValue| match v {
            AttrValue::Int(i) => Some(i128::from(*i)),
            AttrValue::UInt(u) => Some(i128::from(*u)),
            _ => None,
        };
        let float = |v: &AttrValue| match v {
            AttrValue::Float(f) => *f,
            _ => 0.0,
        };
        // A float against an integer, exactly (the floats used here are far from the
        // ends of i128).
        #[allow(clippy::cast_possible_truncation)]
        let float_vs_int = |f: f64, n: i128| {
            let floor = f.floor() as i128;
            floor.cmp(&n).then(if f > f.floor() && floor == n {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            })
        };
        match (int(a), int(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (None, Some(y)) => float_vs_int(float(a), y),
            (Some(x), None) => float_vs_int(float(b), x).reverse(),
            (None, None) => float(a)
                .partial_cmp(&float(b))
                .unwrap_or(std::cmp::Ordering::Equal),
        }
    }

    fn any_number() -> impl Strategy<Value = AttrValue> {
        let near = |base: u64| (0u64..4096).prop_map(move |d| base - 2048 + d);
        prop_oneof![
            any::<i64>().prop_map(AttrValue::Int),
            any::<u64>().prop_map(AttrValue::UInt),
            near(u64::MAX - 4096).prop_map(AttrValue::UInt),
            near(1 << 63).prop_map(AttrValue::UInt),
            (-3000i64..3000).prop_map(|d| AttrValue::Int(i64::MAX - 3000 + d.abs())),
            (-1e19f64..1e19).prop_map(AttrValue::Float),
            (-5i64..5).prop_map(|i| AttrValue::Float(i as f64 * 0.5)),
        ]
    }

    proptest! {
        /// Number keys order numbers exactly, across kinds and the whole 64-bit ranges.
        #[test]
        fn number_keys_order_numbers_exactly(a in any_number(), b in any_number()) {
            prop_assert_eq!(number_key(&a).cmp(&number_key(&b)), exact_order(&a, &b), "{:?} {:?}", a, b);
        }
    }

    #[test]
    fn text_keys_keep_the_first_1024_bytes_at_a_character_boundary() {
        assert_eq!(text_key("Sam RIVERA"), b"sam rivera");
        let long = format!("{}{}", "a".repeat(1023), "\u{e9}tail");
        assert_eq!(
            text_key(&long),
            "a".repeat(1023).into_bytes(),
            "é would not fit"
        );
        let longer = "B".repeat(5000);
        assert_eq!(text_key(&longer), "b".repeat(1024).into_bytes());
    }

    #[test]
    fn terms_cover_words_email_parts_and_phone_digits() {
        let c = contact("Sam Rivera-Jones", "Sam.R@Acme.com", "+1 (555) 123-4567");
        let t = terms(&c);
        for want in [
            "user_8821",
            "user",
            "8821",
            "sam",
            "rivera",
            "jones",
            "sam.r@acme.com",
            "sam.r",
            "acme.com",
            "acme",
            "com",
            "15551234567",
            "5551234567",
            "1234567",
            "4567",
        ] {
            assert!(t.contains(want), "{want} missing from {t:?}");
        }
        assert_eq!(
            phone_words("+1 (555) 123-4567").len(),
            4,
            "one per digit group start"
        );
    }

    fn phone_words(phone: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        phone_terms(phone, &mut |w| {
            out.insert(w.to_owned());
            true
        });
        out
    }

    #[test]
    fn phone_tails_that_start_no_group_are_words_too() {
        // 44 20 7946 0958: the last 10 digits start at a group, the last 7 do not.
        let want = ["442079460958", "2079460958", "79460958", "0958", "9460958"];
        let want: BTreeSet<String> = want.into_iter().map(String::from).collect();
        assert_eq!(phone_words("+44 20 7946 0958"), want);
        assert!(phone_words("no digits").is_empty());
    }

    #[test]
    fn a_national_number_is_found_by_its_international_digits() {
        let mut c = contact("x", "y@z.co", "(555) 123-4567");
        let q = |s: &str| vec![normalise_term(s)];
        assert!(!matches_terms(&c, &q("+1555123")));
        c.phone = Some("+15551234567".into());
        assert!(matches_terms(&c, &q("+1555123")));
    }

    #[test]
    fn search_matches_prefixes_of_words() {
        let c = contact("Sam Rivera", "sam@acme.com", "+1 (555) 123-4567");
        let q = |s: &str| s.split_whitespace().map(normalise_term).collect::<Vec<_>>();
        assert!(matches_terms(&c, &q("sa riv")));
        assert!(matches_terms(&c, &q("555 123")));
        assert!(matches_terms(&c, &q("(555) 123-45")));
        assert!(matches_terms(&c, &q("SAM@ACME")));
        assert!(!matches_terms(&c, &q("sam jones")));
        assert!(!matches_terms(&c, &q("ivera")));
        let plain = contact("x", "y@z.co", "+15551234567");
        assert!(matches_terms(&plain, &q("555123")));
        // A digit term may run on across groups, from the start of one.
        assert!(matches_terms(&c, &q("5551234")));
        assert!(matches_terms(&c, &q("1234")));
        assert!(
            !matches_terms(&c, &q("551234")),
            "not from the middle of a group"
        );
    }

    proptest! {
        /// Matching without collecting the words agrees with the words the index holds:
        /// a term matches exactly when it is a prefix of one of `terms`.
        #[test]
        fn matching_agrees_with_the_indexed_words(
            ext in "[A-Za-z0-9_.İß-]{1,10}",
            name in "[A-Za-zÉİß .'-]{0,16}",
            email in "[a-zA-Z0-9.İ]{1,6}@[a-z0-9.]{1,8}",
            phone in "[+0-9 ()-]{0,14}",
            picks in proptest::collection::vec((any::<proptest::sample::Index>(), 0usize..6), 0..4),
            extra in proptest::collection::vec("[a-z0-9@.İ]{1,4}", 0..2),
        ) {
            let mut c = contact(&name, &email, &phone);
            c.external_id = ext;
            let words: Vec<String> = terms(&c).into_iter().collect();
            // Terms that match (prefixes of the contact's words) and random ones.
            let mut wanted: Vec<String> = picks
                .iter()
                .map(|(i, n)| {
                    let word = &words[i.index(words.len())];
                    word.chars().take(*n).collect()
                })
                .collect();
            wanted.extend(extra);
            let reference = wanted
                .iter()
                .all(|t| words.iter().any(|w| w.starts_with(t.as_str())));
            prop_assert_eq!(matches_terms(&c, &wanted), reference);
        }

        /// The ASCII shortcut lower-cases as `char::to_lowercase` does, after any text
        /// already in the buffer.
        #[test]
        fn push_lower_agrees_with_char_lowercase(
            head in "[a-zA-Zİ]{0,3}",
            text in prop_oneof!["[ -~]{0,12}", "\\PC{0,12}"],
        ) {
            let mut buf = head.clone();
            push_lower(&mut buf, &text);
            let lowered: String = text.chars().flat_map(char::to_lowercase).collect();
            prop_assert_eq!(buf, format!("{head}{lowered}"));
        }

        #[test]
        fn float_keys_order_like_floats(a in -1e300f64..1e300, b in -1e300f64..1e300) {
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), float_key(a).cmp(&float_key(b)));
        }

        #[test]
        fn int_keys_order_like_ints(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), int_key(a).cmp(&int_key(b)));
        }
    }

    /// The infixes of every word of a name.
    fn infixes(name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        visit_name_words(&contact(name, "a@b.co", "1"), &mut |word| {
            visit_word_infixes(word, &mut |i| {
                out.insert(i.to_owned());
            });
        });
        out
    }

    #[test]
    fn name_infixes_are_word_pieces_of_two_to_ten_characters() {
        assert_eq!(
            infixes("Jane O'Doe"),
            ["jane", "ane", "ne", "doe", "oe"]
                .map(String::from)
                .into_iter()
                .collect(),
            "the suffixes of each word, of two characters or more"
        );
        assert_eq!(
            infixes("Montgomeryshire"),
            [
                "montgomery",
                "ontgomerys",
                "ntgomerysh",
                "tgomeryshi",
                "gomeryshir",
                "omeryshire",
                "meryshire",
                "eryshire",
                "ryshire",
                "yshire",
                "shire",
                "hire",
                "ire",
                "re"
            ]
            .map(String::from)
            .into_iter()
            .collect()
        );
        assert_eq!(
            infixes("Ünal Ö"),
            ["ünal", "nal", "al"]
                .map(String::from)
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn name_words_are_search_words() {
        let c = contact("İstanbul Ünal-O'Brien", "a@b.co", "1");
        let all = terms(&c);
        let mut words = Vec::new();
        visit_name_words(&c, &mut |w| words.push(w.to_owned()));
        assert_eq!(words, ["i\u{307}stanbul", "ünal", "brien"]);
        assert!(words.iter().all(|w| all.contains(w)), "{words:?} {all:?}");
    }

    #[test]
    fn substrings_are_looked_up_by_their_words() {
        let pieces = |s: &str| substring_pieces(&text_key(s));
        assert_eq!(pieces("ANE"), ["ane"]);
        assert_eq!(pieces("tgomeryshire"), ["tgomeryshi"]);
        assert_eq!(
            pieces("e d-oe x"),
            ["oe"],
            "one-character words are not looked up"
        );
        assert_eq!(pieces("ne do ne"), ["do", "ne"]);
        assert!(pieces("a").is_empty());
        assert!(pieces(" - ").is_empty());
    }

    proptest! {
        /// A name that holds a substring has each of the substring's pieces as the start
        /// of an infix of one of its words.
        #[test]
        fn infixes_find_every_name_that_holds_a_substring(
            name in "[a-zA-ZéİÖ' -]{0,24}",
            from in 0usize..24,
            len in 0usize..14,
            other in "[a-zé -]{1,12}",
        ) {
            let text = String::from_utf8(text_key(&name)).unwrap();
            let chars: Vec<char> = text.chars().collect();
            let inside: String = chars.iter().skip(from).take(len).collect();
            let found = infixes(&name);
            for wanted in [inside.as_str(), other.as_str()] {
                if text.contains(wanted) {
                    let pieces = substring_pieces(wanted.as_bytes());
                    for piece in &pieces {
                        prop_assert!(found.iter().any(|i| i.starts_with(piece.as_str())),
                            "{:?} in {:?}: {:?} not in {:?}", wanted, name, piece, found);
                    }
                }
            }
        }
    }
}
