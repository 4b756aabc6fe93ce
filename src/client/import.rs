//! `contactd import`: reads the file as a stream and sends it in chunks of rows (one
//! request each), so memory stays bounded and a failure part-way can be resumed with
//! `--skip-rows`. Each chunk's report is mapped back to the file's own row numbers;
//! failed rows are written, with their errors and cells, to `FILE.errors.csv`.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::runtime::Runtime;

use super::{connect, describe_error, request, send, Target, EXIT_ERROR};
use crate::bulk::{csv_line, csv_reader, read_rows, Row};
use crate::domain::bulk::Format;

/// Most rows per request (see `read_chunks`).
pub const MAX_CHUNK_ROWS: usize = 1000;

/// Exit code when some rows failed.
const EXIT_ROWS_FAILED: u8 = 1;
/// The format of a file: `--format`, else its extension (`.gz` looked through).
pub fn format_of(path: &Path, flag: Option<&str>) -> Result<(Format, bool), String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let gzip = name.ends_with(".gz");
    let stem = name.trim_end_matches(".gz");
    let from_name = stem
        .rsplit_once('.')
        .and_then(|(_, ext)| Format::from_name(ext));
    let format = match flag {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| format!("unknown format \"{f}\": csv, json or ndjson"))?,
        None => from_name.ok_or_else(|| {
            format!(
                "cannot tell the format of {}: name it .csv, .json or .ndjson, or pass --format",
                path.display()
            )
        })?,
    };
    Ok((format, gzip))
}

