//! How the server is doing. `GET /healthz`: liveness, no key needed; a store that has
//! seen damage answers 503 with what it saw, so monitoring notices that writes are
//! refused. `GET /metrics`: Prometheus metrics, to admin keys (see `crate::metrics`).

use serde_json::json;

use super::{require_admin, App, Ctx};
use crate::http::{ApiError, Reply};

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

/// `GET /metrics` on the main port.
pub fn metrics(ctx: &Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    Ok(Reply::bytes(
        200,
        crate::metrics::CONTENT_TYPE,
        crate::metrics::render(),
    ))
}
