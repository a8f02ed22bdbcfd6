//! What `backup.info` says of a walship backup at each of its steps, filled as
//! barman-cloud-backup fills it: at the start (STARTED, with the server's facts and the
//! start position), at the end (DONE, with the stop position and the label), or on a
//! failure (FAILED, with barman's `failure <step> (<first line>)` error).

use crate::info::{BackupInfo, Status};
use crate::session::{ServerFacts, Started, Stopped};

/// The `server_name` barman-cloud writes in every `backup.info`, whatever the server's
/// name in the bucket.
pub const CLOUD_SERVER_NAME: &str = "cloud";

/// The record of a backup that just started.
pub fn started(facts: &ServerFacts, start: &Started, name: Option<&str>) -> BackupInfo {
    BackupInfo {
        status: Some(Status::Started),
        backup_name: name.map(str::to_owned),
        server_name: Some(CLOUD_SERVER_NAME.to_owned()),
        systemid: Some(facts.system_identifier.clone()),
        version: Some(facts.version),
        pgdata: Some(facts.data_directory.clone()),
        config_file: Some(facts.config_file.clone()),
        hba_file: Some(facts.hba_file.clone()),
        ident_file: Some(facts.ident_file.clone()),
        data_checksums: Some(if facts.data_checksums { "on" } else { "off" }.to_owned()),
        xlog_segment_size: Some(facts.wal_segment_size),
        tablespaces: facts.tablespaces.clone(),
        timeline: Some(start.position.timeline),
        begin_time: Some(start.time),
        begin_xlog: Some(start.position.lsn.clone()),
        begin_wal: Some(start.position.wal.clone()),
        begin_offset: Some(start.position.offset),
        ..BackupInfo::default()
    }
}

/// `info` once the backup stopped and everything it needs is stored.
pub fn done(mut info: BackupInfo, stop: &Stopped, size: u64) -> BackupInfo {
    info.status = Some(Status::Done);
    info.end_time = Some(stop.time);
    info.end_xlog = Some(stop.position.lsn.clone());
    info.end_wal = Some(stop.position.wal.clone());
    info.end_offset = Some(stop.position.offset);
    info.backup_label = Some(stop.label.clone());
    info.size = Some(size);
    info
}

/// `info` after the step `step` (`uploading data`, …) failed with `error`: barman's
/// form, the first line of the error only.
pub fn failed(mut info: BackupInfo, step: &str, error: &str) -> BackupInfo {
    let first = error.trim().lines().next().unwrap_or("").trim();
    let first = if first.is_empty() {
        "unknown error"
    } else {
        first
    };
    info.status = Some(Status::Failed);
    info.error = Some(format!("failure {step} ({first})"));
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{InfoTime, Tablespace};
    use crate::session::WalPosition;

    fn facts() -> ServerFacts {
        ServerFacts {
            version: 150018,
            system_identifier: "7442563521237112345".into(),
            data_directory: "/var/lib/postgresql/data".into(),
            config_file: "/var/lib/postgresql/data/postgresql.conf".into(),
            hba_file: "/var/lib/postgresql/data/pg_hba.conf".into(),
            ident_file: "/var/lib/postgresql/data/pg_ident.conf".into(),
            data_checksums: true,
            wal_segment_size: 16 << 20,
            tablespaces: vec![Tablespace {
                name: "tbs1".into(),
                oid: 16385,
                location: "/tbs1".into(),
            }],
            in_recovery: false,
        }
    }

    #[test]
    fn a_backup_is_recorded_started_then_done_as_barman_records_it() {
        let start = Started {
            position: WalPosition::of(0x1300_0028, 1, 16 << 20),
            time: InfoTime::parse("2026-11-30 00:19:33.672596+00:00").unwrap(),
        };
        let info = started(&facts(), &start, Some("nightly"));
        let text = info.render();
        for line in [
            "status=STARTED\n",
            "server_name=cloud\n",
            "begin_wal=000000010000000000000013\n",
            "begin_xlog=0/13000028\n",
            "begin_offset=40\n",
            "data_checksums=on\n",
            "tablespaces=[('tbs1', 16385, '/tbs1')]\n",
            "backup_name=nightly\n",
            "end_time=None\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let stop = Stopped {
            position: WalPosition::of(0x1400_0000, 1, 16 << 20),
            time: InfoTime::parse("2026-11-30 00:20:59+00:00").unwrap(),
            label: "START WAL LOCATION: 0/13000028 (file 000000010000000000000013)\n".into(),
            tablespace_map: String::new(),
        };
        let text = done(info, &stop, 1 << 30).render();
        for line in [
            "status=DONE\n",
            "end_wal=000000010000000000000013\n",
            "end_offset=0\n",
            "end_xlog=0/14000000\n",
            "backup_label='START WAL LOCATION: 0/13000028 (file 000000010000000000000013)\\n'\n",
            "size=1073741824\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_failure_keeps_barmans_form_and_only_the_first_line() {
        let info = failed(
            BackupInfo::default(),
            "uploading data",
            "s3://b: cannot reach the store: connection refused\nmore detail",
        );
        assert_eq!(info.status, Some(Status::Failed));
        assert_eq!(
            info.error.as_deref(),
            Some("failure uploading data (s3://b: cannot reach the store: connection refused)")
        );
        let empty = failed(BackupInfo::default(), "uploading data", "  ");
        assert_eq!(
            empty.error.as_deref(),
            Some("failure uploading data (unknown error)")
        );
    }
}
