//! Agents ("chatbots"): the owner of a set of contacts.

use serde_json::Value;

use super::ids;
use super::issues::{check_display_name, json_type, required_string, Issues};

/// A stored agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Number of contacts, maintained in the same transaction as every contact write.
    pub contact_count: u64,
}

impl Agent {
    /// The public JSON form: API.md's agent plus the extension `contact_count`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "contact_count": self.contact_count,
        })
    }
}

/// A validated `POST /chatbots` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInput {
    pub id: Option<String>,
    pub name: String,
}

impl AgentInput {
    /// Parses `{"id"?: str, "name": str}`, reporting every problem.
    pub fn parse(body: &Value) -> Result<Self, Issues> {
        let mut issues = Issues::new();
        let Some(obj) = body.as_object() else {
            issues.push(
                "body",
                format!("must be an object, got {}", json_type(body)),
            );
            return Err(issues);
        };
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                if let Err(msg) = ids::check_agent_id(s) {
                    issues.push("id", msg);
                }
                Some(s.clone())
            }
            Some(other) => {
                issues.push("id", format!("must be a string, got {}", json_type(other)));
                None
            }
        };
        let name = required_string(obj, "name", &mut issues, check_display_name);
        if issues.is_empty() {
            Ok(Self { id, name })
        } else {
            Err(issues)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_reports_both_fields() {
        let issues = AgentInput::parse(&json!({"id": "bad id", "name": 3})).unwrap_err();
        let fields: Vec<_> = issues.as_slice().iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["id", "name"]);
    }

    #[test]
    fn parse_accepts_missing_id() {
        let input = AgentInput::parse(&json!({"name": "Support"})).unwrap();
        assert_eq!(input.id, None);
        assert_eq!(input.name, "Support");
    }
}
