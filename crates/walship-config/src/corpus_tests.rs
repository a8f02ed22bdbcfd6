//! A corpus of broken documents, each with the YAML path and a fragment of
//! the message it must produce, plus tests of the accessors on good ones.

use crate::*;

/// A complete document whose `spec.configuration` is `body` (written with
/// its own indentation starting at column 0).
fn conf(body: &str) -> String {
    let mut s = String::from(
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: store\nspec:\n  configuration:\n",
    );
    for line in body.lines() {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

const S3_KEYS: &str = "s3Credentials:
  accessKeyId: {name: aws-creds, key: ACCESS_KEY_ID}
  secretAccessKey: {name: aws-creds, key: ACCESS_SECRET_KEY}
";

fn s3(extra: &str) -> String {
    conf(&format!(
        "destinationPath: s3://bucket/prefix\n{S3_KEYS}{extra}"
    ))
}

fn azure(creds: &str) -> String {
    conf(&format!(
        "destinationPath: https://acct.blob.core.windows.net/cont/pg\nazureCredentials:\n{creds}"
    ))
}

fn google(creds: &str) -> String {
    conf(&format!(
        "destinationPath: gs://bucket/pg\ngoogleCredentials:\n{creds}"
    ))
}

fn header(rest: &str) -> String {
    format!(
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: store\n{rest}"
    )
}

fn corpus() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        // --- YAML syntax ---
        (
            "unclosed bracket",
            "apiVersion: [barmancloud\n".into(),
            "line 1, column 13",
            "unclosed bracket",
        ),
        (
            "bad indentation",
            conf("destinationPath: s3://bkt\n s3Credentials: {}\n"),
            "line 8, column 19",
            "line 8, column 19: mapping values are not allowed in this context; expected valid YAML",
        ),
        (
            "duplicate key",
            s3("destinationPath: s3://other\n"),
            "line 11, column 5",
            "duplicate mapping key: destinationPath",
        ),
        (
            "two documents",
            format!("{}---\n{}", s3(""), s3("")),
            "line 12, column 1",
            "multiple YAML documents",
        ),
        ("empty document", "".into(), "(document)", "is empty"),
        (
            "comment-only document",
            "# nothing\n".into(),
            "(document)",
            "is empty",
        ),
        ("list root", "- a\n- b\n".into(), "(document)", "is a list"),
        (
            "billion laughs",
            alias_bomb(&s3("")),
            "line 16, column 47",
            "expands its aliases (*name) to more than 100000 YAML events",
        ),
        // --- envelope ---
        (
            "wrong apiVersion",
            s3("").replace("barmancloud.cnpg.io/v1", "postgresql.cnpg.io/v1"),
            "apiVersion",
            "apiVersion: \"postgresql.cnpg.io/v1\" is not supported; expected barmancloud.cnpg.io/v1",
        ),
        (
            "a Cluster instead of an ObjectStore",
            s3("").replace("kind: ObjectStore", "kind: Cluster"),
            "kind",
            "kind: \"Cluster\" is not supported; expected ObjectStore",
        ),
        (
            "missing apiVersion",
            s3("").replace("apiVersion: barmancloud.cnpg.io/v1\n", ""),
            "apiVersion",
            "apiVersion: is missing; expected barmancloud.cnpg.io/v1",
        ),
        (
            "missing metadata.name",
            s3("").replace("  name: store\n", "  namespace: db\n"),
            "metadata.name",
            "is missing; expected the ObjectStore's name",
        ),
        (
            "misspelled labels",
            s3("").replace("  name: store\n", "  name: store\n  lables: {a: b}\n"),
            "metadata.lables",
            "unknown field; expected one of name, namespace, labels",
        ),
        (
            "misspelled spec",
            header("specs: {}\n"),
            "specs",
            "(did you mean \"spec\"?)",
        ),
        (
            "missing configuration",
            header("spec:\n  retentionPolicy: 30d\n"),
            "spec.configuration",
            "is missing",
        ),
        (
            "spec is a string",
            header("spec: s3://bucket\n"),
            "spec",
            "spec: \"s3://bucket\" is a string; expected a mapping with configuration",
        ),
        // --- destinationPath ---
        (
            "missing destinationPath",
            conf(S3_KEYS),
            "spec.configuration.destinationPath",
            "is missing; expected s3://BUCKET[/PREFIX]",
        ),
        (
            "s3 with one slash",
            conf(&format!("destinationPath: s3:/bucket\n{S3_KEYS}")),
            "spec.configuration.destinationPath",
            "\"s3:/bucket\" is not a valid URL; expected s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or an Azure blob URL",
        ),
        (
            "unsupported scheme",
            conf(&format!("destinationPath: ftp://host/x\n{S3_KEYS}")),
            "spec.configuration.destinationPath",
            "has an unsupported scheme",
        ),
        (
            "destinationPath is a number",
            conf(&format!("destinationPath: 42\n{S3_KEYS}")),
            "spec.configuration.destinationPath",
            "\"42\" is a number",
        ),
        (
            "placeholder left in",
            conf(
                "destinationPath: gs://<bucket>/<folder>\ngoogleCredentials: {gkeEnvironment: true}\n",
            ),
            "spec.configuration.destinationPath",
            "has an invalid bucket name",
        ),
        (
            "s3 bucket name AWS would refuse",
            conf(&format!("destinationPath: s3://pg..backups/pg\n{S3_KEYS}")),
            "spec.configuration.destinationPath",
            "\"s3://pg..backups/pg\" has an invalid bucket name \"pg..backups\" (it has two adjacent dots); expected an S3 bucket name: 3-63 lowercase letters",
        ),
        (
            "azure URL without container",
            azure("  inheritFromAzureAD: true\n").replace("/cont/pg", "/"),
            "spec.configuration.destinationPath",
            "has no container",
        ),
        (
            "relative file path",
            conf("destinationPath: file://var/lib/wal\n"),
            "spec.configuration.destinationPath",
            "has a host",
        ),
        // --- unknown fields ---
        (
            "s3Credential",
            conf("destinationPath: s3://bkt\ns3Credential: {inheritFromIAMRole: true}\n"),
            "spec.configuration.s3Credential",
            "spec.configuration.s3Credential: unknown field; expected one of destinationPath, endpointURL",
        ),
        (
            "s3Credential suggestion",
            conf("destinationPath: s3://bkt\ns3Credential: {inheritFromIAMRole: true}\n"),
            "spec.configuration.s3Credential",
            "(did you mean \"s3Credentials\"?)",
        ),
        (
            "IAM case",
            conf("destinationPath: s3://bkt\ns3Credentials:\n  inheritFromIamRole: true\n"),
            "spec.configuration.s3Credentials.inheritFromIamRole",
            "(did you mean \"inheritFromIAMRole\"?)",
        ),
        (
            "field at the wrong level",
            conf("destinationPath: https://a.blob.core.windows.net/c\ninheritFromAzureAD: true\n"),
            "spec.configuration.inheritFromAzureAD",
            "belongs at spec.configuration.azureCredentials.inheritFromAzureAD",
        ),
        (
            "maxParalel",
            s3("wal:\n  maxParalel: 4\n"),
            "spec.configuration.wal.maxParalel",
            "(did you mean \"maxParallel\"?)",
        ),
        // --- types and ranges ---
        (
            "maxParallel abc",
            s3("wal:\n  maxParallel: abc\n"),
            "spec.configuration.wal.maxParallel",
            "\"abc\" is a string; expected an integer of at least 1",
        ),
        (
            "maxParallel quoted number",
            s3("wal:\n  maxParallel: \"8\"\n"),
            "spec.configuration.wal.maxParallel",
            "\"8\" is a string",
        ),
        (
            "maxParallel zero",
            s3("wal:\n  maxParallel: 0\n"),
            "spec.configuration.wal.maxParallel",
            "\"0\" is too small; expected an integer of at least 1",
        ),
        (
            "maxParallel negative",
            s3("wal:\n  maxParallel: -2\n"),
            "spec.configuration.wal.maxParallel",
            "is negative",
        ),
        (
            "maxParallel fraction",
            s3("wal:\n  maxParallel: 1.5\n"),
            "spec.configuration.wal.maxParallel",
            "is not a whole number",
        ),
        (
            "maxParallel huge",
            s3("wal:\n  maxParallel: 99999999999\n"),
            "spec.configuration.wal.maxParallel",
            "is too large",
        ),
        (
            "maxParallel leading zero",
            s3("wal:\n  maxParallel: 010\n"),
            "spec.configuration.wal.maxParallel",
            "\"010\" is a string",
        ),
        (
            "jobs zero",
            s3("data:\n  jobs: 0\n"),
            "spec.configuration.data.jobs",
            "is too small",
        ),
        (
            "wal compression typo",
            s3("wal:\n  compression: gzipp\n"),
            "spec.configuration.wal.compression",
            "\"gzipp\" is not a supported WAL compression; expected one of bzip2, gzip, lz4, snappy, xz, zstd (did you mean \"gzip\"?)",
        ),
        (
            "xz for data",
            s3("data:\n  compression: xz\n"),
            "spec.configuration.data.compression",
            "\"xz\" is not a supported base backup compression; expected one of bzip2, gzip, lz4, snappy",
        ),
        (
            "encryption case",
            s3("wal:\n  encryption: aes256\n"),
            "spec.configuration.wal.encryption",
            "(did you mean \"AES256\"?)",
        ),
        (
            "bool as string",
            conf("destinationPath: s3://bkt\ns3Credentials:\n  inheritFromIAMRole: \"true\"\n"),
            "spec.configuration.s3Credentials.inheritFromIAMRole",
            "\"true\" is a string; expected true or false",
        ),
        (
            "args not a list",
            s3("wal:\n  archiveAdditionalCommandArgs: --read-timeout=60\n"),
            "spec.configuration.wal.archiveAdditionalCommandArgs",
            "is a string; expected a list of strings",
        ),
        (
            "tag value is a number",
            s3("tags:\n  version: 1.5\n"),
            "spec.configuration.tags.version",
            "is a number; expected a string (put the value in quotes)",
        ),
        (
            "tag key with dots",
            s3("tags:\n  cnpg.io/owner: 3\n"),
            "spec.configuration.tags[\"cnpg.io/owner\"]",
            "is a number",
        ),
        (
            "secret ref as string",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  accessKeyId: aws-creds\n  secretAccessKey: {name: aws-creds, key: K}\n",
            ),
            "spec.configuration.s3Credentials.accessKeyId",
            "\"aws-creds\" is a string; expected a mapping",
        ),
        (
            "secret ref without key",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  accessKeyId: {name: aws-creds}\n  secretAccessKey: {name: aws-creds, key: K}\n",
            ),
            "spec.configuration.s3Credentials.accessKeyId.key",
            "is missing; expected the key inside the Secret",
        ),
        (
            "secret name with slash",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  accessKeyId: {name: ../etc, key: K}\n  secretAccessKey: {name: aws-creds, key: K}\n",
            ),
            "spec.configuration.s3Credentials.accessKeyId.name",
            "\"../etc\" contains '/'",
        ),
        (
            "endpointCA key with dots",
            s3("endpointCA: {name: ca, key: ..data}\n"),
            "spec.configuration.endpointCA.key",
            "contains '..'",
        ),
        (
            "endpointURL without scheme",
            s3("endpointURL: minio:9000\n"),
            "spec.configuration.endpointURL",
            "\"minio:9000\" is not a valid endpoint URL; expected http(s)://HOST[:PORT][/PATH]",
        ),
        (
            "serverName with slash",
            s3("serverName: a/b\n"),
            "spec.configuration.serverName",
            "\"a/b\" contains '/'",
        ),
        // --- S3 credential rules ---
        (
            "IAM role plus static keys",
            s3("").replace(
                "s3Credentials:\n",
                "s3Credentials:\n      inheritFromIAMRole: true\n",
            ),
            "spec.configuration.s3Credentials.inheritFromIAMRole",
            "\"true\" conflicts with accessKeyId and secretAccessKey",
        ),
        (
            "accessKeyId alone",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  accessKeyId: {name: aws-creds, key: ID}\n",
            ),
            "spec.configuration.s3Credentials.secretAccessKey",
            "is missing (accessKeyId is set); expected both accessKeyId and secretAccessKey",
        ),
        (
            "secretAccessKey alone",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  secretAccessKey: {name: aws-creds, key: K}\n",
            ),
            "spec.configuration.s3Credentials.accessKeyId",
            "is missing (secretAccessKey is set)",
        ),
        (
            "empty s3Credentials",
            conf("destinationPath: s3://bkt\ns3Credentials: {}\n"),
            "spec.configuration.s3Credentials",
            "sets no authentication method; expected accessKeyId and secretAccessKey, or inheritFromIAMRole: true",
        ),
        (
            "region only",
            conf(
                "destinationPath: s3://bkt\ns3Credentials:\n  region: {name: aws-creds, key: REGION}\n",
            ),
            "spec.configuration.s3Credentials",
            "sets no authentication method",
        ),
        // --- Azure credential rules ---
        (
            "connection string and storage account",
            azure(
                "  connectionString: {name: azure-creds, key: AZURE_CONNECTION_STRING}\n  storageAccount: {name: azure-creds, key: AZURE_STORAGE_ACCOUNT}\n",
            ),
            "spec.configuration.azureCredentials.storageAccount",
            "storageAccount: conflicts with connectionString",
        ),
        (
            "connection string and AD",
            azure("  connectionString: {name: azure-creds, key: CS}\n  inheritFromAzureAD: true\n"),
            "spec.configuration.azureCredentials.inheritFromAzureAD",
            "conflicts with connectionString",
        ),
        (
            "storage account alone",
            azure("  storageAccount: {name: azure-creds, key: AZURE_STORAGE_ACCOUNT}\n"),
            "spec.configuration.azureCredentials",
            "sets no authentication method; expected connectionString, storageAccount with storageKey or storageSasToken",
        ),
        (
            "storage key without account",
            azure("  storageKey: {name: azure-creds, key: AZURE_STORAGE_KEY}\n"),
            "spec.configuration.azureCredentials.storageAccount",
            "is missing (storageKey is set)",
        ),
        (
            "key and SAS",
            azure(
                "  storageAccount: {name: a, key: A}\n  storageKey: {name: a, key: K}\n  storageSasToken: {name: a, key: S}\n",
            ),
            "spec.configuration.azureCredentials.storageSasToken",
            "storageSasToken: conflicts with storageKey; expected exactly one of",
        ),
        (
            "AD and default credentials",
            azure("  inheritFromAzureAD: true\n  useDefaultAzureCredentials: true\n"),
            "spec.configuration.azureCredentials.useDefaultAzureCredentials",
            "conflicts with inheritFromAzureAD",
        ),
        // --- Google credential rules ---
        (
            "GKE and key",
            google(
                "  gkeEnvironment: true\n  applicationCredentials: {name: backup-creds, key: gcsCredentials}\n",
            ),
            "spec.configuration.googleCredentials.applicationCredentials",
            "conflicts with gkeEnvironment: true",
        ),
        (
            "empty googleCredentials",
            google("  gkeEnvironment: false\n"),
            "spec.configuration.googleCredentials",
            "sets no authentication method; expected applicationCredentials or gkeEnvironment: true",
        ),
        // --- credentials vs destination ---
        (
            "s3 without credentials",
            conf("destinationPath: s3://bkt\n"),
            "spec.configuration.s3Credentials",
            "is missing (destinationPath is \"s3://bkt\"); expected s3Credentials for an s3:// destination",
        ),
        (
            "two credential blocks",
            s3("googleCredentials: {gkeEnvironment: true}\n"),
            "spec.configuration.googleCredentials",
            "does not fit destinationPath \"s3://bucket/prefix\"; expected s3Credentials for an s3:// destination",
        ),
        (
            "gs with s3 credentials",
            conf(&format!("destinationPath: gs://bucket\n{S3_KEYS}")),
            "spec.configuration.googleCredentials",
            "is missing",
        ),
        (
            "file with credentials",
            conf(&format!("destinationPath: file:///srv/wal\n{S3_KEYS}")),
            "spec.configuration.s3Credentials",
            "expected no credentials for a file:// destination",
        ),
        (
            "azure with google credentials",
            conf(
                "destinationPath: https://a.blob.core.windows.net/c\ngoogleCredentials: {gkeEnvironment: true}\n",
            ),
            "spec.configuration.azureCredentials",
            "expected azureCredentials for an Azure destination",
        ),
        // --- spec level ---
        (
            "retention with words",
            header(&format!(
                "spec:\n  retentionPolicy: 30 days\n{}",
                &s3("")[s3("").find("  configuration").unwrap()..]
            )),
            "spec.retentionPolicy",
            "\"30 days\" is not a valid retention policy; expected a number of days, weeks or months",
        ),
        (
            "retention zero",
            header(&format!(
                "spec:\n  retentionPolicy: 0d\n{}",
                &s3("")[s3("").find("  configuration").unwrap()..]
            )),
            "spec.retentionPolicy",
            "is not a valid retention policy",
        ),
        (
            "sidecar log level",
            header(&format!(
                "spec:\n  instanceSidecarConfiguration:\n    logLevel: verbose\n{}",
                &s3("")[s3("").find("  configuration").unwrap()..]
            )),
            "spec.instanceSidecarConfiguration.logLevel",
            "\"verbose\" is not a supported log level; expected one of error, warning, info, debug, trace",
        ),
        (
            "sidecar --log-level arg",
            header(&format!(
                "spec:\n  instanceSidecarConfiguration:\n    additionalContainerArgs: [--log-level=debug]\n{}",
                &s3("")[s3("").find("  configuration").unwrap()..]
            )),
            "spec.instanceSidecarConfiguration.additionalContainerArgs[0]",
            "sets the log level; expected spec.instanceSidecarConfiguration.logLevel instead",
        ),
        (
            "sidecar interval as duration",
            header(&format!(
                "spec:\n  instanceSidecarConfiguration:\n    retentionPolicyIntervalSeconds: 1h\n{}",
                &s3("")[s3("").find("  configuration").unwrap()..]
            )),
            "spec.instanceSidecarConfiguration.retentionPolicyIntervalSeconds",
            "\"1h\" is a string",
        ),
    ]
}

