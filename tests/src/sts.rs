//! A stand-in for AWS STS on 127.0.0.1 that answers `AssumeRoleWithWebIdentity` (the
//! call behind IRSA) with fixed credentials (valid for as long as it is told), or with
//! an error status while told to, and records what it was sent.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::stub::{LoopbackServer, read_request};

/// The stub server; stopped when dropped.
pub struct StsStub {
    server: LoopbackServer,
    requests: Arc<Mutex<Vec<String>>>,
    /// 0: answer with credentials; otherwise the HTTP status to fail with.
    failing: Arc<AtomicU16>,
    /// How long the credentials it hands out are valid; `None`: until 2099.
    lifetime: Arc<Mutex<Option<Duration>>>,
}

impl StsStub {
    /// Answers every request with `access_key`, `secret_key` and `session_token` as the
    /// assumed role's credentials, valid for an hour.
    pub fn start(access_key: &str, secret_key: &str, session_token: &str) -> Result<StsStub> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicU16::new(0));
        let lifetime: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
        let keys = (
            access_key.to_owned(),
            secret_key.to_owned(),
            session_token.to_owned(),
        );
        let (seen, status, valid_for) = (requests.clone(), failing.clone(), lifetime.clone());
        let server = LoopbackServer::start(move |stream| {
            let lifetime: Option<Duration> = *valid_for.lock().expect("lifetime lock");
            let expiration = match lifetime {
                Some(lifetime) => (chrono::Utc::now()
                    + chrono::TimeDelta::from_std(lifetime).unwrap_or(chrono::TimeDelta::MAX))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
                None => "2099-01-01T00:00:00Z".to_owned(),
            };
            let body = response_body(&keys.0, &keys.1, &keys.2, &expiration);
            if let Ok(request) = serve(stream, &body, status.load(Ordering::SeqCst)) {
                seen.lock().expect("requests lock").push(request);
            }
        })?;
        Ok(StsStub {
            server,
            requests,
            failing,
            lifetime,
        })
    }

    /// Credentials handed out from now on expire `lifetime` after they are.
    pub fn credentials_valid_for(&self, lifetime: Duration) {
        *self.lifetime.lock().expect("lifetime lock") = Some(lifetime);
    }

    /// From now on answers every request with `status` and STS's error document
    /// (`None`: with credentials again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.failing.store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The endpoint to give the SDK (`AWS_ENDPOINT_URL_STS`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The bodies of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Reads one HTTP request and answers it (with `failing` as the status when it is not
/// 0); returns the request body.
fn serve(stream: TcpStream, body: &str, failing: u16) -> std::io::Result<String> {
    let request = read_request(&stream)?;
    let mut stream = stream;
    let (status, body) = match failing {
        0 => ("200 OK".to_owned(), body.to_owned()),
        code => (
            format!("{code} Failing"),
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>the test made STS fail</Message></Error><RequestId>0</RequestId></ErrorResponse>"#
                .to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(String::from_utf8_lossy(&request.body).into_owned())
}

fn response_body(
    access_key: &str,
    secret_key: &str,
    session_token: &str,
    expiration: &str,
) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:db:walship</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/walship/walship-session</Arn>
      <AssumedRoleId>AROA0000000000EXAMPLE:walship-session</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{access_key}</AccessKeyId>
      <SecretAccessKey>{secret_key}</SecretAccessKey>
      <SessionToken>{session_token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    )
}
