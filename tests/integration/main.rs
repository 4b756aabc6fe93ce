//! Integration tests: each starts the real server on 127.0.0.1:0 with a temporary data
//! dir and talks HTTP to it; `binary` runs the compiled `contactd` for what only the
//! process shows (config precedence, restarts, signals, kill -9, the admin CLI).
//! All areas compile into this one test binary to keep link time down.

#![allow(clippy::unwrap_used)]

mod agents;
mod attributes;
mod auth;
mod backups;
mod binary;
mod bulk;
mod changes;
mod common;
mod compat;
mod contacts;
mod conventions;
mod damage;
mod hardening;
mod idempotency;
mod import_memory;
mod keys;
mod labels;
mod listing;
mod metrics;
mod operations;
mod pabbly;
mod process;
mod properties;
mod search;
mod upsert;
mod webhooks;
