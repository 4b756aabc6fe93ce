//! `/api/v1/webhooks[/{id}[/rotate-secret|/deliveries[/{deliveryId}/retry]]]`: webhook
//! endpoints, their secrets and their deliveries. An admin key sees every endpoint; an
//! agent key only its agent's, and the endpoints it makes take its agent's events.

use rand::Rng;
use serde_json::Value;

use super::{success, App, Ctx};
use crate::clock::unix_now;
use crate::domain::webhook::{Secret, Webhook, WebhookInput, ROTATION_OVERLAP_SECS};
use crate::domain::{ApiKey, Issues, Scope};
use crate::http::{ApiError, Reply};
use crate::store::StoreError;

/// A new signing secret: `whsec_` and 32 random bytes in hex.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("whsec_{hex}")
}

fn new_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("wh_{hex}")
}

/// The endpoint's public form, and the secret when it is shown (once).
fn with_secret(hook: &Webhook, secret: Option<&str>) -> Value {
    let mut json = hook.to_json();
    if let (Some(secret), Some(obj)) = (secret, json.as_object_mut()) {
        obj.insert("secret".into(), Value::String(secret.to_owned()));
    }
    json
}

/// Whether `key` may see `hook`.
fn in_scope(key: &ApiKey, hook: &Webhook) -> bool {
    match &key.scope {
        Scope::Admin => true,
        Scope::Agent(agent) => hook.chatbot_id.as_deref() == Some(agent.as_str()),
    }
}

/// The endpoint `id`, if `key` may see it; 404 otherwise (never saying which).
async fn find(app: &App, key: &ApiKey, id: &str) -> Result<Webhook, ApiError> {
    let owned = id.to_owned();
    app.read(move |s| s.webhook(&owned))
        .await?
        .filter(|h| in_scope(key, h))
        .ok_or(ApiError::NotFound)
}

/// The agent an endpoint is for: an agent key's own (naming another is 404, as that
/// agent is out of its sight; `null` is 400).
fn scope_for(
    key: &ApiKey,
    asked: Option<Option<String>>,
) -> Result<Option<Option<String>>, ApiError> {
    match (&key.scope, asked) {
        (Scope::Admin, asked) => Ok(asked),
        (Scope::Agent(agent), None) => Ok(Some(Some(agent.clone()))),
        (Scope::Agent(agent), Some(Some(asked))) if &asked == agent => Ok(Some(Some(asked))),
        (Scope::Agent(_), Some(Some(_))) => Err(ApiError::NotFound),
        (Scope::Agent(_), Some(None)) => {
            let mut issues = Issues::new();
            issues.push(
                "chatbot_id",
                "an agent key's webhooks take its agent's events only",
            );
            Err(ApiError::invalid_data(issues))
        }
    }
}

pub async fn list(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    let hooks = app.read(|s| s.webhooks()).await?;
    let shown: Vec<Value> = hooks
        .iter()
        .filter(|h| in_scope(&ctx.key, h))
        .map(Webhook::to_json)
        .collect();
    Ok(success(Value::Array(shown)))
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body = app.body_json(&mut ctx).await?;
    let input = WebhookInput::parse(&body, true, app.webhook_allow_private)
        .map_err(ApiError::invalid_data)?;
    let chatbot_id = scope_for(&ctx.key, input.chatbot_id)?.flatten();
    let now = unix_now();
    let secret = new_secret();
    let hook = Webhook {
        id: new_id(),
        url: input.url.unwrap_or_default(),
        events: input.events.unwrap_or_default(),
        chatbot_id,
        active: input.active.unwrap_or(true),
        disabled_reason: None,
        secrets: vec![Secret {
            value: secret.clone(),
            expires_at: None,
        }],
        created_at: now,
        updated_at: now,
    };
    let created = app.store.create_webhook(hook).await?;
    Ok(success(with_secret(&created, Some(&secret))).header("cache-control", "no-store"))
}

pub async fn get(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    let hook = find(app, &ctx.key, &id).await?;
    let queued = app.read(move |s| s.queue_len(&id)).await?;
    let mut json = hook.to_json();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("queued".into(), Value::from(queued));
    }
    Ok(success(json))
}

