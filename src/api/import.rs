//! `POST /api/v1/chatbots/{chatbotId}/contacts/import`: a CSV, JSON or NDJSON file
//! (gzip allowed). The upload is streamed to a temporary file in the data dir (never
//! held in memory), read once to check the file as a whole — so a malformed file is
//! one 400 before anything is written — and read again to write it, 1000 rows per
//! transaction, each row upserted on its own: bad rows are reported, good ones written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::HeaderMap;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::contacts::parse_on_duplicate;
use super::{success, App, Ctx};
use crate::bulk::{read_rows, FileError, Row};
use crate::domain::bulk::{is_written_date, Format, ImportReport, RowError};
use crate::domain::{AttrType, ContactInput, Field, Issues};
use crate::http::{ApiError, Response};
use crate::store::{ImportOptions, ImportRow, OnDuplicate};

/// Rows per write transaction.
pub const CHUNK_ROWS: usize = 1000;

pub async fn import(app: &App, mut ctx: Ctx, agent: String) -> Result<Response, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let format = format_of(&ctx.headers)?;
    let gzip = gzip_of(&ctx.headers)?;
    let on_duplicate = parse_on_duplicate(&ctx.query)?;
    // CSV rows are numbered as a spreadsheet shows them: the header is row 1. JSON rows
    // by their position in the array, NDJSON rows by their line.
    let first_row = if format == Format::Csv { 2 } else { 1 };
    let body = ctx
        .body
        .take()
        .ok_or_else(|| ApiError::Internal("request body read twice".into()))?;
    let spool = Spool::receive(body, &ctx.headers, &app.spool_dir, app.import_max_bytes).await?;

    let owned = agent.clone();
    let defs = app.read(move |s| s.attributes(&owned)).await?;
    let types: BTreeMap<String, AttrType> = defs.into_iter().map(|d| (d.name, d.kind)).collect();

    let input = Input {
        path: spool.path.clone(),
        gzip,
        limit: app.import_max_bytes,
        overflowed: Arc::new(AtomicBool::new(false)),
        format,
        types: types.clone(),
        first_row,
    };
    let checked = {
        let input = input.clone();
        tokio::task::spawn_blocking(move || check(&input))
            .await
            .map_err(|err| ApiError::Internal(format!("import check failed: {err}")))?
    };
    let checked = checked.map_err(|FileError(msg)| {
        if input.overflowed.load(Ordering::Relaxed) {
            too_large(app.import_max_bytes)
        } else {
            ApiError::invalid_field("file", &msg)
        }
    })?;
    for (name, kind) in &checked.declared {
        if let Some(defined) = types.get(name).filter(|t| *t != kind) {
            return Err(ApiError::invalid_field(
                "file",
                &format!(
                    "column \"{name}:{}\": custom attribute '{name}' is defined as {}",
                    kind.as_str(),
                    defined.as_str()
                ),
            ));
        }
    }

    let mut report = ImportReport {
        rows: checked.rows,
        ..ImportReport::default()
    };
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let reader = tokio::task::spawn_blocking(move || chunks(&input, &tx));
    while let Some(chunk) = rx.recv().await {
        write_chunk(
            app,
            &agent,
            chunk,
            &checked.declared,
            on_duplicate,
            format,
            &mut report,
        )
        .await?;
    }
    reader
        .await
        .map_err(|err| ApiError::Internal(format!("import reader failed: {err}")))?
        .map_err(|FileError(msg)| {
            ApiError::Internal(format!("the spooled import changed: {msg}"))
        })?;
    drop(spool);
    Ok(success(report.to_json()))
}

/// The file's format, from its `Content-Type`.
fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_content_type)
        .ok_or_else(|| {
            ApiError::UnsupportedMedia(
                "Content-Type must be text/csv, application/json or application/x-ndjson".into(),
            )
        })
}

/// Whether the upload is gzip-compressed (`Content-Encoding`).
fn gzip_of(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None => Ok(false),
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => Ok(false),
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
            Ok(true)
        }
        Some(_) => Err(ApiError::UnsupportedMedia(
            "Content-Encoding must be gzip or identity".into(),
        )),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge(format!(
        "an import may be at most {limit} bytes, also after decompression (import.max_bytes)"
    ))
}

/// The upload in a temporary file, removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Spool {
    async fn receive(
        mut body: Incoming,
        headers: &HeaderMap,
        dir: &Path,
        limit: u64,
    ) -> Result<Self, ApiError> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large(limit));
        }
        let path = dir.join(format!("import-{:016x}.tmp", rand::random::<u64>()));
        let spool = Self { path };
        let mut file = tokio::fs::File::create(&spool.path)
            .await
            .map_err(|err| ApiError::Internal(format!("cannot create the import spool: {err}")))?;
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                tracing::debug!(error = %err, "import upload failed");
                ApiError::invalid_field("file", "the upload broke off")
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > limit {
                return Err(too_large(limit));
            }
            file.write_all(&data)
                .await
                .map_err(|err| ApiError::Internal(format!("cannot spool the import: {err}")))?;
        }
        file.flush()
            .await
            .map_err(|err| ApiError::Internal(format!("cannot spool the import: {err}")))?;
        if received == 0 {
            return Err(ApiError::invalid_field("file", "the file is empty"));
        }
        Ok(spool)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How to read the spooled file.
#[derive(Debug, Clone)]
struct Input {
    path: PathBuf,
    gzip: bool,
    limit: u64,
    format: Format,
    types: BTreeMap<String, AttrType>,
    first_row: u64,
    /// Set when the content turned out larger than `limit`.
    overflowed: Arc<AtomicBool>,
}

