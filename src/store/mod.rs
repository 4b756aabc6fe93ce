//! Storage behind one trait. Reads are blocking calls on MVCC snapshots (run them on the
//! blocking pool); writes go to a single writer thread and resolve once their
//! transaction is durably committed.

pub mod backup;
mod blocks;
mod changes;
mod check;
mod codec;
mod compact;
mod contacts;
mod damage;
pub mod data_dir;
mod deferred;
mod file;
mod index;
mod keyfilter;
mod labels;
mod redb_store;
mod redo;
mod salvage;
mod scan;
mod seal;
mod tables;
mod upgrade;
mod wal;
mod webhooks;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::domain::attribute::AttributeChange;
use crate::domain::precondition::IfMatch;
use crate::domain::query::Query;
use crate::domain::webhook::{Delivery, Webhook};
use crate::domain::{
    Agent, ApiKey, AttrType, AttributeDef, Contact, ContactInput, Issue, Issues, Label, LabelKind,
    WriteRules,
};

pub use changes::ChangePage;
pub use check::{run_offline as check_offline, CheckReport, Space, TableSpace};
pub use codec::{decode_contact, decode_legacy_contact, encode_contact};
pub use compact::{run as compact, Compacted};
pub use contacts::{Relabel, Targets};
pub use damage::{DamageReport, MARKER as DAMAGE_MARKER};
pub use file::DEFAULT_CACHE;
pub use index::{IndexLimits, QueryLimits, QueryPage, Start};
pub use redb_store::{RedbStore, StoreOptions, DB_FILE};
pub use salvage::{run as salvage, SalvageReport};
pub use webhooks::{OutboxEvent, KEPT_DELIVERIES};

/// A write that resolves after its transaction committed (or failed).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// How `Store::update_webhook` changes an endpoint.
pub type WebhookChange = Box<dyn FnOnce(Webhook) -> Result<Webhook, StoreError> + Send>;

/// Most change feed entries one prune removes (see [`Store::prune_changes`]).
pub const PRUNE_BATCH: usize = 50_000;

/// What a create/upsert does with an `external_id` that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    #[default]
    Update,
    Skip,
    Error,
}

/// The result of one `POST /contacts`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertOutcome {
    /// One contact per entry, in request order.
    pub contacts: Vec<Contact>,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
}

/// One contact of a write keyed by phone number (Pabbly's `POST /contacts`).
#[derive(Debug, Clone)]
pub struct PhoneWrite {
    /// The number in E.164; the contact it names is the agent's oldest with it.
    pub phone: String,
    /// The fields sent (no external id: a new contact gets a generated one).
    pub input: ContactInput,
    /// Whether a contact that exists is updated; otherwise the entry fails.
    pub overwrite: bool,
}

/// What became of one [`PhoneWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum PhoneOutcome {
    Created(Contact),
    Updated(Contact),
    /// A contact has the number and the entry did not ask to overwrite it.
    Exists,
    /// The entry's values do not fit (wrong type, unknown tag under `reject`, an email
    /// another contact holds); nothing of it was written.
    Failed(Issues),
}

/// One row of an import: where it is in the file, and the contact it asks for.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub row: u64,
    pub input: ContactInput,
}

/// How an import's rows are applied.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Attribute types the file declares (typed CSV columns, dates found in JSON):
    /// under the `define` policy an undefined one is defined with that type, by the
    /// first row that is written with a value for it.
    pub declared: Vec<(String, AttrType)>,
    pub on_duplicate: OnDuplicate,
    pub rules: WriteRules,
    /// A row's attributes update only those attributes (CSV, where an empty cell means
    /// "not set"), instead of replacing the contact's set (JSON, as `POST /contacts`).
    pub merge_attributes: bool,
}

/// One problem with one import row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    pub row: u64,
    pub external_id: Option<String>,
    pub field: String,
    pub message: String,
}

/// What one chunk of an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Every problem of every row left out (a row may have several).
    pub failures: Vec<RowFailure>,
}

/// A page of contacts in creation order, with the agent's total.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    pub total: u64,
}

