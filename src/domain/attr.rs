//! Custom attribute values: typed scalars, never JSON text, so that sorting and
//! filtering can compare numbers as numbers and dates as dates.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::date;
use super::issues::{json_type, Issues};

/// Longest text value, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Most keys in one contact's `custom_attributes`.
pub const MAX_ATTRIBUTES: usize = 100;

/// Checks a custom attribute's name as a contact write sends it: 1 to 64 characters,
/// no control characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("attribute names must be 1 to 64 characters without control characters");
    }
    Ok(())
}

/// One stored custom attribute value.
///
/// Integers keep their exact value across the whole i64 and u64 ranges (`Int`, and
/// `UInt` above `i64::MAX`); any other finite number is a `Float`, negative zero `Int(0)`.
/// A `Date` is UTC milliseconds since the Unix epoch, shown as ISO 8601.
/// The variant order is part of the stored format: append, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i64),
    UInt(u64),
}

impl AttrValue {
    /// Checks a value as sent, before typing: a string (at most 4096 characters), a
    /// number, a boolean or null. Returns whether it may go on to typing.
    pub fn check_raw(value: &Value, path: &str, issues: &mut Issues) -> bool {
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
            Value::String(s) if s.chars().count() > MAX_TEXT_CHARS => {
                issues.push(path, format!("must be at most {MAX_TEXT_CHARS} characters"));
                false
            }
            Value::String(_) => true,
            Value::Array(_) | Value::Object(_) => {
                issues.push(
                    path,
                    format!(
                        "must be a string, number, boolean or null, got {}",
                        json_type(value)
                    ),
                );
                false
            }
        }
    }

    /// A JSON number: an integer exactly (`Int`, or `UInt` above `i64::MAX`), anything
    /// else as a finite `Float`.
    pub fn from_number(n: &Number) -> Option<Self> {
        if let Some(i) = n.as_i64() {
            return Some(Self::Int(i));
        }
        if let Some(u) = n.as_u64() {
            return Some(Self::UInt(u));
        }
        n.as_f64().and_then(Self::float)
    }

    /// A number written as text (a CSV cell, a filter value), as [`AttrValue::from_number`]
    /// reads the same number in JSON.
    pub fn parse_number(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(i) = text.parse::<i64>() {
            return Some(Self::Int(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Self::UInt(u));
        }
        text.parse::<f64>().ok().and_then(Self::float)
    }

    /// A finite float; negative zero is the integer 0 (JSON's `-0` reads as a float).
    fn float(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        Some(if f == 0.0 && f.is_sign_negative() {
            Self::Int(0)
        } else {
            Self::Float(f)
        })
    }

    /// The value as JSON, the way the client sent it.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Text(s) => Value::String(s.clone()),
            Self::Int(i) => Value::Number((*i).into()),
            Self::UInt(u) => Value::Number((*u).into()),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Bool(b) => Value::Bool(*b),
            Self::Date(ms) => Value::String(date::format_utc(*ms)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_integer_and_float_forms() {
        let int = AttrValue::from_number(json!(540).as_number().unwrap()).unwrap();
        let float = AttrValue::from_number(json!(5.25).as_number().unwrap()).unwrap();
        assert_eq!(int, AttrValue::Int(540));
        assert_eq!(float, AttrValue::Float(5.25));
        assert_eq!(int.to_json(), json!(540));
        let max: Value = serde_json::from_str("18446744073709551615").unwrap();
        let max = AttrValue::from_number(max.as_number().unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&max.to_json()).unwrap(),
            "18446744073709551615"
        );
        let min: Value = serde_json::from_str("-9223372036854775808").unwrap();
        let min = AttrValue::from_number(min.as_number().unwrap()).unwrap();
        assert_eq!(min, AttrValue::Int(i64::MIN));
        for zero in ["-0", "-0.0"] {
            let v: Value = serde_json::from_str(zero).unwrap();
            let v = AttrValue::from_number(v.as_number().unwrap()).unwrap();
            assert_eq!(serde_json::to_string(&v.to_json()).unwrap(), "0", "{zero}");
            assert_eq!(AttrValue::parse_number(zero), Some(AttrValue::Int(0)));
        }
        assert_eq!(
            AttrValue::parse_number(" 18446744073709551615 "),
            Some(AttrValue::UInt(u64::MAX))
        );
        assert_eq!(AttrValue::parse_number("1e400"), None);
        assert_eq!(AttrValue::Date(0).to_json(), json!("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn arrays_and_objects_are_rejected_with_the_path() {
        let mut issues = Issues::new();
        assert!(!AttrValue::check_raw(
            &json!([1]),
            "users[0].custom_attributes.a",
            &mut issues
        ));
        assert!(AttrValue::check_raw(&json!(null), "x", &mut issues));
        assert_eq!(issues.as_slice()[0].field, "users[0].custom_attributes.a");
    }
}
