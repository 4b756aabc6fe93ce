//! Configuration: defaults < `config.toml` < `CONTACTD_*` environment < flags.
//!
//! Every setting has one name in three spellings: config key `section.key`, environment
//! variable `CONTACTD_SECTION_KEY`, flag `--section-key`. [`resolve`] is a pure function
//! of the three layers, so precedence is tested without touching the process.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::key::{MAX_RATE_REQUESTS, MAX_RATE_SECS};
use crate::domain::phone::Region;
use crate::domain::{RateLimit, UnknownPolicy};

/// One setting: its key, its default (as text), and what it means.
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting, in the order `print-config` and the README show them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "listen",
        default: "127.0.0.1:8080",
        help: "address and port to listen on (port 0 picks a free one)",
    },
    Setting {
        key: "data_dir",
        default: "./data",
        help: "directory holding the database file contactd.redb",
    },
    Setting {
        key: "cache_mb",
        default: "112",
        help: "most MiB of database pages kept in memory (read from disk when evicted)",
    },
    Setting {
        key: "max_body_bytes",
        default: "8388608",
        help: "largest accepted JSON request body, in bytes (413 beyond)",
    },
    Setting {
        key: "max_connections",
        default: "1024",
        help: "most open client connections; further ones wait to be accepted",
    },
    Setting {
        key: "header_read_timeout_secs",
        default: "30",
        help: "time a client has to send the request headers; also the keep-alive idle timeout",
    },
    Setting {
        key: "request_timeout_secs",
        default: "30",
        help: "time one request may take, body upload included (503 beyond)",
    },
    Setting {
        key: "shutdown_grace_secs",
        default: "10",
        help: "on SIGINT/SIGTERM, how long in-flight requests may take to finish",
    },
    Setting {
        key: "log_level",
        default: "info",
        help: "error, warn, info, debug or trace",
    },
    Setting {
        key: "log_format",
        default: "text",
        help: "text (one readable line per event) or json (one JSON object per line)",
    },
    Setting {
        key: "custom_attributes.unknown",
        default: "define",
        help: "custom attribute keys without a definition: define, strip or reject",
    },
    Setting {
        key: "custom_attributes.max_per_agent",
        default: "1000",
        help: "most custom attribute definitions one agent may have (400 beyond)",
    },
    Setting {
        key: "tags.unknown",
        default: "define",
        help: "tags a contact write names that the agent has not defined: define, strip or reject",
    },
    Setting {
        key: "phone.default_region",
        default: "",
        help: "region (ISO 3166 code, e.g. US) whose national numbers a phone number without + or 00 is read as; empty: such digits are read as international, country code first",
    },
    Setting {
        key: "pabbly.agent",
        default: "default",
        help: "the agent Pabbly Chatflow requests (/api/v1/contacts) with an admin key work on",
    },
    Setting {
        key: "cors.allowed_origins",
        default: "",
        help: "origins (comma-separated, e.g. https://app.example.com, or *) whose browser pages may call the API; empty: none",
    },
    Setting {
        key: "rate_limit.requests",
        default: "0",
        help: "requests a key may make per rate_limit.per_secs (a token bucket; 0: no limit); a key created with its own rate_limit uses that",
    },
    Setting {
        key: "rate_limit.per_secs",
        default: "10",
        help: "seconds in which a key's rate_limit.requests refill",
    },
    Setting {
        key: "rate_limit.auth_failures_per_min",
        default: "20",
        help: "failed authentications per minute a client IP may make before its every request gets 429 (0: no limit)",
    },
    Setting {
        key: "rate_limit.client_ip_header",
        default: "",
        help: "header a reverse proxy puts the client's address in (e.g. X-Forwarded-For: its last address counts); empty: the connection's address",
    },
    Setting {
        key: "metrics.listen",
        default: "",
        help: "address serving GET /metrics without a key, for a Prometheus scraper (e.g. 127.0.0.1:9090); empty: only the main port serves it, to admin keys",
    },
    Setting {
        key: "backup.every_hours",
        default: "0",
        help: "hours between scheduled online backups into backup.dir (0: none; at most 87600)",
    },
    Setting {
        key: "backup.keep",
        default: "7",
        help: "scheduled backups kept in backup.dir; older ones are deleted",
    },
    Setting {
        key: "backup.dir",
        default: "",
        help: "directory of scheduled backups; empty: backups/ in the data dir",
    },
    Setting {
        key: "changes.retention_days",
        default: "7",
        help: "days each agent's change feed keeps a change (fractions allowed; at most 3650)",
    },
    Setting {
        key: "webhooks.batch_max",
        default: "100",
        help: "most events in one webhook delivery (1 to 10000)",
    },
    Setting {
        key: "webhooks.max_age_hours",
        default: "72",
        help: "hours a delivery may keep failing before its endpoint is deactivated (fractions allowed)",
    },
    Setting {
        key: "webhooks.allow_private",
        default: "false",
        help: "whether endpoints may be loopback, private or link-local addresses",
    },
    Setting {
        key: "webhooks.ca_file",
        default: "",
        help: "PEM file of CA certificates https endpoints may also chain to (a private CA)",
    },
    Setting {
        key: "wal.checkpoint_mb",
        default: "64",
        help:
            "MiB of write-ahead log after which a checkpoint writes the data file (0: every commit)",
    },
    Setting {
        key: "wal.checkpoint_secs",
        default: "30",
        help: "seconds after which a checkpoint writes the data file, if anything was logged",
    },
    Setting {
        key: "import.max_bytes",
        default: "1073741824",
        help: "largest import upload in bytes, and largest after gunzip (413 beyond)",
    },
    Setting {
        key: "import.timeout_secs",
        default: "3600",
        help: "time one import request may take, instead of request_timeout_secs",
    },
];