fn open(path: &Path, gzip: bool) -> Result<Box<dyn Read>, String> {
    let file = File::open(path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    let file = BufReader::with_capacity(256 * 1024, file);
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// What `contactd import` was asked.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    pub file: PathBuf,
    pub agent: String,
    pub format: Option<String>,
    pub target: Target,
    pub skip_rows: u64,
    pub chunk_rows: usize,
    pub on_duplicate: String,
}

/// One chunk on its way: the body to send, and per row the file's row number and the
/// row as the file had it (for FILE.errors.csv).
struct Chunk {
    body: Vec<u8>,
    rows: Vec<(u64, Vec<String>)>,
}

/// What `read_chunks` hands each chunk to, with the header (CSV) or `["data"]`.
type OnChunk<'a> = dyn FnMut(Chunk, &[String]) -> Result<(), String> + 'a;

/// Totals over every chunk.
#[derive(Debug, Default)]
struct Totals {
    rows: u64,
    created: u64,
    updated: u64,
    skipped: u64,
    failed: u64,
}

pub fn import(rt: &Runtime, args: &ImportArgs) -> ExitCode {
    match run_import(rt, args) {
        Ok(totals) if totals.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_ROWS_FAILED),
        Err(message) => {
            eprintln!("contactd import: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run_import(rt: &Runtime, args: &ImportArgs) -> Result<Totals, String> {
    let (format, gzip) = format_of(&args.file, args.format.as_deref())?;
    let total = count_rows(open(&args.file, gzip)?, format)?;
    let todo = total.saturating_sub(args.skip_rows);
    let mut progress = Progress::new(todo);
    let mut sender = rt.block_on(connect(&args.target))?;
    let path = format!(
        "{}/import?on_duplicate={}",
        args.target.contacts_path(&args.agent),
        args.on_duplicate
    );
    let errors_path = errors_path(&args.file);
    let mut errors: Option<csv::Writer<File>> = None;
    let mut totals = Totals::default();
    let mut sent = args.skip_rows;
    let mut header: Vec<String> = Vec::new();
    let content_type = match format {
        Format::Csv => Format::Csv.content_type(),
        Format::Json | Format::Ndjson => Format::Ndjson.content_type(),
    };
    let mut on_chunk = |chunk: Chunk, header: &[String]| -> Result<(), String> {
        let count = chunk.rows.len() as u64;
        let req = request(
            &args.target,
            Method::POST,
            &path,
            Some(content_type),
            Bytes::from(chunk.body),
        )?;
        let (status, body) = rt.block_on(send(&mut sender, req)).map_err(|err| {
            format!("{err}\nimport stopped after {sent} rows; resume with --skip-rows {sent}")
        })?;
        if status != StatusCode::OK {
            return Err(format!(
                "{}\nimport stopped after {sent} rows; resume with --skip-rows {sent}",
                describe_error(status, &body)
            ));
        }
        let report: Value = serde_json::from_slice(&body)
            .map_err(|err| format!("the report is not JSON: {err}"))?;
        let data = &report["data"];
        totals.rows += count;
        totals.created += data["created"].as_u64().unwrap_or(0);
        totals.updated += data["updated"].as_u64().unwrap_or(0);
        totals.skipped += data["skipped"].as_u64().unwrap_or(0);
        totals.failed += data["failed"].as_u64().unwrap_or(0);
        let listed = data["errors"].as_array().cloned().unwrap_or_default();
        if !listed.is_empty() {
            let writer = match &mut errors {
                Some(w) => w,
                None => {
                    let mut w = csv::Writer::from_path(&errors_path)
                        .map_err(|err| format!("cannot write {}: {err}", errors_path.display()))?;
                    let mut head = vec!["row".to_owned(), "field".to_owned(), "error".to_owned()];
                    head.extend(header.iter().cloned());
                    w.write_record(&head).map_err(|err| err.to_string())?;
                    errors.insert(w)
                }
            };
            // One line per failed row, its problems joined; the server numbered this
            // chunk's rows from the chunk's own start.
            let mut by_row: std::collections::BTreeMap<u64, (Vec<String>, Vec<String>)> =
                std::collections::BTreeMap::new();
            for error in listed {
                let index = error["row"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(chunk_first_row(format));
                let entry = by_row.entry(index).or_default();
                entry
                    .0
                    .push(error["field"].as_str().unwrap_or_default().to_owned());
                entry
                    .1
                    .push(error["message"].as_str().unwrap_or_default().to_owned());
            }
            for (index, (fields, messages)) in by_row {
                let (row, cells) = chunk
                    .rows
                    .get(usize::try_from(index).unwrap_or(usize::MAX))
                    .cloned()
                    .unwrap_or((0, Vec::new()));
                let mut record = vec![row.to_string(), fields.join("; "), messages.join("; ")];
                record.extend(cells);
                writer
                    .write_record(&record)
                    .map_err(|err| err.to_string())?;
            }
        }
        sent += count;
        progress.advance(count);
        Ok(())
    };
    read_chunks(
        open(&args.file, gzip)?,
        format,
        args.skip_rows,
        args.chunk_rows,
        &mut header,
        &mut on_chunk,
    )?;
    if let Some(mut w) = errors {
        w.flush().map_err(|err| err.to_string())?;
    }
    progress.finish();
    eprintln!(
        "imported {} rows: {} created, {} updated, {} skipped, {} failed",
        totals.rows, totals.created, totals.updated, totals.skipped, totals.failed
    );
    if totals.failed > 0 {
        eprintln!("failed rows, with their errors: {}", errors_path.display());
    }
    Ok(totals)
}

/// The number the server gives the first row of a chunk.
fn chunk_first_row(format: Format) -> u64 {
    match format {
        Format::Csv => 2,
        Format::Json | Format::Ndjson => 1,
    }
}

/// `FILE.errors.csv` beside the file.
fn errors_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".errors.csv");
    file.with_file_name(name)
}

/// Rows in the file (data rows of a CSV, elements of a JSON array, non-blank NDJSON
/// lines), for the progress bar.
fn count_rows(input: Box<dyn Read>, format: Format) -> Result<u64, String> {
    let mut n: u64 = 0;
    let mut columns = None;
    match format {
        Format::Csv => {
            let mut reader = csv_reader(input);
            let mut record = csv::ByteRecord::new();
            while reader
                .read_byte_record(&mut record)
                .map_err(|err| err.to_string())?
            {
                n += 1;
            }
            // The header row is not a row to import.
            n = n.saturating_sub(1);
        }
        Format::Json | Format::Ndjson => {
            read_rows(
                input,
                format,
                &Default::default(),
                1,
                &mut columns,
                &mut |_| {
                    n += 1;
                    true
                },
            )
            .map_err(|err| err.to_string())?;
        }
    }
    Ok(n)
}

/// Reads the file after `skip` rows and hands out chunks of `size` rows, each a
/// complete body: CSV with the header row, JSON and NDJSON as NDJSON.
fn read_chunks(
    input: Box<dyn Read>,
    format: Format,
    skip: u64,
    size: usize,
    header_out: &mut Vec<String>,
    on_chunk: &mut OnChunk,
) -> Result<(), String> {
    // The server lists at most 1000 problems per request, and writes 1000 rows per
    // transaction: chunks of at most 1000 rows keep FILE.errors.csv complete and make a
    // failed request all-or-nothing, so --skip-rows resumes exactly.
    let size = size.clamp(1, MAX_CHUNK_ROWS);
    match format {
        Format::Csv => {
            let mut reader = csv_reader(input);
            let mut records = reader.byte_records();
            let header = match records.next() {
                Some(h) => h.map_err(|err| err.to_string())?,
                None => return Err("the file is empty".into()),
            };
            let header_line = csv_line(&header.iter().collect::<Vec<_>>());
            *header_out = header
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let mut chunk = Chunk {
                body: header_line.clone(),
                rows: Vec::new(),
            };
            for (i, record) in records.enumerate() {
                let record = record.map_err(|err| err.to_string())?;
                if (i as u64) < skip {
                    continue;
                }
                chunk
                    .body
                    .extend(csv_line(&record.iter().collect::<Vec<_>>()));
                let cells = record
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                chunk.rows.push((i as u64 + 2, cells));
                if chunk.rows.len() == size {
                    let full = std::mem::replace(
                        &mut chunk,
                        Chunk {
                            body: header_line.clone(),
                            rows: Vec::new(),
                        },
                    );
                    on_chunk(full, header_out)?;
                }
            }
            if !chunk.rows.is_empty() {
                on_chunk(chunk, header_out)?;
            }
        }
        Format::Json | Format::Ndjson => {
            *header_out = vec!["data".to_owned()];
            let mut chunk = Chunk {
                body: Vec::new(),
                rows: Vec::new(),
            };
            let mut index = 0u64;
            let mut failure: Option<String> = None;
            let mut columns = None;
            read_rows(
                input,
                format,
                &Default::default(),
                1,
                &mut columns,
                &mut |row: Row| {
                    index += 1;
                    if index <= skip {
                        return true;
                    }
                    let text = match &row.object {
                        Ok(value) => value.to_string(),
                        // A line that is not JSON goes as is; the server reports it.
                        Err(err) => format!("\"{}\"", err.message.replace('"', "'")),
                    };
                    chunk.body.extend_from_slice(text.as_bytes());
                    chunk.body.push(b'\n');
                    chunk.rows.push((row.row, vec![text]));
                    if chunk.rows.len() == size {
                        let full = std::mem::replace(
                            &mut chunk,
                            Chunk {
                                body: Vec::new(),
                                rows: Vec::new(),
                            },
                        );
                        if let Err(err) = on_chunk(full, header_out) {
                            failure = Some(err);
                            return false;
                        }
                    }
                    true
                },
            )
            .map_err(|err| err.to_string())?;
            if let Some(err) = failure {
                return Err(err);
            }
            if !chunk.rows.is_empty() {
                on_chunk(chunk, header_out)?;
            }
        }
    }
    Ok(())
}

/// A progress bar on a terminal, plain lines every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn advance(&mut self, rows: u64) {
        self.done += rows;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                self.total.saturating_sub(self.done) as f64 / rate
            )
        } else {
            "?".into()
        };
        format!(
            "{}/{} rows, {rate:.0} rows/s, ETA {eta}",
            self.done, self.total
        )
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => eprintln!("{}", self.line()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_the_errors_file_follow_the_file_name() {
        assert_eq!(
            format_of(Path::new("a.CSV.gz"), None).unwrap(),
            (Format::Csv, true)
        );
        assert_eq!(
            format_of(Path::new("a.txt"), Some("ndjson")).unwrap(),
            (Format::Ndjson, false)
        );
        assert!(format_of(Path::new("a.txt"), None).is_err());
        assert_eq!(
            errors_path(Path::new("/x/a.csv")),
            PathBuf::from("/x/a.csv.errors.csv")
        );
    }

    #[test]
    fn chunks_carry_the_header_and_the_file_row_numbers() {
        let text = "external_id,name\na,\"x, y\"\nb,B\nc,C\n";
        let mut got = Vec::new();
        let mut header = Vec::new();
        read_chunks(
            Box::new(text.as_bytes()),
            Format::Csv,
            1,
            1,
            &mut header,
            &mut |chunk, _| {
                got.push((String::from_utf8(chunk.body).unwrap(), chunk.rows));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.len(), 2, "the first row was skipped");
        assert_eq!(got[0].0, "external_id,name\r\nb,B\r\n");
        assert_eq!(got[0].1[0].0, 3);
        assert_eq!(header, ["external_id", "name"]);
    }
}
