//! Phone numbers as an identity: every number that parses is also kept in E.164
//! (`+15551234567`), so `+1 (555) 123-4567`, `15551234567` and `+15551234567` are one
//! number for lookups, filters and Pabbly's `mobile` matching. Parsing uses
//! libphonenumber's rules and metadata (the `rlibphonenumber` port); validity is not
//! required, so test numbers such as 555 ones count.

use std::str::FromStr;

use rlibphonenumber::{PhoneNumber, PhoneNumberFormat, PHONE_NUMBER_UTIL};

/// How numbers without an international prefix are read (`phone.default_region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhoneRules {
    /// A region (ISO 3166 code such as `US`) whose national numbers a number without
    /// `+` or `00` is read as first. Without one, such a number's digits are read as
    /// international, country code first (as Pabbly's `mobile` is).
    pub default_region: Option<Region>,
}

/// A region of libphonenumber's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(rlibphonenumber::Region);

impl FromStr for Region {
    type Err = String;

    fn from_str(code: &str) -> Result<Self, String> {
        // Any two letters make a code; a region is one the metadata has numbers for.
        rlibphonenumber::Region::from_code(&code.trim().to_ascii_uppercase())
            .ok()
            .filter(|r| PHONE_NUMBER_UTIL.get_country_code_for_region(*r).is_some())
            .map(Region)
            .ok_or(())
            .map_err(|_| {
                format!("'{code}' is not a region code (ISO 3166-1 alpha-2, such as US or GB)")
            })
    }
}

impl Region {
    /// The ISO 3166 code (`US`).
    pub fn code(&self) -> String {
        self.0.to_string()
    }
}

impl PhoneRules {
    /// The E.164 form of `text`, or `None` when it does not parse as a phone number:
    /// `+…` and `00…` are international; otherwise a national number of the default
    /// region when there is one and the number parses as such, else the digits read
    /// as international. Costs a parse (about a microsecond): writes read numbers
    /// before the writer (see `ContactInput::read_phone`).
    pub fn e164(&self, text: &str) -> Option<String> {
        let text = text.trim();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let international = if text.starts_with('+') {
            Some(digits.as_str())
        } else {
            digits.strip_prefix("00").filter(|_| text.starts_with("00"))
        };
        if let Some(rest) = international {
            return international_reading(rest);
        }
        if let Some(region) = self.default_region {
            if let Some(e164) = national(region, &digits) {
                return Some(e164);
            }
        }
        international_reading(&digits)
    }
}

/// `digits` as an international number, country code first.
fn international_reading(digits: &str) -> Option<String> {
    let number = PHONE_NUMBER_UTIL.parse(format!("+{digits}"), None).ok()?;
    let e164 = format_e164(&number);
    // A reading that kept every digit is its own reading; one that did not (the parser
    // dropped digits it could not place, as in `+310001`) must read back as itself.
    (e164[1..] == *digits || reads_as_itself(&e164)).then_some(e164)
}

/// `digits` as a national number of `region`. The parser takes digits that start with
/// the region's country code for an international number (`9179897123` under IN as
/// +91 79897123); when that reading is not a valid number but all the digits after
/// the country code are, the national reading wins, as libphonenumber's own does.
fn national(region: Region, digits: &str) -> Option<String> {
    let parsed = PHONE_NUMBER_UTIL
        .parse(digits, Some(region.0))
        .ok()
        .filter(|n| reads_as_itself(&format_e164(n)));
    if parsed.as_ref().is_some_and(PhoneNumber::is_valid) {
        return parsed.as_ref().map(format_e164);
    }
    let code = PHONE_NUMBER_UTIL.get_country_code_for_region(region.0);
    let whole = code
        .and_then(|code| {
            PHONE_NUMBER_UTIL
                .parse(format!("+{code}{digits}"), None)
                .ok()
        })
        .filter(PhoneNumber::is_valid);
    whole.or(parsed).as_ref().map(format_e164)
}

fn format_e164(number: &PhoneNumber) -> String {
    number.format_as(PhoneNumberFormat::E164).into_owned()
}

