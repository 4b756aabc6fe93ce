//! `GET /healthz`: liveness, no key needed.

use hyper::StatusCode;
use serde_json::json;

use crate::http::error::json_response;
use crate::http::Response;

pub fn get() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}