/// Longest `changes.retention_days`.
const MAX_RETENTION_DAYS: f64 = 3650.0;

/// Largest `backup.every_hours`.
const MAX_BACKUP_HOURS: u64 = 87_600;

/// The environment variable that carries the first-run admin key (never in a file).
pub const ADMIN_KEY_ENV: &str = "CONTACTD_ADMIN_KEY";

/// Resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Most MiB of database pages the store keeps in memory.
    pub cache_mb: u64,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_level: String,
    /// `text` or `json` (`log_format`).
    pub log_format: String,
    /// What writes do with custom attribute keys that have no definition.
    pub unknown_attributes: UnknownPolicy,
    /// Most custom attribute definitions per agent.
    pub max_attributes_per_agent: usize,
    /// What writes do with tags the agent has not defined.
    pub unknown_tags: UnknownPolicy,
    /// The region national phone numbers are read in, if any.
    pub phone_region: Option<Region>,
    /// The agent of Pabbly requests made with an admin key.
    pub pabbly_agent: String,
    /// Origins whose browser pages may call the API (`cors.allowed_origins`; `*`: any).
    pub cors_origins: Vec<String>,
    /// Every key's request budget, unless the key has its own (`rate_limit.requests`
    /// per `rate_limit.per_secs`; `None`: none).
    pub rate_limit: Option<RateLimit>,
    /// Failed authentications per minute per client IP (`None`: unlimited).
    pub auth_failures_per_min: Option<u32>,
    /// The header that names the client's address behind a reverse proxy.
    pub client_ip_header: Option<String>,
    /// Where `/metrics` is also served without a key (`metrics.listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Time between scheduled backups (`None`: none).
    pub backup_every: Option<Duration>,
    /// How long a change stays in its agent's change feed (`changes.retention_days`).
    pub changes_retention: Duration,
    /// Most events in one webhook delivery (`webhooks.batch_max`).
    pub webhook_batch_max: usize,
    /// How long a delivery may fail before its endpoint is deactivated.
    pub webhook_max_age: Duration,
    /// Whether endpoints may be private addresses (`webhooks.allow_private`).
    pub webhook_allow_private: bool,
    /// Extra CA certificates for https endpoints (`webhooks.ca_file`).
    pub webhook_ca_file: Option<PathBuf>,
    /// Scheduled backups kept.
    pub backup_keep: usize,
    /// Directory of scheduled backups.
    pub backup_dir: PathBuf,
    /// MiB of write-ahead log that makes a checkpoint due.
    pub checkpoint_mb: u64,
    /// Time after which a checkpoint is due, if anything was logged.
    pub checkpoint_every: Duration,
    /// Admin key to create on first run instead of a generated one.
    pub admin_key: Option<String>,
    /// Largest import upload (and its size after gunzip).
    pub import_max_bytes: u64,
    /// Time one import request may take.
    pub import_timeout: Duration,
}

