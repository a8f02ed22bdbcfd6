//! Base backups and their restores, over one pgbench database on a real PostgreSQL 15
//! that archives its WAL with `walship wal-push` into the bucket walship's backups go
//! to (a backup waits until its last WAL is archived).
//!
//! Backups: `walship backup` uncompressed and gzip at each `--jobs`,
//! `barman-cloud-backup` (its default `-J 2` and `-J` matched), pgBackRest's full
//! backup (`process-max` matched; `archive_command` switched to its `archive-push`
//! for the run, since its backup checks its own archive) and `pg_basebackup -Ft` to
//! local disk, the physical reference. Restores: each tool restores its own backup,
//! and plain concurrent ranged GETs of walship's objects (curl, written to the same
//! disk, nothing unpacked) are the restore's ceiling. Every run is timed with the
//! CPU and peak memory of the tool's processes ([`run_measured`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use walship_testkit::{
    InitOptions, PgCluster, make_readable_by_pg, pg_bin_dir, pg_user_command, wait_until,
};

use super::env::{Env, PREFIX, Run, SERVER, Transport, run_ok};
use super::proc::{Cost, children, reap_newcomers, run_measured};

/// The bytes one ranged GET asks for (walship's restore asks for as much).
const RANGE: u64 = 16 << 20;

/// What the section runs, with the defaults resolved.
pub struct Plan {
    /// `pgbench -i -s` scale of the database.
    pub scale: u32,
    /// walship's `--jobs` levels; the highest is also the peers' matched parallelism.
    pub jobs: Vec<usize>,
    /// `walship restore --jobs`, pgBackRest's restore `process-max` and the GETs in
    /// flight of the ceiling.
    pub restore_jobs: usize,
}

impl Plan {
    fn max_jobs(&self) -> usize {
        self.jobs.iter().copied().max().unwrap_or(2)
    }
}

/// A base backup's compression, as each tool names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    const ALL: [Compression; 2] = [Compression::None, Compression::Gzip];

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// Who takes the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupTool {
    /// `walship backup --jobs N`.
    Walship(usize),
    /// `barman-cloud-backup`, with `-J N` or its default (`None`, 2 in 3.19).
    Barman(Option<usize>),
    /// `pgbackrest backup --type=full` with `process-max` N.
    PgBackRest(usize),
    /// `pg_basebackup -Ft -X none` into a local directory.
    PgBasebackup,
    /// `walship backup --jobs N` into a `file://` destination on the same disk: its own
    /// pipeline beside pg_basebackup's, without the S3 server and its TLS.
    WalshipLocal(usize),
}

impl BackupTool {
    pub fn label(self, compression: Compression) -> String {
        let gzip = compression == Compression::Gzip;
        match self {
            BackupTool::Walship(n) => format!("walship backup --jobs {n}"),
            BackupTool::Barman(None) => "barman-cloud-backup (default -J 2)".into(),
            BackupTool::Barman(Some(n)) => format!("barman-cloud-backup -J {n}"),
            BackupTool::PgBackRest(n) => {
                format!("pgBackRest backup --type=full, process-max {n}")
            }
            BackupTool::PgBasebackup if gzip => "pg_basebackup -Ft -z, local disk".into(),
            BackupTool::PgBasebackup => "pg_basebackup -Ft, local disk".into(),
            BackupTool::WalshipLocal(n) => format!("walship backup --jobs {n}, file:// local disk"),
        }
    }

    /// Parallelism, for ratios at equal parallelism (`None`: not comparable).
    pub fn parallel(self) -> Option<usize> {
        match self {
            BackupTool::Walship(n)
            | BackupTool::WalshipLocal(n)
            | BackupTool::Barman(Some(n))
            | BackupTool::PgBackRest(n) => Some(n),
            BackupTool::Barman(None) => Some(2),
            BackupTool::PgBasebackup => None,
        }
    }
}

/// Who restores (each tool its own backup; the GETs read walship's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTool {
    /// `walship restore --jobs N`.
    Walship(usize),
    /// `barman-cloud-restore` (one tar after another; it has no parallelism).
    Barman,
    /// `pgbackrest restore` with `process-max` N.
    PgBackRest(usize),
    /// N concurrent ranged GETs of walship's objects, written as they come.
    Gets(usize),
}