impl Input {
    /// The file's content, decompressed, and never more than `limit` bytes of it.
    fn open(&self) -> Result<Box<dyn Read + Send>, FileError> {
        let file = File::open(&self.path)
            .map_err(|err| FileError(format!("cannot read the spooled import: {err}")))?;
        let file = BufReader::new(file);
        let inner: Box<dyn Read + Send> = if self.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        Ok(Box::new(Capped {
            inner,
            left: self.limit,
            overflowed: Arc::clone(&self.overflowed),
        }))
    }

    fn read(
        &self,
        sink: &mut dyn FnMut(Row) -> bool,
    ) -> Result<Option<Vec<(String, AttrType)>>, FileError> {
        let mut columns = None;
        read_rows(
            self.open()?,
            self.format,
            &self.types,
            self.first_row,
            &mut columns,
            sink,
        )?;
        Ok(columns.map(|c| c.declared()))
    }
}

/// A reader that fails once more than `left` bytes were read (a gzip bomb stops here).
struct Capped {
    inner: Box<dyn Read + Send>,
    left: u64,
    overflowed: Arc<AtomicBool>,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            self.overflowed.store(true, Ordering::Relaxed);
            std::io::Error::other("the decompressed import is larger than import.max_bytes")
        })?;
        Ok(n)
    }
}

/// What the check found: how many rows, and attribute types the file declares (typed
/// CSV columns; JSON attributes whose values are all written dates).
struct Checked {
    rows: u64,
    declared: Vec<(String, AttrType)>,
}

/// Reads the whole file once without writing: file-level problems surface here.
fn check(input: &Input) -> Result<Checked, FileError> {
    let mut rows = 0;
    // Unknown JSON attributes: whether every value so far is a written date.
    let mut dates: BTreeMap<String, bool> = BTreeMap::new();
    let declared = input.read(&mut |row| {
        rows += 1;
        if let Ok(object) = &row.object {
            if let Some(attrs) = object.get("custom_attributes").and_then(|a| a.as_object()) {
                for (name, value) in attrs {
                    if value.is_null() || input.types.contains_key(name) {
                        continue;
                    }
                    let date = value.as_str().is_some_and(is_written_date);
                    dates
                        .entry(name.clone())
                        .and_modify(|d| *d &= date)
                        .or_insert(date);
                }
            }
        }
        true
    })?;
    let declared = declared.unwrap_or_else(|| {
        dates
            .into_iter()
            .filter(|(_, all_dates)| *all_dates)
            .map(|(name, _)| (name, AttrType::Date))
            .collect()
    });
    Ok(Checked { rows, declared })
}

/// Up to [`CHUNK_ROWS`] rows: those ready to write, and those that already failed.
#[derive(Default)]
struct Chunk {
    rows: Vec<ImportRow>,
    errors: Vec<RowError>,
}

/// Reads the file again, sending chunks of parsed rows.
fn chunks(input: &Input, tx: &mpsc::Sender<Chunk>) -> Result<(), FileError> {
    let mut chunk = Chunk::default();
    let mut open = true;
    input.read(&mut |row| {
        match parse_row(row) {
            Ok(ok) => chunk.rows.push(ok),
            Err(err) => chunk.errors.push(err),
        }
        if chunk.rows.len() + chunk.errors.len() == CHUNK_ROWS {
            open = tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
        }
        open
    })?;
    if open && (!chunk.rows.is_empty() || !chunk.errors.is_empty()) {
        let _ = tx.blocking_send(chunk);
    }
    Ok(())
}

/// A row as an upsert, or why it cannot be one.
fn parse_row(row: Row) -> Result<ImportRow, RowError> {
    let object = row.object?;
    let external_id = object
        .get("external_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut issues = Issues::new();
    let input = ContactInput::parse(&object, "", &mut issues);
    let fail = |field: &str, message: &str| RowError {
        row: row.row,
        external_id: external_id.clone(),
        field: Some(if field == "body" {
            "row".into()
        } else {
            field.to_owned()
        }),
        message: message.to_owned(),
    };
    if let Some(issue) = issues.as_slice().first() {
        return Err(fail(&issue.field, &issue.message));
    }
    match input {
        Some(input) if matches!(input.external_id, Field::Set(_)) => Ok(ImportRow {
            row: row.row,
            input,
        }),
        _ => Err(fail(
            "external_id",
            "is required: an import keys every row by external_id, so that running it again never creates duplicates",
        )),
    }
}

/// Writes one chunk and adds what happened to the report.
async fn write_chunk(
    app: &App,
    agent: &str,
    chunk: Chunk,
    declared: &[(String, AttrType)],
    on_duplicate: OnDuplicate,
    format: Format,
    report: &mut ImportReport,
) -> Result<(), ApiError> {
    let mut errors = chunk.errors;
    if !chunk.rows.is_empty() {
        let outcome = app
            .store
            .import_contacts(
                agent.to_owned(),
                chunk.rows,
                ImportOptions {
                    declared: declared.to_vec(),
                    on_duplicate,
                    policy: app.unknown_attributes,
                    merge_attributes: format == Format::Csv,
                },
            )
            .await?;
        report.created += outcome.created;
        report.updated += outcome.updated;
        report.skipped += outcome.skipped;
        errors.extend(outcome.failures.into_iter().map(|f| RowError {
            row: f.row,
            external_id: f.external_id,
            field: Some(f.field),
            message: f.message,
        }));
    }
    errors.sort_by_key(|e| e.row);
    let mut last_row = None;
    for mut error in errors {
        if format == Format::Csv {
            // A spreadsheet user knows the column, not the JSON path.
            error.field = error.field.map(|f| {
                f.strip_prefix("custom_attributes.")
                    .map_or(f.clone(), str::to_owned)
            });
        }
        let new_row = last_row != Some(error.row);
        last_row = Some(error.row);
        report.fail(error, new_row);
    }
    Ok(())
}
