//! Faults between walship and its store: a proxy (`walship_testkit::FaultProxy`) in
//! front of the test servers answers a share of requests with errors, resets
//! connections before, during and after requests, and stalls them; walship must lose
//! nothing, acknowledge nothing the store did not confirm, and drain its backlog once
//! the faults stop.

#[path = "faults/backups.rs"]
mod backups;
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::azure::AzureArchive;
use common::daemon::{DaemonProcess, assert_all_archived_identical, setup, setup_for};
use common::gcs::GcsArchive;
use common::{ArchiveHarness, PREFIX, SERVER};
use walship_testkit::{Fault, FaultProxy, Rule, wait_until};

/// Whether the long schedule runs (`WALSHIP_FAULTS_LONG=1`; not in CI).
fn long() -> bool {
    std::env::var("WALSHIP_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// `ci` rounds of a schedule, or `long` with the long schedule.
fn rounds(ci: usize, long: usize) -> usize {
    if self::long() { long } else { ci }
}

/// Writes a little WAL and switches to a new segment.
fn write_and_switch(pg: &walship_testkit::PgCluster) -> Result<String> {
    pg.psql("CREATE TABLE IF NOT EXISTS filler (x int)")?;
    pg.psql("INSERT INTO filler SELECT generate_series(1, 2000)")?;
    pg.switch_wal()
}

/// The segment after `name` (these tests stay far from a log file's last segment).
fn next_segment(name: &str) -> Result<String> {
    let low = u32::from_str_radix(&name[16..], 16)?;
    Ok(format!("{}{:08X}", &name[..16], low + 1))
}

/// `wal-push` of the segment `name` in `dir`, as archive_command runs it.
fn wal_push(
    archive: &dyn ArchiveHarness,
    dir: &std::path::Path,
    name: &str,
) -> Result<std::process::Output> {
    let path = dir.join(name);
    archive.walship(&["wal-push", &path.display().to_string()])
}

/// A fault proxy in front of `archive`'s S3 server, and the archive's manifest pointing
/// at the proxy.
fn behind_proxy(archive: &common::Archive) -> Result<FaultProxy> {
    route_through_proxy(archive, archive.s3.port())
}

/// A fault proxy in front of the server on `upstream`, and `archive`'s manifest sending
/// walship through it: its endpoint rewritten (S3, Azure), or an `endpointURL` added
/// (GCS, whose emulator the manifest does not name).
fn route_through_proxy(archive: &dyn ArchiveHarness, upstream: u16) -> Result<FaultProxy> {
    let proxy = FaultProxy::start(upstream)?;
    let path = archive.dir().join("objectstore.yaml");
    let manifest = std::fs::read_to_string(&path)?;
    let direct = format!("127.0.0.1:{upstream}");
    let routed = if manifest.contains(&direct) {
        manifest.replace(&direct, &format!("127.0.0.1:{}", proxy.port()))
    } else {
        let (head, tail) = manifest
            .split_once("    destinationPath:")
            .context("no destinationPath in the manifest")?;
        format!(
            "{head}    endpointURL: \"{}\"\n    destinationPath:{tail}",
            proxy.endpoint()
        )
    };
    // Rewritten in place: the file keeps the mode the PostgreSQL user reads it with.
    std::fs::write(&path, routed)?;
    Ok(proxy)
}

/// How one cloud's requests look at the proxy.
struct Wire {
    cloud: &'static str,
    /// The method of an object upload (GCS uploads with POST).
    upload: &'static str,
    /// The method of a metadata lookup.
    lookup: &'static str,
    /// What the target of a listing holds, and nothing else's.
    listing: &'static str,
    /// A valid listing with nothing in it: what a store whose listings lag behind its
    /// writes answers for a file it holds.
    empty_listing: &'static str,
    /// The GETs one read of an object takes (GCS: its metadata, then its bytes): a
    /// schedule on GETs is spread this much wider, so a read meets as many faults.
    gets_per_read: u32,
}

const S3: Wire = Wire {
    cloud: "S3",
    upload: "PUT",
    lookup: "HEAD",
    listing: "list-type=2",
    empty_listing: "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
        <Name>walship-e2e</Name><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>\
        <IsTruncated>false</IsTruncated></ListBucketResult>",
    gets_per_read: 1,
};
const AZURE: Wire = Wire {
    cloud: "Azure",
    upload: "PUT",
    lookup: "HEAD",
    listing: "comp=list",
    empty_listing: "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <EnumerationResults ServiceEndpoint=\"http://127.0.0.1/devstoreaccount1\" \
        ContainerName=\"walship-e2e\"><Blobs /><NextMarker /></EnumerationResults>",
    gets_per_read: 1,
};
const GCS: Wire = Wire {
    cloud: "GCS",
    upload: "POST",
    lookup: "GET",
    // A listing is `…/o?prefix=…`; an object is `…/o/<name>`.
    listing: "/o?",
    empty_listing: "{\"kind\":\"storage#objects\"}",
    gets_per_read: 2,
};

/// What one run under faults gave, for the README's table.
#[derive(Debug)]
struct Figures {
    archived: usize,
    faults: std::collections::BTreeMap<String, u64>,
    most_uploads_per_segment: u64,
    drained: Duration,
}

impl Figures {
    /// A row of the README's reliability table; lost, differing and false acks are
    /// 0, or the scenario would have failed before.
    fn row(&self, cloud: &str) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        format!(
            "| {cloud} | {} | {} | 0 | 0 | 0 | {:.1} | ≤ {} |",
            faults.join(", "),
            self.archived,
            self.drained.as_secs_f64(),
            self.most_uploads_per_segment
        )
    }
}

/// The archiving scenario every store must pass under faults: real PostgreSQL through
/// the daemon (`archive` compresses with zstd), behind `proxy`, with every kind of
/// upload failure at once on shares of the uploads and lookups; then the faults stop.
/// Every segment PostgreSQL marked done is stored byte for byte, a segment's uploads
/// stay few (no retry inside a retry), and a store's `Retry-After` is waited out.
fn archives_through_failing_and_resetting_requests(
    archive: &dyn ArchiveHarness,
    proxy: &FaultProxy,
    wire: &Wire,
) -> Result<Figures> {
    let (mut pg, socket) = setup_for(archive)?;
    let daemon = DaemonProcess::start(archive, &pg, &socket)?;
    pg.start()?;
    let status = |code, retry_after| Fault::Status { code, retry_after };
    proxy.set(vec![
        Rule::every(3, status(503, None)).on(wire.upload),
        Rule::every(4, status(429, Some(1))).on(wire.upload),
        Rule::every(5, Fault::ResetAfterRequest).on(wire.upload),
        Rule::every(7, Fault::ResetBeforeBody).on(wire.upload),
        Rule::every(11, Fault::ResetDuringBody).on(wire.upload),
        Rule::every(3, status(500, None)).on(wire.lookup),
    ]);
    let segments = rounds(15, 300);
    let mut last = String::new();
    for _ in 0..segments {
        last = write_and_switch(&pg)?;
    }
    // PostgreSQL keeps retrying what failed; everything gets archived while the faults
    // last (each rule lets most requests through).
    pg.wait_for_archived(&last, Duration::from_secs(120 + 4 * segments as u64))
        .with_context(|| daemon.log_contents())?;
    let faults = proxy.faults();
    let upload_faults = faults.keys().filter(|k| !k.starts_with("500")).count();
    ensure!(
        upload_faults >= 5,
        "{}: the schedule injected too few kinds of fault: {faults:?}",
        wire.cloud
    );

    // The faults stop: the backlog drains.
    proxy.clear();
    let stopped = Instant::now();
    let last = write_and_switch(&pg)?;
    pg.wait_for_archived(&last, Duration::from_secs(60))?;
    wait_until(Duration::from_secs(30), "an empty backlog", || {
        Ok(daemon.metric("walship_ready_backlog_files")? == 0.0)
    })?;
    let drained = stopped.elapsed();

    // Every segment PostgreSQL marked done is in the store, byte for byte: no
    // acknowledgement without a stored object.
    let archived = assert_all_archived_identical(archive, &pg)?;
    ensure!(archived > segments, "only {archived} segments archived");

    // No retry inside a layer that also retries: a segment's uploads stay few.
    let log = proxy.log();
    let mut uploads = std::collections::BTreeMap::<&str, u64>::new();
    for seen in log
        .iter()
        .filter(|s| s.method == wire.upload && s.path.contains("/wals/"))
    {
        *uploads.entry(&seen.path).or_default() += 1;
    }
    let most = uploads.values().copied().max().unwrap_or(0);
    ensure!(
        (1..=12).contains(&most),
        "{}: a segment took {most} uploads: {uploads:?}",
        wire.cloud
    );

    // A store that asked for a wait got it: nothing asked again for the same object
    // sooner than its Retry-After (1 s) said.
    for (i, throttled) in log.iter().enumerate() {
        if throttled.fault.as_deref() != Some("429+retry-after") {
            continue;
        }
        if let Some(next) = log[i + 1..]
            .iter()
            .find(|s| s.method == throttled.method && s.path == throttled.path)
        {
            let waited = next.at - throttled.at;
            ensure!(
                waited >= Duration::from_secs(1),
                "{}: {} {} asked again {waited:?} after a Retry-After of 1 s\ndaemon:\n{}\npostgres:\n{}",
                wire.cloud,
                next.method,
                next.path,
                daemon.log_contents(),
                pg.log_contents()
            );
        }
    }

    // The retries are counted by the kind of failure.
    for reason in ["throttled", "server_error", "connection"] {
        let counted = daemon.metric(&format!("walship_retries_total{{reason=\"{reason}\"}}"))?;
        ensure!(
            counted > 0.0,
            "{}: no retry counted as {reason}; faults {faults:?}",
            wire.cloud
        );
    }
    let figures = Figures {
        archived,
        faults,
        most_uploads_per_segment: most,
        drained,
    };
    eprintln!("{}", figures.row(wire.cloud));
    drop(daemon);
    Ok(figures)
}

#[test]
fn archiving_through_failing_and_resetting_s3_requests_loses_nothing_and_acknowledges_only_what_was_stored()
-> Result<()> {
    let archive = common::Archive::start(Some("zstd"))?;
    let proxy = behind_proxy(&archive)?;
    archives_through_failing_and_resetting_requests(&archive, &proxy, &S3)?;
    Ok(())
}

#[test]
fn archiving_through_failing_and_resetting_azure_requests_loses_nothing_and_acknowledges_only_what_was_stored()
-> Result<()> {
    let archive = AzureArchive::shared_key("zstd")?;
    let proxy = route_through_proxy(&archive, archive.azurite.port())?;
    archives_through_failing_and_resetting_requests(&archive, &proxy, &AZURE)?;
    Ok(())
}

#[test]
fn archiving_through_failing_and_resetting_gcs_requests_loses_nothing_and_acknowledges_only_what_was_stored()
-> Result<()> {
    let archive = GcsArchive::for_scenarios("zstd", 4)?;
    let proxy = route_through_proxy(&archive, archive.gcs.port())?;
    archives_through_failing_and_resetting_requests(&archive, &proxy, &GCS)?;
    Ok(())
}

#[test]
fn stalled_uploads_give_their_slots_up_and_later_segments_are_stored_while_they_hang() -> Result<()>
{
    let archive = common::Archive::start(Some("zstd"))?;
    let proxy = behind_proxy(&archive)?;
    stalled_uploads_give_their_slots_up(&archive, &proxy, &S3)
}

#[test]
#[ignore = "long schedule (a stall costs a deadline): WALSHIP_FAULTS_LONG=1 … -- --include-ignored"]
fn stalled_azure_uploads_give_their_slots_up_and_later_segments_are_stored_while_they_hang()
-> Result<()> {
    let archive = AzureArchive::shared_key("zstd")?;
    let proxy = route_through_proxy(&archive, archive.azurite.port())?;
    stalled_uploads_give_their_slots_up(&archive, &proxy, &AZURE)
}

#[test]
#[ignore = "long schedule (a stall costs a deadline): WALSHIP_FAULTS_LONG=1 … -- --include-ignored"]
fn stalled_gcs_uploads_give_their_slots_up_and_later_segments_are_stored_while_they_hang()
-> Result<()> {
    let archive = GcsArchive::for_scenarios("zstd", 4)?;
    let proxy = route_through_proxy(&archive, archive.gcs.port())?;
    stalled_uploads_give_their_slots_up(&archive, &proxy, &GCS)
}

/// The stall scenario every store must pass (its archive with `maxParallel` 4, behind
/// `proxy`): the next four segment uploads hang past any deadline, and later segments
/// are stored while they still hang, as the stalled ones gave their slots up; once
/// given up and tried again, nothing is lost.
fn stalled_uploads_give_their_slots_up(
    archive: &dyn ArchiveHarness,
    proxy: &FaultProxy,
    wire: &Wire,
) -> Result<()> {
    let (mut pg, socket) = setup_for(archive)?;
    let daemon = DaemonProcess::start(archive, &pg, &socket)?;
    pg.start()?;
    // The next four uploads (maxParallel is 4) hang past any deadline. `wals` matches
    // a segment's upload on every cloud (GCS names it in the query, escaped).
    proxy.set(vec![
        Rule::every(1, Fault::Stall(Duration::from_secs(300)))
            .on(wire.upload)
            .path("wals")
            .at_most(4),
    ]);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(write_and_switch(&pg)?);
    }
    wait_until(Duration::from_secs(30), "four stalled uploads", || {
        Ok(proxy.stalls_held() == 4)
    })?;
    let mut later = Vec::new();
    for _ in 0..4 {
        later.push(write_and_switch(&pg)?);
    }
    let key = |name: &str| format!("{PREFIX}/{SERVER}/wals/{}/{name}.zst", &name[..16]);
    let stored = |keys: &[String], name: &str| keys.iter().any(|k| k.ends_with(&key(name)));
    // The later segments are stored while the four stalled uploads still hang: those
    // gave their slots up instead of holding archiving until their deadline.
    wait_until(Duration::from_secs(60), "the later segments stored", || {
        let keys = archive.keys()?;
        Ok(later.iter().all(|name| stored(&keys, name)))
    })
    .with_context(|| daemon.log_contents())?;
    let held = proxy.stalls_held();
    ensure!(
        held == 4,
        "only {held} stalled uploads still hung when the later segments were stored: \
         the stalled ones held their slots"
    );
    let keys = archive.keys()?;
    ensure!(
        !stalled.iter().any(|n| stored(&keys, n)),
        "a stalled upload was stored"
    );

    // The stalled requests reach their deadline, are given up and tried again; nothing
    // is lost and PostgreSQL gets through the whole backlog.
    pg.wait_for_archived(
        later.last().context("no segment")?,
        Duration::from_secs(120),
    )
    .with_context(|| daemon.log_contents())?;
    ensure!(
        proxy.stalls_abandoned() == 4,
        "{} stalls abandoned",
        proxy.stalls_abandoned()
    );
    let checked = assert_all_archived_identical(archive, &pg)?;
    let timeouts = daemon.metric("walship_retries_total{reason=\"timeout\"}")?;
    ensure!(timeouts >= 4.0, "{timeouts} timeouts counted");
    eprintln!(
        "{}: 4 uploads stalled; 4 later segments stored while they hung; {checked} archived, \
         0 lost",
        wire.cloud
    );
    Ok(())
}