/// A patch to one contact.
#[derive(Debug, Clone)]
pub struct PatchRequest {
    pub agent: String,
    pub target: String,
    pub input: ContactInput,
    pub rules: WriteRules,
    /// The request's `If-Match`: checked against the contact as stored, in the write.
    pub if_match: Option<IfMatch>,
}

/// A problem a write found with what it was given: `entry` is the contact's position
/// in the batch (0 when the write had one), `issue.field` the path inside it
/// (`email`, `custom_attributes.plan`). Where that sits in a request body is the
/// API's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryIssue {
    pub entry: usize,
    pub issue: Issue,
}

impl EntryIssue {
    /// `issues`, all about entry `entry`.
    pub fn at(entry: usize, issues: Issues) -> impl Iterator<Item = Self> {
        issues
            .into_vec()
            .into_iter()
            .map(move |issue| Self { entry, issue })
    }
}

/// Everything the rest of the server needs from storage.
pub trait Store: Send + Sync + 'static {
    fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError>;
    fn agents(&self) -> Result<Vec<Agent>, StoreError>;
    fn key_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiKey>, StoreError>;
    fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// A contact by external id, or by `contact_<n>` when no external id matches.
    fn contact(&self, agent: &str, target: &str) -> Result<Option<Contact>, StoreError>;
    /// Contacts in creation order, skipping `offset`.
    fn list_contacts(
        &self,
        agent: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ContactPage, StoreError>;
    /// A page of `query` (search, filters, sort) from `start`.
    fn query_contacts(
        &self,
        agent: &str,
        query: &Query,
        start: &Start,
        limit: usize,
    ) -> Result<QueryPage, StoreError>;
    /// The damage seen in the store, if any: writes are refused then.
    fn damage(&self) -> Option<DamageReport>;
    /// Every custom attribute definition of an agent, by name.
    fn attributes(&self, agent: &str) -> Result<Vec<AttributeDef>, StoreError>;
    fn attribute(&self, agent: &str, name: &str) -> Result<Option<AttributeDef>, StoreError>;

    /// On an empty database only: creates `agent` and `admin_key`. Returns whether it did.
    fn initialize(&self, agent: Agent, admin_key: ApiKey) -> StoreFuture<bool>;
    fn create_agent(&self, agent: Agent) -> StoreFuture<Agent>;
    /// Removes the agent with all its contacts and agent-scoped keys.
    fn delete_agent(&self, id: String) -> StoreFuture<Agent>;
    fn create_key(&self, key: ApiKey) -> StoreFuture<ApiKey>;
    fn revoke_key(&self, id: String) -> StoreFuture<ApiKey>;
    /// Upserts in order, typing custom attributes against the agent's schema and
    /// defining keys without a definition by `rules`; all or nothing. `now` (Unix
    /// seconds) stamps what changes.
    fn upsert_contacts(
        &self,
        agent: String,
        entries: Vec<ContactInput>,
        on_duplicate: OnDuplicate,
        rules: WriteRules,
        now: i64,
    ) -> StoreFuture<UpsertOutcome>;
    /// Entries keyed by phone number, in order, in one transaction: each is created,
    /// updated or left alone on its own (see [`PhoneOutcome`]).
    fn save_by_phone(
        &self,
        agent: String,
        entries: Vec<PhoneWrite>,
        rules: WriteRules,
        now: i64,
    ) -> StoreFuture<Vec<PhoneOutcome>>;
    /// One chunk of an import, in one transaction: rows that fail are left out (and
    /// change nothing) and are reported, the others written.
    fn import_contacts(
        &self,
        agent: String,
        rows: Vec<ImportRow>,
        options: ImportOptions,
        now: i64,
    ) -> StoreFuture<ImportOutcome>;
    /// Writes every record of one read snapshot to `out` as a backup file (see
    /// [`backup`]): it holds every write acknowledged before it began.
    fn backup(&self, out: &mut dyn std::io::Write) -> Result<backup::BackupSummary, StoreError>;
    /// Every contact `query` selects, in its order (without a query: all of them, in
    /// creation order, the cheapest walk), from one read snapshot: handed to `sink`
    /// `chunk` at a time until it returns false.
    fn export_contacts(
        &self,
        agent: &str,
        query: Option<&Query>,
        chunk: usize,
        sink: &mut dyn FnMut(Vec<Contact>) -> bool,
    ) -> Result<(), StoreError>;
    fn patch_contact(&self, patch: PatchRequest, now: i64) -> StoreFuture<Contact>;
    /// Deletes a contact, if it still matches `if_match` (`PreconditionFailed` if not);
    /// `now` stamps its change feed entry.
    fn delete_contact(
        &self,
        agent: String,
        target: String,
        if_match: Option<IfMatch>,
        now: i64,
    ) -> StoreFuture<Contact>;
    /// Up to `limit` entries of an agent's change feed numbered above `after`.
    fn changes(&self, agent: &str, after: u64, limit: usize) -> Result<ChangePage, StoreError>;
    /// Changes (to a new value) each time writes that appended to a change feed are
    /// durable: what readers waiting for the next change watch.
    fn change_signal(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Removes change feed entries committed before `before` (Unix seconds), at most
    /// [`PRUNE_BATCH`] in one transaction; resolves to how many it removed.
    fn prune_changes(&self, before: i64) -> StoreFuture<u64>;
    /// Every webhook endpoint, by id.
    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError>;
    fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError>;
    /// Adds an endpoint (`AgentNotFound` when it is scoped to a missing agent).
    fn create_webhook(&self, hook: Webhook) -> StoreFuture<Webhook>;
    /// Changes an endpoint by `change`, inside the write; one made inactive drops the
    /// events queued for it.
    fn update_webhook(&self, id: String, change: WebhookChange) -> StoreFuture<Webhook>;
    /// Removes an endpoint with its queue and deliveries.
    fn delete_webhook(&self, id: String) -> StoreFuture<Webhook>;
    /// Up to `limit` events queued for an endpoint after queue number `after`, oldest
    /// first.
    fn queued_events(
        &self,
        webhook: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEvent)>, StoreError>;
    /// How many events are queued for an endpoint.
    fn queue_len(&self, webhook: &str) -> Result<u64, StoreError>;
    /// An endpoint's last deliveries, newest first.
    fn deliveries(&self, webhook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// Writes delivery `id` of an existing endpoint (the caller numbers them from 1); a
    /// succeeded one takes its events out of the queue.
    fn save_delivery(&self, webhook: String, delivery: Delivery) -> StoreFuture<Delivery>;
    /// Defines an attribute, unless the agent has `max_per_agent` definitions already.
    fn create_attribute(
        &self,
        agent: String,
        def: AttributeDef,
        max_per_agent: usize,
    ) -> StoreFuture<AttributeDef>;
    fn update_attribute(
        &self,
        agent: String,
        name: String,
        change: AttributeChange,
    ) -> StoreFuture<AttributeDef>;
    /// The agent's tags or lists, each with how many contacts carry it, by name.
    fn labels(&self, agent: &str, kind: LabelKind) -> Result<Vec<Label>, StoreError>;
    /// Defines a tag or list (`LabelExists` when one of that name in any case is).
    fn create_label(&self, agent: String, kind: LabelKind, name: String) -> StoreFuture<Label>;
    /// Changes which of `targets` (at most a batch) carry a tag or list, in one
    /// transaction; resolves to how many contacts changed.
    fn relabel(
        &self,
        agent: String,
        kind: LabelKind,
        targets: Targets,
        change: Relabel,
        now: i64,
    ) -> StoreFuture<u64>;
    /// Removes the definition `name`, or with `rename_to` renames it; contacts are
    /// changed beforehand through `relabel`.
    fn drop_label(
        &self,
        agent: String,
        kind: LabelKind,
        name: String,
        rename_to: Option<String>,
    ) -> StoreFuture<Label>;
}

/// Storage failures and the request-level conditions only storage can detect.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    AgentNotFound,
    AgentExists,
    ContactNotFound,
    KeyNotFound,
    /// Revoking this key would leave no active admin key.
    LastAdminKey,
    AttributeNotFound,
    AttributeExists,
    WebhookNotFound,
    LabelNotFound(LabelKind),
    LabelExists(LabelKind),
    /// Values that do not fit the stored schema (wrong type, archived, unknown key);
    /// checked inside the write because the schema may change with it.
    Invalid(Vec<EntryIssue>),
    /// An external id or email is taken; each issue names the contact holding it.
    Conflict(Vec<EntryIssue>),
    /// Another process (usually a running server) holds the data dir's database file:
    /// the data dir, and the process id the holder recorded (see `data_dir::holder`).
    AlreadyOpen(PathBuf, Option<u32>),
    /// The data dir cannot be used safely (its permissions); the text says how to fix it.
    DataDir(String),
    /// The data was written by an incompatible version.
    Incompatible(String),
    /// A backup file that cannot be restored: the file and why.
    InvalidBackup(String),
    /// The contact no longer matches the write's `If-Match`.
    PreconditionFailed,
    /// Damage to the file met by an operation: a record that fails its checksum or
    /// names another key, redb reporting corruption, or a panic reading a page.
    Corrupt(String),
    /// Damage was seen in this data dir: writes are refused (see `damage`).
    Damaged(String),
    /// The database itself failed (I/O, redb).
    Backend(String),
    /// The writer has shut down.
    Closed,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AgentNotFound => write!(f, "agent not found"),
            Self::AgentExists => write!(f, "agent already exists"),
            Self::ContactNotFound => write!(f, "contact not found"),
            Self::KeyNotFound => write!(f, "key not found"),
            Self::LastAdminKey => write!(
                f,
                "this is the last active admin key; create another admin key before revoking it"
            ),
            Self::AttributeNotFound => write!(f, "custom attribute not found"),
            Self::AttributeExists => write!(f, "custom attribute already exists"),
            Self::WebhookNotFound => write!(f, "webhook not found"),
            Self::LabelNotFound(kind) => write!(f, "{} not found", kind.noun()),
            Self::LabelExists(kind) => write!(f, "{} already exists", kind.noun()),
            Self::Invalid(issues) => write!(f, "invalid: {} issue(s)", issues.len()),
            Self::Conflict(issues) => write!(f, "conflict: {} issue(s)", issues.len()),
            Self::AlreadyOpen(dir, holder) => write!(
                f,
                "the data dir {} is in use by {} (is the server running?)",
                dir.display(),
                holder.map_or_else(
                    || "another process".to_owned(),
                    |pid| format!("process {pid}")
                )
            ),
            Self::DataDir(msg) => write!(f, "{msg}"),
            Self::InvalidBackup(msg) => write!(f, "the backup {msg}"),
            Self::PreconditionFailed => write!(f, "the contact does not match If-Match"),
            Self::Incompatible(msg) => write!(f, "incompatible data: {msg}"),
            Self::Corrupt(msg) => write!(f, "damaged data: {msg}"),
            Self::Damaged(msg) => write!(f, "the database is damaged and refuses writes: {msg}"),
            Self::Backend(msg) => write!(f, "storage error: {msg}"),
            Self::Closed => write!(f, "the store is shut down"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<redb::Error> for StoreError {
    /// redb's `Corrupted` is damage to the file; anything else is the backend failing.
    fn from(err: redb::Error) -> Self {
        match err {
            redb::Error::Corrupted(msg) => Self::Corrupt(format!("the database file: {msg}")),
            other => Self::Backend(other.to_string()),
        }
    }
}

macro_rules! through_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                redb::Error::from(err).into()
            }
        }
    )*};
}
through_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        Self::Backend(err.to_string())
    }
}

/// Contacts for the store's unit tests.
#[cfg(test)]
pub(crate) mod samples {
    use crate::domain::Contact;

    /// Contact `id` named `name`, with nothing else set.
    pub fn named(id: u64, name: &str) -> Contact {
        Contact {
            id,
            external_id: format!("ext-{id}"),
            name: Some(name.into()),
            email: None,
            phonenumber: None,
            phone: None,
            stripe_accounts: vec![],
            custom_attributes: Default::default(),
            tags: vec![],
            lists: vec![],
            optin: None,
            incoming_blocked: None,
            source: Default::default(),
            created_at: 5,
            updated_at: 6,
        }
    }
}
