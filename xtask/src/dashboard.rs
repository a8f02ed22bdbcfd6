//! `cargo xtask dashboard`: deploy/monitoring's Grafana dashboard drawn from real data,
//! as `deploy/monitoring/dashboard.png`.
//!
//! No Grafana can run here, so this draws the dashboard's own panels the way Grafana
//! would lay them out: it runs walship for about five minutes and has a real Prometheus
//! scrape it. The run has:
//! - an S3 server;
//! - a PostgreSQL 15 cluster (16 MiB segments) archiving through `walship daemon` (the
//!   release build);
//! - Prometheus scraping the daemon every 2 s, with the `namespace` and `pod` labels a
//!   PodMonitor would add.
//!
//! It drives that setup through:
//! - pgbench's initialisation and a base backup;
//! - steady load;
//! - a 40-second store outage under load;
//! - recovery;
//! - a run of `wal-fetch` restores.
//!
//! Then it asks Prometheus for every panel's expressions over the run (each Grafana
//! variable replaced as "All" would) and draws them with matplotlib
//! (`xtask/dashboard.py`, in a virtualenv under the target directory).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use walship_testkit::{
    InitOptions, PgCluster, S3Server, executable_by_pg, free_port, make_readable_by_pg,
    pg_temp_dir, pg_user_command, target_dir, wait_until, workspace_root,
};

use crate::cargo::{build_walship, run_step_checked};

const BUCKET: &str = "dashboard";
const SERVER: &str = "pg";

pub fn run() -> Result<u8> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:>5.0?}] {what}", started.elapsed());
    say("building walship (release) and the plotting virtualenv");
    let built = build_walship(true)?;
    let walship = executable_by_pg(&built)?;
    let python = plotting_venv()?;

    let work = pg_temp_dir()?;
    make_readable_by_pg(work.path())?;
    let mut s3 = S3Server::start()?;
    s3.create_bucket(BUCKET)?;
    let config = work.path().join("objectstore.yaml");
    fs::write(
        &config,
        format!(
            "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: dashboard\n\
             spec:\n  retentionPolicy: 7d\n  configuration:\n    destinationPath: s3://{BUCKET}/\n\
             \x20   endpointURL: {}\n    serverName: {SERVER}\n    s3Credentials:\n      \
             accessKeyId: {{name: creds, key: ACCESS_KEY_ID}}\n      \
             secretAccessKey: {{name: creds, key: ACCESS_SECRET_KEY}}\n    \
             wal: {{compression: gzip, maxParallel: 4}}\n    data: {{compression: gzip}}\n",
            s3.endpoint()
        ),
    )?;
    let secrets = work.path().join("secrets");
    fs::create_dir_all(secrets.join("creds"))?;
    fs::write(secrets.join("creds/ACCESS_KEY_ID"), s3.access_key())?;
    fs::write(secrets.join("creds/ACCESS_SECRET_KEY"), s3.secret_key())?;
    make_readable_by_pg(work.path())?;
    let socket = work.path().join("walship.sock");
    let global = [
        "--config".to_owned(),
        config.display().to_string(),
        "--secrets-dir".to_owned(),
        secrets.display().to_string(),
        "--socket".to_owned(),
        socket.display().to_string(),
    ];

    say("PostgreSQL 15 archiving through walship's daemon, scraped by Prometheus");
    let mut pg = PgCluster::init_temp(InitOptions::default())?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        (
            "archive_command",
            &format!("{} {} wal-push %p", walship.display(), global.join(" ")),
        ),
        ("max_wal_size", "4GB"),
    ])?;
    let metrics_port = free_port()?;
    let mut daemon = Process::spawn(
        pg_user_command(&walship, work.path())?
            .args(&global)
            .args(["--log-format", "text", "daemon", "--pgdata"])
            .arg(pg.data_dir())
            .arg("--journal-dir")
            .arg(work.path().join("journal"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--retention-interval-seconds", "10"]),
        &work.path().join("daemon.log"),
    )?;
    pg.start()?;
    wait_until(Duration::from_secs(30), "the daemon's socket", || {
        daemon.check_running()?;
        Ok(socket.exists())
    })?;
    let prometheus = Prometheus::start(metrics_port, work.path())?;
    let from = now();

    say("pgbench -i -s 30, then a base backup");
    pg.pgbench(&["-i", "-s", "30", "-q"])?;
    let backup = Command::new(&built)
        .args(&global)
        .args(["backup", "--immediate-checkpoint", "--host", "127.0.0.1"])
        .args(["--port", &pg.port().to_string()])
        .output()?;
    ensure!(
        backup.status.success(),
        "walship backup: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    say("90 s of pgbench");
    pg.pgbench(&["-T", "90", "-c", "4", "-j", "2"])?;
    say("the store down for 40 s under pgbench");
    s3.stop();
    pg.pgbench(&["-T", "40", "-c", "4", "-j", "2"])?;
    s3.restart()?;
    say("the store back: 60 s of pgbench");
    pg.pgbench(&["-T", "60", "-c", "4", "-j", "2"])?;
    say("30 s idle, then wal-fetch of the archived segments");
    std::thread::sleep(Duration::from_secs(30));
    let restored = work.path().join("restored");
    fs::create_dir_all(&restored)?;
    make_readable_by_pg(&restored)?;
    let mut names: Vec<String> = fs::read_dir(pg.data_dir().join("pg_wal/archive_status"))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".done")
                .map(str::to_owned)
        })
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    for name in names.iter().take(60) {
        let out = pg_user_command(&walship, work.path())?
            .args(&global)
            .args(["wal-fetch", name])
            .arg(restored.join("RECOVERYXLOG"))
            .output()?;
        ensure!(
            out.status.success(),
            "wal-fetch {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_secs(20));
    let to = now();
    daemon.check_running()?;

    say("drawing the panels");
    let output = workspace_root().join("deploy/monitoring/dashboard.png");
    run_step_checked(
        Command::new(&python)
            .arg(workspace_root().join("xtask/dashboard.py"))
            .arg(workspace_root().join("deploy/monitoring/grafana-dashboard.json"))
            .arg(format!("http://127.0.0.1:{}", prometheus.port))
            .arg(from.to_string())
            .arg(to.to_string())
            .arg(&output),
    )?;
    daemon.stop();
    drop(prometheus);
    println!("{}", output.display());
    Ok(0)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A virtualenv with matplotlib under the target directory; its python.
fn plotting_venv() -> Result<PathBuf> {
    let venv = target_dir().join("tools/plotting-venv");
    let python = venv.join("bin/python3");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import matplotlib"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        run_step_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run_step_checked(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "matplotlib==3.9.2",
        ]))?;
    }
    ensure!(
        has(&python),
        "matplotlib is not importable in {}",
        venv.display()
    );
    Ok(python)
}

/// A child process whose log goes to a file; killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(cmd: &mut Command, log: &Path) -> Result<Process> {
        let file = fs::File::create(log)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting the daemon")?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "exited with {status}: {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus scraping the daemon every 2 s, its series labelled as a
/// PodMonitor's would be.
struct Prometheus {
    process: Process,
    port: u16,
}

impl Prometheus {
    fn start(target: u16, dir: &Path) -> Result<Prometheus> {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: walship\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target}']\n        \
                 labels: {{namespace: demo, pod: pg-0}}\n"
            ),
        )?;
        let port = free_port()?;
        let mut process = Process::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            &dir.join("prometheus.log"),
        )?;
        wait_until(Duration::from_secs(60), "prometheus to listen", || {
            process.check_running()?;
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        })?;
        Ok(Prometheus { process, port })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.stop();
    }
}