/// Faults on the reads of a restore that leave the archive whole: every other listing
/// stale (empty), statuses, resets, cut answers, (`stall`) a stall past the deadline,
/// and (`damage`) a few answers whose bytes differ from the object. A stall costs a
/// whole deadline of waiting (about 40 s), so CI meets one on S3's reads and the long
/// schedule on every cloud's; the deadline itself is tested on every cloud by
/// hardening's silent store.
fn read_faults(wire: &Wire, damage: bool, stall: bool) -> Vec<Rule> {
    let status = |code, retry_after| Fault::Status { code, retry_after };
    // Spread wider, and odd: GCS's metadata and media GETs alternate, and an even
    // period would fault only the one kind.
    let get = |every: u32, fault: Fault| {
        Rule::every(every * wire.gets_per_read + wire.gets_per_read - 1, fault).on("GET")
    };
    let mut rules = vec![
        Rule::every(2, Fault::Stale(wire.empty_listing.to_owned()))
            .on("GET")
            .path(wire.listing)
            .at_most(3),
        get(5, status(503, None)),
        get(7, status(429, Some(1))),
        get(6, Fault::ResetBeforeBody),
        get(9, Fault::ResetAfterRequest),
        get(8, Fault::TruncateResponse),
    ];
    // GCS looks objects up with GET, which the rules above already fail often enough.
    if wire.lookup != "GET" {
        rules.push(Rule::every(3, status(500, None)).on(wire.lookup));
    }
    if stall {
        rules.push(
            Rule::every(1, Fault::Stall(Duration::from_secs(300)))
                .on("GET")
                .at_most(1),
        );
    }
    if damage {
        rules.push(get(11, Fault::ShortContentLength).at_most(2));
        rules.push(get(13, Fault::CorruptResponse).at_most(2));
    }
    rules
}

