//! Record encoding: one version byte, then bincode. A new layout gets a new version
//! byte and a decoder for the old one, so old data dirs keep loading.

use bincode::config::{self, Configuration};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Agent, ApiKey, AttrType, AttributeDef, Contact, Scope};

/// Contacts before typed attributes: no `Date` value variant. Decoded, never written.
const CONTACT_V1: u8 = 1;
/// Contacts with typed attributes (`AttrValue::Date`). Written now.
const CONTACT_V2: u8 = 2;
const AGENT_V1: u8 = 1;
const KEY_V1: u8 = 1;
const ATTRIBUTE_V1: u8 = 1;

fn cfg() -> Configuration {
    config::standard()
}

fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(version);
    // Encoding plain structs into a Vec cannot fail: no I/O, no unsupported types.
    bincode::serde::encode_into_std_write(value, &mut out, cfg())
        .map(|_| ())
        .unwrap_or_else(|err| unreachable!("bincode encode into Vec failed: {err}"));
    out
}

fn decode_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(body, cfg())
        .map(|(value, _)| value)
        .map_err(|err| StoreError::Corrupt(format!("{what}: {err}")))
}

fn unknown_version(what: &str, version: u8) -> StoreError {
    StoreError::Incompatible(format!(
        "{what} record version {version} is not known to this build"
    ))
}

fn decode<T: DeserializeOwned>(what: &str, expected: u8, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&version, body)) if version == expected => decode_body(what, body),
        Some((&version, _)) => Err(unknown_version(what, version)),
        None => Err(StoreError::Corrupt(format!("{what}: empty record"))),
    }
}

pub fn encode_contact(contact: &Contact) -> Vec<u8> {
    encode(CONTACT_V2, contact)
}

/// Decodes a contact record of any version this build knows.
pub fn decode_contact(bytes: &[u8]) -> Result<Contact, StoreError> {
    match bytes.split_first() {
        Some((&CONTACT_V2, body)) => decode_body("contact", body),
        Some((&CONTACT_V1, body)) => decode_body::<v1::Contact>("contact v1", body).map(Into::into),
        Some((&version, _)) => Err(unknown_version("contact", version)),
        None => Err(StoreError::Corrupt("contact: empty record".into())),
    }
}

/// The version-1 contact layout, frozen: it must keep decoding records written before
/// attributes were typed (see `tests/golden/contact_v1.bin`).
mod v1 {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use crate::domain::{AttrValue, StripeAccount};

    #[derive(Deserialize)]
    pub enum Attr {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }

    #[derive(Deserialize)]
    pub struct Stripe {
        label: String,
        stripe_id: Option<String>,
        stripe_email: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Contact {
        id: u64,
        external_id: String,
        name: Option<String>,
        email: Option<String>,
        phonenumber: Option<String>,
        stripe_accounts: Vec<Stripe>,
        custom_attributes: BTreeMap<String, Attr>,
        created_at: i64,
        updated_at: i64,
    }

