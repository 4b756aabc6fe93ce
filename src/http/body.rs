//! Request bodies and query strings: content type, size limit, JSON parsing.

use serde_json::Value;

use super::{ApiError, Headers, RequestBody};

/// Whether the request may carry JSON: `application/json` (any parameters) or no
/// Content-Type at all.
pub fn is_json_content_type(headers: &Headers) -> bool {
    let Some(value) = headers.get_bytes("content-type") else {
        return true;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Reads the whole body, at most `limit` bytes, and parses it as JSON.
pub async fn read_json(
    headers: &Headers,
    body: RequestBody,
    limit: u64,
) -> Result<Value, ApiError> {
    if !is_json_content_type(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if headers.content_length().is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = match body.read_all(limit).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(ApiError::PayloadTooLarge),
        Err(err) => {
            tracing::debug!(error = %err, "request body read failed");
            return Err(ApiError::invalid_field("body", "could not be read"));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_field(
            "body",
            "is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::invalid_field("body", &format!("is not valid JSON: {err}")))
}

/// The query string as ordered `(name, value)` pairs, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map_or_else(Vec::new, |q| {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    })
}
