//! The behaviour every [`Store`] must show, as one suite each backend runs against a
//! real server (the local directory, s3s-fs, moto, Azurite, fake-gcs-server), the way
//! object_store's `integration.rs` holds its backends to one contract.
//!
//! Built with the `conformance` feature, for the backends' tests only. Each check works
//! under its own fresh prefix, so the suite can run against a bucket other tests use,
//! and panics with a message that names the store and the check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{ErrorKind, Metadata, PutOptions, Store};

/// What the server behind a store guarantees, where test servers fall short of the
/// real service. Each shortfall skips one check, which then runs against another
/// server that has no such shortfall: no check goes unrun for a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Create-only puts are atomic: of concurrent creates of one key exactly one wins.
    Faithful,
    /// The server checks `If-None-Match: *` but not atomically (s3s-fs): the race check
    /// is skipped, and runs against a server that is atomic instead (moto).
    CreateOnlyNotAtomic,
    /// Create-only puts are atomic, but the call that completes a multipart upload
    /// does not decide a race atomically: moto checks `If-None-Match` on
    /// CompleteMultipartUpload but lets racing completes all win, and fake-gcs-server's
    /// compose ignores `ifGenerationMatch` altogether. The multipart race check is
    /// skipped; it runs against Azurite (and the local store), and the GCS store's
    /// own tests answer its compose with a 412. S3's atomic complete cannot be shown
    /// by any server the kit runs.
    MultipartCompleteNotAtomic,
}

/// Runs every check against `store`. `scratch` is a local directory for the files of
/// streamed puts.
pub async fn run(store: Arc<dyn Store>, server: Server, scratch: &std::path::Path) {
    let base = format!("conformance-{}/", nonce());
    create_only_put_never_overwrites(&*store, &format!("{base}create/")).await;
    if server != Server::CreateOnlyNotAtomic {
        concurrent_creates_of_one_key_have_exactly_one_winner(
            store.clone(),
            &format!("{base}race/"),
        )
        .await;
    }
    if server == Server::Faithful {
        concurrent_multipart_completes_of_one_key_have_exactly_one_winner(
            store.clone(),
            &format!("{base}multipart-race/"),
        )
        .await;
    }
    a_missing_key_is_not_found(&*store, &format!("{base}missing/")).await;
    listing_returns_every_key_under_the_prefix_in_key_order(&*store, &format!("{base}list/")).await;
    metadata_round_trips_through_head_and_get(&*store, &format!("{base}meta/")).await;
    delete_is_idempotent(&*store, &format!("{base}delete/")).await;
    a_streamed_put_is_stored_verbatim(&*store, scratch, &format!("{base}stream/")).await;
    a_streamed_put_whose_bytes_differ_from_its_hash_is_refused_and_leaves_nothing(
        &*store,
        scratch,
        &format!("{base}badhash/"),
    )
    .await;
    a_replacing_put_replaces_bytes_and_metadata(&*store, &format!("{base}replace/")).await;
    a_range_read_returns_exactly_those_bytes(&*store, &format!("{base}range/")).await;
    a_multipart_upload_sent_out_of_order_joins_its_parts_in_order(
        store.clone(),
        &format!("{base}multipart/"),
    )
    .await;
    a_multipart_upload_onto_a_taken_key_fails_and_leaves_the_object(
        &*store,
        &format!("{base}multipart-taken/"),
    )
    .await;
    an_aborted_multipart_upload_leaves_nothing(&*store, &format!("{base}multipart-abort/")).await;
}

