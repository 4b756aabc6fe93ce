//! `/api/v1/keys` (extension): create, list and revoke API keys. Admin only.

use serde_json::Value;

use super::{require_admin, success, App, Ctx};
use crate::auth;
use crate::clock::unix_now;
use crate::domain::issues::{check_display_name, json_type, required_string};
use crate::domain::{ids, ApiKey, Issues, Scope};
use crate::http::{ApiError, Reply};
use crate::store::StoreError;

pub async fn list(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let keys = app.read(|s| s.keys()).await?;
    Ok(success(Value::Array(
        keys.iter().map(ApiKey::to_json).collect(),
    )))
}

/// A validated `POST /keys` body.
struct KeyInput {
    name: String,
    chatbot_id: Option<String>,
}

fn parse_input(body: &Value) -> Result<KeyInput, Issues> {
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
    if issues.is_empty() {
        Ok(KeyInput { name, chatbot_id })
    } else {
        Err(issues)
    }
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let body = app.body_json(&mut ctx).await?;
    let input = parse_input(&body).map_err(ApiError::invalid_data)?;
    let scope = input.chatbot_id.map_or(Scope::Admin, Scope::Agent);
    let plaintext = auth::generate_key();
    let record = auth::new_key_record(&plaintext, &input.name, scope, unix_now());
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

pub async fn revoke(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let key = app.store.revoke_key(id).await;
    app.forget_keys_and_agents();
    let key = key?;
    Ok(success(key.to_json()))
}
