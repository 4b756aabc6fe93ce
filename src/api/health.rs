//! `GET /healthz`: liveness, no key needed. A store that has seen damage answers 503
//! with what it saw, so monitoring notices that writes are refused.

use hyper::StatusCode;
use serde_json::json;

use super::App;
use crate::http::error::json_response;
use crate::http::Response;

pub fn get(app: &App) -> Response {
    match app.store.damage() {
        None => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        Some(damage) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "damaged",
                "detail": damage.detail,
                "failed_reads": damage.failed_reads,
            }),
        ),
    }
}
