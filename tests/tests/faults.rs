//! Faults between walship and its store: a proxy (`walship_testkit::FaultProxy`) in
//! front of the test servers answers a share of requests with errors, resets
//! connections before, during and after requests, and stalls them; walship must lose
//! nothing, acknowledge nothing the store did not confirm, and drain its backlog once
//! the faults stop.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::daemon::{DaemonProcess, assert_all_archived_identical, setup};
use walship_testkit::{Fault, FaultProxy, Rule, wait_until};

/// Writes a little WAL and switches to a new segment.
fn write_and_switch(pg: &walship_testkit::PgCluster) -> Result<String> {
    pg.psql("CREATE TABLE IF NOT EXISTS filler (x int)")?;
    pg.psql("INSERT INTO filler SELECT generate_series(1, 2000)")?;
    pg.switch_wal()
}

/// A fault proxy in front of `archive`'s S3 server, and the archive's manifest pointing
/// at the proxy.
fn behind_proxy(archive: &common::Archive) -> Result<FaultProxy> {
    let proxy = FaultProxy::start(archive.s3.port())?;
    archive.write_manifest(
        &archive
            .manifest()
            .replace(&archive.s3.endpoint(), &proxy.endpoint()),
    )?;
    Ok(proxy)
}

#[test]
fn archiving_through_failing_and_resetting_s3_requests_loses_nothing_and_acknowledges_only_what_was_stored()
-> Result<()> {
    let (archive, mut pg, socket) = setup()?;
    let proxy = behind_proxy(&archive)?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;

    // Every kind of upload failure at once, on different shares of the uploads; the
    // lookups before an upload fail too.
    proxy.set(vec![
        Rule::every(
            3,
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        )
        .on("PUT"),
        Rule::every(
            4,
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
        )
        .on("PUT"),
        Rule::every(5, Fault::ResetAfterRequest).on("PUT"),
        Rule::every(7, Fault::ResetBeforeBody).on("PUT"),
        Rule::every(11, Fault::ResetDuringBody).on("PUT"),
        Rule::every(
            3,
            Fault::Status {
                code: 500,
                retry_after: None,
            },
        )
        .on("HEAD"),
    ]);
    let mut last = String::new();
    for _ in 0..15 {
        last = write_and_switch(&pg)?;
    }
    // PostgreSQL keeps retrying what failed; everything gets archived while the faults
    // last (each rule lets most requests through).
    pg.wait_for_archived(&last, Duration::from_secs(120))
        .with_context(|| daemon.log_contents())?;
    let faults = proxy.faults();
    ensure!(
        faults.len() >= 5,
        "the schedule injected too few kinds of fault: {faults:?}"
    );

    // The faults stop: the backlog drains.
    proxy.clear();
    let stopped = Instant::now();
    let last = write_and_switch(&pg)?;
    pg.wait_for_archived(&last, Duration::from_secs(60))?;
    wait_until(Duration::from_secs(30), "an empty backlog", || {
        Ok(daemon.metric("walship_ready_backlog_files")? == 0.0)
    })?;
    let recovered = stopped.elapsed();

    // Every segment PostgreSQL marked done is in the store, byte for byte: no
    // acknowledgement without a stored object.
    let checked = assert_all_archived_identical(&archive, &pg)?;
    ensure!(checked >= 16, "only {checked} segments archived");
    // No retry inside a layer that also retries: a segment's PUTs stay few.
    let puts = proxy.requests();
    let most = puts
        .iter()
        .filter(|((method, path), _)| method == "PUT" && path.contains("/wals/"))
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    ensure!(
        (1..=12).contains(&most),
        "a segment took {most} PUTs: {puts:?}"
    );
    eprintln!(
        "faults {faults:?}; {checked} segments archived, 0 lost, 0 differing; at most \
         {most} PUTs for one segment; backlog drained {recovered:.1?} after the faults stopped"
    );
    drop(daemon);
    Ok(())
}

#[test]
fn a_copy_damaged_on_the_wire_is_downloaded_again_and_only_damage_every_download_repeats_stops_recovery()
-> Result<()> {
    let archive = common::Archive::start(Some("gzip"))?;
    let proxy = behind_proxy(&archive)?;
    let mut pg = walship_testkit::PgCluster::init_temp(walship_testkit::InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    pg.start()?;
    let segment = write_and_switch(&pg)?;
    pg.wait_for_archived(&segment, Duration::from_secs(60))?;
    let original = std::fs::read(pg.data_dir().join("pg_wal").join(&segment))?;
    let dest_dir = tempfile::tempdir()?;
    let dest = dest_dir.path().join("RECOVERYXLOG");
    let fetch = || archive.walship(&["wal-fetch", &segment, &dest.display().to_string()]);
    let gets = || proxy.requests_for("GET", &segment);

    // One download flipped on the wire: the next one is good, and that is what
    // recovery gets.
    proxy.set(vec![
        Rule::every(1, Fault::CorruptResponse)
            .on("GET")
            .path(&segment)
            .at_most(1),
    ]);
    let out = fetch()?;
    ensure!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        common::stderr(&out)
    );
    ensure!(
        std::fs::read(&dest)? == original,
        "the restored segment differs"
    );
    ensure!(gets() == 2, "{} GETs", gets());
    std::fs::remove_file(&dest)?;

    // Every download damaged: that is an archived copy that cannot be used, and
    // recovery must stop (126) rather than take the segment as missing.
    proxy.set(vec![
        Rule::every(1, Fault::CorruptResponse)
            .on("GET")
            .path(&segment),
    ]);
    let out = fetch()?;
    ensure!(
        out.status.code() == Some(126),
        "exit {:?}: {}",
        out.status.code(),
        common::stderr(&out)
    );
    let stderr = common::stderr(&out);
    ensure!(
        stderr.contains("corrupt") && stderr.contains("in each of 3 downloads"),
        "{stderr}"
    );
    ensure!(!dest.exists(), "a copy that failed its check was written");
    ensure!(gets() == 5, "{} GETs", gets());
    Ok(())
}
