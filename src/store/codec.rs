//! Record encoding: one version byte, then bincode. A new layout gets a new version
//! byte and a decoder for the old one, so old data dirs keep loading.

use bincode::config::{self, Configuration};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Agent, ApiKey, Contact, Scope};

const CONTACT_V1: u8 = 1;
const AGENT_V1: u8 = 1;
const KEY_V1: u8 = 1;

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

fn decode<T: DeserializeOwned>(what: &str, expected: u8, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&version, body)) if version == expected => {
            bincode::serde::decode_from_slice(body, cfg())
                .map(|(value, _)| value)
                .map_err(|err| StoreError::Corrupt(format!("{what}: {err}")))
        }
        Some((version, _)) => Err(StoreError::Incompatible(format!(
            "{what} record version {version} is not known to this build"
        ))),
        None => Err(StoreError::Corrupt(format!("{what}: empty record"))),
    }
}

pub fn encode_contact(contact: &Contact) -> Vec<u8> {
    encode(CONTACT_V1, contact)
}

pub fn decode_contact(bytes: &[u8]) -> Result<Contact, StoreError> {
    decode("contact", CONTACT_V1, bytes)
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
