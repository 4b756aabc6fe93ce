//! Record encoding: one version byte, then bincode, then a checksum (see
//! `store::seal`) over the record and the key it is stored under, so a changed byte in
//! either is detected when the record is read. A new layout gets a new version byte;
//! older layouts are decoded only by the upgrade that rewrites them
//! (`decode_legacy_*`), so a damaged version byte cannot pass an unsealed record off
//! as a current one.

use bincode::config::{self, Configuration};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::changes::ChangeRecord;
use super::seal::{seal_for, unseal_for};
use super::webhooks::OutboxEvent;
use super::StoreError;
use crate::domain::webhook::{Delivery, Webhook};
use crate::domain::{Access, Agent, ApiKey, AttrType, AttributeDef, Contact, RateLimit, Scope};

/// Contacts before typed attributes: no `Date` value variant. Legacy.
const CONTACT_V1: u8 = 1;
/// Contacts with typed attributes (`AttrValue::Date`), unsealed. Legacy.
const CONTACT_V2: u8 = 2;
/// Version 2, sealed: no phone identity, tags, lists, opt-in, blocking or source.
/// Read still: a schema-5 write-ahead log holds them (see [`v3`]).
const CONTACT_V3: u8 = 3;
/// Sealed, with all of these. Written now.
const CONTACT_V4: u8 = 4;
/// Unsealed agents, keys and attribute definitions. Legacy.
const AGENT_V1: u8 = 1;
const KEY_V1: u8 = 1;
const ATTRIBUTE_V1: u8 = 1;
/// Version 1, sealed. Written now.
const AGENT_V2: u8 = 2;
const ATTRIBUTE_V2: u8 = 2;
/// Keys of version 1, sealed: no access, expiry or rate limit. Read still.
const KEY_V2: u8 = 2;
/// Sealed, with access, expiry and rate limit. Written now.
const KEY_V3: u8 = 3;
/// Change feed entries, sealed. Written now.
const CHANGE_V1: u8 = 1;
/// Webhook endpoints, queued events and deliveries, sealed. Written now.
const WEBHOOK_V1: u8 = 1;
const EVENT_V1: u8 = 1;
const DELIVERY_V1: u8 = 1;

fn cfg() -> Configuration {
    config::standard()
}

/// `version`, the encoded `value`, and a seal over them and `key`.
fn encode<T: Serialize>(version: u8, value: &T, key: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(version);
    // Encoding plain structs into a Vec cannot fail: no I/O, no unsupported types.
    bincode::serde::encode_into_std_write(value, &mut out, cfg())
        .map(|_| ())
        .unwrap_or_else(|err| unreachable!("bincode encode into Vec failed: {err}"));
    seal_for(key, &mut out);
    out
}

fn decode_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, StoreError> {
    match bincode::serde::decode_from_slice(body, cfg()) {
        Ok((value, read)) if read == body.len() => Ok(value),
        Ok(_) => Err(StoreError::Corrupt(format!(
            "{what}: bytes after the record"
        ))),
        Err(err) => Err(StoreError::Corrupt(format!("{what}: {err}"))),
    }
}

fn unknown_version(what: &str, version: u8) -> StoreError {
    StoreError::Incompatible(format!(
        "{what} record version {version} is not known to this build"
    ))
}

/// Decodes a sealed record of version `expected`, stored under `key`. The seal is
/// checked first: a changed version byte is damage, and only a record that is whole
/// but of another version is `Incompatible`.
fn decode<T: DeserializeOwned>(
    what: &str,
    expected: u8,
    bytes: &[u8],
    key: &[&[u8]],
) -> Result<T, StoreError> {
    let sealed = unseal_for(key, bytes, what)?;
    match sealed.split_first() {
        Some((&version, body)) if version == expected => decode_body(what, body),
        Some((&version, _)) => Err(unknown_version(what, version)),
        None => Err(StoreError::Corrupt(format!("{what}: empty record"))),
    }
}