/// Bytes that are not all one value and repeat with no short period: part boundaries
/// in the wrong place show.
fn patterned(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A replacing put over an object leaves the new bytes and only the new metadata, and
/// creates the object when there is none.
pub async fn a_replacing_put_replaces_bytes_and_metadata(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}backup.info");
    store
        .put_replace(
            &key,
            Bytes::from_static(b"status=STARTED\n"),
            &with_metadata(&[("a", "1")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: a replacing put of a new key: {e}"));
    store
        .put_replace(
            &key,
            Bytes::from_static(b"status=DONE\n"),
            &with_metadata(&[("b", "2")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: a replacing put over an object: {e}"));
    let (body, info) = store.get(&key).await.expect("the replaced object");
    assert_eq!(
        &body[..],
        b"status=DONE\n",
        "{name}: the object was not replaced"
    );
    assert_eq!(
        info.metadata.get("b").map(String::as_str),
        Some("2"),
        "{name}"
    );
    assert_eq!(
        info.metadata.get("a"),
        None,
        "{name}: the old metadata stayed"
    );
}

/// Range reads return exactly the bytes asked for, a range past the end is cut at the
/// end, and a missing object is `NotFound`.
pub async fn a_range_read_returns_exactly_those_bytes(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}object");
    let body = patterned(100_000, 7);
    store
        .put_create(&key, Bytes::from(body.clone()), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: put: {e}"));
    for range in [
        0..1,
        0..100_000,
        12_345..67_890,
        99_999..100_000,
        90_000..200_000,
    ] {
        let got = store
            .get_range(&key, range.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: range {range:?}: {e}"));
        let end = (range.end as usize).min(body.len());
        assert_eq!(
            &got[..],
            &body[range.start as usize..end],
            "{name}: range {range:?}"
        );
    }
    let err = store
        .get_range(&format!("{prefix}missing"), 0..10)
        .await
        .expect_err("nothing was written");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");
}

/// Three parts (two of the minimum size and a short last one) sent at once, last first:
/// nothing is visible before the complete, and after it the object is the parts in
/// index order, with the upload's metadata.
pub async fn a_multipart_upload_sent_out_of_order_joins_its_parts_in_order(
    store: Arc<dyn Store>,
    prefix: &str,
) {
    let name = store.describe();
    let key = format!("{prefix}data.tar");
    let parts: Vec<Bytes> = [crate::MIN_PART_SIZE, crate::MIN_PART_SIZE, 1_234]
        .iter()
        .enumerate()
        .map(|(i, len)| Bytes::from(patterned(*len, i as u32 * 1_000_003)))
        .collect();
    let upload = store
        .start_multipart(&key, &with_metadata(&[("kind", "tar")]))
        .await
        .unwrap_or_else(|e| panic!("{name}: starting a multipart upload: {e}"));
    let sends: Vec<_> = parts
        .iter()
        .enumerate()
        .rev()
        .map(|(i, body)| {
            let (upload, body) = (upload.clone(), body.clone());
            tokio::spawn(async move { upload.put_part(i, body).await })
        })
        .collect();
    for send in sends {
        send.await
            .expect("the task ran")
            .unwrap_or_else(|e| panic!("{name}: a part: {e}"));
    }
    assert!(
        store.head(&key).await.expect("head").is_none(),
        "{name}: the object is visible before its upload completed"
    );
    upload
        .complete(parts.len())
        .await
        .unwrap_or_else(|e| panic!("{name}: completing the upload: {e}"));
    let (got, info) = store.get(&key).await.expect("the completed object");
    let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(got.len(), expected.len(), "{name}: length");
    assert!(
        got[..] == expected[..],
        "{name}: the parts were not joined in order"
    );
    assert_eq!(
        info.metadata.get("kind").map(String::as_str),
        Some("tar"),
        "{name}"
    );
    let listed = store.list(prefix).await.expect("list");
    assert_eq!(
        listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        [key.as_str()],
        "{name}: the upload left something besides its object"
    );
}

/// An object created under the key while a multipart upload ran wins: the complete
/// fails with `AlreadyExists` and the object keeps its bytes.
pub async fn a_multipart_upload_onto_a_taken_key_fails_and_leaves_the_object(
    store: &dyn Store,
    prefix: &str,
) {
    let name = store.describe();
    let key = format!("{prefix}data.tar");
    let upload = store
        .start_multipart(&key, &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: starting a multipart upload: {e}"));
    upload
        .put_part(0, Bytes::from(patterned(1_000, 1)))
        .await
        .unwrap_or_else(|e| panic!("{name}: a part: {e}"));
    store
        .put_create(
            &key,
            Bytes::from_static(b"the other writer"),
            &PutOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: the other writer's create: {e}"));
    let err = upload
        .complete(1)
        .await
        .expect_err("completing onto a taken key must fail");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{name}: {err}");
    let _ = upload.abort().await;
    let (body, _) = store.get(&key).await.expect("the other writer's object");
    assert_eq!(
        &body[..],
        b"the other writer",
        "{name}: the object was overwritten"
    );
}

/// An upload aborted after some parts leaves no object and nothing listed.
pub async fn an_aborted_multipart_upload_leaves_nothing(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}data.tar");
    let upload = store
        .start_multipart(&key, &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: starting a multipart upload: {e}"));
    upload
        .put_part(0, Bytes::from(patterned(crate::MIN_PART_SIZE, 3)))
        .await
        .unwrap_or_else(|e| panic!("{name}: a part: {e}"));
    upload
        .abort()
        .await
        .unwrap_or_else(|e| panic!("{name}: abort: {e}"));
    upload
        .abort()
        .await
        .unwrap_or_else(|e| panic!("{name}: a second abort: {e}"));
    assert!(
        store.head(&key).await.expect("head").is_none(),
        "{name}: an object appeared"
    );
    assert!(
        store.list(prefix).await.expect("list").is_empty(),
        "{name}: the aborted upload left objects"
    );
}

fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}

fn with_metadata(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions {
        metadata: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..PutOptions::default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A second create of a key fails with `AlreadyExists` and leaves the first object,
/// bytes and metadata, as it was.
pub async fn create_only_put_never_overwrites(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}object");
    let name = store.describe();
    store
        .put_create(
            &key,
            Bytes::from_static(b"first"),
            &with_metadata(&[("n", "1")]),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: the first create failed: {e}"));
    let err = store
        .put_create(
            &key,
            Bytes::from_static(b"second"),
            &with_metadata(&[("n", "2")]),
        )
        .await
        .expect_err("a second create of the same key must fail");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{name}: {err}");
    assert!(!err.is_transient(), "{name}: AlreadyExists is final");
    let (body, info) = store.get(&key).await.expect("the first object is readable");
    assert_eq!(&body[..], b"first", "{name}: the object was overwritten");
    assert_eq!(
        info.metadata.get("n").map(String::as_str),
        Some("1"),
        "{name}"
    );
}

/// Eight creates of one key at once: exactly one succeeds, the others get
/// `AlreadyExists`, and the stored object is the winner's.
pub async fn concurrent_creates_of_one_key_have_exactly_one_winner(
    store: Arc<dyn Store>,
    prefix: &str,
) {
    let key = format!("{prefix}contended");
    let name = store.describe();
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let body = Bytes::from(vec![i; 4096 + usize::from(i)]);
                (
                    i,
                    store.put_create(&key, body, &PutOptions::default()).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("the task ran") {
            (i, Ok(())) => winners.push(i),
            (_, Err(e)) if e.kind() == ErrorKind::AlreadyExists => {}
            (_, Err(e)) => panic!("{name}: a contended create failed otherwise: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{name}: winners {winners:?}");
    let (body, _) = store.get(&key).await.expect("the winner's object");
    let winner = winners[0];
    assert_eq!(
        body,
        Bytes::from(vec![winner; 4096 + usize::from(winner)]),
        "{name}: the stored object is not the winner's"
    );
}

/// Four multipart uploads of one key completed at once: exactly one succeeds, and the
/// object is the winner's. The check before the complete cannot decide this race; only
/// the store's own create-only complete can.
pub async fn concurrent_multipart_completes_of_one_key_have_exactly_one_winner(
    store: Arc<dyn Store>,
    prefix: &str,
) {
    let key = format!("{prefix}data.tar");
    let name = store.describe();
    let mut uploads = Vec::new();
    for i in 0..4u8 {
        let upload = store
            .start_multipart(&key, &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: starting upload {i}: {e}"));
        upload
            .put_part(0, Bytes::from(vec![i; 1000]))
            .await
            .unwrap_or_else(|e| panic!("{name}: the part of upload {i}: {e}"));
        uploads.push(upload);
    }
    let tasks: Vec<_> = uploads
        .iter()
        .enumerate()
        .map(|(i, upload)| {
            let upload = upload.clone();
            tokio::spawn(async move { (i as u8, upload.complete(1).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("the task ran") {
            (i, Ok(())) => winners.push(i),
            (_, Err(e)) if e.kind() == ErrorKind::AlreadyExists => {}
            (_, Err(e)) => panic!("{name}: a contended complete failed otherwise: {e}"),
        }
    }
    for upload in &uploads {
        let _ = upload.abort().await;
    }
    assert_eq!(winners.len(), 1, "{name}: winners {winners:?}");
    let (body, _) = store.get(&key).await.expect("the winner's object");
    assert_eq!(
        body,
        Bytes::from(vec![winners[0]; 1000]),
        "{name}: the stored object is not the winner's"
    );
}

/// Get of a missing key is `NotFound` (final), head is `None`.
pub async fn a_missing_key_is_not_found(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}never-written");
    let err = store.get(&key).await.expect_err("nothing was written");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");
    assert!(!err.is_transient(), "{name}: NotFound is final");
    assert!(
        store
            .head(&key)
            .await
            .expect("head of a missing key")
            .is_none(),
        "{name}"
    );
}

/// A listing holds every key under the prefix (several pages where the store was built
/// with a small page size), in key order, with sizes, and nothing from beside it.
pub async fn listing_returns_every_key_under_the_prefix_in_key_order(
    store: &dyn Store,
    prefix: &str,
) {
    let name = store.describe();
    // Written out of order, with a nested "directory" and a neighbour prefix that
    // shares the text but is not under `prefix/`.
    let keys = [
        "m", "a", "z/1", "b", "z/0", "c", "k", "d", "y", "e", "x", "f",
    ];
    for (i, k) in keys.iter().enumerate() {
        let body = Bytes::from(vec![b'x'; i + 1]);
        store
            .put_create(&format!("{prefix}in/{k}"), body, &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: put {k}: {e}"));
    }
    store
        .put_create(
            &format!("{prefix}inside"),
            Bytes::from_static(b"neighbour"),
            &PutOptions::default(),
        )
        .await
        .expect("put the neighbour");
    let listed = store
        .list(&format!("{prefix}in/"))
        .await
        .unwrap_or_else(|e| panic!("{name}: list: {e}"));
    let mut expected: Vec<(String, u64)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("{prefix}in/{k}"), i as u64 + 1))
        .collect();
    expected.sort();
    let got: Vec<(String, u64)> = listed.into_iter().map(|o| (o.key, o.size)).collect();
    assert_eq!(got, expected, "{name}: the listing");
}

/// User metadata (lower-case keys) comes back from head and from get.
pub async fn metadata_round_trips_through_head_and_get(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}with-metadata");
    let metadata: Metadata = BTreeMap::from([
        ("walship-sha256".to_owned(), sha256_hex(b"payload")),
        ("origin".to_owned(), "conformance-suite".to_owned()),
    ]);
    let options = PutOptions {
        metadata: metadata.clone(),
        ..PutOptions::default()
    };
    store
        .put_create(&key, Bytes::from_static(b"payload"), &options)
        .await
        .unwrap_or_else(|e| panic!("{name}: put: {e}"));
    let head = store.head(&key).await.expect("head").expect("the object");
    assert_eq!(head.metadata, metadata, "{name}: head");
    assert_eq!(head.size, 7, "{name}: head size");
    let (body, info) = store.get(&key).await.expect("get");
    assert_eq!(&body[..], b"payload", "{name}");
    assert_eq!(info.metadata, metadata, "{name}: get");
}

/// Delete removes the object; deleting it again, or a key never written, succeeds.
pub async fn delete_is_idempotent(store: &dyn Store, prefix: &str) {
    let name = store.describe();
    let key = format!("{prefix}doomed");
    store
        .put_create(&key, Bytes::from_static(b"x"), &PutOptions::default())
        .await
        .expect("put");
    store.delete(&key).await.expect("delete");
    assert!(store.head(&key).await.expect("head").is_none(), "{name}");
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("{name}: a second delete: {e}"));
    store
        .delete(&format!("{prefix}never-written"))
        .await
        .unwrap_or_else(|e| panic!("{name}: deleting a missing key: {e}"));
    // A deleted key can be created again.
    store
        .put_create(&key, Bytes::from_static(b"y"), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: create after delete: {e}"));
}

/// A file put with its SHA-256 declared is stored byte for byte, with its metadata.
pub async fn a_streamed_put_is_stored_verbatim(
    store: &dyn Store,
    scratch: &std::path::Path,
    prefix: &str,
) {
    let name = store.describe();
    // Not a multiple of any block or chunk size, and not all one byte.
    let body: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = scratch.join(format!("stream-{}", nonce()));
    std::fs::write(&path, &body).expect("write the scratch file");
    let hash = sha256_hex(&body);
    let options = PutOptions {
        metadata: BTreeMap::from([("walship-sha256".to_owned(), hash.clone())]),
        content_sha256: Some(hash.clone()),
        ..PutOptions::default()
    };
    let key = format!("{prefix}file");
    store
        .put_create_file(&key, &path, body.len() as u64, &options)
        .await
        .unwrap_or_else(|e| panic!("{name}: streamed put: {e}"));
    let (got, info) = store.get(&key).await.expect("get");
    assert_eq!(got.len(), body.len(), "{name}: length");
    assert_eq!(sha256_hex(&got), hash, "{name}: the bytes differ");
    assert_eq!(info.metadata.get("walship-sha256"), Some(&hash), "{name}");
    let _ = std::fs::remove_file(&path);
}

/// A file whose bytes do not match the SHA-256 the caller declared (it changed after
/// it was hashed) is refused, and nothing is left under the key.
pub async fn a_streamed_put_whose_bytes_differ_from_its_hash_is_refused_and_leaves_nothing(
    store: &dyn Store,
    scratch: &std::path::Path,
    prefix: &str,
) {
    let name = store.describe();
    let body = vec![7u8; 100_000];
    let path = scratch.join(format!("badhash-{}", nonce()));
    std::fs::write(&path, &body).expect("write the scratch file");
    let options = PutOptions {
        content_sha256: Some(sha256_hex(b"some other content")),
        ..PutOptions::default()
    };
    let key = format!("{prefix}file");
    let err = store
        .put_create_file(&key, &path, body.len() as u64, &options)
        .await
        .expect_err("a body that differs from its declared hash must be refused");
    // What matters is that nothing is stored. Whether the refusal is final depends on
    // the server: S3 answers 400 XAmzContentSHA256Mismatch, s3s-fs a 500.
    drop(err);
    assert!(
        store.head(&key).await.expect("head").is_none(),
        "{name}: the refused body was stored"
    );
    let _ = std::fs::remove_file(&path);
}

/// How much the process's peak resident memory may grow while it streams a file of
/// [`LARGE_FILE`] bytes: a few chunks or blocks in flight, never the file.
pub const MEMORY_BOUND: u64 = 40 << 20;
/// The size of the file [`a_large_streamed_put_does_not_hold_the_file_in_memory`] puts.
pub const LARGE_FILE: u64 = 96 << 20;

/// Streams a file of [`LARGE_FILE`] bytes and checks that the process's peak resident
/// memory grew by less than [`MEMORY_BOUND`]. Linux only (it resets and reads the peak
/// through `/proc/self`); run it in a test binary of its own, as other tests in the
/// same process would add their own peaks.
pub async fn a_large_streamed_put_does_not_hold_the_file_in_memory(
    store: &dyn Store,
    scratch: &std::path::Path,
    prefix: &str,
) {
    use sha2::Digest;
    use std::io::Write;
    let name = store.describe();
    let path = scratch.join(format!("large-{}", nonce()));
    let mut hasher = sha2::Sha256::new();
    {
        let mut file = std::fs::File::create(&path).expect("create the scratch file");
        let mut piece = vec![0u8; 1 << 20];
        for i in 0..LARGE_FILE >> 20 {
            for (j, b) in piece.iter_mut().enumerate() {
                *b = (j as u64 ^ i.wrapping_mul(0x9e37_79b9)) as u8;
            }
            hasher.update(&piece);
            file.write_all(&piece).expect("write the scratch file");
        }
    }
    let hash = hex::encode(hasher.finalize());
    let options = PutOptions {
        content_sha256: Some(hash),
        ..PutOptions::default()
    };
    let key = format!("{prefix}large");
    // Memory checks in one process run one at a time: each would see the other's peak.
    let _alone = MEMORY_CHECK.lock().await;
    // Writing 5 to clear_refs resets the peak resident set size (VmHWM) to the
    // current one.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = resident_kib("VmRSS:");
    store
        .put_create_file(&key, &path, LARGE_FILE, &options)
        .await
        .unwrap_or_else(|e| panic!("{name}: streamed put of {LARGE_FILE} bytes: {e}"));
    let peak = resident_kib("VmHWM:");
    let grown = peak.saturating_sub(before) << 10;
    let _ = std::fs::remove_file(&path);
    let info = store.head(&key).await.expect("head").expect("the object");
    assert_eq!(info.size, LARGE_FILE, "{name}");
    eprintln!(
        "{name}: peak resident memory grew by {} MiB while streaming {} MiB",
        grown >> 20,
        LARGE_FILE >> 20
    );
    assert!(
        grown < MEMORY_BOUND,
        "{name}: peak resident memory grew by {} MiB while streaming a {} MiB file (bound {} MiB)",
        grown >> 20,
        LARGE_FILE >> 20,
        MEMORY_BOUND >> 20
    );
}

static MEMORY_CHECK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `kB` line of `/proc/self/status`, in KiB.
fn resident_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}
