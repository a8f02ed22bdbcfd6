//! `cargo xtask test`: the whole suite as CI runs it.

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cargo::{build_walship, cargo, run_step};
use crate::tools;

/// Installs the tools, builds the `walship` binary the end-to-end tests drive,
/// then runs `cargo test` over the workspace; returns cargo's exit code.
pub fn run(cargo_args: &[String]) -> Result<u8> {
    let tools = tools::install()?;

    // The end-to-end tests run the built binary rather than building it themselves.
    build_walship(false)?;

    let mut test = cargo();
    test.arg("test");
    // `--workspace` with `-p` would run everything anyway; a chosen package wins.
    let picks_packages = cargo_args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if !picks_packages {
        test.arg("--workspace");
    }
    test.args(cargo_args)
        .env("WALSHIP_BARMAN_VENV", &tools.barman_venv)
        .env("PATH", path_with(&tools.s3s_fs)?);
    run_step(&mut test)
}

/// `$PATH` with the directory of `tool` in front, so the tests (and anything they
/// spawn) find it without looking further.
fn path_with(tool: &std::path::Path) -> Result<OsString> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(dir) = tool.parent()
        && !dirs.iter().any(|d| d == dir)
    {
        dirs.insert(0, dir.to_path_buf());
    }
    env::join_paths(dirs).context("building PATH")
}