impl Config {
    /// `cache_mb` in bytes (saturating on a 32-bit target).
    pub fn cache_bytes(&self) -> usize {
        usize::try_from(self.cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }

    /// How the store is opened.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            phone: crate::domain::phone::PhoneRules {
                default_region: self.phone_region,
            },
            cache_bytes: self.cache_bytes(),
            checkpoint_bytes: self.checkpoint_mb.saturating_mul(1 << 20),
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// The environment variable for a config key.
pub fn env_name(key: &str) -> String {
    format!("CONTACTD_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The command-line flag for a config key.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace(['.', '_'], "-"))
}

/// A setting that could not be used, with where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(
                f,
                "invalid configuration ({}): {}",
                self.origin, self.message
            )
        } else {
            write!(
                f,
                "invalid configuration `{}` (from {}): {}",
                self.key, self.origin, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// The three layers, already read.
#[derive(Debug, Default)]
pub struct Layers {
    /// `(file name, contents)` of the config file, if there is one.
    pub file: Option<(String, String)>,
    /// The process environment (only `CONTACTD_*` names are looked at).
    pub env: Vec<(String, String)>,
    /// `(config key, value)` for each flag given on the command line.
    pub flags: Vec<(String, String)>,
}

/// Puts the layers over the defaults, in order, and parses every setting.
pub fn resolve(layers: &Layers) -> Result<Config, ConfigError> {
    let mut raw: BTreeMap<&'static str, (String, String)> = SETTINGS
        .iter()
        .map(|s| (s.key, (s.default.to_owned(), "default".to_owned())))
        .collect();
    if let Some((name, text)) = &layers.file {
        for (key, value) in flatten_toml(name, text)? {
            let slot = lookup(&mut raw, &key).ok_or_else(|| ConfigError {
                key: key.clone(),
                origin: name.clone(),
                message: "unknown setting".into(),
            })?;
            *slot = (value, name.clone());
        }
    }
    let mut admin_key = None;
    for (name, value) in &layers.env {
        if name == ADMIN_KEY_ENV {
            admin_key = Some(value.clone());
        } else if let Some(setting) = SETTINGS.iter().find(|s| env_name(s.key) == *name) {
            raw.insert(setting.key, (value.clone(), name.clone()));
        }
    }
    for (key, value) in &layers.flags {
        let slot = lookup(&mut raw, key).ok_or_else(|| ConfigError {
            key: key.clone(),
            origin: "command line".into(),
            message: "unknown setting".into(),
        })?;
        *slot = (value.clone(), flag_name(key));
    }
    let get = |key: &str| -> (&str, &str) {
        raw.get(key)
            .map_or(("", ""), |(v, o)| (v.as_str(), o.as_str()))
    };
    let fail = |key: &str, message: String| ConfigError {
        key: key.to_owned(),
        origin: get(key).1.to_owned(),
        message,
    };
    let number = |key: &str, min: u64| -> Result<u64, ConfigError> {
        let text = get(key).0.trim();
        match text.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(fail(
                key,
                format!("expected a whole number of at least {min}, got \"{text}\""),
            )),
        }
    };
    let listen = get("listen").0.trim().parse::<SocketAddr>().map_err(|_| {
        fail(
            "listen",
            format!(
                "expected an address such as 127.0.0.1:8080, got \"{}\"",
                get("listen").0
            ),
        )
    })?;
    let data_dir = get("data_dir").0;
    if data_dir.trim().is_empty() {
        return Err(fail("data_dir", "must not be empty".into()));
    }
    if let Some(key) = &admin_key {
        crate::auth::check_chosen_key(key).map_err(|message| ConfigError {
            key: "admin key".into(),
            origin: ADMIN_KEY_ENV.into(),
            message,
        })?;
    }
    let log_format = get("log_format").0.trim().to_ascii_lowercase();
    if !["text", "json"].contains(&log_format.as_str()) {
        return Err(fail(
            "log_format",
            format!("expected text or json, got \"{log_format}\""),
        ));
    }
    let log_level = get("log_level").0.trim().to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
        return Err(fail(
            "log_level",
            format!("expected error, warn, info, debug or trace, got \"{log_level}\""),
        ));
    }
    let unknown = get("custom_attributes.unknown").0.trim();
    let unknown_attributes = UnknownPolicy::parse(unknown).ok_or_else(|| {
        fail(
            "custom_attributes.unknown",
            format!("expected define, strip or reject, got \"{unknown}\""),
        )
    })?;
    let unknown = get("tags.unknown").0.trim();
    let unknown_tags = UnknownPolicy::parse(unknown).ok_or_else(|| {
        fail(
            "tags.unknown",
            format!("expected define, strip or reject, got \"{unknown}\""),
        )
    })?;
    let region = get("phone.default_region").0.trim();
    let phone_region = match region {
        "" => None,
        code => Some(
            code.parse::<Region>()
                .map_err(|msg| fail("phone.default_region", msg))?,
        ),
    };
    let cors_origins: Vec<String> = get("cors.allowed_origins")
        .0
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for origin in &cors_origins {
        crate::http::cors::check_origin(origin).map_err(|msg| fail("cors.allowed_origins", msg))?;
    }
    let per_secs = number("rate_limit.per_secs", 1)?;
    let rate_limit = match number("rate_limit.requests", 0)? {
        0 => None,
        requests => Some(RateLimit {
            requests: u32::try_from(requests)
                .ok()
                .filter(|&n| n <= MAX_RATE_REQUESTS)
                .ok_or_else(|| {
                    fail(
                        "rate_limit.requests",
                        format!("must be at most {MAX_RATE_REQUESTS}"),
                    )
                })?,
            per_secs: u32::try_from(per_secs)
                .ok()
                .filter(|&n| n <= MAX_RATE_SECS)
                .ok_or_else(|| {
                    fail(
                        "rate_limit.per_secs",
                        format!("must be at most {MAX_RATE_SECS}"),
                    )
                })?,
        }),
    };
    let auth_failures_per_min = match number("rate_limit.auth_failures_per_min", 0)? {
        0 => None,
        n => Some(
            u32::try_from(n)
                .map_err(|_| fail("rate_limit.auth_failures_per_min", "too large".into()))?,
        ),
    };
    let client_ip_header = match get("rate_limit.client_ip_header").0.trim() {
        "" => None,
        name => {
            hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                fail(
                    "rate_limit.client_ip_header",
                    format!("\"{name}\" is not a header name"),
                )
            })?;
            Some(name.to_ascii_lowercase())
        }
    };
    let metrics_listen = match get("metrics.listen").0.trim() {
        "" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            fail(
                "metrics.listen",
                format!("expected an address such as 127.0.0.1:9090, got \"{text}\""),
            )
        })?),
    };
    let backup_every = match number("backup.every_hours", 0)? {
        0 => None,
        hours if hours > MAX_BACKUP_HOURS => {
            return Err(fail(
                "backup.every_hours",
                format!("must be at most {MAX_BACKUP_HOURS} (ten years)"),
            ))
        }
        hours => Some(Duration::from_secs(hours * 3600)),
    };
    let backup_dir = match get("backup.dir").0.trim() {
        "" => PathBuf::from(data_dir).join("backups"),
        dir => PathBuf::from(dir),
    };
    let retention = get("changes.retention_days").0.trim();
    let changes_retention = match retention.parse::<f64>() {
        Ok(days) if days > 0.0 && days <= MAX_RETENTION_DAYS => {
            Duration::from_secs_f64(days * 86_400.0).max(Duration::from_secs(1))
        }
        _ => {
            return Err(fail(
                "changes.retention_days",
                format!("expected a number of days above 0 and at most {MAX_RETENTION_DAYS}, got \"{retention}\""),
            ))
        }
    };
    let batch_max = number("webhooks.batch_max", 1)?;
    if batch_max > 10_000 {
        return Err(fail("webhooks.batch_max", "must be at most 10000".into()));
    }
    let max_age = get("webhooks.max_age_hours").0.trim();
    let webhook_max_age = match max_age.parse::<f64>() {
        Ok(hours) if hours > 0.0 && hours <= 87_600.0 => Duration::from_secs_f64(hours * 3600.0),
        _ => {
            return Err(fail(
                "webhooks.max_age_hours",
                format!("expected a number of hours above 0 and at most 87600, got \"{max_age}\""),
            ))
        }
    };
    let allow = get("webhooks.allow_private").0.trim();
    let webhook_allow_private = match allow {
        "true" => true,
        "false" => false,
        other => {
            return Err(fail(
                "webhooks.allow_private",
                format!("expected true or false, got \"{other}\""),
            ))
        }
    };
    let webhook_ca_file = match get("webhooks.ca_file").0.trim() {
        "" => None,
        path => Some(PathBuf::from(path)),
    };
    let pabbly_agent = get("pabbly.agent").0.trim().to_owned();
    crate::domain::ids::check_agent_id(&pabbly_agent)
        .map_err(|msg| fail("pabbly.agent", msg.into()))?;
    Ok(Config {
        listen,
        unknown_attributes,
        unknown_tags,
        phone_region,
        pabbly_agent,
        cors_origins,
        rate_limit,
        auth_failures_per_min,
        client_ip_header,
        metrics_listen,
        backup_every,
        backup_keep: usize::try_from(number("backup.keep", 1)?)
            .map_err(|_| fail("backup.keep", "too large".into()))?,
        backup_dir,
        changes_retention,
        webhook_batch_max: batch_max as usize,
        webhook_max_age,
        webhook_allow_private,
        webhook_ca_file,
        data_dir: PathBuf::from(data_dir),
        cache_mb: number("cache_mb", 1)?,
        max_body_bytes: number("max_body_bytes", 1)?,
        max_connections: usize::try_from(number("max_connections", 1)?)
            .map_err(|_| fail("max_connections", "too large".into()))?,
        header_read_timeout: Duration::from_secs(number("header_read_timeout_secs", 1)?),
        request_timeout: Duration::from_secs(number("request_timeout_secs", 1)?),
        shutdown_grace: Duration::from_secs(number("shutdown_grace_secs", 0)?),
        log_level,
        log_format,
        max_attributes_per_agent: usize::try_from(number("custom_attributes.max_per_agent", 1)?)
            .map_err(|_| fail("custom_attributes.max_per_agent", "too large".into()))?,
        admin_key,
        checkpoint_mb: number("wal.checkpoint_mb", 0)?,
        checkpoint_every: Duration::from_secs(number("wal.checkpoint_secs", 1)?),
        import_max_bytes: number("import.max_bytes", 1)?,
        import_timeout: Duration::from_secs(number("import.timeout_secs", 1)?),
    })
}

