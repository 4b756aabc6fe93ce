//! Dates for `date` custom attributes: ISO 8601 dates and date-times, or Unix seconds,
//! to UTC milliseconds and back. Stored as milliseconds so dates compare in time order;
//! shown as `YYYY-MM-DDTHH:MM:SS[.mmm]Z`. Years 0000 to 9999 only.

/// Milliseconds per day.
const DAY_MS: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in Unix milliseconds.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Days since 1970-01-01 of a proleptic Gregorian date (after H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// A cursor over the bytes of a date string.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let slice = self.bytes.get(self.pos..self.pos + n)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += n;
        Some(
            slice
                .iter()
                .fold(0, |acc, b| acc * 10 + i64::from(b - b'0')),
        )
    }

    fn eat(&mut self, allowed: &[u8]) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        if allowed.contains(&b) {
            self.pos += 1;
            Some(b)
        } else {
            None
        }
    }

    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

/// Parses `YYYY-MM-DD`, or a date-time `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z`,
/// an offset `±HH:MM`/`±HHMM`/`±HH`, or nothing (then UTC). A space may stand for `T`.
/// Fractions beyond milliseconds are truncated. Returns UTC milliseconds.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.trim().as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.eat(b"-")?;
    let month = c.digits(2)?;
    c.eat(b"-")?;
    let day = c.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if c.done() {
        return Some(ms);
    }
    c.eat(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    let mut second = 0;
    let mut millis = 0;
    if c.eat(b":").is_some() {
        second = c.digits(2)?;
        if c.eat(b".,").is_some() {
            let start = c.pos;
            while c.digits(1).is_some() {}
            let frac = &c.bytes[start..c.pos];
            if frac.is_empty() {
                return None;
            }
            millis = frac
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(3)
                .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'));
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    if let Some(sign) = c.eat(b"+-") {
        let oh = c.digits(2)?;
        let om = if c.done() {
            0
        } else {
            c.eat(b":");
            c.digits(2)?
        };
        if oh > 23 || om > 59 {
            return None;
        }
        let offset = (oh * 60 + om) * 60_000;
        ms += if sign == b'+' { -offset } else { offset };
    } else {
        c.eat(b"Zz");
    }
    (c.done() && (MIN_MS..=MAX_MS).contains(&ms)).then_some(ms)
}

/// Unix seconds (possibly fractional) to milliseconds, within years 0000–9999.
pub fn from_unix_seconds(seconds: f64) -> Option<i64> {
    let ms = (seconds * 1000.0).round();
    // The range check on the float guards the conversion below.
    if !ms.is_finite() || ms < MIN_MS as f64 || ms > MAX_MS as f64 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(ms as i64)
}

/// Formats UTC milliseconds as `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` when not whole.
pub fn format_utc(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
    let in_day = ms.rem_euclid(DAY_MS);
    let (secs, millis) = (in_day / 1000, in_day % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_dates_date_times_offsets_and_fractions() {
        let at = |s: &str| parse_iso8601(s).map(format_utc);
        assert_eq!(at("2026-11-21").as_deref(), Some("2026-11-21T00:00:00Z"));
        assert_eq!(
            at("2026-11-21T10:00:00Z").as_deref(),
            Some("2026-11-21T10:00:00Z")
        );
        assert_eq!(
            at("2026-11-21T10:00:00+02:00").as_deref(),
            Some("2026-11-21T08:00:00Z")
        );
        assert_eq!(
            at("2026-11-21T01:30-0230").as_deref(),
            Some("2026-11-21T04:00:00Z")
        );
        assert_eq!(
            at("2026-11-21 10:00:00.5").as_deref(),
            Some("2026-11-21T10:00:00.500Z")
        );
        assert_eq!(
            at("2026-11-21T10:00:00.123456789Z").as_deref(),
            Some("2026-11-21T10:00:00.123Z")
        );
        assert_eq!(at("2024-02-29").as_deref(), Some("2024-02-29T00:00:00Z"));
        assert_eq!(
            at("2026-01-01T00:30:00+01:00").as_deref(),
            Some("2025-12-31T23:30:00Z")
        );
    }

    #[test]
    fn rejects_invalid_dates() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2025-02-29",
            "2026-11-31",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:60",
            "2026-11-21T10:00:00.",
            "2026-11-21T10:00:00+25:00",
            "21/11/2026",
            "2026-11-21Tx",
            "2026-11-21T10:00:00Zjunk",
            "+2026-11-21",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_epoch_anchors() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2026-11-21T00:00:00Z"),
            Some(1_795_219_200_000)
        );
        assert_eq!(from_unix_seconds(1_795_219_200.0), Some(1_795_219_200_000));
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(from_unix_seconds(1e20), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_iso8601(&format_utc(ms)), Some(ms));
        }
    }
}