/// Decodes an unsealed record of version `legacy` or a sealed one of `current`.
fn decode_legacy<T: DeserializeOwned>(
    what: &str,
    legacy: u8,
    current: u8,
    bytes: &[u8],
    key: &[&[u8]],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&version, body)) if version == legacy => decode_body(what, body),
        _ => decode(what, current, bytes, key),
    }
}

/// A contact record of `agent`, sealed with the agent's id: a record found under another
/// agent fails its seal. The external id is in the record itself.
pub fn encode_contact(agent: &str, contact: &Contact) -> Vec<u8> {
    encode(CONTACT_V4, contact, &[agent.as_bytes()])
}

/// A contact record of version 2 (`sealed: false`) or 3, as older builds wrote them.
#[cfg(test)]
pub fn encode_legacy_contact(agent: &str, contact: &Contact, sealed: bool) -> Vec<u8> {
    let record = v3::Contact::from(contact);
    let mut bytes = encode(CONTACT_V3, &record, &[agent.as_bytes()]);
    if !sealed {
        bytes.truncate(bytes.len() - 4);
        bytes[0] = CONTACT_V2;
    }
    bytes
}

/// Decodes a sealed contact record of `agent`: the current version, or version 3 with
/// the fields it lacks empty and its phone number read without a default region. Its
/// contact number is checked against the key by the caller that knows it.
pub fn decode_contact(agent: &str, bytes: &[u8]) -> Result<Contact, StoreError> {
    let key: &[&[u8]] = &[agent.as_bytes()];
    match bytes.first() {
        Some(&CONTACT_V3) => {
            decode::<v3::Contact>("contact", CONTACT_V3, bytes, key).map(Into::into)
        }
        _ => decode("contact", CONTACT_V4, bytes, key),
    }
}

/// A change feed entry of `agent`, sealed with its key.
pub fn encode_change(agent: &str, seq: u64, change: &ChangeRecord) -> Vec<u8> {
    encode(CHANGE_V1, change, &[agent.as_bytes(), &seq.to_le_bytes()])
}

/// Decodes the change feed entry stored under `(agent, seq)`.
pub fn decode_change(agent: &str, seq: u64, bytes: &[u8]) -> Result<ChangeRecord, StoreError> {
    decode(
        "change",
        CHANGE_V1,
        bytes,
        &[agent.as_bytes(), &seq.to_le_bytes()],
    )
}

/// A webhook endpoint, sealed with its id.
pub fn encode_webhook(hook: &Webhook) -> Vec<u8> {
    encode(WEBHOOK_V1, hook, &[hook.id.as_bytes()])
}

pub fn decode_webhook(id: &str, bytes: &[u8]) -> Result<Webhook, StoreError> {
    let hook: Webhook = decode("webhook", WEBHOOK_V1, bytes, &[id.as_bytes()])?;
    if hook.id != id {
        return Err(StoreError::Corrupt(format!(
            "webhook {id}: the record names {}",
            hook.id
        )));
    }
    Ok(hook)
}

/// An event queued for webhook `webhook` as number `n`.
pub fn encode_event(webhook: &str, n: u64, event: &OutboxEvent) -> Vec<u8> {
    encode(EVENT_V1, event, &[webhook.as_bytes(), &n.to_le_bytes()])
}

pub fn decode_event(webhook: &str, n: u64, bytes: &[u8]) -> Result<OutboxEvent, StoreError> {
    decode(
        "webhook event",
        EVENT_V1,
        bytes,
        &[webhook.as_bytes(), &n.to_le_bytes()],
    )
}

/// Delivery `number` of webhook `webhook`.
pub fn encode_delivery(webhook: &str, delivery: &Delivery) -> Vec<u8> {
    encode(
        DELIVERY_V1,
        delivery,
        &[webhook.as_bytes(), &delivery.id.to_le_bytes()],
    )
}

pub fn decode_delivery(webhook: &str, number: u64, bytes: &[u8]) -> Result<Delivery, StoreError> {
    decode(
        "webhook delivery",
        DELIVERY_V1,
        bytes,
        &[webhook.as_bytes(), &number.to_le_bytes()],
    )
}

