//! The PostgreSQL side of a base backup: one session, held open from
//! `pg_backup_start` to `pg_backup_stop` (a non-exclusive backup ends when its session
//! does), the facts `backup.info` records, and the WAL positions as file names.

use std::fmt;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::info::{InfoTime, Tablespace};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom to connect: libpq's environment, then the command's flags.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// A host name, an address, or a directory holding the Unix socket.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.dbname
        )
    }
}

impl ConnParams {
    /// From libpq's variables as `var` reads them (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSWORD`). CloudNativePG's pod sets only `PGHOST` and `PGPORT`,
    /// so the user and database default to `postgres`, as barman-cloud-backup's do
    /// under the plugin; the host to the Unix socket directory Debian's libpq uses.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<ConnParams, String> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let port = match get("PGPORT") {
            None => 5432,
            Some(p) => p
                .parse()
                .map_err(|_| format!("PGPORT={p:?} is not a port number; expected 1 to 65535"))?,
        };
        Ok(ConnParams {
            host: get("PGHOST").unwrap_or_else(|| "/var/run/postgresql".to_owned()),
            port,
            user: get("PGUSER").unwrap_or_else(|| "postgres".to_owned()),
            dbname: get("PGDATABASE").unwrap_or_else(|| "postgres".to_owned()),
            password: var("PGPASSWORD").filter(|p| !p.is_empty()),
        })
    }
}

/// Why the session failed: what it was doing, and PostgreSQL's own message.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to PostgreSQL ({params}): {detail}")]
    Connect { params: String, detail: String },
    #[error("PostgreSQL refused {what}: {detail}")]
    Query { what: &'static str, detail: String },
}

fn query_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SessionError {
    move |e| SessionError::Query {
        what,
        detail: pg_message(&e),
    }
}

/// PostgreSQL's message and hint, or the driver's error when the server sent none.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(hint) => format!("{} (hint: {hint})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

/// What `backup.info` records of the server itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version_num`, e.g. 150018.
    pub version: u32,
    pub system_identifier: String,
    pub data_directory: String,
    pub config_file: String,
    pub hba_file: String,
    pub ident_file: String,
    pub data_checksums: bool,
    pub wal_segment_size: u64,
    pub tablespaces: Vec<Tablespace>,
    /// Whether the server is a standby (a backup taken from it ends differently).
    pub in_recovery: bool,
}

/// A WAL position: the LSN, the segment file holding it and the offset in that file, as
/// `pg_walfile_name_offset` gives them (a position at a segment's very start belongs to
/// the previous file, at its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPosition {
    /// `0/13000028`.
    pub lsn: String,
    pub wal: String,
    pub offset: u64,
    pub timeline: u32,
}

impl WalPosition {
    /// The position of `lsn` on `timeline` with segments of `segment_size` bytes.
    pub fn of(lsn: u64, timeline: u32, segment_size: u64) -> WalPosition {
        let segments_per_log = 0x1_0000_0000u64 / segment_size;
        let segment = lsn.saturating_sub(1) / segment_size;
        WalPosition {
            lsn: format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
            wal: format!(
                "{timeline:08X}{:08X}{:08X}",
                segment / segments_per_log,
                segment % segments_per_log
            ),
            offset: lsn % segment_size,
            timeline,
        }
    }
}

/// Reads `0/13000028` (pg_lsn's text form).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= 0xffff_ffff && low <= 0xffff_ffff).then_some((high << 32) | low)
}

/// What `pg_stat_archiver` and the archive settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverState {
    /// Why archiving cannot deliver a backup's WAL, when it cannot.
    pub problem: Option<String>,
    pub archived: i64,
    pub failed: i64,
    pub last_failed_wal: String,
}

/// Where the backup started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub position: WalPosition,
    pub time: InfoTime,
}

/// Where it ended, with the two files PostgreSQL hands over for the backup to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub position: WalPosition,
    pub time: InfoTime,
    /// `backup_label`'s contents.
    pub label: String,
    /// `tablespace_map`'s contents (barman does not store it: restore recreates the
    /// links from `backup.info`'s tablespaces).
    pub tablespace_map: String,
}

