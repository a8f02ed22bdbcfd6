//! `cargo xtask services up|down|status`: servers for trying walship by hand.
//!
//! The test kit's handles stop their server when dropped, which is what tests want;
//! here the server must outlive `cargo xtask`, so `up` detaches it (with a data
//! directory under the target directory, which the handle does not delete) and
//! records what `down` and `status` need in `<target>/xtask-services.json`, one entry
//! per kind of server (`s3`, `azure`, …).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use walship_testkit::{
    AzuriteOptions, AzuriteServer, S3Options, S3Server, port_is_open, target_dir, wait_until,
};

/// The bucket `up` creates.
const BUCKET: &str = "walship";
/// The Azure container `up` creates in Azurite's development account.
const CONTAINER: &str = "walship";
/// The region the printed environment names; local servers accept any.
const REGION: &str = "us-east-1";

#[derive(Subcommand)]
pub enum Action {
    /// Start the servers in the background and print their environment as
    /// `export` lines (so `eval "$(cargo xtask services up)"` works).
    Up {
        /// Start the S3-compatible server.
        #[arg(long)]
        s3: bool,
        /// Start Azurite (Azure Blob Storage).
        #[arg(long)]
        azure: bool,
        /// Start the Google Cloud Storage emulator (fake-gcs-server).
        #[arg(long)]
        gcs: bool,
    },
    /// Stop the servers `up` started.
    Down,
    /// Say whether the servers are running, and print their environment.
    Status,
}

pub fn run(action: Action) -> Result<u8> {
    match action {
        // With no service named, start every kind there is.
        Action::Up { s3, azure, gcs } => {
            let all = !s3 && !azure && !gcs;
            if s3 || all {
                up_s3()?;
            }
            if azure || all {
                up_azure()?;
            }
            if gcs || all {
                gcs_up()?;
            }
            Ok(0)
        }
        Action::Down => {
            gcs_down()?;
            down()
        }
        Action::Status => {
            let gcs = gcs_status()?;
            Ok(status()?.max(gcs))
        }
    }
}

fn state_file() -> PathBuf {
    target_dir().join("xtask-services.json")
}

fn services_dir() -> PathBuf {
    target_dir().join("xtask-services")
}

