//! The only hyper-aware code: routing, body limits, JSON in and out, and the one
//! mapping of errors to HTTP responses.

pub mod body;
pub mod error;
pub mod router;

pub use error::ApiError;
pub use router::Route;

use bytes::Bytes;
use http_body_util::Full;

/// Every response body is a complete buffer.
pub type Response = hyper::Response<Full<Bytes>>;
