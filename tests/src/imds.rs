//! A stand-in for the EC2 instance metadata service (IMDSv2) on 127.0.0.1, as the S3
//! SDK's instance-profile credentials reach it: `PUT /latest/api/token` with
//! `x-aws-ec2-metadata-token-ttl-seconds` hands out a session token; with it in
//! `x-aws-ec2-metadata-token`, `GET /latest/meta-data/iam/security-credentials/` names the
//! role and `…/security-credentials/<role>` answers its credentials as JSON, expiring
//! after a set lifetime. A request without the session token is refused with 401, as
//! IMDSv2 refuses it. Point clients at it with `AWS_EC2_METADATA_SERVICE_ENDPOINT`.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::stub::{LoopbackServer, read_request};
use crate::util::random_token;

/// The instance profile's role name.
pub const IMDS_ROLE: &str = "walship-node";

/// The stub; stopped when dropped.
pub struct ImdsStub {
    server: LoopbackServer,
    lifetime: Arc<Mutex<Duration>>,
    credentials: Arc<AtomicUsize>,
}

impl ImdsStub {
    /// Hands out `access_key`, `secret_key` and `session_token` as the role's
    /// credentials, valid for an hour unless [`credentials_valid_for`](Self::credentials_valid_for).
    pub fn start(access_key: &str, secret_key: &str, session_token: &str) -> Result<ImdsStub> {
        let lifetime = Arc::new(Mutex::new(Duration::from_secs(3600)));
        let credentials = Arc::new(AtomicUsize::new(0));
        let session = random_token(32);
        let keys = (
            access_key.to_owned(),
            secret_key.to_owned(),
            session_token.to_owned(),
        );
        let (valid_for, handed_out) = (lifetime.clone(), credentials.clone());
        let server = LoopbackServer::start(move |stream| {
            let lifetime = *valid_for.lock().expect("lifetime lock");
            let _ = serve(stream, &session, &keys, lifetime, &handed_out);
        })?;
        Ok(ImdsStub {
            server,
            lifetime,
            credentials,
        })
    }

    /// The lifetime of the credentials handed out from now on.
    pub fn credentials_valid_for(&self, lifetime: Duration) {
        *self.lifetime.lock().expect("lifetime lock") = lifetime;
    }

    /// `http://127.0.0.1:<port>`, the form of `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Credentials handed out so far.
    pub fn credentials_handed_out(&self) -> usize {
        self.credentials.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    session: &str,
    (access_key, secret_key, session_token): &(String, String, String),
    lifetime: Duration,
    handed_out: &AtomicUsize,
) -> std::io::Result<()> {
    let request = read_request(&stream)?;
    let mut stream = stream;
    const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/";
    let (status, headers, body) = match (request.method(), request.path()) {
        ("PUT", "/latest/api/token") => match request
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.parse::<u32>().ok())
        {
            Some(ttl @ 1..=21600) => (
                "200 OK",
                format!("x-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n"),
                session.to_owned(),
            ),
            _ => ("400 Bad Request", String::new(), String::new()),
        },
        _ if request.header("x-aws-ec2-metadata-token") != Some(session) => {
            ("401 Unauthorized", String::new(), String::new())
        }
        ("GET", CREDENTIALS) => ("200 OK", String::new(), IMDS_ROLE.to_owned()),
        ("GET", path) if path.strip_prefix(CREDENTIALS) == Some(IMDS_ROLE) => {
            handed_out.fetch_add(1, Ordering::SeqCst);
            let now = chrono::Utc::now();
            let expiration = now + chrono::TimeDelta::from_std(lifetime).unwrap_or_default();
            let format = "%Y-%m-%dT%H:%M:%SZ";
            (
                "200 OK",
                String::new(),
                format!(
                    "{{\"Code\":\"Success\",\"LastUpdated\":\"{}\",\"Type\":\"AWS-HMAC\",\
                     \"AccessKeyId\":\"{access_key}\",\"SecretAccessKey\":\"{secret_key}\",\
                     \"Token\":\"{session_token}\",\"Expiration\":\"{}\"}}",
                    now.format(format),
                    expiration.format(format)
                ),
            )
        }
        _ => ("404 Not Found", String::new(), String::new()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