#[test]
fn broken_documents() {
    let cases = corpus();
    assert!(cases.len() >= 35, "{}", cases.len());
    let mut failures = Vec::new();
    for (name, yaml, path, fragment) in &cases {
        match parse(yaml) {
            Ok(_) => failures.push(format!("{name}: parsed OK")),
            Err(errs) => {
                let hit = errs
                    .iter()
                    .any(|e| e.path == *path && e.to_string().contains(fragment));
                if !hit {
                    failures.push(format!(
                        "{name}: want {path} containing {fragment:?}; got:\n  {}",
                        errs.to_string().replace('\n', "\n  ")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = header(
        "spec:\n  retentionPolicy: 1y\n  configuration:\n    destinationPath: s3:/b\n    wal:\n      maxParallel: abc\n      compresion: gzip\n    s3Credentials:\n      accessKeyId: {name: a, key: b}\n",
    );
    let errs = parse(&yaml).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.configuration.wal.compresion",
            "spec.configuration.wal.maxParallel",
            "spec.retentionPolicy",
            "spec.configuration.destinationPath",
            "spec.configuration.s3Credentials.secretAccessKey",
        ],
        "{errs}"
    );
    // One per line.
    assert_eq!(errs.to_string().lines().count(), 5);
}

#[test]
fn nulls_and_kubectl_metadata_are_accepted() {
    let yaml = format!(
        "{}status:\n  serverRecoveryWindow: {{}}\n",
        s3("wal:\ndata: ~\ntags:\n").replace(
            "  name: store\n",
            "  name: store\n  namespace: db\n  uid: 1234\n  resourceVersion: \"99\"\n  generation: 3\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n  labels: {app: pg}\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: \"{}\"\n  managedFields: []\n"
        )
    );
    let store = parse(&yaml).unwrap();
    assert_eq!(store.metadata.namespace.as_deref(), Some("db"));
    assert_eq!(store.metadata.labels["app"], "pg");
    assert!(store.spec.configuration.wal.is_none());
    assert_eq!(store.spec.configuration.wal_max_parallel(), 1);
}

/// What `kubectl get -o yaml` can emit for a heavily annotated object: many
/// annotations, a multi-MB last-applied-configuration, and a long
/// managedFields list. Several MB and far more than 250 000 YAML nodes.
fn large_manifest() -> String {
    let mut meta = String::from("  name: store\n  annotations:\n");
    for i in 0..50_000 {
        meta.push_str(&format!(
            "    example.com/note-{i}: \"annotation number {i}\"\n"
        ));
    }
    let applied = format!(
        "{{\"apiVersion\":\"barmancloud.cnpg.io/v1\",\"kind\":\"ObjectStore\",\"notes\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    meta.push_str(&format!(
        "    kubectl.kubernetes.io/last-applied-configuration: '{applied}'\n"
    ));
    meta.push_str("  managedFields:\n");
    for i in 0..10_000 {
        meta.push_str(&format!(
            "  - manager: controller-{i}\n    operation: Update\n    apiVersion: barmancloud.cnpg.io/v1\n    time: \"2026-01-01T00:00:00Z\"\n    fieldsType: FieldsV1\n    fieldsV1:\n      f:metadata:\n        f:annotations:\n          .: {{}}\n          f:example.com/note-{i}: {{}}\n"
        ));
    }
    s3("").replace("  name: store\n", &meta)
}

#[test]
fn a_manifest_of_several_megabytes_with_many_nodes_loads() {
    let yaml = large_manifest();
    assert!(yaml.len() > 6 << 20, "{} bytes", yaml.len());
    let store = parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.metadata.annotations.len(), 50_001);
    assert_eq!(
        store.metadata.annotations["example.com/note-49999"],
        "annotation number 49999"
    );
    assert!(
        store.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"].len()
            > 3 << 20
    );
}

/// `doc` with "billion laughs" appended: ten levels of ten aliases each,
/// which would expand to 10^10 scalars.
fn alias_bomb(doc: &str) -> String {
    let mut bomb =
        format!("{doc}status:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = format!("*l{}", i - 1);
        let refs = [p.as_str(); 10].join(", ");
        bomb.push_str(&format!("  l{i}: &l{i} [{refs}]\n"));
    }
    bomb
}

#[test]
fn an_alias_bomb_is_refused_quickly_saying_what_was_refused() {
    for (what, doc) in [("small", s3("")), ("large", large_manifest())] {
        let start = std::time::Instant::now();
        let errs = parse(&alias_bomb(&doc)).expect_err(what);
        // Expanding it would take minutes and gigabytes; refusing it, well
        // under a second (a debug build on a busy machine gets ten).
        assert!(
            start.elapsed().as_secs() < 10,
            "{what}: {:?}",
            start.elapsed()
        );
        assert_eq!(errs.len(), 1, "{what}: {errs}");
        let e = &errs.errors()[0];
        assert!(e.path.starts_with("line "), "{what}: {e}");
        assert!(
            e.problem
                .starts_with("expands its aliases (*name) to more than 100000 YAML events"),
            "{what}: {e}"
        );
        assert!(e.expected.contains("alias"), "{what}: {e}");
    }
}

#[test]
fn aliases_that_reuse_a_block_are_expanded() {
    let store = parse(&s3(
        "tags: &tags {team: db, env: prod}\nhistoryTags: *tags\n",
    ))
    .unwrap();
    let c = &store.spec.configuration;
    assert_eq!(c.history_tags, c.tags);
    assert_eq!(c.history_tags["team"], "db");
}

#[test]
fn full_document_round_trips_into_the_model() {
    let yaml = header(
        "spec:
  retentionPolicy: 30d
  instanceSidecarConfiguration:
    env:
      - name: AWS_REQUEST_CHECKSUM_CALCULATION
        value: when_required
    resources:
      requests: {memory: 64Mi}
    retentionPolicyIntervalSeconds: 600
    logLevel: debug
  configuration:
    destinationPath: s3://bucket/a/b/
    endpointURL: https://minio.local:9000
    endpointCA: {name: ca, key: ca.crt}
    serverName: cluster-1
    s3Credentials:
      accessKeyId: {name: c, key: ID}
      secretAccessKey: {name: c, key: SECRET}
      sessionToken: {name: c, key: TOKEN}
      region: {name: c, key: REGION}
    wal:
      compression: zstd
      encryption: aws:kms
      maxParallel: 8
      archiveAdditionalCommandArgs: [--read-timeout=60]
      restoreAdditionalCommandArgs: []
    data:
      compression: snappy
      encryption: AES256
      immediateCheckpoint: true
      jobs: 4
      additionalCommandArgs: [--min-chunk-size=5MB]
    tags: {backupRetentionPolicy: expire}
    historyTags: {retention: forever}
",
    );
    let store = parse(&yaml).unwrap();
    let c = &store.spec.configuration;
    assert_eq!(
        store.destination(),
        &Destination::S3 {
            bucket: "bucket".into(),
            prefix: "a/b".into()
        }
    );
    let wal = c.wal.as_ref().unwrap();
    assert_eq!(wal.max_parallel(), 8);
    assert_eq!(wal.compression(), Some(Compression::Zstd));
    assert_eq!(wal.compression().unwrap().as_str(), "zstd");
    assert_eq!(wal.encryption.unwrap().as_str(), "aws:kms");
    let data = c.data.as_ref().unwrap();
    assert_eq!(data.compression, Some(Compression::Snappy));
    assert_eq!(data.encryption, Some(Encryption::Aes256));
    assert_eq!(data.jobs, Some(4));
    assert!(data.immediate_checkpoint);
    assert_eq!(c.endpoint_ca, Some(SecretRef::new("ca", "ca.crt")));
    assert_eq!(
        c.s3_credentials.as_ref().unwrap().region,
        Some(SecretRef::new("c", "REGION"))
    );
    assert_eq!(c.history_tags["retention"], "forever");
    assert_eq!(
        store.spec.retention_policy(),
        Some(RetentionPolicy {
            count: 30,
            unit: RetentionUnit::Days
        })
    );
    let sidecar = store.spec.instance_sidecar_configuration.as_ref().unwrap();
    assert_eq!(sidecar.retention_policy_interval_seconds(), 600);
    assert_eq!(sidecar.log_level.as_deref(), Some("debug"));
    assert_eq!(sidecar.env.len(), 1);
    assert_eq!(store.server_name(None).unwrap(), "cluster-1");
    assert_eq!(store.server_name(Some("other")).unwrap(), "other");
}

#[test]
fn empty_enum_strings_mean_unset() {
    let store = parse(&s3("wal:\n  compression: \"\"\n  encryption: \"\"\n")).unwrap();
    assert_eq!(store.spec.configuration.wal_compression(), None);
}

#[test]
fn server_name_rules() {
    let mut store = parse(&s3("")).unwrap().into_document();
    assert_eq!(store.server_name(None).unwrap(), store.metadata.name);
    store.metadata.name.clear();
    let e = store.server_name(None).unwrap_err();
    assert_eq!(e.path, "spec.configuration.serverName");
    assert!(e.to_string().contains("--server-name"), "{e}");
    assert_eq!(store.server_name(Some("pg-main")).unwrap(), "pg-main");
    for bad in ["", "a/b", "..", "."] {
        let e = store.server_name(Some(bad)).unwrap_err();
        assert_eq!(e.path, "--server-name", "{bad}");
    }
}

#[test]
fn retention_policy_parsing() {
    for (s, want) in [
        ("1d", Some((1, RetentionUnit::Days))),
        ("12w", Some((12, RetentionUnit::Weeks))),
        ("6m", Some((6, RetentionUnit::Months))),
        ("0d", None),
        ("01d", None),
        ("d", None),
        ("30", None),
        ("30y", None),
        ("-1d", None),
        ("", None),
        ("99999999999d", None),
    ] {
        assert_eq!(
            RetentionPolicy::parse(s).map(|p| (p.count, p.unit)),
            want,
            "{s}"
        );
    }
}

#[test]
fn load_reads_files_and_names_unreadable_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("store.yaml");
    std::fs::write(&good, s3("")).unwrap();
    assert_eq!(load(&good).unwrap().metadata.name, "store");

    let missing = tmp.path().join("nope.yaml");
    let errs = load(&missing).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors()[0].path, missing.display().to_string());
    assert!(errs.to_string().contains("cannot be read"), "{errs}");
}

