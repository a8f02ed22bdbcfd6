//! walship as the Barman Cloud plugin's instance sidecar (`walship cnpg instance`),
//! driven the way CloudNativePG drives it: a fake instance manager (the test kit's
//! `cnpg-manager`, a gRPC client built from the same `.proto` files) opens a new
//! connection per call and replays the manager's sequence, as PostgreSQL's
//! archive_command; barman-cloud's own tools read back what it stored.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Archive, BUCKET, PREFIX, SERVER, archived_in_pg_wal, sha256_file, stderr};
use walship_testkit::{
    InitOptions, KubeApi, KubeKind, PgCluster, WalshipBin, executable_by_pg, free_port,
    make_readable_by_pg, pg_temp_dir, pg_user_command, wait_until,
};

const PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
const POD: &str = "pg-main-1";

/// The Cluster resource as CloudNativePG sends it in every call (the fields the
/// plugin reads, among others it ignores).
fn cluster_json(object_store: &str, primary: &str) -> String {
    format!(
        r#"{{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster",
        "metadata":{{"name":"{SERVER}","namespace":"default","uid":"6f1c-cluster-uid"}},
        "spec":{{"instances":1,"imageName":"ghcr.io/cloudnative-pg/postgresql:15",
          "plugins":[{{"name":"{PLUGIN}","isWALArchiver":true,
            "parameters":{{"barmanObjectName":"{object_store}"}}}}]}},
        "status":{{"currentPrimary":"{primary}","phase":"Cluster in healthy state"}}}}"#
    )
}

/// The fake instance manager, runnable by the PostgreSQL user.
fn manager() -> Result<PathBuf> {
    executable_by_pg(Path::new(env!("CARGO_BIN_EXE_cnpg-manager")))
}

/// A running `walship cnpg instance` as the PostgreSQL user; killed when dropped.
struct Sidecar {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
    plugins: PathBuf,
}

/// Where a sidecar under test reads its configuration.
enum Config<'a> {
    /// `--config` and `--secrets-dir`.
    Files,
    /// The Kubernetes API stand-in, as CloudNativePG's pod gives it (namespace and
    /// Cluster in the environment; a kubeconfig in place of the service account).
    Kube(&'a KubeApi, &'a Path),
}

impl Sidecar {
    fn start(archive: &Archive, pg: &PgCluster, plugins: &Path) -> Result<Sidecar> {
        Sidecar::start_with(archive, pg, plugins, Config::Files)
    }

    fn start_with(
        archive: &Archive,
        pg: &PgCluster,
        plugins: &Path,
        config: Config<'_>,
    ) -> Result<Sidecar> {
        Sidecar::launch(archive, pg, plugins, config, false, 0)
    }

    /// As CloudNativePG runs it: the root filesystem read-only, only its volumes
    /// writable (PGDATA, the plugins directory, the spool and journal).
    fn start_read_only(archive: &Archive, pg: &PgCluster, plugins: &Path) -> Result<Sidecar> {
        Sidecar::launch(archive, pg, plugins, Config::Files, true, 0)
    }

    fn launch(
        archive: &Archive,
        pg: &PgCluster,
        plugins: &Path,
        config: Config<'_>,
        read_only_root: bool,
        retention_seconds: u64,
    ) -> Result<Sidecar> {
        // A socket left by a sidecar killed earlier must not pass for this one's.
        let socket = plugins.join(PLUGIN);
        match fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let metrics_port = free_port()?;
        let log = archive
            .dir
            .path()
            .join(format!("sidecar-{metrics_port}.log"));
        let mut cmd = pg_user_command(&WalshipBin::for_pg()?, archive.dir.path())?;
        match config {
            Config::Files => {
                cmd.args(archive.global_args())
                    .args(["--log-format", "text", "cnpg", "instance"])
                    .args(["--config-from", "files"]);
            }
            Config::Kube(api, kubeconfig) => {
                cmd.args(["--log-format", "text", "cnpg", "instance"])
                    .args(["--config-from", "kubernetes"])
                    .env("KUBECONFIG", kubeconfig)
                    .env("NAMESPACE", api.namespace());
            }
        }
        cmd.arg("--socket")
            .arg(archive.dir.path().join("walship.sock"))
            .arg("--plugins-dir")
            .arg(plugins)
            .arg("--pgdata")
            .arg(pg.data_dir())
            .arg("--journal-dir")
            .arg(archive.dir.path().join("journal"))
            .arg("--spool-dir")
            .arg(archive.dir.path().join("spool"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--rescan-seconds", "2", "--retention-interval-seconds"])
            .arg(retention_seconds.to_string())
            .env("POD_NAME", POD)
            .env("CLUSTER_NAME", SERVER)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port().to_string());
        if read_only_root {
            cmd = with_read_only_root(&cmd, &[archive.dir.path(), plugins, pg.data_dir()])?;
        }
        cmd.stdout(Stdio::null()).stderr(fs::File::create(&log)?);
        let child = cmd.spawn().context("starting walship cnpg instance")?;
        let mut sidecar = Sidecar {
            child,
            metrics_port,
            log,
            plugins: plugins.to_owned(),
        };
        wait_until(Duration::from_secs(30), "the plugin's socket", || {
            if let Some(status) = sidecar.child.try_wait()? {
                bail!(
                    "the sidecar exited with {status}: {}",
                    sidecar.log_contents()
                );
            }
            Ok(socket.exists())
        })?;
        Ok(sidecar)
    }

    fn log_contents(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, name: &str) -> Result<f64> {
        common::daemon::metric_at(self.metrics_port, name)
    }

    /// Runs the fake instance manager against this sidecar with `cluster` as the
    /// Cluster JSON.
    fn call(&self, cluster: &Path, args: &[&str]) -> Result<Output> {
        Ok(Command::new(manager()?)
            .arg("--plugins-dir")
            .arg(&self.plugins)
            .arg("--cluster")
            .arg(cluster)
            .args(args)
            .output()?)
    }
}

/// `cmd` in a mount namespace of its own whose root filesystem is read-only, but for
/// `writable` (each bound over itself first, so it stays writable).
fn with_read_only_root(cmd: &Command, writable: &[&Path]) -> Result<Command> {
    let mut script = String::from("set -e\n");
    for i in 1..=writable.len() {
        script.push_str(&format!("mount --bind \"${i}\" \"${i}\"\n"));
    }
    script.push_str(&format!(
        "shift {}\nmount -o remount,bind,ro /\nexec \"$@\"\n",
        writable.len()
    ));
    let mut wrapper = Command::new("unshare");
    // As root (the PostgreSQL user is then switched to inside) a mount namespace is
    // enough; otherwise a user namespace makes one possible.
    if walship_testkit::pg_user()?.is_none() {
        wrapper.args(["--user", "--map-root-user"]);
    }
    wrapper
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(writable)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapper.current_dir(dir);
    }
    Ok(wrapper)
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every segment PostgreSQL marked `.done` (it was acknowledged), read back by
/// barman-cloud-wal-restore and compared with `pg_wal`'s copy; their names.
fn barman_restores_every_archived_segment(
    archive: &Archive,
    pg: &PgCluster,
) -> Result<Vec<String>> {
    let archived = archived_in_pg_wal(pg.data_dir())?;
    barman_restores(archive, &archive.destination(), pg, &archived)?;
    Ok(archived)
}

/// Each of `names` read back from `destination` by barman-cloud-wal-restore, the very
/// bytes of `pg_wal`'s copy.
fn barman_restores(
    archive: &Archive,
    destination: &str,
    pg: &PgCluster,
    names: &[String],
) -> Result<()> {
    let out_dir = pg_temp_dir()?;
    for name in names {
        let dest = out_dir.path().join(name);
        let out = archive
            .barman("barman-cloud-wal-restore")?
            .arg(destination)
            .arg(SERVER)
            .arg(name)
            .arg(&dest)
            .output()?;
        ensure!(
            out.status.success(),
            "barman-cloud-wal-restore cannot restore {name} from {destination}: {}",
            stderr(&out)
        );
        assert_eq!(
            sha256_file(&dest)?,
            sha256_file(&pg.data_dir().join("pg_wal").join(name))?,
            "{name} differs"
        );
    }
    Ok(())
}

/// An archive, a plugins directory, the Cluster JSON, and PostgreSQL whose
/// archive_command is the fake instance manager's `wal-archive`.
struct Setup {
    archive: Archive,
    pg: PgCluster,
    plugins: tempfile::TempDir,
    cluster: PathBuf,
}

fn setup() -> Result<Setup> {
    let archive = Archive::start(Some("gzip"))?;
    let plugins = pg_temp_dir()?;
    let cluster = archive.dir.path().join("cluster.json");
    fs::write(&cluster, cluster_json("minio-store", POD))?;
    make_readable_by_pg(&cluster)?;
    let pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let command = format!(
        "{} --plugins-dir {} --cluster {} wal-archive %p",
        manager()?.display(),
        plugins.path().display(),
        cluster.display()
    );
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("wal_keep_size", "1GB"),
    ])?;
    Ok(Setup {
        archive,
        pg,
        plugins,
        cluster,
    })
}