#[test]
fn reads_that_fail_reset_stall_or_come_back_damaged_never_make_an_archived_segment_not_found()
-> Result<()> {
    let (archive, pg, _) = setup()?;
    let proxy = behind_proxy(&archive)?;
    restores_through_damaged_reads(&archive, pg, &proxy, &S3, true, true)
}

#[test]
fn azure_reads_that_fail_reset_stall_or_come_back_damaged_never_make_an_archived_segment_not_found()
-> Result<()> {
    let archive = AzureArchive::shared_key("zstd")?;
    let (pg, _) = setup_for(&archive)?;
    let proxy = route_through_proxy(&archive, archive.azurite.port())?;
    restores_through_damaged_reads(&archive, pg, &proxy, &AZURE, false, long())
}

#[test]
fn gcs_reads_that_fail_reset_stall_or_come_back_damaged_never_make_an_archived_segment_not_found()
-> Result<()> {
    let archive = GcsArchive::for_scenarios("zstd", 4)?;
    let (pg, _) = setup_for(&archive)?;
    let proxy = route_through_proxy(&archive, archive.gcs.port())?;
    restores_through_damaged_reads(&archive, pg, &proxy, &GCS, false, long())
}

/// Archives a few segments cleanly, then restores each, and the one after the last,
/// with `wal-fetch` under [`read_faults`]: every archived segment comes back whole, and
/// only the missing one is not found. With `through_daemon`, the same through the
/// daemon's read-ahead (the read-ahead is the same on every cloud, so once is enough).
/// With `stall`, `wal-fetch`'s reads meet a stall (and the read-ahead's too, with the
/// long schedule).
fn restores_through_damaged_reads(
    archive: &dyn ArchiveHarness,
    mut pg: walship_testkit::PgCluster,
    proxy: &FaultProxy,
    wire: &Wire,
    through_daemon: bool,
    stall: bool,
) -> Result<()> {
    // PostgreSQL archives directly, without faults; the proxy is there for the reads.
    pg.set_conf(&[("archive_command", &archive.archive_command()?)])?;
    pg.start()?;
    let mut names = Vec::new();
    for _ in 0..rounds(8, 60) {
        names.push(write_and_switch(&pg)?);
    }
    pg.wait_for_archived(
        names.last().context("no segment")?,
        Duration::from_secs(300),
    )?;
    pg.stop()?;
    let beyond = next_segment(names.last().context("no segment")?)?;
    let original = |name: &str| std::fs::read(pg.data_dir().join("pg_wal").join(name));
    let dest_dir = walship_testkit::pg_temp_dir()?;
    let mut exits = std::collections::BTreeMap::<i32, u32>::new();

    // wal-fetch on its own: every archived segment comes back whole, and the one after
    // the last is still not found (1), after the faults on its reads.
    proxy.set(read_faults(wire, true, stall));
    for name in names.iter().chain([&beyond]) {
        let dest = dest_dir.path().join(name);
        let started = Instant::now();
        let before = proxy.log().len();
        let out = archive.walship(&["wal-fetch", name, &dest.display().to_string()])?;
        let code = out.status.code().unwrap_or(-1);
        *exits.entry(code).or_default() += 1;
        let how = || {
            let seen: Vec<String> = proxy.log()[before..]
                .iter()
                .map(|s| format!("{:?} {} {} {:?}", s.at - started, s.method, s.path, s.fault))
                .collect();
            format!(
                "exit {code} after {:?}: {}\nrequests:\n{}",
                started.elapsed(),
                common::stderr(&out),
                seen.join("\n")
            )
        };
        if *name == beyond {
            ensure!(code == 1, "{name}, not archived: {}", how());
            ensure!(
                !dest.exists(),
                "something was written for a missing segment"
            );
        } else {
            ensure!(code == 0, "{name}: {}", how());
            ensure!(std::fs::read(&dest)? == original(name)?, "{name} differs");
        }
    }
    let direct_faults = proxy.faults();
    ensure!(
        direct_faults.len() >= 7 + usize::from(stall) && direct_faults.contains_key("stale"),
        "too few kinds of fault on the reads: {direct_faults:?}"
    );
    ensure!(
        proxy.stalls_abandoned() == u64::from(stall),
        "{} stalled reads given up, {} stalled",
        proxy.stalls_abandoned(),
        u64::from(stall)
    );

    eprintln!(
        "{}: reads under faults: direct exits {exits:?} with faults {direct_faults:?}; 0 false \
         not-found",
        wire.cloud
    );
    if through_daemon {
        // Through the daemon, reading ahead: the same, with reads in parallel.
        proxy.set(read_faults(wire, true, stall && long()));
        let socket = archive.dir().join("restore.sock");
        let daemon = DaemonProcess::start(archive, &pg, &socket)?;
        let through_daemon = dest_dir.path().join("via-daemon");
        std::fs::create_dir_all(&through_daemon)?;
        walship_testkit::make_readable_by_pg(dest_dir.path())?;
        for name in names.iter().chain([&beyond]) {
            let dest = through_daemon.join(name);
            let out = archive.walship(&[
                "--socket",
                &socket.display().to_string(),
                "wal-fetch",
                name,
                &dest.display().to_string(),
            ])?;
            let code = out.status.code().unwrap_or(-1);
            if *name == beyond {
                ensure!(
                    code == 1,
                    "{name}, not archived: exit {code}: {}",
                    common::stderr(&out)
                );
            } else {
                ensure!(
                    code == 0,
                    "{name}: exit {code}: {}\ndaemon:\n{}",
                    common::stderr(&out),
                    daemon.log_contents()
                );
                ensure!(std::fs::read(&dest)? == original(name)?, "{name} differs");
            }
        }
        let hits = daemon.metric("walship_restore_hits_total")?;
        eprintln!(
            "{}: through the daemon {hits} read-ahead hits, faults {:?}; 0 false not-found",
            wire.cloud,
            proxy.faults()
        );
    }
    Ok(())
}

