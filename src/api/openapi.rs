//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every `/api/v1` route
//! (`docs/openapi.json`, compiled in). No key needed: it describes, it reveals nothing.

use crate::http::Reply;

/// The document; a test checks that it describes every route the router has.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub fn document() -> Reply {
    Reply::bytes(200, "application/json", DOCUMENT)
}
