//! Maps a path to a route. Path segments are split first and percent-decoded one by one,
//! so an encoded `/` inside a contact id stays part of that id.

use hyper::Method;
use percent_encoding::percent_decode_str;

use crate::domain::LabelKind;

/// A known resource, with its path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// The dashboard page.
    Dashboard,
    /// A dashboard file under `/assets/`.
    Asset(String),
    Agents,
    Agent(String),
    Contacts(String),
    Import(String),
    Export(String),
    Contact(String, String),
    Attributes(String),
    Attribute(String, String),
    /// `/tags` or `/lists` of an agent.
    Labels(String, LabelKind),
    /// `/tags/{name}` or `/lists/{name}`.
    Label(String, LabelKind, String),
    /// `/lists/{name}/contacts`: who is in a list.
    ListMembers(String, String),
    /// An agent's change feed.
    Changes(String),
    /// Webhook endpoints.
    Webhooks,
    Webhook(String),
    /// `/webhooks/{id}/rotate-secret`.
    WebhookSecret(String),
    /// `/webhooks/{id}/deliveries`.
    WebhookDeliveries(String),
    /// `/webhooks/{id}/deliveries/{deliveryId}/retry`.
    WebhookRetry(String, String),
    Keys,
    Key(String),
    /// The key the request was made with.
    Me,
    /// The OpenAPI document of the API.
    OpenApi,
    /// A backup of the whole store, as one file.
    Backup,
    /// Prometheus metrics.
    Metrics,
    /// Pabbly Chatflow's `/api/v1/contacts`.
    PabblyContacts,
    /// Pabbly Chatflow's `/api/v1/contacts/lists`.
    PabblyLists,
    /// Pabbly Chatflow's `/api/v1/contacts/{_id}`.
    PabblyContact(String),
}

impl Route {
    /// The methods this route answers, as listed in the `Allow` header of a 405. `HEAD`
    /// is answered wherever `GET` is (RFC 9110), as `GET` without the body.
    pub fn allowed(&self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        match self {
            Self::Health
            | Self::Dashboard
            | Self::Asset(_)
            | Self::Export(_)
            | Self::Me
            | Self::OpenApi
            | Self::Backup
            | Self::Metrics
            | Self::Changes(_)
            | Self::WebhookDeliveries(_) => GET,
            Self::Agents
            | Self::Contacts(_)
            | Self::Keys
            | Self::Attributes(_)
            | Self::Labels(..) => &[Method::GET, Method::HEAD, Method::POST],
            Self::Agent(_) => &[Method::GET, Method::HEAD, Method::DELETE],
            Self::Import(_) => &[Method::POST],
            Self::Contact(..) => &[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE],
            Self::Attribute(..) => &[Method::GET, Method::HEAD, Method::PUT],
            Self::Label(..) => &[Method::PUT, Method::DELETE],
            Self::ListMembers(..) => &[Method::POST, Method::DELETE],
            Self::Key(_) => &[Method::DELETE],
            Self::Webhooks => &[Method::GET, Method::HEAD, Method::POST],
            Self::Webhook(_) => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Self::WebhookSecret(_) | Self::WebhookRetry(..) => &[Method::POST],
            Self::PabblyContacts => &[Method::GET, Method::HEAD, Method::POST],
            Self::PabblyLists => GET,
            Self::PabblyContact(_) => &[Method::GET, Method::HEAD, Method::PUT],
        }
    }

