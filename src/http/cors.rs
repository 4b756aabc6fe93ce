//! Cross-origin requests from browsers (`cors.allowed_origins`): which origins may call
//! the API, the answer to a preflight, and the headers an allowed origin's answers
//! carry. No credentials: a browser client sends its key in `Authorization` itself.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use hyper::Method;

/// Request headers a browser client may send.
const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, Content-Encoding, Idempotency-Key, If-Match, If-None-Match, X-Request-Id, X-Contactd-Client";
/// Response headers a browser client may read besides the always-safe ones.
const EXPOSED_HEADERS: &str =
    "ETag, Idempotent-Replayed, Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: Vec<String>) -> Self {
        Self { origins }
    }

    /// Whether `origin` may call the API.
    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }

    /// The allowed origin of a request, if it names one.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(hyper::header::ORIGIN)?;
        self.allows(origin.to_str().ok()?).then(|| origin.clone())
    }

    /// Adds what an answer to an allowed origin carries.
    pub fn decorate(headers: &mut HeaderMap, origin: HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }

    /// The headers of a preflight's answer for a route that takes `methods`.
    pub fn preflight(headers: &mut HeaderMap, origin: HeaderValue, methods: &[Method]) {
        let methods = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Ok(methods) = HeaderValue::from_str(&methods) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// Checks one `cors.allowed_origins` entry: `*`, or an origin (`http://` or `https://`,
/// a host, an optional port, nothing after).
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("\"{origin}\" is not an origin: it starts with http:// or https://")
        })?;
    let valid = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{origin}\" is not an origin: a scheme, a host and an optional port, with no path"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for good in [
            "*",
            "https://app.example.com",
            "http://localhost:5173",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://",
            "https://x.com/",
            "https://x.com/path",
            "ftp://x",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let cors = Cors::new(vec!["https://a.example".into()]);
        assert!(cors.allows("https://a.example"));
        assert!(!cors.allows("https://b.example"));
        assert!(!Cors::default().allows("https://a.example"));
        assert!(Cors::new(vec!["*".into()]).allows("https://b.example"));
    }
}