/// `PUT`: changes the fields sent; making an endpoint active again clears why it was
/// deactivated.
pub async fn update(app: &App, mut ctx: Ctx, id: String) -> Result<Reply, ApiError> {
    find(app, &ctx.key, &id).await?;
    let body = app.body_json(&mut ctx).await?;
    let input = WebhookInput::parse(&body, false, app.webhook_allow_private)
        .map_err(ApiError::invalid_data)?;
    let chatbot_id = match (&ctx.key.scope, input.chatbot_id) {
        (Scope::Admin, asked) => asked,
        (_, None) => None,
        (_, asked) => scope_for(&ctx.key, asked)?,
    };
    if let Some(Some(agent)) = &chatbot_id {
        app.agent_in_scope(&ctx.key, agent).await?;
    }
    let now = unix_now();
    let changed = app
        .store
        .update_webhook(
            id,
            Box::new(move |mut hook: Webhook| {
                if let Some(url) = input.url {
                    hook.url = url;
                }
                if let Some(events) = input.events {
                    hook.events = events;
                }
                if let Some(chatbot_id) = chatbot_id {
                    hook.chatbot_id = chatbot_id;
                }
                if let Some(active) = input.active {
                    if active {
                        hook.disabled_reason = None;
                    }
                    hook.active = active;
                }
                hook.updated_at = now;
                Ok(hook)
            }),
        )
        .await?;
    Ok(success(changed.to_json()))
}

pub async fn delete(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    find(app, &ctx.key, &id).await?;
    let deleted = app.store.delete_webhook(id).await?;
    Ok(success(deleted.to_json()))
}

/// A new secret, shown once; the ones it replaces sign for
/// [`ROTATION_OVERLAP_SECS`] more.
pub async fn rotate_secret(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    find(app, &ctx.key, &id).await?;
    let now = unix_now();
    let secret = new_secret();
    let value = secret.clone();
    let changed = app
        .store
        .update_webhook(
            id,
            Box::new(move |mut hook: Webhook| {
                let until = now + ROTATION_OVERLAP_SECS;
                hook.secrets
                    .retain(|s| s.expires_at.is_none_or(|t| t > now));
                for old in &mut hook.secrets {
                    old.expires_at = Some(old.expires_at.map_or(until, |t| t.min(until)));
                }
                hook.secrets.insert(
                    0,
                    Secret {
                        value,
                        expires_at: None,
                    },
                );
                hook.updated_at = now;
                Ok(hook)
            }),
        )
        .await?;
    Ok(success(with_secret(&changed, Some(&secret))).header("cache-control", "no-store"))
}

pub async fn deliveries(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    find(app, &ctx.key, &id).await?;
    let kept = usize::try_from(crate::store::KEPT_DELIVERIES).unwrap_or(usize::MAX);
    let found = app.read(move |s| s.deliveries(&id, kept)).await?;
    Ok(success(Value::Array(
        found.iter().map(|d| d.to_json()).collect(),
    )))
}

/// Sends a delivery again now, whatever its status, and answers it with the attempt.
pub async fn retry(app: &App, ctx: &Ctx, id: String, delivery: String) -> Result<Reply, ApiError> {
    let hook = find(app, &ctx.key, &id).await?;
    let number: u64 = delivery.parse().map_err(|_| ApiError::NotFound)?;
    let owned = id.clone();
    let kept = usize::try_from(crate::store::KEPT_DELIVERIES).unwrap_or(usize::MAX);
    let mut found = app
        .read(move |s| s.deliveries(&owned, kept))
        .await?
        .into_iter()
        .find(|d| d.id == number)
        .ok_or(ApiError::NotFound)?;
    crate::webhooks::attempt(&app.webhook_sender, &hook, &mut found).await;
    let saved = app
        .store
        .save_delivery(id, found)
        .await
        .map_err(|err| match err {
            StoreError::WebhookNotFound => ApiError::NotFound,
            other => other.into(),
        })?;
    Ok(success(saved.to_json()))
}
