//! The Pabbly Chatflow dialect: `POST/GET /api/v1/contacts`, `GET/PUT
//! /api/v1/contacts/{_id}` and `GET /api/v1/contacts/lists`, on the key's agent (an
//! admin key: `pabbly.agent`). Errors answer `{"status":"error","message":…}`.

use serde_json::{json, Value};

use super::contacts::{first, parse_query};
use super::{App, Ctx};
use crate::clock::unix_now;
use crate::domain::issues::json_type;
use crate::domain::label::{self, LabelKind};
use crate::domain::pabbly::{self, ItemProblem, OnDuplicate};
use crate::domain::query::{Filter, Op};
use crate::domain::search::text_key;
use crate::domain::{Issues, Scope};
use crate::http::{ApiError, Reply};
use crate::store::{PatchRequest, PhoneOutcome, PhoneWrite, Start, StoreError};

/// Contacts per page of `GET /contacts`, at most and by default.
const PAGE_LIMIT: u64 = 25;

fn success(message: &str, data: Value) -> Reply {
    Reply::json(&json!({"status": "success", "message": message, "data": data}))
}

/// The agent a Pabbly request works on: the key's, or `pabbly.agent` for an admin key.
async fn agent(app: &App, ctx: &Ctx) -> Result<String, ApiError> {
    let agent = match &ctx.key.scope {
        Scope::Agent(id) => id.clone(),
        Scope::Admin => app.pabbly_agent.clone(),
    };
    app.agent_in_scope(&ctx.key, &agent).await?;
    Ok(agent)
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::invalid_field(field, message)
}

