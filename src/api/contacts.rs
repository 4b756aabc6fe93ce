//! `/api/v1/chatbots/{chatbotId}/contacts[/{contactId}]`: create/upsert in batches,
//! list in creation order, get, patch and delete one contact.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{success, success_serialized, App, Ctx};
use crate::clock::unix_now;
use crate::domain::issues::{join, json_type};
use crate::domain::precondition::{serialized_etag, IfMatch};
use crate::domain::query::Query;
use crate::domain::search::ATTR_PREFIX;
use crate::domain::{AttrType, Contact, ContactInput, Field, Issue, Issues, Source};
use crate::http::error::CONTACT_CONFLICT;
use crate::http::{ApiError, Reply};
use crate::store::{EntryIssue, OnDuplicate, PatchRequest, Start, StoreError};

/// Most contacts in one `POST /contacts`.
pub const MAX_BATCH: usize = 1000;
const DEFAULT_PER_PAGE: u64 = 100;
const MIN_PER_PAGE: u64 = 10;
const MAX_PER_PAGE: u64 = 1000;

/// `page` and `per_page` after validation and clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub per_page: u64,
}

/// An integer query value: `Some(Ok(n))`, `Some(Err(()))` for a negative one, `None` if
/// it is not an integer at all. Huge values saturate.
pub(super) fn parse_integer(text: &str) -> Option<Result<u64, ()>> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.parse::<u64>().unwrap_or(u64::MAX);
    Some(if negative && value > 0 {
        Err(())
    } else {
        Ok(value)
    })
}

pub(super) fn first<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads `page` (≥ 1, default 1) and `per_page` (default 100, clamped to 10–1000).
pub fn parse_paging(query: &[(String, String)]) -> Result<Paging, Issues> {
    let mut issues = Issues::new();
    let page = match first(query, "page").map(|v| (v, parse_integer(v.trim()))) {
        None => 1,
        Some((_, Some(Ok(n)))) if n >= 1 => n,
        Some((_, Some(_))) => {
            issues.push("page", "must be at least 1");
            1
        }
        Some((v, None)) => {
            issues.push("page", format!("must be an integer, got \"{v}\""));
            1
        }
    };
    let per_page = match first(query, "per_page").map(|v| (v, parse_integer(v.trim()))) {
        None => DEFAULT_PER_PAGE,
        Some((_, Some(Ok(n)))) => n.clamp(MIN_PER_PAGE, MAX_PER_PAGE),
        Some((_, Some(Err(())))) => MIN_PER_PAGE,
        Some((v, None)) => {
            issues.push("per_page", format!("must be an integer, got \"{v}\""));
            DEFAULT_PER_PAGE
        }
    };
    if issues.is_empty() {
        Ok(Paging { page, per_page })
    } else {
        Err(issues)
    }
}

pub(super) fn parse_on_duplicate(query: &[(String, String)]) -> Result<OnDuplicate, ApiError> {
    match first(query, "on_duplicate") {
        None | Some("update") => Ok(OnDuplicate::Update),
        Some("skip") => Ok(OnDuplicate::Skip),
        Some("error") => Ok(OnDuplicate::Error),
        Some(other) => {
            let mut issues = Issues::new();
            issues.push(
                "on_duplicate",
                format!("must be update, skip or error, got \"{other}\""),
            );
            Err(ApiError::invalid_params(issues))
        }
    }
}

fn contacts_json(contacts: &[Contact]) -> Value {
    Value::Array(contacts.iter().map(Contact::to_json).collect())
}

/// Whether any parameter refers to a custom attribute, so the schema is needed.
fn mentions_attributes(query: &[(String, String)]) -> bool {
    query.iter().any(|(k, v)| {
        (k == "sort" && v.contains(ATTR_PREFIX))
            || (k.starts_with("filter[") && k.contains(ATTR_PREFIX))
    })
}

/// The list query (`q`, `sort`, `filter[...]`) of the parameters, typed against the
/// agent's schema when it mentions attributes.
pub(super) async fn parse_query(
    app: &App,
    agent: &str,
    params: &[(String, String)],
) -> Result<Query, ApiError> {
    let schema: BTreeMap<String, AttrType> = if mentions_attributes(params) {
        let defs = app.read_point(|s| s.attributes(agent))?;
        defs.into_iter().map(|d| (d.name, d.kind)).collect()
    } else {
        BTreeMap::new()
    };
    Query::parse(params, &schema, &app.write_rules.phone).map_err(ApiError::invalid_params)
}