#[test]
fn a_point_in_time_recovery_under_a_fault_schedule_reaches_its_target() -> Result<()> {
    let archive = common::Archive::start(Some("gzip"))?;
    let proxy = behind_proxy(&archive)?;
    let status = |code, retry_after| Fault::Status { code, retry_after };
    let mut rules = read_faults(&S3, true, long());
    rules.extend([
        Rule::every(3, status(503, None)).on("PUT"),
        Rule::every(5, Fault::ResetAfterRequest).on("PUT"),
        Rule::every(7, Fault::ResetBeforeBody).on("PUT"),
    ]);
    // The archive is written cleanly; the recovery, and the promoted server's
    // archiving, run under the faults.
    common::pitr::recovers_to_a_target_time_after(&archive, &|| proxy.set(rules.clone()))?;
    let faults = proxy.faults();
    let met: &[&str] = match long() {
        true => &["stale", "stall", "503", "reset-before-body"],
        false => &["stale", "503", "reset-before-body"],
    };
    ensure!(
        met.iter().all(|kind| faults.contains_key(*kind)),
        "the recovery met too few faults: {faults:?}"
    );
    eprintln!("PITR under faults: {faults:?}");
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
    // The object's reads, not the listings that find it.
    let object = format!("{segment}.gz");
    let gets = || proxy.requests_for("GET", &object);

    // One download flipped on the wire: the next one is good, and that is what
    // recovery gets.
    proxy.set(vec![
        Rule::every(1, Fault::CorruptResponse)
            .on("GET")
            .path(&object)
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
            .path(&object),
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

/// An S3 archive reached with the ambient identity (`inheritFromIAMRole: true`): IRSA's
/// web identity with an STS stand-in handing out the archive's keys, or an instance
/// profile with an instance metadata stand-in doing so, each with the environment its
/// webhook or node gives (for the daemon and for `archive_command`).
struct AmbientArchive {
    archive: common::Archive,
    identity: Identity,
}

enum Identity {
    Irsa(walship_testkit::StsStub),
    /// The metadata service, and where its endpoint is reached (a proxy in front).
    InstanceProfile(walship_testkit::ImdsStub, String),
}

impl AmbientArchive {
    fn archive() -> Result<common::Archive> {
        let archive = common::Archive::start(Some("zstd"))?;
        let manifest = archive.manifest();
        let (head, _) = manifest
            .split_once("    s3Credentials:")
            .context("no s3Credentials in the manifest")?;
        let (_, wal) = manifest
            .split_once("    wal:")
            .context("no wal section in the manifest")?;
        archive.write_manifest(&format!(
            "{head}    s3Credentials:\n      inheritFromIAMRole: true\n    wal:{wal}"
        ))?;
        Ok(archive)
    }

    fn irsa() -> Result<AmbientArchive> {
        let archive = Self::archive()?;
        let token = archive.dir.path().join("token");
        std::fs::write(&token, "projected-service-account-jwt")?;
        walship_testkit::make_readable_by_pg(&token)?;
        let sts = walship_testkit::StsStub::start(
            archive.s3.access_key(),
            archive.s3.secret_key(),
            "session-token-from-sts",
        )?;
        Ok(AmbientArchive {
            archive,
            identity: Identity::Irsa(sts),
        })
    }

    /// An instance profile whose metadata service is reached at `reached_at(port)`.
    fn instance_profile(reached_at: impl FnOnce(u16) -> Result<String>) -> Result<AmbientArchive> {
        let archive = Self::archive()?;
        let imds = walship_testkit::ImdsStub::start(
            archive.s3.access_key(),
            archive.s3.secret_key(),
            "session-token-from-imds",
        )?;
        let endpoint = reached_at(imds.port())?;
        Ok(AmbientArchive {
            archive,
            identity: Identity::InstanceProfile(imds, endpoint),
        })
    }

    fn sts(&self) -> &walship_testkit::StsStub {
        match &self.identity {
            Identity::Irsa(sts) => sts,
            Identity::InstanceProfile(..) => panic!("not an IRSA archive"),
        }
    }
}

impl ArchiveHarness for AmbientArchive {
    fn dir(&self) -> &std::path::Path {
        self.archive.dir.path()
    }

    fn global_args(&self) -> Vec<String> {
        self.archive.global_args()
    }

    fn walship(&self, args: &[&str]) -> Result<std::process::Output> {
        std::process::Command::new(walship_testkit::WalshipBin::path()?)
            .args(self.global_args())
            .args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .envs(self.env())
            .output()
            .context("running walship")
    }

    fn keys(&self) -> Result<Vec<String>> {
        self.archive.keys()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = vec![
            ("AWS_REGION", "us-east-1".into()),
            // Away from shared files.
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ];
        match &self.identity {
            Identity::Irsa(sts) => env.extend([
                (
                    "AWS_ROLE_ARN",
                    "arn:aws:iam::123456789012:role/walship".into(),
                ),
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    self.dir().join("token").display().to_string(),
                ),
                ("AWS_ROLE_SESSION_NAME", "walship-session".into()),
                ("AWS_ENDPOINT_URL_STS", sts.endpoint()),
                // Away from the instance metadata service.
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ]),
            Identity::InstanceProfile(_, endpoint) => {
                env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.clone()))
            }
        }
        env
    }

    fn archive_command(&self) -> Result<String> {
        let env: Vec<String> = self.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(format!(
            "{} {} {} wal-push %p",
            env.join(" "),
            walship_testkit::WalshipBin::for_pg()?.display(),
            self.global_args().join(" ")
        ))
    }
}

