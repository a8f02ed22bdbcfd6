//! Throwaway PostgreSQL 15 clusters, run as an unprivileged user when the tests
//! run as root (PostgreSQL refuses to start as root).

use std::env;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::util::{describe, free_port, run_checked, tail, wait_until};

/// The system user the kit creates to run PostgreSQL when the tests run as root.
const DEFAULT_PG_USER: &str = "walship-pg";
/// The database superuser every cluster is initialised with.
const SUPERUSER: &str = "postgres";
/// How long `pg_ctl` may wait for a start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// PostgreSQL's binaries: `$WALSHIP_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    env::var_os("WALSHIP_PG_BIN")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The unprivileged account PostgreSQL runs as.
#[derive(Clone, Debug)]
pub struct PgUser {
    /// Login name (`walship-pg` unless `$WALSHIP_PG_USER` says otherwise).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// The user PostgreSQL runs as: `None` when the tests do not run as root (the tools
/// then run as the current user); when root, the `walship-pg` system user, created
/// with `useradd` on first use.
pub fn pg_user() -> Result<Option<&'static PgUser>> {
    static USER: OnceLock<Option<PgUser>> = OnceLock::new();
    static CREATING: Mutex<()> = Mutex::new(());
    if let Some(user) = USER.get() {
        return Ok(user.as_ref());
    }
    let _guard = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(user) = USER.get() {
        return Ok(user.as_ref());
    }
    let user = if effective_uid()? == 0 {
        let name = env::var("WALSHIP_PG_USER").unwrap_or_else(|_| DEFAULT_PG_USER.to_owned());
        Some(ensure_user(&name)?)
    } else {
        None
    };
    Ok(USER.get_or_init(|| user).as_ref())
}

fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

fn ensure_user(name: &str) -> Result<PgUser> {
    if let Some(user) = lookup_user(name)? {
        return Ok(user);
    }
    let mut useradd = Command::new("useradd");
    useradd
        .args([
            "--system",
            "--create-home",
            "--user-group",
            "--shell",
            "/bin/sh",
        ])
        .arg(name);
    let added = run_checked(&mut useradd);
    // Another test process may have created the user meanwhile: look again before failing.
    match (lookup_user(name)?, added) {
        (Some(user), _) => Ok(user),
        (None, Err(e)) => Err(e.context(format!("creating the PostgreSQL user {name}"))),
        (None, Ok(_)) => bail!("useradd {name} succeeded but the user cannot be found"),
    }
}

fn lookup_user(name: &str) -> Result<Option<PgUser>> {
    let output = Command::new("getent")
        .args(["passwd", name])
        .output()
        .context("running getent")?;
    if !output.status.success() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    if fields.len() < 7 {
        bail!("unexpected passwd entry for {name}: {line:?}");
    }
    Ok(Some(PgUser {
        name: name.to_owned(),
        uid: fields[2].parse().context("uid")?,
        gid: fields[3].parse().context("gid")?,
        home: PathBuf::from(fields[5]),
    }))
}

/// A command that runs `program` (a path, or a name in [`pg_bin_dir`]) as the
/// PostgreSQL user, with `cwd` as its working directory.
fn as_pg_user(program: &Path, cwd: &Path) -> Result<Command> {
    let mut cmd = match pg_user()? {
        Some(user) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .args(["--init-groups", "--"])
                .arg(program)
                .env("HOME", &user.home)
                .env("USER", &user.name);
            cmd
        }
        None => Command::new(program),
    };
    // Connection settings from the caller's environment must not redirect the tools.
    for var in [
        "PGHOST",
        "PGPORT",
        "PGDATA",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(cwd);
    Ok(cmd)
}

/// A command that runs `program` as the PostgreSQL user (when the tests run as root;
/// as the current user otherwise) in `cwd`: for processes that must share files with
/// PostgreSQL, such as the walship daemon reading `pg_wal`.
pub fn pg_user_command(program: &Path, cwd: &Path) -> Result<Command> {
    as_pg_user(program, cwd)
}

