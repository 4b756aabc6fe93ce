//! `POST /api/v1/chatbots/{chatbotId}/contacts/import`: a CSV, JSON or NDJSON file
//! (gzip allowed). The upload is streamed to a temporary file in the data dir (never
//! held in memory), decompressed as it arrives so that `import.max_bytes` bounds what
//! is stored and read (a gzip bomb is refused the moment it passes the limit). The file
//! is read once to check it as a whole — so a malformed file is one 400 before anything
//! is written — and read again to write it, in transactions of at most 1000 rows (and
//! [`CHUNK_BYTES`]), each row upserted on its own: bad rows are reported, good ones
//! written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::contacts::parse_on_duplicate;
use super::{success, App, Ctx};
use crate::bulk::{read_rows, FileError, Row};
use crate::clock::unix_now;
use crate::domain::bulk::{is_written_date, Format, ImportReport, RowError};
use crate::domain::phone::PhoneRules;
use crate::domain::{AttrType, ContactInput, Field, Issues, Source};
use crate::http::{ApiError, Headers, Reply, RequestBody};
use crate::store::data_dir::private_file;
use crate::store::{ImportOptions, ImportRow, OnDuplicate};

/// Most rows per write transaction.
pub const CHUNK_ROWS: usize = 1000;
/// Most bytes of rows (as [`weight`] counts them) per write transaction: a thousand
/// rows of the largest valid contacts would hold gigabytes.
pub const CHUNK_BYTES: usize = 4 << 20;

/// Spool files are named `import-<16 hex digits>.tmp`.
const SPOOL_PREFIX: &str = "import-";
const SPOOL_SUFFIX: &str = ".tmp";