/// What the scenario of a failing token endpoint needs to know of one identity.
struct TokenEndpoint<'a> {
    /// How long the credentials it hands out live.
    lifetime: Duration,
    /// Makes the endpoint fail (503) or answer again.
    fail: &'a dyn Fn(bool),
    /// What the daemon logs when it keeps the credentials in hand.
    kept: &'a str,
    /// What an upload's error says once they expired: the endpoint and its answer.
    failing: &'a [&'a str],
}

/// The scenario every identity with expiring credentials must pass: the credentials
/// handed out live `endpoint.lifetime` (and are due for a refresh 25 s before that);
/// the endpoint fails while they are due for a refresh, and the ones in hand still
/// archive; once they expired, uploads fail and name the endpoint, not "access denied";
/// when it answers again, archiving resumes by itself and nothing is lost.
fn archives_on_the_credentials_in_hand_while_the_token_endpoint_fails(
    archive: &dyn ArchiveHarness,
    endpoint: &TokenEndpoint,
) -> Result<usize> {
    let (mut pg, socket) = setup_for(archive)?;
    let issued = Instant::now();
    let daemon = DaemonProcess::start(archive, &pg, &socket)?;
    pg.start()?;
    let first = write_and_switch(&pg)?;
    pg.wait_for_archived(&first, Duration::from_secs(30))
        .with_context(|| daemon.log_contents())?;

    (endpoint.fail)(true);
    let until = |at: Duration| {
        std::thread::sleep((issued + at).saturating_duration_since(Instant::now()));
    };
    // Due for a refresh by then: the S3 SDK's cache refreshes between 30 and 60 s before
    // the expiry (a random share of its minute), walship's Google tokens 60 s before.
    let lifetime = endpoint.lifetime;
    until(lifetime - Duration::from_secs(25));
    let second = write_and_switch(&pg)?;
    pg.wait_for_archived(&second, Duration::from_secs(30))
        .with_context(|| daemon.log_contents())?;
    ensure!(
        issued.elapsed() < lifetime - Duration::from_secs(5),
        "too slow to tell the credentials in hand from fresh ones"
    );
    ensure!(
        daemon.log_contents().contains(endpoint.kept),
        "no refresh failed: {}",
        daemon.log_contents()
    );

    until(lifetime + Duration::from_secs(2));
    let third = write_and_switch(&pg)?;
    wait_until(
        Duration::from_secs(60),
        "an upload failing on the endpoint",
        || {
            let log = daemon.log_contents();
            Ok(endpoint.failing.iter().all(|part| log.contains(part)))
        },
    )
    .with_context(|| daemon.log_contents())?;
    let log = daemon.log_contents();
    ensure!(!log.contains("access denied"), "{log}");
    ensure!(
        pg.archiver_stats()?.last_archived_wal.as_deref() != Some(third.as_str()),
        "archived without credentials"
    );

    (endpoint.fail)(false);
    pg.wait_for_archived(&third, Duration::from_secs(90))
        .with_context(|| daemon.log_contents())?;
    assert_all_archived_identical(archive, &pg)
}

/// How long STS's credentials live in the token endpoint scenario: the S3 SDK refreshes
/// them at the latest 30 s before they expire (35 s after they are handed out), and
/// they are kept while a refresh fails until 5 s before (60 s).
const TOKEN_LIFETIME: Duration = Duration::from_secs(65);
/// How long the Google and Azure AD tokens live there: they are refreshed a minute
/// (Google) or five (Azure AD) before they expire, so a shorter life is always due.
const SHORT_TOKEN_LIFETIME: Duration = Duration::from_secs(35);

#[test]
fn sts_failing_leaves_archiving_on_the_credentials_in_hand_until_they_expire_then_names_sts_and_recovers_by_itself()
-> Result<()> {
    let irsa = AmbientArchive::irsa()?;
    irsa.sts().credentials_valid_for(TOKEN_LIFETIME);
    let checked = archives_on_the_credentials_in_hand_while_the_token_endpoint_fails(
        &irsa,
        &TokenEndpoint {
            lifetime: TOKEN_LIFETIME,
            fail: &|failing| irsa.sts().fail_with(failing.then_some(503)),
            kept: "signing with the current ones until they expire",
            failing: &["STS answered AssumeRoleWithWebIdentity with HTTP 503"],
        },
    )?;
    eprintln!("STS down: {checked} segments archived, 0 lost");
    Ok(())
}

#[test]
fn a_failing_google_token_endpoint_leaves_archiving_on_the_token_in_hand_until_it_expires_then_names_it_and_recovers()
-> Result<()> {
    let archive = GcsArchive::for_scenarios("zstd", 4)?;
    archive.tokens().tokens_valid_for(SHORT_TOKEN_LIFETIME);
    let checked = archives_on_the_credentials_in_hand_while_the_token_endpoint_fails(
        &archive,
        &TokenEndpoint {
            lifetime: SHORT_TOKEN_LIFETIME,
            fail: &|failing| {
                archive.tokens().set_mode(if failing {
                    walship_testkit::TokenMode::Fail(503)
                } else {
                    walship_testkit::TokenMode::Grant
                })
            },
            kept: "using the current one until it expires",
            failing: &["the token endpoint", "answered HTTP 503"],
        },
    )?;
    eprintln!("Google token endpoint down: {checked} segments archived, 0 lost");
    Ok(())
}

