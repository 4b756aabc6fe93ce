//! `ApiError`: every failure a client can see, and the single table that turns each
//! into a status and a JSON body. Internal details are logged, never sent.

use bytes::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;
use serde_json::{json, Value};

use super::Response;
use crate::auth::AuthError;
use crate::domain::{Issue, Issues, LabelKind};
use crate::store::{EntryIssue, StoreError};

pub const CONTACT_CONFLICT: &str =
    "Error saving chatbot contact. External ID or email already exists.";

#[derive(Debug)]
pub enum ApiError {
    /// 400 "Invalid request data", with the issues found (possibly none).
    InvalidData(Vec<Issue>),
    /// 400 "Invalid request parameters" (query string).
    InvalidParams(Vec<Issue>),
    /// 400 with a specific message.
    BadRequest(&'static str),
    NoApiKey,
    InvalidApiKey,
    Forbidden,
    /// 403: a read-only key asked for a write.
    ReadOnlyKey,
    /// 429, with `Retry-After` in seconds.
    RateLimited(u64),
    NotFound,
    MethodNotAllowed(String),
    Conflict(&'static str, Vec<Issue>),
    /// 412: the contact no longer matches the request's `If-Match`.
    PreconditionFailed,
    /// 422: an `Idempotency-Key` sent again with another request.
    IdempotencyKeyReused,
    /// 410: the change feed no longer holds the changes asked for; `oldest` is the
    /// first sequence number it still holds.
    ChangesGone {
        message: &'static str,
        oldest: u64,
    },
    PayloadTooLarge,
    /// 413 with a specific message.
    TooLarge(String),
    UnsupportedMediaType,
    /// 415 with a specific message.
    UnsupportedMedia(String),
    Timeout,
    /// 503 with a specific message: the server cannot do this now (writes refused).
    Unavailable(String),
    /// 500; the text goes to the log only.
    Internal(String),
    /// The error as the Pabbly Chatflow dialect answers it:
    /// `{"status":"error","message":…}`, the issues' fields named in the message.
    Pabbly(Box<ApiError>),
}

impl ApiError {
    pub fn invalid_data(issues: Issues) -> Self {
        Self::InvalidData(issues.into_vec())
    }

    pub fn invalid_params(issues: Issues) -> Self {
        Self::InvalidParams(issues.into_vec())
    }

    /// One issue on one field of the body.
    pub fn invalid_field(field: &str, message: &str) -> Self {
        let mut issues = Issues::new();
        issues.push(field, message);
        Self::invalid_data(issues)
    }

    /// The same error in the Pabbly Chatflow dialect's form.
    pub fn in_pabbly_form(self) -> Self {
        match self {
            Self::Pabbly(_) => self,
            other => Self::Pabbly(Box::new(other)),
        }
    }

    /// The status and JSON body of the error.
    fn parts(&self) -> (StatusCode, Value) {
        match self {
            Self::Pabbly(inner) => {
                let (status, body) = inner.parts();
                let mut text = body["message"].as_str().unwrap_or_default().to_owned();
                if let Some(issues) = body["issues"].as_array() {
                    let named: Vec<String> = issues
                        .iter()
                        .map(|i| {
                            format!(
                                "{}: {}",
                                i["field"].as_str().unwrap_or_default(),
                                i["message"].as_str().unwrap_or_default()
                            )
                        })
                        .collect();
                    text = format!("{text}: {}", named.join("; "));
                }
                (status, json!({"status": "error", "message": text}))
            }
            other => other.native_parts(),
        }
    }

    pub fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let mut response = json_response(status, &body);
        let headers = response.headers_mut();
        let shown = match &self {
            Self::Pabbly(inner) => inner,
            other => other,
        };
        match shown {
            Self::MethodNotAllowed(allow) => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    headers.insert(ALLOW, value);
                }
            }
            // RFC 6750: a 401 names the scheme, and says when the token was the problem.
            Self::NoApiKey => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"contactd\""),
                );
            }
            Self::InvalidApiKey => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"contactd\", error=\"invalid_token\""),
                );
            }
            Self::RateLimited(secs) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        response
    }

    fn native_parts(&self) -> (StatusCode, Value) {
        match self {
            Self::InvalidData(issues) => (
                StatusCode::BAD_REQUEST,
                with_issues("Invalid request data", issues),
            ),
            Self::InvalidParams(issues) => (
                StatusCode::BAD_REQUEST,
                with_issues("Invalid request parameters", issues),
            ),
            Self::BadRequest(msg) => (StatusCode::BAD_REQUEST, message(msg)),
            Self::NoApiKey => (StatusCode::UNAUTHORIZED, message("No API key provided.")),
            Self::InvalidApiKey => (StatusCode::UNAUTHORIZED, message("Invalid API key.")),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                message("This API key is not allowed to do that."),
            ),
            Self::ReadOnlyKey => (
                StatusCode::FORBIDDEN,
                message("This API key is read-only: it cannot write."),
            ),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, message("Too many requests")),
            Self::NotFound => (StatusCode::NOT_FOUND, message("Resource not found")),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                message("Method not allowed"),
            ),
            Self::Conflict(msg, issues) => (StatusCode::CONFLICT, with_issues(msg, issues)),
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                message("This Idempotency-Key was used for a different request."),
            ),
            Self::ChangesGone { message, oldest } => (
                StatusCode::GONE,
                json!({ "message": message, "oldest": oldest }),
            ),
            Self::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                message("The contact has changed: If-Match does not match its ETag."),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                message("Request body too large"),
            ),
            Self::TooLarge(msg) => (StatusCode::PAYLOAD_TOO_LARGE, message(msg)),
            Self::UnsupportedMedia(msg) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, message(msg)),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message("Content-Type must be application/json"),
            ),
            Self::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                message("Request timed out"),
            ),
            Self::Unavailable(msg) => (StatusCode::SERVICE_UNAVAILABLE, message(msg)),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message("Internal server error"),
                )
            }
            Self::Pabbly(inner) => inner.parts(),
        }
    }
}