#[test]
fn postgresql_archives_through_the_fake_instance_manager_to_a_sidecar_on_a_read_only_root_and_barman_reads_every_segment_back()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let sidecar = Sidecar::start_read_only(&archive, &pg, plugins.path())?;
    // The root filesystem is read-only for it indeed.
    let proof = with_read_only_root(
        &pg_user_command(Path::new("touch"), archive.dir.path())?,
        &[archive.dir.path()],
    )?
    .arg("/walship-wrote-here")
    .output()?;
    assert!(
        !proof.status.success() && stderr(&proof).contains("Read-only"),
        "{}",
        stderr(&proof)
    );
    // ...and the sidecar runs on it: its root mount is read-only.
    let mounts = fs::read_to_string(format!("/proc/{}/mountinfo", sidecar.child.id()))?;
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .context("no root mount")?;
    assert!(
        root.split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "{root}"
    );
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    pg.pgbench(&["-c", "2", "-t", "200"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(
        stats.failed_count,
        0,
        "{}\nsidecar:\n{}",
        pg.log_contents(),
        sidecar.log_contents()
    );

    let archived = barman_restores_every_archived_segment(&archive, &pg)?;
    ensure!(archived.len() >= 3, "only {} segments", archived.len());
    // Each Archive call was answered by the daemon's ack path.
    let acks = sidecar.metric("walship_archive_command_ack_seconds_count")?;
    assert!(
        acks >= archived.len() as f64,
        "{acks} acks for {} segments",
        archived.len()
    );

    // The metrics service: every collected name is defined (the manager checks), the
    // plugin's three gauges are there under its names, and the WAL counters too.
    let out = sidecar.call(&cluster, &["metrics"])?;
    ensure!(out.status.success(), "metrics: {}", stderr(&out));
    let samples: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let value = |name: &str| {
        samples
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_f64())
    };
    for gauge in [
        "barman_cloud_cloudnative_pg_io_first_recoverability_point",
        "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
        "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp",
    ] {
        assert!(value(gauge).is_some(), "{gauge} not collected");
    }
    let shipped = value("walship_segments_archived_total").context("no WAL counter")?;
    assert!(shipped >= archived.len() as f64, "{shipped} shipped");
    assert!(value("walship_ready_backlog_files").is_some());

    // The startup probe, as walship and through a link named `manager`.
    let walship = WalshipBin::path()?;
    let probe = |program: &Path, args: &[&str]| -> Result<Output> {
        Ok(Command::new(program)
            .args(args)
            .arg("--plugins-dir")
            .arg(plugins.path())
            .output()?)
    };
    let out = probe(&walship, &["cnpg", "healthcheck", "unix"])?;
    assert!(out.status.success(), "healthcheck: {}", stderr(&out));
    let link_dir = tempfile::tempdir()?;
    let link = link_dir.path().join("manager");
    std::os::unix::fs::symlink(&walship, &link)?;
    let out = probe(&link, &["healthcheck", "unix"])?;
    assert!(
        out.status.success(),
        "manager healthcheck: {}",
        stderr(&out)
    );

    // SIGTERM: the sidecar stops and removes its socket; the probe then fails.
    let status = Command::new("kill")
        .args(["-TERM", &sidecar.child.id().to_string()])
        .status()?;
    ensure!(status.success());
    let mut sidecar = sidecar;
    let exit = sidecar.child.wait()?;
    assert!(exit.success(), "{exit}: {}", sidecar.log_contents());
    assert!(!plugins.path().join(PLUGIN).exists());
    let out = probe(&walship, &["cnpg", "healthcheck", "unix"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    pg.stop()?;
    Ok(())
}

#[test]
fn restores_through_the_sidecar_answer_hits_misses_bad_names_and_other_stores_with_the_plugins_codes()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
    pg.start()?;
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 50000) AS x")?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
    let first = archived.first().context("nothing archived")?;
    let out_dir = pg_temp_dir()?;

    // A hit: the very bytes, in recovery mode and in rewind mode.
    for mode in [&[][..], &["--rewind"][..]] {
        let dest = out_dir.path().join(format!("{first}{}", mode.len()));
        let mut args = vec!["wal-restore"];
        args.extend_from_slice(mode);
        args.extend([first.as_str(), dest.to_str().unwrap()]);
        let out = sidecar.call(&cluster, &args)?;
        assert!(out.status.success(), "{mode:?}: {}", stderr(&out));
        assert_eq!(
            sha256_file(&dest)?,
            sha256_file(&pg.data_dir().join("pg_wal").join(first))?
        );
    }
    // A miss is NOT_FOUND (exit 1), in both modes.
    let missing = "0000000100000000000000FE";
    for mode in [&[][..], &["--rewind"][..]] {
        let dest = out_dir.path().join("missing");
        let mut args = vec!["wal-restore"];
        args.extend_from_slice(mode);
        args.extend([missing, dest.to_str().unwrap()]);
        let out = sidecar.call(&cluster, &args)?;
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
        assert!(!dest.exists());
    }
    // A name that is not WAL is INVALID_ARGUMENT, never NOT_FOUND.
    let dest = out_dir.path().join("x");
    let out = sidecar.call(
        &cluster,
        &["wal-restore", "../etc/passwd", dest.to_str().unwrap()],
    )?;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("InvalidArgument"), "{}", stderr(&out));

    // A Cluster naming another ObjectStore is refused, naming both, rather than served
    // from this one.
    let other = archive.dir.path().join("other-cluster.json");
    fs::write(&other, cluster_json("offsite-store", POD))?;
    let out = sidecar.call(&other, &["wal-restore", first, dest.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("FailedPrecondition")
            && said.contains("offsite-store")
            && said.contains("minio-store"),
        "{said}"
    );
    let segment = pg.data_dir().join("pg_wal").join(first);
    let out = sidecar.call(&other, &["wal-archive", segment.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FailedPrecondition"),
        "{}",
        stderr(&out)
    );

    // The store down: a segment not yet fetched is UNAVAILABLE (exit 126 here), never
    // NOT_FOUND, which would let recovery end at a gap.
    let mut archive = archive;
    let unfetched = archived.get(1).context("one segment only")?;
    archive.s3.stop();
    let dest = out_dir.path().join("down");
    let out = sidecar.call(
        &cluster,
        &["wal-restore", "--rewind", unfetched, dest.to_str().unwrap()],
    )?;
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}\nsidecar:\n{}",
        stderr(&out),
        sidecar.log_contents()
    );
    assert!(stderr(&out).contains("Unavailable"), "{}", stderr(&out));

    // A sidecar started while the store is down still probes ready, as the plugin's
    // does: the metrics an alert needs are collected exactly then.
    drop(sidecar);
    let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
    let out = sidecar.call(&cluster, &["metrics"])?;
    assert!(
        out.status.success(),
        "{}
sidecar:
{}",
        stderr(&out),
        sidecar.log_contents()
    );
    assert!(String::from_utf8(out.stdout)?.contains("walship_archive_failures_total"));
    pg.stop()?;
    drop(sidecar);
    Ok(())
}

