//! `contactd import` and `contactd export`: clients of a running server over HTTP (a
//! minimal hyper client: one connection, one request at a time). Import lives in
//! `import.rs`; this file holds the connection, requests and the export.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::domain::bulk::Format;

mod import;

pub use import::{import, ImportArgs, MAX_CHUNK_ROWS};

/// Exit code when the import or export itself failed (connection, HTTP error, file).
const EXIT_ERROR: u8 = 2;

/// Where the server is and how to sign in.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// Path prefix before `/api/v1` (usually empty).
    pub base: String,
    pub key: String,
}

impl Target {
    /// From `http://host:port[/base]` and an API key.
    pub fn parse(url: &str, key: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("the server URL must start with http:// (got \"{url}\"); put TLS in a proxy in front")
        })?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("the server URL \"{url}\" has no host"));
        }
        if key.trim().is_empty() {
            return Err("an API key is needed: --key or CONTACTD_KEY".into());
        }
        Ok(Self {
            authority: authority.to_owned(),
            base: base.to_owned(),
            key: key.trim().to_owned(),
        })
    }

    fn contacts_path(&self, agent: &str) -> String {
        let agent: String = percent_encoding::utf8_percent_encode(agent, SEGMENT).collect();
        format!("{}/api/v1/chatbots/{agent}/contacts", self.base)
    }
}

/// Characters escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", target.authority))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("cannot talk HTTP to {}: {err}", target.authority))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(
    target: &Target,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, &target.authority)
        .header(AUTHORIZATION, format!("Bearer {}", target.key));
    if let Some(ct) = content_type {
        builder = builder.header(CONTENT_TYPE, ct);
    }
    builder
        .body(Full::new(body))
        .map_err(|err| format!("cannot build the request: {err}"))
}

/// Sends one request; the answer's head, its body still to read.
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    sender
        .ready()
        .await
        .map_err(|err| format!("the connection closed: {err}"))?;
    sender
        .send_request(req)
        .await
        .map_err(|err| format!("the request failed: {err}"))
}

/// Sends one request and reads the whole answer.
async fn send(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let response = exchange(sender, req).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("reading the answer failed: {err}"))?
        .to_bytes();
    Ok((status, body))
}

/// The message of an error answer.
fn describe_error(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["message"].as_str())
        .unwrap_or("no message");
    let issues = parsed
        .as_ref()
        .and_then(|v| v["issues"].as_array())
        .map(|list| {
            list.iter()
                .map(|i| {
                    format!(
                        "{}: {}",
                        i["field"].as_str().unwrap_or("?"),
                        i["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!("the server answered {status}: {message}{issues}")
}

/// `GET path` on its own connection: the body of a 200 answer, still to read; any
/// other answer is its error. `what` names the download in messages.
async fn download(
    target: &Target,
    path: &str,
    what: &str,
) -> Result<hyper::body::Incoming, String> {
    let mut sender = connect(target).await?;
    let req = request(target, Method::GET, path, None, Bytes::new())?;
    // A download that fails part-way closes the connection; when that happens before
    // the server's answer went out, no answer arrives at all.
    let response = exchange(&mut sender, req)
        .await
        .map_err(|err| format!("the {what} broke off before it began: {err}"))?;
    let status = response.status();
    let body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        return Err(describe_error(status, &bytes));
    }
    Ok(body)
}

/// `contactd backup` through a running server: `GET /api/v1/backup` into `output`,
/// checked whole before it is renamed into place.
pub fn backup(rt: &Runtime, target: &Target, output: &std::path::Path) -> ExitCode {
    match rt.block_on(run_backup(target, output)) {
        Ok(summary) => {
            crate::cli::data::print_backup("backed up", &summary, output);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("contactd backup: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run_backup(
    target: &Target,
    output: &std::path::Path,
) -> Result<crate::store::backup::BackupSummary, String> {
    let path = format!("{}/api/v1/backup", target.base);
    let mut body = download(target, &path, "backup").await?;
    let partial = crate::backups::partial_path(output);
    let result = async {
        // A backup holds every contact and key digest: only its owner may read it.
        let file = crate::store::data_dir::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|err| format!("cannot create {}: {err}", partial.display()))?;
        let mut out = std::io::BufWriter::new(file);
        copy_body(&mut body, &mut out).await?;
        out.into_inner()
            .map_err(|err| format!("cannot write {}: {err}", partial.display()))?
            .sync_all()
            .map_err(|err| format!("cannot write {}: {err}", partial.display()))?;
        let summary = crate::store::backup::verify(&partial).map_err(|err| err.to_string())?;
        std::fs::rename(&partial, output)
            .map_err(|err| format!("cannot move the backup to {}: {err}", output.display()))?;
        Ok(summary)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// What `contactd export` was asked.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub agent: String,
    pub format: String,
    /// Extra list parameters (`q=...&filter[...]=...&sort=...`).
    pub query: Option<String>,
    pub output: Option<PathBuf>,
    pub target: Target,
}

pub fn export(rt: &Runtime, args: &ExportArgs) -> ExitCode {
    match rt.block_on(run_export(args)) {
        Ok(bytes) => {
            if let Some(path) = &args.output {
                eprintln!("exported {bytes} bytes to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("contactd export: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run_export(args: &ExportArgs) -> Result<u64, String> {
    let format = Format::from_name(&args.format)
        .ok_or_else(|| format!("unknown format \"{}\": csv, json or ndjson", args.format))?;
    let mut path = format!(
        "{}/export?format={}",
        args.target.contacts_path(&args.agent),
        format.name()
    );
    if let Some(q) = args.query.as_deref().filter(|q| !q.is_empty()) {
        path.push('&');
        path.push_str(q.trim_start_matches('?'));
    }
    let mut body = download(&args.target, &path, "export").await?;
    match &args.output {
        None => {
            copy_body(
                &mut body,
                &mut std::io::BufWriter::new(std::io::stdout().lock()),
            )
            .await
        }
        Some(path) => {
            // Written beside the output and renamed into place once complete, so a
            // broken export never leaves a file that looks whole.
            let partial = crate::backups::partial_path(path);
            let result = async {
                let file = File::create(&partial)
                    .map_err(|err| format!("cannot create {}: {err}", partial.display()))?;
                let written = copy_body(&mut body, &mut std::io::BufWriter::new(file)).await?;
                std::fs::rename(&partial, path).map_err(|err| {
                    format!("cannot move the export to {}: {err}", path.display())
                })?;
                Ok(written)
            }
            .await;
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            result
        }
    }
}

/// Where an export to `path` is written until it is complete.
/// Copies the answer's body to `out`; the bytes copied. A body that breaks off (the
/// server stopped an export or a backup part-way) is an error.
async fn copy_body(body: &mut hyper::body::Incoming, out: &mut impl Write) -> Result<u64, String> {
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|err| format!("the answer broke off after {written} bytes: {err}"))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .map_err(|err| format!("cannot write the file: {err}"))?;
            written += data.len() as u64;
        }
    }
    out.flush()
        .map_err(|err| format!("cannot write the file: {err}"))?;
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read() {
        let t = Target::parse("http://127.0.0.1:8080/base/", "k").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base.as_str()),
            ("127.0.0.1:8080", "/base")
        );
        assert_eq!(
            t.contacts_path("a b"),
            "/base/api/v1/chatbots/a%20b/contacts"
        );
        assert!(Target::parse("https://x", "k").is_err());
        assert!(Target::parse("http://x", " ").is_err());
    }
}