fn read_state() -> Result<Option<Value>> {
    let path = state_file();
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn up_s3() -> Result<u8> {
    if let Some(state) = read_state()?
        && let Some(s3) = state.get("s3").filter(|s3| service_alive(s3))
    {
        eprintln!(
            "s3: already running (pid {}); `cargo xtask services down` stops it",
            s3["pid"]
        );
        print_env(s3);
        return Ok(0);
    }
    let dir = services_dir().join("s3");
    // Each `up` starts from an empty store; `down` leaves the data for inspection.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = dir.join("data");
    let log = dir.join("server.log");
    let server = S3Server::start_with(S3Options {
        root: Some(root.clone()),
        log: Some(log.clone()),
        ..S3Options::default()
    })?;
    server.create_bucket(BUCKET)?;
    if !server.bucket_exists(BUCKET)? {
        bail!("the S3 server does not see bucket {BUCKET} after creating it");
    }
    let mut s3 = json!({
        "kind": format!("{:?}", server.kind()),
        "program": server.kind().program(),
        "endpoint": server.endpoint(),
        "port": server.port(),
        "access_key": server.access_key(),
        "secret_key": server.secret_key(),
        "region": REGION,
        "bucket": BUCKET,
        "root": root,
        "log": log,
    });
    let pid = server.detach().context("the S3 server has no process")?;
    s3["pid"] = json!(pid);
    let path = record("s3", s3.clone())?;
    eprintln!(
        "s3: {} running at {} (pid {pid}), bucket {BUCKET}, data in {}, log {}",
        s3["program"].as_str().unwrap_or("?"),
        s3["endpoint"].as_str().unwrap_or("?"),
        root.display(),
        log.display()
    );
    eprintln!(
        "state in {}; stop with `cargo xtask services down`",
        path.display()
    );
    print_env(&s3);
    Ok(0)
}

/// Records one service in the state file, keeping the others.
fn record(kind: &str, service: Value) -> Result<PathBuf> {
    let mut state = read_state()?.unwrap_or_else(|| json!({}));
    state[kind] = service;
    let path = state_file();
    fs::write(&path, serde_json::to_string_pretty(&state)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Starts Azurite with its blobs in `<target>/xtask-services/azure/data` and a
/// container, and prints the connection string and the destinationPath to use.
fn up_azure() -> Result<u8> {
    if let Some(state) = read_state()?
        && let Some(azure) = state.get("azure").filter(|a| service_alive(a))
    {
        eprintln!(
            "azure: already running (pid {}); `cargo xtask services down` stops it",
            azure["pid"]
        );
        print_azure_env(azure);
        return Ok(0);
    }
    let dir = services_dir().join("azure");
    // Each `up` starts from an empty store; `down` leaves the data for inspection.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let root = dir.join("data");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let log = dir.join("server.log");
    let server = AzuriteServer::start_with(AzuriteOptions {
        location: Some(root.clone()),
        log: Some(log.clone()),
        ..AzuriteOptions::default()
    })?;
    server.create_container(CONTAINER)?;
    let mut azure = json!({
        "program": "azurite-blob",
        "endpoint": server.blob_endpoint(),
        "port": server.port(),
        "connection_string": server.connection_string(),
        "container": CONTAINER,
        "root": root,
        "log": log,
    });
    let pid = server.detach().context("Azurite has no process")?;
    azure["pid"] = json!(pid);
    let path = record("azure", azure.clone())?;
    eprintln!(
        "azure: Azurite running at {} (pid {pid}), container {CONTAINER}, data in {}, log {}",
        azure["endpoint"].as_str().unwrap_or("?"),
        root.display(),
        log.display()
    );
    eprintln!(
        "state in {}; stop with `cargo xtask services down`",
        path.display()
    );
    print_azure_env(&azure);
    Ok(0)
}

fn down() -> Result<u8> {
    let Some(state) = read_state()? else {
        eprintln!("no services recorded in {}", state_file().display());
        return Ok(0);
    };
    if let Some(s3) = state.get("s3") {
        stop_service("s3", s3)?;
    }
    if let Some(azure) = state.get("azure") {
        stop_service("azure", azure)?;
    }
    let path = state_file();
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(0)
}

fn status() -> Result<u8> {
    let Some(state) = read_state()? else {
        eprintln!("no services running (no {})", state_file().display());
        return Ok(1);
    };
    let mut all_up = true;
    if let Some(s3) = state.get("s3") {
        if service_alive(s3) {
            let port = s3["port"].as_u64().unwrap_or(0) as u16;
            let listening = if port_is_open(port) {
                "listening"
            } else {
                "NOT listening"
            };
            eprintln!(
                "s3: running (pid {}), {listening} on {}",
                s3["pid"],
                s3["endpoint"].as_str().unwrap_or("?")
            );
            print_env(s3);
        } else {
            eprintln!(
                "s3: NOT running (pid {} is gone); `cargo xtask services up` restarts it",
                s3["pid"]
            );
            all_up = false;
        }
    }
    if let Some(azure) = state.get("azure") {
        if service_alive(azure) {
            eprintln!(
                "azure: running (pid {}), {} on {}",
                azure["pid"],
                if port_is_open(azure["port"].as_u64().unwrap_or(0) as u16) {
                    "listening"
                } else {
                    "NOT listening"
                },
                azure["endpoint"].as_str().unwrap_or("?")
            );
            print_azure_env(azure);
        } else {
            eprintln!(
                "azure: NOT running (pid {} is gone); `cargo xtask services up` restarts it",
                azure["pid"]
            );
            all_up = false;
        }
    }
    Ok(if all_up { 0 } else { 1 })
}

/// The connection string barman-cloud and the Azure CLI read, as an `export` line (it
/// holds only Azurite's documented development key), and the destinationPath in the
/// emulator form.
fn print_azure_env(azure: &Value) {
    let field = |name: &str| azure[name].as_str().unwrap_or_default().to_owned();
    println!(
        "export AZURE_STORAGE_CONNECTION_STRING='{}'",
        field("connection_string")
    );
    println!(
        "# destinationPath: {}/{}/",
        field("endpoint"),
        field("container")
    );
}

/// The environment a client (walship, the AWS CLI, barman-cloud) needs, as shell
/// `export` lines on stdout; everything else goes to stderr.
fn print_env(s3: &Value) {
    let field = |name: &str| s3[name].as_str().unwrap_or_default().to_owned();
    println!("export AWS_ACCESS_KEY_ID={}", field("access_key"));
    println!("export AWS_SECRET_ACCESS_KEY={}", field("secret_key"));
    println!("export AWS_REGION={}", field("region"));
    println!("export AWS_ENDPOINT_URL={}", field("endpoint"));
    println!("# bucket: s3://{}/", field("bucket"));
}

/// Whether the recorded process still runs and is still the program we started
/// (a pid can be reused after a reboot or a crash).
fn service_alive(service: &Value) -> bool {
    let (Some(pid), Some(program)) = (service["pid"].as_u64(), service["program"].as_str()) else {
        return false;
    };
    process_runs(pid, program)
}

fn process_runs(pid: u64, program: &str) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(status) = fs::read_to_string(proc_dir.join("status")) else {
        return false;
    };
    // A zombie has exited; it only waits for its parent to reap it.
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    // A script (Azurite's `azurite-blob`) shows as `node <script>`: look at both.
    !zombie
        && cmdline
            .split(|b| *b == 0)
            .take(2)
            .any(|arg| String::from_utf8_lossy(arg).ends_with(program))
}

fn stop_service(name: &str, service: &Value) -> Result<()> {
    let pid = service["pid"].as_u64().unwrap_or(0);
    if !service_alive(service) {
        eprintln!("{name}: not running (pid {pid} is gone)");
        return Ok(());
    }
    let program = service["program"].as_str().unwrap_or_default();
    signal(pid, "TERM")?;
    let stopped = wait_until(
        Duration::from_secs(10),
        &format!("{name} (pid {pid}) to exit"),
        || Ok(!process_runs(pid, program)),
    );
    if stopped.is_err() {
        signal(pid, "KILL")?;
        wait_until(
            Duration::from_secs(5),
            &format!("{name} (pid {pid}) to die"),
            || Ok(!process_runs(pid, program)),
        )?;
    }
    eprintln!(
        "{name}: stopped pid {pid}; its data stays in {} until the next `up`",
        service["root"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Sends a signal with `kill(1)`, which saves a dependency on libc.
fn signal(pid: u64, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Google Cloud Storage (fake-gcs-server), with its own state file so it stays apart from
// the other services.

/// The bucket `up --gcs` creates.
const GCS_BUCKET: &str = "walship";
/// The program name recorded when the binary's own name cannot be read.
const GCS_PROGRAM: &str = "fake-gcs-server";

fn gcs_state_file() -> PathBuf {
    target_dir().join("xtask-services-gcs.json")
}

fn gcs_up() -> Result<u8> {
    if let Ok(text) = fs::read_to_string(gcs_state_file())
        && let Ok(state) = serde_json::from_str::<Value>(&text)
        && gcs_alive(&state)
    {
        eprintln!("gcs: already running (pid {})", state["pid"]);
        print_gcs_env(&state);
        return Ok(0);
    }
    let dir = services_dir().join("gcs");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let data = dir.join("data");
    let server = walship_testkit::GcsServer::start_with(Some(&data))?;
    server.create_bucket(GCS_BUCKET)?;
    let mut state = json!({
        "endpoint": server.endpoint(),
        "host": server.host(),
        "port": server.port(),
        "bucket": GCS_BUCKET,
        "program": walship_testkit::fake_gcs_path()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| GCS_PROGRAM.to_owned()),
        "root": data,
        "log": data.with_extension("log"),
    });
    let pid = server.detach().context("the GCS emulator has no process")?;
    state["pid"] = json!(pid);
    let path = gcs_state_file();
    fs::write(&path, serde_json::to_string_pretty(&state)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "gcs: fake-gcs-server running at {} (pid {pid}), bucket {GCS_BUCKET}, data in {}",
        state["endpoint"].as_str().unwrap_or("?"),
        data.display()
    );
    print_gcs_env(&state);
    Ok(0)
}

fn gcs_down() -> Result<()> {
    let path = gcs_state_file();
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(());
    };
    let state: Value = serde_json::from_str(&text)?;
    stop_service("gcs", &state)?;
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

fn gcs_status() -> Result<u8> {
    let Ok(text) = fs::read_to_string(gcs_state_file()) else {
        return Ok(0);
    };
    let state: Value = serde_json::from_str(&text)?;
    if gcs_alive(&state) {
        eprintln!(
            "gcs: running (pid {}) on {}",
            state["pid"],
            state["endpoint"].as_str().unwrap_or("?")
        );
        print_gcs_env(&state);
        Ok(0)
    } else {
        eprintln!("gcs: NOT running (pid {} is gone)", state["pid"]);
        Ok(1)
    }
}

fn gcs_alive(state: &Value) -> bool {
    service_alive(state)
}

/// What Google's clients (walship, barman-cloud, gsutil) read to use the emulator.
fn print_gcs_env(state: &Value) {
    println!(
        "export STORAGE_EMULATOR_HOST={}",
        state["host"].as_str().unwrap_or_default()
    );
    println!(
        "# bucket: gs://{}/",
        state["bucket"].as_str().unwrap_or_default()
    );
}