/// The sidecar on a read-only root, as CloudNativePG runs it: a backup stages nothing
/// on local disk.
#[test]
fn a_backup_call_takes_a_base_backup_whose_result_agrees_with_barman_cloud_backup_show()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let sidecar = Sidecar::start_read_only(&archive, &pg, plugins.path())?;
    pg.start()?;
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS x")?;
    let backup = archive.dir.path().join("backup.json");
    fs::write(
        &backup,
        r#"{"apiVersion":"postgresql.cnpg.io/v1","kind":"Backup",
            "metadata":{"name":"pg-main-backup-1","namespace":"default"},
            "spec":{"cluster":{"name":"pg-main"},"method":"plugin",
              "pluginConfiguration":{"name":"barman-cloud.cloudnative-pg.io"}}}"#,
    )?;
    let out = sidecar.call(&cluster, &["backup", backup.to_str().unwrap()])?;
    ensure!(
        out.status.success(),
        "backup: {}\nsidecar:\n{}",
        stderr(&out),
        sidecar.log_contents()
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let shown = archive
        .barman("barman-cloud-backup-show")?
        .args(["--format", "json"])
        .arg(archive.destination())
        .arg(SERVER)
        .arg(result["backup_id"].as_str().context("no backup_id")?)
        .output()?;
    ensure!(shown.status.success(), "backup-show: {}", stderr(&shown));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    // `{"<backup.info's server_name>": {…}}`: one backup.
    let shown = shown
        .as_object()
        .and_then(|o| o.values().next())
        .with_context(|| format!("backup-show printed {shown}"))?;
    assert_eq!(shown["status"], "DONE");
    for (ours, barmans) in [
        ("backup_id", "backup_id"),
        ("backup_name", "backup_name"),
        ("begin_wal", "begin_wal"),
        ("end_wal", "end_wal"),
        ("begin_lsn", "begin_xlog"),
        ("end_lsn", "end_xlog"),
    ] {
        assert_eq!(result[ours], shown[barmans], "{ours} vs barman's {barmans}");
    }
    let name = result["backup_name"].as_str().unwrap_or_default();
    assert!(
        name.len() == "backup-20261130180000".len() && name.starts_with("backup-20"),
        "{name}"
    );
    assert_eq!(result["instance_id"], POD);
    assert_eq!(result["online"], true);
    let metadata = &result["metadata"];
    assert_eq!(metadata["timeline"], shown["timeline"].to_string());
    assert_eq!(metadata["clusterUID"], "6f1c-cluster-uid");
    assert_eq!(metadata["pluginName"], PLUGIN);
    assert_eq!(metadata["name"], PLUGIN);
    let (started, stopped) = (
        result["started_at"].as_i64().unwrap_or_default(),
        result["stopped_at"].as_i64().unwrap_or_default(),
    );
    assert!(
        started > 1_700_000_000 && stopped >= started,
        "{started} {stopped}"
    );
    pg.stop()?;
    Ok(())
}

/// The segment after `name` (1 MiB segments, far from a log id's end).
fn next_segment(name: &str) -> String {
    let low = u32::from_str_radix(&name[16..], 16).expect("a segment name");
    format!("{}{:08X}", &name[..16], low + 1)
}

#[test]
fn a_standby_is_told_the_end_of_wal_once_where_it_can_stream_and_a_primary_never() -> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
    pg.start()?;
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS x")?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
    let newest = archived.last().context("nothing archived")?;
    let beyond = next_segment(newest);
    let standby = archive.dir.path().join("standby-cluster.json");
    fs::write(&standby, cluster_json("minio-store", "pg-main-2"))?;
    let out_dir = pg_temp_dir()?;
    let restore = |json: &Path, name: &str| -> Result<Output> {
        let dest = out_dir.path().join(name);
        sidecar.call(json, &["wal-restore", name, dest.to_str().unwrap()])
    };

    // Restoring the newest archived segment reads ahead and finds the next one missing.
    let out = restore(&cluster, newest)?;
    ensure!(out.status.success(), "{}", stderr(&out));
    // On the primary nothing can be streamed: plain NOT_FOUND, the finding kept.
    let out = restore(&cluster, &beyond)?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // A standby gets OUT_OF_RANGE once the read-ahead's finding is in (it may still be
    // running: until then its answer is NOT_FOUND from the store)...
    let mut said = String::new();
    for _ in 0..40 {
        let out = restore(&standby, &beyond)?;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        said = stderr(&out);
        if said.contains("OutOfRange") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        said.contains("end of WAL"),
        "never told the end of WAL: {said}"
    );
    // ...and only once: the next ask goes to the store again.
    let out = restore(&standby, &beyond)?;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    // Under pg_rewind the rule never applies.
    let dest = out_dir.path().join("rewind");
    let out = sidecar.call(
        &standby,
        &["wal-restore", "--rewind", &beyond, dest.to_str().unwrap()],
    )?;
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    pg.stop()?;
    Ok(())
}

