//! `/api/v1/chatbots/{chatbotId}/custom-attributes[/{name}]`: define, list, read and
//! change (label, description, archived) an agent's custom attributes. There is no
//! delete: archive instead. Both key scopes may manage attributes of agents in scope.

use serde_json::Value;

use super::{success, App, Ctx};
use crate::clock::unix_now;
use crate::domain::attribute::{self, AttributeChange};
use crate::domain::AttributeDef;
use crate::http::{ApiError, Reply};

pub async fn list(app: &App, ctx: &Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let defs = app.read(move |s| s.attributes(&agent)).await?;
    Ok(success(Value::Array(
        defs.iter().map(AttributeDef::to_json).collect(),
    )))
}

pub async fn get(app: &App, ctx: &Ctx, agent: String, name: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let def = app
        .read_point(|s| s.attribute(&agent, &name))?
        .ok_or(ApiError::NotFound)?;
    Ok(success(def.to_json()))
}

pub async fn create(app: &App, mut ctx: Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let body = app.body_json(&mut ctx).await?;
    let def = attribute::parse_new(&body, unix_now()).map_err(ApiError::invalid_data)?;
    let def = app
        .store
        .create_attribute(agent, def, app.write_rules.max_per_agent)
        .await?;
    Ok(success(def.to_json()))
}

pub async fn update(
    app: &App,
    mut ctx: Ctx,
    agent: String,
    name: String,
) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let body = app.body_json(&mut ctx).await?;
    let change = AttributeChange::parse(&body).map_err(ApiError::invalid_data)?;
    let def = app.store.update_attribute(agent, name, change).await?;
    Ok(success(def.to_json()))
}
