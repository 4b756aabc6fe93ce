//! One request, from hyper's types to a handler and back: route it once, check its
//! method, bound its time, turn the handler's [`Reply`] or [`ApiError`] into a response.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::Method;

use super::body::query_pairs;
use super::cors::Cors;
use super::request::{Caller, Headers, Request, RequestBody, Verb};
use super::server::Limits;
use super::{router, ApiError, Reply, Response, Route};
use crate::api::{App, Standing};

/// Handles one request within `timeout` (imports: within the app's import timeout); a
/// panic or a timeout becomes a JSON error. Every answer says
/// `X-Content-Type-Options: nosniff`: a JSON body is never to be read as anything else.
/// A request from an origin `cors` allows gets the CORS headers; its preflight is
/// answered here (204). Every answer echoes the request's `X-Request-Id` (one is made
/// when the request has no usable one), and every request is one log line: method,
/// route template, status, duration, request id and the id of the key it used — never
/// the key or a body.
pub async fn serve(
    app: Arc<App>,
    limits: &Limits,
    req: hyper::Request<Incoming>,
    peer: IpAddr,
) -> Response {
    let started = Instant::now();
    let cors = &limits.cors;
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let route = router::route(req.uri().path());
    let template = route.as_ref().map_or("(unknown)", Route::template);
    let caller = Caller::default();
    let client = limits
        .client_ip_header
        .as_ref()
        .and_then(|name| forwarded_ip(req.headers(), name))
        .unwrap_or(peer);
    let origin = cors.allowed_origin(req.headers());
    let mut response = match (&origin, preflight_methods(&req, route.as_ref())) {
        (Some(origin), Some(methods)) => {
            let mut response = Reply::empty(204).into_response();
            Cors::preflight(response.headers_mut(), origin.clone(), &methods);
            response
        }
        _ => {
            let result = match parse(req, route, client, caller.clone()) {
                Ok(request) => run(app, request, limits.request_timeout).await,
                Err(err) => Err(err),
            };
            let mut response = result.map_or_else(ApiError::into_response, Reply::into_response);
            if let Some(origin) = origin {
                Cors::decorate(response.headers_mut(), origin);
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Some(budget) = caller.budget() {
        budget_headers(headers, budget);
    }
    let elapsed = started.elapsed();
    crate::metrics::request(template, response.status().as_u16(), elapsed);
    tracing::info!(
        target: "contactd::request",
        method = %method,
        route = template,
        status = response.status().as_u16(),
        duration_ms = elapsed.as_micros() as f64 / 1000.0,
        request_id = %request_id,
        key_id = caller.key_id().unwrap_or("-"),
        "request"
    );
    response
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the bucket is full).
fn budget_headers(headers: &mut hyper::HeaderMap, budget: Standing) {
    let pairs = [
        ("x-ratelimit-limit", u64::from(budget.limit)),
        ("x-ratelimit-remaining", u64::from(budget.remaining)),
        ("x-ratelimit-reset", budget.reset_secs),
    ];
    for (name, value) in pairs {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// The client address a reverse proxy put in header `name`: the last address of a
/// list (`X-Forwarded-For: client, proxy1`), the one the nearest proxy added.
fn forwarded_ip(headers: &hyper::HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    value.rsplit(',').next()?.trim().parse().ok()
}

/// The `X-Request-Id` header.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's own id when it sent a usable one (1–128 visible ASCII characters),
/// else a new one: 16 random bytes in hex.
fn request_id(headers: &hyper::HeaderMap) -> String {
    let sent = headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok());
    match sent {
        Some(id) if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => {
            let bytes: [u8; 16] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// The methods of `route` when the request is a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`) for it; `None` for any other request, or a path
/// no route serves.
fn preflight_methods(req: &hyper::Request<Incoming>, route: Option<&Route>) -> Option<Vec<Method>> {
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(hyper::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    Some(route?.allowed().to_vec())
}

/// Runs the request's handler on a task of its own, so that a panic or the deadline
/// ends it alone.
async fn run(app: Arc<App>, request: Request, timeout: Duration) -> Result<Reply, ApiError> {
    let timeout = match request.route {
        Route::Import(_) => app.import_timeout(),
        // A long poll waits for changes before its work begins.
        Route::Changes(_) => timeout + crate::api::MAX_CHANGES_WAIT,
        _ => timeout,
    };
    let task = tokio::spawn(async move { app.dispatch(request).await });
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err(ApiError::Internal(format!("handler failed: {err}"))),
        Err(_) => {
            abort.abort();
            Err(ApiError::Timeout)
        }
    }
}

/// Checks the request's method against its route's (`None`: no route serves the path).
fn parse(
    req: hyper::Request<Incoming>,
    route: Option<Route>,
    client: IpAddr,
    caller: Caller,
) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let route = route.ok_or(ApiError::NotFound)?;
    let allowed = route.allowed();
    if !allowed.contains(&parts.method) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::MethodNotAllowed(allow));
    }
    let verb = match parts.method {
        Method::GET | Method::HEAD => Verb::Get,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::PATCH => Verb::Patch,
        Method::DELETE => Verb::Delete,
        // `allowed()` lists only the methods above.
        _ => return Err(ApiError::NotFound),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    Ok(Request {
        route,
        verb,
        target,
        query: query_pairs(parts.uri.query()),
        headers: Headers::new(parts.headers),
        body: RequestBody::new(body),
        client,
        caller,
    })
}