/// Stops a restore job as Kubernetes does (SIGTERM); its log, and how many WAL files
/// it restored and read ahead of those, as it reports them when it stops.
fn stop_restore_job(mut job: Child, log: &Path) -> Result<(String, u64, u64)> {
    let status = Command::new("kill")
        .args(["-TERM", &job.id().to_string()])
        .status()?;
    ensure!(status.success());
    job.wait()?;
    let log = fs::read_to_string(log)?;
    let line = log
        .lines()
        .find_map(|l| {
            l.split_once("WAL restored for recovery: ")
                .map(|(_, r)| r.to_owned())
        })
        .with_context(|| format!("no WAL count in the job's log:\n{log}"))?;
    // "<n> files, <m> of them read ahead"
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    ensure!(numbers.len() >= 2, "{line}");
    eprintln!("the restore job restored {line}");
    Ok((log, numbers[0], numbers[1]))
}

/// A `walship cnpg restore` (the restore job's sidecar) as the PostgreSQL user on a
/// read-only root filesystem, WAL read ahead into a spool of its own.
fn start_restore_job(
    archive: &Archive,
    pgdata: &Path,
    plugins: &Path,
    restore_command: &str,
    config: Config<'_>,
) -> Result<(Child, PathBuf)> {
    let log = archive.dir.path().join("restore-job.log");
    let mut cmd = pg_user_command(&WalshipBin::for_pg()?, archive.dir.path())?;
    match config {
        Config::Files => {
            cmd.args(archive.global_args())
                .args(["--log-format", "text", "cnpg", "restore"])
                .args(["--config-from", "files"]);
        }
        Config::Kube(api, kubeconfig) => {
            cmd.args(["--log-format", "text", "cnpg", "restore"])
                .env("KUBECONFIG", kubeconfig)
                .env("NAMESPACE", api.namespace());
        }
    }
    cmd.arg("--plugins-dir")
        .arg(plugins)
        .arg("--pgdata")
        .arg(pgdata)
        .args(["--restore-command", restore_command])
        .env("SPOOL_DIRECTORY", archive.dir.path().join("job-spool"))
        .env("POD_NAME", "pg-restored-1")
        .env("CLUSTER_NAME", "pg-restored");
    // The root filesystem read-only, as CloudNativePG runs the job's sidecar: only its
    // volumes are writable (PGDATA's, the plugins directory, the spool's).
    let volume = pgdata.parent().context("PGDATA has no parent")?;
    let mut cmd = with_read_only_root(&cmd, &[archive.dir.path(), plugins, volume])?;
    cmd.stdout(Stdio::null()).stderr(fs::File::create(&log)?);
    let mut child = cmd.spawn().context("starting walship cnpg restore")?;
    let socket = plugins.join(PLUGIN);
    wait_until(Duration::from_secs(30), "the restore job's socket", || {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the restore job exited with {status}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(socket.exists())
    })?;
    Ok((child, log))
}

/// A new cluster bootstrapped from a backup as CloudNativePG does it: the recovering
/// Cluster's JSON, the restore job's sidecar, and the data directory it restores into.
struct Recovery {
    plugins: tempfile::TempDir,
    cluster: PathBuf,
    data: PathBuf,
    dir: Option<tempfile::TempDir>,
    job: Option<Child>,
    log: PathBuf,
}

impl Recovery {
    /// Writes `cluster_json` and starts the job's sidecar; recovery's restore_command
    /// will be the manager's `wal-restore` against it.
    fn start(archive: &Archive, cluster_json: &str, config: Config<'_>) -> Result<Recovery> {
        let plugins = pg_temp_dir()?;
        let cluster = archive.dir.path().join("recovering.json");
        fs::write(&cluster, cluster_json)?;
        make_readable_by_pg(&cluster)?;
        let restore_command = format!(
            "{} --plugins-dir {} --cluster {} wal-restore %f %p",
            manager()?.display(),
            plugins.path().display(),
            cluster.display()
        );
        let dir = pg_temp_dir()?;
        let data = dir.path().join("data");
        let (job, log) =
            start_restore_job(archive, &data, plugins.path(), &restore_command, config)?;
        Ok(Recovery {
            plugins,
            cluster,
            data,
            dir: Some(dir),
            job: Some(job),
            log,
        })
    }

    fn log_contents(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The manager's `RestoreJobHooks.Restore` call.
    fn call(&self) -> Result<Output> {
        Ok(Command::new(manager()?)
            .arg("--plugins-dir")
            .arg(self.plugins.path())
            .arg("--cluster")
            .arg(&self.cluster)
            .arg("restore-job")
            .output()?)
    }

    /// The restore job's answer: the recovery configuration it returns.
    fn restore(&self) -> Result<String> {
        let out = self.call()?;
        ensure!(
            out.status.success(),
            "restore-job: {}\njob:\n{}",
            stderr(&out),
            self.log_contents()
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(answer["restore_config"]
            .as_str()
            .context("no restore_config")?
            .to_owned())
    }

    /// What CloudNativePG does with the answer: appends it and `settings` to the
    /// configuration and starts recovery, whose WAL comes through the job's sidecar;
    /// PostgreSQL once recovery has ended.
    fn recover(&mut self, config: &str, settings: &str) -> Result<PgCluster> {
        let mut auto = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.auto.conf"))?;
        write!(auto, "\n{config}{settings}archive_mode = off\n")?;
        drop(auto);
        fs::write(self.data.join("recovery.signal"), "")?;
        let mut restored = PgCluster::restored_in(self.dir.take().context("recovered twice")?)?;
        restored.start()?;
        restored
            .wait_for_recovery_end_within(Duration::from_secs(120))
            .with_context(|| self.log_contents())?;
        Ok(restored)
    }

    /// Stops the job's sidecar: see [`stop_restore_job`].
    fn stop(mut self) -> Result<(String, u64, u64)> {
        stop_restore_job(self.job.take().context("stopped twice")?, &self.log)
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        if let Some(mut job) = self.job.take() {
            let _ = job.kill();
            let _ = job.wait();
        }
    }
}

#[test]
fn a_restore_job_restores_the_backup_its_target_calls_for_and_recovery_reaches_the_target_through_grpc()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
    pg.start()?;
    pg.psql("CREATE TABLE t (x int)")?;
    pg.psql("INSERT INTO t SELECT generate_series(1, 10000)")?;
    let backup = archive.dir.path().join("backup.json");
    fs::write(&backup, r#"{"metadata":{"name":"b1"}}"#)?;
    let out = sidecar.call(&cluster, &["backup", backup.to_str().unwrap()])?;
    ensure!(out.status.success(), "backup: {}", stderr(&out));
    for _ in 0..3 {
        pg.psql("INSERT INTO t SELECT generate_series(1, 10000)")?;
        pg.switch_wal()?;
    }
    let expected = pg.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    let target = pg.psql("SELECT clock_timestamp()")?;
    pg.psql("DELETE FROM t")?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    pg.stop()?;
    drop(sidecar);

    // The recovering Cluster: its source is the origin's archive; its own archive is
    // a new server name in the same ObjectStore (checked empty, as asked).
    let mut recovery = Recovery::start(
        &archive,
        &format!(
            r#"{{"metadata":{{"name":"pg-restored","namespace":"default","uid":"u-2"}},
            "spec":{{"instances":1,
              "bootstrap":{{"recovery":{{"source":"origin",
                "recoveryTarget":{{"targetTime":"{target}"}}}}}},
              "externalClusters":[{{"name":"origin","plugin":{{"name":"{PLUGIN}",
                "parameters":{{"barmanObjectName":"minio-store","serverName":"{SERVER}"}}}}}}],
              "plugins":[{{"name":"{PLUGIN}","parameters":{{"barmanObjectName":"minio-store"}}}}]}},
            "status":{{}}}}"#
        ),
        Config::Files,
    )?;
    let config = recovery.restore()?;
    assert!(
        config.contains("recovery_target_action = promote\n")
            && config.contains("wal-restore %f %p"),
        "{config}"
    );
    let data = recovery.data.clone();
    assert!(data.join("PG_VERSION").exists() && data.join("global/pg_control").exists());

