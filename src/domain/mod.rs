//! Pure domain types and validation: no I/O, no storage, no HTTP.
//!
//! Client input arrives as `serde_json::Value` and is parsed here, field by field, so
//! that every problem is reported with its full path (`users[3].email`) instead of the
//! first serde error only.

pub mod agent;
pub mod attr;
pub mod attribute;
pub mod bulk;
pub mod change;
pub mod contact;
pub mod date;
pub mod ids;
pub mod issues;
pub mod key;
pub mod label;
pub mod pabbly;
pub mod phone;
pub mod precondition;
pub mod query;
pub mod search;
pub mod webhook;

pub use agent::{Agent, AgentInput};
pub use attr::AttrValue;
pub use attribute::{AttrType, AttributeDef, Schema, UnknownPolicy, WriteRules};
pub use change::{Change, ChangeKind};
pub use contact::{Contact, ContactInput, Field, Resolved, Source, StripeAccount};
pub use issues::{Issue, Issues};
pub use key::{Access, ApiKey, KeyGrant, RateLimit, Scope};
pub use label::{Label, LabelKind};
