//! Webhook endpoints: what one is, the events it takes, the checks on its URL (no
//! private addresses unless allowed), how a delivery is signed and when a failed one
//! is tried again. Pure: the store keeps endpoints and their queues, `webhooks` sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::issues::{json_type, Issues};

/// The events an endpoint can take.
pub const EVENT_TYPES: [&str; 6] = [
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "attribute.created",
    "attribute.updated",
    "agent.deleted",
];
/// Patterns that take several events.
const PATTERNS: [&str; 3] = ["contact.*", "attribute.*", "*"];
/// Longest endpoint URL.
pub const MAX_URL_CHARS: usize = 2048;
/// How long a secret replaced by a rotation still signs.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// The first retry's delay, doubled per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A signing secret; one replaced by a rotation signs until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub value: String,
    pub expires_at: Option<i64>,
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `wh_` and 24 hex digits.
    pub id: String,
    pub url: String,
    /// Event types and patterns, as sent.
    pub events: Vec<String>,
    /// The agent whose events it takes; `None`: every agent's.
    pub chatbot_id: Option<String>,
    pub active: bool,
    /// Why the server deactivated it (deliveries failing too long).
    pub disabled_reason: Option<String>,
    /// The current secret first.
    pub secrets: Vec<Secret>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Webhook {
    /// Whether it takes events of `kind` about agent `agent`.
    pub fn takes(&self, agent: &str, kind: &str) -> bool {
        self.active
            && self.chatbot_id.as_deref().is_none_or(|a| a == agent)
            && event_matches(&self.events, kind)
    }

    /// The secrets that sign at `now`, the current one first.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| s.value.as_str())
            .collect()
    }

    /// The public form: never a secret.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "chatbot_id": self.chatbot_id,
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx: tried again at `next_attempt`.
    Pending,
    Succeeded,
    /// Given up: the endpoint failed for `webhooks.max_age_hours` and was deactivated.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One attempt to deliver: its time, the response's status and first KiB of body, or
/// why there was no response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: i64,
    pub response_code: Option<u16>,
    pub response_body: String,
    pub error: Option<String>,
}

/// Most bytes of a response body an attempt keeps.
pub const RESPONSE_BODY_BYTES: usize = 1024;

/// One batch of events sent to an endpoint, with every attempt to send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Numbered per endpoint from 1.
    pub id: u64,
    pub event_ids: Vec<String>,
    /// The endpoint's queue numbers of the first and last event.
    pub first: u64,
    pub last: u64,
    /// The request body, so that the batch is sent again as it was.
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// When a pending delivery is tried next (Unix seconds).
    pub next_attempt: Option<i64>,
    pub created_at: i64,
}

impl Delivery {
    /// The public form (without the body).
    pub fn to_json(&self) -> Value {
        let attempts: Vec<Value> = self
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "at": a.at,
                    "response_code": a.response_code,
                    "response_body": a.response_body,
                    "error": a.error,
                })
            })
            .collect();
        json!({
            "id": self.id.to_string(),
            "event_ids": self.event_ids,
            "status": self.status.as_str(),
            "attempts": attempts,
            "next_attempt": self.next_attempt,
            "created_at": self.created_at,
        })
    }
}

/// Whether `patterns` (event types, `contact.*`, `attribute.*`, `*`) take `kind`.
pub fn event_matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && kind.starts_with(prefix))
    })
}

/// The fields of a create (`POST`) or change (`PUT`) of an endpoint; a change sets only
/// the fields sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)`: sent as `null` (every agent).
    pub chatbot_id: Option<Option<String>>,
    pub active: Option<bool>,
}