impl RestoreTool {
    pub fn label(self) -> String {
        match self {
            RestoreTool::Walship(n) => format!("walship restore --jobs {n}"),
            RestoreTool::Barman => "barman-cloud-restore".into(),
            RestoreTool::PgBackRest(n) => format!("pgBackRest restore, process-max {n}"),
            RestoreTool::Gets(n) => {
                format!("ceiling: {n} concurrent ranged GETs of walship's objects (curl)")
            }
        }
    }
}

/// One backup run.
pub struct BackupRow {
    pub compression: Compression,
    pub tool: BackupTool,
    pub cost: Cost,
    /// What the backup stored (objects, or files for pg_basebackup).
    pub stored_bytes: u64,
}

/// One restore run.
pub struct RestoreRow {
    pub compression: Compression,
    pub tool: RestoreTool,
    pub cost: Cost,
}

/// Everything the section measured.
#[derive(Default)]
pub struct BackupResults {
    pub scale: u32,
    /// `sum(pg_database_size(...))` over every database: what MB/s divide.
    pub database_bytes: u64,
    /// The data directory's files, `pg_wal` excluded (what a backup copies).
    pub pgdata_bytes: u64,
    /// `pgbench -i` with archiving on, for the record.
    pub load_seconds: f64,
    pub backups: Vec<BackupRow>,
    pub restores: Vec<RestoreRow>,
    /// Runs not made, and why.
    pub skipped: Vec<String>,
}

/// Runs the section; a failed run is passed to `failed` (which records it) and the
/// section goes on; an error is a failure of the set-up itself.
pub fn run(
    env: &Env,
    plan: &Plan,
    wants: &dyn Fn(&str) -> bool,
    failed: &mut dyn FnMut(&str, anyhow::Error),
) -> Result<BackupResults> {
    let mut section = BackupResults {
        scale: plan.scale,
        ..BackupResults::default()
    };
    let db = env.run("base backups: database and walship")?;
    // WAL goes uncompressed: archiving is not what this section measures.
    db.walship_manifest("none", 1, Transport::Tls)?;
    let known = children()?;
    let mut pg = PgCluster::init(&db.dir.join("pg"), InitOptions::default())?;
    let walship_push = format!(
        "{} {} wal-push %p",
        env.walship.display(),
        db.walship_args().join(" ")
    );
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &walship_push),
        // No checkpoint of its own during a load or a backup.
        ("max_wal_size", "8GB"),
        ("checkpoint_timeout", "1h"),
    ])?;
    pg.start()?;
    let outcome = (|| -> Result<()> {
        println!(
            "bench: base backups: pgbench -i -s {} (archiving with walship wal-push)",
            plan.scale
        );
        let start = Instant::now();
        pg.pgbench(&["-i", "-q", "-s", &plan.scale.to_string()])?;
        section.load_seconds = start.elapsed().as_secs_f64();
        // Every backup starts from the same quiet server: load archived, checkpointed.
        pg.psql("CHECKPOINT")?;
        switch_and_drain(&pg, Duration::from_secs(3600))?;
        section.database_bytes = pg
            .psql("SELECT sum(pg_database_size(oid)) FROM pg_database")?
            .parse()
            .context("the database size")?;
        section.pgdata_bytes = tree_bytes(pg.data_dir(), Some("pg_wal"));
        println!(
            "bench: base backups: database {:.0} MB (PGDATA {:.0} MB without pg_wal), loaded in {:.1}s",
            section.database_bytes as f64 / 1e6,
            section.pgdata_bytes as f64 / 1e6,
            section.load_seconds
        );
        let ctx = Ctx {
            env,
            plan,
            pg: &pg,
            db: &db,
            walship_push: &walship_push,
            wants,
        };
        for compression in Compression::ALL {
            super::proc::stop_if_interrupted();
            ctx.walship(compression, &mut section, failed);
            ctx.barman(compression, &mut section, failed);
            ctx.pgbackrest(compression, &mut section, failed);
            ctx.pg_basebackup(compression, &mut section, failed);
            ctx.walship_local(compression, &mut section, failed);
        }
        Ok(())
    })();
    let stopped = pg.stop();
    // The postmaster was re-parented to us (we are a subreaper): reap it.
    reap_newcomers(&known, false)?;
    outcome?;
    stopped?;
    Ok(section)
}