#[test]
fn config_errors_is_an_error() {
    fn takes(_: &dyn std::error::Error) {}
    let errs = parse("").unwrap_err();
    takes(&errs);
    takes(&errs.errors()[0]);
}

/// Every corpus message, as users see them, kept in `testdata/errors.golden`
/// so wording changes show up in review. Regenerate with
/// `WALSHIP_BLESS=1 cargo test -p walship-config golden`.
#[test]
fn golden_error_messages() {
    let mut out = String::new();
    for (name, yaml, _, _) in corpus() {
        out.push_str(&format!("## {name}\n"));
        match parse(&yaml) {
            Ok(_) => out.push_str("(parsed OK)\n"),
            Err(errs) => {
                out.push_str(&errs.to_string());
                out.push('\n');
            }
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/errors.golden");
    if std::env::var_os("WALSHIP_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == out,
        "error messages changed; review and bless with WALSHIP_BLESS=1:\n{out}"
    );
}

#[test]
fn serialized_model_parses_back_to_the_same_model() {
    let yaml = header(
        "spec:\n  retentionPolicy: 4w\n  configuration:\n    destinationPath: https://a.blob.core.windows.net/c/p\n    azureCredentials:\n      storageAccount: {name: az, key: ACCOUNT}\n      storageSasToken: {name: az, key: SAS}\n    wal: {compression: lz4, maxParallel: 2}\n",
    );
    let store = parse(&yaml).unwrap();
    // JSON is YAML: what the model writes, parse reads.
    let json = serde_json::to_string(&*store).unwrap();
    assert_eq!(parse(&json).unwrap(), store);
    assert!(!json.contains("inheritFromAzureAD"), "{json}");
}

#[test]
fn float_integers_are_checked_too() {
    let errs = parse(&s3("wal:\n  maxParallel: 1.0e20\n")).unwrap_err();
    assert!(errs.to_string().contains("is too large"), "{errs}");
    let store = parse(&s3("wal:\n  maxParallel: 4.0\n")).unwrap();
    assert_eq!(store.spec.configuration.wal_max_parallel(), 4);
}

#[test]
fn the_azure_encryption_scope_comes_from_barman_cloud_s_own_argument() {
    let scope = |wal: &str| {
        parse(&azure(&format!("  inheritFromAzureAD: true\nwal:\n{wal}")))
            .unwrap()
            .spec
            .configuration
            .wal_encryption_scope()
    };
    assert_eq!(
        scope("  archiveAdditionalCommandArgs: [\"--encryption-scope\", \"walscope\"]\n"),
        Some("walscope".to_owned())
    );
    assert_eq!(
        scope(
            "  archiveAdditionalCommandArgs: [\"--min-chunk-size=5\", \"--encryption-scope=b\"]\n"
        ),
        Some("b".to_owned())
    );
    assert_eq!(
        scope("  archiveAdditionalCommandArgs: [\"--encryption-scope\"]\n"),
        None
    );
    assert_eq!(scope("  compression: gzip\n"), None);
}