impl WebhookInput {
    /// Reads a body; a create needs `url` and `events`. `allow_private` lets URLs name
    /// private and loopback addresses (`webhooks.allow_private`).
    pub fn parse(body: &Value, creating: bool, allow_private: bool) -> Result<Self, Issues> {
        let mut issues = Issues::new();
        let Some(obj) = body.as_object() else {
            issues.push(
                "body",
                format!("must be an object, got {}", json_type(body)),
            );
            return Err(issues);
        };
        let mut input = Self::default();
        for (key, value) in obj {
            match key.as_str() {
                "url" => match value.as_str() {
                    Some(url) => match check_url(url, allow_private) {
                        Ok(()) => input.url = Some(url.to_owned()),
                        Err(msg) => issues.push("url", msg),
                    },
                    None => {
                        issues.push("url", format!("must be a string, got {}", json_type(value)))
                    }
                },
                "events" => input.events = parse_events(value, &mut issues),
                "chatbot_id" => match value {
                    Value::Null => input.chatbot_id = Some(None),
                    Value::String(id) => match super::ids::check_agent_id(id) {
                        Ok(()) => input.chatbot_id = Some(Some(id.clone())),
                        Err(msg) => issues.push("chatbot_id", msg),
                    },
                    other => issues.push(
                        "chatbot_id",
                        format!("must be a string or null, got {}", json_type(other)),
                    ),
                },
                "active" => match value.as_bool() {
                    Some(active) => input.active = Some(active),
                    None => issues.push(
                        "active",
                        format!("must be a boolean, got {}", json_type(value)),
                    ),
                },
                other => issues.push(other, "is not a webhook field"),
            }
        }
        if creating {
            if !obj.contains_key("url") {
                issues.push("url", "is required");
            }
            if !obj.contains_key("events") {
                issues.push("events", "is required");
            }
        }
        if issues.is_empty() {
            Ok(input)
        } else {
            Err(issues)
        }
    }
}

fn parse_events(value: &Value, issues: &mut Issues) -> Option<Vec<String>> {
    let Some(items) = value.as_array() else {
        issues.push(
            "events",
            format!("must be an array, got {}", json_type(value)),
        );
        return None;
    };
    if items.is_empty() {
        issues.push("events", "must name at least one event");
        return None;
    }
    let mut events: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(name) if EVENT_TYPES.contains(&name) || PATTERNS.contains(&name) => {
                if !events.iter().any(|e| e == name) {
                    events.push(name.to_owned());
                }
            }
            Some(name) => issues.push(
                format!("events[{i}]"),
                format!(
                    "unknown event \"{name}\"; expected one of {}, {}",
                    EVENT_TYPES.join(", "),
                    PATTERNS.join(", ")
                ),
            ),
            None => issues.push(
                format!("events[{i}]"),
                format!("must be a string, got {}", json_type(item)),
            ),
        }
    }
    Some(events)
}

/// Checks an endpoint URL: `http` or `https`, a host, no credentials, at most
/// [`MAX_URL_CHARS`]; unless `allow_private`, no literal address (or `localhost`) that
/// [`is_forbidden`] refuses. Names are checked again on the address they resolve to,
/// when a delivery connects.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let target = Target::parse(url)?;
    if !allow_private && target.is_private_literal() {
        return Err(
            "names a loopback, private or link-local address; deliveries go to public addresses only (webhooks.allow_private)"
                .into(),
        );
    }
    Ok(())
}

/// Where a delivery goes: scheme, host and port of an endpoint URL, and the request
/// target (path and query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// The host as written, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| "must be an absolute http or https URL".to_owned())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "must name a host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("must not contain credentials".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err("must name a host".into());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            tls,
            host,
            port,
            path_and_query,
        })
    }

    /// The host as an address, when it is one.
    pub fn literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    fn is_private_literal(&self) -> bool {
        let host = self.host.to_ascii_lowercase();
        host == "localhost"
            || host.ends_with(".localhost")
            || self.literal().is_some_and(is_forbidden)
    }
}

/// Whether a delivery may not connect to `ip`: loopback, unspecified, private,
/// link-local, CGNAT (100.64/10), broadcast, multicast, "this network" (0/8), IPv6
/// unique-local (fc00::/7), and the IPv4-mapped and IPv4-compatible forms of those.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d), deprecated but still routed by some stacks.
    if segments[..6].iter().all(|s| *s == 0) && !ip.is_loopback() && !ip.is_unspecified() {
        return forbidden_v4(Ipv4Addr::from(
            (u32::from(segments[6]) << 16) | u32::from(segments[7]),
        ));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
}