#[test]
fn a_failing_instance_metadata_service_leaves_archiving_on_the_credentials_in_hand_and_it_goes_on_by_itself()
-> Result<()> {
    let mut proxy = None;
    let ambient = AmbientArchive::instance_profile(|port| {
        let started = FaultProxy::start(port)?;
        let endpoint = started.endpoint();
        proxy = Some(started);
        Ok(endpoint)
    })?;
    let proxy = proxy.context("no proxy")?;
    let Identity::InstanceProfile(imds, _) = &ambient.identity else {
        anyhow::bail!("not an instance profile");
    };
    imds.credentials_valid_for(SHORT_TOKEN_LIFETIME);
    let (mut pg, socket) = setup_for(&ambient)?;
    let issued = Instant::now();
    let daemon = DaemonProcess::start(&ambient, &pg, &socket)?;
    pg.start()?;
    let first = write_and_switch(&pg)?;
    pg.wait_for_archived(&first, Duration::from_secs(30))
        .with_context(|| daemon.log_contents())?;
    let handed_out = imds.credentials_handed_out();
    ensure!(handed_out > 0, "no credentials from the metadata service");

    // The service fails (every request, the session token's included) while the
    // credentials are due for a refresh, and past their expiry. The SDK's instance
    // profile provider keeps the credentials it has through a failing service, past
    // their expiry too (AWS's "static stability"; S3 itself then decides whether they
    // still sign): archiving goes on, with nothing lost.
    proxy.set(vec![Rule::every(
        1,
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    )]);
    let until = |at: Duration| {
        std::thread::sleep((issued + at).saturating_duration_since(Instant::now()));
    };
    until(SHORT_TOKEN_LIFETIME - Duration::from_secs(25));
    let second = write_and_switch(&pg)?;
    pg.wait_for_archived(&second, Duration::from_secs(30))
        .with_context(|| daemon.log_contents())?;
    until(SHORT_TOKEN_LIFETIME + Duration::from_secs(2));
    let third = write_and_switch(&pg)?;
    pg.wait_for_archived(&third, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    let failed = proxy.faults().values().sum::<u64>();
    ensure!(
        failed > 0,
        "the metadata service was never asked while it failed"
    );
    let log = daemon.log_contents();
    ensure!(!log.contains("access denied"), "{log}");

    // It answers again: fresh credentials, and archiving goes on.
    proxy.clear();
    let fourth = write_and_switch(&pg)?;
    pg.wait_for_archived(&fourth, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    wait_until(Duration::from_secs(30), "fresh credentials", || {
        if imds.credentials_handed_out() == handed_out {
            let _ = write_and_switch(&pg)?;
        }
        Ok(imds.credentials_handed_out() > handed_out)
    })?;
    let checked = assert_all_archived_identical(&ambient, &pg)?;
    eprintln!(
        "instance metadata service down past the credentials' expiry: {checked} segments \
         archived, 0 lost; {failed} metadata requests failed"
    );
    Ok(())
}

#[test]
fn a_failing_gke_metadata_server_leaves_archiving_on_the_token_in_hand_until_it_expires_then_names_it_and_recovers()
-> Result<()> {
    let mut archive = GcsArchive::gke_for_scenarios("zstd", 4)?;
    let common::gcs::Identity::Gke(metadata) = &archive.identity else {
        anyhow::bail!("not a GKE archive");
    };
    metadata.set_expires_in(SHORT_TOKEN_LIFETIME.as_secs() as usize);
    let port: u16 = metadata
        .host()
        .rsplit(':')
        .next()
        .context("no port in the metadata host")?
        .parse()?;
    let proxy = FaultProxy::start(port)?;
    archive.metadata_host = Some(format!("127.0.0.1:{}", proxy.port()));
    let checked = archives_on_the_credentials_in_hand_while_the_token_endpoint_fails(
        &archive,
        &TokenEndpoint {
            lifetime: SHORT_TOKEN_LIFETIME,
            fail: &|failing| match failing {
                true => proxy.set(vec![
                    Rule::every(
                        1,
                        Fault::Status {
                            code: 503,
                            retry_after: None,
                        },
                    )
                    .path("/token"),
                ]),
                false => proxy.clear(),
            },
            kept: "using the current one until it expires",
            failing: &["metadata", "503"],
        },
    )?;
    eprintln!(
        "GKE metadata server down: {checked} segments archived, 0 lost; {} token requests failed",
        proxy.faults().values().sum::<u64>()
    );
    Ok(())
}

#[test]
fn a_failing_azure_ad_leaves_archiving_on_the_token_in_hand_until_it_expires_then_names_it_and_recovers()
-> Result<()> {
    let mut wi = common::azure::WorkloadIdentity::start("zstd", SHORT_TOKEN_LIFETIME)?;
    let aad_port: u16 = wi
        .aad
        .authority_host()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .context("no port in the authority host")?
        .parse()?;
    let proxy = FaultProxy::start(aad_port)?;
    for (name, value) in &mut wi.archive.env {
        if *name == "AZURE_AUTHORITY_HOST" {
            *value = format!("{}/", proxy.endpoint());
        }
    }
    let checked = archives_on_the_credentials_in_hand_while_the_token_endpoint_fails(
        &wi.archive,
        &TokenEndpoint {
            lifetime: SHORT_TOKEN_LIFETIME,
            fail: &|failing| match failing {
                true => proxy.set(vec![Rule::every(
                    1,
                    Fault::Status {
                        code: 503,
                        retry_after: None,
                    },
                )]),
                false => proxy.clear(),
            },
            kept: "using the current one until it expires",
            failing: &["Azure AD", "503"],
        },
    )?;
    eprintln!(
        "Azure AD down: {checked} segments archived, 0 lost; {} token requests failed",
        proxy.faults().values().sum::<u64>()
    );
    Ok(())
}

/// A tmpfs of `kib` KiB mounted at `dir` (created), writable by everyone (the daemon runs
/// as the PostgreSQL user), to be filled to the last byte; unmounted when dropped.
struct FullFilesystem {
    dir: std::path::PathBuf,
}

impl FullFilesystem {
    fn mount(dir: &std::path::Path, kib: u32) -> Result<FullFilesystem> {
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "cannot mount a tmpfs at {} (these tests run as root, as CI does)",
            dir.display()
        );
        Ok(FullFilesystem {
            dir: dir.to_owned(),
        })
    }

    fn filler(&self) -> std::path::PathBuf {
        self.dir.join("filler")
    }

    /// Writes until the filesystem is full.
    fn fill(&self) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler())?;
        let block = vec![0u8; 4096];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        let _ = file.sync_all();
        Ok(())
    }

    /// Space again.
    fn free(&self) -> Result<()> {
        std::fs::remove_file(self.filler())?;
        Ok(())
    }
}

