//! [`Reply`]: what a handler answers — a status, a content type, extra headers and a
//! body — without naming hyper's types. It becomes a response here and nowhere else.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::HeaderMap;
use hyper::StatusCode;
use serde_json::Value;

use super::{full, Body, Response};

/// A handler's answer.
pub struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    /// Headers of a stored answer sent again (see [`StoredReply`]).
    stored: Option<HeaderMap>,
    body: Body,
}

impl Reply {
    /// `200` with `body` as JSON.
    pub fn json(body: &Value) -> Self {
        Self::json_with_status(200, body)
    }

    /// `status` with `body` as JSON.
    pub fn json_with_status(status: u16, body: &Value) -> Self {
        let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        Self::bytes(status, "application/json", Bytes::from(bytes))
    }

    /// `status` with a complete body of `content_type`.
    pub fn bytes(status: u16, content_type: &'static str, bytes: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            stored: None,
            body: full(bytes),
        }
    }

    /// `200` with a body of `content_type` that a producer streams (see
    /// [`super::stream`]).
    pub fn stream(content_type: &'static str, body: Body) -> Self {
        Self {
            status: 200,
            content_type: Some(content_type),
            headers: Vec::new(),
            stored: None,
            body,
        }
    }

    /// `304 Not Modified`: no body, no content type.
    pub fn not_modified() -> Self {
        Self::empty(304)
    }

    /// `status` with no body and no content type.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            stored: None,
            body: full(Bytes::new()),
        }
    }

    /// Adds a header; `name` is lower case, as HTTP/2 and hyper's constants have it.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> Response {
        let mut response = hyper::Response::new(self.body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        if let Some(stored) = self.stored {
            headers.extend(stored);
        }
        if let Some(content_type) = self.content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        for (name, value) in self.headers {
            match HeaderValue::try_from(value) {
                Ok(value) => {
                    headers.insert(HeaderName::from_static(name), value);
                }
                // Handlers only send values they built; one that is not a valid header
                // value is a bug, logged rather than sent.
                Err(err) => tracing::error!(header = name, error = %err, "header value dropped"),
            }
        }
        response
    }
}

/// A complete answer kept to be sent again: an idempotent request's first answer.
#[derive(Debug, Clone)]
pub struct StoredReply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl StoredReply {
    /// Reads `response` whole; `None` if its body fails (a stream that broke off).
    pub async fn capture(response: Response) -> Option<Self> {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Self {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Bytes it holds, roughly: its body and headers.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
    }

    /// The answer again, as a reply.
    pub fn reply(&self) -> Reply {
        Reply {
            status: self.status,
            content_type: None,
            headers: Vec::new(),
            stored: Some(self.headers.clone()),
            body: full(self.body.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_becomes_a_response_with_its_status_type_and_headers() {
        let response = Reply::json_with_status(503, &serde_json::json!({"status": "damaged"}))
            .header("cache-control", "no-store")
            .into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");

        let response = Reply::not_modified()
            .header("etag", "\"v1\"")
            .into_response();
        assert_eq!(response.status(), 304);
        assert!(response.headers().get("content-type").is_none());
        assert_eq!(response.headers()["etag"], "\"v1\"");
    }

    #[test]
    fn a_header_value_that_is_not_valid_is_dropped_not_sent() {
        let response = Reply::json(&serde_json::json!({}))
            .header("content-disposition", "line\nbreak")
            .into_response();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-disposition").is_none());
    }
}