/// `POST /contacts`: one contact object or an array of at most 1000; each item saved
/// or failed on its own.
pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let agent = agent(app, &ctx).await?;
    let default = match first(&ctx.query, "onDuplicate") {
        None => OnDuplicate::Skip,
        Some(text) => OnDuplicate::parse(text).ok_or_else(|| {
            let mut issues = Issues::new();
            issues.push("onDuplicate", "must be skip or overwrite");
            ApiError::invalid_params(issues)
        })?,
    };
    let body = app.body_json(&mut ctx).await?;
    let items: Vec<Value> = match body {
        Value::Array(items) => items,
        Value::Object(_) => vec![body],
        other => {
            return Err(bad(
                "body",
                &format!(
                    "must be a contact object or an array of them, got {}",
                    json_type(&other)
                ),
            ))
        }
    };
    if items.len() > pabbly::MAX_ITEMS {
        return Err(bad("body", "must hold at most 1000 contacts"));
    }
    let rules = app.write_rules;
    // Items that parse go to the store; the others fail at once. `slots[i]` is where
    // item `i`'s outcome comes from.
    let mut writes = Vec::new();
    let mut slots: Vec<Result<usize, ItemProblem>> = Vec::with_capacity(items.len());
    for item in &items {
        slots.push(
            pabbly::parse_new(item, &rules.phone, default).map(|parsed| {
                writes.push(PhoneWrite {
                    phone: parsed.phone,
                    input: parsed.input,
                    overwrite: parsed.on_duplicate == OnDuplicate::Overwrite,
                });
                writes.len() - 1
            }),
        );
    }
    let outcomes = if writes.is_empty() {
        Vec::new()
    } else {
        app.store
            .save_by_phone(agent, writes, rules, unix_now())
            .await?
    };
    let mut saved = Vec::new();
    let mut failed = Vec::new();
    for (item, slot) in items.iter().zip(slots) {
        let reason = match slot {
            Err(problem) => problem.reason(),
            Ok(i) => match &outcomes[i] {
                PhoneOutcome::Created(c) | PhoneOutcome::Updated(c) => {
                    saved.push(pabbly::to_json(c, false));
                    continue;
                }
                PhoneOutcome::Exists => {
                    "mobile: a contact with this mobile number already exists (onDuplicate is skip)"
                        .to_owned()
                }
                PhoneOutcome::Failed(issues) => issues
                    .as_slice()
                    .iter()
                    .map(|i| format!("{}: {}", pabbly_field(&i.field), i.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        };
        let (mobile, name) = pabbly::echo(item);
        failed.push(json!({"mobile": mobile, "name": name, "reason": reason}));
    }
    let message = match saved.len() {
        1 => "1 contact saved successfully".to_owned(),
        n => format!("{n} contacts saved successfully"),
    };
    Ok(success(
        &message,
        json!({
            "createdContacts": saved,
            "failedCount": failed.len(),
            "failedContacts": failed,
        }),
    ))
}

/// A native field path as Pabbly names it (`custom_attributes.city` is the attribute
/// `city`; `incoming_blocked` is `incomingBlocked`).
fn pabbly_field(field: &str) -> String {
    match field {
        "incoming_blocked" => "incomingBlocked".to_owned(),
        "phonenumber" => "mobile".to_owned(),
        other => match other.strip_prefix("custom_attributes.") {
            Some(name) => format!("attributes.{name}"),
            None => other.to_owned(),
        },
    }
}

/// The contact with Pabbly id `id` of the agent, or 404.
async fn by_id(app: &App, agent: &str, id: &str) -> Result<crate::domain::Contact, ApiError> {
    if crate::domain::ids::parse_pabbly_id(id).is_none() {
        return Err(ApiError::NotFound);
    }
    app.read_point(|s| s.contact(agent, id))?
        .ok_or(ApiError::NotFound)
}

/// `GET /contacts/{_id}`.
pub async fn get(app: &App, ctx: &Ctx, id: String) -> Result<Reply, ApiError> {
    let agent = agent(app, ctx).await?;
    let contact = by_id(app, &agent, &id).await?;
    Ok(success(
        "Contact fetched successfully",
        pabbly::to_json(&contact, true),
    ))
}

/// `PUT /contacts/{_id}`.
pub async fn update(app: &App, mut ctx: Ctx, id: String) -> Result<Reply, ApiError> {
    let agent = agent(app, &ctx).await?;
    let body = app.body_json(&mut ctx).await?;
    let input = pabbly::parse_update(&body).map_err(|p| bad(&p.field, &p.message))?;
    by_id(app, &agent, &id).await?;
    let patch = PatchRequest {
        agent,
        target: id,
        input,
        rules: app.write_rules,
        // Pabbly's API has no preconditions.
        if_match: None,
    };
    let contact = app
        .store
        .patch_contact(patch, unix_now())
        .await
        .map_err(|err| match err {
            StoreError::Invalid(issues) | StoreError::Conflict(issues) => ApiError::InvalidData(
                issues
                    .into_iter()
                    .map(|e| crate::domain::Issue {
                        field: pabbly_field(&e.issue.field),
                        message: e.issue.message,
                    })
                    .collect(),
            ),
            other => other.into(),
        })?;
    Ok(success(
        "Contact updated successfully",
        pabbly::to_json(&contact, true),
    ))
}

/// The native filter for Pabbly's `optin=<value>` (or `incomingBlocked`): `true` as is,
/// `false` as "not true", which also finds contacts whose flag was never set.
fn flag_filter(field: &str, value: &str) -> (String, String) {
    if value.trim().eq_ignore_ascii_case("false") {
        (format!("filter[{field}][ne]"), "true".into())
    } else {
        (format!("filter[{field}]"), value.to_owned())
    }
}

/// `GET /contacts`: filters `name` (substring), `mobile`, `tags`, `optin`,
/// `incomingBlocked`, `source`, `attributes[i][name]`/`[value]`; `order` 1 | -1;
/// `limit` (at most 25), `page` from 1.
pub async fn list(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    let agent = agent(app, ctx).await?;
    let mut issues = Issues::new();
    let mut params: Vec<(String, String)> = Vec::new();
    let mut name = None;
    let mut attributes: std::collections::BTreeMap<String, (Option<String>, Option<String>)> =
        Default::default();
    let (mut page, mut limit, mut descending) = (1u64, PAGE_LIMIT, false);
    for (key, value) in &ctx.query {
        match key.as_str() {
            "name" => name = Some(value.clone()),
            "mobile" => params.push(("filter[phonenumber]".into(), value.clone())),
            "tags" => params.push(("filter[tags]".into(), value.clone())),
            // Pabbly shows a flag never set as `false`, so `false` finds those too.
            "optin" => params.push(flag_filter("optin", value)),
            "incomingBlocked" => params.push(flag_filter("incoming_blocked", value)),
            "source" => params.push(("filter[source]".into(), value.clone())),
            "order" => match value.as_str() {
                "1" => descending = false,
                "-1" => descending = true,
                _ => issues.push("order", "must be 1 (oldest first) or -1 (newest first)"),
            },
            "limit" => match value.parse::<u64>() {
                Ok(n) if n >= 1 => limit = n.min(PAGE_LIMIT),
                _ => issues.push("limit", "must be a whole number from 1"),
            },
            "page" => match value.parse::<u64>() {
                Ok(n) if n >= 1 => page = n,
                _ => issues.push("page", "must be a whole number from 1"),
            },
            other => {
                // attributes[i][name] and attributes[i][value], paired by i.
                let parsed = other
                    .strip_prefix("attributes[")
                    .and_then(|rest| rest.split_once("]["))
                    .and_then(|(i, part)| Some((i, part.strip_suffix(']')?)));
                match parsed {
                    Some((i, "name")) => {
                        attributes.entry(i.to_owned()).or_default().0 = Some(value.clone())
                    }
                    Some((i, "value")) => {
                        attributes.entry(i.to_owned()).or_default().1 = Some(value.clone())
                    }
                    _ => {}
                }
            }
        }
    }
    for (i, pair) in attributes {
        match pair {
            (Some(name), Some(value)) => {
                params.push((format!("filter[custom_attributes.{name}]"), value));
            }
            _ => issues.push(
                format!("attributes[{i}]"),
                "needs both attributes[i][name] and attributes[i][value]",
            ),
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::invalid_params(issues));
    }
    let mut query = parse_query(app, &agent, &params)
        .await
        .map_err(|err| match err {
            ApiError::InvalidParams(issues) => ApiError::InvalidParams(
                issues
                    .into_iter()
                    .map(|mut i| {
                        i.field = pabbly_param(&i.field);
                        i
                    })
                    .collect(),
            ),
            other => other,
        })?;
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        query.filters.push(Filter {
            field: "name".into(),
            op: Op::Contains(text_key(&name)),
        });
    }
    query.descending = descending;
    let start = Start::Offset((page - 1).saturating_mul(limit));
    let owned = agent.clone();
    let found = app
        .read(move |s| {
            s.query_contacts(&owned, &query, &start, usize::try_from(limit).unwrap_or(25))
        })
        .await?;
    let contacts: Vec<Value> = found
        .contacts
        .iter()
        .map(|c| pabbly::to_json(c, false))
        .collect();
    Ok(success(
        "Contacts fetched successfully",
        json!({
            "contacts": contacts,
            "totalCount": found.total,
            "page": page,
            "limit": limit,
        }),
    ))
}

/// A native list parameter as the Pabbly request named it.
fn pabbly_param(field: &str) -> String {
    match field {
        "filter[phonenumber]" => "mobile".into(),
        "filter[tags]" => "tags".into(),
        "filter[optin]" | "filter[optin][ne]" => "optin".into(),
        "filter[incoming_blocked]" | "filter[incoming_blocked][ne]" => "incomingBlocked".into(),
        "filter[source]" => "source".into(),
        other => match other
            .strip_prefix("filter[custom_attributes.")
            .and_then(|r| r.strip_suffix(']'))
        {
            Some(name) => format!("attributes ({name})"),
            None => other.to_owned(),
        },
    }
}

/// `GET /contacts/lists`: `all` first (every contact), then the agent's lists.
pub async fn lists(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    let agent = agent(app, ctx).await?;
    let owned = agent.clone();
    let (lists, total) = app
        .read(move |s| {
            let lists = s.labels(&owned, LabelKind::List)?;
            let total = s.agent(&owned)?.map_or(0, |a| a.contact_count);
            Ok((lists, total))
        })
        .await?;
    let mut data = vec![json!({"name": label::ALL, "count": total})];
    data.extend(
        lists
            .iter()
            .map(|l| json!({"name": l.name, "count": l.count})),
    );
    Ok(success(
        "Contact lists fetched successfully",
        Value::Array(data),
    ))
}