/// `Contactd-Signature`: `t=<unix>,v1=<hex>` with one `v1` per secret, each the
/// HMAC-SHA256 of `"<t>.<body>"` keyed with the secret's UTF-8 bytes.
pub fn signature(secrets: &[&str], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        for byte in mac.finalize().into_bytes() {
            header.push_str(&format!("{byte:02x}"));
        }
    }
    header
}

/// The wait before attempt `failed + 1` after `failed` failed attempts: 1 s, doubled
/// per failure, at most an hour, plus up to a quarter more by `jitter` (0 to 1), so that
/// endpoints that failed together are not retried together.
pub fn backoff(failed: u32, jitter: f64) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 4.0)
        .min(MAX_BACKOFF)
}

/// One event as delivered.
pub fn event_json(id: &str, kind: &str, created_at: i64, chatbot_id: &str, data: Value) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), Value::String(id.to_owned()));
    obj.insert("type".into(), Value::String(kind.to_owned()));
    obj.insert("created_at".into(), Value::from(created_at));
    obj.insert("chatbot_id".into(), Value::String(chatbot_id.to_owned()));
    obj.insert("data".into(), data);
    Value::Object(obj)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_their_events() {
        let p = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(event_matches(&p(&["*"]), "agent.deleted"));
        assert!(event_matches(&p(&["contact.*"]), "contact.deleted"));
        assert!(!event_matches(&p(&["contact.*"]), "attribute.created"));
        assert!(event_matches(
            &p(&["attribute.updated", "contact.created"]),
            "contact.created"
        ));
        assert!(!event_matches(&p(&["contact.created"]), "contact.updated"));
    }

    #[test]
    fn private_and_loopback_addresses_are_forbidden_in_every_form() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_and_split() {
        assert_eq!(
            Target::parse("https://hooks.example.com/in?x=1").unwrap(),
            Target {
                tls: true,
                host: "hooks.example.com".into(),
                port: 443,
                path_and_query: "/in?x=1".into()
            }
        );
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("::1", 8080, "/")
        );
        assert!(check_url("ftp://example.com/", false).is_err());
        assert!(check_url("example.com/hook", false).is_err());
        assert!(check_url("https://user:pw@example.com/", false).is_err());
        assert!(check_url("http://127.0.0.1:9000/", false).is_err());
        assert!(check_url("http://localhost/", false).is_err());
        assert!(check_url("http://[::ffff:10.0.0.1]/", false).is_err());
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        assert!(check_url("https://example.com/hook", false).is_ok());
    }

    #[test]
    fn the_signature_is_stripes_scheme_with_one_v1_per_secret() {
        // Expected values from `printf '1700000000.{}' | openssl dgst -sha256 -hmac <secret>`.
        let a = "04339dc4f01d6541e8d3b7e4bd93cd2d4f680ccb28592270900b08e49cc09e57";
        let b = "c5189ebadc3785f3f35cf54514c1960853eb90d63e53d893af772bcdc3781c6f";
        assert_eq!(
            signature(&["whsec_a"], 1_700_000_000, b"{}"),
            format!("t=1700000000,v1={a}")
        );
        assert_eq!(
            signature(&["whsec_a", "whsec_b"], 1_700_000_000, b"{}"),
            format!("t=1700000000,v1={a},v1={b}")
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_an_hour() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 0.0), Duration::from_secs(16));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(1250));
        assert_eq!(backoff(40, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn inputs_name_their_fields() {
        let err = WebhookInput::parse(
            &json!({"url": 5, "events": ["contact.created", "nope"], "active": "yes", "x": 1}),
            true,
            false,
        )
        .unwrap_err()
        .into_vec();
        let fields: Vec<&str> = err.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["url", "events[1]", "active", "x"]);
        let missing = WebhookInput::parse(&json!({}), true, false)
            .unwrap_err()
            .into_vec();
        assert_eq!(missing.len(), 2);
        let ok = WebhookInput::parse(
            &json!({"url": "https://example.com/h", "events": ["contact.*", "contact.*"], "chatbot_id": null}),
            true,
            false,
        )
        .unwrap();
        assert_eq!(ok.events, Some(vec!["contact.*".to_owned()]));
        assert_eq!(ok.chatbot_id, Some(None));
    }
}
