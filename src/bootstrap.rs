//! First run: on an empty data dir, create the agent `default` and an admin key. The key
//! is `CONTACTD_ADMIN_KEY` when set, otherwise generated and shown once in a banner.
//! Later starts find the database initialized and print nothing.

use crate::auth;
use crate::clock::unix_now;
use crate::domain::{Agent, KeyGrant, Scope};
use crate::store::{Store, StoreError};

/// Id of the agent created on first run.
pub const DEFAULT_AGENT: &str = "default";

/// What the first run did, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstRun {
    /// The database was already initialized.
    AlreadyDone,
    /// Initialized with the operator's chosen key.
    ChosenKey,
    /// Initialized with this generated key, which must be shown once.
    GeneratedKey(String),
}

/// Initializes an empty database; does nothing on an initialized one.
pub async fn first_run(
    store: &dyn Store,
    chosen_key: Option<&str>,
) -> Result<FirstRun, StoreError> {
    let (plaintext, generated) = match chosen_key {
        Some(key) => (key.to_owned(), false),
        None => (auth::generate_key(), true),
    };
    let now = unix_now();
    let agent = Agent {
        id: DEFAULT_AGENT.to_owned(),
        name: "Default".to_owned(),
        created_at: now,
        contact_count: 0,
    };
    let key = auth::new_key_record(
        &plaintext,
        KeyGrant::unrestricted("admin (first run)", Scope::Admin),
        now,
    );
    Ok(match store.initialize(agent, key).await? {
        false => FirstRun::AlreadyDone,
        true if generated => FirstRun::GeneratedKey(plaintext),
        true => FirstRun::ChosenKey,
    })
}

/// The banner that shows a generated admin key once.
pub fn banner(key: &str) -> String {
    let rule = "=".repeat(72);
    format!(
        "{rule}\n  contactd first run: created agent '{DEFAULT_AGENT}' and an admin API key:\n\n      {key}\n\n  It is shown only this once. Store it now; create more keys with\n  POST /api/v1/keys or `contactd keys create`.\n{rule}"
    )
}