    /// The route's path with its parameters named, as request log lines show it.
    pub fn template(&self) -> &'static str {
        match self {
            Self::Health => "/healthz",
            Self::Dashboard => "/",
            Self::Asset(_) => "/assets/{file}",
            Self::Agents => "/api/v1/chatbots",
            Self::Agent(_) => "/api/v1/chatbots/{chatbotId}",
            Self::Contacts(_) => "/api/v1/chatbots/{chatbotId}/contacts",
            Self::Import(_) => "/api/v1/chatbots/{chatbotId}/contacts/import",
            Self::Export(_) => "/api/v1/chatbots/{chatbotId}/contacts/export",
            Self::Contact(..) => "/api/v1/chatbots/{chatbotId}/contacts/{contactId}",
            Self::Attributes(_) => "/api/v1/chatbots/{chatbotId}/custom-attributes",
            Self::Attribute(..) => "/api/v1/chatbots/{chatbotId}/custom-attributes/{name}",
            Self::Labels(_, LabelKind::Tag) => "/api/v1/chatbots/{chatbotId}/tags",
            Self::Labels(_, LabelKind::List) => "/api/v1/chatbots/{chatbotId}/lists",
            Self::Label(_, LabelKind::Tag, _) => "/api/v1/chatbots/{chatbotId}/tags/{name}",
            Self::Label(_, LabelKind::List, _) => "/api/v1/chatbots/{chatbotId}/lists/{name}",
            Self::ListMembers(..) => "/api/v1/chatbots/{chatbotId}/lists/{name}/contacts",
            Self::Changes(_) => "/api/v1/chatbots/{chatbotId}/changes",
            Self::Webhooks => "/api/v1/webhooks",
            Self::Webhook(_) => "/api/v1/webhooks/{webhookId}",
            Self::WebhookSecret(_) => "/api/v1/webhooks/{webhookId}/rotate-secret",
            Self::WebhookDeliveries(_) => "/api/v1/webhooks/{webhookId}/deliveries",
            Self::WebhookRetry(..) => "/api/v1/webhooks/{webhookId}/deliveries/{deliveryId}/retry",
            Self::Keys => "/api/v1/keys",
            Self::Key(_) => "/api/v1/keys/{keyId}",
            Self::Me => "/api/v1/me",
            Self::OpenApi => "/api/v1/openapi.json",
            Self::Backup => "/api/v1/backup",
            Self::Metrics => "/metrics",
            Self::PabblyContacts => "/api/v1/contacts",
            Self::PabblyLists => "/api/v1/contacts/lists",
            Self::PabblyContact(_) => "/api/v1/contacts/{_id}",
        }
    }

    /// One route of every kind, with sample parameters: what the OpenAPI document must
    /// describe and what request metrics are labelled by.
    pub fn samples() -> Vec<Route> {
        let a = || "bot".to_owned();
        let x = || "x".to_owned();
        let all = vec![
            Self::Health,
            Self::Dashboard,
            Self::Asset(x()),
            Self::Agents,
            Self::Agent(a()),
            Self::Contacts(a()),
            Self::Import(a()),
            Self::Export(a()),
            Self::Contact(a(), x()),
            Self::Attributes(a()),
            Self::Attribute(a(), x()),
            Self::Labels(a(), LabelKind::Tag),
            Self::Labels(a(), LabelKind::List),
            Self::Label(a(), LabelKind::Tag, x()),
            Self::Label(a(), LabelKind::List, x()),
            Self::ListMembers(a(), x()),
            Self::Changes(a()),
            Self::Webhooks,
            Self::Webhook(x()),
            Self::WebhookSecret(x()),
            Self::WebhookDeliveries(x()),
            Self::WebhookRetry(x(), x()),
            Self::Keys,
            Self::Key(x()),
            Self::Me,
            Self::OpenApi,
            Self::Backup,
            Self::Metrics,
            Self::PabblyContacts,
            Self::PabblyLists,
            Self::PabblyContact(x()),
        ];
        // Adding a variant fails to compile here until it is listed above.
        for route in &all {
            match route {
                Self::Health
                | Self::Dashboard
                | Self::Asset(_)
                | Self::Agents
                | Self::Agent(_)
                | Self::Contacts(_)
                | Self::Import(_)
                | Self::Export(_)
                | Self::Contact(..)
                | Self::Attributes(_)
                | Self::Attribute(..)
                | Self::Labels(..)
                | Self::Label(..)
                | Self::ListMembers(..)
                | Self::Changes(_)
                | Self::Webhooks
                | Self::Webhook(_)
                | Self::WebhookSecret(_)
                | Self::WebhookDeliveries(_)
                | Self::WebhookRetry(..)
                | Self::Keys
                | Self::Key(_)
                | Self::Me
                | Self::OpenApi
                | Self::Backup
                | Self::Metrics
                | Self::PabblyContacts
                | Self::PabblyLists
                | Self::PabblyContact(_) => {}
            }
        }
        all
    }

    /// Whether the route belongs to the Pabbly Chatflow dialect, whose errors have
    /// their own form.
    pub fn is_pabbly(&self) -> bool {
        matches!(
            self,
            Self::PabblyContacts | Self::PabblyLists | Self::PabblyContact(_)
        )
    }
}