    // CloudNativePG appends the answer and the target, then starts recovery.
    let restored = recovery.recover(&config, &format!("recovery_target_time = '{target}'\n"))?;
    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        expected,
        "table t at the target"
    );
    restored.stop()?;

    // A second restore job call into the now used directory is refused clearly.
    let out = recovery.call()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Recovery read WAL ahead through the job's spool.
    let (log, restored, read_ahead) = recovery.stop()?;
    assert!(restored >= 4 && read_ahead >= 2, "{log}");
    Ok(())
}

#[test]
fn killing_the_sidecar_under_pgbench_loses_no_segment() -> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster: _,
    } = setup()?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    for round in 0..5 {
        let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
        // Killed at a different point of the work each round; while it is down the
        // manager finds no socket and PostgreSQL keeps the segments for later.
        pg.pgbench(&["-c", "2", "-t", &(60 + round * 41).to_string()])?;
        pg.switch_wal()?;
        let status = Command::new("kill")
            .args(["-KILL", &sidecar.child.id().to_string()])
            .status()?;
        ensure!(status.success());
        drop(sidecar);
        pg.pgbench(&["-c", "1", "-t", "50"])?;
    }
    let sidecar = Sidecar::start(&archive, &pg, plugins.path())?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(180))?;
    let archived = barman_restores_every_archived_segment(&archive, &pg)?;
    eprintln!(
        "{} segments archived across 5 kill -9 rounds of the sidecar",
        archived.len()
    );
    drop(sidecar);
    pg.stop()?;
    Ok(())
}

/// The ObjectStore of [`Archive::manifest`] as the Kubernetes API serves it.
fn object_store_json(archive: &Archive) -> serde_json::Value {
    object_store_at(archive, "minio-store", &archive.destination())
}

/// An ObjectStore `name` with `destination` in the archive's S3 server, under the
/// same credentials.
fn object_store_at(archive: &Archive, name: &str, destination: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": {"name": name},
        "spec": {"configuration": {
            "destinationPath": destination,
            "endpointURL": archive.s3.endpoint(),
            "s3Credentials": {
                "accessKeyId": {"name": "aws-creds", "key": "ACCESS_KEY_ID"},
                "secretAccessKey": {"name": "aws-creds", "key": "ACCESS_SECRET_KEY"}
            },
            "wal": {"compression": "gzip", "maxParallel": 4}
        }}
    })
}

/// Waits until a restore call for a segment the archive lacks is answered `code` with
/// `text` in its message (the manager prints the status), or NOT_FOUND when `code` is
/// "NotFound"; returns the manager's stderr.
fn restore_answers(sidecar: &Sidecar, cluster: &Path, dest: &Path, want: &str) -> Result<String> {
    let mut last = String::new();
    let answered = wait_until(Duration::from_secs(60), want, || {
        let out = sidecar.call(
            cluster,
            &[
                "wal-restore",
                "0000000100000099000000FF",
                dest.to_str().unwrap(),
            ],
        )?;
        last = stderr(&out);
        Ok(last.contains(want))
    });
    answered
        .with_context(|| format!("last answer: {last}\nsidecar:\n{}", sidecar.log_contents()))?;
    Ok(last)
}