impl Drop for FullFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn a_full_ack_journal_never_stops_archiving_or_acknowledges_anything_not_stored_and_journals_again_with_space()
-> Result<()> {
    let (archive, mut pg, socket) = setup()?;
    // The daemon's journal directory (common::daemon puts it there), full.
    let journal = archive.dir.path().join("journal");
    let full = FullFilesystem::mount(&journal, 64)?;
    full.fill()?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    let mut last = String::new();
    for _ in 0..3 {
        last = write_and_switch(&pg)?;
    }
    // Every segment PostgreSQL was told is archived is in the store: the ack rests on
    // the store's confirmation; the journal only spares a restarted daemon the
    // comparison, so a journal that cannot be written must not stop archiving (a
    // pg_wal filling up would stop PostgreSQL).
    pg.wait_for_archived(&last, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    // Each of those acks went unjournaled, and said so.
    let unjournaled = |name: &str| {
        daemon
            .log_contents()
            .lines()
            .any(|l| l.contains(name) && l.contains("cannot journal the ack"))
    };
    ensure!(unjournaled(&last), "{}", daemon.log_contents());
    // And counted, for an operator who watches metrics rather than logs.
    let counted = daemon.metric("walship_unjournaled_acks_total")?;
    ensure!(counted >= 3.0, "{counted} unjournaled acks counted");

    // Space again: the next acks are journaled (records go once PostgreSQL marks the
    // segment done, so the log tells).
    full.free()?;
    let next = write_and_switch(&pg)?;
    pg.wait_for_archived(&next, Duration::from_secs(60))?;
    ensure!(!unjournaled(&next), "{}", daemon.log_contents());
    let still = daemon.metric("walship_unjournaled_acks_total")?;
    ensure!(
        still == counted,
        "{still} unjournaled acks counted after space came back"
    );
    let checked = assert_all_archived_identical(&archive, &pg)?;

    // Restarted with what the journal holds: the segments acked without a record are
    // compared with the store again, not lost.
    drop(daemon);
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    let after = write_and_switch(&pg)?;
    pg.wait_for_archived(&after, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    assert_all_archived_identical(&archive, &pg)?;
    eprintln!(
        "journal full: {checked} segments archived and stored, 0 lost; journaled again with space"
    );
    Ok(())
}

#[test]
fn a_full_unwritable_or_removed_prefetch_spool_is_bypassed_and_every_segment_is_restored_from_the_store()
-> Result<()> {
    let (archive, mut pg, _) = setup()?;
    pg.set_conf(&[("archive_command", &archive.archive_command()?)])?;
    pg.start()?;
    let mut names = Vec::new();
    for _ in 0..12 {
        names.push(write_and_switch(&pg)?);
    }
    pg.wait_for_archived(names.last().context("no segment")?, Duration::from_secs(60))?;
    pg.stop()?;

    let spool = archive.dir.path().join("spool");
    // Room for the read-ahead's window of 1 MiB segments once it is emptied.
    let full = FullFilesystem::mount(&spool, 16 * 1024)?;
    let socket = archive.dir.path().join("restore.sock");
    let daemon = DaemonProcess::start_with(
        &archive,
        &pg,
        &socket,
        &["--spool-dir", &spool.display().to_string()],
    )?;
    // A recovery moving on: the next three segments fetched through the daemon,
    // whole.
    let dest_dir = walship_testkit::pg_temp_dir()?;
    let mut next = names.chunks(3);
    let mut fetch_next = |what: &str| -> Result<()> {
        for name in next.next().context("no segments left")? {
            let dest = dest_dir.path().join(name);
            let out = archive.walship(&[
                "--socket",
                &socket.display().to_string(),
                "wal-fetch",
                name,
                &dest.display().to_string(),
            ])?;
            ensure!(
                out.status.success(),
                "{what}: {name}: exit {:?}: {}\ndaemon:\n{}",
                out.status.code(),
                common::stderr(&out),
                daemon.log_contents()
            );
            ensure!(
                std::fs::read(&dest)? == std::fs::read(pg.data_dir().join("pg_wal").join(name))?,
                "{what}: {name} differs"
            );
        }
        Ok(())
    };
    let hits = || daemon.metric("walship_restore_hits_total");

    // Full (filled once the daemon started: it empties its spool at start).
    full.fill()?;
    fetch_next("spool full")?;
    ensure!(hits()? == 0.0, "{} hits from a full spool", hits()?);
    ensure!(
        daemon.log_contents().contains("prefetch failed"),
        "{}",
        daemon.log_contents()
    );
    // Space again: the read-ahead works again by itself.
    full.free()?;
    fetch_next("space again")?;
    let after_space = hits()?;
    ensure!(after_space > 0.0, "no hits once the spool had space again");
    // Unwritable, then removed under the running daemon: bypassed each time.
    std::fs::set_permissions(&spool, std::os::unix::fs::PermissionsExt::from_mode(0o555))?;
    fetch_next("spool unwritable")?;
    drop(full);
    std::fs::remove_dir_all(&spool)?;
    fetch_next("spool removed")?;
    eprintln!(
        "spool full, unwritable, removed: {} segments restored, 0 lost; {after_space} hits \
         once it had space again",
        names.len()
    );
    Ok(())
}

#[test]
fn a_store_refusing_the_request_time_is_reported_as_clock_skew_not_access_denied_and_tried_again()
-> Result<()> {
    let archive = common::Archive::start(Some("gzip"))?;
    let proxy = behind_proxy(&archive)?;
    let (wal_dir, segments) = common::real_segments(2)?;
    let push = |name: &str| wal_push(&archive, wal_dir.path(), name);
    let skewed = || Fault::ErrorCode {
        status: 403,
        code: "RequestTimeTooSkewed".to_owned(),
    };

    // Every request refused for its time: not archived, and the error says why.
    proxy.set(vec![Rule::every(1, skewed()).on("PUT")]);
    let out = push(&segments[0])?;
    let err = common::stderr(&out);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {err}",
        out.status.code()
    );
    ensure!(
        err.contains("RequestTimeTooSkewed") && err.contains("clock"),
        "the error does not name the clock: {err}"
    );
    ensure!(!err.contains("access denied"), "{err}");
    // Tried again like any transient failure (the SDK corrects its clock from the
    // store's answer), within one request's budget.
    let puts = proxy.requests_for("PUT", &segments[0]);
    ensure!(puts > 1, "{puts} PUTs: a clock skew was not tried again");

    // Refused once: the next attempt goes through.
    proxy.set(vec![Rule::every(1, skewed()).on("PUT").at_most(1)]);
    let out = push(&segments[1])?;
    ensure!(out.status.success(), "{}", common::stderr(&out));
    Ok(())
}

#[test]
fn restores_over_a_slow_link_are_not_cut_and_come_back_whole() -> Result<()> {
    // Uncompressed, so each read carries a whole 1 MiB segment.
    let archive = common::Archive::start(None)?;
    let proxy = behind_proxy(&archive)?;
    let (wal_dir, segments) = common::real_segments(2)?;
    for name in &segments {
        let out = wal_push(&archive, wal_dir.path(), name)?;
        ensure!(out.status.success(), "{}", common::stderr(&out));
    }
    // A quarter of the floor rate a deadline allows for (1 MiB/s): each read takes
    // about 4 s, well within its deadline (25 s and 1 s per MiB), and must not be cut.
    proxy.set(vec![
        Rule::every(
            1,
            Fault::Slow {
                bytes_per_second: 256 * 1024,
            },
        )
        .on("GET"),
    ]);
    let dest = tempfile::tempdir()?;
    for name in &segments {
        let into = dest.path().join(name);
        let out = archive.walship(&["wal-fetch", name, &into.display().to_string()])?;
        ensure!(out.status.success(), "{name}: {}", common::stderr(&out));
        ensure!(
            std::fs::read(&into)? == std::fs::read(wal_dir.path().join(name))?,
            "{name} differs from what was archived"
        );
    }
    let slow = proxy.faults().get("slow").copied().unwrap_or(0);
    ensure!(slow >= 2, "{slow} answers slowed: the link was not slow");
    // The object reads (listings, which find the file's name, carry no body worth
    // slowing).
    let gets: u64 = segments
        .iter()
        .map(|n| proxy.requests_for("GET", &format!("{n}?x-id=GetObject")))
        .sum();
    ensure!(
        gets == segments.len() as u64,
        "{gets} GETs for {} segments: a slow read was cut and tried again: {:?}",
        segments.len(),
        proxy.requests()
    );
    eprintln!(
        "{} segments restored over a 256 KiB/s link, one read each",
        segments.len()
    );
    Ok(())
}

#[test]
fn credentials_refused_as_expired_are_reported_as_expired_not_as_access_denied() -> Result<()> {
    let archive = common::Archive::start(Some("gzip"))?;
    let proxy = behind_proxy(&archive)?;
    let (wal_dir, segments) = common::real_segments(1)?;
    // What S3 answers temporary credentials past their expiry, which the SDK keeps
    // using while the instance metadata service is down (its static stability).
    proxy.set(vec![
        Rule::every(
            1,
            Fault::ErrorCode {
                status: 400,
                code: "ExpiredToken".to_owned(),
            },
        )
        .on("PUT"),
    ]);
    let out = wal_push(&archive, wal_dir.path(), &segments[0])?;
    let err = common::stderr(&out);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {err}",
        out.status.code()
    );
    ensure!(
        err.contains("ExpiredToken")
            && err.contains("temporary credentials in hand have expired")
            && err.contains("instance metadata service"),
        "{err}"
    );
    ensure!(!err.contains("access denied"), "{err}");
    Ok(())
}

