//! Running cargo (and other commands) from xtask, with each step announced and timed.

use std::env;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use walship_testkit::workspace_root;

/// A `cargo` command run from the workspace root.
///
/// `$CARGO` is the cargo that runs xtask (the toolchain pinned in
/// `rust-toolchain.toml`), so nested builds use the same toolchain and lock files.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with its output going to ours, announcing it and how long it took,
/// and returns its exit code (1 when it was killed by a signal).
pub fn run_step(cmd: &mut Command) -> Result<u8> {
    let line = describe(cmd);
    eprintln!("==> {line}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not run `{line}`"))?;
    eprintln!(
        "<== {line}: {status} after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(status
        .code()
        .map(|c| u8::try_from(c).unwrap_or(1))
        .unwrap_or(1))
}

/// Like [`run_step`], but a non-zero exit is an error.
pub fn run_step_checked(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    match run_step(cmd)? {
        0 => Ok(()),
        code => anyhow::bail!("`{line}` failed with exit code {code}"),
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    // `$CARGO` is a long toolchain path; "cargo" says the same to a reader.
    let mut line = match program.file_name() {
        Some(name) if name == "cargo" => "cargo".to_owned(),
        _ => program.display().to_string(),
    };
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
