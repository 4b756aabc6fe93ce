//! The API: one file per resource. Handlers take typed input, call the store, and
//! return JSON or an [`ApiError`]; `App::dispatch` authenticates and routes; `http/` turns
//! replies and errors into responses in one place.

mod agents;
mod backup;
mod cache;
mod changes;
mod contacts;
mod custom_attributes;
mod dashboard;
mod export;
mod health;
mod idempotency;
mod import;
mod keys;
mod labels;
mod openapi;
mod pabbly;
mod rate_limit;
mod webhooks;

pub use changes::MAX_WAIT as MAX_CHANGES_WAIT;
pub use import::remove_stale_spools;
pub use rate_limit::Standing;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use self::cache::Cache;
use self::rate_limit::Buckets;
use crate::auth;
use crate::clock::unix_now;
use crate::config::Config;
use crate::domain::phone::PhoneRules;
use crate::domain::{Access, ApiKey, RateLimit, WriteRules};
use crate::http::body::read_json;
use crate::http::{ApiError, Caller, Headers, Reply, Request, RequestBody, Route, Verb};
use crate::store::{Store, StoreError};

/// Shared state of every request.
pub struct App {
    store: Arc<dyn Store>,
    max_body_bytes: u64,
    write_rules: WriteRules,
    /// The agent of Pabbly requests made with an admin key (`pabbly.agent`).
    pabbly_agent: String,
    /// Where import uploads are spooled (the data dir).
    spool_dir: PathBuf,
    import_max_bytes: u64,
    import_timeout: Duration,
    /// Keys and agent ids already looked up, so most requests need one store read, not
    /// three. Only this process writes keys and agents while it runs (the file is
    /// locked), so clearing the caches after a revoke or an agent delete keeps them
    /// exact; see `forget_keys_and_agents`.
    keys: Cache<[u8; 32], ApiKey>,
    agents: Cache<String, ()>,
    /// Store reads running at once on the blocking pool. A read is CPU work on cached
    /// pages or a short wait for one page, so a few per core keep the cores busy; more
    /// only add threads, each with its own allocator cache holding memory.
    reads: Arc<Semaphore>,
    budgets: Budgets,
    /// One online backup at a time: each holds a read snapshot (pinning the pages it
    /// sees) and a blocking thread until its client has read it all.
    backup_slot: Arc<Semaphore>,
    /// First answers of requests sent with an `Idempotency-Key`.
    idempotency: idempotency::Answers,
    /// Whether webhook endpoints may be private addresses (`webhooks.allow_private`).
    webhook_allow_private: bool,
    /// Sends a delivery again when asked to.
    webhook_sender: Arc<crate::webhooks::send::Sender>,
}

/// The request budgets of keys and of client IPs' failed authentications.
struct Budgets {
    /// Every key's budget unless it has its own (`rate_limit.*`).
    default: Option<RateLimit>,
    keys: Buckets<String>,
    /// Failed authentications per minute per IP (`rate_limit.auth_failures_per_min`).
    failures: Option<RateLimit>,
    clients: Buckets<IpAddr>,
}

/// Store reads per core that may run at once (see `App::reads`).
const READS_PER_CORE: usize = 4;

