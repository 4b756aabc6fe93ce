//! `/api/v1/keys` (extension): create, list and revoke API keys. Admin only.

use serde_json::Value;

use super::{require_admin, success, App, Ctx};
use crate::auth;
use crate::clock::unix_now;
use crate::domain::issues::{check_display_name, json_type, required_string};
use crate::domain::{ids, Access, ApiKey, Issues, KeyGrant, RateLimit, Scope};
use crate::http::{ApiError, Reply};
use crate::store::StoreError;

pub async fn list(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let keys = app.read(|s| s.keys()).await?;
    Ok(success(Value::Array(
        keys.iter().map(ApiKey::to_json).collect(),
    )))
}

/// Reads a `POST /keys` body into what the new key is for; `now` judges `expires_at`.
fn parse_input(body: &Value, now: i64) -> Result<KeyGrant, Issues> {
    let mut issues = Issues::new();
    let Some(obj) = body.as_object() else {
        issues.push(
            "body",
            format!("must be an object, got {}", json_type(body)),
        );
        return Err(issues);
    };
    let name = required_string(obj, "name", &mut issues, check_display_name);
    let chatbot_id = match obj.get("chatbot_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if let Err(msg) = ids::check_agent_id(s) {
                issues.push("chatbot_id", msg);
            }
            Some(s.clone())
        }
        Some(other) => {
            issues.push(
                "chatbot_id",
                format!("must be a string, got {}", json_type(other)),
            );
            None
        }
    };
    let access = match obj.get("access") {
        None | Some(Value::Null) => Access::Write,
        Some(value) => value.as_str().and_then(Access::parse).unwrap_or_else(|| {
            issues.push("access", "must be \"read\" or \"write\"");
            Access::Write
        }),
    };
    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(at) if at > now => Some(at),
            Some(_) => {
                issues.push("expires_at", "must be in the future (Unix seconds)");
                None
            }
            None => {
                issues.push("expires_at", "must be an integer: Unix seconds");
                None
            }
        },
    };
    let rate_limit = match obj.get("rate_limit") {
        None | Some(Value::Null) => None,
        Some(value) => RateLimit::from_json(value, "rate_limit", &mut issues),
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(KeyGrant {
        name,
        scope: chatbot_id.map_or(Scope::Admin, Scope::Agent),
        access,
        expires_at,
        rate_limit,
    })
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let body = app.body_json(&mut ctx).await?;
    let now = unix_now();
    let grant = parse_input(&body, now).map_err(ApiError::invalid_data)?;
    let plaintext = auth::generate_key();
    let record = auth::new_key_record(&plaintext, grant, now);
    let key = match app.store.create_key(record).await {
        Err(StoreError::AgentNotFound) => {
            return Err(ApiError::invalid_field(
                "chatbot_id",
                "no chatbot has this id",
            ))
        }
        other => other?,
    };
    let mut data = key.to_json();
    data["key"] = Value::String(plaintext);
    // The plaintext key is in this answer: no cache may keep it.
    Ok(success(data).header("cache-control", "no-store"))
}

/// `GET /api/v1/me`: the key the request was made with, for any key (the dashboard
/// learns from it whether to offer writes).
pub fn me(ctx: &Ctx) -> Reply {
    success(ctx.key.to_json())
}

pub async fn revoke(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let key = app.store.revoke_key(id).await;
    app.forget_keys_and_agents();
    let key = key?;
    Ok(success(key.to_json()))
}