pub async fn import(app: &App, mut ctx: Ctx, agent: String) -> Result<Reply, ApiError> {
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
    let spool = Spool::receive(
        body,
        &ctx.headers,
        &app.spool_dir,
        gzip,
        app.import_max_bytes,
    )
    .await?;

    let owned = agent.clone();
    let defs = app.read(move |s| s.attributes(&owned)).await?;
    let types: BTreeMap<String, AttrType> = defs.into_iter().map(|d| (d.name, d.kind)).collect();

    let input = Input {
        path: spool.path.clone(),
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
    let checked = checked.map_err(|err| match err {
        FileError::Invalid(msg) => ApiError::invalid_field("file", &msg),
        too_long @ FileError::RecordTooLong { .. } => ApiError::TooLarge(too_long.to_string()),
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
    let phone = app.write_rules.phone;
    let reader = tokio::task::spawn_blocking(move || chunks(&input, &phone, &tx));
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
        .map_err(|err| ApiError::Internal(format!("the spooled import changed: {err}")))?;
    drop(spool);
    Ok(success(report.to_json()))
}

/// Removes the spool files an earlier process left behind (an upload cut off by a
/// crash or kill); returns how many. Run at start, before any import can begin.
pub fn remove_stale_spools(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SPOOL_PREFIX)
            && name.ends_with(SPOOL_SUFFIX)
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The file's format, from its `Content-Type`.
fn format_of(headers: &Headers) -> Result<Format, ApiError> {
    headers
        .get("content-type")
        .and_then(Format::from_content_type)
        .ok_or_else(|| {
            ApiError::UnsupportedMedia(
                "Content-Type must be text/csv, application/json or application/x-ndjson".into(),
            )
        })
}

/// Whether the upload is gzip-compressed (`Content-Encoding`).
fn gzip_of(headers: &Headers) -> Result<bool, ApiError> {
    match headers
        .get_bytes("content-encoding")
        .map(|v| std::str::from_utf8(v).map(str::trim))
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

/// The upload, decompressed, in a temporary file readable by the owner only; removed
/// when dropped.
struct Spool {
    path: PathBuf,
}

/// Why spooling stopped.
enum SpoolError {
    /// More than `import.max_bytes`, before or after decompression.
    TooLarge,
    /// Not a gzip stream, though `Content-Encoding` said so.
    NotGzip(String),
    Io(std::io::Error),
}

impl Spool {
    /// Streams `body` into the spool file. The file is written on a blocking thread as
    /// frames arrive, through a gzip decoder when `gzip`; either side counts bytes, and
    /// the upload stops as soon as one passes `limit`.
    async fn receive(
        mut body: RequestBody,
        headers: &Headers,
        dir: &Path,
        gzip: bool,
        limit: u64,
    ) -> Result<Self, ApiError> {
        if headers.content_length().is_some_and(|len| len > limit) {
            tokio::spawn(body.discard(limit));
            return Err(too_large(limit));
        }
        let name = format!("{SPOOL_PREFIX}{:016x}{SPOOL_SUFFIX}", rand::random::<u64>());
        let spool = Self {
            path: dir.join(name),
        };
        let file = private_file()
            .write(true)
            .create_new(true)
            .open(&spool.path)
            .map_err(|err| ApiError::Internal(format!("cannot create the import spool: {err}")))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || {
            let mut sink = SpoolWriter::new(file, gzip, limit);
            while let Some(data) = rx.blocking_recv() {
                sink.write(&data)?;
            }
            sink.finish()
        });
        let mut received = 0u64;
        let mut upload = Ok(());
        let mut refused = false;
        while let Some(chunk) = body.chunk().await {
            let data = match chunk {
                Ok(data) => data,
                Err(err) => {
                    tracing::debug!(error = %err, "import upload failed");
                    upload = Err(ApiError::invalid_field("file", "the upload broke off"));
                    break;
                }
            };
            received += data.len() as u64;
            if received > limit {
                upload = Err(too_large(limit));
                refused = true;
                break;
            }
            // A closed channel means the writer stopped: its result says why.
            if tx.send(data).await.is_err() {
                refused = true;
                break;
            }
        }
        drop(tx);
        if refused {
            tokio::spawn(body.discard(limit));
        }
        let written = writer
            .await
            .map_err(|err| ApiError::Internal(format!("import spool writer failed: {err}")))?;
        upload?;
        match written {
            Ok(0) => Err(ApiError::invalid_field("file", "the file is empty")),
            Ok(_) => Ok(spool),
            Err(SpoolError::TooLarge) => Err(too_large(limit)),
            Err(SpoolError::NotGzip(msg)) => Err(ApiError::invalid_field(
                "file",
                &format!("is not valid gzip (Content-Encoding: gzip): {msg}"),
            )),
            Err(SpoolError::Io(err)) => Err(ApiError::Internal(format!(
                "cannot spool the import: {err}"
            ))),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes the upload to the spool file, decompressing it first when it is gzip, and
/// fails once more than `limit` bytes would be stored.
enum SpoolWriter {
    Plain(Counted),
    Gzip(flate2::write::MultiGzDecoder<Counted>),
}

/// The spool file, refusing to grow past `limit` bytes.
struct Counted {
    file: BufWriter<File>,
    written: u64,
    limit: u64,
    overflowed: bool,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("import.max_bytes passed"));
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl SpoolWriter {
    fn new(file: File, gzip: bool, limit: u64) -> Self {
        let counted = Counted {
            file: BufWriter::with_capacity(256 * 1024, file),
            written: 0,
            limit,
            overflowed: false,
        };
        if gzip {
            Self::Gzip(flate2::write::MultiGzDecoder::new(counted))
        } else {
            Self::Plain(counted)
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        let written = match self {
            Self::Plain(out) => out.write_all(data),
            Self::Gzip(decoder) => decoder.write_all(data),
        };
        written.map_err(|err| self.error(err))
    }

    /// Ends the stream (a gzip stream must be complete); the bytes stored.
    fn finish(self) -> Result<u64, SpoolError> {
        let mut out = match self {
            Self::Plain(out) => out,
            Self::Gzip(mut decoder) => {
                if let Err(err) = decoder.try_finish() {
                    return Err(if decoder.get_ref().overflowed {
                        SpoolError::TooLarge
                    } else {
                        SpoolError::NotGzip(err.to_string())
                    });
                }
                decoder.finish().map_err(SpoolError::Io)?
            }
        };
        out.flush().map_err(SpoolError::Io)?;
        Ok(out.written)
    }

    fn error(&self, err: std::io::Error) -> SpoolError {
        match self {
            Self::Plain(out) if out.overflowed => SpoolError::TooLarge,
            Self::Gzip(decoder) if decoder.get_ref().overflowed => SpoolError::TooLarge,
            // What flate2 says of a stream that is not gzip.
            Self::Gzip(_)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                ) =>
            {
                SpoolError::NotGzip(err.to_string())
            }
            _ => SpoolError::Io(err),
        }
    }
}

/// How to read the spooled file.
#[derive(Debug, Clone)]
struct Input {
    path: PathBuf,
    format: Format,
    types: BTreeMap<String, AttrType>,
    first_row: u64,
}

impl Input {
    fn read(
        &self,
        sink: &mut dyn FnMut(Row) -> bool,
    ) -> Result<Option<Vec<(String, AttrType)>>, FileError> {
        let file = File::open(&self.path)
            .map_err(|err| FileError::Invalid(format!("cannot read the spooled import: {err}")))?;
        let mut columns = None;
        read_rows(
            BufReader::new(file),
            self.format,
            &self.types,
            self.first_row,
            &mut columns,
            sink,
        )?;
        Ok(columns.map(|c| c.declared()))
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

/// Up to [`CHUNK_ROWS`] rows (and about [`CHUNK_BYTES`]): those ready to write, and
/// those that already failed.
#[derive(Default)]
struct Chunk {
    rows: Vec<ImportRow>,
    errors: Vec<RowError>,
    bytes: usize,
}

/// Reads the file again, sending chunks of parsed rows.
fn chunks(input: &Input, phone: &PhoneRules, tx: &mpsc::Sender<Chunk>) -> Result<(), FileError> {
    let mut chunk = Chunk::default();
    let mut open = true;
    input.read(&mut |row| {
        if let Ok(object) = &row.object {
            chunk.bytes += weight(object);
        }
        match parse_row(row) {
            Ok(mut ok) => {
                ok.input.read_phone(phone);
                chunk.rows.push(ok);
            }
            Err(err) => chunk.errors.push(err),
        }
        if chunk.rows.len() + chunk.errors.len() == CHUNK_ROWS || chunk.bytes >= CHUNK_BYTES {
            open = tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
        }
        open
    })?;
    if open && (!chunk.rows.is_empty() || !chunk.errors.is_empty()) {
        let _ = tx.blocking_send(chunk);
    }
    Ok(())
}

/// About how many bytes a row takes in memory: its text, plus a little per value.
fn weight(value: &Value) -> usize {
    const PER_VALUE: usize = 32;
    PER_VALUE
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(weight).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + weight(v)).sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
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
        Some(mut input) if matches!(input.external_id, Field::Set(_)) => {
            input.source = Source::Csv;
            Ok(ImportRow {
                row: row.row,
                input,
            })
        }
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
                    rules: app.write_rules,
                    merge_attributes: format == Format::Csv,
                },
                unix_now(),
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
