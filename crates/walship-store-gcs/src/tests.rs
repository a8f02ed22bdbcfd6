use super::*;
use walship_secret::Secret;

fn kind(err: &StoreError) -> String {
    format!("{:?}", err.kind())
}

fn gcs_error(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message,
        "errors": [{"domain": "global", "reason": reason, "message": message}]}})
    .to_string()
}

#[test]
fn http_errors_map_onto_the_store_errors() {
    let table: &[(Request, u16, &str, &str, &str)] = &[
        (
            Request::Create,
            412,
            "conditionNotMet",
            "At least one of the pre-conditions you specified did not hold.",
            "AlreadyExists",
        ),
        (
            Request::Create,
            404,
            "notFound",
            "The specified bucket does not exist.",
            "ContainerMissing",
        ),
        (Request::Create, 404, "", "", "ContainerMissing"),
        (
            Request::Read,
            404,
            "notFound",
            "No such object: b/k",
            "NotFound",
        ),
        (
            Request::Read,
            404,
            "notFound",
            "The specified bucket does not exist.",
            "ContainerMissing",
        ),
        (Request::Read, 412, "conditionNotMet", "", "Rejected"),
        (
            Request::Create,
            401,
            "required",
            "Anonymous caller does not have storage.objects.create access",
            "Denied",
        ),
        (
            Request::Read,
            403,
            "forbidden",
            "caller does not have storage.objects.get access",
            "Denied",
        ),
        (Request::Create, 429, "rateLimitExceeded", "", "Throttled"),
        (Request::Read, 408, "", "", "Server"),
        (Request::Read, 500, "backendError", "", "Server"),
        (Request::Create, 503, "", "", "Server"),
        (
            Request::Create,
            400,
            "invalid",
            "Invalid argument.",
            "Rejected",
        ),
    ];
    for (op, status, reason, message, expected) in table {
        let err = classify(
            "gs://b",
            "k",
            "call",
            *op,
            *status,
            &gcs_error(*status, reason, message),
        );
        assert_eq!(kind(&err), *expected, "{op:?} {status} {reason}: {err}");
    }
    // A body that is not JSON (a proxy's HTML page) still classifies by status.
    let err = classify(
        "gs://b",
        "k",
        "call",
        Request::Read,
        502,
        "<html>bad gateway</html>",
    );
    assert_eq!(kind(&err), "Server", "{err}");
}

#[test]
fn already_exists_names_the_key_and_the_store() {
    let err = classify(
        "gs://wal-bucket",
        "pg/wals/0000000100000000/000000010000000000000001",
        "multipart upload",
        Request::Create,
        412,
        &gcs_error(412, "conditionNotMet", "precondition"),
    );
    let text = err.to_string();
    assert!(text.contains("000000010000000000000001"), "{text}");
    assert!(text.contains("gs://wal-bucket"), "{text}");
}

#[test]
fn object_names_are_one_escaped_path_segment() {
    let store = GcsStore::with_env(
        GcsStoreConfig {
            bucket: "bkt".into(),
            endpoint_url: Some("http://127.0.0.1:9/".into()),
            auth: GoogleCredentialSource::GkeWorkloadIdentity,
            ca_bundle: None,
            retry: walship_store::RetryPolicy::default(),
        },
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        store.object_url("pg/wals/0000000100000000/x y+z.gz"),
        "http://127.0.0.1:9/storage/v1/b/bkt/o/pg%2Fwals%2F0000000100000000%2Fx%20y%2Bz.gz"
    );
    assert_eq!(store.describe(), "gs://bkt at http://127.0.0.1:9");
}

#[test]
fn the_endpoint_is_endpoint_url_then_the_emulator_host_then_google() {
    let emulator =
        |name: &str| (name == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:4443".to_owned());
    let none = |_: &str| None;
    assert_eq!(resolve_endpoint(None, &none).unwrap(), GOOGLE_ENDPOINT);
    assert_eq!(
        resolve_endpoint(None, &emulator).unwrap(),
        "http://127.0.0.1:4443"
    );
    let with_scheme = |_: &str| Some("https://gcs.local:8443/".to_owned());
    assert_eq!(
        resolve_endpoint(None, &with_scheme).unwrap(),
        "https://gcs.local:8443"
    );
    assert_eq!(
        resolve_endpoint(Some("http://10.0.0.1:9000"), &emulator).unwrap(),
        "http://10.0.0.1:9000"
    );
    let err = resolve_endpoint(Some("ftp://x"), &none)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("spec.configuration.endpointURL"), "{err}");
    let bad_env = |_: &str| Some("http://".to_owned());
    let err = resolve_endpoint(None, &bad_env).unwrap_err().to_string();
    assert!(err.starts_with("STORAGE_EMULATOR_HOST"), "{err}");
}

