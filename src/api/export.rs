//! `GET /api/v1/chatbots/{chatbotId}/contacts/export?format=csv|json|ndjson`: every
//! contact (or those the list's `q`/`filter[...]`/`sort` select) streamed from one read
//! snapshot, in the format import reads back. CSV cells a spreadsheet would run as a
//! formula get a leading `'` unless `raw=true` (see `domain::bulk::neutralize_cell`).

use bytes::Bytes;

use super::contacts::{first, parse_query};
use super::{App, Ctx};
use crate::bulk::ExportWriter;
use crate::domain::bulk::Format;
use crate::domain::Issues;
use crate::http::{self, ApiError, Reply};

/// Contacts per chunk read from the snapshot and sent.
const CHUNK: usize = 1000;

pub async fn export(app: &App, ctx: &Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let name = first(&ctx.query, "format").unwrap_or("csv");
    let format = Format::from_name(name).ok_or_else(|| {
        let mut issues = Issues::new();
        issues.push("format", "must be csv, json or ndjson");
        ApiError::invalid_params(issues)
    })?;
    let raw = match first(&ctx.query, "raw") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            let mut issues = Issues::new();
            issues.push("raw", "must be true or false");
            return Err(ApiError::invalid_params(issues));
        }
    };
    let params: Vec<(String, String)> = ctx
        .query
        .iter()
        .filter(|(k, _)| k != "format" && k != "raw")
        .cloned()
        .collect();
    // Without list parameters: everything, in the order that is cheapest to read.
    let query = if params.is_empty() {
        None
    } else {
        Some(parse_query(app, &agent, &params).await?)
    };
    let owned = agent.clone();
    let defs = app.read(move |s| s.attributes(&owned)).await?;

    let (out, body) = http::stream(4);
    let store = app.store();
    tokio::task::spawn_blocking(move || {
        let mut writer = ExportWriter::new(format, defs).raw(raw);
        if !out.send_blocking(Bytes::from(writer.start())) {
            return;
        }
        let mut open = true;
        let result = store.export_contacts(&agent, query.as_ref(), CHUNK, &mut |contacts| {
            open = out.send_blocking(Bytes::from(writer.rows(&contacts)));
            open
        });
        match result {
            Ok(()) if open => {
                if out.send_blocking(Bytes::from(writer.end())) {
                    out.finish_blocking();
                }
            }
            Ok(()) => {}
            // Dropping `out` unfinished breaks the response off: the client must not
            // take what it got for the whole export.
            Err(err) => {
                tracing::error!(error = %err, agent, "export failed part-way; the response is broken off")
            }
        }
    });
    Ok(Reply::stream(format.content_type(), body).header(
        "content-disposition",
        format!("attachment; filename=\"contacts.{}\"", format.name()),
    ))
}
