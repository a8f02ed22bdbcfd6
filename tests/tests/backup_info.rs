//! walship's `backup.info` against barman's own reader and writer (`barman.infofile`
//! from the test kit's barman-cloud virtualenv): barman loads what walship writes and
//! saves it back byte for byte, walship reads what barman writes and renders it back
//! byte for byte, and both name the same keys.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use walship_backup::{BackupInfo, Status, Tablespace};
use walship_testkit::barman_venv;

/// Runs `script` with the virtualenv's Python (barman importable), `args` in `sys.argv`.
fn barman_python(script: &str, args: &[&Path]) -> Result<String> {
    let venv = barman_venv().context("the barman-cloud virtualenv (cargo xtask install-tools)")?;
    // barman.infofile and barman.output import each other: output first breaks the cycle.
    let out = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(format!("import barman.output\n{script}"))
        .args(args)
        .output()
        .context("running barman's Python")?;
    ensure!(
        out.status.success(),
        "barman's Python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn barman_loads_what_walship_writes_and_saves_it_back_unchanged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut info = BackupInfo::parse(
        b"begin_time=2026-11-30 00:19:33.672596+00:00\nend_time=2026-11-30 00:20:59+00:00\n\
          copy_stats={'total_time': 5.62, 'number_of_workers': 4}\n",
    )?;
    info.status = Some(Status::Done);
    info.backup_name = Some("before the upgrade".into());
    info.backup_label = Some(
        "START WAL LOCATION: 0/13000028 (file 000000010000000000000013)\nLABEL: it's \"quoted\"\n"
            .into(),
    );
    info.begin_wal = Some("000000010000000000000013".into());
    info.end_wal = Some("000000010000000000000014".into());
    info.begin_xlog = Some("0/13000028".into());
    info.end_xlog = Some("0/14000100".into());
    info.begin_offset = Some(40);
    info.end_offset = Some(256);
    info.server_name = Some("cloud".into());
    info.systemid = Some("7442563521237112345".into());
    info.timeline = Some(1);
    info.version = Some(150018);
    info.xlog_segment_size = Some(16 << 20);
    info.pgdata = Some("/var/lib/postgresql/data".into());
    info.tablespaces = vec![Tablespace {
        name: "tbs1".into(),
        oid: 16385,
        location: "/var/lib/tbs1".into(),
    }];
    let written = info.render();
    let (path, saved) = (
        dir.path().join("backup.info"),
        dir.path().join("saved.info"),
    );
    std::fs::write(&path, &written)?;
    let shown = barman_python(
        "import sys\n\
         from barman.infofile import BackupInfo\n\
         b = BackupInfo('20261130T001933')\n\
         b.load(filename=sys.argv[1])\n\
         b.save(filename=sys.argv[2])\n\
         print(b.status, b.backup_name, b.tablespaces[0].oid, b.end_time.isoformat(), \
               b.backup_label.splitlines()[1])\n",
        &[&path, &saved],
    )?;
    assert_eq!(
        shown.trim(),
        "DONE before the upgrade 16385 2026-11-30T00:20:59+00:00 LABEL: it's \"quoted\""
    );
    assert_eq!(std::fs::read_to_string(&saved)?, written);
    Ok(())
}

