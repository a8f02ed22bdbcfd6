//! `backup.info`: barman's description of one base backup, read and written exactly as
//! barman 3.19 does.
//!
//! The file is `key=value` lines in alphabetical key order, `None` for a missing value,
//! some values as Python literals (`backup_label`, `copy_stats`, `included_files`,
//! `tablespaces`). barman refuses a key it does not know, for the whole server
//! (`barman-cloud-backup-list` and `-delete` exit 1), so [`BackupInfo::render`] writes
//! barman's key set and nothing else; a key from a newer barman is kept when read, so
//! walship can still list such a backup, but never written.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

use crate::pyrepr::{LiteralError, PyValue, write_str_repr};

/// Where a backup stands. barman writes STARTED when a backup begins and DONE or FAILED
/// at its end; a run that crashed stays STARTED for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Empty,
    Started,
    WaitingForWals,
    Done,
    Syncing,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Empty => "EMPTY",
            Status::Started => "STARTED",
            Status::WaitingForWals => "WAITING_FOR_WALS",
            Status::Done => "DONE",
            Status::Syncing => "SYNCING",
            Status::Failed => "FAILED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();

    fn from_str(s: &str) -> Result<Status, ()> {
        Ok(match s {
            "EMPTY" => Status::Empty,
            "STARTED" => Status::Started,
            "WAITING_FOR_WALS" => Status::WaitingForWals,
            "DONE" => Status::Done,
            "SYNCING" => Status::Syncing,
            "FAILED" => Status::Failed,
            _ => return Err(()),
        })
    }
}

/// A tablespace as `backup.info` records it: `(name, oid, location)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub name: String,
    pub oid: u32,
    pub location: String,
}

/// A time as barman writes it: Python's `str(datetime)` of an aware datetime
/// (`2026-11-30 00:19:33.672596+00:00`), the offset kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InfoTime(pub DateTime<FixedOffset>);

impl fmt::Display for InfoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S"))?;
        let micros = t.timestamp_subsec_micros();
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        write!(f, "{}", t.format("%:z"))
    }
}

impl InfoTime {
    /// Reads what barman (through dateutil) reads for these fields: an ISO date and time
    /// with a space or `T`, optional fraction, and an offset; a time without an offset
    /// is local time, as barman takes it.
    pub fn parse(text: &str) -> Option<InfoTime> {
        let text = text.trim();
        for format in [
            "%Y-%m-%d %H:%M:%S%.f%:z",
            "%Y-%m-%dT%H:%M:%S%.f%:z",
            "%Y-%m-%d %H:%M:%S%.f%z",
        ] {
            if let Ok(t) = DateTime::parse_from_str(text, format) {
                return Some(InfoTime(t));
            }
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
                let local = Local.from_local_datetime(&naive).earliest()?;
                return Some(InfoTime(local.fixed_offset()));
            }
        }
        None
    }
}

/// One `backup.info`. Every field barman 3.19 writes, typed; `None` is barman's `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackupInfo {
    pub backup_label: Option<String>,
    /// Written only when set (barman hides it when null).
    pub backup_name: Option<String>,
    pub begin_offset: Option<u64>,
    pub begin_time: Option<InfoTime>,
    pub begin_wal: Option<String>,
    pub begin_xlog: Option<String>,
    pub children_backup_ids: Option<Vec<String>>,
    pub cluster_size: Option<u64>,
    pub compression: Option<String>,
    pub config_file: Option<String>,
    pub copy_stats: Option<PyValue>,
    pub data_checksums: Option<String>,
    pub deduplicated_size: Option<u64>,
    pub encryption: Option<String>,
    pub end_offset: Option<u64>,
    pub end_time: Option<InfoTime>,
    pub end_wal: Option<String>,
    pub end_xlog: Option<String>,
    pub error: Option<String>,
    pub hba_file: Option<String>,
    pub ident_file: Option<String>,
    pub included_files: Option<PyValue>,
    pub mode: Option<String>,
    pub parent_backup_id: Option<String>,
    pub pgdata: Option<String>,
    pub server_name: Option<String>,
    pub size: Option<u64>,
    /// Only in snapshot backups; read, never written.
    pub snapshots_info: Option<PyValue>,
    pub status: Option<Status>,
    pub summarize_wal: Option<String>,
    pub systemid: Option<String>,
    /// barman writes `None` for no tablespace, never an empty list.
    pub tablespaces: Vec<Tablespace>,
    pub timeline: Option<u32>,
    pub version: Option<u32>,
    pub xlog_segment_size: Option<u64>,
    /// Keys this barman does not know (a newer barman's), kept as read.
    pub unknown: BTreeMap<String, String>,
}

