//! The API: one file per resource. Handlers take typed input, call the store, and
//! return JSON or an [`ApiError`]; `App::handle` routes, authenticates and turns errors
//! into responses in one place.

mod agents;
mod cache;
mod contacts;
mod custom_attributes;
mod dashboard;
mod export;
mod health;
mod import;
mod keys;

pub use import::remove_stale_spools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, X_CONTENT_TYPE_OPTIONS};
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use self::cache::Cache;
use crate::auth;
use crate::config::Config;
use crate::domain::ApiKey;
use crate::domain::AttributeRules;
use crate::http::body::{query_pairs, read_json};
use crate::http::error::json_response;
use crate::http::{router, ApiError, Response, Route};
use crate::store::{Store, StoreError};

/// Shared state of every request.
pub struct App {
    store: Arc<dyn Store>,
    max_body_bytes: u64,
    attribute_rules: AttributeRules,
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
}

/// Store reads per core that may run at once (see `App::reads`).
const READS_PER_CORE: usize = 4;

/// What a handler needs to know about its request.
pub struct Ctx {
    pub key: ApiKey,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Option<Incoming>,
}

impl App {
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Self {
        Self {
            store,
            max_body_bytes: config.max_body_bytes,
            attribute_rules: AttributeRules {
                unknown: config.unknown_attributes,
                max_per_agent: config.max_attributes_per_agent,
            },
            spool_dir: config.data_dir.clone(),
            import_max_bytes: config.import_max_bytes,
            import_timeout: config.import_timeout,
            keys: Cache::new(),
            agents: Cache::new(),
            reads: Arc::new(Semaphore::new(
                READS_PER_CORE * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// Handles one request within `timeout` (imports: within `import.timeout_secs`); a
    /// panic or a timeout becomes a JSON error.
    pub async fn serve(self: Arc<Self>, req: Request<Incoming>, timeout: Duration) -> Response {
        let timeout = match router::route(req.uri().path()) {
            Some(Route::Import(_)) => self.import_timeout,
            _ => timeout,
        };
        let task = tokio::spawn(async move { self.handle(req).await });
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => ApiError::Internal(format!("handler failed: {err}")).into_response(),
            Err(_) => {
                abort.abort();
                ApiError::Timeout.into_response()
            }
        }
    }

    /// Every answer says `X-Content-Type-Options: nosniff`: a JSON body is never to be
    /// read as anything else.
    async fn handle(&self, req: Request<Incoming>) -> Response {
        let mut response = self
            .dispatch(req)
            .await
            .unwrap_or_else(ApiError::into_response);
        response
            .headers_mut()
            .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let route = router::route(parts.uri.path()).ok_or(ApiError::NotFound)?;
        let allowed = route.allowed();
        if !allowed.contains(&parts.method) {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::MethodNotAllowed(allow));
        }
        // HEAD is GET without the body: hyper leaves the body out of the answer.
        let method = if parts.method == Method::HEAD {
            Method::GET
        } else {
            parts.method
        };
        match &route {
            Route::Health => return Ok(health::get(self)),
            Route::Dashboard => return Ok(dashboard::index(&parts.headers)),
            Route::Asset(name) => return dashboard::asset(&parts.headers, name, parts.uri.query()),
            _ => {}
        }
        let key = self.authenticate(&parts.headers).await?;
        let ctx = Ctx {
            key,
            query: query_pairs(parts.uri.query()),
            headers: parts.headers,
            body: Some(body),
        };
        match (route, method) {
            (Route::Agents, Method::GET) => agents::list(self, &ctx).await,
            (Route::Agents, Method::POST) => agents::create(self, ctx).await,
            (Route::Agent(id), Method::GET) => agents::get(self, &ctx, id).await,
            (Route::Agent(id), Method::DELETE) => agents::delete(self, &ctx, id).await,
            (Route::Keys, Method::GET) => keys::list(self, &ctx).await,
            (Route::Keys, Method::POST) => keys::create(self, ctx).await,
            (Route::Key(id), Method::DELETE) => keys::revoke(self, &ctx, id).await,
            (Route::Contacts(agent), Method::GET) => contacts::list(self, &ctx, agent).await,
            (Route::Contacts(agent), Method::POST) => contacts::upsert(self, ctx, agent).await,
            (Route::Import(agent), Method::POST) => import::import(self, ctx, agent).await,
            (Route::Export(agent), Method::GET) => export::export(self, &ctx, agent).await,
            (Route::Contact(agent, id), Method::GET) => contacts::get(self, &ctx, agent, id).await,
            (Route::Contact(agent, id), Method::PATCH) => {
                contacts::patch(self, ctx, agent, id).await
            }
            (Route::Contact(agent, id), Method::DELETE) => {
                contacts::delete(self, &ctx, agent, id).await
            }
            (Route::Attributes(agent), Method::GET) => {
                custom_attributes::list(self, &ctx, agent).await
            }
            (Route::Attributes(agent), Method::POST) => {
                custom_attributes::create(self, ctx, agent).await
            }
            (Route::Attribute(agent, name), Method::GET) => {
                custom_attributes::get(self, &ctx, agent, name).await
            }
            (Route::Attribute(agent, name), Method::PUT) => {
                custom_attributes::update(self, ctx, agent, name).await
            }
            // `allowed()` lists exactly the pairs above.
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

    async fn authenticate(&self, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
        // Which of two keys would count is ambiguous (proxies disagree): refuse both.
        if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
            return Err(ApiError::BadRequest(
                "Send one Authorization header, not several.",
            ));
        }
        let token = auth::bearer_token(headers.get(AUTHORIZATION).map(|v| v.as_bytes()))?;
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
        Ok(auth::verify(token, stored)?)
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
fn success(data: Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "message": "Success", "data": data }),
    )
}
