//! Table definitions and the key layout. Tuple keys keep agents apart without any
//! separator escaping: every agent's rows form one contiguous key range.

use redb::TableDefinition;

/// `(agent_id, contact number)` → versioned contact record: creation order, and
/// `contact_<n>` lookup. Contact numbers only grow, so a new contact is appended at the
/// end of its agent's range: a batch of new contacts fills a few pages instead of
/// touching one page per contact, and a listing in creation order reads pages in turn.
pub const CONTACTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("contact_records");
/// `(agent_id, external_id)` → contact number. Its entries are small, so its pages stay
/// in the cache where the records' would not.
pub const CONTACTS_BY_EXTERNAL_ID: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("contacts_by_external_id");
/// `(agent_id, email key)` → external_id; see `domain::contact::email_key`.
pub const CONTACTS_BY_EMAIL: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("contacts_by_email");
/// The name-word dictionary of Pabbly's name filter: `(agent_id, infix, word)` as
/// index key segments (see `index::names`). Part of the indexes: rebuilt with them.
pub const NAME_INFIXES: TableDefinition<&[u8], ()> = TableDefinition::new("name_infixes");

/// `(agent_id, folded tag name)` → the name as defined (see `domain::label`). How many
/// contacts carry each is in `field_counts` under `tags/<folded name>`.
pub const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// `(agent_id, folded list name)` → the name as defined; counts under `lists/<folded>`.
pub const LISTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("lists");
/// agent_id → versioned agent record.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// SHA-256 digest of the key → versioned key record.
pub const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
/// `(agent_id, attribute name)` → versioned custom attribute definition.
pub const CUSTOM_ATTRIBUTES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("custom_attributes");
// The sort index (segments `(agent_id, field, sort key)` then the contact number, see
// `keys`; `created_at`, `updated_at`, `name`, `phonenumber` and every custom attribute
// value — `email` and `external_id` order come from `contacts_by_email` and
// `contacts_by_external_id`, creation order from `contact_records`) and the word index (segments
// `(agent_id, search word)` then the contact number) are stored log-structured in the
// tables of `lsm`.
/// `(agent_id, field)` → how many contacts have a value there. Below the agent's
/// count, a sort by that field ends with a tail of contacts without a value.
pub const FIELD_COUNTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("field_counts");
/// `(agent_id, sequence number)` → versioned change record: the agent's change feed
/// (see `changes`), numbered from 1 in commit order. Entries older than the retention
/// are removed from the front of each agent's range.
pub const CHANGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("changes");
/// agent_id → the last sequence number its feed gave out: kept when the entries are
/// pruned, so numbers are never given out twice.
pub const CHANGE_SEQS: TableDefinition<&str, u64> = TableDefinition::new("change_seqs");
/// Webhook id → versioned endpoint record (see `webhooks`).
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// `(webhook id, queue number)` → versioned event record: the endpoint's outbox,
/// written in the same transaction as the change, removed once delivered.
pub const WEBHOOK_OUTBOX: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("webhook_outbox");
/// Webhook id → the last queue number given out.
pub const WEBHOOK_QUEUES: TableDefinition<&str, u64> = TableDefinition::new("webhook_queues");
/// `(webhook id, delivery number)` → versioned delivery record (the last
/// `webhooks::KEPT_DELIVERIES` of each endpoint).
pub const WEBHOOK_DELIVERIES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("webhook_deliveries");
/// Named counters and flags.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_CONTACT_ID: &str = "next_contact_id";
pub const META_INITIALIZED: &str = "initialized";
pub const META_INDEX_VERSION: &str = "index_version";
/// The sequence number of the last checkpoint: the file holds every change the
/// write-ahead log recorded up to it (see `wal`).
pub const META_WAL_CHECKPOINT: &str = "wal_checkpoint";
/// The number of the last webhook event (event ids are `evt_<16 hex digits>`).
pub const META_LAST_EVENT: &str = "last_event";

/// The layout of the sort and word indexes (and which words and keys they hold); a data
/// dir with another one, or none, has them rebuilt from the contact records at open.
/// Version 2 moved them from one B-tree table each into the log and runs of `lsm`;
/// version 3 records merges in flight in `index_merges` (several at once, carried out
/// by the merger thread) instead of one in `index_state`; version 4 gives a phone number
/// one word per digit group start instead of one per group (see `domain::search`);
/// version 5 stores run chunks packed (see `lsm::block::PackedBuilder`); version 6
/// seals blocks, chunks and journal entries with a checksum and cuts text sort keys to
/// 1024 bytes (see `domain::search::text_key`); version 7 adds entries for tags, lists,
/// `optin`, `incoming_blocked` and `source`, which filters read; version 8 adds the
/// name-word dictionary (`name_infixes`, see `index::names`); version 9 adds `phone`
/// entries (the number in E.164) and removes the `contacts_by_phone` table they replace.
pub const INDEX_VERSION: u64 = 9;

/// The layout this build writes. Version 2 added `custom_attributes` and contact
/// records with typed values; a version-1 data dir is upgraded at open (the new table
/// is created; old contact records keep their version byte and are decoded as such).
/// Version 3 added the sort and word indexes, built at open; the bump keeps older
/// builds, which would not maintain them, from writing to the data dir. Version 4
/// seals every record with a checksum, keeps external ids in NFC and keys the email
/// index by Unicode-folded emails. Version 5 keys contact records by contact number
/// (`contact_records`) with an external-id index beside them, where version 4 keyed
/// them by external id (`contacts`) with a contact-number index (`contacts_by_id`);
/// see `upgrade`. Version 6 adds phone identity (the number in E.164 in each record,
/// indexed by the sort index's `phone` entries), tags and lists (`tags`, `lists`) and
/// contact records of version 4, which carry them. Version 7 writes API key records of
/// version 3 (access, expiry, rate limit), which older builds cannot read; its upgrade
/// from 6 changes nothing stored. Version 8 adds the change feed (`changes`,
/// `change_seqs`) and webhooks (`webhooks`, `webhook_outbox`, `webhook_queues`,
/// `webhook_deliveries`), which older builds would not write to; its upgrade from 7
/// creates the tables.
pub const SCHEMA_VERSION: u64 = 8;
/// The oldest layout this build can upgrade.
pub const OLDEST_SCHEMA_VERSION: u64 = 1;