    impl From<Contact> for crate::domain::Contact {
        fn from(c: Contact) -> Self {
            Self {
                id: c.id,
                external_id: c.external_id,
                name: c.name,
                email: c.email,
                phonenumber: c.phonenumber,
                stripe_accounts: c
                    .stripe_accounts
                    .into_iter()
                    .map(|s| StripeAccount {
                        label: s.label,
                        stripe_id: s.stripe_id,
                        stripe_email: s.stripe_email,
                    })
                    .collect(),
                custom_attributes: c
                    .custom_attributes
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Attr::Text(s) => AttrValue::Text(s),
                            Attr::Int(i) => AttrValue::Int(i),
                            Attr::Float(f) => AttrValue::Float(f),
                            Attr::Bool(b) => AttrValue::Bool(b),
                        };
                        (k, v)
                    })
                    .collect(),
                created_at: c.created_at,
                updated_at: c.updated_at,
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AgentRecord {
    name: String,
    created_at: i64,
    contact_count: u64,
}

pub fn encode_agent(agent: &Agent) -> Vec<u8> {
    encode(
        AGENT_V1,
        &AgentRecord {
            name: agent.name.clone(),
            created_at: agent.created_at,
            contact_count: agent.contact_count,
        },
    )
}

pub fn decode_agent(id: &str, bytes: &[u8]) -> Result<Agent, StoreError> {
    let rec: AgentRecord = decode("agent", AGENT_V1, bytes)?;
    Ok(Agent {
        id: id.to_owned(),
        name: rec.name,
        created_at: rec.created_at,
        contact_count: rec.contact_count,
    })
}

#[derive(Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    name: String,
    /// `None` for an admin key, else the agent id.
    agent: Option<String>,
    prefix: String,
    created_at: i64,
    revoked: bool,
}

pub fn encode_key(key: &ApiKey) -> Vec<u8> {
    encode(
        KEY_V1,
        &KeyRecord {
            id: key.id.clone(),
            name: key.name.clone(),
            agent: match &key.scope {
                Scope::Admin => None,
                Scope::Agent(id) => Some(id.clone()),
            },
            prefix: key.prefix.clone(),
            created_at: key.created_at,
            revoked: key.revoked,
        },
    )
}

pub fn decode_key(digest: &[u8], bytes: &[u8]) -> Result<ApiKey, StoreError> {
    let rec: KeyRecord = decode("api key", KEY_V1, bytes)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| StoreError::Corrupt("api key digest is not 32 bytes".into()))?;
    Ok(ApiKey {
        id: rec.id,
        name: rec.name,
        scope: rec.agent.map_or(Scope::Admin, Scope::Agent),
        prefix: rec.prefix,
        digest,
        created_at: rec.created_at,
        revoked: rec.revoked,
    })
}

#[derive(Serialize, Deserialize)]
struct AttributeRecord {
    label: String,
    /// 0 text, 1 number, 2 boolean, 3 date.
    kind: u8,
    description: Option<String>,
    archived: bool,
    created_at: i64,
}

fn kind_code(kind: AttrType) -> u8 {
    match kind {
        AttrType::Text => 0,
        AttrType::Number => 1,
        AttrType::Boolean => 2,
        AttrType::Date => 3,
    }
}

pub fn encode_attribute(def: &AttributeDef) -> Vec<u8> {
    encode(
        ATTRIBUTE_V1,
        &AttributeRecord {
            label: def.label.clone(),
            kind: kind_code(def.kind),
            description: def.description.clone(),
            archived: def.archived,
            created_at: def.created_at,
        },
    )
}

pub fn decode_attribute(name: &str, bytes: &[u8]) -> Result<AttributeDef, StoreError> {
    let rec: AttributeRecord = decode("custom attribute", ATTRIBUTE_V1, bytes)?;
    let kind = match rec.kind {
        0 => AttrType::Text,
        1 => AttrType::Number,
        2 => AttrType::Boolean,
        3 => AttrType::Date,
        other => {
            return Err(StoreError::Corrupt(format!(
                "custom attribute '{name}' has unknown type code {other}"
            )))
        }
    };
    Ok(AttributeDef {
        name: name.to_owned(),
        label: rec.label,
        kind,
        description: rec.description,
        archived: rec.archived,
        created_at: rec.created_at,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_version_is_incompatible_not_corrupt() {
        assert!(matches!(
            decode_contact(&[9, 0]),
            Err(StoreError::Incompatible(_))
        ));
        assert!(matches!(decode_contact(&[]), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            decode_contact(&[1, 0xff]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn key_round_trip() {
        let key = ApiKey {
            id: "key_1".into(),
            name: "ci".into(),
            scope: Scope::Agent("bot".into()),
            prefix: "oc_live_abcd".into(),
            digest: [7; 32],
            created_at: 5,
            revoked: true,
        };
        assert_eq!(decode_key(&[7; 32], &encode_key(&key)).unwrap(), key);
    }
}