#[test]
fn an_azure_refusal_from_a_server_whose_clock_is_minutes_away_is_reported_as_clock_skew_and_tried_again()
-> Result<()> {
    let archive = AzureArchive::shared_key("gzip")?;
    let proxy = route_through_proxy(&archive, archive.azurite.port())?;
    let (wal_dir, segments) = common::real_segments(3)?;
    let push = |name: &str| wal_push(&archive, wal_dir.path(), name);
    // Azure's answer to a request signed too far from its clock is its plain
    // `403 AuthenticationFailed` (the cause only in a detail of the body); its `Date`
    // says where its clock is.
    let refused = |server_clock: i64| Fault::Refused {
        status: 403,
        code: "AuthenticationFailed".to_owned(),
        server_clock,
        oauth: false,
    };

    proxy.set(vec![Rule::every(1, refused(20 * 60)).on("PUT")]);
    let out = push(&segments[0])?;
    let err = common::stderr(&out);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {err}",
        out.status.code()
    );
    ensure!(
        err.contains("AuthenticationFailed")
            && err.contains("refused for its time")
            && err.contains("the server's clock is 20 minutes ahead of this machine's")
            && err.contains("NTP"),
        "the error does not name the clock: {err}"
    );
    ensure!(!err.contains("access denied"), "{err}");
    let puts = proxy.requests_for("PUT", &segments[0]);
    ensure!(puts > 1, "{puts} PUTs: a clock skew was not tried again");

    // The same refusal from a server on time is about the credentials: access denied,
    // and not tried again. The clocks decide, not the code.
    proxy.set(vec![Rule::every(1, refused(0)).on("PUT")]);
    let out = push(&segments[1])?;
    let err = common::stderr(&out);
    ensure!(
        out.status.code() == Some(1) && err.contains("access denied") && !err.contains("clock"),
        "exit {:?}: {err}",
        out.status.code()
    );
    let puts = proxy.requests_for("PUT", &segments[1]);
    ensure!(
        puts == 1,
        "{puts} PUTs: refused credentials were tried again"
    );

    // Refused once by a server whose clock is behind: the next attempt stores it.
    proxy.set(vec![Rule::every(1, refused(-20 * 60)).on("PUT").at_most(1)]);
    let out = push(&segments[2])?;
    ensure!(out.status.success(), "{}", common::stderr(&out));
    ensure!(
        archive.keys()?.iter().any(|k| k.contains(&segments[2])),
        "{} is not in the store",
        segments[2]
    );
    Ok(())
}

#[test]
fn a_google_token_endpoint_refusing_an_assertion_made_by_a_clock_minutes_off_is_reported_as_clock_skew()
-> Result<()> {
    use walship_testkit::TokenMode;
    let archive = GcsArchive::for_scenarios("gzip", 4)?;
    let (wal_dir, segments) = common::real_segments(2)?;
    let push = |name: &str| wal_push(&archive, wal_dir.path(), name);

    // This machine's clock 20 minutes ahead of Google's: the assertion walship signs is
    // issued in the endpoint's future, which it refuses with a plain `400 invalid_grant`.
    archive.tokens().set_mode(TokenMode::ClockOffBy(-20 * 60));
    let out = push(&segments[0])?;
    let err = common::stderr(&out);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {err}",
        out.status.code()
    );
    ensure!(
        archive
            .tokens()
            .refused()
            .iter()
            .any(|r| r.starts_with("out of time")),
        "the endpoint refused for something else: {:?}",
        archive.tokens().refused()
    );
    ensure!(
        err.contains("invalid_grant")
            && err.contains("refused for its time")
            && err.contains("the server's clock is 20 minutes behind this machine's"),
        "the error does not name the clock: {err}"
    );
    ensure!(!err.contains("access denied"), "{err}");

    // Two minutes off, within what Google allows: granted, and archived.
    archive.tokens().set_mode(TokenMode::ClockOffBy(-120));
    let out = push(&segments[1])?;
    ensure!(out.status.success(), "{}", common::stderr(&out));
    Ok(())
}

#[test]
fn an_unwritable_or_removed_ack_journal_never_stops_archiving() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (archive, mut pg, socket) = setup()?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    let journal = archive.dir.path().join("journal");
    let unjournaled = |name: &str| {
        daemon
            .log_contents()
            .lines()
            .any(|l| l.contains(name) && l.contains("cannot journal the ack"))
    };

    // Unwritable (the daemon runs as the PostgreSQL user, not root).
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o555))?;
    let first = write_and_switch(&pg)?;
    pg.wait_for_archived(&first, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    ensure!(unjournaled(&first), "{}", daemon.log_contents());

    // Removed under the running daemon: created again, as a restart would, and the
    // next ack journaled in it.
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o755))?;
    std::fs::remove_dir_all(&journal)?;
    let second = write_and_switch(&pg)?;
    pg.wait_for_archived(&second, Duration::from_secs(60))
        .with_context(|| daemon.log_contents())?;
    ensure!(!unjournaled(&second), "{}", daemon.log_contents());
    ensure!(
        daemon.log_contents().contains("was gone; created it again") && journal.is_dir(),
        "the journal directory was not made again: {}",
        daemon.log_contents()
    );

    let checked = assert_all_archived_identical(&archive, &pg)?;
    eprintln!(
        "journal unwritable, then removed and made again: {checked} segments archived, 0 lost"
    );
    Ok(())
}
