//! `contactd backup` and `contactd restore` through the binary: a backup of a server
//! under write load holds every write acknowledged before it began and restores to a
//! data dir `check` passes; damaged, truncated and misplaced backups are refused.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::common::ADMIN_KEY;
use crate::process::{http, text, Proc};

/// The external ids of every contact of agent `default`.
async fn all_ids(addr: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut page = 1;
    loop {
        let path = format!("/api/v1/chatbots/default/contacts?per_page=100&page={page}");
        let (status, body) = http(addr, Method::GET, &path, ADMIN_KEY, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = body["data"].as_array().unwrap();
        ids.extend(
            data.iter()
                .map(|c| c["external_id"].as_str().unwrap().to_owned()),
        );
        if data.len() < 100 {
            return ids;
        }
        page += 1;
    }
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_write_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let proc = Proc::start(&data, Some(ADMIN_KEY));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = proc.addr.clone();
    // Two writers add contacts of ten each until told to stop; each batch's ids are
    // noted once the server acknowledged it.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Told once 300 writes are acknowledged.
    let (loaded_tx, mut loaded) = tokio::sync::watch::channel(0usize);
    let loaded_tx = Arc::new(loaded_tx);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (addr, acked, stop) = (addr.clone(), Arc::clone(&acked), Arc::clone(&stop));
            let loaded_tx = Arc::clone(&loaded_tx);
            rt.spawn(async move {
                let mut batch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..10).map(|i| format!("w{w}-b{batch}-{i}")).collect();
                    let users: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"external_id": id, "name": id, "tags": ["load"]}))
                        .collect();
                    let (status, _) = http(
                        &addr,
                        Method::POST,
                        "/api/v1/chatbots/default/contacts",
                        ADMIN_KEY,
                        Some(json!({"users": users})),
                    )
                    .await;
                    assert_eq!(status, StatusCode::OK);
                    let count = {
                        let mut acked = acked.lock();
                        acked.extend(ids);
                        acked.len()
                    };
                    loaded_tx.send_replace(count);
                    batch += 1;
                }
            })
        })
        .collect();
    rt.block_on(loaded.wait_for(|count| *count >= 300)).unwrap();
    let before: BTreeSet<String> = acked.lock().clone();
    let backup = dir.path().join("snap.backup");
    let out = std::process::Command::new(crate::process::BIN)
        .args(["backup", "--url", &format!("http://{addr}"), "--output"])
        .arg(&backup)
        .env("CONTACTD_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("backed up"),
        "{}",
        text(&out.stdout)
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        rt.block_on(w).unwrap();
    }
    let after = acked.lock().len();
    assert!(after > before.len(), "writes went on during the backup");
    // Restore into a new dir; check passes; every write acknowledged before holds.
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(crate::process::BIN)
        .arg("restore")
        .arg(&backup)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = std::process::Command::new(crate::process::BIN)
        .args(["check", "--data-dir"])
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "check: {}", text(&out.stdout));
    drop(proc);
    let copy = Proc::start(&restored, None);
    let ids = rt.block_on(all_ids(&copy.addr));
    let missing: Vec<&String> = before.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing",
        missing.len()
    );
    // The copy is a working server: its keys, tags and search work.
    let (status, body) = rt.block_on(http(
        &copy.addr,
        Method::GET,
        "/api/v1/chatbots/default/tags",
        ADMIN_KEY,
        None,
    ));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["count"], ids.len());
}

#[test]
fn damaged_truncated_and_foreign_backups_are_refused_and_a_full_dir_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let proc = Proc::start(&data, Some(ADMIN_KEY));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let users: Vec<Value> = (0..50)
        .map(|i| json!({"external_id": format!("u{i}"), "name": "Ada"}))
        .collect();
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::POST,
        "/api/v1/chatbots/default/contacts",
        ADMIN_KEY,
        Some(json!({"users": users})),
    ));
    assert_eq!(status, StatusCode::OK);
    // Offline backups need the server stopped; it says to use the online one.
    let backup = dir.path().join("a.backup");
    let offline_backup = || {
        std::process::Command::new(crate::process::BIN)
            .args(["backup", "--data-dir"])
            .arg(&data)
            .arg("--output")
            .arg(&backup)
            .output()
            .unwrap()
    };
    let out = offline_backup();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--output FILE with the server's URL"),
        "{}",
        text(&out.stderr)
    );
    assert!(proc.terminate().success());
    let out = offline_backup();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let whole = std::fs::read(&backup).unwrap();
    let restore = |file: &std::path::Path, target: &std::path::Path, force: bool| {
        let mut cmd = std::process::Command::new(crate::process::BIN);
        cmd.arg("restore").arg(file).arg("--data-dir").arg(target);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", whole[..whole.len() - 40].to_vec(), "truncated"),
        (
            "flipped",
            {
                // A byte of a contact's name, inside a sealed record.
                let mut b = whole.clone();
                let at = b.windows(3).position(|w| w == b"Ada").unwrap();
                b[at] ^= 0x01;
                b
            },
            "damaged",
        ),
        (
            "foreign",
            b"PK\x03\x04 not a backup at all, a zip maybe".to_vec(),
            "not a contactd backup",
        ),
        (
            "extended",
            [whole.clone(), b"x".to_vec()].concat(),
            "after its end",
        ),
    ];
    for (name, bytes, says) in cases {
        let file = dir.path().join(format!("{name}.backup"));
        std::fs::write(&file, bytes).unwrap();
        let target = dir.path().join(format!("into-{name}"));
        let out = restore(&file, &target, false);
        assert!(!out.status.success(), "{name}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{name}: {err}");
        assert!(!target.exists(), "{name}: nothing is left behind");
    }
    // A directory that holds files but no store takes a restore as it is.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(fresh.join("backups")).unwrap();
    std::fs::write(fresh.join("backups/notes.txt"), b"mine").unwrap();
    let out = restore(&backup, &fresh, false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(fresh.join("backups/notes.txt").exists());
    // A data dir with a store in it is refused without --force, replaced with it; its
    // other files (scheduled backups, the very file being restored) stay.
    let kept = data.join("backups").join("kept.backup");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::copy(&backup, &kept).unwrap();
    let out = restore(&kept, &data, false);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = restore(&kept, &data, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(kept.exists(), "--force deletes the store only");
    let proc = Proc::start(&data, None);
    let (status, body) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots/default",
        ADMIN_KEY,
        None,
    ));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["contact_count"], 50);
    // --force never clears a data dir a running server holds.
    let out = restore(&backup, &data, true);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("running"),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = rt.block_on(http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots/default/contacts/u1",
        ADMIN_KEY,
        None,
    ));
    assert_eq!(status, StatusCode::OK, "the server's data is untouched");
}
