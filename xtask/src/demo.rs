//! `cargo xtask demo`: a placeholder until the real demo (a throwaway PostgreSQL
//! archiving to a `file://` store) is written; for now it shows walship's help.

use anyhow::Result;

use crate::cargo::{cargo, run_step};

/// Builds and runs `walship --help`; returns cargo's exit code.
pub fn demo() -> Result<u8> {
    run_step(cargo().args(["run", "--package", "walship", "--", "--help"]))
}