/// Decodes the contact record stored under `(agent, n)`: a record that names another
/// contact number is damage (the key changed, or the value).
pub fn decode_stored_contact(agent: &str, n: u64, bytes: &[u8]) -> Result<Contact, StoreError> {
    let contact = decode_contact(agent, bytes)?;
    if contact.id != n {
        return Err(StoreError::Corrupt(format!(
            "the contact stored as number {n} is number {} ('{}')",
            contact.id, contact.external_id
        )));
    }
    Ok(contact)
}

/// Checks that the email index entry for `email` found a contact that has it: a
/// mismatch means the entry changed.
pub fn expect_email(contact: Contact, email: &str) -> Result<Contact, StoreError> {
    if contact.email_key().as_deref() != Some(email) {
        return Err(StoreError::Corrupt(format!(
            "the email index names '{}' for an email it does not have",
            contact.external_id
        )));
    }
    Ok(contact)
}

/// Decodes a contact record of `agent` of any version this build knows (the upgrade's,
/// salvage's of an older data dir, and the golden-file test's).
pub fn decode_legacy_contact(agent: &str, bytes: &[u8]) -> Result<Contact, StoreError> {
    match bytes.split_first() {
        Some((&CONTACT_V2, body)) => decode_body::<v3::Contact>("contact v2", body).map(Into::into),
        Some((&CONTACT_V1, body)) => {
            decode_body::<v1::Contact>("contact v1", body).map(|c| v3::Contact::from(c).into())
        }
        _ => decode_contact(agent, bytes),
    }
}

/// The version-3 contact layout (typed attributes, sealed), frozen.
mod v3 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::domain::phone::PhoneRules;
    use crate::domain::{AttrValue, Source, StripeAccount};

    #[derive(Serialize, Deserialize)]
    pub struct Contact {
        pub id: u64,
        pub external_id: String,
        pub name: Option<String>,
        pub email: Option<String>,
        pub phonenumber: Option<String>,
        pub stripe_accounts: Vec<StripeAccount>,
        pub custom_attributes: BTreeMap<String, AttrValue>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    /// A record as builds before schema 6 wrote it, for tests of their data dirs.
    #[cfg(test)]
    impl From<&crate::domain::Contact> for Contact {
        fn from(c: &crate::domain::Contact) -> Self {
            Self {
                id: c.id,
                external_id: c.external_id.clone(),
                name: c.name.clone(),
                email: c.email.clone(),
                phonenumber: c.phonenumber.clone(),
                stripe_accounts: c.stripe_accounts.clone(),
                custom_attributes: c.custom_attributes.clone(),
                created_at: c.created_at,
                updated_at: c.updated_at,
            }
        }
    }

    impl From<Contact> for crate::domain::Contact {
        fn from(c: Contact) -> Self {
            Self {
                id: c.id,
                external_id: c.external_id,
                name: c.name,
                email: c.email,
                phone: c
                    .phonenumber
                    .as_deref()
                    .and_then(|p| PhoneRules::default().e164(p)),
                phonenumber: c.phonenumber,
                stripe_accounts: c.stripe_accounts,
                custom_attributes: c.custom_attributes,
                tags: Vec::new(),
                lists: Vec::new(),
                optin: None,
                incoming_blocked: None,
                source: Source::Api,
                created_at: c.created_at,
                updated_at: c.updated_at,
            }
        }
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

    impl From<Contact> for super::v3::Contact {
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
        AGENT_V2,
        &AgentRecord {
            name: agent.name.clone(),
            created_at: agent.created_at,
            contact_count: agent.contact_count,
        },
        &[agent.id.as_bytes()],
    )
}

pub fn decode_agent(id: &str, bytes: &[u8]) -> Result<Agent, StoreError> {
    agent_from(id, decode("agent", AGENT_V2, bytes, &[id.as_bytes()])?)
}

/// [`decode_agent`] for the upgrade: unsealed records too.
pub fn decode_legacy_agent(id: &str, bytes: &[u8]) -> Result<Agent, StoreError> {
    let key: &[&[u8]] = &[id.as_bytes()];
    agent_from(id, decode_legacy("agent", AGENT_V1, AGENT_V2, bytes, key)?)
}

fn agent_from(id: &str, rec: AgentRecord) -> Result<Agent, StoreError> {
    Ok(Agent {
        id: id.to_owned(),
        name: rec.name,
        created_at: rec.created_at,
        contact_count: rec.contact_count,
    })
}

/// A key as versions 1 and 2 store it.
#[derive(Serialize, Deserialize)]
struct KeyRecordV2 {
    id: String,
    name: String,
    /// `None` for an admin key, else the agent id.
    agent: Option<String>,
    prefix: String,
    created_at: i64,
    revoked: bool,
}

/// A key as version 3 stores it.
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    name: String,
    /// `None` for an admin key, else the agent id.
    agent: Option<String>,
    read_only: bool,
    expires_at: Option<i64>,
    /// `(requests, per_secs)`.
    rate_limit: Option<(u32, u32)>,
    prefix: String,
    created_at: i64,
    revoked: bool,
}

