//! `contactd check`, `contactd salvage`, `contactd compact`, and `contactd backup
//! --data-dir` and `contactd restore`: the data dir's health, read without changing it,
//! a copy of what can still be read, the file's free pages given back, and backups of
//! it. All need the server stopped.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::{describe, print_json};
use crate::config::Config;
use crate::store::{self, CheckReport, SalvageReport};

/// Exit code when problems were found (check) or records lost (salvage).
const EXIT_PROBLEMS: u8 = 1;
/// Exit code when nothing could be checked or read.
const EXIT_UNREADABLE: u8 = 2;
/// Exit code when salvage could not run (the output is not empty, the server holds the
/// data dir, the output cannot be written).
const EXIT_FAILED: u8 = 3;

/// A count of contacts on a terminal; nothing otherwise (a log, a pipe).
fn counter(what: &'static str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {pos} contacts {msg}") {
        bar.set_style(style);
    }
    bar.set_message(what);
    Some(bar)
}

/// Runs `work`, showing on a terminal the count of contacts it reports.
fn counting<T>(what: &'static str, work: impl FnOnce(&dyn Fn(u64)) -> T) -> T {
    let bar = counter(what);
    let result = work(&|n| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

pub fn check(config: &Config, json: bool) -> ExitCode {
    let report = counting("checked", |progress| {
        store::check_offline(&config.data_dir, progress)
    });
    let report: CheckReport = match report {
        Ok(report) => report,
        Err(err) => {
            eprintln!(
                "contactd check: {}",
                describe(&err, "GET /healthz to see how it is")
            );
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    if json {
        print_json(&json!({
            "agents": report.agents,
            "contacts": report.contacts,
            "index_entries": report.index_entries,
            "problem_count": report.problem_count,
            "damage_count": report.damage_count,
            "problems": report.problems,
            "notes": report.notes,
            "space": report.space,
        }));
    } else {
        println!(
            "checked {} agents, {} contacts, {} index entries: {} problem(s), {} of them damage",
            report.agents,
            report.contacts,
            report.index_entries,
            report.problem_count,
            report.damage_count
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
        for note in &report.notes {
            println!("  note: {note}");
        }
        print_space(&report.space, report.contacts);
        if report.damage_count > 0 {
            println!(
                "The data dir is damaged. Copy what can be read with `contactd salvage --output NEWDIR`, or restore a backup (see Operations in the README)."
            );
        }
    }
    if report.problem_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    }
}

pub fn salvage(config: &Config, output: &Path, json: bool) -> ExitCode {
    let report = counting("copied", |progress| {
        store::salvage(&config.data_dir, output, crate::clock::unix_now(), progress)
    });
    let report: SalvageReport = match report {
        Ok(report) => report,
        Err(err) => {
            eprintln!("contactd salvage: {}", describe(&err, ""));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if json {
        print_json(&json!({
            "agents": report.agents,
            "keys": report.keys,
            "custom_attributes": report.attributes,
            "contacts": report.contacts,
            "lost_contacts": report.lost_contacts,
            "lost_count": report.lost_count,
            "lost": report.lost,
            "notes": report.notes,
        }));
    } else {
        println!(
            "salvaged {} agents, {} keys, {} custom attributes, {} contacts into {}",
            report.agents,
            report.keys,
            report.attributes,
            report.contacts,
            output.display()
        );
        if report.lost_anything() {
            println!(
                "could not read {} contact(s) and {} other thing(s):",
                report.lost_contacts, report.lost_count
            );
            for line in &report.lost {
                println!("  {line}");
            }
        } else {
            println!("nothing was lost");
        }
        for note in &report.notes {
            println!("  rebuilt, nothing lost: {note}");
        }
        if report.keys == 0 && !report.read_nothing() {
            println!("No API key was salvaged: create one with `contactd keys create --data-dir {} --name admin`.", output.display());
        }
    }
    if report.read_nothing() {
        ExitCode::from(EXIT_UNREADABLE)
    } else if report.lost_anything() {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

/// The file's size and the tables that take it, in MiB and bytes per contact.
fn print_space(space: &store::Space, contacts: u64) {
    if space.file_bytes == 0 {
        return;
    }
    let per_contact = |bytes: u64| bytes.checked_div(contacts).unwrap_or(0);
    println!(
        "space: file {} ({} on disk, {} bytes per contact); tables:",
        mib(space.file_bytes),
        mib(space.disk_bytes),
        per_contact(space.disk_bytes)
    );
    for t in &space.tables {
        println!(
            "  {:<20} {:>10} entries {:>11} in pages ({:>5} bytes per contact), {} stored",
            t.table,
            t.entries,
            mib(t.page_bytes),
            per_contact(t.page_bytes),
            mib(t.stored_bytes)
        );
    }
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1 << 20);
    format!("{mib:.1} MiB")
}

pub fn compact(config: &Config) -> Result<(), String> {
    let done = store::compact(&config.data_dir, config.store_options())
        .map_err(|err| describe(&err, ""))?;
    let per_contact = |bytes: u64| bytes.checked_div(done.contacts).unwrap_or(0);
    println!(
        "compacted {}: {} -> {} ({} -> {} bytes per contact, {} contacts)",
        config.data_dir.join(store::DB_FILE).display(),
        mib(done.before),
        mib(done.after),
        per_contact(done.before),
        per_contact(done.after),
        done.contacts
    );
    Ok(())
}

/// `contactd backup --data-dir DIR --output FILE`: a backup of a stopped data dir (its
/// write-ahead log applied first, as a start would).
pub fn backup(config: &Config, output: &Path) -> ExitCode {
    let written = super::open(
        config,
        "contactd backup --output FILE with the server's URL and an admin key",
    )
    .and_then(|store| {
        let summary = crate::backups::write_file(&store, output).map_err(|e| e.to_string());
        store.shutdown();
        summary
    });
    match written {
        Ok(summary) => {
            print_backup("backed up", &summary, output);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("contactd backup: {message}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// `contactd restore FILE`: the backup into the data dir.
pub fn restore(config: &Config, file: &Path, force: bool) -> ExitCode {
    match store::backup::restore(file, &config.data_dir, force) {
        Ok(summary) => {
            print_backup("restored", &summary, &config.data_dir);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("contactd restore: {}", describe(&err, ""));
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// `<done> N agents, N keys, ... (N bytes): <where>`.
pub(crate) fn print_backup(done: &str, s: &store::backup::BackupSummary, place: &Path) {
    println!(
        "{done} {} agents, {} keys, {} custom attributes, {} tags and lists, {} contacts, {} webhooks ({} bytes): {}",
        s.agents,
        s.keys,
        s.attributes,
        s.labels,
        s.contacts,
        s.webhooks,
        s.bytes,
        place.display()
    );
}
