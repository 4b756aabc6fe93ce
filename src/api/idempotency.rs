//! `Idempotency-Key` on writes: a request sent again with the same key, under the same
//! API key, within [`TTL`], gets the first answer again (`Idempotent-Replayed: true`)
//! and does not run again; another request with that key is 422. A copy arriving while
//! the first runs waits for it.
//!
//! "The same request": method, path and query as sent, and the body — JSON-equal for
//! JSON bodies (key order and spacing do not matter), byte for byte for imports. 2xx
//! and 4xx answers are kept; a 5xx is not (the request may be sent again and run).
//! Answers are kept in memory, at most [`MAX_ANSWERS`] of them and [`MAX_BYTES`] in
//! all, the oldest going first: a restart forgets them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{App, Ctx};
use crate::domain::Issues;
use crate::http::{ApiError, Headers, Reply, RequestBody, Route, StoredReply, Verb};

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Most answers kept.
pub const MAX_ANSWERS: usize = 10_000;
/// Most bytes of answers kept.
pub const MAX_BYTES: usize = 64 << 20;

/// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn key_of(headers: &Headers) -> Result<Option<String>, ApiError> {
    if headers.count("idempotency-key") == 0 {
        return Ok(None);
    }
    match headers.get("idempotency-key") {
        Some(key)
            if headers.count("idempotency-key") == 1
                && (1..=255).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => {
            let mut issues = Issues::new();
            issues.push(
                "Idempotency-Key",
                "must be one header of 1 to 255 visible ASCII characters",
            );
            Err(ApiError::invalid_params(issues))
        }
    }
}

/// Whose key it is: the API key's id and the idempotency key.
type Slot = (String, String);

enum Entry {
    /// The first request runs; its end is announced on the channel.
    Running(watch::Receiver<()>),
    Done(Done),
}

#[derive(Clone)]
struct Done {
    fingerprint: [u8; 32],
    answer: StoredReply,
    at: Instant,
}

/// The kept answers.
#[derive(Default)]
pub struct Answers {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    entries: HashMap<Slot, Entry>,
    bytes: usize,
}

/// What a request with a key does.
enum Claim<'a> {
    /// Run it; `Running` ends, with or without an answer kept, when this is dropped.
    Run(Running<'a>),
    /// It ran: its answer.
    Ran(Done),
}

/// The first request of a key, running.
struct Running<'a> {
    answers: &'a Answers,
    slot: Slot,
    /// Dropped at the end, waking the copies that wait.
    _done: watch::Sender<()>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut kept = self.answers.inner.lock();
        if matches!(kept.entries.get(&self.slot), Some(Entry::Running(_))) {
            kept.entries.remove(&self.slot);
        }
    }
}

impl Answers {
    async fn claim(&self, slot: Slot) -> Claim<'_> {
        loop {
            let mut wait = {
                let mut kept = self.inner.lock();
                match kept.entries.get(&slot) {
                    Some(Entry::Running(rx)) => rx.clone(),
                    Some(Entry::Done(done)) if done.at.elapsed() < TTL => {
                        return Claim::Ran(done.clone());
                    }
                    _ => {
                        let (tx, rx) = watch::channel(());
                        kept.remove(&slot);
                        kept.entries.insert(slot.clone(), Entry::Running(rx));
                        return Claim::Run(Running {
                            answers: self,
                            slot,
                            _done: tx,
                        });
                    }
                }
            };
            // Wakes when the first request's `Running` is dropped (its sender goes).
            while wait.changed().await.is_ok() {}
        }
    }

    /// Keeps `done` for `running`'s key, making room first.
    fn keep(&self, running: &Running<'_>, done: Done) {
        let size = done.answer.size();
        if size > MAX_BYTES {
            return;
        }
        let mut kept = self.inner.lock();
        kept.entries
            .retain(|_, e| !matches!(e, Entry::Done(d) if d.at.elapsed() >= TTL));
        kept.bytes = kept.entries.values().map(Entry::size).sum();
        while kept.entries.len() >= MAX_ANSWERS || kept.bytes + size > MAX_BYTES {
            let oldest = kept
                .entries
                .iter()
                .filter_map(|(slot, e)| match e {
                    Entry::Done(d) => Some((slot.clone(), d.at)),
                    Entry::Running(_) => None,
                })
                .min_by_key(|(_, at)| *at)
                .map(|(slot, _)| slot);
            match oldest {
                Some(slot) => kept.remove(&slot),
                None => break,
            }
        }
        kept.bytes += size;
        kept.entries.insert(running.slot.clone(), Entry::Done(done));
    }
}

impl Kept {
    fn remove(&mut self, slot: &Slot) {
        if let Some(entry) = self.entries.remove(slot) {
            self.bytes = self.bytes.saturating_sub(entry.size());
        }
    }
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Self::Running(_) => 0,
            Self::Done(d) => d.answer.size(),
        }
    }
}