/// What every run of the section shares.
struct Ctx<'a> {
    env: &'a Env,
    plan: &'a Plan,
    pg: &'a PgCluster,
    /// The bucket PostgreSQL archives to and walship's backups go to.
    db: &'a Run<'a>,
    walship_push: &'a str,
    wants: &'a dyn Fn(&str) -> bool,
}

impl Ctx<'_> {
    fn wants(&self, compression: Compression, label: &str) -> bool {
        (self.wants)(&format!("{} {label}", compression.name()))
    }

    fn port(&self) -> String {
        self.pg.port().to_string()
    }

    /// walship's backups at each `--jobs` into the database's bucket; the one at the
    /// highest is restored by walship and fetched by the GETs, then each is deleted.
    fn walship(
        &self,
        compression: Compression,
        section: &mut BackupResults,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        let max = self.plan.max_jobs();
        let restorers = [
            RestoreTool::Walship(self.plan.restore_jobs),
            RestoreTool::Gets(self.plan.restore_jobs),
        ];
        for &jobs in &self.plan.jobs {
            let tool = BackupTool::Walship(jobs);
            let label = tool.label(compression);
            let restores: Vec<RestoreTool> = restorers
                .into_iter()
                .filter(|r| jobs == max && self.wants(compression, &r.label()))
                .collect();
            if !self.wants(compression, &label) && restores.is_empty() {
                continue;
            }
            super::proc::stop_if_interrupted();
            let before = backup_ids(self.db);
            let name = format!("bench-{}-jobs{jobs}", compression.name());
            let port = self.port();
            let jobs_arg = jobs.to_string();
            let taken = self
                .db
                .walship(&[
                    "backup",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--user",
                    "postgres",
                    "--dbname",
                    "postgres",
                    "--immediate-checkpoint",
                    "--compression",
                    compression.name(),
                    "--jobs",
                    &jobs_arg,
                    "--name",
                    &name,
                ])
                .and_then(|mut cmd| self.measure(self.db, &mut cmd, &name))
                .and_then(|cost| {
                    let id = new_backup_id(self.db, &before)?;
                    Ok((cost, id))
                });
            let (cost, id) = match taken {
                Ok(taken) => taken,
                Err(e) => {
                    failed(&format!("{label} ({})", compression.name()), e);
                    continue;
                }
            };
            let prefix = format!("{PREFIX}/{SERVER}/base/{id}/");
            let stored = stored_bytes(self.db, &prefix);
            self.record_backup(section, compression, tool, cost, stored);
            for restorer in restores {
                super::proc::stop_if_interrupted();
                let dest = self.db.dir.join("restored");
                let measured = match restorer {
                    RestoreTool::Walship(n) => self
                        .db
                        .walship(&["restore", "--jobs", &n.to_string(), &name])
                        .and_then(|mut cmd| {
                            cmd.arg(&dest);
                            self.measure(self.db, &mut cmd, "walship-restore")
                        })
                        .and_then(|cost| check_restored(&dest).map(|()| cost)),
                    RestoreTool::Gets(n) => {
                        parallel_gets(self.db, &objects(self.db, &prefix), n, &dest)
                    }
                    RestoreTool::Barman | RestoreTool::PgBackRest(_) => unreachable!(),
                };
                let _ = fs::remove_dir_all(&dest);
                self.record_restore(section, compression, restorer, measured, failed);
            }
            // A full-size run keeps one backup at a time on disk.
            let _ = fs::remove_dir_all(
                self.env
                    .s3
                    .root_dir()
                    .join(&self.db.bucket)
                    .join(prefix.trim_end_matches('/')),
            );
        }
    }

    /// barman-cloud-backup at its default `-J` and at the highest walship `--jobs`,
    /// each into a bucket of its own; the last one is restored.
    fn barman(
        &self,
        compression: Compression,
        section: &mut BackupResults,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        // The default (-J 2) beside walship --jobs 2, and -J matched to the highest.
        let max = self.plan.max_jobs();
        let mut tools = Vec::new();
        if self.plan.jobs.contains(&2) {
            tools.push(BackupTool::Barman(None));
        }
        if max != 2 {
            tools.push(BackupTool::Barman(Some(max)));
        }
        let restored = *tools.last().unwrap_or(&BackupTool::Barman(None));
        for tool in tools {
            let label = tool.label(compression);
            let restore = tool == restored && self.wants(compression, &RestoreTool::Barman.label());
            if !self.wants(compression, &label) && !restore {
                continue;
            }
            super::proc::stop_if_interrupted();
            let run = match self.env.run(&label) {
                Ok(run) => run,
                Err(e) => {
                    failed(&format!("{label} ({})", compression.name()), e);
                    continue;
                }
            };
            let mut cmd = run.barman("barman-cloud-backup");
            if compression == Compression::Gzip {
                cmd.arg("--gzip");
            }
            if let BackupTool::Barman(Some(n)) = tool {
                cmd.args(["-J", &n.to_string()]);
            }
            cmd.args(["--immediate-checkpoint", "-h", "127.0.0.1", "-p"])
                .arg(self.port())
                .args(["-U", "postgres", "-d", "postgres"])
                .arg(run.destination())
                .arg(SERVER);
            let taken = self
                .measure(&run, &mut cmd, "barman-cloud-backup")
                .and_then(|cost| Ok((cost, new_backup_id(&run, &BTreeSet::new())?)));
            let id = match taken {
                Ok((cost, id)) => {
                    let stored = stored_bytes(&run, &format!("{PREFIX}/{SERVER}/base/"));
                    self.record_backup(section, compression, tool, cost, stored);
                    id
                }
                Err(e) => {
                    failed(&format!("{label} ({})", compression.name()), e);
                    continue;
                }
            };
            if !restore {
                continue;
            }
            let dest = run.dir.join("restored");
            let mut cmd = run.barman("barman-cloud-restore");
            cmd.arg(run.destination()).arg(SERVER).arg(&id).arg(&dest);
            let measured = self
                .measure(&run, &mut cmd, "barman-cloud-restore")
                .and_then(|cost| check_restored(&dest).map(|()| cost));
            let _ = fs::remove_dir_all(&dest);
            self.record_restore(section, compression, RestoreTool::Barman, measured, failed);
        }
    }

    /// pgBackRest's full backup at each `--jobs` level as `process-max`, with
    /// `archive_command` switched to its `archive-push` meanwhile (its backup waits
    /// for the WAL in its own repository); the highest is restored.
    fn pgbackrest(
        &self,
        compression: Compression,
        section: &mut BackupResults,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        let max = self.plan.max_jobs();
        for &n in &self.plan.jobs {
            let tool = BackupTool::PgBackRest(n);
            let label = tool.label(compression);
            let restorer = RestoreTool::PgBackRest(self.plan.restore_jobs);
            let restore = n == max && self.wants(compression, &restorer.label());
            if !self.wants(compression, &label) && !restore {
                continue;
            }
            if self.env.pgbackrest.is_none() {
                let what = format!("{} ({})", label, compression.name());
                section
                    .skipped
                    .push(format!("{what}: pgBackRest is not installed"));
                if restore {
                    section.skipped.push(format!(
                        "{} ({}): pgBackRest is not installed",
                        restorer.label(),
                        compression.name()
                    ));
                }
                continue;
            }
            super::proc::stop_if_interrupted();
            let taken = (|| -> Result<(Run<'_>, PathBuf, Cost)> {
                let run = self.env.run(&label)?;
                let socket_dir = self.pg.dir().display().to_string();
                let conf = run.pgbackrest_conf_with(
                    n,
                    compression.name(),
                    self.pg.data_dir(),
                    // No retention set: no expire step inside the timed backup.
                    &["archive-async=n", "start-fast=y"],
                    &[
                        &format!("pg1-port={}", self.pg.port()),
                        &format!("pg1-socket-path={socket_dir}"),
                        "pg1-user=postgres",
                    ],
                )?;
                run_ok(&mut run.pgbackrest(&conf, &["stanza-create"])?)?;
                let program = self.env.pgbackrest.as_deref().context("no pgBackRest")?;
                let push = format!(
                    "{} --config={} --stanza={SERVER} archive-push %p",
                    program.display(),
                    conf.display()
                );
                self.set_archive_command(&push)?;
                let measured = run
                    .pgbackrest(&conf, &["--type=full", "backup"])
                    .and_then(|mut cmd| self.measure(&run, &mut cmd, "pgbackrest-backup"));
                // Back to walship whatever happened: the next runs need its archive.
                let switched_back = self.set_archive_command(self.walship_push);
                let cost = measured?;
                switched_back?;
                Ok((run, conf, cost))
            })();
            let (run, conf) = match taken {
                Ok((run, conf, cost)) => {
                    let stored = stored_bytes(&run, &format!("{PREFIX}/backup/"));
                    self.record_backup(section, compression, tool, cost, stored);
                    (run, conf)
                }
                Err(e) => {
                    failed(&format!("{label} ({})", compression.name()), e);
                    continue;
                }
            };
            if !restore {
                continue;
            }
            let dest = run.dir.join("restored");
            let measured = (|| -> Result<Cost> {
                fs::create_dir_all(&dest)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))?;
                make_readable_by_pg(&dest)?;
                let mut cmd = run.pgbackrest(
                    &conf,
                    &[
                        &format!("--pg1-path={}", dest.display()),
                        &format!("--process-max={}", self.plan.restore_jobs),
                        "restore",
                    ],
                )?;
                let cost = self.measure(&run, &mut cmd, "pgbackrest-restore")?;
                check_restored(&dest)?;
                Ok(cost)
            })();
            let _ = fs::remove_dir_all(&dest);
            self.record_restore(section, compression, restorer, measured, failed);
        }
    }

    /// `pg_basebackup -Ft -X none` (the WAL is in the archive, as for the others),
    /// `-z` for gzip, into a local directory on the same disk.
    fn pg_basebackup(
        &self,
        compression: Compression,
        section: &mut BackupResults,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        let tool = BackupTool::PgBasebackup;
        let label = tool.label(compression);
        if !self.wants(compression, &label) {
            return;
        }
        super::proc::stop_if_interrupted();
        let dest = self.db.dir.join("pg_basebackup");
        let measured = (|| -> Result<Cost> {
            let mut cmd = pg_user_command(&pg_bin_dir().join("pg_basebackup"), &self.db.dir)?;
            cmd.args(["-h", "127.0.0.1", "-p", &self.port(), "-U", "postgres"])
                .arg("-D")
                .arg(&dest)
                .args(["-Ft", "-X", "none", "-c", "fast"]);
            if compression == Compression::Gzip {
                cmd.arg("-z");
            }
            self.measure(self.db, &mut cmd, "pg_basebackup")
        })();
        self.record_local(section, compression, tool, measured, &dest, failed);
    }

    /// `walship backup` at the highest `--jobs` into a `file://` store on the disk
    /// pg_basebackup writes to: the like-for-like beside it (PostgreSQL still archives
    /// to the bucket; only the backup's objects go to the directory).
    fn walship_local(
        &self,
        compression: Compression,
        section: &mut BackupResults,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        let jobs = self.plan.max_jobs();
        let tool = BackupTool::WalshipLocal(jobs);
        let label = tool.label(compression);
        if !self.wants(compression, &label) {
            return;
        }
        super::proc::stop_if_interrupted();
        let store = self.db.dir.join("local-store");
        let config = self.db.dir.join("local.yaml");
        let measured = (|| -> Result<Cost> {
            fs::write(
                &config,
                format!(
                    "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\n\
                     metadata:\n  name: bench-local\n\
                     spec:\n  configuration:\n    destinationPath: file://{}\n",
                    store.display()
                ),
            )?;
            make_readable_by_pg(&config)?;
            let mut cmd = pg_user_command(&self.env.walship, &self.db.dir)?;
            cmd.arg("--config")
                .arg(&config)
                .args(["--server-name", SERVER, "--log-format", "text"])
                .args(["--log-level", "warn", "backup", "--host", "127.0.0.1"])
                .args(["--port", &self.port(), "--user", "postgres"])
                .args(["--dbname", "postgres", "--immediate-checkpoint"])
                .args(["--compression", compression.name()])
                .args(["--jobs", &jobs.to_string()]);
            self.measure(self.db, &mut cmd, "walship-local")
        })();
        self.record_local(section, compression, tool, measured, &store, failed);
    }

    /// Records a backup written to the local directory `dir` (its size, what it
    /// stored), or its failure, then removes the directory.
    fn record_local(
        &self,
        section: &mut BackupResults,
        compression: Compression,
        tool: BackupTool,
        measured: Result<Cost>,
        dir: &Path,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        match measured {
            Ok(cost) => {
                let stored = tree_bytes(dir, None);
                self.record_backup(section, compression, tool, cost, stored);
            }
            Err(e) => failed(
                &format!("{} ({})", tool.label(compression), compression.name()),
                e,
            ),
        }
        let _ = fs::remove_dir_all(dir);
    }

    /// Points `archive_command` at `command`, once the segment in progress is closed
    /// and every segment so far archived by the command set before (a failure to
    /// drain is returned, but the command is switched anyway: the next runs need it).
    fn set_archive_command(&self, command: &str) -> Result<()> {
        let drained = switch_and_drain(self.pg, Duration::from_secs(300));
        self.pg.set_conf(&[("archive_command", command)])?;
        self.pg.reload()?;
        wait_until(Duration::from_secs(30), "archive_command to change", || {
            Ok(self.pg.psql("SHOW archive_command")? == command)
        })?;
        // The archiver takes the new setting at its next wake-up; give it one.
        std::thread::sleep(Duration::from_millis(500));
        drained
    }

    /// Runs `cmd` measured, its output in `<run>/<name>.log`.
    fn measure(&self, run: &Run<'_>, cmd: &mut Command, name: &str) -> Result<Cost> {
        let log = run.dir.join(format!("{name}.log"));
        run_measured(cmd, &log)
    }

    fn record_backup(
        &self,
        section: &mut BackupResults,
        compression: Compression,
        tool: BackupTool,
        cost: Cost,
        stored_bytes: u64,
    ) {
        println!(
            "bench: {} ({}): {:.2}s, {:.1} CPU-s, peak {:.0} MiB, stored {:.0} MB",
            tool.label(compression),
            compression.name(),
            cost.seconds,
            cost.cpu_seconds,
            cost.peak_rss_kib as f64 / 1024.0,
            stored_bytes as f64 / 1e6
        );
        section.backups.push(BackupRow {
            compression,
            tool,
            cost,
            stored_bytes,
        });
    }

    fn record_restore(
        &self,
        section: &mut BackupResults,
        compression: Compression,
        tool: RestoreTool,
        measured: Result<Cost>,
        failed: &mut dyn FnMut(&str, anyhow::Error),
    ) {
        match measured {
            Ok(cost) => {
                println!(
                    "bench: {} ({}): {:.2}s, {:.1} CPU-s, peak {:.0} MiB",
                    tool.label(),
                    compression.name(),
                    cost.seconds,
                    cost.cpu_seconds,
                    cost.peak_rss_kib as f64 / 1024.0
                );
                section.restores.push(RestoreRow {
                    compression,
                    tool,
                    cost,
                });
            }
            Err(e) => failed(&format!("{} ({})", tool.label(), compression.name()), e),
        }
    }
}