pub async fn list(app: &App, ctx: &Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let paging = parse_paging(&ctx.query).map_err(ApiError::invalid_params)?;
    let cursor = first(&ctx.query, "cursor")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if cursor.is_some() && first(&ctx.query, "page").is_some() {
        let mut issues = Issues::new();
        issues.push(
            "cursor",
            "cannot be combined with page: use one or the other",
        );
        return Err(ApiError::invalid_params(issues));
    }
    let query = parse_query(app, &agent, &ctx.query).await?;
    let start = match &cursor {
        Some(c) => Start::After(query.resume(&agent, c).map_err(|msg| {
            let mut issues = Issues::new();
            issues.push("cursor", msg);
            ApiError::invalid_params(issues)
        })?),
        None => Start::Offset((paging.page - 1).saturating_mul(paging.per_page)),
    };
    let limit = usize::try_from(paging.per_page).unwrap_or(1000);
    let (page, next_cursor) = app
        .read(move |s| {
            let page = s.query_contacts(&agent, &query, &start, limit)?;
            let next = page.next.as_ref().map(|p| query.cursor(&agent, p));
            Ok((page, next))
        })
        .await?;
    let total_pages = page.total.map(|t| t.div_ceil(paging.per_page));
    let page_number = if cursor.is_some() {
        Value::Null
    } else {
        json!(paging.page)
    };
    Ok(Reply::json(&json!({
        "message": "Success",
        "data": contacts_json(&page.contacts),
        "total": page.total,
        "pages": {"page": page_number, "per_page": paging.per_page, "total_pages": total_pages},
        "next_cursor": next_cursor,
    })))
}

pub async fn get(app: &App, ctx: &Ctx, agent: String, id: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let contact = app
        .read_point(|s| s.contact(&agent, &id))?
        .ok_or(ApiError::NotFound)?;
    Ok(with_etag(&contact))
}

/// The contact's answer, with its `ETag`.
fn with_etag(contact: &Contact) -> Reply {
    let json = serde_json::to_vec(&contact.to_json()).unwrap_or_default();
    let etag = serialized_etag(&json);
    success_serialized(&json).header("etag", etag)
}

/// The request's `If-Match`, if it sent one (several headers count as one list).
fn if_match(ctx: &Ctx) -> Result<Option<IfMatch>, ApiError> {
    let Some(value) = ctx.headers.joined("if-match") else {
        return Ok(None);
    };
    IfMatch::parse(&value).map(Some).map_err(|msg| {
        let mut issues = Issues::new();
        issues.push("If-Match", msg);
        ApiError::InvalidParams(issues.into_vec())
    })
}

/// Finds the contact array (`users`, or its alias `contacts`) and its name.
fn batch_entries(body: &Value) -> Result<(&'static str, &Vec<Value>), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid_field(
            "body",
            &format!("must be an object, got {}", json_type(body)),
        ));
    };
    let (name, value) = match (obj.get("users"), obj.get("contacts")) {
        (Some(v), _) => ("users", v),
        (None, Some(v)) => ("contacts", v),
        (None, None) => {
            return Err(ApiError::invalid_field(
                "users",
                "is required: an array of 1 to 1000 contacts",
            ))
        }
    };
    match value.as_array() {
        Some(items) if !items.is_empty() => Ok((name, items)),
        Some(_) => Err(ApiError::invalid_field(name, "must not be empty")),
        None => Err(ApiError::invalid_field(
            name,
            &format!("must be an array, got {}", json_type(value)),
        )),
    }
}

/// The store's issues at their place in the request body: entry `i` of the batch sent
/// as `name` is `{name}[i]`; a PATCH's fields sit under `prefix` (`data`, or bare).
fn in_body(issues: Vec<EntryIssue>, entry_path: impl Fn(usize) -> String) -> Vec<Issue> {
    issues
        .into_iter()
        .map(|e| Issue {
            field: join(&entry_path(e.entry), &e.issue.field),
            message: e.issue.message,
        })
        .collect()
}