#[test]
fn walship_reads_what_barman_writes_and_renders_it_back_unchanged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("backup.info");
    barman_python(
        "import sys, datetime\n\
         from dateutil import tz\n\
         from barman.infofile import BackupInfo, Tablespace\n\
         b = BackupInfo('20261130T001933', status='FAILED', version=150018, timeline=2, \
             begin_time=datetime.datetime(2026, 11, 30, 0, 19, 33, 672596, tzinfo=tz.tzutc()), \
             end_time=datetime.datetime(2026, 11, 30, 1, 0, 0, tzinfo=tz.tzoffset(None, 3600)), \
             begin_wal='000000020000000000000013', begin_offset=40, \
             error='failure uploading data (connection reset)', \
             tablespaces=[Tablespace('a', 16385, '/a'), Tablespace('b c', 16386, \"/it's\")], \
             backup_label='START WAL LOCATION: 0/13000028\\nSTART TIMELINE: 2\\n', \
             copy_stats={'total_time': 1.5, 'copy_time': 1.25}, \
             included_files=['/etc/postgresql/extra.conf'], \
             children_backup_ids=['20261201T000000', '20261202T000000'], \
             systemid='7442563521237112345', xlog_segment_size=16777216)\n\
         b.save(filename=sys.argv[1])\n",
        &[&path],
    )?;
    let written = std::fs::read(&path)?;
    let info = BackupInfo::parse(&written)?;
    assert_eq!(info.status, Some(Status::Failed));
    assert_eq!(info.timeline, Some(2));
    assert_eq!(info.tablespaces[1].location, "/it's");
    assert_eq!(
        info.children_backup_ids.as_deref(),
        Some(&["20261201T000000".to_owned(), "20261202T000000".to_owned()][..])
    );
    assert!(info.unknown.is_empty(), "{:?}", info.unknown);
    assert_eq!(info.render(), String::from_utf8(written)?);
    Ok(())
}

/// The keys walship writes for an unnamed backup are exactly barman's, less the two it
/// hides when null.
#[test]
fn walship_writes_exactly_barmans_key_set() -> Result<()> {
    let barman = barman_python(
        "import inspect\n\
         from barman.infofile import BackupInfo, Field\n\
         print('\\n'.join(n for n, f in sorted(inspect.getmembers(BackupInfo)) \
               if isinstance(f, Field) and n not in BackupInfo._hide_if_null))\n",
        &[],
    )?;
    let ours: Vec<String> = BackupInfo::default()
        .render()
        .lines()
        .map(|l| l.split('=').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ours, barman.lines().collect::<Vec<_>>());
    Ok(())
}

/// The CloudNativePG plugin parses barman-cloud's `--format json`: walship's rendering
/// of a backup is barman's `json.dumps(BackupInfo.to_json())`, byte for byte.
#[test]
fn the_json_of_a_backup_is_barmans_byte_for_byte() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("backup.info");
    barman_python(
        "import sys, datetime\n\
         from dateutil import tz\n\
         from barman.infofile import BackupInfo, Tablespace\n\
         b = BackupInfo('20261130T001933', status='DONE', version=150018, timeline=1, \
             backup_name='nightly \\u00e9', server_name='cloud', \
             begin_time=datetime.datetime(2026, 11, 3, 0, 19, 33, 672596, tzinfo=tz.tzutc()), \
             end_time=datetime.datetime(2026, 11, 30, 1, 0, 0, tzinfo=tz.tzoffset(None, 3600)), \
             begin_wal='000000010000000000000013', end_wal='000000010000000000000014', \
             begin_xlog='0/13000028', end_xlog='0/14000100', begin_offset=40, end_offset=256, \
             tablespaces=[Tablespace('a', 16385, '/a')], \
             backup_label='START WAL LOCATION: 0/13000028\\nLABEL: \"x\"\\n', \
             copy_stats={'total_time': 1.5, 'copy_time': 1e-05, 'number_of_workers': 2}, \
             included_files=['/etc/postgresql/extra.conf'], \
             children_backup_ids=['20261201T000000'], data_checksums='on', \
             systemid='7442563521237112345', xlog_segment_size=16777216, size=1024)\n\
         b.save(filename=sys.argv[1])\n",
        &[&path],
    )?;
    let barman = barman_python(
        "import sys, json\n\
         from barman.infofile import BackupInfo\n\
         b = BackupInfo('20261130T001933')\n\
         b.load(filename=sys.argv[1])\n\
         print(json.dumps(b.to_json()))\n",
        &[&path],
    )?;
    let info = BackupInfo::parse(&std::fs::read(&path)?)?;
    let ours = walship_backup::json::backup_json("20261130T001933", &info).render();
    assert_eq!(ours, barman.trim_end());
    Ok(())
}