#[test]
fn bucket_names_are_checked() {
    for good in ["abc", "my-bucket_1", "a.b.c", "0wal"] {
        assert!(check_bucket_name(good).is_ok(), "{good}");
    }
    for bad in ["ab", "-abc", "abc-", "ABC", "a/b", "", &"x".repeat(64)] {
        let err = check_bucket_name(bad).unwrap_err().to_string();
        assert!(
            err.contains("destinationPath") && err.contains("bucket name"),
            "{err}"
        );
    }
}

async fn collect(parts: MultipartStream) -> Result<Vec<u8>, std::io::Error> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = parts.into_stream().try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::test]
async fn multipart_bodies_hold_the_resource_and_the_bytes() {
    let resource = serde_json::json!({"name": "k", "metadata": {"walship-sha256": "ab"}});
    let body = b"\x00\x01binary\r\n--not-a-boundary";
    let parts = MultipartStream::new(
        "gs://b",
        Bytes::from(serde_json::to_vec(&resource).unwrap()),
        UploadSource::from_bytes(Bytes::from_static(body)),
    );
    let boundary = parts.boundary.clone();
    let total = parts.total_len();
    let payload = collect(parts).await.unwrap();
    assert_eq!(payload.len() as u64, total);
    let text = String::from_utf8_lossy(&payload);
    let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert!(parts[1].contains("application/json") && parts[1].contains("walship-sha256"));
    assert!(parts[2].ends_with("\r\n"));
    let bytes_part = &payload[payload.len() - body.len() - boundary.len() - 8..];
    assert!(bytes_part.starts_with(body));
    assert_eq!(parts[3], "--\r\n");
}

#[tokio::test]
async fn a_body_that_contains_the_boundary_fails_the_attempt_even_across_two_chunks() {
    let parts = MultipartStream::new(
        "gs://b",
        Bytes::from_static(b"{}"),
        UploadSource::from_bytes(Bytes::new()),
    );
    let boundary = parts.boundary.clone();
    // The boundary straddles the edge between the first and the second chunk.
    let mut body = vec![0u8; STREAM_CHUNK - 5];
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(&[0u8; 100]);
    let mut parts = parts;
    parts.source = UploadSource::from_bytes(Bytes::from(body));
    let failure = parts.failure.clone();
    assert!(collect(parts).await.is_err());
    let err = take_failure(&failure).expect("the reason is kept");
    assert!(err.is_transient(), "another boundary may do: {err}");
}

#[test]
fn the_boundary_search_finds_every_position() {
    assert!(contains(b"abcabd", b"abd"));
    assert!(!contains(b"abcab", b"abd"));
    assert!(contains(b"x", b""));
}