impl From<KeyRecordV2> for KeyRecord {
    fn from(v2: KeyRecordV2) -> Self {
        Self {
            id: v2.id,
            name: v2.name,
            agent: v2.agent,
            read_only: false,
            expires_at: None,
            rate_limit: None,
            prefix: v2.prefix,
            created_at: v2.created_at,
            revoked: v2.revoked,
        }
    }
}

pub fn encode_key(key: &ApiKey) -> Vec<u8> {
    encode(
        KEY_V3,
        &KeyRecord {
            id: key.id.clone(),
            name: key.name.clone(),
            agent: match &key.scope {
                Scope::Admin => None,
                Scope::Agent(id) => Some(id.clone()),
            },
            read_only: key.access == Access::Read,
            expires_at: key.expires_at,
            rate_limit: key.rate_limit.map(|r| (r.requests, r.per_secs)),
            prefix: key.prefix.clone(),
            created_at: key.created_at,
            revoked: key.revoked,
        },
        &[key.digest.as_slice()],
    )
}

/// Decodes a sealed key record of version 2 or 3.
pub fn decode_key(digest: &[u8], bytes: &[u8]) -> Result<ApiKey, StoreError> {
    let record = match bytes.first() {
        Some(&KEY_V2) => decode::<KeyRecordV2>("api key", KEY_V2, bytes, &[digest])?.into(),
        _ => decode("api key", KEY_V3, bytes, &[digest])?,
    };
    key_from(digest, record)
}

/// [`decode_key`] for the upgrade: unsealed records too.
pub fn decode_legacy_key(digest: &[u8], bytes: &[u8]) -> Result<ApiKey, StoreError> {
    match bytes.split_first() {
        Some((&KEY_V1, body)) => {
            key_from(digest, decode_body::<KeyRecordV2>("api key", body)?.into())
        }
        _ => decode_key(digest, bytes),
    }
}