/// Whether the PostgreSQL user can execute `path` (every directory above it must be
/// searchable by that user too).
pub(crate) fn pg_can_execute(path: &Path) -> Result<bool> {
    let mut test = as_pg_user(Path::new("test"), Path::new("/"))?;
    test.arg("-x").arg(path);
    Ok(test.status().context("running test -x")?.success())
}

/// Gives `path` (recursively) to the PostgreSQL user, so the server and
/// `archive_command` can read config files and secrets and write where asked.
/// Does nothing when the tests do not run as root. The directories above `path`
/// must be searchable by others (true under `/tmp`, not under `/root`).
pub fn make_readable_by_pg(path: &Path) -> Result<()> {
    let Some(user) = pg_user()? else {
        return Ok(());
    };
    chown_tree(path, user).with_context(|| format!("giving {} to {}", path.display(), user.name))
}

fn chown_tree(path: &Path, user: &PgUser) -> std::io::Result<()> {
    lchown(path, Some(user.uid), Some(user.gid))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// A fresh temporary directory under `/tmp` owned by the PostgreSQL user; removed
/// when dropped.
pub fn pg_temp_dir() -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("walship-pg-")
        .tempdir_in("/tmp")
        .context("creating a temporary directory under /tmp")?;
    make_readable_by_pg(dir.path())?;
    Ok(dir)
}

/// How to initialise a cluster.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// WAL segment size in MiB (`initdb --wal-segsize`); default PostgreSQL's 16.
    /// Tests use 1 to get many segments quickly.
    pub wal_segsize_mb: Option<u32>,
}

/// Counters from `pg_stat_archiver`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    /// Files archived successfully.
    pub archived_count: u64,
    /// The last file archived successfully, if any.
    pub last_archived_wal: Option<String>,
    /// Failed attempts.
    pub failed_count: u64,
    /// The last file whose archiving failed, if any.
    pub last_failed_wal: Option<String>,
}

/// A PostgreSQL cluster in a directory of its own: the data directory is
/// `<dir>/data`, the log `<dir>/postgres.log`, the Unix socket lives in `<dir>`, and
/// TCP is 127.0.0.1 on a port chosen when the handle is made. Dropping the handle
/// stops a running server (immediate mode).
pub struct PgCluster {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    // Declared last so the server is stopped before its directory is removed.
    _temp: Option<TempDir>,
}

