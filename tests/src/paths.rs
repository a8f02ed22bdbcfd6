//! Where things are: the workspace, its target directory, the `walship` binary and
//! the external tools the tests drive.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::pg;

/// The workspace root: the parent of this crate's folder (`tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root
/// when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Finds an installed tool: on `PATH`, then in `$CARGO_HOME/bin`, then in
/// `~/.cargo/bin` (where `cargo install` puts things even when that is not on `PATH`).
pub fn tool_path(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .with_context(|| {
            format!(
                "`{name}` is not installed (looked on PATH, in $CARGO_HOME/bin and ~/.cargo/bin); \
                 run `cargo xtask install-tools`"
            )
        })
}

/// The barman-cloud virtualenv: `$WALSHIP_BARMAN_VENV`, else
/// `<workspace>/target/tools/barman-venv` when `cargo xtask install-tools` made it.
pub fn barman_venv() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("WALSHIP_BARMAN_VENV").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let default = target_dir().join("tools/barman-venv");
    default.join("bin").is_dir().then_some(default)
}

/// The virtualenv made with the system's `/usr/bin/python3` for the PostgreSQL user,
/// when it cannot run the installed one (whose Python may live under `/root`, as
/// pyenv's does): `<target>/tools/barman-venv-system`.
pub fn barman_system_venv() -> PathBuf {
    target_dir().join("tools/barman-venv-system")
}

/// A barman-cloud `bin/` directory the PostgreSQL user can run tools from, for
/// `archive_command` and `restore_command`: the installed virtualenv's when it can,
/// else [`barman_system_venv`]'s (`cargo xtask install-tools` makes it when needed).
pub fn barman_bin_for_pg() -> Result<Option<PathBuf>> {
    let candidates = barman_venv()
        .into_iter()
        .chain([barman_system_venv()])
        .map(|venv| venv.join("bin"));
    for bin in candidates {
        if pg_can_run_script(&bin.join("barman-cloud-wal-archive"))? {
            return Ok(Some(bin));
        }
    }
    Ok(None)
}

/// Whether the PostgreSQL user can run the script at `script`: the script and the
/// interpreter its `#!` line names must both be reachable (`test -x` checks with the
/// real uid, as the archiver's shell will).
pub fn pg_can_run_script(script: &Path) -> Result<bool> {
    let Ok(text) = fs::read_to_string(script) else {
        return Ok(false);
    };
    let interpreter = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("/bin/sh")
        .to_owned();
    for path in [script, Path::new(&interpreter)] {
        if !pg::pg_can_execute(path)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The built `walship` binary.
///
/// `CARGO_BIN_EXE_walship` only exists inside the walship package, so the tests
/// find the binary in the target directory; `cargo xtask test` builds it first.
pub struct WalshipBin;

impl WalshipBin {
    /// `$WALSHIP_BIN`, else `<target dir>/debug/walship`; an error says how to build it.
    pub fn path() -> Result<PathBuf> {
        let path = match env::var_os("WALSHIP_BIN").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => target_dir().join("debug/walship"),
        };
        if !is_executable(&path) {
            bail!(
                "the walship binary is not at {} (build it with `cargo build -p walship`, \
                 or point WALSHIP_BIN at it)",
                path.display()
            );
        }
        Ok(path)
    }

    /// A path to the binary that the PostgreSQL user can execute, for
    /// `archive_command` and `restore_command`.
    ///
    /// When the tests run as root from a checkout the PostgreSQL user cannot reach
    /// (anything under `/root`), the binary is copied once per build into
    /// `/tmp/walship-testkit-bin/`; otherwise the built binary itself is returned.
    pub fn for_pg() -> Result<PathBuf> {
        static CACHE: OnceLock<PathBuf> = OnceLock::new();
        if let Some(path) = CACHE.get() {
            return Ok(path.clone());
        }
        let built = Self::path()?;
        let path = if pg::pg_can_execute(&built)? {
            built
        } else {
            copy_for_everyone(&built)?
        };
        Ok(CACHE.get_or_init(|| path).clone())
    }
}

/// A path to `built` (a binary of the test kit's own) that the PostgreSQL user can
/// execute: itself, or a world-readable copy when it cannot reach it.
pub fn executable_by_pg(built: &Path) -> Result<PathBuf> {
    if pg::pg_can_execute(built)? {
        Ok(built.to_owned())
    } else {
        copy_for_everyone(built)
    }
}

/// Copies `built` to a world-readable place, named by its size and modification
/// time so each build is copied once and parallel test processes share the copy.
fn copy_for_everyone(built: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(built)?;
    let dir = PathBuf::from("/tmp/walship-testkit-bin");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let mut name = OsString::from(built.file_name().unwrap_or_default());
    name.push(format!(
        "-{}-{}",
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ));
    let target = dir.join(&name);
    if !target.exists() {
        // Copy under a private name, then rename: a concurrent reader never sees half a file.
        let partial = dir.join(format!(
            "{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        fs::copy(built, &partial)
            .with_context(|| format!("copying {} to {}", built.display(), partial.display()))?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
        fs::rename(&partial, &target)?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn tool_path_names_the_fix_when_a_tool_is_missing() {
        let err = tool_path("walship-no-such-tool").unwrap_err();
        assert!(
            err.to_string().contains("cargo xtask install-tools"),
            "{err}"
        );
    }

    #[test]
    fn tool_path_finds_tools_on_path() {
        assert!(tool_path("sh").is_ok());
    }
}
