//! Base backups under faults (issue 13, part 6): a backup whose uploads fail, reset or
//! hang, or whose process is killed, is never DONE; retention reading a stale listing
//! or damaged answers never deletes a kept backup or the WAL it needs; a restore
//! downloads a part damaged on the way again, and fails clearly when every download
//! of it is damaged.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use walship_testkit::{Fault, InitOptions, PgCluster, Rule, pg_temp_dir, wait_until};

use super::behind_proxy;
use crate::common::backups::{backup, spawn_backup};
use crate::common::{Archive, BUCKET, PREFIX, SERVER, stderr};

/// A primary archiving through `wal-push`, with a table `t` holding some rows.
fn primary(archive: &Archive) -> Result<PgCluster> {
    let mut primary = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    primary.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    primary.start()?;
    primary.psql("CREATE TABLE t (x int)")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 20000)")?;
    Ok(primary)
}

/// Two more WAL segments with rows in `t`.
fn more_wal(primary: &PgCluster) -> Result<()> {
    for _ in 0..2 {
        primary.psql("INSERT INTO t SELECT generate_series(1, 3000)")?;
        primary.switch_wal()?;
    }
    Ok(())
}

/// The id of the backup named `name`.
fn id_of(archive: &Archive, name: &str) -> Result<String> {
    let out = archive.walship(&["backup-show", name, "--format", "json"])?;
    ensure!(out.status.success(), "backup-show {name}: {}", stderr(&out));
    let json = String::from_utf8(out.stdout)?;
    let at = json
        .find("\"backup_id\": \"")
        .context("no backup_id in backup-show")?
        + 14;
    Ok(json[at..at + 15].to_owned())
}

/// The statuses `backup-list` shows, by backup id.
fn statuses(archive: &Archive) -> Result<Vec<(String, String)>> {
    let out = archive.walship(&["backup-list", "--format", "json"])?;
    ensure!(out.status.success(), "backup-list: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = json["backups_list"]
        .as_array()
        .context("no backups_list in backup-list's JSON")?;
    list.iter()
        .map(|b| {
            let field = |name: &str| {
                b[name]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no {name} in {b}"))
            };
            Ok((field("backup_id")?, field("status")?))
        })
        .collect()
}

fn info_key(id: &str) -> String {
    format!("{PREFIX}/{SERVER}/base/{id}/backup.info")
}

/// A `backup.info` field's value, read from the store directly.
fn info_field(archive: &Archive, id: &str, field: &str) -> Result<String> {
    let text = String::from_utf8(archive.s3.get_object(BUCKET, &info_key(id))?)?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}=")))
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {id}'s backup.info"))
}

/// The WAL names (24 hex digits) archived, from the store's files.
fn wal_names(archive: &Archive) -> Result<Vec<String>> {
    let mut names: Vec<String> = archive
        .keys()?
        .iter()
        .filter(|k| k.contains("/wals/"))
        .filter_map(|k| k.rsplit('/').next())
        .map(|n| n.split('.').next().unwrap_or(n).to_owned())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    Ok(names)
}