/// Why a `backup.info` cannot be read: the line and key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error("line {line}: {text:?} is not key=value")]
    NotKeyValue { line: usize, text: String },
    #[error("line {line}: {key}={value:?}: {expected}")]
    BadValue {
        line: usize,
        key: String,
        value: String,
        expected: String,
    },
    #[error("the file is not UTF-8")]
    NotUtf8,
}

impl BackupInfo {
    /// Reads a `backup.info` as barman's `FieldListFile.load` does: blank lines and `#`
    /// comments skipped, key and value trimmed, `None` for null.
    pub fn parse(bytes: &[u8]) -> Result<BackupInfo, InfoError> {
        let text = std::str::from_utf8(bytes).map_err(|_| InfoError::NotUtf8)?;
        let mut info = BackupInfo::default();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() || line.trim_end().starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(InfoError::NotKeyValue {
                    line: number,
                    text: line.to_owned(),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            info.set(key, value)
                .map_err(|expected| InfoError::BadValue {
                    line: number,
                    key: key.to_owned(),
                    value: value.to_owned(),
                    expected,
                })?;
        }
        Ok(info)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let null = value == "None";
        let text = || (!null).then(|| value.to_owned());
        let number = || -> Result<Option<u64>, String> {
            if null {
                return Ok(None);
            }
            value
                .parse()
                .map(Some)
                .map_err(|_| "expected a whole number or None".to_owned())
        };
        let small = || -> Result<Option<u32>, String> {
            number()?
                .map(u32::try_from)
                .transpose()
                .map_err(|_| "expected a number below 2^32".to_owned())
        };
        let time = || -> Result<Option<InfoTime>, String> {
            if null {
                return Ok(None);
            }
            InfoTime::parse(value)
                .map(Some)
                .ok_or_else(|| "expected a time such as 2026-11-30 00:19:33.672596+00:00".into())
        };
        let literal = || -> Result<Option<PyValue>, String> {
            if null {
                return Ok(None);
            }
            PyValue::parse(value)
                .map(Some)
                .map_err(|e: LiteralError| format!("expected a Python literal ({e})"))
        };
        match key {
            "backup_label" => {
                self.backup_label = match literal()? {
                    None => None,
                    Some(PyValue::Str(s)) => Some(s),
                    Some(_) => return Err("expected a quoted string or None".into()),
                }
            }
            "backup_name" => self.backup_name = text(),
            "begin_offset" => self.begin_offset = number()?,
            "begin_time" => self.begin_time = time()?,
            "begin_wal" => self.begin_wal = text(),
            "begin_xlog" => self.begin_xlog = text(),
            "children_backup_ids" => {
                self.children_backup_ids = text()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.split(',').map(str::to_owned).collect())
            }
            "cluster_size" => self.cluster_size = number()?,
            "compression" => self.compression = text(),
            "config_file" => self.config_file = text(),
            "copy_stats" => self.copy_stats = literal()?,
            "data_checksums" => self.data_checksums = text(),
            "deduplicated_size" => self.deduplicated_size = number()?,
            "encryption" => self.encryption = text(),
            "end_offset" => self.end_offset = number()?,
            "end_time" => self.end_time = time()?,
            "end_wal" => self.end_wal = text(),
            "end_xlog" => self.end_xlog = text(),
            "error" => self.error = text(),
            "hba_file" => self.hba_file = text(),
            "ident_file" => self.ident_file = text(),
            "included_files" => self.included_files = literal()?,
            "mode" => self.mode = text(),
            "parent_backup_id" => self.parent_backup_id = text(),
            "pgdata" => self.pgdata = text(),
            "server_name" => self.server_name = text(),
            "size" => self.size = number()?,
            "snapshots_info" => self.snapshots_info = literal()?,
            "status" => {
                self.status = match text() {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|()| {
                        "expected EMPTY, STARTED, WAITING_FOR_WALS, DONE, SYNCING or FAILED"
                            .to_owned()
                    })?),
                }
            }
            "summarize_wal" => self.summarize_wal = text(),
            "systemid" => self.systemid = text(),
            "tablespaces" => self.tablespaces = tablespaces(literal()?)?,
            "timeline" => self.timeline = small()?,
            "version" => self.version = small()?,
            "xlog_segment_size" => self.xlog_segment_size = number()?,
            _ => {
                self.unknown.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(())
    }

