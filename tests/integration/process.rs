//! Running the compiled `contactd`: a server process on port 0, one-shot commands, and
//! what `/proc` tells about a process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_contactd");

/// A `contactd serve` process and the lines it printed before `listening on`.
pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub banner: Vec<String>,
}

impl Proc {
    // The child is waited for in `Drop` (and by `terminate`), which the lint cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start(data_dir: &Path, admin_key: Option<&str>) -> Self {
        Self::start_with(data_dir, admin_key, &[])
    }

    /// [`Proc::start`] with more flags.
    pub fn start_with(data_dir: &Path, admin_key: Option<&str>, flags: &[&str]) -> Self {
        Self::start_logging(data_dir, admin_key, flags, Stdio::null())
    }

    /// [`Proc::start_with`], its log (stderr) going to `stderr`.
    #[allow(clippy::zombie_processes)]
    pub fn start_logging(
        data_dir: &Path,
        admin_key: Option<&str>,
        flags: &[&str],
        stderr: Stdio,
    ) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env_remove("CONTACTD_ADMIN_KEY")
            .env("CONTACTD_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(key) = admin_key {
            cmd.env("CONTACTD_ADMIN_KEY", key);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("server printed no `listening on` line");
            if let Some(addr) = line.strip_prefix("listening on ") {
                return Self {
                    child,
                    addr: addr.to_owned(),
                    banner,
                };
            }
            banner.push(line);
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn http(
    addr: &str,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub fn run(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("CONTACTD_ADMIN_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The server's peak resident memory, from /proc.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
