//! Tests of the compiled binary: configuration precedence and errors, the first-run
//! banner, restarts, SIGTERM draining, kill -9 durability, and the admin CLI.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::common::ADMIN_KEY;
use crate::process::{http, run, text, Proc};

#[test]
fn config_precedence_is_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "listen = \"127.0.0.1:1111\"\nmax_body_bytes = 1000\nlog_level = \"warn\"\nmax_connections = 7\n",
    )
    .unwrap();
    let out = run(
        &["--listen", "127.0.0.1:3333", "print-config"],
        dir.path(),
        &[
            ("CONTACTD_LISTEN", "127.0.0.1:2222"),
            ("CONTACTD_MAX_BODY_BYTES", "2000"),
            ("CONTACTD_CUSTOM_ATTRIBUTES_UNKNOWN", "reject"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("listen = \"127.0.0.1:3333\""),
        "flag beats env: {printed}"
    );
    assert!(
        printed.contains("max_body_bytes = 2000"),
        "env beats file: {printed}"
    );
    assert!(
        printed.contains("max_connections = 7"),
        "file beats default: {printed}"
    );
    assert!(
        printed.contains("request_timeout_secs = 30"),
        "default: {printed}"
    );
    assert!(
        printed.contains("[custom_attributes]\nunknown = \"reject\""),
        "section setting from env: {printed}"
    );
    let explicit = dir.path().join("other.toml");
    std::fs::write(&explicit, "max_connections = 9\n").unwrap();
    let out = run(
        &["--config", explicit.to_str().unwrap(), "print-config"],
        dir.path(),
        &[],
    );
    assert!(text(&out.stdout).contains("max_connections = 9"));
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["print-config"],
        dir.path(),
        &[("CONTACTD_MAX_CONNECTIONS", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("max_connections") && err.contains("CONTACTD_MAX_CONNECTIONS"),
        "{err}"
    );
    let out = run(&["--listen", "nowhere", "print-config"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`listen`"));
    std::fs::write(dir.path().join("config.toml"), "lisen = \"x\"\n").unwrap();
    let out = run(&["print-config"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("lisen"));
    let out = run(
        &["--config", "missing.toml", "print-config"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["print-config"],
        dir.path(),
        &[("CONTACTD_ADMIN_KEY", "short")],
    );
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_file(dir.path().join("config.toml")).unwrap();
    let out = run(
        &[
            "--cors-allowed-origins",
            "https://ok.example, app.example.com",
            "print-config",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cors.allowed_origins") && err.contains("app.example.com"),
        "{err}"
    );
}

#[tokio::test]
async fn first_start_prints_the_key_once_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Proc::start(dir.path(), None);
    assert!(
        !first.addr.ends_with(":0"),
        "the real port is printed: {}",
        first.addr
    );
    let key = first
        .banner
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("oc_live_"))
                .map(str::to_owned)
        })
        .expect("banner with the generated admin key");
    let (status, _) = http(
        &first.addr,
        Method::POST,
        "/api/v1/chatbots/default/contacts",
        &key,
        Some(json!({"users": [{"external_id": "kept", "email": "k@x.co"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(first.terminate().success());

    let second = Proc::start(dir.path(), None);
    assert!(
        second.banner.iter().all(|l| !l.contains("oc_live_")),
        "later starts never print keys"
    );
    let (status, body) = http(
        &second.addr,
        Method::GET,
        "/api/v1/chatbots/default/contacts/kept",
        &key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["email"], "k@x.co");
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    let body = json!({"users": [{"external_id": "late"}]}).to_string();
    let (head, tail) = body.split_at(10);
    let mut stream = tokio::net::TcpStream::connect(&proc.addr).await.unwrap();
    let request = format!(
        "POST /api/v1/chatbots/default/contacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Give the server a moment to read the headers, so the request is in flight when
    // the signal arrives (there is no outside event that says it has).
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.signal("-TERM");
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = vec![0; 4096];
    let n = stream.read(&mut response).await.unwrap();
    let response = text(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(proc.child.wait().unwrap().success());
    let again = Proc::start(dir.path(), None);
    let (status, _) = http(
        &again.addr,
        Method::GET,
        "/api/v1/chatbots/default/contacts/late",
        ADMIN_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn kill_9_never_loses_an_acknowledged_batch() {
    kill_9_under_load(&[]).await;
}

/// With a checkpoint at every commit, a kill -9 lands in a checkpoint or a log
/// rotation more often than not.
#[tokio::test]
async fn kill_9_during_checkpoints_never_loses_an_acknowledged_batch() {
    kill_9_under_load(&["--wal-checkpoint-mb", "0"]).await;
}

/// Writes batches from four clients, kills the server with SIGKILL after 40 were
/// acknowledged, and checks every acknowledged contact is there after a restart.
async fn kill_9_under_load(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start_with(dir.path(), Some(ADMIN_KEY), flags);
    let addr = proc.addr.clone();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let mut writers = Vec::new();
    for w in 0..4 {
        let addr = addr.clone();
        let acked_tx = acked_tx.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..10_000 {
                let ids: Vec<String> = (0..100).map(|i| format!("w{w}-b{b}-{i}")).collect();
                let users: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"external_id": id, "email": format!("{id}@x.co")}))
                    .collect();
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://{addr}/api/v1/chatbots/default/contacts"))
                    .header("authorization", format!("Bearer {ADMIN_KEY}"))
                    .body(Full::new(Bytes::from(json!({"users": users}).to_string())))
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        if acked_tx.send(ids).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(acked_tx);
    let mut acked: Vec<String> = Vec::new();
    let mut batches = 0;
    while let Some(ids) = acked_rx.recv().await {
        acked.extend(ids);
        batches += 1;
        if batches == 40 {
            break;
        }
    }
    let mut proc = proc;
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    // Check only reads: a file the server did not close is for the server to repair.
    let d = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", d, "check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "was not closed cleanly (the server was killed or crashed): start `contactd serve`"
        ),
        "{}",
        text(&out.stderr)
    );
    while let Ok(ids) = acked_rx.try_recv() {
        acked.extend(ids);
    }
    for w in writers {
        let _ = w.await;
    }
    while let Ok(ids) = acked_rx.try_recv() {
        acked.extend(ids);
    }
    let again = Proc::start(dir.path(), None);
    let mut stored = std::collections::HashSet::new();
    for page in 1.. {
        let (status, body) = http(
            &again.addr,
            Method::GET,
            &format!("/api/v1/chatbots/default/contacts?per_page=1000&page={page}"),
            ADMIN_KEY,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let data = body["data"].as_array().unwrap();
        if data.is_empty() {
            break;
        }
        stored.extend(
            data.iter()
                .map(|c| c["external_id"].as_str().unwrap().to_owned()),
        );
    }
    assert!(acked.len() >= 4000);
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !stored.contains(*id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(again.terminate().success());
    let out = run(&["--data-dir", d, "check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("0 problem(s)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn admin_cli_manages_agents_and_keys_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = run(
        &[
            "--data-dir",
            d,
            "agents",
            "create",
            "--id",
            "bot",
            "--name",
            "Bot",
            "--json",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agent["id"], "bot");
    let out = run(
        &[
            "--data-dir",
            d,
            "agents",
            "create",
            "--id",
            "bot",
            "--name",
            "Again",
        ],
        dir.path(),
        &[],
    );
    assert!(!out.status.success());
    let out = run(
        &["--data-dir", d, "agents", "list", "--json"],
        dir.path(),
        &[],
    );
    let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents[0]["id"], "bot");

    let out = run(
        &[
            "--data-dir",
            d,
            "keys",
            "create",
            "--name",
            "bot key",
            "--agent",
            "bot",
            "--json",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["scope"], "agent");
    let key = created["key"].as_str().unwrap().to_owned();
    let out = run(
        &[
            "--data-dir",
            d,
            "keys",
            "create",
            "--name",
            "x",
            "--agent",
            "nope",
        ],
        dir.path(),
        &[],
    );
    assert!(!out.status.success());
    let out = run(
        &["--data-dir", d, "keys", "list", "--json"],
        dir.path(),
        &[],
    );
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(keys[0].get("key").is_none());
    let keeper = ["--data-dir", d, "keys", "create", "--name", "keeper"];
    assert!(run(&keeper, dir.path(), &[]).status.success());
    let out = run(
        &[
            "--data-dir",
            d,
            "keys",
            "create",
            "--name",
            "doomed",
            "--json",
        ],
        dir.path(),
        &[],
    );
    let doomed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = run(
        &[
            "--data-dir",
            d,
            "keys",
            "revoke",
            doomed["id"].as_str().unwrap(),
            "--json",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["revoked"],
        true
    );
    let out = run(&["--data-dir", d, "keys", "list"], dir.path(), &[]);
    assert!(text(&out.stdout).contains("revoked"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let proc = Proc::start(&data, Some(ADMIN_KEY));
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots/bot/contacts",
        &key,
        None,
    ));
    assert_eq!(
        status,
        StatusCode::OK,
        "a key made by the CLI works over HTTP"
    );
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/keys",
        doomed["key"].as_str().unwrap(),
        None,
    ));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn admin_cli_refuses_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    let d = dir.path().to_str().unwrap();
    for (args, endpoint) in [
        (vec!["agents", "list"], "GET /api/v1/chatbots"),
        (vec!["keys", "create", "--name", "x"], "POST /api/v1/keys"),
        (vec!["keys", "revoke", "key_x"], "DELETE /api/v1/keys"),
    ] {
        let mut all = vec!["--data-dir", d];
        all.extend(args);
        let out = run(&all, dir.path(), &[]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("server is running") && err.contains(endpoint),
            "{err}"
        );
    }
    drop(proc);
}

/// `log_format = "json"`: one JSON line per request with its method, route template,
/// status, duration, request id and key id, never the key; `X-Request-Id` is taken
/// from the request or made, and echoed.
#[test]
fn json_logs_have_one_line_per_request_and_request_ids_are_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let proc = Proc::start_logging(
        &data,
        Some(ADMIN_KEY),
        &["--log-format", "json", "--log-level", "info"],
        std::process::Stdio::from(log),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |path: &str, id: Option<&str>| {
        rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(&proc.addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = hyper::Request::get(path)
                .header("host", "x")
                .header("authorization", format!("Bearer {ADMIN_KEY}"));
            if let Some(id) = id {
                req = req.header("x-request-id", id);
            }
            let resp = sender
                .send_request(
                    req.body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            (resp.status(), echoed)
        })
    };
    let (status, echoed) = send(
        "/api/v1/chatbots/default/contacts?per_page=1",
        Some("trace-42"),
    );
    assert_eq!((status, echoed.as_str()), (StatusCode::OK, "trace-42"));
    let (status, made) = send("/api/v1/nowhere", None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(made.len(), 32, "a request id is made: {made}");
    assert!(proc.terminate().success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(ADMIN_KEY), "the key is never logged");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(requests.len(), 2, "{text}");
    let first = requests[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "/api/v1/chatbots/{chatbotId}/contacts");
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "trace-42");
    assert!(
        first["key_id"].as_str().unwrap().starts_with("key_"),
        "{first}"
    );
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(requests[1]["request_id"], made.as_str());
    assert_eq!(requests[1]["status"], 404);
}

/// A second server on a running server's data dir fails at once, naming the data dir
/// and the server's process; so does `check`, which leaves the server serving.
#[test]
fn a_second_process_is_refused_naming_the_data_dir_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    let d = dir.path().to_str().unwrap();
    let pid = format!("process {}", proc.child.id());
    let started = std::time::Instant::now();
    let out = run(
        &["--listen", "127.0.0.1:0", "--data-dir", d],
        dir.path(),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "it fails at once"
    );
    let err = text(&out.stderr);
    assert!(err.contains(d) && err.contains(&pid), "{err}");
    let out = run(&["--data-dir", d, "check"], dir.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(d) && err.contains(&pid), "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots",
        ADMIN_KEY,
        None,
    ));
    assert_eq!(status, StatusCode::OK, "the server goes on serving");
    assert!(proc.terminate().success());
    assert!(
        !dir.path().join("contactd.pid").exists(),
        "a server that stopped forgets it held the data dir"
    );
}

#[tokio::test]
async fn check_passes_on_a_healthy_dir_and_reports_a_damaged_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    {
        let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
        let users = json!({"users": [{"external_id": "a", "email": "a@x.co"}, {"external_id": "b", "email": "b@x.co"}]});
        let (status, _) = http(
            &proc.addr,
            Method::POST,
            "/api/v1/chatbots/default/contacts",
            ADMIN_KEY,
            Some(users),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let out = run(&["--data-dir", &d, "check"], dir.path(), &[]);
        assert!(!out.status.success(), "refuses while the server runs");
        assert!(proc.terminate().success());
    }
    let out = run(&["--data-dir", &d, "check", "--json"], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["contacts"].as_u64(),
            report["problem_count"].as_u64()
        ),
        (Some(2), Some(0))
    );
    // Where the file's space goes: every table, the index's runs counted as one.
    let space = &report["space"];
    assert!(space["file_bytes"].as_u64().unwrap() > 0, "{space}");
    let tables = space["tables"].as_array().unwrap();
    let entries = |name: &str| {
        tables
            .iter()
            .find(|t| t["table"] == name)
            .and_then(|t| t["entries"].as_u64())
    };
    assert_eq!(entries("contact_records"), Some(2), "{space}");
    assert_eq!(entries("contacts_by_external_id"), Some(2), "{space}");
    assert_eq!(entries("contacts_by_email"), Some(2), "{space}");
    assert!(entries("index_run_*").is_some(), "{space}");
    assert!(
        !tables.iter().any(|t| t["table"] == "index_run_1"),
        "{space}"
    );
    let out = run(&["--data-dir", &d, "check"], dir.path(), &[]);
    assert!(
        text(&out.stdout).contains("space: file ")
            && text(&out.stdout).contains("  contacts_by_email"),
        "{}",
        text(&out.stdout)
    );

    // Damage the email index behind the server's back.
    {
        let db = redb::Database::create(dir.path().join(contactd::store::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let emails: redb::TableDefinition<(&str, &str), &str> =
            redb::TableDefinition::new("contacts_by_email");
        txn.open_table(emails)
            .unwrap()
            .remove(("default", "b@x.co"))
            .unwrap();
        txn.commit().unwrap();
    }
    let out = run(&["--data-dir", &d, "check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("default/b") && printed.contains("contacts_by_email"),
        "{printed}"
    );
}

#[test]
fn cli_import_and_export_talk_to_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(&dir.path().join("data"), Some(ADMIN_KEY));
    let url = format!("http://{}", proc.addr);
    let server = [("CONTACTD_URL", url.as_str()), ("CONTACTD_KEY", ADMIN_KEY)];
    let file = dir.path().join("people.csv");
    let mut csv = String::from("external_id,name,email,ltv:number\n");
    for i in 0..25 {
        match i {
            7 => csv.push_str("p7,Bad Email,nope,1\n"),
            18 => csv.push_str(",No Id,,2\n"),
            _ => csv.push_str(&format!("p{i},\"Person, {i}\",p{i}@x.co,{i}\n")),
        }
    }
    std::fs::write(&file, &csv).unwrap();

    let out = run(
        &[
            "import",
            "people.csv",
            "--agent",
            "default",
            "--chunk-rows",
            "10",
        ],
        dir.path(),
        &server,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "some rows failed: {err}");
    assert!(
        err.contains("imported 25 rows: 23 created, 0 updated, 0 skipped, 2 failed"),
        "{err}"
    );
    let errors = std::fs::read_to_string(dir.path().join("people.csv.errors.csv")).unwrap();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(
        lines[0],
        "row,field,error,external_id,name,email,ltv:number"
    );
    assert!(
        lines[1].starts_with("9,email,"),
        "file row 9 (header is row 1): {errors}"
    );
    assert!(lines[1].ends_with(",p7,Bad Email,nope,1"), "{errors}");
    assert!(lines[2].starts_with("20,external_id,"), "{errors}");
    assert_eq!(lines.len(), 3);

    // Resuming part-way sends only the rest.
    let out = run(
        &[
            "import",
            "people.csv",
            "--agent",
            "default",
            "--skip-rows",
            "20",
        ],
        dir.path(),
        &server,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("imported 5 rows: 0 created, 5 updated"),
        "{err}"
    );

    let out = run(
        &[
            "export",
            "--agent",
            "default",
            "--format",
            "ndjson",
            "--output",
            "out.ndjson",
            "--query",
            "sort=-external_id",
        ],
        dir.path(),
        &server,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(exported.lines().count(), 23);
    let first: Value = serde_json::from_str(exported.lines().next().unwrap()).unwrap();
    assert_eq!(first["external_id"], "p9", "the query's order");
    assert_eq!(first["custom_attributes"]["ltv"], 9);

    // The export imports back into another agent through the CLI too.
    let out = run(&["export", "--agent", "default"], dir.path(), &server);
    assert!(out.status.success());
    std::fs::write(dir.path().join("back.csv"), &out.stdout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::POST,
        "/api/v1/chatbots",
        ADMIN_KEY,
        Some(json!({"id": "copy", "name": "Copy"})),
    ));
    assert_eq!(status, StatusCode::OK);
    let out = run(
        &["import", "back.csv", "--agent", "copy"],
        dir.path(),
        &server,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_, page) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots/copy/contacts",
        ADMIN_KEY,
        None,
    ));
    assert_eq!(page["total"], 23);

    // Errors: wrong key, nothing listening, unknown format.
    let out = run(
        &[
            "import",
            "people.csv",
            "--agent",
            "default",
            "--key",
            "oc_live_wrongwrongwrongwrongwrongwrong",
        ],
        dir.path(),
        &[("CONTACTD_URL", url.as_str())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = run(
        &[
            "import",
            "people.csv",
            "--agent",
            "default",
            "--url",
            "http://127.0.0.1:9",
        ],
        dir.path(),
        &server,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &["import", "people.txt", "--agent", "default"],
        dir.path(),
        &server,
    );
    assert_eq!(out.status.code(), Some(2));
}