    /// The file as barman 3.19 writes it: its key set in alphabetical order, `None` for
    /// null, `backup_name` only when set, no `snapshots_info`, and no unknown key.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: Option<String>| {
            let _ = writeln!(out, "{key}={}", value.as_deref().unwrap_or("None"));
        };
        let num = |n: Option<u64>| n.map(|n| n.to_string());
        let small = |n: Option<u32>| n.map(|n| n.to_string());
        let time = |t: Option<InfoTime>| t.map(|t| t.to_string());
        // Python's null_repr: an empty value is None too.
        let repr = |v: &Option<PyValue>| {
            v.as_ref()
                .filter(|v| !is_empty_literal(v))
                .map(ToString::to_string)
        };
        line(
            "backup_label",
            self.backup_label
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let mut text = String::new();
                    let _ = write_str_repr(&mut text, s);
                    text
                }),
        );
        if let Some(name) = &self.backup_name {
            line("backup_name", Some(name.clone()));
        }
        line("begin_offset", num(self.begin_offset));
        line("begin_time", time(self.begin_time));
        line("begin_wal", self.begin_wal.clone());
        line("begin_xlog", self.begin_xlog.clone());
        line(
            "children_backup_ids",
            self.children_backup_ids
                .as_ref()
                .filter(|ids| !ids.is_empty())
                .map(|ids| ids.join(",")),
        );
        line("cluster_size", num(self.cluster_size));
        line("compression", self.compression.clone());
        line("config_file", self.config_file.clone());
        line("copy_stats", repr(&self.copy_stats));
        line("data_checksums", self.data_checksums.clone());
        line("deduplicated_size", num(self.deduplicated_size));
        line("encryption", self.encryption.clone());
        line("end_offset", num(self.end_offset));
        line("end_time", time(self.end_time));
        line("end_wal", self.end_wal.clone());
        line("end_xlog", self.end_xlog.clone());
        line("error", self.error.clone());
        line("hba_file", self.hba_file.clone());
        line("ident_file", self.ident_file.clone());
        line("included_files", repr(&self.included_files));
        line("mode", self.mode.clone());
        line("parent_backup_id", self.parent_backup_id.clone());
        line("pgdata", self.pgdata.clone());
        line("server_name", self.server_name.clone());
        line("size", num(self.size));
        line("status", self.status.map(|s| s.as_str().to_owned()));
        line("summarize_wal", self.summarize_wal.clone());
        line("systemid", self.systemid.clone());
        line(
            "tablespaces",
            (!self.tablespaces.is_empty()).then(|| {
                PyValue::List(
                    self.tablespaces
                        .iter()
                        .map(|t| {
                            PyValue::Tuple(vec![
                                PyValue::Str(t.name.clone()),
                                PyValue::Int(i64::from(t.oid)),
                                PyValue::Str(t.location.clone()),
                            ])
                        })
                        .collect(),
                )
                .to_string()
            }),
        );
        line("timeline", small(self.timeline));
        line("version", small(self.version));
        line("xlog_segment_size", num(self.xlog_segment_size));
        out
    }
}

fn is_empty_literal(v: &PyValue) -> bool {
    match v {
        PyValue::None | PyValue::Bool(false) | PyValue::Int(0) => true,
        PyValue::Str(s) => s.is_empty(),
        PyValue::List(items) | PyValue::Tuple(items) => items.is_empty(),
        PyValue::Dict(pairs) => pairs.is_empty(),
        PyValue::Bool(true) | PyValue::Int(_) | PyValue::Float(_) => false,
    }
}