/// Closes the segment in progress and waits until the archiver has archived every
/// segment and backup history file. pg_stat_archiver's `last_archived_wal` will not
/// do: it may name a `.backup` file archived after a later segment; the `.ready`
/// files are the truth.
fn switch_and_drain(pg: &PgCluster, timeout: Duration) -> Result<()> {
    let status = pg.data_dir().join("pg_wal/archive_status");
    pg.switch_wal()?;
    wait_until(timeout, "the archiver to drain pg_wal", || {
        Ok(!fs::read_dir(&status)?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".ready")))
    })
}

/// The backup ids under `run`'s `<prefix>/<server>/base/` (read from s3s-fs's disk).
fn backup_ids(run: &Run<'_>) -> BTreeSet<String> {
    let base = run
        .env
        .s3
        .root_dir()
        .join(&run.bucket)
        .join(PREFIX)
        .join(SERVER)
        .join("base");
    fs::read_dir(base)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 15 && n.as_bytes()[8] == b'T')
        .collect()
}

/// The one backup id that is in the bucket now and was not in `before`.
fn new_backup_id(run: &Run<'_>, before: &BTreeSet<String>) -> Result<String> {
    let new: Vec<String> = backup_ids(run).difference(before).cloned().collect();
    match &new[..] {
        [id] => Ok(id.clone()),
        other => bail!("expected one new backup in {}, found {other:?}", run.bucket),
    }
}