#[test]
fn keys_never_show_in_debug_or_errors() {
    let secret = "-----BEGIN PRIVATE KEY-----\\nTOPSECRETMATERIAL\\n-----END PRIVATE KEY-----\\n";
    let auth = GoogleCredentialSource::ServiceAccountKey(Secret::new(format!(
        r#"{{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"{secret}","token_uri":"https://oauth2.googleapis.com/token"}}"#
    )));
    assert_eq!(format!("{auth:?}"), "ServiceAccountKey(Secret(<redacted>))");
    let err = GcsStore::with_env(
        GcsStoreConfig {
            bucket: "bkt".into(),
            endpoint_url: None,
            auth,
            ca_bundle: None,
            retry: walship_store::RetryPolicy::default(),
        },
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("applicationCredentials") && err.contains("private_key"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET"), "{err}");
}

#[test]
fn wrong_key_files_say_what_is_wrong() {
    let table: &[(&str, &str)] = &[
        ("not json at all TOPSECRET", "not valid JSON"),
        (
            "{\"type\": \"service_account\", \"private_key\": 5}",
            "not a JSON object of strings",
        ),
        (
            r#"{"type":"authorized_user","client_secret":"TOPSECRET"}"#,
            "\"authorized_user\"",
        ),
        (
            r#"{"type":"external_account"}"#,
            "expected \"service_account\"",
        ),
        (r#"{"client_email":"x"}"#, "no \"type\""),
        (
            r#"{"type":"service_account","client_email":"a@b","private_key":"TOPSECRET"}"#,
            "no \"token_uri\"",
        ),
        (
            r#"{"type":"service_account","private_key":"TOPSECRET","token_uri":"https://o"}"#,
            "no \"client_email\"",
        ),
        (
            r#"{"type":"service_account","client_email":"a@b","private_key":"TOPSECRET","token_uri":"file:///x"}"#,
            "not an http(s) URL",
        ),
    ];
    for (json, expected) in table {
        let err = match auth::provider(
            &GoogleCredentialSource::ServiceAccountKey(Secret::new((*json).to_owned())),
            reqwest::Client::new(),
            &|_| None,
        ) {
            Ok(_) => panic!("{json} was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.starts_with("spec.configuration.googleCredentials.applicationCredentials"),
            "{err}"
        );
        assert!(err.contains(expected), "{json}: {err}");
        assert!(!err.contains("TOPSECRET"), "{err}");
    }
}

#[test]
fn the_metadata_host_comes_from_gce_metadata_host() {
    let store = GcsStore::with_env(
        GcsStoreConfig {
            bucket: "bkt".into(),
            endpoint_url: None,
            auth: GoogleCredentialSource::GkeWorkloadIdentity,
            ca_bundle: None,
            retry: walship_store::RetryPolicy::default(),
        },
        &|name| (name == "GCE_METADATA_HOST").then(|| "bad host/x".to_owned()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        store.contains("gkeEnvironment") && store.contains("GCE_METADATA_HOST"),
        "{store}"
    );
}

/// Joins `parts` level by level as `complete` does; returns how many levels of
/// intermediate objects it took and the final compose's sources, each expanded into the
/// parts it holds.
fn join_all(parts: usize) -> (usize, Vec<String>, Vec<String>) {
    let names: Vec<String> = (0..parts).map(|i| format!("u/{i:05}")).collect();
    let mut holds: BTreeMap<String, Vec<String>> =
        names.iter().map(|n| (n.clone(), vec![n.clone()])).collect();
    let mut sources = names.clone();
    let mut level = 0;
    while sources.len() > MAX_COMPOSE_SOURCES {
        level += 1;
        let joins = join_level("u/", level, sources);
        for join in &joins {
            assert!(
                (1..=MAX_COMPOSE_SOURCES).contains(&join.sources.len()),
                "{join:?}"
            );
            if join.sources.len() > 1 {
                assert!(join.target.starts_with("u/join-"), "{join:?}");
                assert!(
                    !holds.contains_key(&join.target),
                    "{} is written twice",
                    join.target
                );
                let parts = join.sources.iter().flat_map(|s| holds[s].clone()).collect();
                holds.insert(join.target.clone(), parts);
            }
        }
        sources = joins.into_iter().map(|j| j.target).collect();
    }
    let expanded = sources.iter().flat_map(|s| holds[s].clone()).collect();
    (level, sources, expanded)
}

#[test]
fn more_than_32_parts_are_joined_in_a_tree_of_composes_of_at_most_32_in_order() {
    for (parts, levels, last) in [
        (1, 0, 1),
        (32, 0, 32),
        (33, 1, 2),
        (1024, 1, 32),
        (1025, 2, 2),
        (walship_store::MAX_PARTS, 2, 10),
    ] {
        let (level, sources, expanded) = join_all(parts);
        assert_eq!(level, levels, "{parts} parts");
        assert_eq!(sources.len(), last, "{parts} parts");
        let names: Vec<String> = (0..parts).map(|i| format!("u/{i:05}")).collect();
        assert_eq!(expanded, names, "{parts} parts are not joined in order");
    }
    // A group of one is not composed: its part goes up as it is.
    let (_, sources, _) = join_all(33);
    assert_eq!(sources, ["u/join-1-00000", "u/00032"]);
}

/// A stand-in for the GCS JSON API with what a multipart complete asks for (the object
/// resource, compose, listing the upload's temporary objects) and for the metadata
/// server's token; compose answers as `on_compose` says, given the number of the
/// attempt, the request's JSON and the objects. Stopped when dropped.
struct ComposeStub {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    composes: Arc<std::sync::Mutex<Vec<String>>>,
}

type Objects = BTreeMap<String, serde_json::Value>;

impl ComposeStub {
    fn start(
        on_compose: impl Fn(usize, &serde_json::Value, &mut Objects) -> u16 + Send + 'static,
    ) -> ComposeStub {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let composes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stopping, seen) = (stop.clone(), composes.clone());
        let thread = std::thread::spawn(move || {
            let mut objects = Objects::new();
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let object = path.strip_prefix("/storage/v1/b/bkt/o/");
                let (status, answer) = if path.ends_with("/default/token") {
                    (
                        200,
                        r#"{"access_token":"t","expires_in":3600,"token_type":"Bearer"}"#
                            .to_owned(),
                    )
                } else if let Some(name) = object.and_then(|o| o.strip_suffix("/compose")) {
                    let mut composes = seen.lock().unwrap();
                    composes.push(format!("{name}?{query}"));
                    let request = serde_json::from_slice(&body).unwrap();
                    let status = on_compose(composes.len(), &request, &mut objects);
                    (
                        status,
                        r#"{"error":{"code":0,"message":"stub","errors":[{"reason":"stub"}]}}"#
                            .to_owned(),
                    )
                } else if let Some(found) = object.and_then(|name| objects.get(name)) {
                    (200, found.to_string())
                } else if path == "/storage/v1/b/bkt/o" {
                    (200, r#"{"items":[]}"#.to_owned())
                } else {
                    (404, r#"{"error":{"code":404,"message":"No such object","errors":[{"reason":"notFound"}]}}"#.to_owned())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Metadata-Flavor: Google\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        ComposeStub {
            port,
            stop,
            thread: Some(thread),
            composes,
        }
    }

    fn store(&self) -> GcsStore {
        let host = format!("127.0.0.1:{}", self.port);
        GcsStore::with_env(
            GcsStoreConfig {
                bucket: "bkt".into(),
                endpoint_url: Some(format!("http://{host}")),
                auth: GoogleCredentialSource::GkeWorkloadIdentity,
                ca_bundle: None,
                retry: walship_store::RetryPolicy::default(),
            },
            &|name| (name == "GCE_METADATA_HOST").then(|| host.clone()),
        )
        .unwrap()
    }

    fn composes(&self) -> Vec<String> {
        self.composes.lock().unwrap().clone()
    }
}

impl Drop for ComposeStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The object a compose request would create, as its resource.
fn composed(request: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"name": "data.tar", "metadata": request["destination"]["metadata"]})
}

/// The compose created the object but its answer was lost (a 503 here); the policy
/// retries, GCS refuses the retry with 412 as the object exists, and the complete finds
/// its own nonce on the object: success, not a false AlreadyExists.
#[tokio::test]
async fn a_compose_that_succeeded_unseen_is_not_taken_for_another_writers_object() {
    let stub = ComposeStub::start(|attempt, request, objects| match attempt {
        1 => {
            objects.insert("data.tar".to_owned(), composed(request));
            503
        }
        _ => 412,
    });
    let upload = stub
        .store()
        .start_multipart("data.tar", &PutOptions::default())
        .await
        .unwrap();
    upload.complete(2).await.unwrap();
    let composes = stub.composes();
    assert_eq!(composes.len(), 2, "{composes:?}");
    assert!(
        composes.iter().all(|c| c.contains("ifGenerationMatch=0")),
        "{composes:?}"
    );
}

/// Another writer's object under the key refuses the compose (412): AlreadyExists.
#[tokio::test]
async fn a_compose_refused_for_another_writers_object_is_already_exists() {
    let stub = ComposeStub::start(|_, request, objects| {
        let mut other = composed(request);
        other["metadata"][UPLOAD_ID_METADATA] = "another upload".into();
        objects.insert("data.tar".to_owned(), other);
        412
    });
    let upload = stub
        .store()
        .start_multipart("data.tar", &PutOptions::default())
        .await
        .unwrap();
    let err = upload.complete(2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(stub.composes().len(), 1);
}