fn tablespaces(value: Option<PyValue>) -> Result<Vec<Tablespace>, String> {
    const EXPECTED: &str = "expected None or a list of (name, oid, location) tuples";
    let items = match value {
        None => return Ok(Vec::new()),
        Some(PyValue::List(items) | PyValue::Tuple(items)) => items,
        Some(_) => return Err(EXPECTED.into()),
    };
    items
        .into_iter()
        .map(|item| match item {
            PyValue::Tuple(fields) | PyValue::List(fields) => match fields.as_slice() {
                [
                    PyValue::Str(name),
                    PyValue::Int(oid),
                    PyValue::Str(location),
                ] => Ok(Tablespace {
                    name: name.clone(),
                    oid: u32::try_from(*oid).map_err(|_| EXPECTED.to_owned())?,
                    location: location.clone(),
                }),
                _ => Err(EXPECTED.into()),
            },
            _ => Err(EXPECTED.into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup.info in barman-cloud-backup 3.19.1's form for a named backup with one
    /// tablespace: barman's whole key set, its value formats (shared/BACKUP-LAYOUT.md).
    const BARMAN: &str = "\
backup_label='START WAL LOCATION: 0/13000028 (file 000000010000000000000013)\\nCHECKPOINT LOCATION: 0/13000060\\nBACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: 2026-11-30 00:19:33 UTC\\nLABEL: Barman backup cloud 20261130T001933\\nSTART TIMELINE: 1\\n'
backup_name=nightly
begin_offset=40
begin_time=2026-11-30 00:19:33.672596+00:00
begin_wal=000000010000000000000013
begin_xlog=0/13000028
children_backup_ids=None
cluster_size=None
compression=None
config_file=/var/lib/postgresql/data/postgresql.conf
copy_stats={'total_time': 5.623716, 'number_of_workers': 2, 'analysis_time': 0, 'analysis_time_per_item': {}, 'copy_time_per_item': {}, 'serialized_copy_time_per_item': {}, 'copy_time': 5.612983}
data_checksums=off
deduplicated_size=None
encryption=None
end_offset=312
end_time=2026-11-30 00:19:39+00:00
end_wal=000000010000000000000013
end_xlog=0/13000138
error=None
hba_file=/var/lib/postgresql/data/pg_hba.conf
ident_file=/var/lib/postgresql/data/pg_ident.conf
included_files=None
mode=None
parent_backup_id=None
pgdata=/var/lib/postgresql/data
server_name=cloud
size=None
status=DONE
summarize_wal=None
systemid=7442563521237112345
tablespaces=[('tbs1', 16385, '/var/lib/tbs1')]
timeline=1
version=150018
xlog_segment_size=16777216
";

    #[test]
    fn barmans_file_is_read_into_types_and_written_back_byte_for_byte() {
        let info = BackupInfo::parse(BARMAN.as_bytes()).unwrap();
        assert_eq!(info.status, Some(Status::Done));
        assert_eq!(info.version, Some(150018));
        assert_eq!(info.timeline, Some(1));
        assert_eq!(info.begin_wal.as_deref(), Some("000000010000000000000013"));
        assert_eq!(
            info.tablespaces,
            [Tablespace {
                name: "tbs1".into(),
                oid: 16385,
                location: "/var/lib/tbs1".into()
            }]
        );
        assert!(
            info.backup_label
                .as_deref()
                .unwrap()
                .contains("\nCHECKPOINT LOCATION")
        );
        assert_eq!(
            info.end_time.unwrap().0.to_rfc3339(),
            "2026-11-30T00:19:39+00:00"
        );
        assert!(info.unknown.is_empty());
        assert_eq!(info.render(), BARMAN);
    }

    #[test]
    fn keys_come_out_in_alphabetical_order_and_null_as_none() {
        let info = BackupInfo {
            status: Some(Status::Started),
            ..BackupInfo::default()
        };
        let text = info.render();
        let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 33, "barman 3.19 writes 33 keys when unnamed");
        assert!(text.contains("status=STARTED\n") && text.contains("tablespaces=None\n"));
        assert!(!text.contains("backup_name") && !text.contains("snapshots_info"));
    }

    /// barman refuses a key it does not know for the whole server; walship reads one
    /// (a newer barman's) but never writes it.
    #[test]
    fn an_unknown_key_is_read_but_never_written() {
        let info = BackupInfo::parse(b"status=DONE\nfuture_key=1\n").unwrap();
        assert_eq!(
            info.unknown.get("future_key").map(String::as_str),
            Some("1")
        );
        assert!(!info.render().contains("future_key"));
    }

    #[test]
    fn a_bad_value_names_its_line_key_and_what_is_expected() {
        for (text, expected) in [
            (
                "status=DONE\nversion=fifteen\n",
                "line 2: version=\"fifteen\": expected a whole number",
            ),
            (
                "status=FINISHED\n",
                "line 1: status=\"FINISHED\": expected EMPTY",
            ),
            (
                "tablespaces=[('a', 'b', 'c')]\n",
                "expected None or a list of (name, oid, location)",
            ),
            ("end_time=yesterday\n", "expected a time"),
            (
                "no equals sign\n",
                "line 1: \"no equals sign\" is not key=value",
            ),
        ] {
            let err = BackupInfo::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn times_are_written_as_python_prints_them() {
        for (read, written) in [
            (
                "2026-11-30 00:19:33.672596+00:00",
                "2026-11-30 00:19:33.672596+00:00",
            ),
            ("2026-11-30 00:19:33+02:00", "2026-11-30 00:19:33+02:00"),
            (
                "2026-11-30T00:19:33.000100+00:00",
                "2026-11-30 00:19:33.000100+00:00",
            ),
        ] {
            assert_eq!(InfoTime::parse(read).unwrap().to_string(), written);
        }
        assert!(
            InfoTime::parse("2026-11-30 00:19:33").is_some(),
            "local time"
        );
    }
}
