//! The encryption scope reaches every write request: Put Blob, and for a large body
//! every Put Block and the Put Block List. Azurite accepts the header but keeps no
//! scope, so a small local server that answers those three calls as the service does
//! (`201 Created`) records the requests instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use walship_credentials::AzureCredentialSource;
use walship_secret::Secret;
use walship_store::{PutOptions, Store};
use walship_store_azure::{AzureStore, AzureStoreConfig, BLOCK_UPLOAD_THRESHOLD};

/// Starts the recorder; returns its port and the request heads it has seen.
fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    // The thread ends with the test process.
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || answer(stream, &record));
        }
    });
    (port, seen)
}

/// Reads one request, records its head (before answering, so the client never sees an
/// answer to a request not yet recorded), and answers `201 Created`.
fn answer(stream: TcpStream, record: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    record.lock().unwrap().push(head);
    let mut stream = stream;
    stream.write_all(
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nx-ms-request-id: 8a3e7f1c-0000-4000-8000-000000000001\r\n\
          Date: Wed, 25 Nov 2026 20:20:00 GMT\r\nETag: \"0x1\"\r\n\
          Last-Modified: Wed, 25 Nov 2026 20:20:00 GMT\r\nx-ms-request-server-encrypted: true\r\n\
          Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg==\r\nConnection: close\r\n\r\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_carries_the_encryption_scope() {
    let (port, seen) = recorder();
    let store = AzureStore::new(AzureStoreConfig {
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        account: "devstoreaccount1".to_owned(),
        container: "walship".to_owned(),
        auth: AzureCredentialSource::SharedKey {
            account: "devstoreaccount1".to_owned(),
            key: Secret::new("a2V5".to_owned()),
        },
        encryption_scope: Some("walscope".to_owned()),
        ca_bundle: None,
        retry: walship_store::RetryPolicy::default(),
    })
    .unwrap();
    let options = PutOptions::default();
    store
        .put_create("small", Bytes::from_static(b"wal"), &options)
        .await
        .unwrap();
    store
        .put_create(
            "large",
            Bytes::from(vec![7u8; BLOCK_UPLOAD_THRESHOLD + 1]),
            &options,
        )
        .await
        .unwrap();
    let heads = seen.lock().unwrap().clone();
    let puts: Vec<&String> = heads.iter().filter(|h| h.starts_with("put ")).collect();
    // One Put Blob, three Put Block and one Put Block List.
    assert_eq!(puts.len(), 5, "{heads:#?}");
    assert!(
        puts.iter().any(|h| h.contains("comp=blocklist")),
        "{heads:#?}"
    );
    for head in puts {
        assert!(
            head.contains("x-ms-encryption-scope: walscope\r\n"),
            "no scope in:\n{head}"
        );
    }
}
