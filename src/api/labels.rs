//! `/api/v1/chatbots/{chatbotId}/tags[/{name}]` and `/lists[/{name}[/contacts]]`: define,
//! list (with counts), rename and delete an agent's tags and lists, and add contacts to
//! a list or take them out. Renames, deletes and list changes by query change the
//! contacts in transactions of at most [`BATCH`].

use serde_json::{json, Value};

use super::contacts::parse_query;
use super::{success, App, Ctx};
use crate::clock::unix_now;
use crate::domain::issues::{json_type, required_string};
use crate::domain::label::{self, check_name, fold, LabelKind};
use crate::domain::query::Query;
use crate::domain::{Issues, Label};
use crate::http::{ApiError, Reply};
use crate::store::{Relabel, Targets};

/// Contacts changed per transaction.
const BATCH: usize = 1000;

fn to_json(label: &Label) -> Value {
    json!({ "name": label.name, "count": label.count })
}

pub async fn list(app: &App, ctx: &Ctx, agent: String, kind: LabelKind) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let labels = app.read(move |s| s.labels(&agent, kind)).await?;
    Ok(success(Value::Array(labels.iter().map(to_json).collect())))
}

/// The `name` of a body, checked as a name of `kind`.
fn body_name(body: &Value, kind: LabelKind) -> Result<String, ApiError> {
    let mut issues = Issues::new();
    let Some(obj) = body.as_object() else {
        issues.push(
            "body",
            format!("must be an object, got {}", json_type(body)),
        );
        return Err(ApiError::invalid_data(issues));
    };
    let name = required_string(obj, "name", &mut issues, |n| check_name(kind, n));
    if issues.is_empty() {
        Ok(name)
    } else {
        Err(ApiError::invalid_data(issues))
    }
}

pub async fn create(
    app: &App,
    mut ctx: Ctx,
    agent: String,
    kind: LabelKind,
) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let body = app.body_json(&mut ctx).await?;
    let name = body_name(&body, kind)?;
    let created = app.store.create_label(agent, kind, name).await?;
    Ok(success(to_json(&created)))
}

/// The defined label of that name (in any case), or 404; `all` is 400.
async fn existing(app: &App, agent: &str, kind: LabelKind, name: &str) -> Result<Label, ApiError> {
    if kind == LabelKind::List && label::is_all(name) {
        let mut issues = Issues::new();
        issues.push(
            "name",
            "'all' is the implicit list of every contact and cannot be changed",
        );
        return Err(ApiError::invalid_data(issues));
    }
    let owned = agent.to_owned();
    let labels = app.read(move |s| s.labels(&owned, kind)).await?;
    let folded = fold(name);
    labels
        .into_iter()
        .find(|l| fold(&l.name) == folded)
        .ok_or(ApiError::NotFound)
}

/// Applies `change` to every contact `query` selects, [`BATCH`] at a time, until a pass
/// finds nothing left to change; returns how many contacts changed.
async fn relabel_all(
    app: &App,
    agent: &str,
    kind: LabelKind,
    query: Query,
    change: Relabel,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let (owned, q) = (agent.to_owned(), query.clone());
        let ids = app
            .read(move |s| {
                let mut ids = Vec::new();
                s.export_contacts(&owned, Some(&q), BATCH, &mut |contacts| {
                    ids.extend(contacts.iter().map(|c| c.id));
                    true
                })?;
                Ok(ids)
            })
            .await?;
        let mut changed = 0;
        for chunk in ids.chunks(BATCH) {
            changed += app
                .store
                .relabel(
                    agent.to_owned(),
                    kind,
                    Targets::Numbers(chunk.to_vec()),
                    change.clone(),
                    unix_now(),
                )
                .await?;
        }
        total += changed;
        // A pass that changed nothing is the last: contacts written meanwhile are in it.
        if changed == 0 {
            return Ok(total);
        }
    }
}

/// The contacts carrying `name`.
fn carrying(kind: LabelKind, name: &str) -> Query {
    Query {
        filters: vec![crate::domain::query::Filter {
            field: kind.field().to_owned(),
            op: crate::domain::query::Op::Eq(fold(name).into_bytes()),
        }],
        ..Query::default()
    }
}

pub async fn rename(
    app: &App,
    mut ctx: Ctx,
    agent: String,
    kind: LabelKind,
    name: String,
) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let body = app.body_json(&mut ctx).await?;
    let to = body_name(&body, kind)?;
    let current = existing(app, &agent, kind, &name).await?;
    if fold(&to) != fold(&current.name) {
        let owned = agent.clone();
        let labels = app.read(move |s| s.labels(&owned, kind)).await?;
        if labels.iter().any(|l| fold(&l.name) == fold(&to)) {
            return Err(crate::store::StoreError::LabelExists(kind).into());
        }
    }
    let change = Relabel::Rename {
        from: current.name.clone(),
        to: to.clone(),
    };
    relabel_all(app, &agent, kind, carrying(kind, &current.name), change).await?;
    let renamed = app
        .store
        .drop_label(agent, kind, current.name, Some(to))
        .await?;
    Ok(success(to_json(&renamed)))
}