fn lookup<'a>(
    raw: &'a mut BTreeMap<&'static str, (String, String)>,
    key: &str,
) -> Option<&'a mut (String, String)> {
    raw.iter_mut().find(|(k, _)| **k == key).map(|(_, v)| v)
}

/// Reads a TOML file into dotted keys and scalar values as text.
fn flatten_toml(name: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| ConfigError {
        key: String::new(),
        origin: name.to_owned(),
        message: err.message().to_owned(),
    })?;
    let mut out = Vec::new();
    flatten_into(&table, "", name, &mut out)?;
    Ok(out)
}

fn flatten_into(
    table: &toml::Table,
    prefix: &str,
    name: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let text = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Table(t) => {
                flatten_into(t, &key, name, out)?;
                continue;
            }
            _ => {
                return Err(ConfigError {
                    key,
                    origin: name.to_owned(),
                    message: "expected a string, number or boolean".into(),
                })
            }
        };
        out.push((key, text));
    }
    Ok(())
}

/// The resolved configuration as TOML, for `contactd print-config`.
pub fn to_toml(config: &Config) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut out = String::new();
    let lines = [
        ("listen", quote(&config.listen.to_string())),
        ("data_dir", quote(&config.data_dir.display().to_string())),
        ("cache_mb", config.cache_mb.to_string()),
        ("max_body_bytes", config.max_body_bytes.to_string()),
        ("max_connections", config.max_connections.to_string()),
        (
            "header_read_timeout_secs",
            config.header_read_timeout.as_secs().to_string(),
        ),
        (
            "request_timeout_secs",
            config.request_timeout.as_secs().to_string(),
        ),
        (
            "shutdown_grace_secs",
            config.shutdown_grace.as_secs().to_string(),
        ),
        ("log_level", quote(&config.log_level)),
        ("log_format", quote(&config.log_format)),
    ];
    for (key, value) in lines {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out.push_str("\n[custom_attributes]\n");
    out.push_str(&format!(
        "unknown = {}\n",
        quote(config.unknown_attributes.as_str())
    ));
    out.push_str(&format!(
        "max_per_agent = {}\n",
        config.max_attributes_per_agent
    ));
    out.push_str("\n[tags]\n");
    out.push_str(&format!(
        "unknown = {}\n",
        quote(config.unknown_tags.as_str())
    ));
    out.push_str("\n[phone]\n");
    out.push_str(&format!(
        "default_region = {}\n",
        quote(
            &config
                .phone_region
                .as_ref()
                .map(Region::code)
                .unwrap_or_default()
        )
    ));
    out.push_str("\n[pabbly]\n");
    out.push_str(&format!("agent = {}\n", quote(&config.pabbly_agent)));
    out.push_str("\n[cors]\n");
    out.push_str(&format!(
        "allowed_origins = {}\n",
        quote(&config.cors_origins.join(","))
    ));
    out.push_str("\n[rate_limit]\n");
    let (requests, per_secs) = config
        .rate_limit
        .map_or((0, 10), |r| (r.requests, r.per_secs));
    out.push_str(&format!("requests = {requests}\n"));
    out.push_str(&format!("per_secs = {per_secs}\n"));
    out.push_str(&format!(
        "auth_failures_per_min = {}\n",
        config.auth_failures_per_min.unwrap_or(0)
    ));
    out.push_str(&format!(
        "client_ip_header = {}\n",
        quote(config.client_ip_header.as_deref().unwrap_or_default())
    ));
    out.push_str("\n[metrics]\n");
    out.push_str(&format!(
        "listen = {}\n",
        quote(
            &config
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default()
        )
    ));
    out.push_str("\n[backup]\n");
    out.push_str(&format!(
        "every_hours = {}\n",
        config.backup_every.map_or(0, |d| d.as_secs() / 3600)
    ));
    out.push_str(&format!("keep = {}\n", config.backup_keep));
    out.push_str(&format!(
        "dir = {}\n",
        quote(&config.backup_dir.display().to_string())
    ));
    out.push_str("\n[changes]\n");
    out.push_str(&format!(
        "retention_days = {}\n",
        config.changes_retention.as_secs_f64() / 86_400.0
    ));
    out.push_str("\n[webhooks]\n");
    out.push_str(&format!("batch_max = {}\n", config.webhook_batch_max));
    out.push_str(&format!(
        "max_age_hours = {}\n",
        config.webhook_max_age.as_secs_f64() / 3600.0
    ));
    out.push_str(&format!(
        "allow_private = {}\n",
        config.webhook_allow_private
    ));
    out.push_str(&format!(
        "ca_file = {}\n",
        quote(
            &config
                .webhook_ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    ));
    out.push_str("\n[wal]\n");
    out.push_str(&format!("checkpoint_mb = {}\n", config.checkpoint_mb));
    out.push_str(&format!(
        "checkpoint_secs = {}\n",
        config.checkpoint_every.as_secs()
    ));
    out.push_str("\n[import]\n");
    out.push_str(&format!("max_bytes = {}\n", config.import_max_bytes));
    out.push_str(&format!(
        "timeout_secs = {}\n",
        config.import_timeout.as_secs()
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layers(file: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Layers {
        Layers {
            file: Some(("config.toml".into(), file.into())),
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            flags: flags
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn defaults_apply_without_sources() {
        let config = resolve(&Layers::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.max_body_bytes, 8 * 1024 * 1024);
        // The store's own default, which tests and `RedbStore::open` use.
        assert_eq!(config.cache_bytes(), crate::store::DEFAULT_CACHE);
    }

    #[test]
    fn the_cache_size_is_a_positive_number_of_mib() {
        let config = resolve(&layers("cache_mb = 64", &[], &[])).unwrap();
        assert_eq!(config.cache_bytes(), 64 << 20);
        let err = resolve(&layers("cache_mb = 0", &[], &[])).unwrap_err();
        assert_eq!(err.key, "cache_mb");
        assert!(err.message.contains("at least 1"), "{}", err.message);
        let err = resolve(&layers("", &[("CONTACTD_CACHE_MB", "lots")], &[])).unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.origin.as_str()),
            ("cache_mb", "CONTACTD_CACHE_MB")
        );
    }

    #[test]
    fn later_sources_win() {
        let s = layers(
            "listen = \"127.0.0.1:1\"\nmax_connections = 5\nlog_level = \"warn\"",
            &[
                ("CONTACTD_LISTEN", "127.0.0.1:2"),
                ("CONTACTD_LOG_LEVEL", "debug"),
            ],
            &[("listen", "127.0.0.1:3")],
        );
        let config = resolve(&s).unwrap();
        assert_eq!(config.listen.port(), 3);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.max_connections, 5);
    }

    #[test]
    fn section_keys_layer_like_top_level_ones() {
        let s = layers("[custom_attributes]\nunknown = \"strip\"", &[], &[]);
        assert_eq!(
            resolve(&s).unwrap().unknown_attributes,
            UnknownPolicy::Strip
        );
        let s = layers(
            "[custom_attributes]\nunknown = \"strip\"",
            &[("CONTACTD_CUSTOM_ATTRIBUTES_UNKNOWN", "reject")],
            &[],
        );
        assert_eq!(
            resolve(&s).unwrap().unknown_attributes,
            UnknownPolicy::Reject
        );
        let s = layers("", &[], &[("custom_attributes.unknown", "define")]);
        assert_eq!(
            resolve(&s).unwrap().unknown_attributes,
            UnknownPolicy::Define
        );
        let err =
            resolve(&layers("[custom_attributes]\nunknown = \"keep\"", &[], &[])).unwrap_err();
        assert_eq!(err.key, "custom_attributes.unknown");
        let err = resolve(&layers("[custom_attributes]\nother = 1", &[], &[])).unwrap_err();
        assert_eq!(err.key, "custom_attributes.other");
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let err = resolve(&layers("", &[("CONTACTD_MAX_BODY_BYTES", "lots")], &[])).unwrap_err();
        assert_eq!(err.key, "max_body_bytes");
        assert_eq!(err.origin, "CONTACTD_MAX_BODY_BYTES");
        let err = resolve(&layers("nope = 1", &[], &[])).unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            ("nope", "unknown setting")
        );
        let err = resolve(&layers("listen = [1]", &[], &[])).unwrap_err();
        assert_eq!(err.key, "listen");
    }

    #[test]
    fn names_follow_one_rule() {
        assert_eq!(
            env_name("custom_attributes.unknown"),
            "CONTACTD_CUSTOM_ATTRIBUTES_UNKNOWN"
        );
        assert_eq!(
            flag_name("custom_attributes.unknown"),
            "--custom-attributes-unknown"
        );
    }

    #[test]
    fn shipped_config_toml_is_exactly_the_defaults() {
        let shipped = Layers {
            file: Some(("config.toml".into(), include_str!("../config.toml").into())),
            ..Layers::default()
        };
        assert_eq!(
            resolve(&shipped).unwrap(),
            resolve(&Layers::default()).unwrap()
        );
        for setting in SETTINGS {
            // A `section.key` setting appears as `key = ` under its `[section]`.
            let bare = setting.key.rsplit('.').next().unwrap_or(setting.key);
            let line = format!("\n{bare} = ");
            assert!(
                include_str!("../config.toml").contains(&line),
                "{} missing",
                setting.key
            );
        }
    }

    #[test]
    fn print_config_round_trips() {
        let config = resolve(&layers("max_body_bytes = 1000", &[], &[])).unwrap();
        let again = resolve(&layers(&to_toml(&config), &[], &[])).unwrap();
        assert_eq!(again, config);
    }
}