/// Whether an E.164 form reads back as itself: one number has one form.
fn reads_as_itself(e164: &str) -> bool {
    PHONE_NUMBER_UTIL
        .parse(e164, None)
        .is_ok_and(|again| format_e164(&again) == e164)
}

/// The country calling code of an E.164 number (`91` for `+919179897123`).
pub fn country_code(e164: &str) -> Option<u16> {
    let number = PHONE_NUMBER_UTIL.parse(e164, None).ok()?;
    u16::try_from(number.country_code).ok()
}

/// Pabbly's `mobile`: the E.164 number without its `+`.
pub fn mobile(e164: &str) -> &str {
    e164.strip_prefix('+').unwrap_or(e164)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(region: Option<&str>) -> PhoneRules {
        PhoneRules {
            default_region: region.map(|r| r.parse().unwrap()),
        }
    }

    /// The phone table: (default region, as sent, E.164).
    #[test]
    fn numbers_read_as_expected_under_each_default_region() {
        let table: &[(Option<&str>, &str, Option<&str>)] = &[
            // US, in every formatting, with and without a region.
            (None, "+1 (555) 123-4567", Some("+15551234567")),
            (None, "15551234567", Some("+15551234567")),
            (None, "+15551234567", Some("+15551234567")),
            (None, "001 555 123 4567", Some("+15551234567")),
            (Some("US"), "(555) 123-4567", Some("+15551234567")),
            (Some("US"), "555.123.4567", Some("+15551234567")),
            (Some("US"), "1 555 123 4567", Some("+15551234567")),
            (Some("US"), "+44 20 7946 0958", Some("+442079460958")),
            // UK: international, and national with the trunk 0 under GB.
            (None, "+44 20 7946 0958", Some("+442079460958")),
            (None, "442079460958", Some("+442079460958")),
            (Some("GB"), "020 7946 0958", Some("+442079460958")),
            (Some("GB"), "07700 900123", Some("+447700900123")),
            // India, as Pabbly's mobile carries it (country code first, no +).
            (None, "919179897123", Some("+919179897123")),
            (Some("IN"), "09179897123", Some("+919179897123")),
            (Some("IN"), "9179897123", Some("+919179897123")),
            // Brazil mobile (São Paulo, nine digits).
            (None, "+55 11 91234-5678", Some("+5511912345678")),
            (None, "5511912345678", Some("+5511912345678")),
            (Some("BR"), "(11) 91234-5678", Some("+5511912345678")),
            // A national number without a region reads as international: here +555…
            (None, "(555) 123-4567", Some("+5551234567")),
            // Nothing that can be a number.
            (None, "+-()", None),
            (None, "", None),
        ];
        for (region, text, want) in table {
            assert_eq!(
                rules(*region).e164(text).as_deref(),
                *want,
                "{text} under {region:?}"
            );
        }
    }

    #[test]
    fn leading_zeros_of_a_national_number_are_kept() {
        // +31 0001: the Netherlands' trunk prefix 0 cannot be taken off a number this
        // short, so the zeros belong to the number (libphonenumber's italian_leading_zero).
        assert_eq!(rules(None).e164("310001").as_deref(), Some("+310001"));
        assert_eq!(rules(None).e164("+310001").as_deref(), Some("+310001"));
    }

    #[test]
    fn regions_parse_case_insensitively_and_refuse_unknown_codes() {
        assert_eq!("gb".parse::<Region>().unwrap().code(), "GB");
        assert!("XX".parse::<Region>().is_err());
        assert_eq!(mobile("+919179897123"), "919179897123");
        assert_eq!(country_code("+919179897123"), Some(91));
        assert_eq!(country_code("+15551234567"), Some(1));
    }

    proptest! {
        /// Anything a `phonenumber` field may hold reads without a panic, and a number
        /// that reads once reads the same from its own E.164 form.
        #[test]
        fn e164_is_a_fixed_point(text in "[0-9 +().-]{0,32}", region in prop_oneof![Just(None), Just(Some("US")), Just(Some("GB")), Just(Some("IN"))]) {
            let rules = rules(region);
            if let Some(e164) = rules.e164(&text) {
                prop_assert!(e164.starts_with('+'));
                prop_assert_eq!(rules.e164(&e164), Some(e164.clone()));
            }
        }
    }
}