/// A store error as the API answers it, its issues placed by `entry_path`.
fn with_paths(err: StoreError, entry_path: impl Fn(usize) -> String) -> ApiError {
    match err {
        StoreError::Conflict(issues) => {
            ApiError::Conflict(CONTACT_CONFLICT, in_body(issues, entry_path))
        }
        StoreError::Invalid(issues) => ApiError::InvalidData(in_body(issues, entry_path)),
        other => other.into(),
    }
}

/// The header a client names itself in; `dashboard` marks contacts it creates as
/// `source: manual`.
pub const CLIENT_HEADER: &str = "x-contactd-client";

pub async fn upsert(app: &App, mut ctx: Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let on_duplicate = parse_on_duplicate(&ctx.query)?;
    let body = app.body_json(&mut ctx).await?;
    let (name, items) = batch_entries(&body)?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::BadRequest("Maximum 1000 contacts per request"));
    }
    let mut issues = Issues::new();
    // The dashboard says so; what it creates is entered by hand.
    let source = match ctx.headers.get(CLIENT_HEADER) {
        Some("dashboard") => Source::Manual,
        _ => Source::Api,
    };
    let entries: Vec<ContactInput> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| ContactInput::parse(item, &format!("{name}[{i}]"), &mut issues))
        .map(|mut input| {
            input.source = source;
            input.read_phone(&app.write_rules.phone);
            input
        })
        .collect();
    if !issues.is_empty() {
        return Err(ApiError::invalid_data(issues));
    }
    let outcome = app
        .store
        .upsert_contacts(agent, entries, on_duplicate, app.write_rules, unix_now())
        .await
        .map_err(|err| with_paths(err, |i| format!("{name}[{i}]")))?;
    Ok(Reply::json(&json!({
        "message": "Success",
        "data": contacts_json(&outcome.contacts),
        "meta": {"created": outcome.created, "updated": outcome.updated, "skipped": outcome.skipped},
    })))
}

pub async fn patch(app: &App, mut ctx: Ctx, agent: String, id: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let if_match = if_match(&ctx)?;
    let body = app.body_json(&mut ctx).await?;
    let (value, prefix) = match body.as_object() {
        Some(obj) if obj.contains_key("data") => (&obj["data"], "data"),
        Some(_) => (&body, ""),
        None => {
            return Err(ApiError::invalid_field(
                "body",
                &format!("must be an object, got {}", json_type(&body)),
            ))
        }
    };
    let mut issues = Issues::new();
    let input = ContactInput::parse(value, prefix, &mut issues);
    if let Some(input) = &input {
        if input.external_id == Field::Clear {
            issues.push(join(prefix, "external_id"), "must not be null or empty");
        }
    }
    let Some(mut input) = input.filter(|_| issues.is_empty()) else {
        return Err(ApiError::invalid_data(issues));
    };
    input.read_phone(&app.write_rules.phone);
    let patch = PatchRequest {
        agent,
        target: id,
        input,
        rules: app.write_rules,
        if_match,
    };
    let contact = app
        .store
        .patch_contact(patch, unix_now())
        .await
        .map_err(|err| with_paths(err, |_| prefix.to_owned()))?;
    Ok(with_etag(&contact))
}

pub async fn delete(app: &App, ctx: &Ctx, agent: String, id: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let if_match = if_match(ctx)?;
    let contact = app
        .store
        .delete_contact(agent, id, if_match, unix_now())
        .await?;
    Ok(success(contact.to_json()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn paging_defaults_and_clamps() {
        assert_eq!(
            parse_paging(&q(&[])).unwrap(),
            Paging {
                page: 1,
                per_page: 100
            }
        );
        assert_eq!(parse_paging(&q(&[("per_page", "5")])).unwrap().per_page, 10);
        assert_eq!(
            parse_paging(&q(&[("per_page", "-5")])).unwrap().per_page,
            10
        );
        assert_eq!(
            parse_paging(&q(&[("per_page", "99999999999999999999999")]))
                .unwrap()
                .per_page,
            1000
        );
    }

    #[test]
    fn paging_rejects_bad_values_naming_them() {
        let fields = |query| {
            parse_paging(&q(query))
                .unwrap_err()
                .into_vec()
                .into_iter()
                .map(|i| i.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(&[("page", "0")]), ["page"]);
        assert_eq!(
            fields(&[("page", "1.5"), ("per_page", "x")]),
            ["page", "per_page"]
        );
    }
}
