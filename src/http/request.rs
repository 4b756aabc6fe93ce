//! What a handler sees of its request — route, method, query pairs, headers and body —
//! without naming hyper's types.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::HeaderMap;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::Route;
use crate::api::Standing;

/// The methods handlers answer. `HEAD` arrives as [`Verb::Get`]: hyper leaves the body
/// out of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A routed request.
pub struct Request {
    pub route: Route,
    pub verb: Verb,
    /// The path and query string as sent.
    pub target: String,
    pub query: Vec<(String, String)>,
    pub headers: Headers,
    pub body: RequestBody,
    /// The client's address: the connection's, or the one a trusted proxy named.
    pub client: IpAddr,
    /// Where the handler notes what it learned of the caller, for the answer's headers
    /// and its log line.
    pub caller: Caller,
}

/// What is known of who made a request once it is authenticated: its key's id, and
/// its key's request budget when one applies.
#[derive(Debug, Clone, Default)]
pub struct Caller(Arc<CallerInfo>);

#[derive(Debug, Default)]
struct CallerInfo {
    key_id: OnceLock<String>,
    budget: OnceLock<Standing>,
}

impl Caller {
    pub fn set_key(&self, key_id: &str) {
        let _ = self.0.key_id.set(key_id.to_owned());
    }

    pub fn key_id(&self) -> Option<&str> {
        self.0.key_id.get().map(String::as_str)
    }

    /// Notes where the key's bucket stands after this request.
    pub fn set_budget(&self, standing: Standing) {
        let _ = self.0.budget.set(standing);
    }

    pub fn budget(&self) -> Option<Standing> {
        self.0.budget.get().copied()
    }
}

/// The request's headers.
pub struct Headers(HeaderMap);

impl Headers {
    pub(super) fn new(map: HeaderMap) -> Self {
        Self(map)
    }

    /// The first value of header `name`, if it is visible ASCII.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, joined by commas (as one list, RFC 9110 §5.3);
    /// `None` if it was not sent. Bytes that are not UTF-8 are replaced, never dropped.
    pub fn joined(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .0
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    /// The first value of header `name` as bytes, whatever they are.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_bytes())
    }

    /// How many times header `name` was sent.
    pub fn count(&self, name: &str) -> usize {
        self.0.get_all(name).iter().count()
    }

    /// `Content-Length`, when sent and a number.
    pub fn content_length(&self) -> Option<u64> {
        self.get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
    }
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request's body, read chunk by chunk as it arrives (or, once read whole, from
/// memory), its bytes optionally hashed as they are read.
pub struct RequestBody {
    source: Source,
    tee: Option<Arc<parking_lot::Mutex<Sha256>>>,
}

enum Source {
    Stream(Incoming),
    Buffered(Option<Bytes>),
}

impl RequestBody {
    pub(super) fn new(body: Incoming) -> Self {
        Self {
            source: Source::Stream(body),
            tee: None,
        }
    }

    /// A body already read whole.
    pub fn buffered(bytes: Bytes) -> Self {
        Self {
            source: Source::Buffered(Some(bytes)),
            tee: None,
        }
    }

    /// Hashes every byte read from now on into the returned SHA-256.
    pub fn tee(&mut self) -> Arc<parking_lot::Mutex<Sha256>> {
        Arc::clone(
            self.tee
                .get_or_insert_with(|| Arc::new(parking_lot::Mutex::new(Sha256::new()))),
        )
    }

    /// The next chunk of data; `None` at the end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let data = match &mut self.source {
            Source::Buffered(bytes) => bytes.take()?,
            Source::Stream(body) => loop {
                match body.frame().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => break data,
                        // Trailers carry no data.
                        Err(_) => continue,
                    },
                    Err(err) => return Some(Err(BodyError(err.to_string()))),
                }
            },
        };
        if let Some(tee) = &self.tee {
            tee.lock().update(&data);
        }
        Some(Ok(data))
    }

    /// The whole body, if it has at most `limit` bytes (`Ok(None)` if more).
    pub async fn read_all(mut self, limit: usize) -> Result<Option<Bytes>, BodyError> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out.freeze()))
    }

    /// Reads and drops what a client still sends after its request was refused, for at
    /// most `DISCARD_TIME` (10 s) and `limit` bytes, so that the answer reaches it: a
    /// client busy sending sees an abruptly closed connection, not the answer (nginx's
    /// lingering close).
    pub async fn discard(mut self, limit: u64) {
        let mut left = limit;
        let drain = async {
            while let Some(Ok(data)) = self.chunk().await {
                match left.checked_sub(data.len() as u64) {
                    Some(rest) => left = rest,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    }
}

/// How long a refused upload is read past.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);