#[test]
fn the_sidecar_reads_its_object_store_and_secrets_from_the_kubernetes_api_and_follows_their_changes()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    let api = KubeApi::start("default", "sidecar-token")?;
    let kubeconfig = api.write_kubeconfig(archive.dir.path())?;
    make_readable_by_pg(&kubeconfig)?;
    api.put(
        KubeKind::Cluster,
        SERVER,
        serde_json::from_str(&cluster_json("minio-store", POD))?,
    );
    let dest = archive.dir.path().join("restored");

    // No ObjectStore yet: the sidecar serves anyway, and every call is refused with
    // FAILED_PRECONDITION naming what is missing (never NOT_FOUND: recovery would stop).
    let sidecar = Sidecar::start_with(
        &archive,
        &pg,
        plugins.path(),
        Config::Kube(&api, &kubeconfig),
    )?;
    let refused = restore_answers(&sidecar, &cluster, &dest, "FailedPrecondition")?;
    assert!(
        refused.contains("ObjectStore") && refused.contains("minio-store"),
        "{refused}"
    );
    assert!(refused.contains("does not exist"), "{refused}");

    // The ObjectStore appears with a Secret whose key is wrong: the store is read, and
    // refuses the credentials (UNAVAILABLE, the store's own words).
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", "not-the-key"),
        ],
    );
    api.put(
        KubeKind::ObjectStore,
        "minio-store",
        object_store_json(&archive),
    );
    let denied = restore_answers(&sidecar, &cluster, &dest, "Unavailable")?;
    assert!(
        !denied.contains("not-the-key"),
        "a secret in an error: {denied}"
    );

    // PostgreSQL archives through the sidecar; nothing is acknowledged while the key is
    // wrong.
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    let first = pg.switch_wal()?;
    wait_until(Duration::from_secs(60), "a failed archive_command", || {
        Ok(pg.archiver_stats()?.failed_count > 0)
    })?;
    assert_eq!(pg.archiver_stats()?.archived_count, 0);

    // The Secret is corrected in the API: the watch sees it, the daemon reloads, and
    // what was waiting is archived; the miss is NOT_FOUND again.
    let applied = r#"walship_config_reloads_total{result="applied"}"#;
    let reloads = sidecar.metric(applied)?;
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    );
    wait_until(Duration::from_secs(60), "a reload", || {
        Ok(sidecar.metric(applied)? > reloads)
    })?;
    // A new .ready wakes PostgreSQL's archiver from its wait after failures.
    pg.psql("CREATE TABLE wake AS SELECT 1 AS x")?;
    pg.switch_wal()?;
    pg.wait_for_archived(&first, Duration::from_secs(120))
        .with_context(|| sidecar.log_contents())?;
    restore_answers(&sidecar, &cluster, &dest, "NotFound")?;
    pg.pgbench(&["-c", "2", "-t", "100"])?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    let archived = barman_restores_every_archived_segment(&archive, &pg)?;
    ensure!(archived.len() >= 2, "only {} segments", archived.len());

    // A backup: its result, then the ObjectStore's status.serverRecoveryWindow for this
    // server, written through the status subresource as the plugin writes it.
    let backup = archive.dir.path().join("backup.json");
    fs::write(
        &backup,
        r#"{"apiVersion":"postgresql.cnpg.io/v1","kind":"Backup",
            "metadata":{"name":"pg-main-backup-1","namespace":"default"},
            "spec":{"cluster":{"name":"pg-main"},"method":"plugin",
              "pluginConfiguration":{"name":"barman-cloud.cloudnative-pg.io"}}}"#,
    )?;
    make_readable_by_pg(&backup)?;
    let out = sidecar.call(&cluster, &["backup", backup.to_str().unwrap()])?;
    ensure!(
        out.status.success(),
        "backup: {}\nsidecar:\n{}",
        stderr(&out),
        sidecar.log_contents()
    );
    let status = api
        .get(KubeKind::ObjectStore, "minio-store")
        .context("the ObjectStore is gone")?["status"]
        .clone();
    let window = &status["serverRecoveryWindow"][SERVER];
    let last_backup = window["lastSuccessfulBackupTime"]
        .as_str()
        .with_context(|| format!("no lastSuccessfulBackupTime in {status}"))?;
    assert!(
        last_backup.ends_with('Z') && last_backup.len() == 20,
        "{last_backup}"
    );
    assert_eq!(
        window["firstRecoverabilityPoint"],
        window["lastSuccessfulBackupTime"]
    );
    // Our own status write comes back through the ObjectStore's watch; the sidecar reads
    // it again, finds what it serves unchanged, and does not reload.
    let reloads = sidecar.metric(applied)?;
    let put_at = api
        .requests()
        .iter()
        .rposition(|r| r.line.starts_with("PUT ") && r.line.contains("/status"))
        .context("no status update")?;
    wait_until(
        Duration::from_secs(30),
        "the ObjectStore read again",
        || {
            Ok(api.requests()[put_at..].iter().any(|r| {
                r.line.starts_with("GET ") && r.line.contains("/objectstores/minio-store ")
            }))
        },
    )?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sidecar.metric(applied)?, reloads);

    // The Role loses its grant on the ObjectStore: the next read (a Secret rotates) is
    // refused, and calls answer FAILED_PRECONDITION naming the object and the Role, as
    // the plugin's do; archive_command fails meanwhile. The grant back, archiving
    // resumes by itself.
    api.deny(KubeKind::ObjectStore, "minio-store", true);
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    );
    let forbidden = restore_answers(&sidecar, &cluster, &dest, "FailedPrecondition")?;
    assert!(forbidden.contains("forbidden"), "{forbidden}");
    assert!(forbidden.contains("barman-cloud"), "{forbidden}");
    let failed = pg.archiver_stats()?.failed_count;
    pg.psql("INSERT INTO pgbench_history SELECT * FROM pgbench_history")?;
    let after = pg.switch_wal()?;
    wait_until(Duration::from_secs(60), "archive_command refused", || {
        Ok(pg.archiver_stats()?.failed_count > failed)
    })?;
    api.deny(KubeKind::ObjectStore, "minio-store", false);
    wait_until(
        Duration::from_secs(60),
        "the ObjectStore readable again",
        || {
            let out = sidecar.call(
                &cluster,
                &[
                    "wal-restore",
                    "0000000100000099000000FF",
                    dest.to_str().unwrap(),
                ],
            )?;
            Ok(stderr(&out).contains("NotFound"))
        },
    )?;
    pg.psql("INSERT INTO wake VALUES (2)")?;
    pg.switch_wal()?;
    pg.wait_for_archived(&after, Duration::from_secs(120))?;

    // Every request carried the service account's token, and the Secret was watched,
    // field-selected by name (the Role grants nothing wider).
    let requests = api.requests();
    assert!(requests.iter().all(|r| r.authorized), "{requests:?}");
    assert!(
        requests.iter().any(|r| r.line.contains("/secrets?")
            && r.line.contains("watch=true")
            && r.line.contains("fieldSelector=metadata.name%3Daws-creds")),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.line.contains("/secrets?") && !r.line.contains("fieldSelector")),
        "an unselected list or watch: {requests:?}"
    );
    pg.stop()?;
    Ok(())
}

/// Two DONE backups of long ago under `base` (`<prefix>/<server>`), 2020-01-01 and
/// 2020-01-02, and a WAL object older than the second's first WAL; its key. Under a
/// window of a day the second is kept (the window's start is recovered from it) and
/// the first goes, with that WAL.
fn plant_old_backups(archive: &Archive, base: &str) -> Result<String> {
    for (id, wal) in [("20200101T000000", "00"), ("20200102T000000", "01")] {
        let day = &id[6..8];
        let info = format!(
            "backup_label=None\nbegin_offset=40\n\
             begin_time=2020-01-{day} 00:00:00.000000+00:00\n\
             begin_wal=0000000100000000000000{wal}\nbegin_xlog=0/{wal}000028\n\
             end_offset=256\nend_time=2020-01-{day} 00:01:00.000000+00:00\n\
             end_wal=0000000100000000000000{wal}\nend_xlog=0/{wal}000100\n\
             mode=cloud\nserver_name=cloud\nstatus=DONE\ntablespaces=None\n\
             timeline=1\nversion=150000\nxlog_segment_size=1048576\n"
        );
        archive.s3.put_object(
            BUCKET,
            &format!("{base}/base/{id}/backup.info"),
            info.as_bytes(),
        )?;
    }
    let expired_wal = format!("{base}/wals/0000000100000000/000000010000000000000000.gz");
    archive.s3.put_object(BUCKET, &expired_wal, b"expired")?;
    Ok(expired_wal)
}

/// A Backup resource as CloudNativePG leaves it once the plugin's backup completed.
fn backup_resource(
    cluster: &str,
    cluster_uid: &str,
    phase: &str,
    backup_id: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "spec": {"cluster": {"name": cluster}, "method": "plugin",
                 "pluginConfiguration": {"name": PLUGIN}},
        "status": {"phase": phase, "method": "plugin", "backupId": backup_id,
                   "pluginMetadata": {"clusterUID": cluster_uid, "pluginName": PLUGIN}}
    })
}

