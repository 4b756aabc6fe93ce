//! Validation issues: a field path and a message, collected for a whole request.

use serde::Serialize;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub field: String,
    pub message: String,
}

/// Every problem found in a request, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues(Vec<Issue>);

impl Issues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn into_vec(self) -> Vec<Issue> {
        self.0
    }

    pub fn as_slice(&self) -> &[Issue] {
        &self.0
    }
}

/// Joins a path prefix and a field name: `join("users[2]", "email")` is
/// `users[2].email`, and an empty prefix gives the bare field.
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Reads the required string `field` of a body object and runs `check` on it; any
/// problem goes to `issues` under the field's name. Returns the string (empty on error).
pub fn required_string(
    obj: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    issues: &mut Issues,
    check: impl Fn(&str) -> Result<(), String>,
) -> String {
    match obj.get(field) {
        Some(serde_json::Value::String(s)) => {
            if let Err(msg) = check(s) {
                issues.push(field, msg);
            }
            s.clone()
        }
        None | Some(serde_json::Value::Null) => {
            issues.push(field, "is required");
            String::new()
        }
        Some(other) => {
            issues.push(field, format!("must be a string, got {}", json_type(other)));
            String::new()
        }
    }
}

/// The usual check for a display name: 1 to 255 characters, not only spaces.
pub fn check_display_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        Err("must be 1 to 255 characters, not only spaces".into())
    } else {
        Ok(())
    }
}

/// Names a JSON value's type for messages such as "must be a string, got number".
pub fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
