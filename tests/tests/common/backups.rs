//! Running `walship backup` against a test cluster, in the foreground or the background.

use std::process::{Child, Command, Output, Stdio};

use anyhow::Result;
use walship_testkit::{PgCluster, WalshipBin};

use super::Archive;

/// The arguments of `walship backup` of `cluster` over TCP, with `extra` after them.
fn backup_args<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["backup", "--host", "127.0.0.1", "--port", port];
    args.extend_from_slice(extra);
    args
}

/// `walship backup` of `cluster` with `extra` arguments, to its end.
pub fn backup(archive: &Archive, cluster: &PgCluster, extra: &[&str]) -> Result<Output> {
    let port = cluster.port().to_string();
    archive.walship(&backup_args(&port, extra))
}

/// The same in the background, its standard error piped, for a test that signals,
/// kills or starves it while it runs.
pub fn spawn_backup(archive: &Archive, cluster: &PgCluster, extra: &[&str]) -> Result<Child> {
    let port = cluster.port().to_string();
    Ok(Command::new(WalshipBin::path()?)
        .args(archive.global_args())
        .args(backup_args(&port, extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}