/// `(key, size)` of the objects under `prefix` in `run`'s bucket.
fn objects(run: &Run<'_>, prefix: &str) -> Vec<(String, u64)> {
    run.env
        .s3
        .objects_on_disk(&run.bucket)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix) && !k.contains(".s3s-fs") && !k.ends_with(".meta"))
        .collect()
}

/// What the objects under `prefix` in `run`'s bucket hold.
fn stored_bytes(run: &Run<'_>, prefix: &str) -> u64 {
    objects(run, prefix).iter().map(|(_, size)| size).sum()
}

/// Bytes of the regular files under `dir`, leaving out the top-level `skip`.
fn tree_bytes(dir: &Path, skip: Option<&str>) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| skip.is_none_or(|s| e.file_name() != s))
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path(), None),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// A restored data directory has its version file and, put in place last by
/// walship, `pg_control`.
fn check_restored(dest: &Path) -> Result<()> {
    for file in ["PG_VERSION", "global/pg_control"] {
        if !dest.join(file).is_file() {
            bail!("the restore left no {file} in {}", dest.display());
        }
    }
    Ok(())
}

/// The ranged GETs that fetch an object of `size` bytes, as (first byte, end): [`RANGE`]
/// bytes each, the last one shorter; one empty range for an empty object.
fn byte_ranges(size: u64) -> Vec<(u64, u64)> {
    if size == 0 {
        return vec![(0, 0)];
    }
    (0..size)
        .step_by(RANGE as usize)
        .map(|start| (start, (start + RANGE).min(size)))
        .collect()
}

