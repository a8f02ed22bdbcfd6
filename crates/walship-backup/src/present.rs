//! What `backup-list` and `backup-show` print: barman-cloud's console table and its
//! `--format json` documents, so scripts and the CloudNativePG plugin read walship's
//! output as they read barman's.

use std::fmt::Write;

use crate::catalog::{Entry, KeepTarget};
use crate::info::Status;
use crate::json::{Json, backup_json};

/// barman-cloud-backup-list's table: id, end time, begin WAL, archival status (the keep
/// target of a DONE backup, the status of any other), name. `keep` gives each backup's
/// keep target.
pub fn list_console(backups: &[Entry], keep: &dyn Fn(&str) -> Option<KeepTarget>) -> String {
    let row = |out: &mut String, cols: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<20}{:<25}{:<30}{:<17}{:<20}",
            cols[0], cols[1], cols[2], cols[3], cols[4]
        );
    };
    let mut out = String::new();
    row(
        &mut out,
        [
            "Backup ID",
            "End Time",
            "Begin Wal",
            "Archival Status",
            "Name",
        ],
    );
    for entry in backups {
        let info = &entry.info;
        let end = info
            .end_time
            .map(|t| t.0.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let status = match info.status {
            Some(Status::Done) => keep(&entry.id)
                .map(|k| format!("KEEP:{}", k.as_str().to_uppercase()))
                .unwrap_or_default(),
            Some(other) => other.as_str().to_owned(),
            None => String::new(),
        };
        row(
            &mut out,
            [
                &entry.id,
                &end,
                info.begin_wal.as_deref().unwrap_or(""),
                &status,
                info.backup_name.as_deref().unwrap_or(""),
            ],
        );
    }
    out
}

/// `{"backups_list": [ … ]}`, one line, as barman prints it.
pub fn list_json(backups: &[Entry]) -> String {
    Json::Object(vec![(
        "backups_list".to_owned(),
        Json::Array(
            backups
                .iter()
                .map(|e| backup_json(&e.id, &e.info))
                .collect(),
        ),
    )])
    .render()
}

/// `{"<server_name>": { … }}`, keyed by `backup.info`'s `server_name` as barman does.
pub fn show_json(entry: &Entry) -> String {
    let server = entry.info.server_name.as_deref().unwrap_or("cloud");
    Json::Object(vec![(
        server.to_owned(),
        backup_json(&entry.id, &entry.info),
    )])
    .render()
}

/// A readable summary of one backup.
pub fn show_console(entry: &Entry, keep: Option<KeepTarget>) -> String {
    let info = &entry.info;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "  {key:<22}: {value}");
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let _ = &mut line;
    line("Backup", entry.id.clone());
    line("Name", text(&info.backup_name));
    line(
        "Status",
        info.status
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
    );
    line(
        "PostgreSQL version",
        info.version.map(|v| v.to_string()).unwrap_or_default(),
    );
    line("System id", text(&info.systemid));
    line("PGDATA", text(&info.pgdata));
    for ts in &info.tablespaces {
        line(
            "Tablespace",
            format!("{} (oid {}) at {}", ts.name, ts.oid, ts.location),
        );
    }
    line(
        "Timeline",
        info.timeline.map(|t| t.to_string()).unwrap_or_default(),
    );
    line(
        "Begin time",
        info.begin_time.map(|t| t.to_string()).unwrap_or_default(),
    );
    line(
        "End time",
        info.end_time.map(|t| t.to_string()).unwrap_or_default(),
    );
    line("Begin WAL", text(&info.begin_wal));
    line("End WAL", text(&info.end_wal));
    line("Begin LSN", text(&info.begin_xlog));
    line("End LSN", text(&info.end_xlog));
    line(
        "Size",
        info.size.map(|s| format!("{s} bytes")).unwrap_or_default(),
    );
    line("Keep", keep.map_or("nokeep", KeepTarget::as_str).to_owned());
    if let Some(error) = &info.error {
        line("Error", error.clone());
    }
    format!("Backup {}:\n{out}", entry.id)
}
