//! API keys as stored: never the plaintext, only its SHA-256 digest.

use serde_json::{json, Value};

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

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// The first characters of the plaintext, so people can tell keys apart.
    pub prefix: String,
    pub digest: [u8; 32],
    pub created_at: i64,
    pub revoked: bool,
}

impl ApiKey {
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
            "prefix": self.prefix,
            "created_at": self.created_at,
            "revoked": self.revoked,
        })
    }
}