/// Finds the route for `path`, or `None` for an unknown one.
pub fn route(path: &str) -> Option<Route> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let raw: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let mut segs = Vec::with_capacity(raw.len());
    for seg in &raw {
        segs.push(percent_decode_str(seg).decode_utf8().ok()?.into_owned());
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let param = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    Some(match s.as_slice() {
        ["healthz"] => Route::Health,
        [""] => Route::Dashboard,
        ["assets", name] => Route::Asset(param(name)?),
        ["api", "v1", "chatbots"] => Route::Agents,
        ["api", "v1", "chatbots", id] => Route::Agent(param(id)?),
        ["api", "v1", "chatbots", id, "contacts"] => Route::Contacts(param(id)?),
        ["api", "v1", "chatbots", id, "contacts", "import"] => Route::Import(param(id)?),
        ["api", "v1", "chatbots", id, "contacts", "export"] => Route::Export(param(id)?),
        ["api", "v1", "chatbots", id, "contacts", c] => Route::Contact(param(id)?, param(c)?),
        ["api", "v1", "chatbots", id, "custom-attributes"] => Route::Attributes(param(id)?),
        ["api", "v1", "chatbots", id, "custom-attributes", name] => {
            Route::Attribute(param(id)?, param(name)?)
        }
        ["api", "v1", "chatbots", id, "tags"] => Route::Labels(param(id)?, LabelKind::Tag),
        ["api", "v1", "chatbots", id, "lists"] => Route::Labels(param(id)?, LabelKind::List),
        ["api", "v1", "chatbots", id, "tags", name] => {
            Route::Label(param(id)?, LabelKind::Tag, param(name)?)
        }
        ["api", "v1", "chatbots", id, "lists", name] => {
            Route::Label(param(id)?, LabelKind::List, param(name)?)
        }
        ["api", "v1", "chatbots", id, "lists", name, "contacts"] => {
            Route::ListMembers(param(id)?, param(name)?)
        }
        ["api", "v1", "chatbots", id, "changes"] => Route::Changes(param(id)?),
        ["api", "v1", "contacts"] => Route::PabblyContacts,
        ["api", "v1", "contacts", "lists"] => Route::PabblyLists,
        ["api", "v1", "contacts", id] => Route::PabblyContact(param(id)?),
        ["metrics"] => Route::Metrics,
        ["api", "v1", "me"] => Route::Me,
        ["api", "v1", "openapi.json"] => Route::OpenApi,
        ["api", "v1", "backup"] => Route::Backup,
        ["api", "v1", "webhooks"] => Route::Webhooks,
        ["api", "v1", "webhooks", id] => Route::Webhook(param(id)?),
        ["api", "v1", "webhooks", id, "rotate-secret"] => Route::WebhookSecret(param(id)?),
        ["api", "v1", "webhooks", id, "deliveries"] => Route::WebhookDeliveries(param(id)?),
        ["api", "v1", "webhooks", id, "deliveries", d, "retry"] => {
            Route::WebhookRetry(param(id)?, param(d)?)
        }
        ["api", "v1", "keys"] => Route::Keys,
        ["api", "v1", "keys", id] => Route::Key(param(id)?),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn contact_ids_are_percent_decoded_per_segment() {
        assert_eq!(
            route("/api/v1/chatbots/bot/contacts/a%2Fb%20c%C3%BC"),
            Some(Route::Contact("bot".into(), "a/b cü".into()))
        );
    }

    #[test]
    fn bulk_paths_win_over_contact_ids_and_unknown_paths_have_no_route() {
        assert_eq!(
            route("/api/v1/chatbots/bot/contacts/import"),
            Some(Route::Import("bot".into()))
        );
        assert_eq!(
            route("/api/v1/chatbots/bot/contacts/export"),
            Some(Route::Export("bot".into()))
        );
        assert_eq!(route("/api/v1/chatbots/bot/contacts/%FF"), None);
        assert_eq!(route("/api/v2/chatbots"), None);
        assert_eq!(route("/api/v1/chatbots//contacts"), None);
        assert_eq!(route(""), None);
    }

    #[test]
    fn one_trailing_slash_is_tolerated() {
        assert_eq!(route("/api/v1/chatbots/"), Some(Route::Agents));
        assert_eq!(route("/healthz"), Some(Route::Health));
    }
}