/// One session to PostgreSQL. Dropping it ends the session, and with it a backup still
/// running.
pub struct Session {
    client: Client,
    connection: JoinHandle<()>,
    facts: Option<ServerFacts>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Session {
    pub async fn connect(params: &ConnParams) -> Result<Session, SessionError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&params.host)
            .port(params.port)
            .user(&params.user)
            .dbname(&params.dbname)
            .application_name("walship_backup")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &params.password {
            config.password(password);
        }
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|e| SessionError::Connect {
                    params: params.to_string(),
                    detail: pg_message(&e),
                })?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Session {
            client,
            connection,
            facts: None,
        })
    }

    /// The server's facts, read once.
    pub async fn facts(&mut self) -> Result<&ServerFacts, SessionError> {
        if self.facts.is_none() {
            self.facts = Some(self.read_facts().await?);
        }
        Ok(self.facts.as_ref().expect("just read"))
    }

    async fn read_facts(&self) -> Result<ServerFacts, SessionError> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version_num'), \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        current_setting('data_directory'), \
                        current_setting('config_file'), \
                        current_setting('hba_file'), \
                        current_setting('ident_file'), \
                        current_setting('data_checksums'), \
                        current_setting('wal_segment_size'), \
                        pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(query_error("the queries for the server's settings"))?;
        let version: String = row.get(0);
        let segment: String = row.get(7);
        let tablespaces = self
            .client
            .query(
                "SELECT spcname::text, oid::bigint, pg_tablespace_location(oid) FROM pg_tablespace \
                 WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
                &[],
            )
            .await
            .map_err(query_error("the tablespace query"))?
            .iter()
            .map(|r| Tablespace {
                name: r.get(0),
                oid: u32::try_from(r.get::<_, i64>(1)).unwrap_or_default(),
                location: r.get(2),
            })
            .collect();
        Ok(ServerFacts {
            version: version.parse().unwrap_or_default(),
            system_identifier: row.get(1),
            data_directory: row.get(2),
            config_file: row.get(3),
            hba_file: row.get(4),
            ident_file: row.get(5),
            data_checksums: row.get::<_, String>(6) == "on",
            wal_segment_size: parse_size(&segment).unwrap_or(16 << 20),
            tablespaces,
            in_recovery: row.get(8),
        })
    }

    /// `pg_backup_start` (`pg_start_backup` before PostgreSQL 15), non-exclusive;
    /// `fast` asks for an immediate checkpoint.
    pub async fn start(&mut self, label: &str, fast: bool) -> Result<Started, SessionError> {
        let version = self.facts().await?.version;
        let segment_size = self.facts().await?.wal_segment_size;
        // A backup may run for hours; an idle_session_timeout or statement_timeout set
        // for the role would end the session and with it the backup.
        self.client
            .batch_execute("SET idle_session_timeout TO 0; SET statement_timeout TO 0")
            .await
            .map_err(query_error("turning off the session's timeouts"))?;
        let start = if version >= 150000 {
            "SELECT pg_backup_start($1, $2)::text, now()::text"
        } else {
            "SELECT pg_start_backup($1, $2, false)::text, now()::text"
        };
        let row = self
            .client
            .query_one(start, &[&label, &fast])
            .await
            .map_err(query_error("to start the backup"))?;
        let lsn: String = row.get(0);
        let timeline = self.timeline().await?;
        Ok(Started {
            position: WalPosition::of(parse_lsn(&lsn).unwrap_or_default(), timeline, segment_size),
            time: parse_now(&row.get::<_, String>(1))?,
        })
    }

    /// `pg_backup_stop` (`pg_stop_backup` before 15), waiting until PostgreSQL has
    /// archived the WAL the backup needs: a backup whose WAL is not archived cannot be
    /// restored, so a backup never ends DONE without it.
    pub async fn stop(&mut self) -> Result<Stopped, SessionError> {
        let version = self.facts().await?.version;
        let segment_size = self.facts().await?.wal_segment_size;
        let stop = if version >= 150000 {
            "SELECT lsn::text, labelfile, spcmapfile, now()::text FROM pg_backup_stop(true)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile, now()::text FROM pg_stop_backup(false, true)"
        };
        let row = self
            .client
            .query_one(stop, &[])
            .await
            .map_err(query_error("to stop the backup"))?;
        let lsn: String = row.get(0);
        let label: String = row.get(1);
        let timeline = label_timeline(&label).unwrap_or(self.timeline().await?);
        Ok(Stopped {
            position: WalPosition::of(parse_lsn(&lsn).unwrap_or_default(), timeline, segment_size),
            label,
            tablespace_map: row.get::<_, Option<String>>(2).unwrap_or_default(),
            time: parse_now(&row.get::<_, String>(3))?,
        })
    }

    /// Whether WAL archiving can deliver the WAL a backup needs: `Err` with the reason
    /// when archiving is off, has no command, or its most recent attempt failed.
    pub async fn archiving(&self) -> Result<ArchiverState, SessionError> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'),                         coalesce(current_setting('archive_library', true), ''),                         archived_count, failed_count, coalesce(last_failed_wal, ''),                         coalesce(last_failed_time > coalesce(last_archived_time,                                  '-infinity'::timestamptz), false),                         pg_is_in_recovery()                  FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(query_error("the archiver's settings and statistics"))?;
        let mode: String = row.get(0);
        let command: String = row.get(1);
        let library: String = row.get(2);
        let in_recovery: bool = row.get(7);
        let problem = if mode == "off" {
            Some("WAL archiving is off (archive_mode = off)".to_owned())
        } else if in_recovery && mode != "always" {
            Some(format!(
                "this server is a standby and archives WAL only with archive_mode = always                  (it is {mode})"
            ))
        } else if command.trim().is_empty() && library.trim().is_empty() {
            Some("archive_command is empty (and no archive_library is set)".to_owned())
        } else if row.get::<_, bool>(6) {
            Some(format!(
                "WAL archiving is failing: the last attempt, for {}, failed, and none has                  succeeded since (pg_stat_archiver)",
                row.get::<_, String>(5)
            ))
        } else {
            None
        };
        Ok(ArchiverState {
            problem,
            archived: row.get(3),
            failed: row.get(4),
            last_failed_wal: row.get(5),
        })
    }

    /// The timeline of the last checkpoint (the backup's, right after its checkpoint).
    async fn timeline(&self) -> Result<u32, SessionError> {
        let row = self
            .client
            .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
            .await
            .map_err(query_error("the timeline query"))?;
        Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or_default())
    }
}

