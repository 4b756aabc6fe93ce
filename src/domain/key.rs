//! API keys as stored: never the plaintext, only its SHA-256 digest.

use serde_json::{json, Map, Value};

use super::issues::json_type;
use super::Issues;

/// What a key may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every agent; may manage agents and keys.
    Admin,
    /// One agent's contacts and custom attributes.
    Agent(String),
}

impl Scope {
    /// Whether this scope includes the agent `agent_id`.
    pub fn includes(&self, agent_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Agent(id) => id == agent_id,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin)
    }
}

/// What a key may do within its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Reads only: every write, import and change of attributes, labels, keys or
    /// agents is refused.
    Read,
    #[default]
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }
}

/// A request budget: `requests` per `per_secs` seconds, refilled evenly (a token
/// bucket holding at most `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per_secs: u32,
}

/// Largest `requests` and `per_secs` of a rate limit.
pub const MAX_RATE_REQUESTS: u32 = 1_000_000;
pub const MAX_RATE_SECS: u32 = 86_400;

impl RateLimit {
    /// Reads `{"requests":N,"per_secs":S}`; problems go to `issues` under `field`.
    pub fn from_json(value: &Value, field: &str, issues: &mut Issues) -> Option<Self> {
        let Some(obj) = value.as_object() else {
            issues.push(
                field,
                format!("must be an object, got {}", json_type(value)),
            );
            return None;
        };
        let requests = positive(obj, field, "requests", MAX_RATE_REQUESTS, issues);
        let per_secs = positive(obj, field, "per_secs", MAX_RATE_SECS, issues);
        if let Some(other) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "requests" | "per_secs"))
        {
            issues.push(format!("{field}.{other}"), "is not a field of a rate limit");
        }
        Some(Self {
            requests: requests?,
            per_secs: per_secs?,
        })
    }

    pub fn to_json(self) -> Value {
        json!({ "requests": self.requests, "per_secs": self.per_secs })
    }
}

fn positive(
    obj: &Map<String, Value>,
    parent: &str,
    name: &str,
    max: u32,
    issues: &mut Issues,
) -> Option<u32> {
    let field = format!("{parent}.{name}");
    match obj.get(name) {
        None => {
            issues.push(field, "is required");
            None
        }
        Some(value) => match value.as_u64() {
            Some(n) if (1..=u64::from(max)).contains(&n) => u32::try_from(n).ok(),
            _ => {
                issues.push(field, format!("must be an integer from 1 to {max}"));
                None
            }
        },
    }
}

/// What a new key is for: everything about it but its secret and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub name: String,
    pub scope: Scope,
    pub access: Access,
    /// Unix seconds after which the key no longer authenticates.
    pub expires_at: Option<i64>,
    /// The key's own budget, instead of the server's `rate_limit`.
    pub rate_limit: Option<RateLimit>,
}

impl KeyGrant {
    /// A key that may do everything its scope allows, for as long as it lives.
    pub fn unrestricted(name: &str, scope: Scope) -> Self {
        Self {
            name: name.to_owned(),
            scope,
            access: Access::Write,
            expires_at: None,
            rate_limit: None,
        }
    }
}

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub access: Access,
    pub expires_at: Option<i64>,
    pub rate_limit: Option<RateLimit>,
    /// The first characters of the plaintext, so people can tell keys apart.
    pub prefix: String,
    pub digest: [u8; 32],
    pub created_at: i64,
    pub revoked: bool,
}

impl ApiKey {
    /// Whether the key has expired at Unix time `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The public JSON form, never with the plaintext (added only at creation).
    pub fn to_json(&self) -> Value {
        let (scope, chatbot_id) = match &self.scope {
            Scope::Admin => ("admin", Value::Null),
            Scope::Agent(id) => ("agent", Value::String(id.clone())),
        };
        json!({
            "id": self.id,
            "name": self.name,
            "scope": scope,
            "chatbot_id": chatbot_id,
            "access": self.access.as_str(),
            "expires_at": self.expires_at,
            "rate_limit": self.rate_limit.map(RateLimit::to_json),
            "prefix": self.prefix,
            "created_at": self.created_at,
            "revoked": self.revoked,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_name_each_bad_field() {
        let mut issues = Issues::new();
        let ok = RateLimit::from_json(
            &json!({"requests": 100, "per_secs": 10}),
            "rate_limit",
            &mut issues,
        );
        assert_eq!(
            ok,
            Some(RateLimit {
                requests: 100,
                per_secs: 10
            })
        );
        assert!(issues.is_empty());
        let bad =
            RateLimit::from_json(&json!({"requests": 0, "per": 1}), "rate_limit", &mut issues);
        assert_eq!(bad, None);
        let fields: Vec<String> = issues.into_vec().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "rate_limit.requests",
                "rate_limit.per_secs",
                "rate_limit.per"
            ]
        );
    }

    #[test]
    fn a_key_expires_at_its_second() {
        let mut key = ApiKey {
            id: "key_a".into(),
            name: "a".into(),
            scope: Scope::Admin,
            access: Access::Read,
            expires_at: Some(100),
            rate_limit: None,
            prefix: "oc_live_abcd".into(),
            digest: [0; 32],
            created_at: 1,
            revoked: false,
        };
        assert!(!key.expired(99));
        assert!(key.expired(100));
        key.expires_at = None;
        assert!(!key.expired(i64::MAX));
        assert_eq!(key.to_json()["access"], "read");
    }
}
