//! The command line: clap definitions, configuration loading, and the subcommands that
//! are not `serve` (`check` and `salvage` live in `data.rs`). Admin commands open the
//! data dir directly, so they work only while the server is stopped; otherwise redb's
//! file lock refuses and we say which HTTP endpoint to use instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

pub(crate) mod data;

use crate::auth;
use crate::clock::unix_now;
use crate::config::{self, Config, Layers};
use crate::domain::{ids, Access, Agent, KeyGrant, Scope};
use crate::store::{RedbStore, Store, StoreError};

#[derive(Parser, Debug)]
#[command(
    name = "contactd",
    version,
    about = "Self-hosted contacts server (Chatbase/Bookbag-compatible API over an embedded redb file)"
)]
pub struct Cli {
    /// Config file; the default ./config.toml may be missing, an explicit one may not.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One flag per setting of `config::SETTINGS` (checked by a test). Values are parsed by
/// `config::resolve`, so a bad one is reported like a bad file or env value.
#[derive(Args, Debug, Default)]
pub struct SettingFlags {
    /// Address to listen on [config: listen]
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory [config: data_dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Most MiB of database pages kept in memory [config: cache_mb]
    #[arg(long, global = true, value_name = "MIB")]
    pub cache_mb: Option<String>,
    /// Largest JSON body in bytes [config: max_body_bytes]
    #[arg(long, global = true, value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    /// Most open connections [config: max_connections]
    #[arg(long, global = true, value_name = "N")]
    pub max_connections: Option<String>,
    /// Seconds to send request headers [config: header_read_timeout_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub header_read_timeout_secs: Option<String>,
    /// Seconds one request may take [config: request_timeout_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub request_timeout_secs: Option<String>,
    /// Seconds in-flight requests get on shutdown [config: shutdown_grace_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub shutdown_grace_secs: Option<String>,
    /// error, warn, info, debug or trace [config: log_level]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// text or json [config: log_format]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Custom attribute keys without a definition: define, strip or reject
    /// [config: custom_attributes.unknown]
    #[arg(long, global = true, value_name = "POLICY")]
    pub custom_attributes_unknown: Option<String>,
    /// Most custom attribute definitions per agent [config: custom_attributes.max_per_agent]
    #[arg(long, global = true, value_name = "N")]
    pub custom_attributes_max_per_agent: Option<String>,
    /// Tags a write names that are not defined: define, strip or reject [config: tags.unknown]
    #[arg(long, global = true, value_name = "POLICY")]
    pub tags_unknown: Option<String>,
    /// Region national phone numbers are read in, e.g. US [config: phone.default_region]
    #[arg(long, global = true, value_name = "REGION")]
    pub phone_default_region: Option<String>,
    /// Agent of Pabbly requests made with an admin key [config: pabbly.agent]
    #[arg(long, global = true, value_name = "AGENT")]
    pub pabbly_agent: Option<String>,
    /// Origins whose browser pages may call the API, comma-separated [config: cors.allowed_origins]
    #[arg(long, global = true, value_name = "ORIGINS")]
    pub cors_allowed_origins: Option<String>,
    /// Requests per key per rate_limit.per_secs, 0 for none [config: rate_limit.requests]
    #[arg(long, global = true, value_name = "N")]
    pub rate_limit_requests: Option<String>,
    /// Seconds in which a key's requests refill [config: rate_limit.per_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub rate_limit_per_secs: Option<String>,
    /// Failed authentications per minute per client IP, 0 for no limit
    /// [config: rate_limit.auth_failures_per_min]
    #[arg(long, global = true, value_name = "N")]
    pub rate_limit_auth_failures_per_min: Option<String>,
    /// Header naming the client's address behind a proxy [config: rate_limit.client_ip_header]
    #[arg(long, global = true, value_name = "HEADER")]
    pub rate_limit_client_ip_header: Option<String>,
    /// Address serving /metrics without a key [config: metrics.listen]
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Hours between scheduled backups, 0 for none [config: backup.every_hours]
    #[arg(long, global = true, value_name = "HOURS")]
    pub backup_every_hours: Option<String>,
    /// Scheduled backups kept [config: backup.keep]
    #[arg(long, global = true, value_name = "N")]
    pub backup_keep: Option<String>,
    /// Directory of scheduled backups [config: backup.dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub backup_dir: Option<String>,
    /// Days the change feed keeps a change [config: changes.retention_days]
    #[arg(long, global = true, value_name = "DAYS")]
    pub changes_retention_days: Option<String>,
    /// Most events in one webhook delivery [config: webhooks.batch_max]
    #[arg(long, global = true, value_name = "N")]
    pub webhooks_batch_max: Option<String>,
    /// Hours a delivery may fail before its endpoint is deactivated [config: webhooks.max_age_hours]
    #[arg(long, global = true, value_name = "HOURS")]
    pub webhooks_max_age_hours: Option<String>,
    /// Whether webhook endpoints may be private addresses [config: webhooks.allow_private]
    #[arg(long, global = true, value_name = "BOOL")]
    pub webhooks_allow_private: Option<String>,
    /// PEM file of extra CAs for https endpoints [config: webhooks.ca_file]
    #[arg(long, global = true, value_name = "FILE")]
    pub webhooks_ca_file: Option<String>,
    /// MiB of write-ahead log that makes a checkpoint due [config: wal.checkpoint_mb]
    #[arg(long, global = true, value_name = "MIB")]
    pub wal_checkpoint_mb: Option<String>,
    /// Seconds after which a checkpoint is due [config: wal.checkpoint_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub wal_checkpoint_secs: Option<String>,
    /// Largest import upload in bytes [config: import.max_bytes]
    #[arg(long, global = true, value_name = "BYTES")]
    pub import_max_bytes: Option<String>,
    /// Seconds one import request may take [config: import.timeout_secs]
    #[arg(long, global = true, value_name = "SECS")]
    pub import_timeout_secs: Option<String>,
}

impl SettingFlags {
    fn pairs(&self) -> Vec<(String, String)> {
        let flags = [
            ("listen", &self.listen),
            ("data_dir", &self.data_dir),
            ("cache_mb", &self.cache_mb),
            ("max_body_bytes", &self.max_body_bytes),
            ("max_connections", &self.max_connections),
            ("header_read_timeout_secs", &self.header_read_timeout_secs),
            ("request_timeout_secs", &self.request_timeout_secs),
            ("shutdown_grace_secs", &self.shutdown_grace_secs),
            ("log_level", &self.log_level),
            ("log_format", &self.log_format),
            ("custom_attributes.unknown", &self.custom_attributes_unknown),
            (
                "custom_attributes.max_per_agent",
                &self.custom_attributes_max_per_agent,
            ),
            ("tags.unknown", &self.tags_unknown),
            ("phone.default_region", &self.phone_default_region),
            ("pabbly.agent", &self.pabbly_agent),
            ("cors.allowed_origins", &self.cors_allowed_origins),
            ("rate_limit.requests", &self.rate_limit_requests),
            ("rate_limit.per_secs", &self.rate_limit_per_secs),
            (
                "rate_limit.auth_failures_per_min",
                &self.rate_limit_auth_failures_per_min,
            ),
            (
                "rate_limit.client_ip_header",
                &self.rate_limit_client_ip_header,
            ),
            ("metrics.listen", &self.metrics_listen),
            ("backup.every_hours", &self.backup_every_hours),
            ("backup.keep", &self.backup_keep),
            ("backup.dir", &self.backup_dir),
            ("changes.retention_days", &self.changes_retention_days),
            ("webhooks.batch_max", &self.webhooks_batch_max),
            ("webhooks.max_age_hours", &self.webhooks_max_age_hours),
            ("webhooks.allow_private", &self.webhooks_allow_private),
            ("webhooks.ca_file", &self.webhooks_ca_file),
            ("wal.checkpoint_mb", &self.wal_checkpoint_mb),
            ("wal.checkpoint_secs", &self.wal_checkpoint_secs),
            ("import.max_bytes", &self.import_max_bytes),
            ("import.timeout_secs", &self.import_timeout_secs),
        ];
        flags
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
            .collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default when no command is given)
    Serve,
    /// Print the resolved configuration as TOML
    PrintConfig,
    /// Manage agents in the data dir (server stopped)
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Manage API keys in the data dir (server stopped)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify the data dir without changing it (server stopped): every record's
    /// checksum, damaged pages, and that every index agrees with the contacts; exits 1
    /// and lists the problems if any, 2 if it cannot be checked
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Give the data file's free pages back (server stopped); prints its size before
    /// and after
    Compact,
    /// Copy every record that can still be read from the data dir (server stopped)
    /// into a new one, and report what could not be read; exits 0 when nothing was
    /// lost, 1 when some records were, 2 when nothing could be read, 3 when it could
    /// not run (output not empty, server running)
    Salvage {
        /// The new data dir: missing or empty
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Back up every record to one file: through the running server (--url/CONTACTD_URL
    /// and an admin key, --key/CONTACTD_KEY), or, when --data-dir is given, from that
    /// stopped data dir
    Backup {
        /// The backup file to write
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// The server, http://host:port (default: the configured listen address)
        #[arg(long, env = "CONTACTD_URL", value_name = "URL")]
        url: Option<String>,
        /// An admin API key
        #[arg(long, env = "CONTACTD_KEY", value_name = "KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Restore a backup file into the data dir, which must hold no store (server
    /// stopped); the backup is checked whole first
    Restore {
        /// The backup file
        file: PathBuf,
        /// Delete the data dir's store first (never while a process has it open)
        #[arg(long)]
        force: bool,
    },
    /// Import a CSV, JSON or NDJSON file (.gz too) into an agent through a running
    /// server; exits 1 if any row failed (they go to FILE.errors.csv), 2 on errors
    Import {
        /// The file; its extension tells the format unless --format does
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// csv, json or ndjson
        #[arg(long)]
        format: Option<String>,
        /// Rows of the file to skip (to resume an import that stopped)
        #[arg(long, default_value_t = 0, value_name = "N")]
        skip_rows: u64,
        /// Rows per request (at most 1000: one server transaction each)
        #[arg(long, default_value_t = 1000, value_name = "N")]
        chunk_rows: usize,
        /// What to do with an external_id that exists: update, skip or error
        #[arg(long, default_value = "update", value_name = "MODE")]
        on_duplicate: String,
    },
    /// Export an agent's contacts from a running server to a file (or stdout)
    Export {
        #[command(flatten)]
        server: ServerArgs,
        /// csv, json or ndjson
        #[arg(long, default_value = "csv")]
        format: String,
        /// List parameters to select and order contacts, e.g. 'q=ada&sort=name'
        #[arg(long, value_name = "PARAMS")]
        query: Option<String>,
        /// Write here instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Which server and agent `import` and `export` talk to.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The agent (chatbot) id
    #[arg(long, value_name = "ID")]
    agent: String,
    /// The server, http://host:port (default: the configured listen address)
    #[arg(long, env = "CONTACTD_URL", value_name = "URL")]
    url: Option<String>,
    /// An API key for the agent
    #[arg(long, env = "CONTACTD_KEY", value_name = "KEY", hide_env_values = true)]
    key: String,
}

impl ServerArgs {
    fn target(&self, config: &Config) -> Result<crate::client::Target, String> {
        crate::client::Target::parse(&server_url(config, self.url.clone()), &self.key)
    }
}

/// `url`, or the configured listen address as a URL.
fn server_url(config: &Config, url: Option<String>) -> String {
    url.unwrap_or_else(|| {
        let mut addr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    })
}

#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Create an agent
    Create {
        /// Agent id (letters, digits, '_' and '-'; generated when omitted)
        #[arg(long)]
        id: Option<String>,
        /// Display name
        #[arg(long)]
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List agents
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; prints it once
    Create {
        /// A name to tell the key apart
        #[arg(long)]
        name: String,
        /// Scope the key to this agent (an admin key when omitted)
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// A read-only key: every write is refused with 403
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their plaintext)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (key_…)
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for configuration and usage errors.
const EXIT_CONFIG: u8 = 2;

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("contactd: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.log_level, &config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("contactd: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let data_dir_flag = cli.settings.data_dir.is_some();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::PrintConfig => {
            print!("{}", config::to_toml(&config));
            Ok(())
        }
        Command::Agents(cmd) => runtime.block_on(agents(&config, cmd)),
        Command::Keys(cmd) => runtime.block_on(keys(&config, cmd)),
        Command::Check { json } => return data::check(&config, json),
        Command::Salvage { output, json } => return data::salvage(&config, &output, json),
        Command::Compact => data::compact(&config),
        Command::Restore { file, force } => return data::restore(&config, &file, force),
        Command::Backup { output, url, key } => {
            // A data dir named on the command line is backed up directly; otherwise the
            // running server is asked.
            if data_dir_flag {
                return data::backup(&config, &output);
            }
            let target = key
                .ok_or_else(|| {
                    "an admin key is needed: --key or CONTACTD_KEY (or --data-dir DIR to back up a stopped data dir)".to_owned()
                })
                .and_then(|key| crate::client::Target::parse(&server_url(&config, url), &key));
            return match target {
                Ok(target) => crate::client::backup(&runtime, &target, &output),
                Err(message) => {
                    eprintln!("contactd: {message}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Command::Import {
            file,
            server,
            format,
            skip_rows,
            chunk_rows,
            on_duplicate,
        } => {
            return match server.target(&config) {
                Ok(target) => crate::client::import(
                    &runtime,
                    &crate::client::ImportArgs {
                        file,
                        agent: server.agent,
                        format,
                        target,
                        skip_rows,
                        chunk_rows,
                        on_duplicate,
                    },
                ),
                Err(message) => {
                    eprintln!("contactd: {message}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Export {
            server,
            format,
            query,
            output,
        } => {
            return match server.target(&config) {
                Ok(target) => crate::client::export(
                    &runtime,
                    &crate::client::ExportArgs {
                        agent: server.agent,
                        format,
                        query,
                        output,
                        target,
                    },
                ),
                Err(message) => {
                    eprintln!("contactd: {message}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("contactd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let file = match &cli.config {
        Some(path) => Some(read_file(path)?),
        None => {
            let default = Path::new("config.toml");
            default.exists().then(|| read_file(default)).transpose()?
        }
    };
    let layers = Layers {
        file,
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("CONTACTD_"))
            .collect(),
        flags: cli.settings.pairs(),
    };
    config::resolve(&layers).map_err(|err| err.to_string())
}

fn read_file(path: &Path) -> Result<(String, String), String> {
    std::fs::read_to_string(path)
        .map(|text| (path.display().to_string(), text))
        .map_err(|err| format!("cannot read config file {}: {err}", path.display()))
}

fn init_logging(level: &str, format: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

async fn serve(config: Config) -> Result<(), String> {
    // The handlers are installed before `listening on` is printed: a signal that comes
    // right after it must shut down gracefully, not kill the process.
    let shutdown = shutdown_signal().map_err(|err| format!("cannot handle signals: {err}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    crate::serve(listener, config, shutdown)
        .await
        .map_err(|err| describe(&err, "the running server"))
}

/// A future that resolves on SIGINT or SIGTERM; the handlers are installed now.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
    })
}

/// A store error as a message; `endpoint` is what to use instead while the server runs
/// (empty: nothing, the server must be stopped).
pub(crate) fn describe(err: &StoreError, endpoint: &str) -> String {
    match err {
        StoreError::AlreadyOpen(dir, holder) => {
            let instead = if endpoint.is_empty() {
                String::new()
            } else {
                format!(", or use {endpoint} instead")
            };
            format!(
                "the server is running ({}) and holds the data dir {}; stop it first{instead}",
                holder.map_or_else(
                    || "its process id is unknown".to_owned(),
                    |pid| format!("process {pid}")
                ),
                dir.display()
            )
        }
        other => other.to_string(),
    }
}

fn open(config: &Config, endpoint: &str) -> Result<RedbStore, String> {
    RedbStore::open_with(&config.data_dir, config.store_options())
        .map_err(|err| describe(&err, endpoint))
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn agents(config: &Config, cmd: AgentsCommand) -> Result<(), String> {
    match cmd {
        AgentsCommand::Create { id, name, json } => {
            let id = id.unwrap_or_else(ids::new_agent_id);
            ids::check_agent_id(&id).map_err(|msg| format!("--id {msg}"))?;
            if name.trim().is_empty() || name.chars().count() > 255 {
                return Err("--name must be 1 to 255 characters".into());
            }
            let store = open(config, "the HTTP API: POST /api/v1/chatbots")?;
            let agent = Agent {
                id,
                name,
                created_at: unix_now(),
                contact_count: 0,
            };
            let agent = store.create_agent(agent).await.map_err(|err| match err {
                StoreError::AgentExists => "an agent with this id already exists".to_owned(),
                other => other.to_string(),
            })?;
            if json {
                print_json(&agent.to_json());
            } else {
                println!("created agent {} ({})", agent.id, agent.name);
            }
        }
        AgentsCommand::List { json } => {
            let store = open(config, "the HTTP API: GET /api/v1/chatbots")?;
            let agents = store.agents().map_err(|e| e.to_string())?;
            if json {
                print_json(&Value::Array(agents.iter().map(Agent::to_json).collect()));
            } else {
                println!("{:<24} {:>10}  NAME", "ID", "CONTACTS");
                for a in agents {
                    println!("{:<24} {:>10}  {}", a.id, a.contact_count, a.name);
                }
            }
        }
    }
    Ok(())
}

async fn keys(config: &Config, cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Create {
            name,
            agent,
            read_only,
            json,
        } => {
            if name.trim().is_empty() || name.chars().count() > 255 {
                return Err("--name must be 1 to 255 characters".into());
            }
            let store = open(config, "the HTTP API: POST /api/v1/keys")?;
            let mut grant = KeyGrant::unrestricted(&name, agent.map_or(Scope::Admin, Scope::Agent));
            if read_only {
                grant.access = Access::Read;
            }
            let plaintext = auth::generate_key();
            let record = auth::new_key_record(&plaintext, grant, unix_now());
            let key = store.create_key(record).await.map_err(|err| match err {
                StoreError::AgentNotFound => "--agent names no existing agent".to_owned(),
                other => other.to_string(),
            })?;
            if json {
                let mut value = key.to_json();
                value["key"] = Value::String(plaintext);
                print_json(&value);
            } else {
                println!("created key {} ({})", key.id, key.name);
                println!("{plaintext}");
                println!("It is shown only this once; store it now.");
            }
        }
        KeysCommand::List { json } => {
            let store = open(config, "the HTTP API: GET /api/v1/keys")?;
            let keys = store.keys().map_err(|e| e.to_string())?;
            if json {
                print_json(&Value::Array(keys.iter().map(|k| k.to_json()).collect()));
            } else {
                println!(
                    "{:<22} {:<14} {:<8} {:<16} {:<6} NAME",
                    "ID", "PREFIX", "STATE", "SCOPE", "ACCESS"
                );
                for k in keys {
                    let scope = match &k.scope {
                        Scope::Admin => "admin".to_owned(),
                        Scope::Agent(id) => format!("agent:{id}"),
                    };
                    let state = if k.revoked {
                        "revoked"
                    } else if k.expired(unix_now()) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<22} {:<14} {:<8} {:<16} {:<6} {}",
                        k.id,
                        k.prefix,
                        state,
                        scope,
                        k.access.as_str(),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id, json } => {
            let store = open(config, "the HTTP API: DELETE /api/v1/keys/{id}")?;
            let key = store.revoke_key(id).await.map_err(|err| match err {
                StoreError::KeyNotFound => "no key has this id".to_owned(),
                other => other.to_string(),
            })?;
            if json {
                print_json(&key.to_json());
            } else {
                println!("revoked key {} ({})", key.id, key.name);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_has_its_flag() {
        let cmd = Cli::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        for setting in config::SETTINGS {
            assert!(
                longs.contains(&config::flag_name(setting.key)),
                "{}",
                setting.key
            );
        }
        let flags = SettingFlags::default().pairs();
        assert!(flags.is_empty());
    }
}
