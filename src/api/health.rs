//! `GET /healthz`: liveness, no key needed. A store that has seen damage answers 503
//! with what it saw, so monitoring notices that writes are refused.

use serde_json::json;

use super::App;
use crate::http::Reply;

pub fn get(app: &App) -> Reply {
    match app.store.damage() {
        None => Reply::json(&json!({ "status": "ok" })),
        Some(damage) => Reply::json_with_status(
            503,
            &json!({
                "status": "damaged",
                "detail": damage.detail,
                "failed_reads": damage.failed_reads,
            }),
        ),
    }
}
