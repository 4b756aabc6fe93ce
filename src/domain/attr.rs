//! Custom attribute values: typed scalars, never JSON text, so that later sorting and
//! filtering can compare numbers as numbers.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::issues::{json_type, Issues};

/// Longest text value, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Most keys in one contact's `custom_attributes`.
pub const MAX_ATTRIBUTES: usize = 100;

/// One stored custom attribute value.
///
/// Integers keep their exact value (`Int`); any other finite number is a `Float`.
/// The variant order is part of the stored format: append, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl AttrValue {
    /// Parses one untyped value. `Ok(None)` is JSON `null` (no value).
    pub fn from_json(value: &Value, path: &str, issues: &mut Issues) -> Option<Option<Self>> {
        match value {
            Value::Null => Some(None),
            Value::Bool(b) => Some(Some(Self::Bool(*b))),
            Value::String(s) => {
                if s.chars().count() > MAX_TEXT_CHARS {
                    issues.push(path, format!("must be at most {MAX_TEXT_CHARS} characters"));
                    None
                } else {
                    Some(Some(Self::Text(s.clone())))
                }
            }
            Value::Number(n) => match Self::from_number(n) {
                Some(v) => Some(Some(v)),
                None => {
                    issues.push(path, "must be a finite number");
                    None
                }
            },
            Value::Array(_) | Value::Object(_) => {
                issues.push(
                    path,
                    format!(
                        "must be a string, number, boolean or null, got {}",
                        json_type(value)
                    ),
                );
                None
            }
        }
    }

    fn from_number(n: &Number) -> Option<Self> {
        if let Some(i) = n.as_i64() {
            return Some(Self::Int(i));
        }
        n.as_f64().filter(|f| f.is_finite()).map(Self::Float)
    }

    /// The value as JSON, the way the client sent it.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Text(s) => Value::String(s.clone()),
            Self::Int(i) => Value::Number((*i).into()),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Bool(b) => Value::Bool(*b),
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
        let mut issues = Issues::new();
        let int = AttrValue::from_json(&json!(540), "x", &mut issues).unwrap();
        let float = AttrValue::from_json(&json!(5.25), "x", &mut issues).unwrap();
        assert_eq!(int, Some(AttrValue::Int(540)));
        assert_eq!(float, Some(AttrValue::Float(5.25)));
        assert_eq!(int.unwrap().to_json(), json!(540));
        assert!(issues.is_empty());
    }

    #[test]
    fn arrays_and_objects_are_rejected_with_the_path() {
        let mut issues = Issues::new();
        assert!(
            AttrValue::from_json(&json!([1]), "users[0].custom_attributes.a", &mut issues)
                .is_none()
        );
        assert_eq!(issues.as_slice()[0].field, "users[0].custom_attributes.a");
    }
}
