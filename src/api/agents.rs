//! `/api/v1/chatbots`: agents. Admin keys see and manage all; an agent key sees its own.

use serde_json::Value;

use super::{require_admin, success, App, Ctx};
use crate::clock::unix_now;
use crate::domain::{ids, Agent, AgentInput};
use crate::http::{ApiError, Reply};

pub async fn list(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    let agents = app.read(|s| s.agents()).await?;
    let visible: Vec<Value> = agents
        .iter()
        .filter(|a| ctx.key.scope.includes(&a.id))
        .map(Agent::to_json)
        .collect();
    Ok(success(Value::Array(visible)))
}

pub async fn get(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &id).await?;
    let agent = app
        .read_point(|s| s.agent(&id))?
        .ok_or(ApiError::NotFound)?;
    Ok(success(agent.to_json()))
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let body = app.body_json(&mut ctx).await?;
    let input = AgentInput::parse(&body).map_err(ApiError::invalid_data)?;
    let agent = Agent {
        id: input.id.unwrap_or_else(ids::new_agent_id),
        name: input.name,
        created_at: unix_now(),
        contact_count: 0,
    };
    let agent = app.store.create_agent(agent).await?;
    Ok(success(agent.to_json()))
}

pub async fn delete(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let agent = app.store.delete_agent(id).await;
    app.forget_keys_and_agents();
    let agent = agent?;
    Ok(success(agent.to_json()))
}
