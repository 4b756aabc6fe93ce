//! The only hyper-aware code of the server: the accept loop, routing, body limits,
//! JSON in and out, and the one mapping of errors to HTTP responses. Handlers (`api/`)
//! see a [`Request`] and answer a [`Reply`]; neither names a hyper type.

pub mod body;
pub mod cors;
pub mod error;
mod reply;
mod request;
pub mod router;
pub mod server;
mod service;

pub use error::ApiError;
pub use reply::{Reply, StoredReply};
pub use request::{BodyError, Caller, Headers, Request, RequestBody, Verb};
pub use router::Route;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// A response body: a complete buffer, or a stream (exports).
pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Response = hyper::Response<Body>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A body streamed by a blocking producer through a [`StreamWriter`], chunk by chunk.
/// It ends well-formed only once the writer calls [`StreamWriter::finish_blocking`]; a writer
/// dropped before that (an error, a panic) ends the response abruptly — no terminating
/// chunk — so the client sees a broken transfer, never a short but complete-looking one.
pub fn stream(capacity: usize) -> (StreamWriter, Body) {
    stream_with_stall(capacity, STALL_LIMIT)
}

/// How long a streamed body waits for a client that reads nothing before it gives up:
/// the producer holds a read snapshot (pinning the pages it sees) and a thread.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// [`stream`], giving up on a client that reads nothing for `stall`.
pub fn stream_with_stall(capacity: usize, stall: Duration) -> (StreamWriter, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        StreamWriter { tx, stall },
        StreamBody {
            rx,
            finished: false,
        }
        .boxed(),
    )
}

enum Piece {
    Data(Bytes),
    End,
}

/// The producing side of a [`stream`].
pub struct StreamWriter {
    tx: mpsc::Sender<Piece>,
    stall: Duration,
}

impl StreamWriter {
    /// Sends a chunk, waiting while the client reads slowly; `false` once the client
    /// is gone, or has read nothing for the stall limit. Called from a blocking thread
    /// of the runtime (`spawn_blocking`).
    pub fn send_blocking(&self, bytes: Bytes) -> bool {
        self.send(Piece::Data(bytes))
    }

    /// Ends the body well-formed.
    pub fn finish_blocking(self) {
        self.send(Piece::End);
    }

    fn send(&self, piece: Piece) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .block_on(tokio::time::timeout(self.stall, self.tx.send(piece)))
                .is_ok_and(|sent| sent.is_ok()),
            Err(_) => self.tx.blocking_send(piece).is_ok(),
        }
    }
}

struct StreamBody {
    rx: mpsc::Receiver<Piece>,
    finished: bool,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|piece| match piece {
            Some(Piece::Data(bytes)) => Some(Ok(Frame::data(bytes))),
            Some(Piece::End) => {
                self.finished = true;
                None
            }
            None => Some(Err(std::io::Error::other(
                "the stream stopped before its end",
            ))),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_gives_up_on_a_client_that_reads_nothing() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (out, body) = stream_with_stall(1, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let sent = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                // The first chunk fills the channel; nobody reads the second.
                let first = out.send_blocking(Bytes::from_static(b"a"));
                (first, out.send_blocking(Bytes::from_static(b"b")))
            })
            .await
            .unwrap()
        });
        assert_eq!(sent, (true, false));
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(body);
    }
}
