//! The backup session against a real PostgreSQL 15 from the test kit.

use walship_backup::session::{ConnParams, Session};
use walship_testkit::{InitOptions, PgCluster};

fn params(cluster: &PgCluster) -> ConnParams {
    ConnParams {
        host: "127.0.0.1".into(),
        port: cluster.port(),
        user: "postgres".into(),
        dbname: "postgres".into(),
        password: None,
    }
}

#[tokio::test]
async fn a_session_reads_the_facts_starts_and_stops_a_backup_on_one_connection() {
    let mut cluster = PgCluster::init_temp(InitOptions::default()).unwrap();
    cluster.start().unwrap();
    cluster
        .psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        .unwrap();
    let mut session = Session::connect(&params(&cluster)).await.unwrap();
    let facts = session.facts().await.unwrap().clone();
    assert!(
        facts.version >= 150000 && facts.version < 160000,
        "{facts:?}"
    );
    assert_eq!(facts.wal_segment_size, 16 << 20);
    assert!(!facts.in_recovery);
    assert!(facts.system_identifier.len() >= 10, "{facts:?}");
    assert!(facts.config_file.ends_with("postgresql.conf"), "{facts:?}");
    let started = session.start("walship test", true).await.unwrap();
    assert_eq!(started.position.timeline, 1);
    assert!(started.position.wal.starts_with("00000001"), "{started:?}");
    // A second session sees the backup running: it belongs to the first one.
    let running = cluster
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walship_backup'")
        .unwrap();
    assert_eq!(running.trim(), "1");
    let stopped = session.stop().await.unwrap();
    assert!(
        stopped.label.contains("LABEL: walship test"),
        "{}",
        stopped.label
    );
    assert!(
        stopped
            .label
            .contains(&format!("(file {})", started.position.wal)),
        "the label's start file is not ours: {}",
        stopped.label
    );
    assert!(stopped.position.wal >= started.position.wal);
    assert!(stopped.time >= started.time);
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_an_error_naming_where_it_looked() {
    let port = walship_testkit::free_port().unwrap();
    let params = ConnParams {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        dbname: "postgres".into(),
        password: None,
    };
    let err = Session::connect(&params).await.err().unwrap().to_string();
    assert!(
        err.contains(&format!("host=127.0.0.1 port={port}")),
        "{err}"
    );
}