#[test]
fn retention_on_the_primary_deletes_the_backup_resources_whose_backup_it_removed_and_no_others()
-> Result<()> {
    let Setup {
        archive,
        pg,
        plugins,
        cluster: _,
    } = setup()?;
    let api = KubeApi::start("default", "sidecar-token")?;
    let kubeconfig = api.write_kubeconfig(archive.dir.path())?;
    make_readable_by_pg(&kubeconfig)?;
    api.put(
        KubeKind::Cluster,
        SERVER,
        serde_json::from_str(&cluster_json("minio-store", POD))?,
    );
    // The stand-in gives each object the uid `uid-<name>`.
    let uid = format!("uid-{SERVER}");
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    );
    let mut store = object_store_json(&archive);
    store["spec"]["retentionPolicy"] = "1d".into();
    api.put(KubeKind::ObjectStore, "minio-store", store);
    let expired_wal = plant_old_backups(&archive, &format!("{PREFIX}/{SERVER}"))?;

    // The Backup resources: the one retention will remove, and others it must leave
    // (kept by the policy; another cluster's; a cluster of the same name before this
    // one; a failed backup, never in the catalog).
    let resources = [
        (
            "pg-main-old",
            backup_resource(SERVER, &uid, "completed", "20200101T000000"),
        ),
        (
            "pg-main-kept",
            backup_resource(SERVER, &uid, "completed", "20200102T000000"),
        ),
        (
            "other-old",
            backup_resource("other", "uid-other", "completed", "20200101T000000"),
        ),
        (
            "pg-main-before",
            backup_resource(SERVER, "uid-before", "completed", "20190101T000000"),
        ),
        (
            "pg-main-failed",
            backup_resource(SERVER, &uid, "failed", "20191231T000000"),
        ),
    ];
    for (name, resource) in &resources {
        api.put(KubeKind::Backup, name, resource.clone());
    }

    let sidecar = Sidecar::launch(
        &archive,
        &pg,
        plugins.path(),
        Config::Kube(&api, &kubeconfig),
        false,
        1,
    )?;
    wait_until(Duration::from_secs(60), "pg-main-old deleted", || {
        Ok(api.get(KubeKind::Backup, "pg-main-old").is_none())
    })
    .with_context(|| sidecar.log_contents())?;
    // Another round or two changes nothing more.
    let applied = r#"walship_retention_runs_total{result="applied"}"#;
    let rounds = sidecar.metric(applied)?;
    wait_until(Duration::from_secs(30), "two more rounds", || {
        Ok(sidecar.metric(applied)? >= rounds + 2.0)
    })?;
    for (name, _) in &resources[1..] {
        assert!(
            api.get(KubeKind::Backup, name).is_some(),
            "{name} was deleted:\n{}",
            sidecar.log_contents()
        );
    }
    // What the resource stood for is gone from the store, with the WAL only it needed.
    let keys = archive.keys()?;
    assert!(
        !keys.iter().any(|k| k.contains("/base/20200101T000000/")) && !keys.contains(&expired_wal),
        "{keys:?}"
    );
    assert!(
        sidecar.log_contents().contains("pg-main-old"),
        "{}",
        sidecar.log_contents()
    );
    Ok(())
}

/// A Backup resource for the Cluster, with `parameters` in its plugin configuration.
fn backup_json(name: &str, parameters: &str) -> String {
    format!(
        r#"{{"apiVersion":"postgresql.cnpg.io/v1","kind":"Backup",
        "metadata":{{"name":"{name}","namespace":"default"}},
        "spec":{{"cluster":{{"name":"{SERVER}"}},"method":"plugin",
          "pluginConfiguration":{{"name":"{PLUGIN}","parameters":{parameters}}}}}}}"#
    )
}

#[test]
fn a_backup_sent_to_an_offsite_store_carries_its_wal_there_and_a_new_cluster_recovers_from_that_store_alone()
-> Result<()> {
    let Setup {
        archive,
        mut pg,
        plugins,
        cluster,
    } = setup()?;
    // Two ObjectStores in the API: the cluster archives to minio-store; offsite-store,
    // another prefix, takes base backups only.
    let offsite = format!("{}-offsite", archive.destination());
    let api = KubeApi::start("default", "sidecar-token")?;
    let kubeconfig = api.write_kubeconfig(archive.dir.path())?;
    make_readable_by_pg(&kubeconfig)?;
    api.put(
        KubeKind::Cluster,
        SERVER,
        serde_json::from_str(&cluster_json("minio-store", POD))?,
    );
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    );
    api.put(
        KubeKind::ObjectStore,
        "minio-store",
        object_store_json(&archive),
    );
    let mut offsite_store = object_store_at(&archive, "offsite-store", &offsite);
    offsite_store["spec"]["retentionPolicy"] = "1d".into();
    api.put(KubeKind::ObjectStore, "offsite-store", offsite_store);
    // Two backups from long ago there, with WAL before the newer one's: under a window
    // of a day the newer is kept (the window's start is recovered from it), the older
    // goes with that WAL once a new backup is DONE there.
    let base = format!("{PREFIX}-offsite/{SERVER}");
    let expired_wal = plant_old_backups(&archive, &base)?;
    let sidecar = Sidecar::start_with(
        &archive,
        &pg,
        plugins.path(),
        Config::Kube(&api, &kubeconfig),
    )?;
    pg.start()?;
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS x")?;
    let expected = pg.psql("SELECT count(*) || ':' || sum(x) FROM t")?;

    // A Backup naming an ObjectStore that does not exist is refused, naming it.
    let nowhere = archive.dir.path().join("nowhere.json");
    fs::write(
        &nowhere,
        backup_json("pg-main-nowhere", r#"{"barmanObjectName":"nowhere-store"}"#),
    )?;
    let out = sidecar.call(&cluster, &["backup", nowhere.to_str().unwrap()])?;
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("FailedPrecondition") && said.contains("nowhere-store"),
        "{said}"
    );

    // The Backup naming offsite-store: DONE there, with the WAL it needs.
    let backup = archive.dir.path().join("backup.json");
    fs::write(
        &backup,
        backup_json(
            "pg-main-offsite-1",
            r#"{"barmanObjectName":"offsite-store"}"#,
        ),
    )?;
    let out = sidecar.call(&cluster, &["backup", backup.to_str().unwrap()])?;
    ensure!(
        out.status.success(),
        "backup: {}\nsidecar:\n{}",
        stderr(&out),
        sidecar.log_contents()
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = result["backup_id"].as_str().context("no backup_id")?;
    let (begin_wal, end_wal) = (
        result["begin_wal"].as_str().context("no begin_wal")?,
        result["end_wal"].as_str().context("no end_wal")?,
    );
    // WAL written after the backup goes to minio-store only.
    pg.psql("INSERT INTO t SELECT generate_series(1, 5000)")?;
    let later = pg.switch_wal()?;
    pg.wait_for_archived(&later, Duration::from_secs(120))?;

    // barman-cloud reads it from offsite-store, DONE, and restores its WAL from there;
    // minio-store got no backup.
    let list = |destination: &str| -> Result<serde_json::Value> {
        let out = archive
            .barman("barman-cloud-backup-list")?
            .args(["--format", "json"])
            .arg(destination)
            .arg(SERVER)
            .output()?;
        ensure!(out.status.success(), "backup-list: {}", stderr(&out));
        Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout)?["backups_list"].clone())
    };
    let listed = list(&offsite)?;
    let ids: Vec<&str> = listed
        .as_array()
        .context("no list")?
        .iter()
        .filter_map(|b| b["backup_id"].as_str())
        .collect();
    // The retention policy of offsite-store applied after the backup.
    assert_eq!(ids, ["20200102T000000", id], "{listed}");
    assert_eq!(listed[1]["status"], "DONE", "{listed}");
    let keys = archive.keys()?;
    assert!(
        !keys.contains(&expired_wal)
            && keys.contains(&format!("{base}/base/20200102T000000/backup.info")),
        "{keys:?}"
    );
    assert_eq!(list(&archive.destination())?, serde_json::json!([]));
    barman_restores(
        &archive,
        &offsite,
        &pg,
        &[begin_wal.to_owned(), end_wal.to_owned()],
    )?;
    let out_dir = pg_temp_dir()?;
    // The recovery window is offsite-store's, in its own status; minio-store's
    // status is not touched.
    let status = |name: &str| -> serde_json::Value {
        api.get(KubeKind::ObjectStore, name).unwrap_or_default()["status"].clone()
    };
    let window = &status("offsite-store")["serverRecoveryWindow"][SERVER];
    assert!(
        window["lastSuccessfulBackupTime"].is_string(),
        "{}",
        status("offsite-store")
    );
    assert!(status("minio-store")["serverRecoveryWindow"].is_null());

    // A replica cluster whose source is offsite-store: its designated primary (this
    // pod) restores from there, archiving nowhere else; a segment only minio-store
    // holds is NOT_FOUND there.
    let replica = archive.dir.path().join("replica.json");
    fs::write(
        &replica,
        format!(
            r#"{{"metadata":{{"name":"pg-replica","namespace":"default"}},
            "spec":{{"replica":{{"enabled":true,"source":"offsite"}},
              "externalClusters":[{{"name":"offsite","plugin":{{"name":"{PLUGIN}",
                "parameters":{{"barmanObjectName":"offsite-store","serverName":"{SERVER}"}}}}}}],
              "plugins":[{{"name":"{PLUGIN}","parameters":{{"barmanObjectName":"minio-store"}}}}]}},
            "status":{{"currentPrimary":"{POD}"}}}}"#
        ),
    )?;
    let dest = out_dir.path().join("replica-hit");
    let out = sidecar.call(
        &replica,
        &["wal-restore", begin_wal, dest.to_str().unwrap()],
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sha256_file(&dest)?,
        sha256_file(&pg.data_dir().join("pg_wal").join(begin_wal))?
    );
    let dest = out_dir.path().join("replica-miss");
    let out = sidecar.call(&replica, &["wal-restore", &later, dest.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    pg.stop()?;
    drop(sidecar);

    // A new cluster recovers from offsite-store: the restore job reads both ObjectStores
    // from the API, restores the backup and serves its WAL; recovery to the backup's
    // consistent point ends there, with the rows of the backup.
    let mut recovery = Recovery::start(
        &archive,
        &format!(
            r#"{{"metadata":{{"name":"pg-restored","namespace":"default","uid":"u-3"}},
            "spec":{{"instances":1,
              "bootstrap":{{"recovery":{{"source":"offsite"}}}},
              "externalClusters":[{{"name":"offsite","plugin":{{"name":"{PLUGIN}",
                "parameters":{{"barmanObjectName":"offsite-store","serverName":"{SERVER}"}}}}}}],
              "plugins":[{{"name":"{PLUGIN}","parameters":{{"barmanObjectName":"minio-store"}}}}]}},
            "status":{{}}}}"#
        ),
        Config::Kube(&api, &kubeconfig),
    )?;
    let config = recovery.restore()?;
    let restored = recovery.recover(&config, "recovery_target = 'immediate'\n")?;
    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        expected,
        "table t as the backup holds it"
    );
    restored.stop()?;
    let (log, restored, _) = recovery.stop()?;
    assert!(restored >= 1, "{log}");
    // The job read offsite-store from the API, with the pod's token.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.line.contains("/objectstores/offsite-store")),
        "offsite-store was never read"
    );
    Ok(())
}