/// Downloads `objects` from `run`'s bucket into `dest` with `parallel` curl processes,
/// each taking every `parallel`-th 16 MiB range over one kept-alive connection and
/// writing it to a file of its own: the most a restore could get from this server
/// and disk, with nothing decompressed, checked or unpacked.
fn parallel_gets(
    run: &Run<'_>,
    objects: &[(String, u64)],
    parallel: usize,
    dest: &Path,
) -> Result<Cost> {
    let parallel = parallel.max(1);
    fs::create_dir_all(dest)?;
    let mut configs = vec![String::new(); parallel];
    let mut transfers = 0;
    let mut want = 0;
    for (key, size) in objects {
        want += size;
        for (start, end) in byte_ranges(*size) {
            let file = dest.join(format!("{}.{start}", key.replace('/', "_")));
            let config = &mut configs[transfers % parallel];
            transfers += 1;
            if !config.is_empty() {
                config.push_str("next\n");
            }
            let _ = write!(
                config,
                "silent\nshow-error\nfail\naws-sigv4 = \"aws:amz:us-east-1:s3\"\n\
                 user = \"{}:{}\"\nheader = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\"\n\
                 cacert = \"{}\"\noutput = \"{}\"\nurl = \"{}/{}/{key}\"\n",
                run.env.s3.access_key(),
                run.env.s3.secret_key(),
                run.ca_path().display(),
                file.display(),
                run.env.tls.endpoint(),
                run.bucket,
            );
            // An empty object has no range to ask for.
            if end > start {
                let _ = writeln!(config, "range = \"{start}-{}\"", end - 1);
            }
        }
    }
    // One shell starts every curl and fails when any of them fails.
    let mut script = String::new();
    let mut waits = Vec::new();
    for (n, config) in configs.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
        let path = run.dir.join(format!("curl-{n}.conf"));
        fs::write(&path, config)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        let _ = writeln!(script, "curl -K '{}' & p{n}=$!", path.display());
        waits.push(format!("wait $p{n}"));
    }
    script.push_str(&waits.join(" && "));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let cost = run_measured(&mut cmd, &run.dir.join("curl.log"))?;
    let got = tree_bytes(dest, None);
    if got != want {
        bail!("the GETs wrote {got} bytes; the objects hold {want}");
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_cover_each_object_once() {
        let cases: [(u64, Vec<(u64, u64)>); 4] = [
            (0, vec![(0, 0)]),
            (1, vec![(0, 1)]),
            (RANGE, vec![(0, RANGE)]),
            (
                2 * RANGE + 5,
                vec![(0, RANGE), (RANGE, 2 * RANGE), (2 * RANGE, 2 * RANGE + 5)],
            ),
        ];
        for (size, want) in cases {
            assert_eq!(byte_ranges(size), want, "size {size}");
        }
    }

    #[test]
    fn labels_name_the_parallelism_and_the_peers_defaults() {
        assert_eq!(
            BackupTool::Barman(None).label(Compression::Gzip),
            "barman-cloud-backup (default -J 2)"
        );
        assert_eq!(BackupTool::Barman(None).parallel(), Some(2));
        assert_eq!(
            BackupTool::PgBasebackup.label(Compression::Gzip),
            "pg_basebackup -Ft -z, local disk"
        );
        assert_eq!(BackupTool::PgBasebackup.parallel(), None);
        assert_eq!(RestoreTool::Walship(4).label(), "walship restore --jobs 4");
    }
}