/// `backup_label`'s `START TIMELINE: N`.
fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|n| n.trim().parse().ok())
}

/// `wal_segment_size`'s text: `16MB`, `1GB`, or bytes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().ok()?;
    Some(match unit.trim() {
        "" | "B" => n,
        "kB" => n << 10,
        "MB" => n << 20,
        "GB" => n << 30,
        _ => return None,
    })
}

/// `now()::text`: `2026-11-30 00:19:33.672596+00` (the offset in hours, minutes only
/// when not whole).
fn parse_now(text: &str) -> Result<InfoTime, SessionError> {
    let bad = || SessionError::Query {
        what: "to tell the time",
        detail: format!("unexpected timestamp {text:?}"),
    };
    let (clock, sign, offset) = match text.rfind(['+', '-']) {
        Some(i) if i > 10 => (&text[..i], &text[i..i + 1], &text[i + 1..]),
        _ => return Err(bad()),
    };
    let offset = match offset.split_once(':') {
        Some((h, m)) => format!("{h}:{m}"),
        None => format!("{offset}:00"),
    };
    InfoTime::parse(&format!("{clock}{sign}{offset}")).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_are_named_as_pg_walfile_name_offset_names_them() {
        let mb16 = 16 << 20;
        let p = WalPosition::of(parse_lsn("0/13000028").unwrap(), 1, mb16);
        assert_eq!((p.wal.as_str(), p.offset), ("000000010000000000000013", 40));
        assert_eq!(p.lsn, "0/13000028");
        // At a segment boundary: the end of the previous file.
        let p = WalPosition::of(parse_lsn("0/14000000").unwrap(), 1, mb16);
        assert_eq!((p.wal.as_str(), p.offset), ("000000010000000000000013", 0));
        let p = WalPosition::of(parse_lsn("1/FF000100").unwrap(), 3, mb16);
        assert_eq!(p.wal, "0000000300000001000000FF");
        let p = WalPosition::of(parse_lsn("2/40000010").unwrap(), 2, 1 << 30);
        assert_eq!(p.wal, "000000020000000200000001");
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn libpq_variables_are_read_and_default_to_postgres_as_under_the_plugin() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let p = ConnParams::from_env(&env(&[("PGHOST", "/controller/run"), ("PGPORT", "5433")]))
            .unwrap();
        assert_eq!(
            p.to_string(),
            "host=/controller/run port=5433 user=postgres dbname=postgres"
        );
        let p = ConnParams::from_env(&env(&[("PGUSER", "backup"), ("PGPASSWORD", "pw")])).unwrap();
        assert_eq!((p.user.as_str(), p.port), ("backup", 5432));
        assert!(!format!("{p:?}").contains("pw"));
        let err = ConnParams::from_env(&env(&[("PGPORT", "54x")])).unwrap_err();
        assert!(err.contains("PGPORT=\"54x\""), "{err}");
    }

    #[test]
    fn settings_and_times_read_as_postgresql_prints_them() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(
            parse_now("2026-11-30 00:19:33.672596+00")
                .unwrap()
                .to_string(),
            "2026-11-30 00:19:33.672596+00:00"
        );
        assert_eq!(
            parse_now("2026-11-30 05:49:33+05:30").unwrap().to_string(),
            "2026-11-30 05:49:33+05:30"
        );
        assert_eq!(
            label_timeline("START WAL LOCATION: x\nSTART TIMELINE: 7\n"),
            Some(7)
        );
    }
}
