//! `GET /api/v1/backup` (extension, admin only): a backup of the whole store, written
//! from one read snapshot as it streams (see `store::backup`). `contactd backup` asks
//! for it while the server runs.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::{require_admin, App, Ctx};
use crate::clock::unix_now_ms;
use crate::http::{self, ApiError, Reply, StreamWriter};

pub async fn download(app: &App, ctx: &Ctx) -> Result<Reply, ApiError> {
    require_admin(&ctx.key)?;
    let slot = Arc::clone(&app.backup_slot)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Unavailable(
                "A backup is being written already; try again when it ends.".into(),
            )
        })?;
    let store = app.store();
    let (out, body) = http::stream(4);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut sink = Sink(out);
        match store.backup(&mut sink) {
            Ok(summary) => {
                tracing::info!(
                    contacts = summary.contacts,
                    bytes = summary.bytes,
                    "backup sent"
                );
                sink.0.finish_blocking();
            }
            // Dropping the stream unfinished breaks the response off: the client must
            // not take a partial backup for a whole one (its checksum would say so too).
            Err(err) => tracing::error!(error = %err, "the backup stopped"),
        }
    });
    let name = crate::backups::file_name(unix_now_ms());
    Ok(Reply::stream("application/octet-stream", body)
        .header(
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .header("cache-control", "no-store"))
}

/// The backup's bytes, as chunks of the response.
struct Sink(StreamWriter);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.send_blocking(Bytes::copy_from_slice(buf)) {
            Ok(buf.len())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            ))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