impl PgCluster {
    /// Runs `initdb` into `<dir>/data` (trust authentication, superuser `postgres`,
    /// UTF8 with the C locale) and writes the kit's base settings (`fsync = off`
    /// for speed). `dir` is created if missing and given to the PostgreSQL user.
    pub fn init(dir: &Path, options: InitOptions) -> Result<PgCluster> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        make_readable_by_pg(dir)?;
        let cluster = PgCluster::at(dir)?;
        let mut initdb = as_pg_user(&pg_bin_dir().join("initdb"), dir)?;
        initdb.arg("-D").arg(&cluster.data).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if let Some(mb) = options.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        run_checked(&mut initdb).context("initdb")?;
        cluster.append_conf(
            "postgresql.conf",
            &[
                // Tests never survive an OS crash, so durability only costs time.
                ("fsync", "off"),
                ("log_line_prefix", "%m [%p] "),
            ],
        )?;
        Ok(cluster)
    }

    /// Like [`PgCluster::init`] in a fresh temporary directory the handle owns.
    pub fn init_temp(options: InitOptions) -> Result<PgCluster> {
        let temp = pg_temp_dir()?;
        let mut cluster = PgCluster::init(temp.path(), options)?;
        cluster._temp = Some(temp);
        Ok(cluster)
    }

    /// A handle on a data directory another tool restored into `<temp>/data` (the
    /// handle owns `temp`); the tree is given to the PostgreSQL user.
    pub fn restored_in(temp: TempDir) -> Result<PgCluster> {
        make_readable_by_pg(temp.path())?;
        let mut cluster = PgCluster::at(temp.path())?;
        cluster._temp = Some(temp);
        Ok(cluster)
    }

    /// A handle on `<dir>/data` without running anything; picks a port.
    fn at(dir: &Path) -> Result<PgCluster> {
        Ok(PgCluster {
            dir: dir.to_path_buf(),
            data: dir.join("data"),
            port: free_port()?,
            env: Vec::new(),
            _temp: None,
        })
    }

    /// Appends settings to `postgresql.auto.conf`, which wins over `postgresql.conf`
    /// (as `pg_basebackup -R` does). Takes effect at the next start or [`reload`](Self::reload).
    pub fn set_conf(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.append_conf("postgresql.auto.conf", settings)
    }

    fn append_conf(&self, file: &str, settings: &[(&str, &str)]) -> Result<()> {
        let path = self.data.join(file);
        let mut text = String::from("\n");
        for (name, value) in settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        make_readable_by_pg(&path)
    }

    /// Sets an environment variable for the server (and so for `archive_command` and
    /// `restore_command`) from the next start on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts the server and waits until it accepts connections. If the chosen port
    /// was taken meanwhile, retries on a fresh one.
    pub fn start(&mut self) -> Result<()> {
        for attempt in 1..=3 {
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && self.log_contents().contains("Address already in use") => {
                    let _ = e;
                    self.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut pg_ctl = self.pg_ctl()?;
        pg_ctl
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-l"])
            .arg(self.log_path())
            .arg("-o")
            // Instance-specific settings go on the command line so that a base
            // backup's copy of the configuration files never carries them over.
            .arg(format!(
                "-p {} -k '{}' -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.display()
            ))
            .arg("start");
        for (name, value) in &self.env {
            pg_ctl.env(name, value);
        }
        run_checked(&mut pg_ctl).map(drop).with_context(|| {
            format!(
                "starting PostgreSQL in {}; log tail:\n{}",
                self.data.display(),
                tail(&self.log_contents(), 30)
            )
        })
    }

    /// Stops the server in fast mode (clean shutdown, waits for the archiver's last
    /// attempt as PostgreSQL does).
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server in immediate mode (like a crash: no shutdown checkpoint).
    pub fn stop_immediate(&self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut pg_ctl = self.pg_ctl()?;
        pg_ctl.args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "stop"]);
        run_checked(&mut pg_ctl)
            .map(drop)
            .with_context(|| format!("stopping PostgreSQL in {} ({mode})", self.data.display()))
    }

    /// Stops (fast) and starts the server.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// Makes the running server re-read its configuration files.
    pub fn reload(&self) -> Result<()> {
        let mut pg_ctl = self.pg_ctl()?;
        pg_ctl.arg("reload");
        run_checked(&mut pg_ctl).map(drop).context("pg_ctl reload")
    }

    /// Whether a postmaster holds the data directory (its pid file exists).
    pub fn is_running(&self) -> bool {
        self.data.join("postmaster.pid").exists()
    }

    fn pg_ctl(&self) -> Result<Command> {
        let mut cmd = as_pg_user(&pg_bin_dir().join("pg_ctl"), &self.dir)?;
        cmd.arg("-D").arg(&self.data);
        Ok(cmd)
    }

    /// Runs one SQL string through `psql` as the superuser in database `postgres`,
    /// stopping at the first error; returns stdout trimmed (unaligned, tuples only,
    /// so a single value comes back bare).
    pub fn psql(&self, sql: &str) -> Result<String> {
        let mut psql = as_pg_user(&pg_bin_dir().join("psql"), &self.dir)?;
        psql.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(self.connection_args())
            .args(["-d", "postgres", "-c", sql]);
        let output = run_checked(&mut psql)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs `pgbench` with `args` against database `postgres`; returns its stdout.
    pub fn pgbench(&self, args: &[&str]) -> Result<String> {
        let mut pgbench = as_pg_user(&pg_bin_dir().join("pgbench"), &self.dir)?;
        pgbench
            .args(self.connection_args())
            .args(args)
            .arg("postgres");
        let output = run_checked(&mut pgbench)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn connection_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            SUPERUSER.into(),
        ]
    }

    /// Takes a base backup of this running server with `pg_basebackup` (plain
    /// format, fast checkpoint, plus `extra_args`) into `<target_dir>/data` and
    /// returns a handle on the copy (not started, with a port of its own).
    /// `target_dir` is created if missing and given to the PostgreSQL user.
    pub fn basebackup(&self, target_dir: &Path, extra_args: &[&str]) -> Result<PgCluster> {
        fs::create_dir_all(target_dir)
            .with_context(|| format!("creating {}", target_dir.display()))?;
        make_readable_by_pg(target_dir)?;
        let copy = PgCluster::at(target_dir)?;
        let mut backup = as_pg_user(&pg_bin_dir().join("pg_basebackup"), target_dir)?;
        backup
            .args(self.connection_args())
            .arg("-D")
            .arg(&copy.data)
            .args(["-c", "fast"])
            .args(extra_args);
        let line = describe(&backup);
        run_checked(&mut backup).with_context(|| format!("base backup `{line}`"))?;
        Ok(copy)
    }

    /// Like [`PgCluster::basebackup`] into a fresh temporary directory the copy owns.
    pub fn basebackup_temp(&self, extra_args: &[&str]) -> Result<PgCluster> {
        let temp = pg_temp_dir()?;
        let mut copy = self.basebackup(temp.path(), extra_args)?;
        copy._temp = Some(temp);
        Ok(copy)
    }

    /// Creates `standby.signal`: the next start runs as a standby.
    pub fn create_standby_signal(&self) -> Result<()> {
        self.touch_data_file("standby.signal")
    }

    /// Creates `recovery.signal`: the next start runs targeted/archive recovery.
    pub fn create_recovery_signal(&self) -> Result<()> {
        self.touch_data_file("recovery.signal")
    }

    fn touch_data_file(&self, name: &str) -> Result<()> {
        let path = self.data.join(name);
        fs::write(&path, b"").with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        make_readable_by_pg(&path)
    }

    /// The cluster's own directory (holds `data/`, the log and the socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq connection string for this cluster (e.g. for `primary_conninfo`).
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres",
            self.port
        )
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server log so far (empty if none yet).
    pub fn log_contents(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Switches to a new WAL segment and returns the name of the segment it closed
    /// (the one the archiver gets next).
    pub fn switch_wal(&self) -> Result<String> {
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// The counters of `pg_stat_archiver`.
    pub fn archiver_stats(&self) -> Result<ArchiverStats> {
        let row = self.psql(
            "SELECT archived_count, coalesce(last_archived_wal, ''), \
                    failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )?;
        let fields: Vec<&str> = row.split('|').collect();
        let [archived, last_archived, failed, last_failed] = fields[..] else {
            bail!("unexpected pg_stat_archiver row {row:?}");
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(ArchiverStats {
            archived_count: archived.parse().context("archived_count")?,
            last_archived_wal: some(last_archived),
            failed_count: failed.parse().context("failed_count")?,
            last_failed_wal: some(last_failed),
        })
    }

    /// Waits until the archiver has archived segment `wal` or a later one (segment
    /// names of one timeline sort in WAL order), for at most `timeout`.
    pub fn wait_for_archived(&self, wal: &str, timeout: Duration) -> Result<ArchiverStats> {
        let mut stats = ArchiverStats::default();
        let waited = wait_until(timeout, &format!("{wal} to be archived"), || {
            stats = self.archiver_stats()?;
            Ok(stats
                .last_archived_wal
                .as_deref()
                .and_then(segment_part)
                .is_some_and(|last| segment_part(wal).is_some_and(|want| last >= want)))
        });
        waited.with_context(|| {
            format!(
                "archiver: {stats:?}; log tail:\n{}",
                tail(&self.log_contents(), 20)
            )
        })?;
        Ok(stats)
    }

    /// Waits (up to two minutes) until the server has left recovery.
    pub fn wait_for_recovery_end(&self) -> Result<()> {
        self.wait_for_recovery_end_within(Duration::from_secs(120))
    }

    /// Waits until `SELECT pg_is_in_recovery()` says false, for at most `timeout`.
    /// Fails at once if the server stops running.
    pub fn wait_for_recovery_end_within(&self, timeout: Duration) -> Result<()> {
        let waited = wait_until(timeout, "the end of recovery", || {
            if !self.is_running() {
                bail!("PostgreSQL is not running");
            }
            // Connection errors while the server is still starting up are expected.
            Ok(self
                .psql("SELECT pg_is_in_recovery()")
                .is_ok_and(|v| v == "f"))
        });
        waited.with_context(|| format!("log tail:\n{}", tail(&self.log_contents(), 30)))
    }
}

/// The 24-hex-digit segment part of a WAL file name (`.partial` etc. stripped), or
/// `None` for names that are not segments (timeline history files).
fn segment_part(name: &str) -> Option<&str> {
    let head = name.get(..24)?;
    head.bytes().all(|b| b.is_ascii_hexdigit()).then_some(head)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop_immediate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::port_is_open;

    #[test]
    fn segment_names_compare_in_wal_order() {
        assert_eq!(
            segment_part("000000010000000000000003"),
            Some("000000010000000000000003")
        );
        assert_eq!(
            segment_part("000000010000000000000003.partial"),
            Some("000000010000000000000003")
        );
        assert_eq!(segment_part("00000002.history"), None);
        assert!(
            segment_part("00000001000000010000000A") > segment_part("0000000100000000000000FF")
        );
    }

    #[test]
    fn pg_runs_as_an_unprivileged_user_and_answers_queries() {
        let mut pg = PgCluster::init_temp(InitOptions {
            wal_segsize_mb: Some(1),
        })
        .unwrap();
        pg.set_conf(&[("cluster_name", "it's-quoted")]).unwrap();
        pg.start().unwrap();
        assert!(port_is_open(pg.port()));
        assert_eq!(pg.psql("SELECT 1 + 1").unwrap(), "2");
        assert_eq!(pg.psql("SHOW wal_segment_size").unwrap(), "1MB");
        assert_eq!(pg.psql("SHOW fsync").unwrap(), "off");
        // psql sets its own application_name, so a server-only setting checks the quoting.
        assert_eq!(pg.psql("SHOW cluster_name").unwrap(), "it's-quoted");
        let expected_user = match pg_user().unwrap() {
            Some(user) => user.name.clone(),
            None => String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_owned(),
        };
        let data_dir = pg.psql("SHOW data_directory").unwrap();
        assert_eq!(Path::new(&data_dir), pg.data_dir());
        let owner = Command::new("stat")
            .args(["-c", "%U"])
            .arg(pg.data_dir())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), expected_user);
        let err = pg.psql("SELECT no_such_function()").unwrap_err();
        assert!(format!("{err:#}").contains("no_such_function"), "{err:#}");
        pg.stop().unwrap();
        assert!(!pg.is_running());
        assert!(!port_is_open(pg.port()));
    }

    #[test]
    fn archiving_a_switched_segment_is_awaited_and_drop_stops_the_server() {
        let temp = pg_temp_dir().unwrap();
        let archive = temp.path().join("archive");
        fs::create_dir(&archive).unwrap();
        make_readable_by_pg(&archive).unwrap();
        let mut pg = PgCluster::init(
            &temp.path().join("pg"),
            InitOptions {
                wal_segsize_mb: Some(1),
            },
        )
        .unwrap();
        pg.set_conf(&[
            ("archive_mode", "on"),
            (
                "archive_command",
                &format!("cp %p {}/%f", archive.display()),
            ),
        ])
        .unwrap();
        pg.start().unwrap();
        pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
            .unwrap();
        let segment = pg.switch_wal().unwrap();
        let stats = pg
            .wait_for_archived(&segment, Duration::from_secs(60))
            .unwrap();
        assert!(stats.archived_count >= 1);
        assert!(archive.join(&segment).is_file());

        let copy = pg.basebackup_temp(&[]).unwrap();
        assert!(copy.data_dir().join("PG_VERSION").is_file());
        assert_ne!(copy.port(), pg.port());

        let port = pg.port();
        drop(pg);
        assert!(!port_is_open(port), "PostgreSQL still listening after drop");
    }
}