fn message(text: &str) -> Value {
    json!({ "message": text })
}

fn with_issues(text: &str, issues: &[Issue]) -> Value {
    if issues.is_empty() {
        message(text)
    } else {
        json!({ "message": text, "issues": issues })
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = hyper::Response::new(super::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::AgentNotFound
            | StoreError::ContactNotFound
            | StoreError::KeyNotFound
            | StoreError::AttributeNotFound
            | StoreError::WebhookNotFound
            | StoreError::LabelNotFound(_) => Self::NotFound,
            StoreError::LabelExists(LabelKind::Tag) => Self::Conflict("Tag already exists", Vec::new()),
            StoreError::LabelExists(LabelKind::List) => {
                Self::Conflict("List already exists", Vec::new())
            }
            StoreError::AgentExists => Self::Conflict("Chatbot already exists", Vec::new()),
            StoreError::LastAdminKey => Self::Conflict(
                "This is the last active admin key; create another admin key before revoking it.",
                Vec::new(),
            ),
            StoreError::PreconditionFailed => Self::PreconditionFailed,
            StoreError::AttributeExists => {
                Self::Conflict("Custom attribute already exists", Vec::new())
            }
            // A write of one thing: its fields are where the issues say. Batches name
            // their entries themselves (see `api::contacts`).
            StoreError::Invalid(issues) => Self::InvalidData(fields(issues)),
            StoreError::Conflict(issues) => Self::Conflict(CONTACT_CONFLICT, fields(issues)),
            StoreError::Damaged(detail) => Self::Unavailable(format!(
                "The database is damaged, so writes are refused: {detail}. Reads that do not touch the damage still work; see Operations in the README (contactd check, contactd salvage)."
            )),
            other => Self::Internal(other.to_string()),
        }
    }
}

fn fields(issues: Vec<EntryIssue>) -> Vec<Issue> {
    issues.into_iter().map(|e| e.issue).collect()
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => Self::NoApiKey,
            AuthError::Invalid => Self::InvalidApiKey,
        }
    }
}