/// What `backup-delete --dry-run` plans: backup ids and WAL names.
fn planned(archive: &Archive, policy: &str) -> Result<(Vec<String>, Vec<String>)> {
    let out = archive.walship(&["backup-delete", "--dry-run", "-r", policy])?;
    ensure!(out.status.success(), "dry run: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout)?;
    let pick = |prefix: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    Ok((pick("backup "), pick("wal ")))
}

/// An S3 ListObjectsV2 answer naming `objects` (key, size), well formed: what a store
/// whose listing lags behind its writes answers.
fn s3_listing(objects: &[(String, u64)]) -> String {
    let contents: String = objects
        .iter()
        .map(|(key, size)| {
            format!(
                "<Contents><Key>{key}</Key><LastModified>2026-12-01T00:00:00.000Z</LastModified>\
                 <ETag>\"0\"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass>\
                 </Contents>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{BUCKET}</Name>\
         <KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
         {contents}</ListBucketResult>",
        objects.len()
    )
}

/// Deletes fail now and then, and some are carried out with their answer lost.
fn failing_deletes() -> Vec<Rule> {
    vec![
        Rule::every(
            3,
            Fault::Status {
                code: 500,
                retry_after: None,
            },
        )
        .on("DELETE"),
        Rule::every(4, Fault::ResetAfterRequest).on("DELETE"),
    ]
}

#[test]
fn retention_reading_a_stale_listing_or_damaged_answers_never_deletes_a_kept_backup_or_the_wal_it_needs()
-> Result<()> {
    let archive = Archive::start(None)?;
    let primary = primary(&archive)?;
    for name in ["oldest-one", "kept", "newest-one"] {
        more_wal(&primary)?;
        let out = backup(
            &archive,
            &primary,
            &["--immediate-checkpoint", "--name", name],
        )?;
        ensure!(out.status.success(), "backup {name}: {}", stderr(&out));
    }
    let last = primary.switch_wal()?;
    primary.wait_for_archived(&last, Duration::from_secs(120))?;
    primary.stop()?;
    let (first, kept) = (id_of(&archive, "oldest-one")?, id_of(&archive, "kept")?);
    let out = archive.walship(&["backup-keep", &kept, "--target", "full"])?;
    ensure!(out.status.success(), "backup-keep: {}", stderr(&out));
    let kept_begins = info_field(&archive, &kept, "begin_wal")?;
    let newest_begins = info_field(&archive, &id_of(&archive, "newest-one")?, "begin_wal")?;

    // What REDUNDANCY 1 deletes read right: the first backup, and the WAL before the
    // kept one's beginning.
    const POLICY: &str = "REDUNDANCY 1";
    let (backups, wal) = planned(&archive, POLICY)?;
    assert_eq!(backups, vec![first.clone()], "the plan without faults");
    ensure!(!wal.is_empty(), "the plan deletes no WAL");
    ensure!(
        wal.iter().all(|w| *w < kept_begins),
        "the plan without faults deletes WAL the kept backup needs: {wal:?}"
    );
    let before = wal_names(&archive)?;

    let proxy = behind_proxy(&archive)?;
    let base_listing = format!("prefix={PREFIX}/{SERVER}/base/");
    let once = |fault: Fault, method: &str, path: &str| {
        Rule::every(1, fault).on(method).path(path).at_most(1)
    };
    // Each damaged answer once, as a store lagging behind its writes or a damaging hop
    // gives it: a listing without the kept backup; its backup.info with a later
    // begin_wal (a well-formed body, differing in one field); its keep annotation gone
    // from the answer.
    let without_kept: Vec<(String, u64)> = archive
        .s3
        .objects_on_disk(BUCKET)?
        .into_iter()
        .filter(|(k, _)| k.contains("/base/") && !k.contains(&kept) && !k.contains(".s3s-fs"))
        .collect();
    let info = String::from_utf8(archive.s3.get_object(BUCKET, &info_key(&kept))?)?;
    let later_begin = info.replace(
        &format!("begin_wal={kept_begins}"),
        &format!("begin_wal={newest_begins}"),
    );
    ensure!(later_begin != info, "begin_wal not replaced");
    let damaged: [(&str, Rule); 3] = [
        (
            "a listing without the kept backup",
            once(
                Fault::Stale(s3_listing(&without_kept)),
                "GET",
                &base_listing,
            ),
        ),
        (
            "the kept backup's backup.info with a later begin_wal",
            once(
                Fault::Stale(later_begin),
                "GET",
                &format!("base/{kept}/backup.info"),
            ),
        ),
        (
            "the kept backup's keep annotation answered empty",
            once(
                Fault::Stale(String::new()),
                "GET",
                &format!("base/{kept}/annotations/keep"),
            ),
        ),
    ];
    let given = || proxy.faults().values().sum::<u64>();
    for (what, rule) in damaged {
        let before = given();
        proxy.set(vec![rule]);
        let (backups, wal) = planned(&archive, POLICY)?;
        assert_eq!(
            given(),
            before + 1,
            "{what}: the damaged answer was not given"
        );
        assert_eq!(backups, vec![first.clone()], "{what}: the backups planned");
        ensure!(
            wal.iter().all(|w| *w < kept_begins),
            "{what}: WAL the kept backup needs planned for deletion: {wal:?}"
        );
        proxy.clear();
    }

    // The deletion itself, with the keep annotation damaged once more and deletes
    // failing or losing their answers: the first backup and its WAL go, nothing else.
    let mut rules = vec![once(
        Fault::Stale(String::new()),
        "GET",
        &format!("base/{kept}/annotations/keep"),
    )];
    rules.extend(failing_deletes());
    proxy.set(rules);
    let mut runs = 0;
    loop {
        runs += 1;
        let out = archive.walship(&["backup-delete", "-r", POLICY])?;
        if out.status.success() {
            break;
        }
        // A deletion cut short by the faults is finished by the next run.
        ensure!(
            runs < 4,
            "backup-delete failed {runs} times: {}",
            stderr(&out)
        );
    }
    let faults = proxy.faults();
    proxy.clear();
    let listed = statuses(&archive)?;
    let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    ensure!(!ids.contains(&first.as_str()), "the first backup is left");
    ensure!(
        ids.contains(&kept.as_str()) && ids.len() == 2,
        "the kept or the newest backup was deleted: {listed:?}"
    );
    let after = wal_names(&archive)?;
    let needed: Vec<&String> = before.iter().filter(|w| **w >= kept_begins).collect();
    let lost: Vec<&&String> = needed.iter().filter(|w| !after.contains(w)).collect();
    ensure!(
        lost.is_empty(),
        "WAL the kept backup needs was deleted: {lost:?}"
    );
    ensure!(
        after.iter().all(|w| *w >= kept_begins),
        "WAL before the kept backup is left: {after:?}"
    );
    // The kept backup restores.
    let dir = pg_temp_dir()?;
    let data = dir.path().join("data");
    let out = archive.walship(&["restore", &kept, data.to_str().unwrap()])?;
    ensure!(out.status.success(), "restore: {}", stderr(&out));
    eprintln!(
        "retention under faults: {} WAL of {} deleted, {} kept, 0 needed lost; faults {faults:?} \
         in {runs} runs",
        before.len() - after.len(),
        before.len(),
        after.len()
    );
    Ok(())
}

/// Whether PostgreSQL still has walship's backup session.
fn backup_session_open(cluster: &PgCluster) -> Result<bool> {
    Ok(cluster
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walship_backup'")?
        != "0")
}

#[test]
fn a_backup_killed_or_starved_of_its_store_mid_upload_is_never_done_and_the_next_one_is()
-> Result<()> {
    let archive = Archive::start(None)?;
    let primary = primary(&archive)?;
    // Enough data for several parts per tar.
    primary.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS m FROM generate_series(1, 400000) g",
    )?;
    let proxy = behind_proxy(&archive)?;
    let parts = "partNumber=";

    // kill -9 while its uploads hang: backup.info stays STARTED, which neither tool
    // lists as restorable, and PostgreSQL ends the backup with the connection.
    proxy.set(vec![
        Rule::every(1, Fault::Stall(Duration::from_secs(300)))
            .on("PUT")
            .path(parts),
    ]);
    let mut child = spawn_backup(
        &archive,
        &primary,
        &["--jobs", "2", "--immediate-checkpoint"],
    )?;
    wait_until(Duration::from_secs(60), "an upload to hang", || {
        ensure!(
            child.try_wait()?.is_none(),
            "the backup ended before an upload hung: {:?}",
            proxy.requests()
        );
        Ok(proxy.stalls_held() > 0)
    })?;
    child.kill()?;
    child.wait()?;
    proxy.clear();
    let listed = statuses(&archive)?;
    ensure!(
        listed.len() == 1 && listed[0].1 == "STARTED",
        "after kill -9: {listed:?}"
    );
    let killed = listed[0].0.clone();
    wait_until(Duration::from_secs(30), "the session to end", || {
        Ok(!backup_session_open(&primary)?)
    })?;
    let out = archive
        .barman("barman-cloud-backup-list")?
        .args(["--format", "json"])
        .arg(archive.destination())
        .arg(SERVER)
        .output()?;
    let theirs = String::from_utf8(out.stdout)?;
    ensure!(
        theirs.contains(&killed) && theirs.contains("\"status\": \"STARTED\""),
        "barman-cloud-backup-list: {theirs}"
    );

    // Every part refused: the backup fails, FAILED with the store's error, and the
    // session ends.
    proxy.set(vec![
        Rule::every(
            1,
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        )
        .on("PUT")
        .path(parts),
    ]);
    let out = backup(
        &archive,
        &primary,
        &[
            "--immediate-checkpoint",
            "--jobs",
            "2",
            "--retry-seconds",
            "2",
        ],
    )?;
    ensure!(
        !out.status.success(),
        "a backup with every part refused succeeded"
    );
    proxy.clear();
    let listed = statuses(&archive)?;
    let failed: Vec<_> = listed.iter().filter(|(id, _)| *id != killed).collect();
    ensure!(
        failed.len() == 1 && failed[0].1 == "FAILED",
        "after every part was refused: {listed:?}"
    );
    ensure!(!backup_session_open(&primary)?, "the session is still open");

    // Uploads failing and resetting now and then (before, during and after the
    // request; the completes too): the backup retries through them and is DONE; `latest` is that one, never the killed or the failed one.
    let status = |code| Fault::Status {
        code,
        retry_after: None,
    };
    proxy.set(vec![
        // The answers to its first backup.info and to its walship.json lost after the
        // store stored them: the retry finds its own bytes under the key.
        Rule::every(1, Fault::ResetAfterRequest)
            .on("PUT")
            .path("backup.info")
            .at_most(1),
        Rule::every(1, Fault::ResetAfterRequest)
            .on("PUT")
            .path("walship.json")
            .at_most(1),
        Rule::every(3, status(503)).on("PUT").path("/base/"),
        Rule::every(4, Fault::ResetAfterRequest)
            .on("PUT")
            .path("/base/"),
        Rule::every(5, Fault::ResetBeforeBody)
            .on("PUT")
            .path("/base/"),
        Rule::every(7, Fault::ResetDuringBody)
            .on("PUT")
            .path("/base/"),
        Rule::every(2, status(500)).on("POST").path("/base/"),
        Rule::every(3, Fault::ResetAfterRequest)
            .on("POST")
            .path("/base/"),
    ]);
    let before = proxy.faults();
    let out = backup(
        &archive,
        &primary,
        // Split in several tars, so that its restore downloads several objects into
        // one directory at once (a damaged one must not race the others' unpacking).
        &[
            "--immediate-checkpoint",
            "--jobs",
            "2",
            "--name",
            "whole",
            "--max-archive-size",
            "16MB",
        ],
    )?;
    ensure!(
        out.status.success(),
        "backup under faults: {}",
        stderr(&out)
    );
    let mut faults = proxy.faults();
    for (kind, n) in before {
        *faults.entry(kind).or_default() -= n;
    }
    faults.retain(|_, n| *n > 0);
    proxy.clear();
    let whole = id_of(&archive, "whole")?;
    let split = archive
        .keys()?
        .iter()
        .filter(|k| k.contains(&whole) && k.contains("/data"))
        .count();
    ensure!(
        split >= 2,
        "backup {whole} is in {split} data tars, not split"
    );
    let listed = statuses(&archive)?;
    let done: Vec<_> = listed.iter().filter(|(_, s)| s == "DONE").collect();
    ensure!(
        done.len() == 1 && done[0].0 == whole,
        "after the backup under faults: {listed:?}"
    );
    eprintln!("a backup through {faults:?}: DONE; the killed one STARTED, the starved one FAILED");
    primary.stop()?;

    // Restored through damaged reads (data.tar's bytes flipped once, cut short once
    // with a Content-Length to match, requests failing and resetting): each damaged
    // download is thrown away and done again, and what is restored is whole, its
    // parts checked against their recorded SHA-256. PostgreSQL starts on it.
    let data_tar = "/data.tar";
    proxy.set(vec![
        Rule::every(1, Fault::CorruptResponse)
            .on("GET")
            .path(data_tar)
            .at_most(1),
        Rule::every(2, Fault::ShortContentLength)
            .on("GET")
            .path(data_tar)
            .at_most(1),
        Rule::every(4, status(503)).on("GET"),
        Rule::every(5, Fault::ResetBeforeBody).on("GET"),
    ]);
    let dir = pg_temp_dir()?;
    let data = dir.path().join("data");
    let out = archive.walship(&[
        "restore",
        "latest",
        data.to_str().unwrap(),
        "--target-immediate",
    ])?;
    proxy.clear();
    ensure!(out.status.success(), "restore: {}", stderr(&out));
    let err = stderr(&out);
    ensure!(err.contains("every object's SHA-256 checked"), "{err}");
    let again = err
        .matches(&format!("downloading backup {whole} again"))
        .count();
    // Both damages may come in one download.
    ensure!(
        (1..=2).contains(&again),
        "{again} downloads again, not 1 or 2: {err}"
    );
    let given = proxy.faults();
    ensure!(
        given.contains_key("corrupt-response") && given.contains_key("short-content-length"),
        "not every damage was given: {given:?}"
    );
    let mut restored = PgCluster::restored_in(dir)?;
    restored.set_conf(&[("archive_mode", "off")])?;
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
    assert_eq!(restored.psql("SELECT count(*) FROM big")?, "400000");
    restored.stop()?;

    // Damaged in every download: the restore fails naming the object and the damage,
    // and leaves nothing PostgreSQL would start on.
    proxy.set(vec![
        Rule::every(1, Fault::CorruptResponse)
            .on("GET")
            .path(data_tar),
    ]);
    let dir = pg_temp_dir()?;
    let data = dir.path().join("data");
    let out = archive.walship(&["restore", "latest", data.to_str().unwrap()])?;
    proxy.clear();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    ensure!(
        err.contains("data.tar: its SHA-256 is") && err.contains("in each of 3 downloads"),
        "{err}"
    );
    ensure!(
        !data.join("global/pg_control").exists(),
        "pg_control was put in place"
    );
    Ok(())
}