/// What a handler needs to know about its request.
pub struct Ctx {
    pub key: ApiKey,
    pub query: Vec<(String, String)>,
    pub headers: Headers,
    pub body: Option<RequestBody>,
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        config: &Config,
        webhook_sender: Arc<crate::webhooks::send::Sender>,
    ) -> Self {
        Self {
            store,
            max_body_bytes: config.max_body_bytes,
            write_rules: WriteRules {
                unknown: config.unknown_attributes,
                max_per_agent: config.max_attributes_per_agent,
                unknown_tags: config.unknown_tags,
                phone: PhoneRules {
                    default_region: config.phone_region,
                },
            },
            pabbly_agent: config.pabbly_agent.clone(),
            spool_dir: config.data_dir.clone(),
            import_max_bytes: config.import_max_bytes,
            import_timeout: config.import_timeout,
            keys: Cache::new(),
            agents: Cache::new(),
            reads: Arc::new(Semaphore::new(
                READS_PER_CORE * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            budgets: Budgets {
                default: config.rate_limit,
                keys: Buckets::new(),
                failures: config.auth_failures_per_min.map(|n| RateLimit {
                    requests: n,
                    per_secs: 60,
                }),
                clients: Buckets::new(),
            },
            backup_slot: Arc::new(Semaphore::new(1)),
            idempotency: idempotency::Answers::default(),
            webhook_allow_private: config.webhook_allow_private,
            webhook_sender,
        }
    }

    /// How long an import may take (`import.timeout_secs`); other requests get the
    /// server's request timeout.
    pub fn import_timeout(&self) -> Duration {
        self.import_timeout
    }

    /// Runs the handler of a routed request; health, the dashboard and the OpenAPI
    /// document need no key, everything else does. A keyed request passes, in order:
    /// the client IP's failed-authentication budget, authentication, the key's request
    /// budget, and — for a read-only key — being a read.
    pub async fn dispatch(&self, req: Request) -> Result<Reply, ApiError> {
        let Request {
            route,
            verb,
            target,
            query,
            headers,
            body,
            client,
            caller,
        } = req;
        match &route {
            Route::Health => return Ok(health::get(self)),
            Route::Dashboard => return Ok(dashboard::index(&headers)),
            Route::Asset(name) => return dashboard::asset(&headers, name, &query),
            Route::OpenApi => return Ok(openapi::document()),
            _ => {}
        }
        let pabbly = route.is_pabbly();
        let key = match self.admit(&headers, client, verb, &caller).await {
            Ok(key) => key,
            Err(err) if pabbly => return Err(err.in_pabbly_form()),
            Err(err) => return Err(err),
        };
        let ctx = Ctx {
            key,
            query,
            headers,
            body: Some(body),
        };
        let idem = match verb {
            Verb::Get => Ok(None),
            _ => idempotency::key_of(&ctx.headers),
        };
        let answer = match idem {
            Ok(None) => return self.handle(route, verb, ctx).await,
            Ok(Some(idem)) => self.idempotent(idem, route, verb, &target, ctx).await,
            Err(err) => Err(err),
        };
        if pabbly {
            answer.map_err(ApiError::in_pabbly_form)
        } else {
            answer
        }
    }

    /// Runs the handler of `route` for `verb` (errors of the Pabbly dialect in its form).
    async fn handle(&self, route: Route, verb: Verb, ctx: Ctx) -> Result<Reply, ApiError> {
        if route.is_pabbly() {
            let answer = match (route, verb) {
                (Route::PabblyContacts, Verb::Get) => pabbly::list(self, &ctx).await,
                (Route::PabblyContacts, Verb::Post) => pabbly::create(self, ctx).await,
                (Route::PabblyLists, Verb::Get) => pabbly::lists(self, &ctx).await,
                (Route::PabblyContact(id), Verb::Get) => pabbly::get(self, &ctx, id).await,
                (Route::PabblyContact(id), Verb::Put) => pabbly::update(self, ctx, id).await,
                _ => Err(ApiError::NotFound),
            };
            return answer.map_err(ApiError::in_pabbly_form);
        }
        match (route, verb) {
            (Route::Agents, Verb::Get) => agents::list(self, &ctx).await,
            (Route::Agents, Verb::Post) => agents::create(self, ctx).await,
            (Route::Agent(id), Verb::Get) => agents::get(self, &ctx, id).await,
            (Route::Agent(id), Verb::Delete) => agents::delete(self, &ctx, id).await,
            (Route::Me, Verb::Get) => Ok(keys::me(&ctx)),
            (Route::Metrics, Verb::Get) => health::metrics(&ctx),
            (Route::Backup, Verb::Get) => backup::download(self, &ctx).await,
            (Route::Keys, Verb::Get) => keys::list(self, &ctx).await,
            (Route::Keys, Verb::Post) => keys::create(self, ctx).await,
            (Route::Key(id), Verb::Delete) => keys::revoke(self, &ctx, id).await,
            (Route::Contacts(agent), Verb::Get) => contacts::list(self, &ctx, agent).await,
            (Route::Contacts(agent), Verb::Post) => contacts::upsert(self, ctx, agent).await,
            (Route::Import(agent), Verb::Post) => import::import(self, ctx, agent).await,
            (Route::Export(agent), Verb::Get) => export::export(self, &ctx, agent).await,
            (Route::Contact(agent, id), Verb::Get) => contacts::get(self, &ctx, agent, id).await,
            (Route::Contact(agent, id), Verb::Patch) => contacts::patch(self, ctx, agent, id).await,
            (Route::Contact(agent, id), Verb::Delete) => {
                contacts::delete(self, &ctx, agent, id).await
            }
            (Route::Attributes(agent), Verb::Get) => {
                custom_attributes::list(self, &ctx, agent).await
            }
            (Route::Attributes(agent), Verb::Post) => {
                custom_attributes::create(self, ctx, agent).await
            }
            (Route::Attribute(agent, name), Verb::Get) => {
                custom_attributes::get(self, &ctx, agent, name).await
            }
            (Route::Attribute(agent, name), Verb::Put) => {
                custom_attributes::update(self, ctx, agent, name).await
            }
            (Route::Labels(agent, kind), Verb::Get) => labels::list(self, &ctx, agent, kind).await,
            (Route::Labels(agent, kind), Verb::Post) => {
                labels::create(self, ctx, agent, kind).await
            }
            (Route::Label(agent, kind, name), Verb::Put) => {
                labels::rename(self, ctx, agent, kind, name).await
            }
            (Route::Label(agent, kind, name), Verb::Delete) => {
                labels::delete(self, &ctx, agent, kind, name).await
            }
            (Route::ListMembers(agent, name), Verb::Post) => {
                labels::members(self, ctx, agent, name, true).await
            }
            (Route::ListMembers(agent, name), Verb::Delete) => {
                labels::members(self, ctx, agent, name, false).await
            }
            (Route::Changes(agent), Verb::Get) => changes::list(self, &ctx, agent).await,
            (Route::Webhooks, Verb::Get) => webhooks::list(self, &ctx).await,
            (Route::Webhooks, Verb::Post) => webhooks::create(self, ctx).await,
            (Route::Webhook(id), Verb::Get) => webhooks::get(self, &ctx, id).await,
            (Route::Webhook(id), Verb::Put) => webhooks::update(self, ctx, id).await,
            (Route::Webhook(id), Verb::Delete) => webhooks::delete(self, &ctx, id).await,
            (Route::WebhookSecret(id), Verb::Post) => webhooks::rotate_secret(self, &ctx, id).await,
            (Route::WebhookDeliveries(id), Verb::Get) => webhooks::deliveries(self, &ctx, id).await,
            (Route::WebhookRetry(id, delivery), Verb::Post) => {
                webhooks::retry(self, &ctx, id, delivery).await
            }
            // The router's `allowed()` lists exactly the pairs above.
            _ => Err(ApiError::NotFound),
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Runs a store read that may walk many entries (a list, a search, an export's
    /// schema) on the blocking pool, so that it never holds up a worker's other
    /// connections.
    async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(|err| ApiError::Internal(format!("read slots closed: {err}")))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(store.as_ref())
        })
        .await
        .map_err(|err| ApiError::Internal(format!("read task failed: {err}")))?
        .map_err(ApiError::from)
    }

    /// Runs a point read (a few B-tree lookups) on the calling worker: handing it to
    /// the blocking pool and back costs more than the lookups, whose pages are in
    /// memory or one read away.
    fn read_point<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        f(self.store.as_ref()).map_err(ApiError::from)
    }

    /// Lets a keyed request in, or says why not (see [`App::dispatch`]); notes the key
    /// and its budget on `caller`.
    async fn admit(
        &self,
        headers: &Headers,
        client: IpAddr,
        verb: Verb,
        caller: &Caller,
    ) -> Result<ApiKey, ApiError> {
        let now = Instant::now();
        let budgets = &self.budgets;
        let client = rate_limit::client_bucket(client);
        if budgets.failures.is_some() {
            if let Some(retry) = budgets.clients.exhausted(&client, now) {
                crate::metrics::rate_limited("auth_failures");
                return Err(ApiError::RateLimited(retry));
            }
        }
        let key = match self.authenticate(headers).await {
            Ok(key) => key,
            Err(err) => {
                if let (Some(budget), ApiError::NoApiKey | ApiError::InvalidApiKey) =
                    (budgets.failures, &err)
                {
                    budgets.clients.take(&client, budget, now);
                }
                return Err(err);
            }
        };
        caller.set_key(&key.id);
        if let Some(budget) = key.rate_limit.or(budgets.default) {
            let standing = budgets.keys.take(&key.id, budget, now);
            caller.set_budget(standing);
            if let Some(retry) = standing.retry_after_secs {
                crate::metrics::rate_limited("key");
                return Err(ApiError::RateLimited(retry));
            }
        }
        if key.access == Access::Read && verb != Verb::Get {
            return Err(ApiError::ReadOnlyKey);
        }
        Ok(key)
    }

    async fn authenticate(&self, headers: &Headers) -> Result<ApiKey, ApiError> {
        // Which of two keys would count is ambiguous (proxies disagree): refuse both.
        if headers.count("authorization") > 1 {
            return Err(ApiError::BadRequest(
                "Send one Authorization header, not several.",
            ));
        }
        let token = auth::bearer_token(headers.get_bytes("authorization"))?;
        let digest = auth::digest(token);
        let stored = match self.keys.get(&digest) {
            (Some(key), _) => Some(key),
            (None, epoch) => {
                let stored = self.read_point(|s| s.key_by_digest(&digest))?;
                if let Some(key) = &stored {
                    self.keys.insert(epoch, digest, key.clone());
                }
                stored
            }
        };
        Ok(auth::verify(token, stored, unix_now())?)
    }

    /// Drops every cached key and agent; called after a key is revoked or an agent is
    /// deleted (which deletes its keys).
    fn forget_keys_and_agents(&self) {
        self.keys.clear();
        self.agents.clear();
    }

    /// Succeeds if agent `id` exists and `key` may reach it; 404 otherwise (never saying
    /// which).
    async fn agent_in_scope(&self, key: &ApiKey, id: &str) -> Result<(), ApiError> {
        if !key.scope.includes(id) {
            return Err(ApiError::NotFound);
        }
        let (cached, epoch) = self.agents.get(id);
        if cached.is_some() {
            return Ok(());
        }
        if self.read_point(|s| s.agent(id))?.is_none() {
            return Err(ApiError::NotFound);
        }
        self.agents.insert(epoch, id.to_owned(), ());
        Ok(())
    }

    async fn body_json(&self, ctx: &mut Ctx) -> Result<Value, ApiError> {
        let body = ctx
            .body
            .take()
            .ok_or_else(|| ApiError::Internal("request body read twice".into()))?;
        read_json(&ctx.headers, body, self.max_body_bytes).await
    }
}

/// Only admin keys may go on.
fn require_admin(key: &ApiKey) -> Result<(), ApiError> {
    if key.scope.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// `200 {"message":"Success","data":…}`.
fn success(data: Value) -> Reply {
    Reply::json(&json!({ "message": "Success", "data": data }))
}

/// [`success`] with `data` already serialized: the same bytes, without building the
/// envelope as a `Value` (a deep copy of `data`) and serializing `data` again.
fn success_serialized(data: &[u8]) -> Reply {
    Reply::bytes(200, "application/json", success_body(data))
}

/// The body [`success`] writes, around `data` serialized.
fn success_body(data: &[u8]) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"message":"Success","data":"#;
    let mut body = Vec::with_capacity(HEAD.len() + data.len() + 1);
    body.extend_from_slice(HEAD);
    body.extend_from_slice(data);
    body.push(b'}');
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_serialized_envelope_is_the_one_success_writes() {
        let data = json!({"external_id": "a\"b", "custom_attributes": {"ltv": 1.5}, "tags": []});
        let expected = serde_json::to_vec(&json!({ "message": "Success", "data": data })).unwrap();
        assert_eq!(success_body(&serde_json::to_vec(&data).unwrap()), expected);
    }
}