fn key_from(digest: &[u8], rec: KeyRecord) -> Result<ApiKey, StoreError> {
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| StoreError::Corrupt("api key digest is not 32 bytes".into()))?;
    Ok(ApiKey {
        id: rec.id,
        name: rec.name,
        scope: rec.agent.map_or(Scope::Admin, Scope::Agent),
        access: if rec.read_only {
            Access::Read
        } else {
            Access::Write
        },
        expires_at: rec.expires_at,
        rate_limit: match rec.rate_limit {
            None => None,
            Some((requests, per_secs)) if requests > 0 && per_secs > 0 => {
                Some(RateLimit { requests, per_secs })
            }
            Some(_) => {
                return Err(StoreError::Corrupt(
                    "api key: a rate limit of zero requests or seconds".into(),
                ))
            }
        },
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

pub fn encode_attribute(agent: &str, def: &AttributeDef) -> Vec<u8> {
    encode(
        ATTRIBUTE_V2,
        &AttributeRecord {
            label: def.label.clone(),
            kind: kind_code(def.kind),
            description: def.description.clone(),
            archived: def.archived,
            created_at: def.created_at,
        },
        &[agent.as_bytes(), def.name.as_bytes()],
    )
}

pub fn decode_attribute(agent: &str, name: &str, bytes: &[u8]) -> Result<AttributeDef, StoreError> {
    let key: &[&[u8]] = &[agent.as_bytes(), name.as_bytes()];
    attribute_from(name, decode("custom attribute", ATTRIBUTE_V2, bytes, key)?)
}

/// [`decode_attribute`] for the upgrade: unsealed records too.
pub fn decode_legacy_attribute(
    agent: &str,
    name: &str,
    bytes: &[u8],
) -> Result<AttributeDef, StoreError> {
    let key: &[&[u8]] = &[agent.as_bytes(), name.as_bytes()];
    attribute_from(
        name,
        decode_legacy("custom attribute", ATTRIBUTE_V1, ATTRIBUTE_V2, bytes, key)?,
    )
}

fn attribute_from(name: &str, rec: AttributeRecord) -> Result<AttributeDef, StoreError> {
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
    fn a_whole_record_of_an_unknown_version_is_incompatible_a_changed_one_corrupt() {
        let mut unknown = vec![9, 0];
        crate::store::seal::seal_for(&[b"a"], &mut unknown);
        assert!(matches!(
            decode_contact("a", &unknown),
            Err(StoreError::Incompatible(_))
        ));
        assert!(matches!(
            decode_contact("a", &[9, 0]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_contact("a", &[]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_legacy_contact("a", &[1, 0xff]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_changed_byte_in_a_record_or_its_key_is_detected() {
        let contact = crate::store::samples::named(7, "Ada");
        let bytes = encode_contact("bot", &contact);
        assert_eq!(decode_contact("bot", &bytes).unwrap(), contact);
        assert!(
            decode_contact("bou", &bytes).is_err(),
            "another agent's record"
        );
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                matches!(decode_contact("bot", &damaged), Err(StoreError::Corrupt(_))),
                "byte {i}"
            );
        }
        let agent = Agent {
            id: "bot".into(),
            name: "Bot".into(),
            created_at: 1,
            contact_count: 2,
        };
        let bytes = encode_agent(&agent);
        assert_eq!(decode_agent("bot", &bytes).unwrap(), agent);
        assert!(
            decode_agent("bou", &bytes).is_err(),
            "stored under another key"
        );
        let mut legacy = bytes.clone();
        legacy[0] = AGENT_V1;
        assert!(
            decode_agent("bot", &legacy).is_err(),
            "an unsealed version is not read outside the upgrade"
        );
    }

    #[test]
    fn key_round_trip() {
        let mut key = ApiKey {
            id: "key_1".into(),
            name: "ci".into(),
            scope: Scope::Agent("bot".into()),
            access: Access::Read,
            expires_at: Some(1_900_000_000),
            rate_limit: Some(RateLimit {
                requests: 100,
                per_secs: 10,
            }),
            prefix: "oc_live_abcd".into(),
            digest: [7; 32],
            created_at: 5,
            revoked: true,
        };
        assert_eq!(decode_key(&[7; 32], &encode_key(&key)).unwrap(), key);
        // A version-2 record reads as a key without restrictions.
        let v2 = KeyRecordV2 {
            id: key.id.clone(),
            name: key.name.clone(),
            agent: Some("bot".into()),
            prefix: key.prefix.clone(),
            created_at: 5,
            revoked: true,
        };
        let bytes = encode(KEY_V2, &v2, &[&[7; 32]]);
        key.access = Access::Write;
        key.expires_at = None;
        key.rate_limit = None;
        assert_eq!(decode_key(&[7; 32], &bytes).unwrap(), key);
    }
}