/// What identifies a request: method, path and query, and its body's digest.
fn fingerprint(verb: Verb, target: &str, body: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(format!("{verb:?}\n{target}\n").as_bytes());
    hash.update(body);
    hash.finalize().into()
}

/// The digest of a body read whole: of its JSON in a canonical form (keys sorted, no
/// spaces) when it is JSON, else of its bytes.
fn body_digest(bytes: &[u8]) -> [u8; 32] {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => {
            let mut out = Vec::with_capacity(bytes.len());
            canonical(&value, &mut out);
            Sha256::digest(&out).into()
        }
        Err(_) => Sha256::digest(bytes).into(),
    }
}

fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(key).unwrap_or_default());
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// Reads the whole body (at most `limit` bytes) for its digest, then hands it back.
async fn read_body(ctx: &mut Ctx, limit: u64) -> Result<[u8; 32], ApiError> {
    let body = ctx
        .body
        .take()
        .ok_or_else(|| ApiError::Internal("request body read twice".into()))?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes: Bytes = match body.read_all(limit).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(ApiError::PayloadTooLarge),
        Err(_) => return Err(ApiError::invalid_field("body", "could not be read")),
    };
    let digest = body_digest(&bytes);
    ctx.body = Some(RequestBody::buffered(bytes));
    Ok(digest)
}

/// Drains the body of an import sent again, hashing its bytes.
async fn drain_digest(ctx: &mut Ctx) -> Result<[u8; 32], ApiError> {
    let mut body = ctx
        .body
        .take()
        .ok_or_else(|| ApiError::Internal("request body read twice".into()))?;
    let tee = body.tee();
    while let Some(chunk) = body.chunk().await {
        if chunk.is_err() {
            return Err(ApiError::invalid_field("body", "could not be read"));
        }
    }
    let digest: [u8; 32] = tee.lock().clone().finalize().into();
    Ok(digest)
}

impl App {
    /// Runs a write sent with `Idempotency-Key: idem`, or answers it as it was
    /// answered before (see the module's documentation).
    pub(super) async fn idempotent(
        &self,
        idem: String,
        route: Route,
        verb: Verb,
        target: &str,
        mut ctx: Ctx,
    ) -> Result<Reply, ApiError> {
        let slot = (ctx.key.id.clone(), idem);
        // An import may be large: its bytes are hashed as they stream. Any other body
        // is read first (bodies are bounded by `max_body_bytes`).
        let streamed = matches!(route, Route::Import(_));
        let read_first = if streamed {
            None
        } else {
            Some(read_body(&mut ctx, self.max_body_bytes).await?)
        };
        let running = match self.idempotency.claim(slot).await {
            Claim::Ran(done) => {
                let body = match read_first {
                    Some(digest) => digest,
                    None => drain_digest(&mut ctx).await?,
                };
                if fingerprint(verb, target, &body) != done.fingerprint {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                return Ok(done.answer.reply().header("idempotent-replayed", "true"));
            }
            Claim::Run(running) => running,
        };
        let tee = match (&read_first, ctx.body.as_mut()) {
            (None, Some(body)) => Some(body.tee()),
            _ => None,
        };
        let response = match self.handle(route, verb, ctx).await {
            Ok(reply) => reply.into_response(),
            Err(err) => err.into_response(),
        };
        let answer = StoredReply::capture(response)
            .await
            .ok_or_else(|| ApiError::Internal("the answer could not be read".into()))?;
        let body = match (read_first, tee) {
            (Some(digest), _) => digest,
            (None, Some(tee)) => tee.lock().clone().finalize().into(),
            (None, None) => Sha256::digest([]).into(),
        };
        if answer.status() < 500 {
            let done = Done {
                fingerprint: fingerprint(verb, target, &body),
                answer: answer.clone(),
                at: Instant::now(),
            };
            self.idempotency.keep(&running, done);
        }
        drop(running);
        Ok(answer.reply())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_compare_as_json() {
        let a = body_digest(br#"{"users":[{"external_id":"u1","name":"A"}],"x":1.5}"#);
        let b = body_digest(
            b"{ \"x\": 1.5, \"users\": [ {\"name\": \"A\", \"external_id\": \"u1\"} ] }",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            body_digest(br#"{"users":[{"external_id":"u1","name":"B"}],"x":1.5}"#)
        );
        // Order within arrays matters; text that is not JSON compares byte for byte.
        assert_ne!(body_digest(b"[1,2]"), body_digest(b"[2,1]"));
        assert_ne!(body_digest(b"a,b\n"), body_digest(b"a,b \n"));
        let target = "/api/v1/chatbots/a/contacts";
        assert_ne!(
            fingerprint(Verb::Post, target, &a),
            fingerprint(Verb::Patch, target, &a)
        );
    }
}