#[test]
fn an_endpoint_ca_read_from_the_kubernetes_api_is_trusted_and_required() -> Result<()> {
    // WAL in the store, which is reached through TLS signed by a private CA.
    let archive = Archive::start(Some("gzip"))?;
    let tls = walship_testkit::TlsProxy::start(archive.s3.port())?;
    let (wal_dir, segments) = common::real_segments(2)?;
    for name in &segments {
        let path = wal_dir.path().join(name);
        let out = archive.walship(&["wal-push", path.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
    }

    // The ObjectStore names the CA's Secret, as the seed's MinIO example does; the
    // plugin mounts it into its sidecar, walship reads it from the API.
    let api = KubeApi::start("default", "job-token")?;
    let kubeconfig = api.write_kubeconfig(archive.dir.path())?;
    make_readable_by_pg(&kubeconfig)?;
    api.put_secret(
        "aws-creds",
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    );
    api.put_secret(
        "minio-ca",
        &[("ca.crt", &fs::read_to_string(tls.ca_pem_path())?)],
    );
    let mut store = object_store_json(&archive);
    store["spec"]["configuration"]["endpointURL"] = tls.endpoint().into();
    store["spec"]["configuration"]["endpointCA"] =
        serde_json::json!({"name": "minio-ca", "key": "ca.crt"});
    api.put(KubeKind::ObjectStore, "minio-store", store.clone());

    let plugins = pg_temp_dir()?;
    let recovering = archive.dir.path().join("recovering.json");
    fs::write(
        &recovering,
        format!(
            r#"{{"metadata":{{"name":"pg-restored","namespace":"default"}},
            "spec":{{"bootstrap":{{"recovery":{{"source":"origin"}}}},
              "externalClusters":[{{"name":"origin","plugin":{{"name":"{PLUGIN}",
                "parameters":{{"barmanObjectName":"minio-store","serverName":"{SERVER}"}}}}}}]}},
            "status":{{}}}}"#
        ),
    )?;
    let data = pg_temp_dir()?;
    let (job, log) = start_restore_job(
        &archive,
        &data.path().join("data"),
        plugins.path(),
        "unused",
        Config::Kube(&api, &kubeconfig),
    )?;
    let restore = |name: &str, dest: &Path| -> Result<Output> {
        Ok(Command::new(manager()?)
            .arg("--plugins-dir")
            .arg(plugins.path())
            .arg("--cluster")
            .arg(&recovering)
            .args(["wal-restore", name, dest.to_str().unwrap()])
            .output()?)
    };
    // Where recovery writes: the data volume.
    let out_dir = &data;
    let dest = out_dir.path().join(&segments[0]);
    let out = restore(&segments[0], &dest)?;
    ensure!(
        out.status.success(),
        "{}\njob:\n{}",
        stderr(&out),
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        sha256_file(&dest)?,
        sha256_file(&wal_dir.path().join(&segments[0]))?
    );

    // Without endpointCA the certificate is not trusted: UNAVAILABLE, naming it (never
    // NOT_FOUND), and nothing read ahead through the trusted store is served either.
    store["spec"]["configuration"]
        .as_object_mut()
        .context("no configuration")?
        .remove("endpointCA");
    api.put(KubeKind::ObjectStore, "minio-store", store);
    let dest = out_dir.path().join(&segments[1]);
    let mut said = String::new();
    wait_until(Duration::from_secs(60), "the CA no longer trusted", || {
        // Served while the change was not yet seen: ask again.
        let _ = fs::remove_file(&dest);
        let out = restore(&segments[1], &dest)?;
        said = stderr(&out);
        Ok(!out.status.success() && said.contains("Unavailable"))
    })
    .with_context(|| said.clone())?;
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    assert!(!dest.exists());
    stop_restore_job(job, &log)?;
    Ok(())
}