pub async fn delete(
    app: &App,
    ctx: &Ctx,
    agent: String,
    kind: LabelKind,
    name: String,
) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let current = existing(app, &agent, kind, &name).await?;
    let change = Relabel::Remove(current.name.clone());
    let removed = relabel_all(app, &agent, kind, carrying(kind, &current.name), change).await?;
    let gone = app
        .store
        .drop_label(agent, kind, current.name, None)
        .await?;
    Ok(success(
        json!({ "name": gone.name, "removed_from": removed }),
    ))
}

/// Who a membership change applies to: `{"external_ids": [...]}` (at most [`BATCH`]) or
/// `{"query": {"q": ..., "filter": {"field": value, ...}}}`.
enum Selection {
    ExternalIds(Vec<String>),
    Query(Vec<(String, String)>),
}

fn parse_selection(body: &Value) -> Result<Selection, ApiError> {
    let mut issues = Issues::new();
    let fail = |issues: Issues| Err(ApiError::invalid_data(issues));
    let Some(obj) = body.as_object() else {
        issues.push(
            "body",
            format!("must be an object, got {}", json_type(body)),
        );
        return fail(issues);
    };
    match (obj.get("external_ids"), obj.get("query")) {
        (Some(Value::Array(items)), None) => {
            if items.len() > BATCH {
                issues.push("external_ids", format!("must have at most {BATCH} entries"));
            }
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if !s.is_empty() => ids.push(s.clone()),
                    other => issues.push(
                        format!("external_ids[{i}]"),
                        format!("must be a non-empty string, got {}", json_type(other)),
                    ),
                }
            }
            if issues.is_empty() {
                Ok(Selection::ExternalIds(ids))
            } else {
                fail(issues)
            }
        }
        (None, Some(Value::Object(query))) => {
            let mut params = Vec::new();
            for (key, value) in query {
                match (key.as_str(), value) {
                    ("q", Value::String(q)) => params.push(("q".to_owned(), q.clone())),
                    ("filter", Value::Object(filters)) => {
                        for (field, v) in filters {
                            filter_params(field, v, &mut params, &mut issues);
                        }
                    }
                    ("q", other) | ("filter", other) => issues.push(
                        format!("query.{key}"),
                        format!("has the wrong type: {}", json_type(other)),
                    ),
                    _ => issues.push(format!("query.{key}"), "is not q or filter"),
                }
            }
            if issues.is_empty() {
                Ok(Selection::Query(params))
            } else {
                fail(issues)
            }
        }
        _ => {
            issues.push(
                "body",
                "needs exactly one of external_ids (an array) or query (an object)",
            );
            fail(issues)
        }
    }
}

/// One entry of a selection's `filter` as list parameters: `"plan": "pro"` is
/// `filter[plan]=pro`; an operator is written `"ltv": {"gte": 100}` or `"ltv[gte]": 100`,
/// both `filter[ltv][gte]=100`.
fn filter_params(
    field: &str,
    value: &Value,
    params: &mut Vec<(String, String)>,
    issues: &mut Issues,
) {
    let scalar = |v: &Value, at: String, issues: &mut Issues| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        other => {
            issues.push(
                at,
                format!(
                    "must be a string, number or boolean, got {}",
                    json_type(other)
                ),
            );
            None
        }
    };
    if let Value::Object(ops) = value {
        for (op, v) in ops {
            if let Some(text) = scalar(v, format!("query.filter.{field}.{op}"), issues) {
                params.push((format!("filter[{field}][{op}]"), text));
            }
        }
        return;
    }
    let name = match field.split_once('[') {
        Some((field, op)) if op.ends_with(']') => format!("filter[{field}][{op}"),
        _ => format!("filter[{field}]"),
    };
    if let Some(text) = scalar(value, format!("query.filter.{field}"), issues) {
        params.push((name, text));
    }
}

/// `POST` (add) or `DELETE` (take out) `/lists/{name}/contacts`.
pub async fn members(
    app: &App,
    mut ctx: Ctx,
    agent: String,
    name: String,
    add: bool,
) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let body = app.body_json(&mut ctx).await?;
    let selection = parse_selection(&body)?;
    let list = existing(app, &agent, LabelKind::List, &name).await?;
    let change = if add {
        Relabel::Add(list.name)
    } else {
        Relabel::Remove(list.name)
    };
    let changed = match selection {
        Selection::ExternalIds(ids) => {
            app.store
                .relabel(
                    agent,
                    LabelKind::List,
                    Targets::ExternalIds(ids),
                    change,
                    unix_now(),
                )
                .await?
        }
        Selection::Query(params) => {
            let query = parse_query(app, &agent, &params)
                .await
                .map_err(|err| match err {
                    // The parameters came from the body's `query`: name them there.
                    ApiError::InvalidParams(issues) => ApiError::InvalidData(
                        issues
                            .into_iter()
                            .map(|mut i| {
                                i.field = format!("query.{}", i.field);
                                i
                            })
                            .collect(),
                    ),
                    other => other,
                })?;
            relabel_all(app, &agent, LabelKind::List, query, change).await?
        }
    };
    let key = if add { "added" } else { "removed" };
    Ok(success(json!({ key: changed })))
}
