//! The test harness: a server on port 0, an HTTP client, and JSON helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use contactd::config::{resolve, Config, Layers};

pub const ADMIN_KEY: &str = "oc_live_TestAdminKey0123456789abcdefghij";

/// A running server; shut down (gracefully) when dropped or by `stop`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: Arc<TempDir>,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A response: status, headers and parsed JSON (`Value::Null` for a non-JSON body).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `message` field.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// The `field` of every issue, in order.
    pub fn issue_fields(&self) -> Vec<String> {
        self.body["issues"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["field"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn base_config(dir: &TempDir) -> Config {
    let mut config = resolve(&Layers::default()).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().to_owned();
    config.admin_key = Some(ADMIN_KEY.to_owned());
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a fresh data dir and the config adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = base_config(&dir);
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts on an existing data dir (restart tests).
    pub async fn start_in(dir: Arc<TempDir>, config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            contactd::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let server = Self {
            addr,
            dir,
            client,
            shutdown: Some(tx),
            task: Some(task),
        };
        // The listener is bound already; wait until the store is open and serving.
        server.wait_ready().await;
        server
    }

    /// The listener is bound before `serve` runs, so this request simply waits in the
    /// backlog until the store is open and the accept loop runs.
    async fn wait_ready(&self) {
        let r = self.raw(Method::GET, "/healthz", None, None, None).await;
        assert_eq!(r.status, StatusCode::OK);
    }

    /// Shuts down gracefully and waits until the database is closed.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        Arc::clone(&self.dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Any request, with full control of key, content type and raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        if let Some(key) = key {
            // A key that already names its scheme is sent as the whole header value.
            let value = if key.contains(' ') {
                key.to_owned()
            } else {
                format!("Bearer {key}")
            };
            req = req.header("authorization", value);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with `key` and the given headers, no body.
    pub async fn with_headers(
        &self,
        method: Method,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.with_headers_and_body(method, path, key, headers, Vec::new())
            .await
    }

    /// A request with `key`, the given headers and `body`.
    pub async fn with_headers_and_body(
        &self,
        method: Method,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let (status, headers, bytes) = self.send_bytes_as(key, method, path, headers, body).await;
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// A request with the admin key and the given headers; the answer's raw body.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.send_bytes_as(ADMIN_KEY, method, path, headers, body)
            .await
    }

    /// A request with `key` and the given headers; the answer's raw body.
    async fn send_bytes_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {key}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    /// POSTs a file to `path` (an import endpoint) with this content type; the reply.
    pub async fn import(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.raw(
            Method::POST,
            path,
            Some(ADMIN_KEY),
            Some(content_type),
            Some(body.into()),
        )
        .await
    }

    /// POSTs raw bytes as `application/json` to agent `default`'s contacts.
    pub async fn post_contacts_bytes(&self, body: Vec<u8>) -> Reply {
        self.raw(
            Method::POST,
            CONTACTS,
            Some(ADMIN_KEY),
            Some("application/json"),
            Some(body),
        )
        .await
    }

    /// A request with the admin key and, when given, a JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_as(ADMIN_KEY, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let ct = bytes.as_ref().map(|_| "application/json");
        self.raw(method, path, Some(key), ct, bytes).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Upserts `users` into agent `default`, expecting success; returns the contacts.
    pub async fn upsert(&self, users: Value) -> Vec<Value> {
        let r = self.post(CONTACTS, json!({ "users": users })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["data"].as_array().unwrap().clone()
    }

    /// Creates an agent and an agent-scoped key for it; returns the key.
    pub async fn agent_with_key(&self, id: &str) -> String {
        let r = self
            .post("/api/v1/chatbots", json!({"id": id, "name": id}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = self
            .post(
                "/api/v1/keys",
                json!({"name": format!("{id} key"), "chatbot_id": id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["data"]["key"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The contacts collection of the default agent.
pub const CONTACTS: &str = "/api/v1/chatbots/default/contacts";

/// The path of one contact of the default agent (already encoded).
pub fn contact_path(id: &str) -> String {
    format!("{CONTACTS}/{id}")
}

/// Waits until the Unix second changes, so a changed `updated_at` is observable.
pub async fn wait_for_next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = now();
    while now() == start {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The external ids of a list response's `data`, in order.
pub fn ext_ids(r: &Reply) -> Vec<String> {
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_id"].as_str().unwrap().to_owned())
        .collect()
}
