//! The web dashboard: `web/` embedded into the binary and served at `/`. It is a
//! client of the public API (it signs in with an API key), so serving it needs no key.
//!
//! Every response carries a strict Content-Security-Policy (scripts, styles and fetches
//! from this origin only, nothing inline, no framing). `index.html` refers to the assets
//! with `?v=<content hash>`, so those URLs are cached for a year and a new build changes
//! them; `index.html` itself is revalidated with its ETag on every load.

use std::sync::OnceLock;

use crate::domain::precondition::short_hash;
use crate::http::{ApiError, Headers, Reply};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../web/icon.svg"),
    },
];

const INDEX: &str = include_str!("../../web/index.html");

/// `index.html` with versioned asset URLs, and each asset's version.
struct Built {
    index: String,
    index_etag: String,
    versions: Vec<String>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let versions: Vec<String> = ASSETS.iter().map(|a| short_hash(a.bytes)).collect();
        let mut index = INDEX.to_owned();
        for (asset, version) in ASSETS.iter().zip(&versions) {
            let plain = format!("/assets/{}\"", asset.name);
            let versioned = format!("/assets/{}?v={version}\"", asset.name);
            index = index.replace(&plain, &versioned);
        }
        let index_etag = format!("\"{}\"", short_hash(index.as_bytes()));
        Built {
            index,
            index_etag,
            versions,
        }
    })
}

/// `GET /`: the dashboard page.
pub fn index(headers: &Headers) -> Reply {
    let b = built();
    respond(
        headers,
        &b.index_etag,
        "text/html; charset=utf-8",
        "no-cache",
        b.index.as_bytes(),
    )
}

/// `GET /assets/{name}`.
pub fn asset(headers: &Headers, name: &str, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let b = built();
    let (asset, version) = ASSETS
        .iter()
        .zip(&b.versions)
        .find(|(a, _)| a.name == name)
        .ok_or(ApiError::NotFound)?;
    let current = matches!(query, [(v, value)] if v == "v" && value == version);
    // A versioned URL never changes content; an unversioned one may.
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(respond(
        headers,
        &format!("\"{version}\""),
        asset.content_type,
        cache,
        asset.bytes,
    ))
}

fn respond(
    request: &Headers,
    etag: &str,
    content_type: &'static str,
    cache: &'static str,
    bytes: &'static [u8],
) -> Reply {
    let fresh = request
        .get("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let reply = if fresh {
        Reply::not_modified()
    } else {
        Reply::bytes(200, content_type, bytes)
    };
    reply
        .header("cache-control", cache)
        .header("etag", etag)
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_to_every_asset_by_its_version() {
        let b = built();
        for (asset, version) in ASSETS.iter().zip(&b.versions) {
            assert!(
                b.index
                    .contains(&format!("/assets/{}?v={version}", asset.name)),
                "{} is not referred to by version",
                asset.name
            );
        }
    }
}
